"""The seed guides' app, written in FastAPI exactly as the guides teach it.

This is the reference that `scripts/differential` runs side by side with the
Rust seed app (examples/seed_app/src). Every endpoint below is one of the
guides' recipes; where a guide gives code it is followed literally (its error
wording included), and the few places where following it literally would be
wrong, or where a guide gives no code, say so in a comment.

Run it:

    SEED_API_KEY=my-secret-key SEED_DATA_DIR=/tmp/seed \\
        .venv/bin/python -m uvicorn app:app --app-dir examples/seed_app/fastapi \\
        --host 127.0.0.1 --port 8000

Configuration (environment; the Rust app reads the same variables):

    SEED_API_KEY          required: the static API key (the guides' API_KEY = "my-secret-key");
                          its owner is "demo"
    SEED_DATA_DIR         required: directory for the SQLite file (seed.db)
    SEED_ITEMS_RATE       GET /items limit per client address (default "100/minute";
                          slowapi/limits syntax: "N/second|minute|hour|day", "N per 5 minutes")
    SEED_ALLOWED_ORIGINS  CORS origins, comma-separated (default "https://myapp.example.com")
    SEED_TRUSTED_HOSTS    TrustedHostMiddleware hosts, comma-separated
                          (default "localhost,127.0.0.1,api.example.com,*.example.com")
    SEED_HTTPS_REDIRECT   "1" adds HTTPSRedirectMiddleware (default off)
    SEED_REDIS_URL        optional: keep the rate-limit counters in Redis (the guide's
                          counter; needs the `redis` package, which is not in the venv)

Demo users, hashed with pwdlib (Argon2) at start-up: johndoe / secret-johndoe (scopes
"me items", active) and alice / secret-alice (disabled). (The guides use
"secret"; the Rust app's user store refuses passwords under 8 characters.)
"""

import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import (
    Cookie,
    Depends,
    FastAPI,
    Form,
    Header,
    HTTPException,
    Request,
    Response,
    Security,
    status,
)
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
    OAuth2PasswordRequestForm,
)
from jwt.exceptions import InvalidTokenError
from limits import parse_many
from pwdlib import PasswordHash
from pydantic import BaseModel, Field
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware


# --- Settings ---------------------------------------------------------------
# "Hardcoding API keys directly in source code" is the guides' pitfall #1:
# everything secret comes from the environment.


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"seed app: the environment variable {name} must be set")
    return value


def _csv(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


API_KEY = _required("SEED_API_KEY")
API_KEY_OWNER = "demo"
DATA_DIR = Path(_required("SEED_DATA_DIR"))
DB_PATH = DATA_DIR / "seed.db"

_items_limits = parse_many(os.environ.get("SEED_ITEMS_RATE", "100/minute"))
if len(_items_limits) != 1:
    raise SystemExit("seed app: SEED_ITEMS_RATE must be a single limit such as 100/minute")
ITEMS_CALLS = _items_limits[0].amount  # the guide's `calls`
ITEMS_PERIOD = _items_limits[0].get_expiry()  # the guide's `period`, in seconds

ALLOWED_ORIGINS = _csv("SEED_ALLOWED_ORIGINS", "https://myapp.example.com")
TRUSTED_HOSTS = _csv("SEED_TRUSTED_HOSTS", "localhost,127.0.0.1,api.example.com,*.example.com")
HTTPS_REDIRECT = os.environ.get("SEED_HTTPS_REDIRECT", "") == "1"
REDIS_URL = os.environ.get("SEED_REDIS_URL", "")

# JWT settings, as in FastAPI's OAuth2/JWT tutorial. The signing key is made
# fresh at each start (the tutorial's `openssl rand -hex 32`), so tokens do
# not outlive the process.
SECRET_KEY = secrets.token_hex(32)
ALGORITHM = "HS256"
ACCESS_TOKEN_EXPIRE_MINUTES = 30


# --- Logging: never log a credential verbatim --------------------------------
# The guide's RedactAuthFilter replaces the API key in every log message. Its
# code sets `record.msg` to the formatted message but leaves `record.args`,
# so the message is formatted a second time (a "--- Logging error ---" for
# uvicorn's access lines), and uvicorn's AccessFormatter builds the line from
# `record.args`, which still hold the key. So this filter redacts the message
# and its arguments. It also hides the values of credential-bearing query
# parameters (the request line of /export?api_key=... and
# /admin/password_reset?new_password=... is in the access log).

_SENSITIVE_QUERY = re.compile(r"((?:^|[?&])(?:api_key|new_password|password|token)=)[^&\s\"]*")


def _redact(text: str) -> str:
    return _SENSITIVE_QUERY.sub(r"\1***", text.replace(API_KEY, "***"))


class RedactAuthFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        return True


# uvicorn has configured its loggers before it imports this module.
for _name in ("uvicorn", "uvicorn.error", "uvicorn.access", __name__):
    logging.getLogger(_name).addFilter(RedactAuthFilter())


# --- Users ------------------------------------------------------------------
# FastAPI's OAuth2/JWT tutorial, with pwdlib's recommended hasher (Argon2).
# A disabled user who gives the right password gets the tutorial's 400
# "Inactive user" wherever a password is checked (/token, /basic, /login);
# a wrong password is a 401 first, so "disabled" is only told to the owner.

password_hash = PasswordHash.recommended()
# Verified against when the user does not exist, so that an unknown username
# costs as much time as a wrong password.
DUMMY_HASH = password_hash.hash("dummypassword")


class User(BaseModel):
    username: str
    scopes: list[str] = []
    disabled: bool = False


class UserInDB(User):
    hashed_password: str


users_db: dict[str, UserInDB] = {
    "johndoe": UserInDB(
        username="johndoe",
        scopes=["me", "items"],
        disabled=False,
        hashed_password=password_hash.hash("secret-johndoe"),
    ),
    "alice": UserInDB(
        username="alice",
        scopes=[],
        disabled=True,
        hashed_password=password_hash.hash("secret-alice"),
    ),
}


def get_user(username: str) -> UserInDB | None:
    return users_db.get(username)


def authenticate_user(username: str, password: str) -> UserInDB | None:
    user = get_user(username)
    if user is None:
        password_hash.verify(password, DUMMY_HASH)
        return None
    if not password_hash.verify(password, user.hashed_password):
        return None
    return user


# --- Database ---------------------------------------------------------------
# "Always use parameterised queries regardless of validation": every query
# below binds its values with `?`.


def init_db() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(DB_PATH) as db:
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS items (name TEXT NOT NULL, price REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS orders (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                item TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                username TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, username TEXT NOT NULL);
            """
        )
        if db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0:
            db.executemany(
                "INSERT INTO items (name, price) VALUES (?, ?)",
                [("Foo", 50.5), ("Bar", 62.0), ("Baz", 10.0)],
            )


def get_db() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(DB_PATH, check_same_thread=False)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


DB = Annotated[sqlite3.Connection, Depends(get_db)]


@asynccontextmanager
async def lifespan(app: FastAPI):
    init_db()
    yield
    if redis is not None:
        await redis.aclose()


app = FastAPI(title="Portcullis seed app (FastAPI)", lifespan=lifespan)


# --- Middleware -------------------------------------------------------------
# In the guide's order. Starlette runs the middleware added last first, so a
# request meets TrustedHostMiddleware, then CORSMiddleware, then (when
# enabled) HTTPSRedirectMiddleware.

# "Terminate TLS at the load balancer/reverse proxy; use
# HTTPSRedirectMiddleware as a safety net to catch direct HTTP connections."
if HTTPS_REDIRECT:
    app.add_middleware(HTTPSRedirectMiddleware)

# "List exact allowed origins rather than "*" for any API that handles auth."
app.add_middleware(
    CORSMiddleware,
    allow_origins=ALLOWED_ORIGINS,  # never "*" in production with credentials
    allow_credentials=True,
    allow_methods=["GET", "POST", "PUT", "DELETE"],
    allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-CSRF-Token"],
)

# "A one-liner defence against Host header injection."
app.add_middleware(TrustedHostMiddleware, allowed_hosts=TRUSTED_HOSTS)


# --- 1. Public --------------------------------------------------------------


@app.get("/public")
async def public_endpoint():
    return {"message": "Anyone can see this"}


# --- 2-4. API keys: header, query, cookie ---------------------------------------
# "Use headers for API keys (not query params)". The guides compare with `!=`;
# `secrets.compare_digest` does not leak the key through timing. It is given
# bytes (as FastAPI's HTTP Basic tutorial does): on `str` it raises TypeError,
# a 500, for a key with a non-ASCII character.

api_key_header = APIKeyHeader(name="X-API-Key")
api_key_query = APIKeyQuery(name="api_key")
api_key_cookie = APIKeyCookie(name="api_key")


def check_api_key(api_key: str) -> str:
    """The key's owner, or 403 "Invalid API key"."""
    if not secrets.compare_digest(api_key.encode("utf-8"), API_KEY.encode("utf-8")):
        raise HTTPException(status_code=403, detail="Invalid API key")
    return API_KEY_OWNER


async def verify_api_key(api_key: Annotated[str, Depends(api_key_header)]) -> str:
    check_api_key(api_key)
    return api_key


@app.get("/data", dependencies=[Depends(verify_api_key)])
async def get_data():
    return {"data": "secret"}


async def verify_key(key: Annotated[str, Depends(api_key_query)]) -> str:
    check_api_key(key)
    return key


# GET /export?api_key=... -- "only use query param API keys for webhooks or
# download links where adding a header is impossible".
@app.get("/export", dependencies=[Depends(verify_key)])
async def export():
    return {"export": "done"}


@app.get("/users/me")
async def read_current_user(api_key: Annotated[str, Depends(api_key_cookie)]):
    return {"username": check_api_key(api_key)}


# --- 5-6. OAuth2 password flow with JWT bearer tokens ---------------------------

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


class Token(BaseModel):
    access_token: str
    token_type: str


def create_access_token(data: dict, expires_delta: timedelta | None = None) -> str:
    to_encode = data.copy()
    expire = datetime.now(timezone.utc) + (expires_delta or timedelta(minutes=15))
    to_encode.update({"exp": expire})
    return jwt.encode(to_encode, SECRET_KEY, algorithm=ALGORITHM)


def verify_jwt(token: str) -> UserInDB:
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        username = payload.get("sub")
        if username is None:
            raise credentials_exception
    except InvalidTokenError:
        raise credentials_exception
    user = get_user(username)
    if user is None:
        raise credentials_exception
    return user


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]) -> UserInDB:
    return verify_jwt(token)


async def get_current_active_user(
    current_user: Annotated[UserInDB, Depends(get_current_user)],
) -> UserInDB:
    if current_user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    return current_user


@app.post("/token")
async def login_for_access_token(
    form_data: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    user = authenticate_user(form_data.username, form_data.password)
    if not user:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    access_token = create_access_token(
        data={"sub": user.username, "scope": " ".join(form_data.scopes)},
        expires_delta=timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES),
    )
    return Token(access_token=access_token, token_type="bearer")


@app.get("/secure-data")
async def read_secure_data(current_user: Annotated[UserInDB, Depends(get_current_active_user)]):
    return {"data": "This is protected data", "user": current_user.username}


# --- 7. Bearer token or API key ------------------------------------------------
# "Declare both dependencies and make them optional; raise if neither is
# provided." A bearer token, when there is one, is checked first.

bearer = HTTPBearer(auto_error=False)
optional_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authenticate(
    bearer_token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    api_key: Annotated[str | None, Depends(optional_api_key_header)],
) -> dict:
    if bearer_token:
        return {"user": verify_jwt(bearer_token.credentials).username, "via": "bearer"}
    if api_key:
        return {"user": check_api_key(api_key), "via": "api_key"}
    raise HTTPException(401, "Authentication required")


@app.get("/both")
async def both(user: Annotated[dict, Depends(authenticate)]):
    return user


# --- 8. HTTP Basic -------------------------------------------------------------
# FastAPI's HTTP Basic tutorial (007): compare the username with
# `secrets.compare_digest` on bytes; the stored passwords are Argon2 hashes,
# so the password is checked with pwdlib (against a dummy hash for an unknown
# user, so that both cost the same).

basic = HTTPBasic()


def get_current_username(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> str:
    current_username_bytes = credentials.username.encode("utf8")
    user = None
    for username, candidate in users_db.items():
        if secrets.compare_digest(current_username_bytes, username.encode("utf8")):
            user = candidate
    is_correct_password = password_hash.verify(
        credentials.password, user.hashed_password if user else DUMMY_HASH
    )
    if not (user and is_correct_password):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect username or password",
            headers={"WWW-Authenticate": "Basic"},
        )
    if user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    return user.username


@app.get("/basic")
def read_basic_user(username: Annotated[str, Depends(get_current_username)]):
    return {"username": username}


# --- 9. Items: rate limiting, validation, parameterised SQL ------------------------
# The guide's Redis counter: INCR the client's key and (re)arm its expiry at
# each request; over `calls` in `period` -> 429 with Retry-After: period.
# The guide declares `calls` and `period` as parameters of the dependency,
# which FastAPI would read from the query string (?calls=1000000 would lift
# the limit), so here they come from SEED_ITEMS_RATE instead.

redis = None
if REDIS_URL:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise SystemExit("seed app: SEED_REDIS_URL needs the `redis` package (pip install redis)")
    redis = aioredis.from_url(REDIS_URL)


class MemoryCounter:
    """In-process stand-in for the guide's Redis INCR + EXPIRE pipeline."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[int, float]] = {}

    def incr(self, key: str, period: int) -> int:
        now = time.monotonic()
        if len(self.counters) > 10_000:
            self.counters = {k: v for k, v in self.counters.items() if v[1] > now}
        count, expires_at = self.counters.get(key, (0, 0.0))
        if expires_at <= now:
            count = 0
        count += 1
        self.counters[key] = (count, now + period)  # EXPIRE re-armed, as the guide does
        return count


memory_counter = MemoryCounter()


async def rate_limit(request: Request) -> None:
    calls, period = ITEMS_CALLS, ITEMS_PERIOD
    key = f"rate:{request.client.host if request.client else '127.0.0.1'}"
    if redis is not None:
        pipe = redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, period)
        count, _ = await pipe.execute()
    else:
        count = memory_counter.incr(key, period)
    if count > calls:
        raise HTTPException(
            status_code=429,
            detail="Too many requests",
            headers={"Retry-After": str(period)},
        )


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)


@app.get("/items", dependencies=[Depends(rate_limit)])
def list_items(db: DB, q: str | None = None):
    if q is None:
        rows = db.execute("SELECT name, price FROM items ORDER BY name")
    else:
        rows = db.execute(
            "SELECT name, price FROM items WHERE name LIKE ? ORDER BY name", (f"%{q}%",)
        )
    return {"items": [{"name": row["name"], "price": row["price"]} for row in rows]}


@app.post("/items")
def create_item(item: Item, db: DB) -> Item:
    db.execute("INSERT INTO items (name, price) VALUES (?, ?)", (item.name, item.price))
    db.commit()
    return item


# --- 10-11. Cookie session with a double-submit CSRF token ---------------------------
# "For cookie auth, implement the Double Submit Cookie pattern" and "set
# SameSite=Lax as the minimum". The guide declares the CSRF header and cookie
# as required parameters, so a request without them would get a 422; here a
# missing one is a mismatch like a wrong one (403), and the comparison is
# constant-time.


@app.post("/login")
def login(
    response: Response,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    db: DB,
):
    user = authenticate_user(username, password)
    if not user:
        raise HTTPException(status_code=401, detail="Incorrect username or password")
    if user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    session_token = secrets.token_urlsafe(32)
    db.execute("INSERT INTO sessions (token, username) VALUES (?, ?)", (session_token, user.username))
    db.commit()
    csrf_token = secrets.token_urlsafe(32)
    response.set_cookie("session", session_token, httponly=True, secure=True, samesite="lax")
    response.set_cookie("csrf_token", csrf_token, secure=True, samesite="lax")  # NOT httponly
    return {"csrf_token": csrf_token}


def get_session_user(db: DB, session: Annotated[str | None, Cookie()] = None) -> UserInDB:
    user = None
    if session:
        row = db.execute("SELECT username FROM sessions WHERE token = ?", (session,)).fetchone()
        user = get_user(row["username"]) if row else None
    if user is None:
        raise HTTPException(status_code=401, detail="Not authenticated")
    return user


# Client sends X-CSRF-Token header with every mutating request
def verify_csrf(
    x_csrf_token: Annotated[str | None, Header()] = None,
    csrf_cookie: Annotated[str | None, Cookie(alias="csrf_token")] = None,
) -> None:
    if not (
        x_csrf_token
        and csrf_cookie
        and secrets.compare_digest(x_csrf_token.encode("utf-8"), csrf_cookie.encode("utf-8"))
    ):
        raise HTTPException(403, "CSRF token mismatch")


class Order(BaseModel):
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1)


@app.post("/orders")
def create_order(
    order: Order,
    user: Annotated[UserInDB, Depends(get_session_user)],  # checked first: 401
    _csrf: Annotated[None, Depends(verify_csrf)],  # then the CSRF token: 403
    db: DB,
):
    cursor = db.execute(
        "INSERT INTO orders (item, quantity, username) VALUES (?, ?, ?)",
        (order.item, order.quantity, user.username),
    )
    db.commit()
    return {
        "order_id": cursor.lastrowid,
        "item": order.item,
        "quantity": order.quantity,
        "user": user.username,
    }


# --- 12. One protected route in an otherwise open app ---------------------------------
# "The Security dependency can be defined at path level to protect not the
# whole API, but specific, sensitive endpoints."


def get_api_key(api_key: Annotated[str, Security(api_key_header)]) -> str:
    check_api_key(api_key)
    return api_key


@app.post("/admin/password_reset", dependencies=[Security(get_api_key)])
def password_reset(user: int, new_password: str):
    # A demo: nothing is changed.
    return {"status": "password reset", "user": user}

//! The seed guides' example app, endpoint for endpoint, on the
//! `portcullis` library. Each handler says which seed snippet it
//! replaces; examples/seed_app/README.md has the full mapping.
//!
//! Run: `SEED_API_KEY=my-secret-key SEED_DATA_DIR=/tmp/seed cargo run -p seed_app`

mod validate;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use portcullis::core::cors::CorsConfig;
use portcullis::core::{Scheme, Scopes, Secret};
use portcullis::oauth::Endpoint;
use portcullis::rejection::Rejection;
use portcullis::require::LimitBy;
use portcullis::schemes::{
    ApiKeyCookie, ApiKeyHeader, ApiKeyQuery, HttpBasic, HttpBearer, OAuth2PasswordBearer, Session,
};
use portcullis::static_key::StaticKey;
use portcullis::{Authenticated, Portcullis, Verified};
use serde_json::{Value, json};
use sqlx::SqlitePool;
use std::net::SocketAddr;
use utoipa::OpenApi;
use validate::{Fields, FromFields, Valid, ValidQuery};

/// The app's settings, from the environment (the same variables the
/// FastAPI rendition reads).
struct Settings {
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    items_rate: String,
    origins: Vec<String>,
    hosts: Vec<String>,
    https_redirect: bool,
    redis: Option<String>,
}

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let addr = std::env::var("SEED_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
        Ok(Settings {
            addr: addr
                .parse()
                .with_context(|| format!("SEED_ADDR: {addr:?} is not an address:port"))?,
            data_dir: std::env::var("SEED_DATA_DIR")
                .context("SEED_DATA_DIR is not set: name a directory for the SQLite files")?
                .into(),
            items_rate: std::env::var("SEED_ITEMS_RATE").unwrap_or_else(|_| "100/minute".into()),
            origins: list("SEED_ALLOWED_ORIGINS", "https://myapp.example.com"),
            hosts: list(
                "SEED_TRUSTED_HOSTS",
                "localhost,127.0.0.1,api.example.com,*.example.com",
            ),
            https_redirect: std::env::var("SEED_HTTPS_REDIRECT").is_ok_and(|v| v == "1"),
            redis: std::env::var("SEED_REDIS_URL")
                .ok()
                .filter(|s| !s.is_empty()),
        })
    }
}

#[derive(Clone)]
struct App {
    db: SqlitePool,
}

// ---- the endpoints ---------------------------------------------------

/// Seed: `@app.get("/public")` — no dependency at all.
#[utoipa::path(get, path = "/public", responses((status = 200, description = "Anyone can see this")))]
async fn public() -> Json<Value> {
    Json(json!({"message": "Anyone can see this"}))
}

/// Seed: `APIKeyHeader(name="X-API-Key")` + `verify_api_key`.
#[utoipa::path(get, path = "/data", security(("APIKeyHeader" = [])),
    responses((status = 200, description = "The data"), (status = 401, description = "No or a wrong key")))]
async fn data(_: Verified<ApiKeyHeader>) -> Json<Value> {
    Json(json!({"data": "secret"}))
}

/// Seed: `APIKeyQuery(name="api_key")` on `/export`.
#[utoipa::path(get, path = "/export", security(("APIKeyQuery" = [])),
    responses((status = 200, description = "The export"), (status = 401, description = "No or a wrong key")))]
async fn export(_: Verified<ApiKeyQuery>) -> Json<Value> {
    Json(json!({"export": "done"}))
}

/// Seed: `APIKeyCookie` on `/users/me`.
#[utoipa::path(get, path = "/users/me", security(("APIKeyCookie" = [])),
    responses((status = 200, description = "The key's owner"), (status = 401, description = "No or a wrong key")))]
async fn users_me(who: Verified<ApiKeyCookie>) -> Json<Value> {
    Json(json!({"username": who.subject}))
}

/// Seed: `OAuth2PasswordBearer(tokenUrl="token")` + the JWT check.
#[utoipa::path(get, path = "/secure-data", security(("OAuth2PasswordBearer" = [])),
    responses((status = 200, description = "Protected data"), (status = 401, description = "No or a bad token")))]
async fn secure_data(who: Verified<OAuth2PasswordBearer>) -> Json<Value> {
    Json(json!({"data": "This is protected data", "user": who.subject}))
}

/// Seed: "Declare both dependencies and make them optional; raise if
/// neither is provided" — `HTTPBearer(auto_error=False)` and
/// `APIKeyHeader(auto_error=False)`.
#[utoipa::path(get, path = "/both", security(("HTTPBearer" = []), ("APIKeyHeader" = [])),
    responses((status = 200, description = "Who, and by which scheme"), (status = 401, description = "Neither credential, or a bad one")))]
async fn both(
    bearer: Option<Verified<HttpBearer>>,
    key: Option<Verified<ApiKeyHeader>>,
) -> Result<Json<Value>, Rejection> {
    if let Some(b) = bearer {
        return Ok(Json(json!({"user": b.subject, "via": "bearer"})));
    }
    if let Some(k) = key {
        return Ok(Json(json!({"user": k.subject, "via": "api_key"})));
    }
    Err(Rejection::not_authenticated(Some("Bearer, APIKey")))
}

/// Seed: `HTTPBasic()` + `secrets.compare_digest` against the users.
#[utoipa::path(get, path = "/basic", security(("HTTPBasic" = [])),
    responses((status = 200, description = "The user"), (status = 401, description = "No or wrong credentials")))]
async fn basic(who: Verified<HttpBasic>) -> Json<Value> {
    Json(json!({"username": who.subject}))
}

#[derive(serde::Deserialize)]
struct ItemQuery {
    q: Option<String>,
}

/// Seed: `@app.get("/items", dependencies=[Depends(rate_limit)])`, and
/// "parameterised queries (ORM or raw)": `q` is bound, never spliced.
#[utoipa::path(get, path = "/items", params(("q" = Option<String>, Query, description = "Name contains")),
    responses((status = 200, description = "Items"), (status = 429, description = "Too many requests")))]
async fn list_items(
    State(app): State<App>,
    Query(q): Query<ItemQuery>,
) -> Result<Json<Value>, Rejection> {
    let pattern = format!("%{}%", q.q.unwrap_or_default());
    let rows: Vec<(String, f64)> =
        sqlx::query_as("SELECT name, price FROM items WHERE name LIKE ?1 ORDER BY name")
            .bind(pattern)
            .fetch_all(&app.db)
            .await
            .map_err(db_error)?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(name, price)| json!({"name": name, "price": price}))
        .collect();
    Ok(Json(json!({"items": items})))
}

/// Seed: `class Item(BaseModel): name: str; price: float`.
struct Item {
    name: String,
    price: f64,
}

impl FromFields for Item {
    fn from_fields(f: &mut Fields<'_>) -> Option<Item> {
        let name = f.string("name", 1, 100);
        let price = f.positive("price");
        Some(Item {
            name: name?,
            price: price?,
        })
    }
}

/// Seed: `@app.post("/items/") def create_item(item: Item)`.
#[utoipa::path(post, path = "/items",
    responses((status = 200, description = "The item stored"), (status = 422, description = "Which field is wrong")))]
async fn create_item(
    State(app): State<App>,
    Valid(item): Valid<Item>,
) -> Result<Json<Value>, Rejection> {
    sqlx::query("INSERT INTO items (name, price) VALUES (?1, ?2)")
        .bind(&item.name)
        .bind(item.price)
        .execute(&app.db)
        .await
        .map_err(db_error)?;
    Ok(Json(json!({"name": item.name, "price": item.price})))
}

/// The order body.
struct Order {
    item: String,
    quantity: i64,
}

impl FromFields for Order {
    fn from_fields(f: &mut Fields<'_>) -> Option<Order> {
        let item = f.string("item", 1, 100);
        let quantity = f.int("quantity", 1);
        Some(Order {
            item: item?,
            quantity: quantity?,
        })
    }
}

/// Seed: the double-submit `POST /orders`. The session cookie and the
/// `X-CSRF-Token` header are checked by `Verified<Session>` (the token is
/// bound to the session by HMAC, not just compared with a cookie).
#[utoipa::path(post, path = "/orders", security(("SessionCookie" = [])),
    responses((status = 200, description = "The order"), (status = 401, description = "No session"),
        (status = 403, description = "CSRF check failed"), (status = 422, description = "Which field is wrong")))]
async fn create_order(
    State(app): State<App>,
    who: Verified<Session>,
    Valid(order): Valid<Order>,
) -> Result<Json<Value>, Rejection> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (item, quantity, username) VALUES (?1, ?2, ?3) RETURNING id",
    )
    .bind(&order.item)
    .bind(order.quantity)
    .bind(who.subject.as_str())
    .fetch_one(&app.db)
    .await
    .map_err(db_error)?;
    Ok(Json(json!({
        "order_id": id,
        "item": order.item,
        "quantity": order.quantity,
        "user": who.subject,
    })))
}

struct Reset {
    user: i64,
}

impl FromFields for Reset {
    fn from_fields(f: &mut Fields<'_>) -> Option<Reset> {
        let user = f.int("user", 0);
        let pw = f.string("new_password", 1, 1024);
        pw?;
        Some(Reset { user: user? })
    }
}

/// Seed: `@app.post("/admin/password_reset", dependencies=[Security(get_api_key)])`
/// — one protected route in an otherwise open app (the `RequireLayer` on
/// this route only).
#[utoipa::path(post, path = "/admin/password_reset", security(("APIKeyHeader" = [])),
    params(("user" = i64, Query), ("new_password" = String, Query)),
    responses((status = 200, description = "Reset"), (status = 401, description = "No or a wrong key")))]
async fn password_reset(
    Authenticated(_who): Authenticated,
    ValidQuery(r): ValidQuery<Reset>,
) -> Json<Value> {
    Json(json!({"status": "password reset", "user": r.user}))
}

fn db_error(e: sqlx::Error) -> Rejection {
    tracing::error!(error = %e, "database error");
    Rejection::new(portcullis::core::ErrorCode::Internal)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis seed app",
        description = "The seed guides' app on the portcullis library"
    ),
    paths(
        public,
        data,
        export,
        users_me,
        secure_data,
        both,
        basic,
        list_items,
        create_item,
        create_order,
        password_reset
    )
)]
struct ApiDoc;

// ---- wiring ----------------------------------------------------------

async fn open_db(dir: &std::path::Path) -> Result<SqlitePool> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    let db = SqlitePool::connect(&url)
        .await
        .with_context(|| format!("cannot open {}", dir.join("app.db").display()))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL)",
    )
    .execute(&db)
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, quantity INTEGER NOT NULL, username TEXT NOT NULL)",
    )
    .execute(&db)
    .await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items")
        .fetch_one(&db)
        .await?;
    if n == 0 {
        for (name, price) in [("Foo", 50.5), ("Bar", 62.0), ("Baz", 10.0)] {
            sqlx::query("INSERT INTO items (name, price) VALUES (?1, ?2)")
                .bind(name)
                .bind(price)
                .execute(&db)
                .await?;
        }
    }
    Ok(db)
}

/// The demo users of the guides' tutorials (passwords meet Portcullis'
/// 8-character minimum).
async fn demo_users(pc: &Portcullis) -> Result<()> {
    let Some(id) = pc.identity() else {
        return Ok(());
    };
    let users = [
        ("johndoe", "secret-johndoe", "me items", false),
        ("alice", "secret-alice", "me", true),
    ];
    for (name, pw, scopes, disabled) in users {
        let exists = id.list_users().await?.iter().any(|u| u.username == name);
        if !exists {
            id.add_user(
                name,
                &Secret::new(pw.to_owned()),
                Scopes::parse(scopes)?,
                "seed_app",
            )
            .await?;
        }
        id.set_user_disabled(name, disabled, "seed_app").await?;
    }
    Ok(())
}

/// The app: the router inside the edge checks, which must run before
/// routing (so unknown paths get the host check too).
type Service = portcullis::edge::Edge<Router>;

async fn build(s: &Settings) -> Result<Service> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create {}", s.data_dir.display()))?;
    let key = StaticKey::from_env("SEED_API_KEY")?
        .owner("demo")
        .id("seed-static");
    let mut b = Portcullis::builder()
        .static_key(key)
        .store(&format!(
            "sqlite://{}",
            s.data_dir.join("portcullis.db").display()
        ))
        .users(true)
        .password_grant(true)
        .token_url(
            "token",
            &[
                ("me", "Read information about the current user."),
                ("items", "Read items."),
            ],
        )
        .describe(
            Scheme::ApiKeyHeader,
            "The key from `SEED_API_KEY` or `portcullis keys create`",
        );
    if let Some(url) = &s.redis {
        b = b.redis(url.clone(), portcullis::ratelimit::OnBackendError::Local);
    }
    let pc = b.build().await?;
    demo_users(&pc).await?;
    let app = App {
        db: open_db(&s.data_dir).await?,
    };

    let mut doc = ApiDoc::openapi();
    pc.document(&mut doc)?;
    let spec = serde_json::to_string(&doc)?;

    let cors = CorsConfig {
        allow_origins: s.origins.clone(),
        allow_credentials: true,
        allow_methods: ["GET", "POST", "PUT", "DELETE"].map(String::from).to_vec(),
        allow_headers: ["Content-Type", "Authorization", "X-API-Key", "X-CSRF-Token"]
            .map(String::from)
            .to_vec(),
        ..CorsConfig::default()
    };
    let edge = pc
        .edge()
        .trusted_hosts(&s.hosts)?
        .cors(&cors)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field(), e.message()))?
        .https_redirect(s.https_redirect);
    // Seed: `key = f"rate:{request.client.host}"` — counted per address.
    let items_limit = pc
        .require([])
        .limit(&s.items_rate, LimitBy::Ip)
        .context("SEED_ITEMS_RATE")?;
    let admin = pc.require([Scheme::ApiKeyHeader]);

    let router = Router::new()
        .route("/public", get(public))
        .route("/data", get(data))
        .route("/export", get(export))
        .route("/users/me", get(users_me))
        .route("/token", pc.endpoint(Endpoint::Token))
        .route("/secure-data", get(secure_data))
        .route("/both", get(both))
        .route("/basic", get(basic))
        .route(
            "/items",
            get(list_items).route_layer(items_limit).post(create_item),
        )
        .route("/login", pc.endpoint(Endpoint::Login))
        .route("/orders", axum::routing::post(create_order))
        .route(
            "/admin/password_reset",
            axum::routing::post(password_reset).route_layer(admin),
        )
        .route(
            "/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], spec) }
            }),
        )
        .with_state(app)
        .layer(axum::middleware::from_fn(access_log))
        .layer(pc.layer());
    Ok(tower::Layer::layer(&edge, router))
}

/// One line per request: method, path (never the query string, where a
/// key may ride) and status. Credentials are never logged: they live in
/// `Secret`s that print `[REDACTED]`.
async fn access_log(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let r = next.run(req).await;
    tracing::info!(target: "seed_app::access", %method, %path, status = r.status().as_u16(), "request");
    r
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("seed_app: {e:#}");
        std::process::exit(2);
    }
}

async fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let router = build(&s).await?;
    let listener = tokio::net::TcpListener::bind(s.addr)
        .await
        .with_context(|| format!("cannot listen on {}", s.addr))?;
    tracing::info!(addr = %s.addr, "seed_app listening");
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
            router,
        ),
    )
    .await?;
    Ok(())
}

"""The servers compared: how each is configured and started, on free
loopback ports, with its files in the run's work directory."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from procs import Proc, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
# The seed apps' static key (SEED_API_KEY), long enough for Portcullis's
# 12-character minimum.
SEED_KEY = "bench-seed-key-0123456789"


@dataclass
class Running:
    """A contender ready for load."""
    name: str
    proc: Proc
    url: str                      # the URL the valid-key traffic asks for
    headers: dict[str, str]       # the valid credential
    startup_s: float = 0.0
    idle_rss_kib: int = 0
    extra: dict = field(default_factory=dict)

    def pids(self) -> list[int]:
        # A deployment of two servers (nginx + the gateway's decision
        # endpoint) costs what both spend.
        return self.proc.pids() + [p for o in self.extra.get("also", []) for p in o.pids()]


def _bins(target: Path) -> dict[str, Path]:
    return {n: target / n for n in ("portcullis", "seed_app", "bench-upstream", "bench-keys",
                                    "hyper_floor", "openloop")}


class Build:
    """Where the binaries are (release for figures, debug for the smoke run)."""

    def __init__(self, target_dir: Path, profile: str):
        self.dir = target_dir / profile
        self.bins = _bins(self.dir)

    def missing(self, names: set[str] | None = None) -> list[str]:
        """The binaries (of `names`, else all) not built."""
        return [str(p) for n, p in self.bins.items() if (names is None or n in names) and not p.exists()]


def start_upstream(build: Build, work: Path, threads: int) -> tuple[Proc, int]:
    port = free_port()
    p = Proc("upstream", [str(build.bins["bench-upstream"]), "--listen", f"127.0.0.1:{port}",
                          "--threads", str(threads)], log=work / "upstream.log")
    wait_ready(p, f"http://127.0.0.1:{port}/data")
    return p, port


# --- Portcullis ---------------------------------------------------------------

def gateway_config(work: Path, name: str, upstream_port: int, *, redis_url: str | None = None,
                   users: bool = False, extra: str = "",
                   store_url: str | None = None) -> tuple[Path, int, int]:
    """A gateway's config; its store is its own SQLite file unless
    `store_url` names another (a Postgres database several share)."""
    port, admin = free_port(), free_port()
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite://{d}/portcullis.db"
    backend = f'backend = "{redis_url}"\n' if redis_url else ""
    grants = '["client_credentials", "refresh_token", "password"]' if users else \
        '["client_credentials", "refresh_token"]'
    cfg = f'''# Written by bench/side-by-side for the "{name}" contender.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[store]
url = "{store_url}"

[log]
format = "json"
access_log = true

[rate_limit]
{backend}# On for every request, never refusing: the cost of counting is measured.
default = "1000/second burst 1000000000"
# The login flood is the load here, not something to refuse.
auth_endpoints = "off"

[tokens]
grants = {grants}

[[routes]]
path = "/data"
methods = ["GET"]
upstream = "http://127.0.0.1:{upstream_port}"
auth = ["api_key_header"]
scopes = ["data:read"]

[[routes]]
path = "/jwt"
methods = ["GET"]
upstream = "http://127.0.0.1:{upstream_port}"
auth = ["bearer"]
scopes = ["data:read"]
{extra}'''
    path = d / "portcullis.toml"
    path.write_text(cfg)
    # A Postgres URL holds the (throwaway) cluster's password.
    os.chmod(path, 0o600)
    return path, port, admin


def _cli(build: Build, config: Path, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([str(build.bins["portcullis"]), *args, "--config", str(config)],
                       input=stdin, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"portcullis {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def prepare_gateway(build: Build, config: Path) -> dict[str, str]:
    """Creates the store and the credentials the scenarios use."""
    admin_key = _cli(build, config, "init").strip().splitlines()[-1].strip()
    key = _cli(build, config, "keys", "create", "--name", "bench", "--scopes", "data:read").strip()
    return {"admin_key": admin_key, "key": key}


def add_user(build: Build, config: Path, name: str, password: str) -> None:
    _cli(build, config, "users", "add", name, "--scopes", "data:read", stdin=password + "\n")


def add_client(build: Build, config: Path) -> tuple[str, str]:
    out = _cli(build, config, "clients", "add", "bench-client", "--scopes", "data:read").split()
    return out[0], out[1]


def start_gateway(build: Build, work: Path, name: str, config: Path, port: int,
                  key: str, threads: int | None = None) -> Running:
    """`threads` sets `server.threads` (through its environment override,
    so a build without the setting is still started when it is None)."""
    env = dict(os.environ)
    if threads is not None:
        env["PORTCULLIS_SERVER__THREADS"] = str(threads)
    p = Proc(name, [str(build.bins["portcullis"]), "serve", "--config", str(config)],
             env=env, log=work / f"{name}.log")
    startup = wait_ready(p, f"http://127.0.0.1:{port}/readyz")
    return Running(name, p, f"http://127.0.0.1:{port}/data", {"X-API-Key": key}, startup)


# --- nginx ------------------------------------------------------------------

def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _nginx_dir(work: Path, name: str) -> Path:
    d = work / name
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    for p in (d, d / "tmp"):
        os.chmod(p, 0o777)
    return d


def start_nginx(work: Path, upstream_port: int, key: str, workers: int | None = None) -> Running:
    """nginx as people run it for this job: a map from the key header to a
    client name, `limit_req` on that name, and keep-alive `proxy_pass`;
    `workers` processes (the gateway's thread count; default one per core),
    its access log on."""
    d = _nginx_dir(work, "nginx")
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f'''# Written by bench/side-by-side: nginx as a key-checking, rate-limiting proxy.
worker_processes {workers or "auto"};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    # Keys are longer than the default bucket holds.
    map_hash_bucket_size 128;
    map $http_x_api_key $api_client {{
        default "";
        "{key}" "bench";
    }}
    # On for every request, never refusing, as for Portcullis.
    limit_req_zone $api_client zone=per_key:10m rate=1000000r/s;
    limit_req_status 429;

    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /data {{
            if ($api_client = "") {{
                return 401;
            }}
            limit_req zone=per_key burst=100000 nodelay;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-API-Key "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://app;
        }}
    }}
}}
''')
    p = Proc("nginx", [nginx_bin(), "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
             log=work / "nginx.log")
    url = f"http://127.0.0.1:{port}/data"
    startup = wait_ready(p, url, headers={"X-API-Key": key})
    return Running("nginx", p, url, {"X-API-Key": key}, startup)


# --- the seed app, in FastAPI and in Rust --------------------------------------

def _seed_env(work: Path, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"SEED_API_KEY": SEED_KEY, "SEED_DATA_DIR": str(d)})
    env.update(extra or {})
    return env


def venv_python() -> Path:
    return ROOT / ".venv" / "bin" / "python"


def start_fastapi(work: Path, workers: int) -> Running:
    name = f"fastapi-{workers}w"
    port = free_port()
    argv = [str(venv_python()), "-m", "uvicorn", "app:app", "--app-dir",
            str(ROOT / "examples" / "seed_app" / "fastapi"), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    p = Proc(name, argv, env=_seed_env(work, name), log=work / f"{name}.log")
    startup = wait_ready(p, f"http://127.0.0.1:{port}/public")
    return Running(name, p, f"http://127.0.0.1:{port}/data", {"X-API-Key": SEED_KEY}, startup)


def start_seed_app(build: Build, work: Path) -> Running:
    port = free_port()
    env = _seed_env(work, "seed_app", {"SEED_ADDR": f"127.0.0.1:{port}"})
    p = Proc("seed_app", [str(build.bins["seed_app"])], env=env, log=work / "seed_app.log")
    startup = wait_ready(p, f"http://127.0.0.1:{port}/public")
    return Running("seed_app", p, f"http://127.0.0.1:{port}/data", {"X-API-Key": SEED_KEY}, startup)


# --- Redis --------------------------------------------------------------------

def start_redis(work: Path) -> tuple[Proc, int]:
    port = free_port()
    d = work / "redis"
    d.mkdir(exist_ok=True)
    p = Proc("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                       "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--daemonize", "no", "--dir", str(d)], log=work / "redis.log")
    import socket
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return p, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start:\n{p.tail()}")


def random_password() -> str:
    return secrets.token_urlsafe(18)


def start_nginx_verify(work: Path, upstream_port: int, gateway_port: int, key: str,
                       workers: int | None = None) -> Running:
    """The decision-endpoint deployment (docs/deployment.md, section 3,
    trimmed to what a valid request meets): nginx proxies to the upstream
    and asks the gateway's `GET /auth/verify` first (`auth_request`), over
    keep-alive connections; the gateway checks the key and counts the rate
    limit. nginx's access log is on, as for the other nginx."""
    d = _nginx_dir(work, "nginx-verify")
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f'''# Written by bench/side-by-side: nginx auth_request -> Portcullis /auth/verify.
worker_processes {workers or "auto"};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    upstream portcullis {{
        server 127.0.0.1:{gateway_port};
        keepalive 64;
    }}
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /data {{
            auth_request /_portcullis;
            auth_request_set $pc_principal $upstream_http_x_portcullis_principal;
            auth_request_set $pc_scopes $upstream_http_x_portcullis_scopes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-API-Key "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Portcullis-Principal $pc_principal;
            proxy_set_header X-Portcullis-Scopes $pc_scopes;
            proxy_pass http://app;
        }}
        location = /_portcullis {{
            internal;
            proxy_pass http://portcullis/auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
    }}
}}
''')
    p = Proc("nginx-verify", [nginx_bin(), "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
             log=work / "nginx-verify.log")
    url = f"http://127.0.0.1:{port}/data"
    startup = wait_ready(p, url, headers={"X-API-Key": key})
    return Running("nginx+verify", p, url, {"X-API-Key": key}, startup)


# --- the floor: hyper alone ------------------------------------------------------

def start_hyper_floor(build: Build, work: Path, upstream_port: int, threads: int,
                      key: str) -> Running:
    """bench/src/bin/hyper_floor.rs: hyper's server and client and nothing
    else, one current-thread loop per thread with its own SO_REUSEPORT
    listener. The key header is sent (the same request as for the others)
    and ignored."""
    port = free_port()
    p = Proc("hyper-floor", [str(build.bins["hyper_floor"]), "--listen", f"127.0.0.1:{port}",
                             "--upstream", f"127.0.0.1:{upstream_port}", "--threads", str(threads)],
             log=work / "hyper-floor.log")
    url = f"http://127.0.0.1:{port}/data"
    startup = wait_ready(p, url)
    return Running("hyper-floor", p, url, {"X-API-Key": key}, startup)

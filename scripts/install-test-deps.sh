#!/usr/bin/env bash
# Installs what the integration tests need from Debian, if it is missing:
#
#   nginx         the nginx auth_request tests (crates/portcullis-gateway/tests/it/nginx.rs)
#   caddy         the Caddy forward_auth tests (crates/portcullis-gateway/tests/it/caddy.rs),
#                 which run /usr/bin/caddy with docs/deploy/Caddyfile
#   postgresql    the Postgres store tests: each test binary starts a private
#                 cluster (initdb into a temp dir, a free loopback port, run
#                 as the unprivileged `postgres` user through setpriv when the
#                 tests run as root: crates/portcullis/tests/it/pg_server.rs)
#   redis-server  the Redis rate-limit tests (crates/portcullis/tests/it/redis_limit.rs,
#                 crates/portcullis-gateway/tests/it/redis.rs)
#   curl          scripts and manual checks
#   wrk           the load generator of the side-by-side benchmark
#                 (bench/side-by-side; its smoke run is part of scripts/test)
#   nghttp2-client  h2load, valid HTTP/2 load beside the flood tests
#                 (crates/portcullis-gateway/tests/it/hostile_clients.rs)
#   python3       the decoding upstream of the path tests
#                 (tests/python/decoding_upstream.py, stdlib only)
#   prometheus    the metrics tests (crates/portcullis-gateway/tests/it/metrics.rs):
#                 /usr/bin/promtool lints the exposition and docs/alerts.yml,
#                 and each test that needs a server starts its own
#                 /usr/bin/prometheus (temp dir, free loopback port)
#   chromium, chromium-driver
#                 the browser test (crates/portcullis-gateway/tests/it/browser.rs),
#                 which drives headless /usr/bin/chromium through
#                 /usr/bin/chromedriver (W3C WebDriver); both are built from
#                 one Debian source, so their versions match
#   nodejs, npm   panva's oidc-provider (npm ci in tests/oidc, pinned by its
#                 package-lock.json), the real OpenID provider of
#                 crates/portcullis-gateway/tests/it/oidc.rs
#
# and a Python venv at the repo root's .venv (git-ignored) with pinned client
# libraries from PyPI, for the OAuth2 / JWT tests that drive the gateway with
# real third-party clients (tests/python/*.py, run as .venv/bin/python ...):
#
#   PyJWT[crypto], cryptography, authlib, requests   (versions: PY_PINS below)
#   fastapi, uvicorn, python-multipart, pwdlib[argon2], slowapi
#                 the FastAPI rendition of the seed app, for the differential
#                 run (scripts/differential)
#   openapi-spec-validator
#                 validates the OpenAPI documents Portcullis serves
#   schemathesis  property-based tests of the live admin API against its
#                 OpenAPI document (scripts/schemathesis)
#   h2            a raw HTTP/2 frame client for the hostile-client tests
#                 (tests/python/h2_attacks.py)
#
# Idempotent: a second run installs nothing and does not touch the network
# (the venv is left alone when it imports the pinned versions).
# Run as root (or through sudo).
#
# The browser test needs a real Chromium, not Ubuntu's snap-installing
# transitional package: on a host without the Debian packages it is skipped
# unless REQUIRE_BROWSER_TESTS is set (CI sets it), when it fails.
#
# The tests never use a system nginx, Redis, Prometheus or Caddy: each test
# starts its own nginx (`nginx -p PREFIX -c CONF -e stderr`, `daemon off;
# master_process off;`) or redis-server (`--port P --bind 127.0.0.1 --save ""
# --appendonly no --daemonize no --dir TMP`) or prometheus
# (`--storage.tsdb.path TMP --web.listen-address 127.0.0.1:P`) or caddy
# (`caddy run --config TMP/Caddyfile --adapter caddyfile`, admin endpoint off,
# HOME and XDG dirs in TMP) on a free loopback port, with pid, logs and
# data inside a temp dir. So this script also keeps the packages from
# starting their system services on install, and nothing needs to be
# running afterwards.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo_root/.venv"
# Bump together; check a version exists with `pip index versions NAME`.
PY_PINS=(
    "PyJWT[crypto]==2.15.1"
    "cryptography==50.0.2"
    "authlib==1.9.9"
    "requests==2.34.2"
    "fastapi==0.163.2"
    "uvicorn==0.54.0"
    "python-multipart==0.0.34"
    "pwdlib[argon2]==0.3.1"
    "slowapi==0.1.10"
    "openapi-spec-validator==0.9.0"
    "schemathesis==4.32.5"
    "h2==4.3.0"
)

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

# A package is installable when apt knows a candidate version for it.
installable() {
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

missing=()
have curl || missing+=(curl)
have wrk || missing+=(wrk)
have h2load || missing+=(nghttp2-client)
have python3 || missing+=(python3)
have redis-server || missing+=(redis-server)
# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/N/bin.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
have setpriv || missing+=(util-linux)
# The metrics tests run these exact paths; Debian's package ships both.
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
# The browser test runs these exact paths.
chromium_bin=/usr/bin/chromium
chromedriver_bin=/usr/bin/chromedriver
[ -x "$chromium_bin" ] || missing+=(chromium)
[ -x "$chromedriver_bin" ] || missing+=(chromium-driver)
# The Caddy tests run this exact path.
[ -x /usr/bin/caddy ] || missing+=(caddy)
# The OpenID provider tests run panva's oidc-provider (tests/oidc) on node.
have node || missing+=(nodejs)
have npm || missing+=(npm)
need_nginx=0
have nginx || need_nginx=1

if [ "${#missing[@]}" -eq 0 ] && [ "$need_nginx" -eq 0 ]; then
    echo "install-test-deps: nginx, redis-server, postgresql, prometheus, caddy, curl, wrk, chromium and chromium-driver already installed" >&2
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: must run as root to install: ${missing[*]} $([ "$need_nginx" -eq 1 ] && echo nginx)" >&2
        exit 1
    fi
    apt-get update

    if [ "$need_nginx" -eq 1 ]; then
        # `nginx` on bookworm and later; older releases split the binary
        # into nginx-light / nginx-core.
        pkg=""
        for p in nginx nginx-light nginx-core; do
            if installable "$p"; then
                pkg=$p
                break
            fi
        done
        if [ -z "$pkg" ]; then
            echo "install-test-deps: no nginx package available from apt" >&2
            exit 1
        fi
        missing+=("$pkg")
    fi

    # Keep package scripts from starting the system nginx, redis-server,
    # prometheus, caddy or postgresql (whose cluster the tests never use):
    # the tests run their own. Only add a policy if none exists, and remove
    # only ours.
    ours=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        ours=/usr/sbin/policy-rc.d
    fi
    trap '[ -n "$ours" ] && rm -f "$ours"' EXIT

    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
if ! "$nginx_bin" -V 2>&1 | grep -q -- '--with-http_auth_request_module'; then
    echo "install-test-deps: $nginx_bin was built without the auth_request module" >&2
    exit 1
fi

# --- Python venv -----------------------------------------------------------

# True when the venv imports every pinned distribution at its pinned version.
venv_ok() {
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "${PY_PINS[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import jwt, authlib, requests, cryptography, fastapi, uvicorn, multipart, pwdlib, slowapi, openapi_spec_validator, schemathesis, h2  # noqa: F401
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    name = name.split("[")[0]
    if version(name) != want:
        sys.exit(1)
PY
}

if venv_ok; then
    echo "install-test-deps: $venv already has ${PY_PINS[*]}" >&2
else
    if ! command -v python3 >/dev/null 2>&1; then
        echo "install-test-deps: python3 not found" >&2
        exit 1
    fi
    # Debian's python3 ships venv without ensurepip unless python3-venv
    # (python3.X-venv) is installed.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "install-test-deps: must run as root to install python3-venv" >&2
            exit 1
        fi
        pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        apt-get update
        pkgs=(python3-venv)
        installable "python$pyver-venv" && pkgs+=("python$pyver-venv")
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
    fi
    # A venv left half-made by an interrupted run is rebuilt from scratch.
    if [ -e "$venv" ] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$venv"
    fi
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-input --quiet "${PY_PINS[@]}"
    if ! venv_ok; then
        echo "install-test-deps: $venv does not import ${PY_PINS[*]} after install" >&2
        exit 1
    fi
    echo "install-test-deps: installed ${PY_PINS[*]} into $venv" >&2
fi

redis_bin=$(command -v redis-server 2>/dev/null || echo /usr/bin/redis-server)
if ! "$redis_bin" --version >/dev/null 2>&1; then
    echo "install-test-deps: $redis_bin does not run" >&2
    exit 1
fi

# `chromium --version` needs no display; Debian's wrapper script may
# print noise on stderr.
chromium_version=$("$chromium_bin" --version 2>/dev/null | awk '/Chromium/ { print $2; exit }')
chromedriver_version=$("$chromedriver_bin" --version 2>/dev/null | awk '/ChromeDriver/ { print $2; exit }')
if [ -z "$chromium_version" ] || [ -z "$chromedriver_version" ]; then
    echo "install-test-deps: $chromium_bin or $chromedriver_bin does not run (is chromium a snap transitional package?)" >&2
    exit 1
fi
if [ "${chromium_version%%.*}" != "${chromedriver_version%%.*}" ]; then
    echo "install-test-deps: chromedriver $chromedriver_version does not match chromium $chromium_version: upgrade chromium and chromium-driver together" >&2
    exit 1
fi

if ! /usr/bin/caddy version >/dev/null 2>&1; then
    echo "install-test-deps: /usr/bin/caddy does not run" >&2
    exit 1
fi
caddy_version=$(/usr/bin/caddy version 2>/dev/null | awk 'NR == 1 { print $1 }')

if ! /usr/bin/prometheus --version >/dev/null 2>&1 || ! /usr/bin/promtool --version >/dev/null 2>&1; then
    echo "install-test-deps: /usr/bin/prometheus or /usr/bin/promtool does not run" >&2
    exit 1
fi
prometheus_version=$(/usr/bin/prometheus --version 2>&1 | awk 'NR == 1 { print $3 }')

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if ! "$pg_bin/postgres" --version >/dev/null 2>&1 || ! "$pg_bin/initdb" --version >/dev/null 2>&1; then
    echo "install-test-deps: $pg_bin/postgres or initdb does not run" >&2
    exit 1
fi

# oidc-provider for crates/portcullis-gateway/tests/it/oidc.rs, exactly as
# tests/oidc/package-lock.json pins it; skipped when node_modules was
# installed from this very lock file.
oidc_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/oidc"
oidc_lock_sum=$(sha256sum "$oidc_dir/package-lock.json" | cut -d' ' -f1)
oidc_stamp="$oidc_dir/node_modules/.portcullis-lock-sha256"
if [ "$(cat "$oidc_stamp" 2>/dev/null)" != "$oidc_lock_sum" ]; then
    (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$oidc_lock_sum" > "$oidc_stamp"
fi
oidc_version=$(node -p "require('$oidc_dir/node_modules/oidc-provider/package.json').version")

echo "install-test-deps: ok ($("$nginx_bin" -v 2>&1), $("$redis_bin" --version | cut -d' ' -f1-3), $("$pg_bin/postgres" --version), $(curl --version | head -n1 | cut -d' ' -f1-2), Prometheus $prometheus_version, Caddy $caddy_version, Chromium $chromium_version, ChromeDriver $chromedriver_version, node $(node --version) with oidc-provider $oidc_version, $("$venv/bin/python" --version))" >&2

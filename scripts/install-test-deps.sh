#!/usr/bin/env bash
# Installs what the integration tests need from Debian, if it is missing:
#
#   nginx  the nginx auth_request tests (crates/portcullis-gateway/tests/it/nginx.rs)
#   curl   scripts and manual checks
#
# Idempotent: a second run installs nothing and does not touch the network.
# Run as root (or through sudo).
#
# The tests never use a system nginx: each test starts its own nginx
# (`nginx -p PREFIX -c CONF -e stderr`, `daemon off; master_process off;`)
# on a free loopback port, with pid, logs and temp paths inside a temp dir.
# So this script also keeps the package from starting the system service on
# install, and nothing needs to be running afterwards.
set -euo pipefail

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
need_nginx=0
have nginx || need_nginx=1

if [ "${#missing[@]}" -eq 0 ] && [ "$need_nginx" -eq 0 ]; then
    echo "install-test-deps: nginx and curl already installed" >&2
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

    # Keep package scripts from starting the system nginx: the tests run
    # their own. Only add a policy if none exists, and remove only ours.
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
echo "install-test-deps: ok ($("$nginx_bin" -v 2>&1), $(curl --version | head -n1 | cut -d' ' -f1-2))" >&2

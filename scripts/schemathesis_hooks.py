"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

The run authenticates every request with one admin key. Schemathesis finds
that key's id in the answers of GET /admin/v1/keys (and follows links from
them), and would revoke, disable or rotate it: the server refuses the first
two while it is the last active admin key (409 `last_admin_key`), but a
fuzzed POST /admin/v1/keys can make another admin key, and a rotation with
`"grace": "0s"` ends the old key at once by design. So every destructive
call aimed at the run's own key is pointed at a throwaway key instead,
created for this by scripts/schemathesis: the call still happens and is
still checked, it just cannot lock the run out.
"""

import os

import schemathesis

# The run's admin key, and a throwaway key to aim at instead.
ADMIN_KEY_ID = os.environ["PORTCULLIS_ST_ADMIN_KEY_ID"]
DECOY_KEY_ID = os.environ["PORTCULLIS_ST_DECOY_KEY_ID"]

# Operations that end or replace the key named in the path.
DESTRUCTIVE = {
    ("DELETE", "/admin/v1/keys/{id}"),
    ("POST", "/admin/v1/keys/{id}/revoke"),
    ("POST", "/admin/v1/keys/{id}/disable"),
    ("POST", "/admin/v1/keys/{id}/rotate"),
}


# One line per redirected call, so the runner can say how many there were.
REDIRECT_LOG = os.environ.get("PORTCULLIS_ST_REDIRECT_LOG")


@schemathesis.hook
def before_call(context, case, kwargs):
    op = (case.operation.method.upper(), case.operation.path)
    params = case.path_parameters or {}
    if op in DESTRUCTIVE and params.get("id") == ADMIN_KEY_ID:
        params["id"] = DECOY_KEY_ID
        if REDIRECT_LOG:
            with open(REDIRECT_LOG, "a") as f:
                f.write(f"{op[0]} {op[1]}\n")

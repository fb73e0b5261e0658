"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

The run authenticates every request with one admin key. Schemathesis finds
that key's id in the answers of GET /admin/v1/keys (and follows links from
them), and would revoke, disable, rotate or change it: the server refuses the first
two while it is the last active admin key (409 `last_admin_key`), but a
fuzzed POST /admin/v1/keys can make another admin key, and a rotation with
`"grace": "0s"` ends the old key at once by design. So every destructive
call aimed at the run's own key is pointed at a throwaway key instead,
created for this by scripts/schemathesis: the call still happens and is
still checked, it just cannot lock the run out.

The usage endpoints (/admin/v1/keys/{id}/usage, /admin/v1/usage) take a
range whose rules span two parameters (`from` before `to`, at most 1,500
buckets between them), which no schema of a query parameter can state. A
positive case (one schemathesis means to be accepted) that breaks them is
moved into a range that keeps them before it is sent, so the check that
valid data is accepted tests what the schema promises; the refusals of bad
ranges (422 with a `detail`) are tested by the gateway's tests
(analytics::bad_usage_parameters_are_named, openapi.rs).
"""

import os
import time

import schemathesis

# The run's admin key, and a throwaway key to aim at instead.
ADMIN_KEY_ID = os.environ["PORTCULLIS_ST_ADMIN_KEY_ID"]
DECOY_KEY_ID = os.environ["PORTCULLIS_ST_DECOY_KEY_ID"]

# Operations that end, replace or change the key named in the path (a
# PATCH could take the run key's `admin` scope once another admin key
# exists).
DESTRUCTIVE = {
    ("DELETE", "/admin/v1/keys/{id}"),
    ("PATCH", "/admin/v1/keys/{id}"),
    ("POST", "/admin/v1/keys/{id}/revoke"),
    ("POST", "/admin/v1/keys/{id}/disable"),
    ("POST", "/admin/v1/keys/{id}/rotate"),
}


USAGE = {"/admin/v1/keys/{id}/usage", "/admin/v1/usage"}
BUCKET_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the documented maximum
MAX_POINTS = 1500


def as_int(v):
    """An integer as sent (the coverage phase sends query values as
    text), or None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lstrip("-").isdigit() and len(v) < 20:
        return int(v)
    return None


def usage_range(query):
    """`query` with `from` and `to` made explicit and within the range
    rules, when its other values are ones the server reads; None when the
    case is malformed anyway (left as generated)."""
    frm, to = query.get("from"), query.get("to")
    width = BUCKET_SECONDS.get(query.get("bucket", "hour"))
    if width is None or any(v is not None and as_int(v) is None for v in (frm, to)):
        return None
    frm = None if frm is None else as_int(frm)
    to = None if to is None else as_int(to)
    if any(v is not None and not 0 <= v <= MAX_TIME for v in (frm, to)):
        return None
    to = int(time.time()) if to is None else to
    frm = max(0, to - 86400) if frm is None else frm
    if frm >= to:
        to = min(frm + width, MAX_TIME)
        frm = min(frm, to - 1)
    if (to - frm // width * width + width - 1) // width > MAX_POINTS:
        frm = to - (MAX_POINTS - 1) * width
    return {**query, "from": frm, "to": to}


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
    meta = getattr(case, "meta", None)
    positive = meta is None or meta.generation.mode.is_positive
    if op[0] == "GET" and op[1] in USAGE and positive and isinstance(case.query or {}, dict):
        fixed = usage_range(case.query or {})
        if fixed is not None:
            case.query = fixed
            if isinstance(kwargs.get("params"), dict):
                kwargs["params"] = fixed

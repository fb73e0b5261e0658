#!/usr/bin/env python3
"""OAuth2 flows against a running Portcullis, with unchanged third-party clients.

Run with the venv that scripts/install-test-deps.sh makes:

    .venv/bin/python tests/python/oauth_flows.py \\
        --base http://127.0.0.1:PORT --client-id ID --client-secret SECRET \\
        --username U --password P --protected /path

The client must be allowed the grants client_credentials, refresh_token and
password; the user must be able to reach --protected with the scopes the
token endpoint grants by default (or with --scope).

Options: --audience (default "portcullis"); --scope S (sent with every grant;
default: no scope parameter, and scope= empty in the FastAPI form);
--public-password accept|reject|skip (what the gateway must do with a password
grant that carries no client authentication; default accept: 200 and a
working token; reject: 400/401 with invalid_client or unauthorized_client);
--no-negative (skip the one wrong-password and one wrong-secret attempt,
which count toward brute-force lockout); -v (tracebacks on stderr).

What is driven, and by which library (nothing here patches a library):

  authlib   authlib.integrations.requests_client.OAuth2Session, with
            token_endpoint_auth_method client_secret_basic and
            client_secret_post: fetch_token(grant_type="client_credentials"),
            fetch_token(username=, password=) (authlib sends
            grant_type=password), refresh_token(), revoke_token(), and the
            session itself for the API call (it adds "Authorization: Bearer").
  requests  a plain POST of what FastAPI's OAuth2PasswordRequestForm clients
            send (grant_type=password&username=&password=&scope=, no client
            authentication), /oauth/introspect, and the error cases.
  PyJWT     jwt.PyJWKClient(BASE/.well-known/jwks.json)
            .get_signing_key_from_jwt(token), then jwt.decode(...,
            algorithms=["EdDSA", "RS256"], audience=, issuer=) with the issuer
            read from /.well-known/oauth-authorization-server.

Output: one line per check on stdout, "ok NAME" or "FAIL NAME: why", then a
last line "oauth_flows: N passed, N failed". Exit status 0 when every check
passed, 1 when any failed, 2 for bad arguments (argparse).

Refresh tokens are single use and rotate: using a rotated-out refresh token
again must fail with invalid_grant and revoke its whole family, so the
replacement then fails too (RFC 9700 §4.14.2, ASVS 5.0 10.4.5).
"""

import argparse
import base64
import os
import secrets
import string
import sys
import traceback

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

TIMEOUT = 10


class Skip(Exception):
    """A check that could not run because an earlier one failed."""


class Checks:
    def __init__(self, verbose):
        self.passed = 0
        self.failed = 0
        self.verbose = verbose

    def run(self, name, fn, *args):
        """Run fn(*args); print ok/FAIL; return fn's value, or None on failure."""
        try:
            value = fn(*args)
        except Skip as e:
            self._fail(name, f"not run: {e}")
            return None
        except AssertionError as e:
            self._fail(name, str(e) or "assertion failed")
            if self.verbose:
                traceback.print_exc()
            return None
        except Exception as e:  # noqa: BLE001 - every error is a failed check
            self._fail(name, f"{type(e).__name__}: {e}")
            if self.verbose:
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"ok {name}", flush=True)
        return value

    def _fail(self, name, why):
        self.failed += 1
        why = " ".join(str(why).split())[:500]
        print(f"FAIL {name}: {why}", flush=True)


def need(value, what):
    if value is None:
        raise Skip(f"needs {what}")
    return value


def short(resp):
    body = resp.text
    if len(body) > 300:
        body = body[:300] + "..."
    return f"HTTP {resp.status_code} {body!r}"


class Flows:
    def __init__(self, args):
        self.a = args
        self.base = args.base.rstrip("/")
        self.token_url = self.base + "/oauth/token"
        self.revoke_url = self.base + "/oauth/revoke"
        self.introspect_url = self.base + "/oauth/introspect"
        self.jwks_url = self.base + "/.well-known/jwks.json"
        self.metadata_url = self.base + "/.well-known/oauth-authorization-server"
        self.protected_url = self.base + "/" + args.protected.lstrip("/")
        self.issuer = None
        self.jwks_client = jwt.PyJWKClient(self.jwks_url, timeout=TIMEOUT)
        self.http = requests.Session()
        self.http.trust_env = False  # never a proxy for loopback

    # --- helpers -----------------------------------------------------------

    def session(self, auth_method, client_secret=None):
        s = OAuth2Session(
            self.a.client_id,
            client_secret or self.a.client_secret,
            token_endpoint_auth_method=auth_method,
            revocation_endpoint_auth_method=auth_method,
            scope=self.a.scope,
            default_timeout=TIMEOUT,
        )
        s.trust_env = False
        # Observe (never change) the token endpoint's raw answers.
        s.last_token_response = None

        def keep(resp):
            s.last_token_response = resp
            return resp

        s.register_compliance_hook("access_token_response", keep)
        s.register_compliance_hook("refresh_token_response", keep)
        return s

    def check_token_response(self, s, token):
        resp = s.last_token_response
        assert resp is not None, "no token response seen"
        assert resp.status_code == 200, f"token endpoint: {short(resp)}"
        cc = resp.headers.get("Cache-Control", "")
        assert "no-store" in cc.lower(), f"Cache-Control is {cc!r}, want no-store"
        assert isinstance(token.get("access_token"), str) and token["access_token"], (
            f"no access_token in {sorted(token)}"
        )
        tt = token.get("token_type")
        assert isinstance(tt, str) and tt.lower() == "bearer", f"token_type {tt!r}"
        ei = token.get("expires_in")
        assert isinstance(ei, int) and ei > 0, f"expires_in {ei!r}"
        assert "scope" in token, f"no scope in {sorted(token)}"
        return token

    def expect_oauth_error(self, s, what, code, call, status=400):
        s.last_token_response = None
        try:
            token = call()
        except OAuthError as e:
            assert e.error == code, f"{what}: error {e.error!r} ({e.description!r}), want {code!r}"
            resp = s.last_token_response
            if resp is not None:
                assert resp.status_code == status, f"{what}: {short(resp)}, want {status}"
            return
        raise AssertionError(f"{what}: got a token ({sorted(token)}), want {code}")

    def verify_jwt(self, at, client_id=None):
        header = jwt.get_unverified_header(at)
        assert header.get("typ") == "at+jwt", f"header typ {header.get('typ')!r}, want 'at+jwt'"
        assert header.get("kid"), "header has no kid"
        signing_key = self.jwks_client.get_signing_key_from_jwt(at)
        claims = jwt.decode(
            at,
            signing_key.key,
            algorithms=["EdDSA", "RS256"],
            audience=self.a.audience,
            issuer=need(self.issuer, "the issuer from the metadata"),
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            leeway=5,
        )
        for c in ("sub", "jti", "scope", "exp", "iat"):
            assert c in claims, f"claim {c} missing from {sorted(claims)}"
        assert isinstance(claims["scope"], str), f"scope claim {claims['scope']!r} is not a string"
        assert claims["exp"] > claims["iat"], f"exp {claims['exp']} <= iat {claims['iat']}"
        if client_id is not None and "client_id" in claims:
            assert claims["client_id"] == client_id, (
                f"client_id claim {claims['client_id']!r}, want {client_id!r}"
            )
        return claims

    def call_protected(self, at, via=None):
        if via is not None:
            # authlib's own way: the session signs the request with its token.
            resp = via.get(self.protected_url, timeout=TIMEOUT)
            sent = resp.request.headers.get("Authorization", "")
            assert sent == f"Bearer {at}", f"authlib sent Authorization {sent[:20]!r}..."
        else:
            resp = self.http.get(
                self.protected_url, headers={"Authorization": f"Bearer {at}"}, timeout=TIMEOUT
            )
        assert resp.status_code == 200, f"GET {self.a.protected}: {short(resp)}"

    def introspect(self, token, hint=None, auth=True):
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        resp = self.http.post(
            self.introspect_url,
            data=data,
            auth=(self.a.client_id, self.a.client_secret) if auth else None,
            timeout=TIMEOUT,
        )
        return resp

    def introspect_json(self, token, hint=None):
        resp = self.introspect(token, hint)
        assert resp.status_code == 200, f"introspect: {short(resp)}"
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body.get("active"), bool), (
            f"introspect: {short(resp)}"
        )
        return body

    def check_introspect_active(self, at, claims):
        body = self.introspect_json(at, "access_token")
        assert body["active"] is True, f"introspect says {body}"
        for f in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "token_type", "jti"):
            assert f in body, f"introspect lacks {f}: {body}"
        assert body["client_id"] == self.a.client_id, f"client_id {body['client_id']!r}"
        assert body["iss"] == self.issuer, f"iss {body['iss']!r}, want {self.issuer!r}"
        if claims is not None:
            assert body["jti"] == claims["jti"], f"jti {body['jti']!r}, token has {claims['jti']!r}"
            assert body["sub"] == claims["sub"], f"sub {body['sub']!r}, token has {claims['sub']!r}"

    # --- checks ------------------------------------------------------------

    def metadata(self):
        resp = self.http.get(self.metadata_url, timeout=TIMEOUT)
        assert resp.status_code == 200, f"{self.metadata_url}: {short(resp)}"
        md = resp.json()
        assert isinstance(md.get("issuer"), str) and md["issuer"], f"no issuer in {md}"
        te = md.get("token_endpoint")
        assert isinstance(te, str) and te.endswith("/oauth/token"), f"token_endpoint {te!r}"
        ju = md.get("jwks_uri")
        if ju is not None:
            assert ju.endswith("/.well-known/jwks.json"), f"jwks_uri {ju!r}"
        self.issuer = md["issuer"]
        return md

    def client_credentials(self, method):
        s = self.session(method)
        token = s.fetch_token(self.token_url, grant_type="client_credentials")
        self.check_token_response(s, token)
        return s, token

    def password(self, method):
        s = self.session(method)
        token = s.fetch_token(self.token_url, username=self.a.username, password=self.a.password)
        self.check_token_response(s, token)
        rt = token.get("refresh_token")
        assert isinstance(rt, str) and rt, f"password grant gave no refresh_token: {sorted(token)}"
        return s, token

    def refresh_rotates(self, s, old_token):
        rt1 = old_token["refresh_token"]
        at1 = old_token["access_token"]
        token = s.refresh_token(self.token_url, refresh_token=rt1)
        self.check_token_response(s, token)
        rt2 = s.last_token_response.json().get("refresh_token")
        assert isinstance(rt2, str) and rt2, "refresh grant gave no new refresh_token"
        assert rt2 != rt1, "refresh token was not rotated"
        assert token["access_token"] != at1, "refresh gave the same access token"
        return token, rt1, rt2

    def fastapi_form(self):
        form = [
            ("grant_type", "password"),
            ("username", self.a.username),
            ("password", self.a.password),
            ("scope", self.a.scope or ""),
        ]
        resp = self.http.post(self.token_url, data=form, timeout=TIMEOUT)
        if self.a.public_password == "reject":
            assert resp.status_code in (400, 401), f"{short(resp)}, want 401 invalid_client"
            err = resp.json().get("error")
            assert err in ("invalid_client", "unauthorized_client"), f"error {err!r}"
            return None
        assert resp.status_code == 200, f"{short(resp)}"
        cc = resp.headers.get("Cache-Control", "")
        assert "no-store" in cc.lower(), f"Cache-Control is {cc!r}"
        token = resp.json()
        assert token.get("token_type", "").lower() == "bearer", f"token_type {token.get('token_type')!r}"
        assert token.get("access_token"), f"no access_token in {sorted(token)}"
        return token

    def revoke(self, s, rt):
        resp = s.revoke_token(self.revoke_url, token=rt, token_type_hint="refresh_token")
        assert resp.status_code == 200, f"revoke: {short(resp)}"

    def revoke_unknown(self, s):
        fake = "pcr_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))
        resp = s.revoke_token(self.revoke_url, token=fake, token_type_hint="refresh_token")
        assert resp.status_code == 200, f"revoke of an unknown token: {short(resp)}, want 200"

    def introspect_active(self, token, hint=None):
        body = self.introspect_json(token, hint)
        assert body["active"] is True, f"introspect of a live token says {body}"

    def introspect_inactive(self, token, hint=None):
        body = self.introspect_json(token, hint)
        assert body["active"] is False, f"introspect says {body}, want inactive"

    def introspect_needs_auth(self, token):
        resp = self.introspect(token, auth=False)
        assert resp.status_code == 401, f"introspect without client auth: {short(resp)}, want 401"

    def protected_without_token(self):
        resp = self.http.get(self.protected_url, timeout=TIMEOUT)
        assert resp.status_code == 401, f"GET {self.a.protected} with no credential: {short(resp)}, want 401"

    def wrong_client_secret(self):
        # RFC 6749 §5.2: 401 invalid_client when the client used HTTP Basic.
        s = self.session("client_secret_basic", client_secret="pcs_" + "x" * 43)
        self.expect_oauth_error(
            s,
            "wrong client secret",
            "invalid_client",
            lambda: s.fetch_token(self.token_url, grant_type="client_credentials"),
            status=401,
        )

    def wrong_password(self):
        s = self.session("client_secret_basic")
        self.expect_oauth_error(
            s,
            "wrong password",
            "invalid_grant",
            lambda: s.fetch_token(
                self.token_url, username=self.a.username, password=self.a.password + "-wrong"
            ),
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--protected", required=True, help="path of a route that takes bearer tokens")
    p.add_argument("--audience", default="portcullis", help="expected aud (default portcullis)")
    p.add_argument("--scope", default=None, help="scope to request (default: none sent)")
    p.add_argument(
        "--public-password",
        choices=("accept", "reject", "skip"),
        default="accept",
        help="what the gateway must do with a password grant that carries no client "
        "authentication, as FastAPI's OAuth2PasswordRequestForm clients send it "
        "(default accept)",
    )
    p.add_argument(
        "--no-negative",
        action="store_true",
        help="skip the wrong-password / wrong-secret checks (they count toward lockout)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on stderr")
    a = p.parse_args(argv)

    for k in list(os.environ):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[k]  # PyJWKClient uses urllib, which reads these

    c = Checks(a.verbose)
    f = Flows(a)

    c.run("metadata", f.metadata)
    c.run("protected_without_token_401", f.protected_without_token)

    # client_credentials, both client authentication methods
    for method in ("client_secret_basic", "client_secret_post"):
        tag = "basic" if method.endswith("basic") else "post"
        got = c.run(f"client_credentials_{tag}", f.client_credentials, method)
        s, token = got if got else (None, None)
        at = token["access_token"] if token else None
        claims = c.run(f"client_credentials_{tag}_jwt", lambda: f.verify_jwt(need(at, "a token"), a.client_id))
        c.run(f"client_credentials_{tag}_protected", lambda: f.call_protected(need(at, "a token"), s))
        c.run(
            f"client_credentials_{tag}_introspect_active",
            lambda: f.check_introspect_active(need(at, "a token"), claims),
        )

    # password grant (client_secret_basic), then refresh rotation and reuse detection
    got = c.run("password_basic", f.password, "client_secret_basic")
    s, token = got if got else (None, None)
    at = token["access_token"] if token else None
    claims = c.run("password_basic_jwt", lambda: f.verify_jwt(need(at, "a token"), a.client_id))
    c.run("password_basic_protected", lambda: f.call_protected(need(at, "a token"), s))
    c.run("password_basic_introspect_active", lambda: f.check_introspect_active(need(at, "a token"), claims))

    got = c.run("refresh_rotates", lambda: f.refresh_rotates(need(s, "a password token"), token))
    new_token, rt1, rt2 = got if got else (None, None, None)
    at2 = new_token["access_token"] if new_token else None
    c.run("refresh_new_access_jwt", lambda: f.verify_jwt(need(at2, "a refreshed token"), a.client_id))
    c.run("refresh_new_access_protected", lambda: f.call_protected(need(at2, "a refreshed token"), s))

    s_reuse = f.session("client_secret_basic")
    c.run(
        "refresh_reuse_old_invalid_grant",
        lambda: f.expect_oauth_error(
            s_reuse,
            "reused refresh token",
            "invalid_grant",
            lambda: s_reuse.refresh_token(f.token_url, refresh_token=need(rt1, "a rotated token")),
        ),
    )
    c.run(
        "refresh_family_revoked_after_reuse",
        lambda: f.expect_oauth_error(
            s_reuse,
            "the new refresh token after reuse of the old one",
            "invalid_grant",
            lambda: s_reuse.refresh_token(f.token_url, refresh_token=need(rt2, "a rotated token")),
        ),
    )

    # password grant (client_secret_post), then revoke its refresh token
    got = c.run("password_post", f.password, "client_secret_post")
    s3, token3 = got if got else (None, None)
    at3 = token3["access_token"] if token3 else None
    rt3 = token3["refresh_token"] if token3 else None
    claims3 = c.run("password_post_jwt", lambda: f.verify_jwt(need(at3, "a token"), a.client_id))
    c.run("password_post_protected", lambda: f.call_protected(need(at3, "a token"), s3))
    c.run("password_post_introspect_active", lambda: f.check_introspect_active(need(at3, "a token"), claims3))
    c.run("introspect_refresh_active", lambda: f.introspect_active(need(rt3, "a refresh token"), "refresh_token"))
    c.run("introspect_requires_client_auth", lambda: f.introspect_needs_auth(need(at3, "a token")))
    c.run("revoke_refresh", lambda: f.revoke(need(s3, "a session"), need(rt3, "a refresh token")))
    c.run("introspect_revoked_refresh_inactive", lambda: f.introspect_inactive(need(rt3, "a refresh token"), "refresh_token"))
    s_rev = f.session("client_secret_post")
    c.run(
        "refresh_after_revoke_invalid_grant",
        lambda: f.expect_oauth_error(
            s_rev,
            "revoked refresh token",
            "invalid_grant",
            lambda: s_rev.refresh_token(f.token_url, refresh_token=need(rt3, "a refresh token")),
        ),
    )
    c.run("revoke_unknown_token_200", lambda: f.revoke_unknown(f.session("client_secret_basic")))
    c.run("introspect_unknown_inactive", lambda: f.introspect_inactive("not-a-token"))

    # what FastAPI's OAuth2PasswordRequestForm clients send: no client authentication
    if a.public_password != "skip":
        form_token = c.run(f"fastapi_form_password_{a.public_password}", f.fastapi_form)
        if a.public_password == "accept":
            at4 = form_token["access_token"] if form_token else None
            c.run("fastapi_form_password_jwt", lambda: f.verify_jwt(need(at4, "a token")))
            c.run("fastapi_form_password_protected", lambda: f.call_protected(need(at4, "a token")))

    if not a.no_negative:
        c.run("wrong_client_secret_invalid_client", f.wrong_client_secret)
        c.run("wrong_password_invalid_grant", f.wrong_password)

    print(f"oauth_flows: {c.passed} passed, {c.failed} failed", flush=True)
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

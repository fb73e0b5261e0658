//! The authorization server over real HTTP: `/oauth/token` and its grants,
//! access tokens on bearer routes, refresh rotation, revocation and
//! introspection, key rotation, and real third-party clients (Python).

use crate::harness::*;
use reqwest::blocking::Response;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";
const ALL_GRANTS: &str = "client_credentials,refresh_token,password";

/// Routes on the demo upstream: `/data` needs `data:read`, `/write` needs
/// `data:write`, `/either` takes an API key or a bearer token.
fn config(password_grant: bool) -> String {
    let tokens = if password_grant {
        "[tokens]\ngrants = [\"client_credentials\", \"refresh_token\", \"password\"]\n"
    } else {
        ""
    };
    // Some tests send a hundred bad tokens from one address on purpose:
    // address blocking, which would answer them 429, is abuse.rs's.
    format!(
        r#"{tokens}
[abuse]
enabled = false

[[routes]]
path = "/data"
upstream = "demo"
auth = ["bearer"]
scopes = ["data:read"]

[[routes]]
path = "/write"
upstream = "demo"
auth = ["bearer"]
scopes = ["data:write"]

[[routes]]
path = "/either"
upstream = "demo"
auth = ["api_key_header", "bearer"]
scopes = ["data:read"]
"#
    )
}

/// A running gateway with user `alice` (data:read data:write), a client
/// `svc` (data:read other) and an API key (data:read).
struct Setup {
    srv: Server,
    env: Env,
    id: String,
    secret: String,
    key: String,
}

fn setup(password_grant: bool, client_grants: &str) -> Setup {
    let env = Env::new(&config(password_grant));
    env.init();
    env.add_user("alice", PASSWORD, "data:read,data:write");
    let (id, secret) = env.add_client("svc", "data:read,other", client_grants);
    let key = env.create_key(&["--name", "k", "--scopes", "data:read"]);
    let srv = env.serve();
    Setup {
        srv,
        env,
        id,
        secret,
        key,
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
}

fn post_form(env: &Env, path: &str, auth: Auth<'_>, form: &[(&str, &str)]) -> Response {
    let mut f = form.to_vec();
    let mut req = client().post(env.url(path));
    match auth {
        Auth::None => {}
        Auth::Basic(id, secret) => req = req.basic_auth(id, Some(secret)),
        Auth::Post(id, secret) => {
            f.push(("client_id", id));
            f.push(("client_secret", secret));
        }
    }
    req.form(&f).send().unwrap()
}

fn token_req(env: &Env, auth: Auth<'_>, form: &[(&str, &str)]) -> Response {
    post_form(env, "/oauth/token", auth, form)
}

/// Asserts 200 and returns headers and JSON body.
fn ok_json(r: Response, what: &str) -> (HeaderMap, Value) {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    assert_eq!(status, 200, "{what}: {status} {text}");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    (headers, v)
}

/// Asserts an RFC 6749 §5.2 error; returns the headers.
fn oauth_error(r: Response, status: u16, error: &str, what: &str) -> HeaderMap {
    let got = r.status();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    assert_eq!(got, status, "{what}: {got} {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(v["error"], error, "{what}: {text}");
    assert!(
        v["error_description"].is_string() || v.get("error_description").is_none(),
        "{what}: {text}"
    );
    headers
}

/// A token response: checks the RFC 6749 §5.1 shape.
fn token_ok(r: Response, what: &str) -> Value {
    let (h, v) = ok_json(r, what);
    let cc = h
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(cc.contains("no-store"), "{what}: Cache-Control {cc:?}");
    assert!(
        v["access_token"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: {v}"
    );
    assert_eq!(v["token_type"], "bearer", "{what}: {v}");
    assert!(
        v["expires_in"].as_u64().is_some_and(|n| n > 0),
        "{what}: {v}"
    );
    assert!(v["scope"].is_string(), "{what}: {v}");
    v
}

fn cc_token(s: &Setup, scope: Option<&str>) -> Value {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    token_ok(
        token_req(&s.env, Auth::Basic(&s.id, &s.secret), &form),
        "client_credentials",
    )
}

/// Exactly what FastAPI's `OAuth2PasswordRequestForm` clients send.
fn fastapi_password(env: &Env, user: &str, pw: &str, scope: &str) -> Response {
    token_req(
        env,
        Auth::None,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", pw),
            ("scope", scope),
        ],
    )
}

fn password_token(env: &Env, scope: &str) -> Value {
    let v = token_ok(
        fastapi_password(env, "alice", PASSWORD, scope),
        "password grant",
    );
    assert!(v["refresh_token"].is_string(), "no refresh_token: {v}");
    v
}

fn refresh(env: &Env, auth: Auth<'_>, rt: &str, scope: Option<&str>) -> Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    token_req(env, auth, &form)
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

fn bearer(env: &Env, path: &str, token: &str) -> Response {
    client()
        .get(env.url(path))
        .bearer_auth(token)
        .send()
        .unwrap()
}

pub fn status_of(env: &Env, path: &str, token: &str) -> u16 {
    bearer(env, path, token).status().as_u16()
}

pub fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("no kid in the access token header")
}

fn scope_set(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v["scope"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    s.sort();
    s
}

/// Polls until `path` answers `want` for `token`; `limit` is a generous
/// deadline (a hang detector), not the speed being tested.
fn wait_status(env: &Env, path: &str, token: &str, want: u16, limit: Duration) {
    let mut last = 0;
    let took = within(limit, || {
        last = status_of(env, path, token);
        last == want
    });
    assert!(
        took.is_some(),
        "{path} still answers {last} after {limit:?}, want {want}"
    );
}

#[test]
fn client_credentials_grant_rules() {
    let s = setup(false, "client_credentials");
    let env = &s.env;
    let basic = Auth::Basic(&s.id, &s.secret);

    // Form-encoded only.
    let r = client()
        .post(env.url("/oauth/token"))
        .basic_auth(&s.id, Some(&s.secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .unwrap();
    oauth_error(r, 400, "invalid_request", "JSON body");

    // Granted = requested ∩ allowed; no-store.
    let v = cc_token(&s, Some("data:read data:write"));
    assert_eq!(v["scope"], "data:read", "{v}");
    let at = field(&v, "access_token");
    let h = jsonwebtoken::decode_header(&at).unwrap();
    assert_eq!(h.typ.as_deref(), Some("at+jwt"));
    assert!(h.kid.is_some());

    // No scope asked: everything allowed; client_secret_post works too.
    let v = token_ok(
        token_req(
            env,
            Auth::Post(&s.id, &s.secret),
            &[("grant_type", "client_credentials")],
        ),
        "client_secret_post",
    );
    assert_eq!(scope_set(&v), ["data:read", "other"], "{v}");

    // Wrong secret: 401 invalid_client with a challenge.
    let wrong = format!("pcs_{}", "x".repeat(43));
    let h = oauth_error(
        token_req(
            env,
            Auth::Basic(&s.id, &wrong),
            &[("grant_type", "client_credentials")],
        ),
        401,
        "invalid_client",
        "wrong secret (Basic)",
    );
    let ch = h
        .get("www-authenticate")
        .expect("401 invalid_client without WWW-Authenticate")
        .to_str()
        .unwrap();
    assert!(ch.starts_with("Basic"), "{ch}");
    oauth_error(
        token_req(
            env,
            Auth::Post(&s.id, &wrong),
            &[("grant_type", "client_credentials")],
        ),
        401,
        "invalid_client",
        "wrong secret (post)",
    );

    // Both authentication methods at once.
    oauth_error(
        token_req(
            env,
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &s.id),
                ("client_secret", &s.secret),
            ],
        ),
        400,
        "invalid_request",
        "Basic and client_secret",
    );

    // A parameter twice.
    oauth_error(
        token_req(
            env,
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
        ),
        400,
        "invalid_request",
        "grant_type twice",
    );
    oauth_error(
        token_req(
            env,
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "data:read"),
                ("scope", "other"),
            ],
        ),
        400,
        "invalid_request",
        "scope twice",
    );

    // Unknown grant; password grant is off by default.
    oauth_error(
        token_req(
            env,
            basic,
            &[("grant_type", "urn:ietf:params:oauth:grant-type:device_code")],
        ),
        400,
        "unsupported_grant_type",
        "unknown grant",
    );
    oauth_error(
        token_req(
            env,
            basic,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        ),
        400,
        "unsupported_grant_type",
        "password grant off (with client)",
    );
    oauth_error(
        fastapi_password(env, "alice", PASSWORD, ""),
        400,
        "unsupported_grant_type",
        "password grant off (FastAPI form)",
    );

    // The token on bearer routes.
    let r = bearer(env, "/data", &at);
    let (_, b) = ok_json(r, "GET /data with the client token");
    assert_eq!(b["identity"]["principal"], s.id.as_str(), "{b}");
    let r = bearer(env, "/write", &at);
    assert_eq!(r.status(), 403);
    let ch = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(ch.contains("insufficient_scope"), "{ch}");
    let b: Value = r.json().unwrap();
    assert_eq!(b["code"], "insufficient_scope", "{b}");
    assert_eq!(client().get(env.url("/data")).send().unwrap().status(), 401);
    drop(s.srv);
}

#[test]
fn password_grant_fastapi_form_and_bearer_or_api_key() {
    let s = setup(true, ALL_GRANTS);
    let env = &s.env;

    let v = password_token(env, "");
    for k in [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "refresh_token",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    let rt = field(&v, "refresh_token");
    assert!(
        rt.starts_with("pcr_") && rt.len() == 47,
        "refresh token shape"
    );
    assert_eq!(scope_set(&v), ["data:read", "data:write"], "{v}");
    let at = field(&v, "access_token");
    let h = jsonwebtoken::decode_header(&at).unwrap();
    assert_eq!(h.typ.as_deref(), Some("at+jwt"));

    // Bearer routes with scopes.
    let (_, b) = ok_json(bearer(env, "/data", &at), "GET /data");
    assert_eq!(b["identity"]["principal"], "alice", "{b}");
    assert_eq!(status_of(env, "/write", &at), 200);
    let narrow = field(&password_token(env, "data:read"), "access_token");
    assert_eq!(status_of(env, "/data", &narrow), 200);
    let r = bearer(env, "/write", &narrow);
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().unwrap()["code"], "insufficient_scope");

    // "Bearer or API key": either works, both at once is ambiguous.
    let (_, b) = ok_json(bearer(env, "/either", &at), "/either with a JWT");
    assert_eq!(b["identity"]["principal"], "alice", "{b}");
    let r = client()
        .get(env.url("/either"))
        .header("X-API-Key", &s.key)
        .send()
        .unwrap();
    ok_json(r, "/either with an API key");
    let r = client()
        .get(env.url("/either"))
        .header("X-API-Key", &s.key)
        .bearer_auth(&at)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["code"], "ambiguous_credentials");

    // Wrong password, unknown user: the same invalid_grant.
    oauth_error(
        fastapi_password(env, "alice", "wrong horse battery staple", ""),
        400,
        "invalid_grant",
        "wrong password",
    );
    oauth_error(
        fastapi_password(env, "nobody", PASSWORD, ""),
        400,
        "invalid_grant",
        "unknown user",
    );

    // With client authentication: scope = user ∩ client.
    let v = token_ok(
        token_req(
            env,
            Auth::Basic(&s.id, &s.secret),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        ),
        "password grant with client auth",
    );
    assert_eq!(v["scope"], "data:read", "{v}");
    assert!(v["refresh_token"].is_string(), "{v}");
    drop(s.srv);
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = setup(true, ALL_GRANTS);
    let env = &s.env;
    let v = password_token(env, "");
    let rt1 = field(&v, "refresh_token");
    let at1 = field(&v, "access_token");

    let v2 = token_ok(refresh(env, Auth::None, &rt1, None), "first refresh");
    let rt2 = field(&v2, "refresh_token");
    let at2 = field(&v2, "access_token");
    assert_ne!(rt1, rt2, "the refresh token was not rotated");
    assert_ne!(at1, at2);
    assert_eq!(status_of(env, "/data", &at2), 200);

    // The old one again: refused, and the family with it.
    oauth_error(
        refresh(env, Auth::None, &rt1, None),
        400,
        "invalid_grant",
        "reused refresh token",
    );
    oauth_error(
        refresh(env, Auth::None, &rt2, None),
        400,
        "invalid_grant",
        "the replacement after a reuse",
    );
    drop(s.srv);
}

#[test]
fn refresh_race_has_exactly_one_winner() {
    let s = setup(true, ALL_GRANTS);
    let rt = field(&password_token(&s.env, ""), "refresh_token");
    let url = s.env.url("/oauth/token");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (url, rt, barrier) = (url.clone(), rt.clone(), barrier.clone());
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                let r = c
                    .post(&url)
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
                    .send()
                    .unwrap();
                let st = r.status().as_u16();
                (st, r.text().unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|(st, _)| *st == 200).count();
    assert_eq!(wins, 1, "{results:#?}");
    for (st, body) in results.iter().filter(|(st, _)| *st != 200) {
        assert_eq!(*st, 400, "{body}");
        assert!(body.contains("invalid_grant"), "{body}");
    }
    drop(s.srv);
}

#[test]
fn refresh_cannot_widen_scope() {
    let s = setup(true, ALL_GRANTS);
    let env = &s.env;
    let v = password_token(env, "data:read");
    assert_eq!(v["scope"], "data:read");
    let rt = field(&v, "refresh_token");
    oauth_error(
        refresh(env, Auth::None, &rt, Some("data:read data:write")),
        400,
        "invalid_scope",
        "wider scope on refresh",
    );
    drop(s.srv);
}

#[test]
fn disabling_a_user_ends_their_tokens() {
    let s = setup(true, ALL_GRANTS);
    let env = &s.env;
    let v = password_token(env, "");
    let (at, rt) = (field(&v, "access_token"), field(&v, "refresh_token"));
    assert_eq!(status_of(env, "/data", &at), 200);

    let o = env.cli(&["users", "disable", "alice"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_status(env, "/data", &at, 401, Duration::from_secs(30));
    oauth_error(
        refresh(env, Auth::None, &rt, None),
        400,
        "invalid_grant",
        "refresh for a disabled user",
    );
    oauth_error(
        fastapi_password(env, "alice", PASSWORD, ""),
        400,
        "invalid_grant",
        "password grant for a disabled user",
    );
    drop(s.srv);
}

#[test]
fn revoking_a_client_ends_its_tokens() {
    let s = setup(false, "client_credentials");
    let env = &s.env;
    let at = field(&cc_token(&s, None), "access_token");
    assert_eq!(status_of(env, "/data", &at), 200);

    let o = env.cli(&["clients", "revoke", &s.id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_status(env, "/data", &at, 401, Duration::from_secs(30));
    oauth_error(
        token_req(
            env,
            Auth::Basic(&s.id, &s.secret),
            &[("grant_type", "client_credentials")],
        ),
        401,
        "invalid_client",
        "a revoked client",
    );
    drop(s.srv);
}

#[test]
fn rotated_signing_key_keeps_old_tokens_valid() {
    let s = setup(false, "client_credentials");
    let env = &s.env;
    let t1 = field(&cc_token(&s, None), "access_token");
    let kid1 = kid(&t1);

    let o = env.cli(&["tokens", "rotate-key"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The server picks the new key up; new tokens carry its kid.
    let mut t2 = String::new();
    let took = within(Duration::from_secs(30), || {
        t2 = field(&cc_token(&s, None), "access_token");
        kid(&t2) != kid1
    });
    assert!(took.is_some(), "tokens are still signed with kid {kid1}");
    let kid2 = kid(&t2);

    assert_eq!(status_of(env, "/data", &t1), 200, "the pre-rotation token");
    assert_eq!(status_of(env, "/data", &t2), 200, "the post-rotation token");

    let (_, jwks) = ok_json(
        client()
            .get(env.url("/.well-known/jwks.json"))
            .send()
            .unwrap(),
        "JWKS",
    );
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(&kid1.as_str()), "{jwks}");
    assert!(kids.contains(&kid2.as_str()), "{jwks}");
    drop(s.srv);
}

#[test]
fn introspect_and_revoke() {
    let s = setup(true, ALL_GRANTS);
    let env = &s.env;
    let basic = Auth::Basic(&s.id, &s.secret);
    let v = token_ok(
        token_req(
            env,
            basic,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        ),
        "password grant with client auth",
    );
    let (at, rt) = (field(&v, "access_token"), field(&v, "refresh_token"));

    // Client authentication is required.
    let r = post_form(env, "/oauth/introspect", Auth::None, &[("token", &at)]);
    oauth_error(r, 401, "invalid_client", "introspect without auth");
    let wrong = format!("pcs_{}", "y".repeat(43));
    let r = post_form(
        env,
        "/oauth/introspect",
        Auth::Basic(&s.id, &wrong),
        &[("token", &at)],
    );
    oauth_error(r, 401, "invalid_client", "introspect with a wrong secret");

    let (_, b) = ok_json(
        post_form(env, "/oauth/introspect", basic, &[("token", &at)]),
        "introspect access token",
    );
    assert_eq!(b["active"], true, "{b}");
    for f in [
        "scope",
        "client_id",
        "sub",
        "exp",
        "iat",
        "iss",
        "aud",
        "token_type",
        "jti",
    ] {
        assert!(b.get(f).is_some(), "introspect lacks {f}: {b}");
    }
    assert_eq!(b["sub"], "alice");
    assert_eq!(b["client_id"], s.id.as_str());
    assert_eq!(b["aud"], "portcullis");
    assert_eq!(b["iss"], format!("http://127.0.0.1:{}", env.port));
    assert_eq!(
        b["jti"],
        jsonwebtoken::dangerous::insecure_decode::<Value>(&at)
            .unwrap()
            .claims["jti"]
    );

    let (_, b) = ok_json(
        post_form(
            env,
            "/oauth/introspect",
            Auth::Post(&s.id, &s.secret),
            &[("token", &rt), ("token_type_hint", "refresh_token")],
        ),
        "introspect refresh token",
    );
    assert_eq!(b["active"], true, "{b}");

    let (_, b) = ok_json(
        post_form(env, "/oauth/introspect", basic, &[("token", "not.a.token")]),
        "introspect garbage",
    );
    assert_eq!(b, json!({"active": false}));

    // Revoke the refresh token: 200, then it is dead.
    let r = post_form(
        env,
        "/oauth/revoke",
        basic,
        &[("token", &rt), ("token_type_hint", "refresh_token")],
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let (_, b) = ok_json(
        post_form(env, "/oauth/introspect", basic, &[("token", &rt)]),
        "introspect revoked refresh token",
    );
    assert_eq!(b, json!({"active": false}));
    oauth_error(
        refresh(env, basic, &rt, None),
        400,
        "invalid_grant",
        "refresh after revoke",
    );
    // An unknown token is not an error (RFC 7009 §2.2).
    let fake = format!("pcr_{}", "A".repeat(43));
    let r = post_form(env, "/oauth/revoke", basic, &[("token", &fake)]);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    drop(s.srv);
}

fn python_cmd(script: &str) -> Command {
    let py = venv_python();
    let mut c = Command::new(py);
    c.arg(repo_root().join("tests/python").join(script));
    for k in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        c.env_remove(k);
    }
    c
}

#[test]
fn python_oauth_flows_with_real_clients() {
    let s = setup(true, ALL_GRANTS);
    let base = format!("http://127.0.0.1:{}", s.env.port);
    let o = python_cmd("oauth_flows.py")
        .args([
            "--base",
            &base,
            "--client-id",
            &s.id,
            "--client-secret",
            &s.secret,
            "--username",
            "alice",
            "--password",
            PASSWORD,
            "--protected",
            "/data",
            "-v",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "oauth_flows.py exited {:?}\nstdout:\n{}\nstderr:\n{}\nserver log (tail):\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        tail(&s.srv.log(), 40)
    );
    drop(s.srv);
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn python_jwt_attacks_are_all_rejected() {
    let s = setup(false, "client_credentials");
    let env = &s.env;
    let valid = field(&cc_token(&s, None), "access_token");
    assert_eq!(status_of(env, "/data", &valid), 200);

    // The jku / x5u target: the gateway must never connect to it.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_url = format!("http://127.0.0.1:{}/", trap.local_addr().unwrap().port());

    let o = python_cmd("jwt_attacks.py")
        .args([
            "--jwks-url",
            &env.url("/.well-known/jwks.json"),
            "--token",
            &valid,
            "--jku-url",
            &trap_url,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "jwt_attacks.py exited {:?}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let attacks: Vec<(String, String)> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (field(&v, "name"), field(&v, "token"))
        })
        .collect();
    assert!(attacks.len() > 50, "only {} attack tokens", attacks.len());

    let c = client();
    let mut failures = Vec::new();
    let mut unsendable = Vec::new();
    for (name, token) in &attacks {
        let Ok(h) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) else {
            unsendable.push(name.clone());
            continue;
        };
        match c.get(env.url("/data")).header("authorization", h).send() {
            Ok(r) => {
                let st = r.status().as_u16();
                let ok = st == 401 || (st == 431 && token.len() > 8 * 1024);
                if !ok {
                    let body = r.text().unwrap_or_default();
                    failures.push(format!("{name}: GET /data answered {st} {body}"));
                }
            }
            Err(e) => failures.push(format!(
                "{name} ({} bytes): GET /data failed: {e}",
                token.len()
            )),
        }
        // Introspection must call it inactive too (the huge ones may be
        // refused outright as a body too large).
        if token.len() <= 8 * 1024 {
            let r = post_form(
                env,
                "/oauth/introspect",
                Auth::Basic(&s.id, &s.secret),
                &[("token", token)],
            );
            let st = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            if st != 200 || body.trim() != r#"{"active":false}"# {
                failures.push(format!("{name}: introspect answered {st} {body}"));
            }
        }
    }

    eprintln!(
        "jwt_attacks: {} tokens sent, {} not sendable as a header value: {unsendable:?}",
        attacks.len() - unsendable.len(),
        unsendable.len()
    );
    trap.set_nonblocking(true).unwrap();
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => failures.push(format!(
            "the gateway connected to the jku/x5u URL {trap_url} (from {peer})"
        )),
        Err(e) => panic!("accept: {e}"),
    }
    assert_eq!(
        status_of(env, "/data", &valid),
        200,
        "the valid token stopped working after the attacks"
    );
    assert!(
        failures.is_empty(),
        "{} of {} attack tokens were not rejected (unsendable as a header: {unsendable:?}):\n{}",
        failures.len(),
        attacks.len(),
        failures.join("\n")
    );
    drop(s.srv);
}

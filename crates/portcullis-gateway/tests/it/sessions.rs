//! HTTP Basic, browser sessions with CSRF protection, brute-force lockout,
//! and the identity canary: no password, secret, token or cookie in any
//! log line.

use crate::harness::*;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const SESSION: &str = "__Host-portcullis_session";
const CSRF: &str = "__Host-portcullis_csrf";
const CHALLENGE: &str = "Basic realm=\"portcullis\"";

fn config() -> &'static str {
    r#"
[[routes]]
path = "/basic"
upstream = "demo"
auth = ["basic"]

[[routes]]
path = "/s"
upstream = "demo"
auth = ["session"]
"#
}

struct Setup {
    srv: Server,
    env: Env,
}

/// A gateway with users `alice` and `bob`.
fn setup() -> Setup {
    let env = Env::new(config());
    env.init();
    env.add_user("alice", PASSWORD, "data:read");
    env.add_user("bob", "bob's own password", "data:read");
    let srv = env.serve();
    Setup { srv, env }
}

fn basic_header(user: &str, pw: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{pw}").as_bytes()))
}

fn get_basic(env: &Env, authorization: &str) -> Response {
    client()
        .get(env.url("/basic"))
        .header("authorization", authorization)
        .send()
        .unwrap()
}

/// Status, headers and body text.
fn parts(r: Response) -> (u16, HeaderMap, String) {
    let st = r.status().as_u16();
    let h = r.headers().clone();
    (st, h, r.text().unwrap())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

/// A problem body without its per-request fields, for comparing two
/// refusals.
fn comparable(body: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
        o.remove("instance");
    }
    v
}

fn assert_basic_refused(r: Response, what: &str) -> String {
    let (st, h, body) = parts(r);
    assert_eq!(st, 401, "{what}: {body}");
    let ch = header(&h, "www-authenticate");
    assert!(ch.starts_with(CHALLENGE), "{what}: challenge {ch:?}");
    body
}

#[test]
fn basic_auth_right_wrong_and_malformed() {
    let s = setup();
    let env = &s.env;

    // Right password, twice (the second from the cache).
    for i in 0..2 {
        let (st, _, body) = parts(get_basic(env, &basic_header("alice", PASSWORD)));
        assert_eq!(st, 200, "request {i}: {body}");
        let b: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(b["identity"]["principal"], "alice", "{b}");
    }

    // Wrong password and unknown user: one answer.
    let wrong = assert_basic_refused(
        get_basic(env, &basic_header("alice", "not the password")),
        "wrong password",
    );
    let unknown = assert_basic_refused(
        get_basic(env, &basic_header("mallory", PASSWORD)),
        "unknown user",
    );
    assert_eq!(comparable(&wrong), comparable(&unknown));

    // No credential at all: challenged too.
    let r = client().get(env.url("/basic")).send().unwrap();
    assert_basic_refused(r, "no Authorization");

    // Malformed headers.
    for bad in [
        "Basic !!!not-base64!!!".to_owned(),
        format!("Basic {}", b64(b"alice-without-colon")),
        "Basic".to_owned(),
        "Basic ".to_owned(),
        format!("Basic {}=", b64(format!("alice:{PASSWORD}").as_bytes())),
        format!("Basic {}", b64(&[0xff, 0xfe, b':', 0xfd])),
    ] {
        assert_basic_refused(get_basic(env, &bad), &format!("{bad:?}"));
    }
    // The right password still works afterwards.
    let (st, _, body) = parts(get_basic(env, &basic_header("alice", PASSWORD)));
    assert_eq!(st, 200, "{body}");
    drop(s.srv);
}

#[test]
fn basic_brute_force_locks_out_the_pair() {
    let s = setup();
    let env = &s.env;
    for i in 1..=5 {
        assert_basic_refused(
            get_basic(env, &basic_header("alice", &format!("guess number {i}"))),
            &format!("failure {i}"),
        );
    }
    // The sixth attempt, even with the right password.
    let (st, h, body) = parts(get_basic(env, &basic_header("alice", PASSWORD)));
    assert_eq!(st, 429, "sixth attempt: {body}");
    let ra: u64 = header(&h, "retry-after")
        .parse()
        .expect("Retry-After is not a number of seconds");
    assert!(ra >= 1, "Retry-After {ra}");
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b["code"], "too_many_attempts", "{b}");
    drop(s.srv);
}

/// One parsed `Set-Cookie`.
#[derive(Debug)]
struct SetCookie {
    name: String,
    value: String,
    /// Lower-cased attribute names, with values.
    attrs: Vec<(String, Option<String>)>,
}

impl SetCookie {
    fn parse(s: &str) -> SetCookie {
        let mut it = s.split(';');
        let (name, value) = it.next().unwrap().trim().split_once('=').unwrap();
        let attrs = it
            .map(|a| {
                let a = a.trim();
                match a.split_once('=') {
                    Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
                    None => (a.to_ascii_lowercase(), None),
                }
            })
            .collect();
        SetCookie {
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            attrs,
        }
    }
    fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k == attr)
    }
    fn attr(&self, attr: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == attr)
            .and_then(|(_, v)| v.as_deref())
    }
}

fn set_cookies(h: &HeaderMap) -> Vec<SetCookie> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| SetCookie::parse(v.to_str().unwrap()))
        .collect()
}

/// A logged-in browser.
#[derive(Debug, Clone)]
struct Browser {
    session: String,
    csrf_cookie: String,
    csrf_token: String,
}

impl Browser {
    fn cookie_header(&self) -> String {
        format!("{SESSION}={}; {CSRF}={}", self.session, self.csrf_cookie)
    }
}

fn login_form(env: &Env, user: &str, pw: &str) -> Response {
    client()
        .post(env.url("/auth/login"))
        .form(&[("username", user), ("password", pw)])
        .send()
        .unwrap()
}

fn login_json(env: &Env, user: &str, pw: &str) -> Response {
    client()
        .post(env.url("/auth/login"))
        .json(&json!({"username": user, "password": pw}))
        .send()
        .unwrap()
}

/// Checks a successful login's cookies and body.
fn logged_in(r: Response, what: &str) -> Browser {
    let (st, h, body) = parts(r);
    assert_eq!(st, 200, "{what}: {body}");
    let b: Value = serde_json::from_str(&body).unwrap();
    let token = b["csrf_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no csrf_token: {b}"))
        .to_owned();
    assert!(
        b["expires_in"].as_i64().is_some_and(|n| n > 0),
        "{what}: {b}"
    );
    let cookies = set_cookies(&h);
    let find = |n: &str| {
        cookies
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{what}: no {n} cookie in {cookies:?}"))
    };
    let sc = find(SESSION);
    assert_eq!(sc.value.len(), 43, "{what}: session cookie shape");
    assert!(sc.has("secure"), "{what}: {sc:?}");
    assert!(sc.has("httponly"), "{what}: {sc:?}");
    assert_eq!(sc.attr("samesite"), Some("Lax"), "{what}: {sc:?}");
    assert_eq!(sc.attr("path"), Some("/"), "{what}: {sc:?}");
    assert!(!sc.has("domain"), "{what}: {sc:?}");

    let cc = find(CSRF);
    assert!(cc.has("secure"), "{what}: {cc:?}");
    assert!(!cc.has("httponly"), "{what}: scripts must read it: {cc:?}");
    assert_eq!(cc.attr("path"), Some("/"), "{what}: {cc:?}");
    assert!(!cc.has("domain"), "{what}: {cc:?}");
    assert_eq!(
        cc.value, token,
        "{what}: the CSRF cookie is not the body's token"
    );
    Browser {
        session: sc.value.clone(),
        csrf_cookie: cc.value.clone(),
        csrf_token: token,
    }
}

fn with_session(rb: RequestBuilder, b: &Browser) -> RequestBuilder {
    rb.header("cookie", b.cookie_header())
}

fn post_s(env: &Env, b: &Browser, token: Option<&str>, extra: &[(&str, &str)]) -> Response {
    let mut rb = with_session(client().post(env.url("/s")), b).body("{}");
    if let Some(t) = token {
        rb = rb.header("x-csrf-token", t);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.send().unwrap()
}

fn get_s(env: &Env, b: &Browser) -> Response {
    with_session(client().get(env.url("/s")), b).send().unwrap()
}

fn assert_csrf_refused(r: Response, what: &str) {
    let (st, _, body) = parts(r);
    assert_eq!(st, 403, "{what}: {body}");
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b["code"], "csrf_failed", "{what}: {b}");
}

fn alter(token: &str) -> String {
    let mut t = token.to_owned().into_bytes();
    let last = t.len() - 1;
    t[last] = if t[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(t).unwrap()
}

#[test]
fn login_sessions_and_csrf() {
    let s = setup();
    let env = &s.env;
    let a = logged_in(login_form(env, "alice", PASSWORD), "form login");
    let b = logged_in(login_json(env, "alice", PASSWORD), "JSON login");
    assert_ne!(a.session, b.session);
    assert_ne!(a.csrf_token, b.csrf_token);

    // Safe methods need no token.
    let (st, _, body) = parts(get_s(env, &a));
    assert_eq!(st, 200, "GET with the session: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["identity"]["principal"], "alice", "{v}");

    // Unsafe ones do.
    assert_csrf_refused(post_s(env, &a, None, &[]), "POST without X-CSRF-Token");
    let (st, _, body) = parts(post_s(env, &a, Some(&a.csrf_token), &[]));
    assert_eq!(st, 200, "POST with the token: {body}");
    assert_csrf_refused(
        post_s(env, &a, Some(&b.csrf_token), &[]),
        "a token from another session",
    );
    assert_csrf_refused(
        post_s(env, &a, Some(&alter(&a.csrf_token)), &[]),
        "an altered token",
    );
    assert_csrf_refused(post_s(env, &a, Some(""), &[]), "an empty token");
    assert_csrf_refused(
        post_s(
            env,
            &a,
            Some(&a.csrf_token),
            &[("sec-fetch-site", "cross-site")],
        ),
        "Sec-Fetch-Site: cross-site",
    );
    assert_csrf_refused(
        post_s(
            env,
            &a,
            Some(&a.csrf_token),
            &[("sec-fetch-site", "same-site")],
        ),
        "Sec-Fetch-Site: same-site",
    );
    assert_csrf_refused(
        post_s(
            env,
            &a,
            Some(&a.csrf_token),
            &[("origin", "http://evil.example")],
        ),
        "Origin: http://evil.example",
    );
    // Our own origin, as a browser would send it, is fine.
    let own = format!("http://127.0.0.1:{}", env.port);
    let (st, _, body) = parts(post_s(
        env,
        &a,
        Some(&a.csrf_token),
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    ));
    assert_eq!(st, 200, "same-origin POST: {body}");

    // Login CSRF: another site cannot sign the browser in.
    let r = client()
        .post(env.url("/auth/login"))
        .header("origin", "http://evil.example")
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .unwrap();
    let (st, h, body) = parts(r);
    assert_eq!(st, 403, "cross-site login: {body}");
    assert!(set_cookies(&h).is_empty(), "cross-site login set cookies");

    // Logout needs the token, then ends the session.
    let r = with_session(client().post(env.url("/auth/logout")), &a)
        .send()
        .unwrap();
    assert_csrf_refused(r, "logout without a token");
    let r = with_session(client().post(env.url("/auth/logout")), &a)
        .header("x-csrf-token", &a.csrf_token)
        .send()
        .unwrap();
    let (st, h, body) = parts(r);
    assert_eq!(st, 204, "logout: {body}");
    let cleared = set_cookies(&h);
    for n in [SESSION, CSRF] {
        let c = cleared
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("logout did not clear {n}: {cleared:?}"));
        assert!(
            c.value.is_empty() && c.attr("max-age") == Some("0"),
            "{c:?}"
        );
    }
    let (st, _, body) = parts(get_s(env, &a));
    assert_eq!(st, 401, "the logged-out cookie: {body}");
    let (st, _, body) = parts(post_s(env, &a, Some(&a.csrf_token), &[]));
    assert_eq!(st, 401, "the logged-out cookie with its token: {body}");
    let r = with_session(client().get(env.url("/auth/csrf")), &a)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a CSRF token for a dead session");
    // The other session is untouched, and the dead one's token is no use
    // to it.
    let (st, _, body) = parts(get_s(env, &b));
    assert_eq!(st, 200, "{body}");
    assert_csrf_refused(
        post_s(env, &b, Some(&a.csrf_token), &[]),
        "the logged-out session's token on another session",
    );
    let (st, _, body) = parts(post_s(env, &b, Some(&b.csrf_token), &[]));
    assert_eq!(st, 200, "{body}");
    drop(s.srv);
}

#[test]
fn login_refusals_do_not_tell_users_apart() {
    let s = setup();
    let env = &s.env;
    let mut bodies = Vec::new();
    for (what, r) in [
        (
            "form, wrong password",
            login_form(env, "alice", "wrong password!"),
        ),
        (
            "form, unknown user",
            login_form(env, "nobody", "wrong password!"),
        ),
        (
            "JSON, wrong password",
            login_json(env, "alice", "wrong password!"),
        ),
        (
            "JSON, unknown user",
            login_json(env, "nobody", "wrong password!"),
        ),
    ] {
        let (st, h, body) = parts(r);
        assert_eq!(st, 401, "{what}: {body}");
        assert!(set_cookies(&h).is_empty(), "{what}: cookies set");
        bodies.push((what, comparable(&body)));
    }
    for (what, b) in &bodies[1..] {
        assert_eq!(b, &bodies[0].1, "{what} differs from {}", bodies[0].0);
    }
    // The right password still works.
    logged_in(login_form(env, "alice", PASSWORD), "login");
    drop(s.srv);
}

/// Every plaintext token or secret in an OAuth2 or admin API answer.
fn tokens_in(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s)
                        if [
                            "access_token",
                            "refresh_token",
                            "id_token",
                            "client_secret",
                            "secret",
                            "csrf_token",
                            "key",
                        ]
                        .contains(&k.as_str()) =>
                    {
                        out.push(s.clone());
                    }
                    _ => out.extend(tokens_in(x)),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(tokens_in(x))),
        _ => {}
    }
    out
}

/// Every identity secret, good and bad, through every endpoint, each
/// request's answer checked (so nothing passes because nothing was
/// served); then none of them, in any encoding, in any log line of the
/// whole log (the server stopped with SIGTERM, its log flushed and read
/// to the end).
#[test]
fn no_identity_secret_reaches_any_log_line() {
    use std::cell::RefCell;
    const PW: &str = "Canary-Password-q7W9e2R4t6Y8";
    const WRONG_PW: &str = "Canary-WrongPw-z1X3c5V7b9N0";
    const NEW_PW: &str = "Canary-NewPassword-m4K8s2D6";
    // Every kind of bad credential, many times, from one address: address
    // blocking, which would answer the later ones 429, is abuse.rs's.
    let env = Env::new(
        r#"
[tokens]
grants = ["client_credentials", "refresh_token", "password"]

[abuse]
enabled = false

[[routes]]
path = "/data"
upstream = "demo"
auth = ["api_key_header", "bearer"]
scopes = ["data:read"]

[[routes]]
path = "/basic"
upstream = "demo"
auth = ["basic"]

[[routes]]
path = "/s"
upstream = "demo"
auth = ["session"]
"#,
    );
    let admin = env.init();
    env.add_user("alice", PW, "data:read");
    let (id, secret) = env.add_client(
        "svc",
        "data:read",
        "client_credentials,refresh_token,password",
    );
    // Every crate at trace, the libraries underneath included.
    let srv = env.serve_env(&[("PORTCULLIS_LOG__DEPENDENCY_LEVEL", "trace")]);
    let c = client();
    let wrong_secret = "pcs_CanaryWrongSecret0123456789abcdefghijklmnopq".to_owned();
    let secrets: RefCell<Vec<String>> = RefCell::new(vec![
        PW.into(),
        WRONG_PW.into(),
        NEW_PW.into(),
        secret.clone(),
        wrong_secret.clone(),
        admin.clone(),
    ]);
    // Every mismatch, reported together at the end of the requests.
    let wrong: RefCell<Vec<String>> = RefCell::new(Vec::new());
    let served = RefCell::new(0usize);
    let check = |what: &str, got: u16, want: &[u16]| {
        *served.borrow_mut() += 1;
        if !want.contains(&got) {
            wrong
                .borrow_mut()
                .push(format!("{what}: {got}, expected {want:?}"));
        }
    };
    // Sends, checks the status, keeps every token in the answer as a
    // secret, returns the answer's JSON.
    let send = |what: &str, rb: RequestBuilder, want: &[u16]| -> Value {
        let r = rb
            .send()
            .unwrap_or_else(|e| panic!("{what}: not answered: {e}"));
        check(what, r.status().as_u16(), want);
        let v: Value = r.json().unwrap_or(Value::Null);
        secrets.borrow_mut().extend(tokens_in(&v));
        v
    };
    let tok = |what: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>, want: &[u16]| {
        let mut rb = c.post(env.url("/oauth/token")).form(form);
        if let Some((u, p)) = basic {
            rb = rb.basic_auth(u, Some(p));
        }
        send(what, rb, want)
    };

    // Token endpoint, good and bad.
    let cc = tok(
        "client_credentials, Basic",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
        &[200],
    );
    let cc_at = cc["access_token"].as_str().unwrap().to_owned();
    tok(
        "client_credentials, form",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
        &[200],
    );
    tok(
        "client_credentials, Basic, wrong secret",
        &[("grant_type", "client_credentials")],
        Some((&id, &wrong_secret)),
        &[401],
    );
    tok(
        "client_credentials, form, wrong secret",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &wrong_secret),
        ],
        None,
        &[400, 401],
    );
    tok(
        "client_credentials, secret twice",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
            ("client_secret", &secret),
        ],
        Some((&id, &secret)),
        &[400],
    );
    let pw = tok(
        "password grant",
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PW),
            ("scope", ""),
        ],
        None,
        &[200],
    );
    let at = pw["access_token"].as_str().unwrap().to_owned();
    let rt = pw["refresh_token"].as_str().unwrap().to_owned();
    let pw2 = tok(
        "password grant with a client",
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PW),
        ],
        Some((&id, &secret)),
        &[200],
    );
    let rt_client = pw2["refresh_token"].as_str().unwrap().to_owned();
    tok(
        "password grant, wrong password",
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", WRONG_PW),
        ],
        None,
        &[400],
    );
    tok(
        "password grant, password as user name",
        &[
            ("grant_type", "password"),
            ("username", WRONG_PW),
            ("password", PW),
        ],
        None,
        &[400],
    );
    let rotated = tok(
        "refresh",
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        None,
        &[200],
    );
    let rt2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let at2 = rotated["access_token"].as_str().unwrap().to_owned();
    // Reuse (bad, and it revokes the login), and the refresh token sent
    // where it does not belong.
    tok(
        "refresh token reused",
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        None,
        &[400],
    );
    tok(
        "refresh after the reuse",
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
        None,
        &[400],
    );
    tok(
        "refresh token as grant type",
        &[("grant_type", rt.as_str())],
        None,
        &[400],
    );
    send(
        "token endpoint, JSON body",
        c.post(env.url("/oauth/token"))
            .json(&json!({"grant_type": "password", "username": "alice", "password": PW, "client_secret": secret, "refresh_token": rt})),
        &[400, 415],
    );

    // A tampered access token.
    let tampered = {
        let (head, sig) = at.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(sig).unwrap())
    };
    secrets.borrow_mut().push(tampered.clone());
    for t in [&cc_at, &at, &at2, &rt, &rt2, &rt_client] {
        assert!(secrets.borrow().contains(t), "a token not searched for");
    }

    // Bearer routes, the decision endpoint, introspection, revocation.
    // (at and at2 belong to the login the reuse revoked, but access
    // tokens live until they expire: security.md, "Not yet".)
    for (name, t, live) in [
        ("cc_at", &cc_at, true),
        ("at", &at, true),
        ("at2", &at2, true),
        ("tampered", &tampered, false),
        ("rt", &rt, false),
        ("rt2", &rt2, false),
        ("secret", &secret, false),
        ("wrong_secret", &wrong_secret, false),
    ] {
        let want: &[u16] = if live { &[200] } else { &[401] };
        send(
            &format!("{name}: /data"),
            c.get(env.url("/data")).bearer_auth(t),
            want,
        );
        send(
            &format!("{name}: no route"),
            c.get(env.url("/nowhere")).bearer_auth(t),
            &[404],
        );
        send(
            &format!("{name}: decision"),
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", "/data")
                .bearer_auth(t),
            want,
        );
        send(
            &format!("{name}: decision, token in the original URI"),
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", format!("/data?access_token={t}")),
            &[401],
        );
        let v = send(
            &format!("{name}: introspect"),
            c.post(env.url("/oauth/introspect"))
                .basic_auth(&id, Some(&secret))
                .form(&[("token", t.as_str())]),
            &[200],
        );
        if v["active"] != json!(live) && name != "rt2" && name != "rt" {
            wrong
                .borrow_mut()
                .push(format!("{name}: introspection says {v}"));
        }
        send(
            &format!("{name}: introspect, wrong client secret"),
            c.post(env.url("/oauth/introspect"))
                .basic_auth(&id, Some(&wrong_secret))
                .form(&[("token", t.as_str())]),
            &[401],
        );
        send(
            &format!("{name}: introspect, no client"),
            c.post(env.url("/oauth/introspect"))
                .form(&[("token", t.as_str())]),
            &[401],
        );
        send(
            &format!("{name}: admin API"),
            c.get(env.admin_url("/admin/v1/keys")).bearer_auth(t),
            &[401],
        );
    }
    send(
        "revoke the client's refresh token",
        c.post(env.url("/oauth/revoke"))
            .basic_auth(&id, Some(&secret))
            .form(&[
                ("token", rt_client.as_str()),
                ("token_type_hint", "refresh_token"),
            ]),
        &[200],
    );
    // Declined, as RFC 7009 allows (security.md, "Not yet").
    let v = send(
        "revoke an access token",
        c.post(env.url("/oauth/revoke"))
            .basic_auth(&id, Some(&secret))
            .form(&[("token", at.as_str())]),
        &[400],
    );
    assert_eq!(v["error"], "unsupported_token_type", "{v}");
    send(
        "revoke without a client",
        c.post(env.url("/oauth/revoke"))
            .form(&[("token", rt2.as_str())]),
        &[200, 401],
    );
    tok(
        "refresh with the revoked token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt_client),
        ],
        Some((&id, &secret)),
        &[400],
    );

    // Basic, right and wrong, on the route and the decision endpoint.
    for (pw, ok) in [(PW, true), (WRONG_PW, false)] {
        let h = basic_header("alice", pw);
        secrets.borrow_mut().push(h["Basic ".len()..].to_owned());
        let want: &[u16] = if ok { &[200] } else { &[401] };
        send(
            &format!("Basic ok={ok}"),
            c.get(env.url("/basic")).header("authorization", &h),
            want,
        );
        send(
            &format!("Basic ok={ok}, decision"),
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", "/basic")
                .header("authorization", &h),
            want,
        );
        send(
            &format!("Basic ok={ok}, on a bearer route"),
            c.get(env.url("/data")).header("authorization", &h),
            &[401],
        );
    }

    // Sessions: login good and bad, the CSRF dance, logout.
    let a = logged_in(login_form(&env, "alice", PW), "form login");
    let b = logged_in(login_json(&env, "alice", PW), "JSON login");
    check(
        "login, wrong password, form",
        login_form(&env, "alice", WRONG_PW).status().as_u16(),
        &[401],
    );
    check(
        "login, wrong password, JSON",
        login_json(&env, "alice", WRONG_PW).status().as_u16(),
        &[401, 429],
    );
    check(
        "login, password as user name",
        login_json(&env, WRONG_PW, PW).status().as_u16(),
        &[401],
    );
    send(
        "login, cross-origin",
        c.post(env.url("/auth/login"))
            .header("origin", "http://evil.example")
            .form(&[("username", "alice"), ("password", PW)]),
        &[403],
    );
    send(
        "login, text/plain",
        c.post(env.url("/auth/login"))
            .header("content-type", "text/plain")
            .body(format!("username=alice&password={PW}")),
        &[415, 400],
    );
    send(
        "login, password twice",
        c.post(env.url("/auth/login")).form(&[
            ("username", "alice"),
            ("password", PW),
            ("password", PW),
        ]),
        &[400, 422],
    );
    for br in [&a, &b] {
        secrets
            .borrow_mut()
            .extend([br.session.clone(), br.csrf_token.clone()]);
    }
    let forged = Browser {
        session: "CanaryForgedSession0123456789abcdefghijklmn".into(),
        csrf_cookie: alter(&a.csrf_token),
        csrf_token: alter(&a.csrf_token),
    };
    secrets
        .borrow_mut()
        .extend([forged.session.clone(), forged.csrf_token.clone()]);
    for (name, br) in [("a", &a), ("b", &b), ("forged", &forged)] {
        let real = name != "forged";
        let (ok, csrf_bad, no_session): (&[u16], &[u16], &[u16]) = if real {
            (&[200], &[403], &[401])
        } else {
            (&[401], &[401], &[401])
        };
        let _ = no_session;
        check(
            &format!("{name}: GET /s"),
            get_s(&env, br).status().as_u16(),
            ok,
        );
        check(
            &format!("{name}: POST /s without a token"),
            post_s(&env, br, None, &[]).status().as_u16(),
            csrf_bad,
        );
        for (tname, t) in [
            ("a", &a.csrf_token),
            ("b", &b.csrf_token),
            ("forged", &forged.csrf_token),
        ] {
            let own = tname == name;
            let want = if real && own { ok } else { csrf_bad };
            check(
                &format!("{name}: POST /s with {tname}'s token"),
                post_s(&env, br, Some(t), &[]).status().as_u16(),
                want,
            );
            check(
                &format!("{name}: POST /s with {tname}'s token, cross-origin"),
                post_s(&env, br, Some(t), &[("origin", "http://evil.example")])
                    .status()
                    .as_u16(),
                csrf_bad,
            );
            check(
                &format!("{name}: POST /s with {tname}'s token, cross-site"),
                post_s(&env, br, Some(t), &[("sec-fetch-site", "cross-site")])
                    .status()
                    .as_u16(),
                csrf_bad,
            );
        }
        send(
            &format!("{name}: /auth/csrf"),
            with_session(c.get(env.url("/auth/csrf")), br),
            ok,
        );
        send(
            &format!("{name}: decision GET"),
            with_session(
                c.get(env.url("/auth/verify"))
                    .header("X-Original-URI", "/s"),
                br,
            ),
            ok,
        );
        send(
            &format!("{name}: decision POST with its token"),
            with_session(
                c.post(env.url("/auth/verify"))
                    .header("X-Original-URI", "/s")
                    .header("X-Original-Method", "POST")
                    .header("x-csrf-token", &br.csrf_token),
                br,
            ),
            ok,
        );
        send(
            &format!("{name}: session on a bearer route"),
            with_session(c.get(env.url("/data")), br),
            &[401],
        );
    }
    // A fresh CSRF token from /auth/csrf is a secret too.
    let v = send(
        "fresh CSRF token",
        with_session(c.get(env.url("/auth/csrf")), &b),
        &[200],
    );
    assert!(v["csrf_token"].is_string(), "{v}");
    send(
        "logout with another session's token",
        with_session(c.post(env.url("/auth/logout")), &a).header("x-csrf-token", &b.csrf_token),
        &[403],
    );
    send(
        "logout",
        with_session(c.post(env.url("/auth/logout")), &a).header("x-csrf-token", &a.csrf_token),
        &[200, 204],
    );
    send(
        "logout again",
        with_session(c.post(env.url("/auth/logout")), &a).header("x-csrf-token", &a.csrf_token),
        &[200, 204, 401],
    );
    check(
        "a's session after logout",
        get_s(&env, &a).status().as_u16(),
        &[401],
    );

    // The admin API, where it takes passwords and gives secrets.
    send(
        "admin: add a user",
        c.post(env.admin_url("/admin/v1/users"))
            .header("X-API-Key", &admin)
            .json(&json!({"username": "carol", "password": PW, "scopes": ["data:read"]})),
        &[200, 201],
    );
    send(
        "admin: set a password",
        c.post(env.admin_url("/admin/v1/users/carol/password"))
            .header("X-API-Key", &admin)
            .json(&json!({"password": NEW_PW})),
        &[200, 204],
    );
    send(
        "admin: a password for nobody",
        c.post(env.admin_url("/admin/v1/users/nobody/password"))
            .header("X-API-Key", &admin)
            .json(&json!({"password": PW})),
        &[404],
    );
    let v = send(
        "admin: add a client",
        c.post(env.admin_url("/admin/v1/clients"))
            .header("X-API-Key", &admin)
            .json(&json!({"name": "other", "scopes": ["data:read"], "grants": ["client_credentials"]})),
        &[200, 201],
    );
    let (other_id, other_secret) = (
        v["client_id"]
            .as_str()
            .or(v["id"].as_str())
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned(),
        v["client_secret"]
            .as_str()
            .or(v["secret"].as_str())
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned(),
    );
    assert!(secrets.borrow().contains(&other_secret));
    // The new client's secret and the new password work: those requests
    // carried them for real.
    tok(
        "client_credentials, the admin API's client",
        &[("grant_type", "client_credentials")],
        Some((&other_id, &other_secret)),
        &[200],
    );
    tok(
        "password grant, carol's new password",
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", NEW_PW),
        ],
        None,
        &[200],
    );
    send(
        "Basic, carol's new password",
        c.get(env.url("/basic"))
            .header("authorization", basic_header("carol", NEW_PW)),
        &[200],
    );
    secrets
        .borrow_mut()
        .push(basic_header("carol", NEW_PW)["Basic ".len()..].to_owned());

    let wrong = wrong.into_inner();
    assert!(
        wrong.is_empty(),
        "answers not as expected:\n{}",
        wrong.join("\n")
    );
    assert!(
        *served.borrow() > 150,
        "only {} requests served",
        served.borrow()
    );

    let log = srv.stop_drained();
    assert!(
        log.contains("portcullis::access"),
        "no access log at all?\n{log}"
    );
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "the canary must run with trace logging on:\n{log}"
    );
    for path in [
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/auth/login",
        "/auth/logout",
        "/auth/csrf",
        "/auth/verify",
        "/basic",
        "/s",
    ] {
        assert!(
            log.contains(&format!("\"path\":\"{path}\"")),
            "no access line for {path}: the canary did not exercise it?"
        );
    }
    let mut secrets = secrets.into_inner();
    // A JWT's signature alone is as identifying as the token; a CSRF
    // token's random part and MAC too.
    let mut parts = Vec::new();
    for sec in &secrets {
        let dots = sec.matches('.').count();
        if dots == 2 {
            parts.push(sec.rsplit('.').next().unwrap().to_owned());
        } else if dots == 1 {
            let (r, m) = sec.split_once('.').unwrap();
            parts.extend([r.to_owned(), m.to_owned()]);
        }
    }
    secrets.extend(parts.into_iter().filter(|p| p.len() >= 16));
    secrets.sort();
    secrets.dedup();
    assert_no_secrets(&log, &secrets);
}

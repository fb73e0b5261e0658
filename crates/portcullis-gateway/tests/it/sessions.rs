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

/// Every identity secret, good and bad, through every endpoint; then
/// none of them in any log line.
#[test]
fn no_identity_secret_reaches_any_log_line() {
    const PW: &str = "Canary-Password-q7W9e2R4t6Y8";
    const WRONG_PW: &str = "Canary-WrongPw-z1X3c5V7b9N0";
    let env = Env::new(
        r#"
[tokens]
grants = ["client_credentials", "refresh_token", "password"]

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
    let srv = env.serve();
    let c = client();
    let wrong_secret = "pcs_CanaryWrongSecret0123456789abcdefghijklmnopq".to_owned();
    let mut secrets: Vec<String> = vec![
        PW.into(),
        WRONG_PW.into(),
        secret.clone(),
        wrong_secret.clone(),
    ];

    let tok = |form: &[(&str, &str)], basic: Option<(&str, &str)>| {
        let mut rb = c.post(env.url("/oauth/token")).form(form);
        if let Some((u, p)) = basic {
            rb = rb.basic_auth(u, Some(p));
        }
        let r = rb.send().unwrap();
        let st = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        (st, v)
    };

    // Token endpoint, good and bad.
    let (st, cc) = tok(
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    );
    assert_eq!(st, 200, "{cc}");
    let cc_at = cc["access_token"].as_str().unwrap().to_owned();
    tok(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    );
    tok(
        &[("grant_type", "client_credentials")],
        Some((&id, &wrong_secret)),
    );
    tok(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &wrong_secret),
        ],
        None,
    );
    tok(
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
            ("client_secret", &secret),
        ],
        Some((&id, &secret)),
    );
    let (st, pw) = tok(
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PW),
            ("scope", ""),
        ],
        None,
    );
    assert_eq!(st, 200, "{pw}");
    let at = pw["access_token"].as_str().unwrap().to_owned();
    let rt = pw["refresh_token"].as_str().unwrap().to_owned();
    let (st, pw2) = tok(
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PW),
        ],
        Some((&id, &secret)),
    );
    assert_eq!(st, 200, "{pw2}");
    let rt_client = pw2["refresh_token"].as_str().unwrap().to_owned();
    tok(
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", WRONG_PW),
        ],
        None,
    );
    tok(
        &[
            ("grant_type", "password"),
            ("username", WRONG_PW),
            ("password", PW),
        ],
        None,
    );
    let (st, rotated) = tok(
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        None,
    );
    assert_eq!(st, 200, "{rotated}");
    let rt2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let at2 = rotated["access_token"].as_str().unwrap().to_owned();
    // Reuse (bad), and the refresh token sent where it does not belong.
    tok(
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        None,
    );
    tok(
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
        None,
    );
    tok(&[("grant_type", rt.as_str())], None);
    let _ = c
        .post(env.url("/oauth/token"))
        .json(&json!({"grant_type": "password", "username": "alice", "password": PW, "client_secret": secret, "refresh_token": rt}))
        .send();

    // A tampered access token.
    let tampered = {
        let (head, sig) = at.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(sig).unwrap())
    };
    secrets.extend([
        cc_at.clone(),
        at.clone(),
        at2.clone(),
        tampered.clone(),
        rt.clone(),
        rt2.clone(),
        rt_client.clone(),
    ]);

    // Bearer routes, the decision endpoint, introspection, revocation.
    for t in [
        &cc_at,
        &at,
        &at2,
        &tampered,
        &rt,
        &rt2,
        &secret,
        &wrong_secret,
    ] {
        let _ = c.get(env.url("/data")).bearer_auth(t).send();
        let _ = c.get(env.url("/nowhere")).bearer_auth(t).send();
        let _ = c
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", "/data")
            .bearer_auth(t)
            .send();
        let _ = c
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", format!("/data?access_token={t}"))
            .send();
        let _ = c
            .post(env.url("/oauth/introspect"))
            .basic_auth(&id, Some(&secret))
            .form(&[("token", t.as_str())])
            .send();
        let _ = c
            .post(env.url("/oauth/introspect"))
            .basic_auth(&id, Some(&wrong_secret))
            .form(&[("token", t.as_str())])
            .send();
        let _ = c
            .post(env.url("/oauth/introspect"))
            .form(&[("token", t.as_str())])
            .send();
        let _ = c.get(env.admin_url("/admin/v1/keys")).bearer_auth(t).send();
    }
    let _ = c
        .post(env.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("token", rt_client.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send();
    let _ = c
        .post(env.url("/oauth/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send();
    let _ = c
        .post(env.url("/oauth/revoke"))
        .form(&[("token", rt2.as_str())])
        .send();
    tok(
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt_client),
        ],
        Some((&id, &secret)),
    );

    // Basic, right and wrong, on the route and the decision endpoint.
    for pw in [PW, WRONG_PW] {
        let h = basic_header("alice", pw);
        secrets.push(h["Basic ".len()..].to_owned());
        let _ = c.get(env.url("/basic")).header("authorization", &h).send();
        let _ = c
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", "/basic")
            .header("authorization", &h)
            .send();
        let _ = c.get(env.url("/data")).header("authorization", &h).send();
    }

    // Sessions: login good and bad, the CSRF dance, logout.
    let a = logged_in(login_form(&env, "alice", PW), "form login");
    let b = logged_in(login_json(&env, "alice", PW), "JSON login");
    let _ = login_form(&env, "alice", WRONG_PW);
    let _ = login_json(&env, "alice", WRONG_PW);
    let _ = login_json(&env, WRONG_PW, PW);
    let _ = c
        .post(env.url("/auth/login"))
        .header("origin", "http://evil.example")
        .form(&[("username", "alice"), ("password", PW)])
        .send();
    let _ = c
        .post(env.url("/auth/login"))
        .header("content-type", "text/plain")
        .body(format!("username=alice&password={PW}"))
        .send();
    let _ = c
        .post(env.url("/auth/login"))
        .form(&[("username", "alice"), ("password", PW), ("password", PW)])
        .send();
    for br in [&a, &b] {
        secrets.extend([br.session.clone(), br.csrf_token.clone()]);
    }
    let forged = Browser {
        session: "CanaryForgedSession0123456789abcdefghijklmn".into(),
        csrf_cookie: alter(&a.csrf_token),
        csrf_token: alter(&a.csrf_token),
    };
    secrets.extend([forged.session.clone(), forged.csrf_token.clone()]);
    for br in [&a, &b, &forged] {
        let _ = get_s(&env, br);
        let _ = post_s(&env, br, None, &[]);
        for t in [&a.csrf_token, &b.csrf_token, &forged.csrf_token] {
            let _ = post_s(&env, br, Some(t), &[]);
            let _ = post_s(&env, br, Some(t), &[("origin", "http://evil.example")]);
            let _ = post_s(&env, br, Some(t), &[("sec-fetch-site", "cross-site")]);
        }
        let _ = with_session(c.get(env.url("/auth/csrf")), br).send();
        let _ = with_session(
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", "/s"),
            br,
        )
        .send();
        let _ = with_session(
            c.post(env.url("/auth/verify"))
                .header("X-Original-URI", "/s")
                .header("X-Original-Method", "POST")
                .header("x-csrf-token", &br.csrf_token),
            br,
        )
        .send();
        let _ = with_session(c.get(env.url("/data")), br).send();
    }
    // A fresh CSRF token from /auth/csrf is a secret too.
    let r = with_session(c.get(env.url("/auth/csrf")), &b)
        .send()
        .unwrap();
    if let Ok(v) = r.json::<Value>()
        && let Some(t) = v["csrf_token"].as_str()
    {
        secrets.push(t.to_owned());
    }
    let _ = with_session(c.post(env.url("/auth/logout")), &a)
        .header("x-csrf-token", &b.csrf_token)
        .send();
    let _ = with_session(c.post(env.url("/auth/logout")), &a)
        .header("x-csrf-token", &a.csrf_token)
        .send();
    let _ = with_session(c.post(env.url("/auth/logout")), &a)
        .header("x-csrf-token", &a.csrf_token)
        .send();

    // The admin API, where it takes passwords.
    for path in ["/admin/v1/users", "/admin/v1/users/alice/password"] {
        let _ = c
            .post(env.admin_url(path))
            .header("X-API-Key", &admin)
            .json(&json!({"username": "carol", "password": PW, "scopes": ["data:read"]}))
            .send();
    }
    let _ = c
        .post(env.admin_url("/admin/v1/clients"))
        .header("X-API-Key", &admin)
        .json(&json!({"name": "other", "scopes": ["data:read"]}))
        .send();

    let log = srv.stop();
    assert!(
        log.contains("portcullis::access"),
        "no access log at all?\n{log}"
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the canary must run with trace logging on:\n{log}"
    );
    for path in [
        "/oauth/token",
        "/oauth/introspect",
        "/auth/login",
        "/auth/logout",
        "/s",
    ] {
        assert!(
            log.contains(&format!("\"{path}")),
            "no log line mentions {path}: the canary did not exercise it?"
        );
    }
    for sec in &secrets {
        let mut needles = vec![sec.clone()];
        // A JWT's signature alone is as identifying as the token.
        if sec.matches('.').count() == 2 {
            needles.push(sec.rsplit('.').next().unwrap().to_owned());
        }
        // A CSRF token's random part and MAC.
        if let Some((r, m)) = sec.split_once('.')
            && sec.matches('.').count() == 1
        {
            needles.extend([r.to_owned(), m.to_owned()]);
        }
        for n in needles {
            assert!(
                !log.contains(&n),
                "a secret reached the log ({}…):\n{}",
                &n[..8.min(n.len())],
                log.lines().find(|l| l.contains(&n)).unwrap()
            );
        }
    }
}

//! The admin console (`/console/` on the admin listener), used as a person
//! uses it — headless Chromium over WebDriver signs in with the admin key,
//! creates a key and copies it, uses it through the gateway, watches its
//! chart, rotates and revokes it and sees the refusals — and as an
//! attacker would try it, over plain HTTP: changes without a CSRF token or
//! from another site, an expired, tampered or signed-out session, a
//! revoked admin key, a wrong key at sign-in. Every page is checked for
//! the CSP and for inline script or style.
//!
//! The browser test saves screenshots of the main pages in docs/console/
//! (docs/console.md shows them). It needs /usr/bin/chromium and
//! /usr/bin/chromedriver, as tests/it/browser.rs does, and is skipped the
//! same way without them.

use crate::harness::*;
use crate::webdriver::{Browser, browser_available};
use reqwest::blocking::{Client, Response};
use reqwest::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::time::Duration;

const COOKIE_NAME: &str = "__Host-portcullis_console";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// How long to wait for anything asynchronous; nothing asserts on time.
const WAIT: Duration = Duration::from_secs(30);

// --- HTTP helpers ---------------------------------------------------------------

/// A client that follows no redirect and keeps no cookie: each test says
/// which cookie it sends.
fn http() -> Client {
    crypto_provider();
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn location(r: &Response) -> String {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The console cookie a response sets: (value, the whole Set-Cookie).
fn set_cookie(h: &HeaderMap) -> Option<(String, String)> {
    h.get_all(SET_COOKIE).iter().find_map(|v| {
        let s = v.to_str().ok()?;
        let value = s
            .strip_prefix(&format!("{COOKIE_NAME}="))?
            .split(';')
            .next()?;
        Some((value.to_owned(), s.to_owned()))
    })
}

/// Signs in with `key`; the session cookie's value.
fn sign_in(env: &Env, key: &str) -> String {
    let r = http()
        .post(env.admin_url("/console/sign-in"))
        .form(&[("key", key)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "sign-in");
    assert_eq!(location(&r), "/console/");
    set_cookie(r.headers()).expect("no session cookie").0
}

fn get(env: &Env, path: &str, cookie: &str) -> Response {
    http()
        .get(env.admin_url(path))
        .header(COOKIE, format!("{COOKIE_NAME}={cookie}"))
        .send()
        .unwrap()
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in:\n{html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn post(
    env: &Env,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Response {
    let mut rb = http()
        .post(env.admin_url(path))
        .header(COOKIE, format!("{COOKIE_NAME}={cookie}"))
        .form(form);
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.send().unwrap()
}

/// Checks the headers every console page carries and that its HTML has
/// no inline script, no inline style and no event-handler attribute.
fn assert_strict(what: &str, r: Response) -> String {
    let h = r.headers().clone();
    let header = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {n} header: {h:?}"))
            .to_owned()
    };
    assert_eq!(header("content-security-policy"), CSP, "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
    let body = r.text().unwrap();
    assert_no_inline(what, &body);
    body
}

fn assert_no_inline(what: &str, body: &str) {
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = lower[at..].find("<script") {
        let tag_end = lower[at + i..].find('>').unwrap() + at + i;
        let tag = &lower[at + i..=tag_end];
        assert!(tag.contains(" src="), "{what}: inline script: {tag}");
        assert!(
            lower[tag_end + 1..].starts_with("</script>"),
            "{what}: a script with a src and a body"
        );
        at = tag_end;
    }
    assert!(!lower.contains(" style="), "{what}: a style attribute");
    assert!(!lower.contains("<style"), "{what}: a style element");
    assert!(!lower.contains("javascript:"), "{what}: a javascript: URL");
    for ev in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " onfocus=",
        " onchange=",
    ] {
        assert!(
            !lower.contains(ev),
            "{what}: an event handler attribute {ev}"
        );
    }
}

fn routes() -> &'static str {
    "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\nscopes = [\"data:read\"]\n\n\
     [[routes]]\npath = \"/orders\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\nscopes = [\"orders:write\"]\n"
}

// --- HTTP tests -------------------------------------------------------------------

#[test]
fn console_refuses_what_it_must() {
    let env = Env::new(routes());
    let admin = env.init();
    let reader = env.create_key(&["--name", "reader", "--scopes", "data:read"]);
    // An admin key with a number of uses: a session would outlast them.
    let metered = env.create_key(&["--name", "breakglass", "--scopes", "admin", "--uses", "2"]);
    let srv = env.serve();
    let c = http();

    // Not signed in: to the sign-in page, which is strict.
    let r = c.get(env.admin_url("/console/")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in");
    let r = c.get(env.admin_url("/console/sign-in")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_strict("sign-in", r);

    // A wrong key is refused with one answer, whatever was wrong: a
    // made-up well-formed key, a malformed one, a real key without the
    // admin scope, the admin key with one character changed.
    let mut changed = admin.clone().into_bytes();
    let i = changed.len() - 10;
    changed[i] = if changed[i] == b'a' { b'b' } else { b'a' };
    let changed = String::from_utf8(changed).unwrap();
    let mut bodies = Vec::new();
    for wrong in [
        "pc_live_0000000000000000000000000000000000000000000_000000",
        "not a key",
        reader.as_str(),
        changed.as_str(),
        metered.as_str(),
        "",
    ] {
        let r = c
            .post(env.admin_url("/console/sign-in"))
            .form(&[("key", wrong)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "sign-in with {wrong:?}");
        assert!(set_cookie(r.headers()).is_none(), "a cookie for {wrong:?}");
        let body = assert_strict("refused sign-in", r);
        assert!(body.contains("That key was not accepted"), "{body}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the refusals differ, so they say what was wrong"
    );

    // Reached by a non-loopback address over plain HTTP, the sign-in page
    // says why a browser would not keep the session.
    let r = c
        .get(env.admin_url("/console/sign-in"))
        .header("Host", "10.0.0.2:8081")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .unwrap()
            .contains("only over HTTPS or on localhost")
    );

    // Cross-site sign-in is refused before the key is looked at.
    let r = c
        .post(env.admin_url("/console/sign-in"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("key", admin.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(r.headers()).is_none());

    // The admin key opens a session: the cookie's attributes, and no
    // trace of the key in it.
    let r = c
        .post(env.admin_url("/console/sign-in"))
        .form(&[("key", admin.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let (cookie, line) = set_cookie(r.headers()).unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(
            line.split("; ").any(|a| a == attr),
            "{attr} missing: {line}"
        );
    }
    assert!(!line.to_ascii_lowercase().contains("domain="), "{line}");
    let random = admin.split('_').nth(2).unwrap();
    assert!(
        !cookie.contains(random) && !cookie.contains(&admin[..20]),
        "{cookie}"
    );

    // Every page: CSP and friends, no inline script or style.
    let list = assert_strict("keys", get(&env, "/console/", &cookie));
    assert!(list.contains("reader"), "{list}");
    let token = csrf_of(&list);
    let reader_id = env_key_id(&env, &admin, "reader");
    for p in [
        "/console/keys/new".to_owned(),
        format!("/console/keys/{reader_id}"),
        format!("/console/keys/{reader_id}?span=minute"),
        format!("/console/keys/{reader_id}?span=day"),
        "/console/users".into(),
        "/console/clients".into(),
        "/console/audit".into(),
        "/console/audit?action=key.".into(),
        "/console/health".into(),
        "/console/keys?status=all&name=%3Cscript%3E".into(),
    ] {
        let r = get(&env, &p, &cookie);
        assert_eq!(r.status(), 200, "{p}");
        assert_strict(&p, r);
    }
    let r = get(&env, "/console/no-such-page", &cookie);
    assert_eq!(r.status(), 404);
    assert_strict("404", r);
    // The assets: content-hashed names, cached for good.
    let css = list
        .split('"')
        .find(|s| s.starts_with("/console/assets/console-") && s.ends_with(".css"))
        .unwrap();
    let r = c.get(env.admin_url(css)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );

    let keys_before = key_count(&env, &admin);
    let create = [("name", "made-here"), ("scopes", "data:read")];

    // A change without the CSRF token: 403, nothing made.
    let r = post(&env, "/console/keys", &cookie, &create, &[]);
    assert_eq!(r.status(), 403, "POST without a token");
    let body = assert_strict("csrf refusal", r);
    assert!(body.contains("security token"), "{body}");
    // With another session's token: 403.
    let other = sign_in(&env, &admin);
    let other_token = csrf_of(&get(&env, "/console/", &other).text().unwrap());
    let mut with_other = create.to_vec();
    with_other.push(("csrf", &other_token));
    let r = post(&env, "/console/keys", &cookie, &with_other, &[]);
    assert_eq!(r.status(), 403, "POST with another session's token");
    // With the token, but from another site: 403 (Origin, then Fetch
    // Metadata).
    let mut with_token = create.to_vec();
    with_token.push(("csrf", &token));
    for site in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let r = post(&env, "/console/keys", &cookie, &with_token, &[site]);
        assert_eq!(r.status(), 403, "{}: {}", site.0, site.1);
    }
    assert_eq!(
        key_count(&env, &admin),
        keys_before,
        "a refused change made a key"
    );
    // With the token, same origin: made, the key shown once.
    let origin = format!("http://127.0.0.1:{}", env.admin_port);
    let r = post(
        &env,
        "/console/keys",
        &cookie,
        &with_token,
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(r.status(), 201);
    let body = assert_strict("created", r);
    assert!(body.contains("value=\"pc_live_"), "{body}");
    assert_eq!(key_count(&env, &admin), keys_before + 1);

    // A tampered cookie opens nothing.
    let tampered = cookie.replacen("key_", "key_x", 1);
    let r = get(&env, "/console/", &tampered);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in?ended=invalid");

    // Signing out ends the session, for the cookie too.
    let r = post(
        &env,
        "/console/sign-out",
        &other,
        &[("csrf", &other_token)],
        &[],
    );
    assert_eq!(r.status(), 303);
    assert!(set_cookie(r.headers()).unwrap().1.contains("Max-Age=0"));
    let r = get(&env, "/console/", &other);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in?ended=signed-out");

    // A revoked admin key ends its sessions.
    let second = env.create_key(&["--name", "second-admin", "--scopes", "admin"]);
    let second_session = sign_in(&env, &second);
    assert_eq!(get(&env, "/console/", &second_session).status(), 200);
    let second_id = env_key_id(&env, &admin, "second-admin");
    let r = c
        .post(env.admin_url(&format!("/admin/v1/keys/{second_id}/revoke")))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(&env, "/console/", &second_session);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in?ended=key");
    // The first session is unaffected.
    assert_eq!(get(&env, "/console/", &cookie).status(), 200);

    // The last admin key cannot lose the admin scope through the console.
    let admin_id = env_key_id(&env, &admin, "initial admin");
    let r = post(
        &env,
        &format!("/console/keys/{admin_id}/settings"),
        &cookie,
        &[("csrf", &token), ("scopes", "data:read")],
        &[],
    );
    assert_eq!(r.status(), 409);
    let body = r.text().unwrap();
    assert!(body.contains("last active admin key"), "{body}");
    assert_eq!(get(&env, "/console/", &cookie).status(), 200);

    // A Host that is not an address, localhost or a listed name (DNS
    // rebinding) is refused.
    let r = c
        .get(env.admin_url("/console/sign-in"))
        .header("Host", "rebound.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    // No key in the log.
    let log = srv.stop();
    assert!(
        !log.contains(&admin) && !log.contains(&second),
        "a key in the log"
    );
}

#[test]
fn console_sessions_expire() {
    let env = Env::new("[console]\nsession_ttl = \"6s\"\nidle_timeout = \"2s\"\n");
    let admin = env.init();
    let _srv = env.serve();
    let cookie = sign_in(&env, &admin);
    assert_eq!(get(&env, "/console/", &cookie).status(), 200);
    // Past the idle timeout (no timing is asserted: the wait is longer
    // than the timeout, and the answer after it is what is checked).
    std::thread::sleep(Duration::from_millis(3500));
    let r = get(&env, "/console/", &cookie);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in?ended=expired");
    let cleared = set_cookie(r.headers()).unwrap().1;
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // A change with the expired session goes to sign-in; nothing is made.
    let r = post(
        &env,
        "/console/keys",
        &cookie,
        &[("name", "late"), ("csrf", "x")],
        &[],
    );
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/console/sign-in"));
}

fn admin_list(env: &Env, admin: &str) -> Vec<Value> {
    let v: Value = http()
        .get(env.admin_url("/admin/v1/keys?include_revoked=true&limit=1000"))
        .header("X-API-Key", admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["keys"].as_array().cloned().unwrap_or_default()
}

fn key_count(env: &Env, admin: &str) -> usize {
    admin_list(env, admin).len()
}

fn env_key_id(env: &Env, admin: &str, name: &str) -> String {
    admin_list(env, admin)
        .into_iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no key named {name}"))
}

// --- The browser -----------------------------------------------------------------

impl Browser {
    /// Saves a PNG of the whole page (the window grown to the page's
    /// height first) as docs/console/`name`.
    fn screenshot(&self, name: &str) {
        let h = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(900);
        self.size(1280, (h as u32 + 100).clamp(600, 3000));
        let png = self.png();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        save_screenshot(name, &png);
        self.size(1280, 900);
    }

    /// As [`Browser::screenshot`], at the window's current (narrow) width.
    fn screenshot_narrow(&self, name: &str) {
        save_screenshot(name, &self.png());
    }
}

fn save_screenshot(name: &str, png: &[u8]) {
    let dir = repo_root().join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// The chart's numbers on the key page: (valid, refused), from the SVG's
/// data attributes.
fn chart_counts(b: &Browser) -> (u64, u64) {
    let v = b.eval(
        "(() => { const s = document.querySelector('#usage-chart svg.chart'); return s ? [Number(s.dataset.valid), Number(s.dataset.refused)] : [0, 0]; })()",
    );
    (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
}

/// Reloads `url` until the chart says `ok`; the last counts.
fn watch_chart(b: &Browser, url: &str, ok: impl Fn(u64, u64) -> bool) -> (u64, u64) {
    let mut last = (0, 0);
    let seen = within(Duration::from_secs(60), || {
        // Without the fragment: a navigation to the same URL and fragment
        // would not reload the page.
        let url = url.split('#').next().unwrap();
        b.goto(url);
        b.wait_for(url);
        last = chart_counts(b);
        if ok(last.0, last.1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
        false
    });
    assert!(
        seen.is_some(),
        "the chart at {url} never changed as expected: {last:?}\n{}",
        b.text()
    );
    last
}

/// The key a page shows once (after creating or rotating it): (the key,
/// its id).
fn shown_key(b: &Browser) -> (String, String) {
    // The form's answer may come at the URL the form was on: wait for it.
    b.wait_until("document.getElementById('new-key') && document.getElementById('new-key-id')");
    let text = |expr: &str| b.eval(expr).as_str().unwrap().to_owned();
    (
        text("document.getElementById('new-key').value"),
        text("document.getElementById('new-key-id').textContent"),
    )
}

/// The outcome counts the legend shows, by name.
fn legend(b: &Browser) -> Value {
    b.eval(
        "(() => { const o = {}; document.querySelectorAll('.legend li').forEach((li) => { o[li.dataset.outcome] = Number(li.dataset.count); }); return o; })()",
    )
}

#[test]
fn console_in_a_browser() {
    if !browser_available("console browser test") {
        return;
    }
    // Counts reach the store (and the chart) every second.
    let env = Env::new(&format!(
        "{}\n[analytics]\nflush_interval = \"1s\"\n",
        routes()
    ));
    let admin = env.init();
    env.add_user("alice", "correct horse battery staple", "data:read");
    env.add_user(
        "bob <b>",
        "correct horse battery staple",
        "data:read data:write",
    );
    env.add_client("reporting", "data:read", "");
    env.create_key(&[
        "--name",
        "billing-batch",
        "--owner",
        "team-billing",
        "--scopes",
        "data:read",
    ]);
    env.create_key(&[
        "--name",
        "<img src=x onerror=alert(1)>",
        "--owner",
        "mallory\"><script>",
        "--scopes",
        "data:read",
    ]);
    let srv = env.serve();
    let console = format!("http://127.0.0.1:{}/console/", env.admin_port);
    let api = |key: &str, path: &str| {
        http()
            .get(env.url(path))
            .header("X-API-Key", key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };

    let b = Browser::start(&["--hide-scrollbars", "--force-device-scale-factor=1"]);
    b.size(1280, 900);

    // 1. Sign in with the admin key.
    b.goto(&console);
    b.wait_for(&format!("{console}sign-in"));
    b.type_into("#key", &admin);
    b.click("form[action='/console/sign-in'] button[type=submit]");
    b.wait_for(&console);
    // The sign-in page's URL starts with the console's too: wait for a
    // signed-in page.
    b.wait_until("document.querySelector(\"form[action='/console/sign-out']\")");
    let text = b.text();
    assert!(
        text.contains("API keys") && text.contains("billing-batch"),
        "{text}"
    );
    // The hostile name is text, not markup.
    assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
    assert_eq!(b.eval("document.querySelectorAll('#keys img').length"), 0);
    // Chromium kept the Secure, __Host- cookie from http://127.0.0.1
    // (a potentially trustworthy origin), HttpOnly and SameSite=Strict.
    let cookies = b.cookies();
    let c = cookies
        .iter()
        .find(|c| c["name"] == COOKIE_NAME)
        .unwrap_or_else(|| panic!("Chromium kept no console cookie: {cookies:?}"))
        .clone();
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    assert_eq!(c["path"], "/", "{c}");
    assert_eq!(b.eval("document.cookie"), "", "scripts see a cookie");
    assert_eq!(b.eval("window.localStorage.length"), 0);
    eprintln!("1. signed in; cookie kept: secure, httpOnly, SameSite=Strict");

    // 2. Create a key; copy it.
    b.click("a[href='/console/keys/new']");
    b.wait_for(&format!("{console}keys/new"));
    b.type_into("#name", "orders-service");
    b.type_into("#owner", "team-orders");
    b.type_into("#scopes", "data:read");
    b.click("form[action='/console/keys'] button[type=submit]");
    b.wait_for(&format!("{console}keys"));
    let (key, key_id) = shown_key(&b);
    assert!(key.starts_with("pc_live_"), "{key}");
    // Reading the clipboard back needs the permission; granted where
    // chromedriver supports it.
    let granted = b.grant("clipboard-read");
    b.grant("clipboard-write");
    b.click("#copy");
    let copied = within(WAIT, || {
        b.eval("document.getElementById('copy-status').textContent") == "Copied"
    });
    assert!(
        copied.is_some(),
        "the copy button never said Copied: {}",
        b.text()
    );
    if granted {
        // A throw (the clipboard not readable) fails in Browser::run.
        let v = b.run("return await navigator.clipboard.readText();", &[]);
        assert_eq!(v, key, "the clipboard holds something else");
        eprintln!("2. created {key_id}; the clipboard holds the key");
    } else {
        eprintln!("2. created {key_id}; copy reported Copied (clipboard not readable here)");
    }
    b.screenshot("create-once.png");
    // The plaintext is on that page only: the key page never shows it.
    b.goto(&format!("{console}keys/{key_id}"));
    b.wait_for(&format!("{console}keys/{key_id}"));
    assert!(
        !b.text().contains(&key)
            && !b
                .eval("document.documentElement.outerHTML")
                .as_str()
                .unwrap()
                .contains(&key)
    );

    // 3. Use it through the gateway; watch the chart.
    for _ in 0..5 {
        assert_eq!(api(&key, "/data"), 200);
    }
    for _ in 0..2 {
        assert_eq!(api(&key, "/orders"), 403);
    }
    let page = format!("{console}keys/{key_id}?span=minute#usage");
    let (valid, refused) = watch_chart(&b, &page, |v, r| v >= 5 && r >= 2);
    let l = legend(&b);
    assert!(
        l["valid"].as_u64() >= Some(5) && l["insufficient_scope"].as_u64() >= Some(2),
        "{l}"
    );
    eprintln!("3. chart: {valid} valid, {refused} refused");

    // Change its scopes: the route it was refused on now admits it.
    b.type_into("#scopes", "data:read orders:write");
    b.type_into("#uses", "100");
    b.click("#save-settings");
    b.wait_for(&format!("{console}keys/{key_id}?done=updated"));
    assert!(b.text().contains("settings are changed"), "{}", b.text());
    assert_eq!(api(&key, "/orders"), 200, "after adding orders:write");
    b.goto(&format!("{console}keys/{key_id}"));
    b.wait_for(&format!("{console}keys/{key_id}"));
    assert_eq!(
        b.eval("document.getElementById('uses').value"),
        "99",
        "the uses left after one request"
    );
    eprintln!("3b. scopes and uses changed; /orders admits the key");

    // 4. Rotate with no grace: the old key is refused from now on.
    b.type_into("#grace", "0s");
    b.click("#rotate");
    b.wait_for(&format!("{console}keys/{key_id}/rotate"));
    let (new_key, new_id) = shown_key(&b);
    assert_ne!(new_key, key);
    assert_eq!(api(&key, "/data"), 401, "the old key after rotation");
    assert_eq!(api(&new_key, "/data"), 200);
    eprintln!("4. rotated to {new_id}");

    // 5. Revoke the replacement.
    b.goto(&format!("{console}keys/{new_id}"));
    b.wait_for(&format!("{console}keys/{new_id}"));
    b.click("#confirm-revoke");
    b.click("#revoke");
    b.wait_for(&format!("{console}keys/{new_id}?done=revoked"));
    assert!(b.text().contains("The key is revoked."), "{}", b.text());
    assert_eq!(
        b.eval("document.getElementById('key-status').textContent"),
        "revoked"
    );
    assert_eq!(api(&new_key, "/data"), 401, "the revoked key");
    assert_eq!(api(&new_key, "/data"), 401, "the revoked key");

    // 6. The refusals appear on both keys' charts.
    watch_chart(
        &b,
        &format!("{console}keys/{new_id}?span=minute#usage"),
        |_, r| r >= 2,
    );
    let l = legend(&b);
    assert!(l["revoked"].as_u64() >= Some(2), "{l}");
    watch_chart(
        &b,
        &format!("{console}keys/{key_id}?span=minute#usage"),
        |_, r| r >= 3,
    );
    let l = legend(&b);
    assert!(
        l["expired"].as_u64() >= Some(1),
        "the rotated key's refusal: {l}"
    );
    b.screenshot("key-page.png");
    eprintln!("6. refusals on the charts: {l}");

    // 7. The other pages, and their screenshots.
    b.goto(&format!("{console}keys?status=all"));
    b.wait_for(&format!("{console}keys"));
    let spark = b.eval(&format!(
        "Number(document.querySelector('tr[data-key-id=\"{key_id}\"] svg.spark').dataset.total)"
    ));
    assert!(spark.as_u64() >= Some(8), "the sparkline: {spark}");
    // The unfiltered first page has the overview of the last 24 hours.
    b.goto(&console);
    b.wait_for(&console);
    let top = b.eval(&format!(
        "!!document.querySelector('#top-requests a[href=\"/console/keys/{key_id}\"]') && !!document.querySelector('#top-refusals a[href=\"/console/keys/{new_id}\"]')"
    ));
    assert_eq!(top, true, "the overview misses the keys: {}", b.text());
    b.screenshot("keys.png");
    b.goto(&format!("{console}audit"));
    b.wait_for(&format!("{console}audit"));
    let text = b.text();
    assert!(
        text.contains("key.rotate") && text.contains("key.revoke") && text.contains("key.create"),
        "{text}"
    );
    b.screenshot("audit.png");
    b.goto(&format!("{console}health"));
    b.wait_for(&format!("{console}health"));
    let text = b.text();
    assert!(
        text.contains("Store")
            && text.contains("Rate limiter")
            && text.contains("Key verification"),
        "{text}"
    );
    b.screenshot("health.png");
    b.goto(&format!("{console}users"));
    b.wait_for(&format!("{console}users"));
    assert!(b.text().contains("bob <b>"), "{}", b.text());
    b.screenshot("users.png");
    b.goto(&format!("{console}clients"));
    b.wait_for(&format!("{console}clients"));
    assert!(b.text().contains("reporting"));

    // 8. Keyboard: Tab reaches the skip link first, and the sign-out
    // button is a real button.
    b.goto(&console);
    b.wait_for(&console);
    b.cmd(
        reqwest::Method::POST,
        "/actions",
        Some(json!({"actions": [{"type": "key", "id": "kb", "actions": [
            {"type": "keyDown", "value": "\u{E004}"}, {"type": "keyUp", "value": "\u{E004}"}
        ]}]})),
    );
    assert_eq!(b.eval("document.activeElement.className"), "skip");
    // Narrow screen: the list still fits (no sideways scroll of the page).
    b.size(390, 844);
    b.goto(&console);
    b.wait_for(&console);
    let fits = b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1");
    assert_eq!(fits, true, "the keys list is wider than a phone");
    b.screenshot_narrow("keys-narrow.png");

    // 9. Sign out: back to sign-in, and the console is closed.
    b.size(1280, 900);
    b.click("header form[action='/console/sign-out'] button");
    b.wait_for(&format!("{console}sign-in"));
    b.goto(&format!("{console}audit"));
    b.wait_for(&format!("{console}sign-in"));

    // 10. On http://localhost too, Chromium keeps the Secure cookie.
    let local = format!("http://localhost:{}/console/", env.admin_port);
    b.goto(&local);
    b.wait_for(&format!("{local}sign-in"));
    b.type_into("#key", &admin);
    b.click("form[action='/console/sign-in'] button[type=submit]");
    b.wait_for(&local);
    b.wait_until("document.querySelector(\"form[action='/console/sign-out']\")");
    assert!(b.text().contains("API keys"), "{}", b.text());
    let cookies = b.cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == COOKIE_NAME && c["domain"] == "localhost" && c["secure"] == true),
        "no Secure console cookie for localhost: {cookies:?}"
    );
    eprintln!("10. signed in on http://localhost too");
    drop(b);
    let log = srv.stop();
    for k in [&admin, &key, &new_key] {
        assert!(!log.contains(k.as_str()), "a key in the log");
    }
}

//! What the tests of Portcullis behind another proxy share — nginx.rs
//! (`auth_request`), caddy.rs (`forward_auth`) and traefik.rs (ForwardAuth's
//! header contract): the configuration docs/deployment.md shows, the
//! proxy's process, the stack of echo upstream, Portcullis and proxy, and
//! the checks of what came through it.

use crate::boundary::{DecodingUpstream, private_spellings, protected_config, raw_get};
use crate::harness::*;
use reqwest::blocking::Response;
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

// --- What the deployment doc shows ----------------------------------------------

pub const DEPLOYMENT_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deployment.md");

/// The fenced blocks of one language in a markdown text.
pub fn fenced_blocks(md: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start() == open => cur = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    out
}

/// The one fenced block in language `lang` of docs/deployment.md that
/// contains `marker`.
pub fn shown_in_deployment_doc(lang: &str, marker: &str) -> String {
    let doc = std::fs::read_to_string(DEPLOYMENT_DOC)
        .unwrap_or_else(|e| panic!("cannot read {DEPLOYMENT_DOC}: {e}"));
    let mut shown: Vec<String> = fenced_blocks(&doc, lang)
        .into_iter()
        .filter(|b| b.contains(marker))
        .collect();
    assert_eq!(
        shown.len(),
        1,
        "docs/deployment.md should show exactly one ```{lang} block with {marker}"
    );
    shown.remove(0)
}

/// Asserts that `text` has each of the `required` lines (alignment aside),
/// each named for what breaks when it goes missing.
pub fn assert_required(what: &str, text: &str, required: &[(&str, &str)]) {
    // Every line with its runs of whitespace collapsed, so alignment does
    // not matter when looking for a directive.
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for (directive, why) in required {
        assert!(
            lines.iter().any(|l| l == directive),
            "{what} lacks `{directive}` (without it: {why})"
        );
    }
}

// --- Portcullis's side ----------------------------------------------------------------

/// The routes every proxy test decides on, all to `upstream`.
pub fn routes(upstream: &str) -> String {
    format!(
        r#"
[credentials]
# Only so that a key in both the header and the query can be shown to be
# refused as ambiguous; see docs/deployment.md on query keys behind a
# proxy.
allow_query_keys = true

[[routes]]
path = "/api/**"
methods = ["GET", "POST"]
upstream = "{upstream}"
auth = ["api_key_header", "api_key_query", "bearer"]
scopes = ["data:read"]

[[routes]]
path = "/reports/**"
methods = ["GET"]
upstream = "{upstream}"
auth = ["api_key_header", "bearer"]
scopes = ["reports:read"]

[[routes]]
path = "/public"
methods = ["GET"]
upstream = "{upstream}"
auth = []

[[routes]]
path = "/limited"
methods = ["GET", "POST"]
upstream = "{upstream}"
auth = ["api_key_header"]
rate_limit = "2/hour"
"#
    )
}

/// The id of the key named `name`.
pub fn key_id(env: &Env, name: &str) -> String {
    let o = env.cli(&["keys", "list", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key named {name} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Identity fields a client forges; none may reach an upstream.
pub const FORGED: &[(&str, &str)] = &[
    ("X-Portcullis-Principal", "evil"),
    ("X-Portcullis-Kind", "admin"),
    ("X-Portcullis-Scopes", "admin"),
    ("X-Portcullis-Credential-Id", "key_forged"),
];

// --- The proxy's process ---------------------------------------------------------

/// A proxy running in the foreground on a free loopback port; killed on
/// drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    name: &'static str,
    log: PathBuf,
}

impl Proxy {
    /// Spawns `cmd`, configured to listen on `port` and to write what it
    /// has to say to `log`, and waits until it accepts connections.
    pub fn start(name: &'static str, cmd: &mut Command, port: u16, log: PathBuf) -> Proxy {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut p = Proxy {
            child,
            port,
            name,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {port}:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a test starts its proxy: in a directory of its own, in front of
/// Portcullis's port and the app's.
pub type StartProxy = fn(dir: &Path, portcullis: u16, app: u16) -> Proxy;

// --- Echo upstream, Portcullis and the proxy ----------------------------------------

/// Echo upstream, Portcullis and the proxy, in that order; dropped in
/// reverse (the proxy first, then Portcullis, then the temp dir).
pub struct Stack {
    pub proxy: Proxy,
    pub server: Option<Server>,
    up: Upstream,
    pub env: Env,
    /// Scopes `data:read`.
    pub reader: String,
    /// Also `data:read`; a second, different key.
    pub other: String,
}

impl Stack {
    pub fn new(start: StartProxy) -> Stack {
        let up = upstream();
        let app = up.addr.port();
        let env = Env::new(&routes(&format!("http://127.0.0.1:{app}")));
        env.init();
        let reader = env.create_key(&["--name", "reader", "--scopes", "data:read"]);
        let other = env.create_key(&["--name", "other", "--scopes", "data:read"]);
        let server = env.serve();
        let proxy = start(&env.dir.path().join("proxy"), env.port, app);
        Stack {
            proxy,
            server: Some(server),
            up,
            env,
            reader,
            other,
        }
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = client().request(m, self.proxy.url(path));
        for (n, v) in headers {
            rb = rb.header(*n, *v);
        }
        rb.send().unwrap()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    /// Requests the echo upstream has answered.
    pub fn hits(&self) -> usize {
        self.up.hits.load(Ordering::SeqCst)
    }

    /// What went wrong, for assertion messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- portcullis ---\n{}",
            self.proxy.name,
            self.proxy.log(),
            self.server.as_ref().map(Server::log).unwrap_or_default()
        )
    }

    /// What the echo upstream saw.
    pub fn echoed(&self, r: Response) -> Value {
        assert_eq!(r.status(), 200, "{}", self.logs());
        assert_eq!(
            r.headers().get("x-upstream").map(|v| v.to_str().unwrap()),
            Some("yes"),
            "the answer did not come from the upstream"
        );
        r.json().unwrap()
    }
}

// --- What came through ------------------------------------------------------------

/// All values of a response header.
pub fn all(r: &Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The values the upstream saw for one header (absent = empty).
pub fn seen(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// How a test asserts that a Portcullis denial came through its proxy
/// intact; returns the WWW-Authenticate values and the body.
pub type AssertDenied = fn(&Stack, Response, u16, &str) -> (Vec<String>, Value);

/// Asserts a Portcullis denial came through the proxy intact: status,
/// problem JSON body, error code. Returns the WWW-Authenticate values and
/// body.
pub fn assert_denied(s: &Stack, r: Response, status: u16, code: &str) -> (Vec<String>, Value) {
    let got = r.status().as_u16();
    let ct = all(&r, "content-type").join(",");
    let err = all(&r, "x-portcullis-error");
    let challenges = all(&r, "www-authenticate");
    let text = r.text().unwrap();
    assert_eq!(
        got,
        status,
        "expected {status} {code}, body {text}\n{}",
        s.logs()
    );
    assert!(
        ct.starts_with("application/problem+json"),
        "{status} {code}: content-type {ct:?}, body {text}"
    );
    assert_eq!(err, vec![code.to_owned()], "{status}: X-Portcullis-Error");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    (challenges, body)
}

/// The reader's key in X-API-Key with `forged` identity fields: the
/// upstream gets the decision's identity, and neither the forgeries nor
/// the key. Returns what the upstream saw.
pub fn assert_key_becomes_identity(s: &Stack, forged: &[(&str, &str)]) -> Value {
    let id = key_id(&s.env, "reader");
    let mut h = vec![("X-API-Key", s.reader.as_str())];
    h.extend_from_slice(forged);
    let e = s.echoed(s.get("/api/items?page=2", &h));
    assert_eq!(e["method"], "GET");
    assert_eq!(e["uri"], "/api/items?page=2");
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-kind"), ["api_key"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-scopes"), ["data:read"], "{e}");
    assert_eq!(seen(&e, "x-portcullis-credential-id"), [id.as_str()], "{e}");
    assert!(
        seen(&e, "x-api-key").is_empty(),
        "the key reached the upstream: {e}"
    );
    assert!(
        !e.to_string().contains(&s.reader),
        "the key reached the upstream: {e}"
    );
    e
}

/// The key as a bearer token: the same identity, and the Authorization
/// header is not forwarded.
pub fn assert_bearer_becomes_identity(s: &Stack) {
    let bearer = format!("Bearer {}", s.reader);
    let e = s.echoed(s.get("/api/items", &[("Authorization", &bearer)]));
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
    assert!(seen(&e, "authorization").is_empty(), "{e}");
}

/// The original method is what Portcullis decides on, and the body still
/// reaches the upstream (only the decision request goes without it).
pub fn assert_post_keeps_its_body(s: &Stack) {
    let r = client()
        .post(s.proxy.url("/api/items"))
        .header("X-API-Key", &s.reader)
        .body("hello=1")
        .send()
        .unwrap();
    let e = s.echoed(r);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body"], "hello=1");
    assert_eq!(seen(&e, "x-portcullis-principal"), ["reader"], "{e}");
}

/// A public route, asked with `forged` identity fields, `also` and the
/// forwarding and re-routing fields a client could forge: none of the
/// forgeries or re-routing fields reach the upstream, which gets the
/// proxy's own X-Forwarded-For and X-Forwarded-Proto. Returns what the
/// upstream saw.
pub fn assert_public_route_drops_client_fields(
    s: &Stack,
    forged: &[(&str, &str)],
    also: &[(&str, &str)],
) -> Value {
    let rerouting = [
        ("Forwarded", "for=203.0.113.66"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Original-URL", "/api/x"),
    ];
    let mut h = forged.to_vec();
    h.extend_from_slice(&[
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
    ]);
    h.extend_from_slice(also);
    h.extend_from_slice(&rerouting);
    let e = s.echoed(s.get("/public", &h));
    for (n, _) in forged.iter().chain(&rerouting) {
        let n = n.to_ascii_lowercase();
        assert!(seen(&e, &n).is_empty(), "{n} reached the upstream: {e}");
    }
    assert_eq!(seen(&e, "x-forwarded-for"), ["127.0.0.1"], "{e}");
    assert_eq!(seen(&e, "x-forwarded-proto"), ["http"], "{e}");
    e
}

/// The denials every proxy passes on as Portcullis gave them, each
/// checked by `denied`: 401 without a key and with a made-up one, 403
/// without the route's scope, 400 for two credentials, 404 off every
/// route, 405 (with Allow) for a method not on the route.
pub fn assert_denials_pass_through(s: &Stack, denied: AssertDenied) {
    // No key: 401, FastAPI's detail, one challenge naming the schemes.
    let (ch, body) = denied(s, s.get("/api/items", &[]), 401, "not_authenticated");
    assert_eq!(body["detail"], "Not authenticated");
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");
    assert!(
        ch[0].contains("APIKey") && ch[0].contains("Bearer"),
        "{ch:?}"
    );

    // A made-up key: 401 with the generic detail.
    let (ch, _) = denied(
        s,
        s.get("/api/items", &[("X-API-Key", "pc_live_madeup")]),
        401,
        "invalid_credentials",
    );
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");

    // A good key without the route's scope: 403 and its challenge.
    let (ch, _) = denied(
        s,
        s.get("/reports/q1", &[("X-API-Key", &s.reader)]),
        403,
        "insufficient_scope",
    );
    assert_eq!(ch.len(), 1, "one WWW-Authenticate, got {ch:?}");
    assert!(
        ch[0].contains("insufficient_scope") && ch[0].contains("reports:read"),
        "{ch:?}"
    );

    // Two credentials: 400 (not the 500 auth_request would make of it).
    let q = format!("/api/items?api_key={}", s.other);
    denied(
        s,
        s.get(&q, &[("X-API-Key", &s.reader)]),
        400,
        "ambiguous_credentials",
    );

    // No route: 404, not 500.
    denied(
        s,
        s.get("/nowhere", &[("X-API-Key", &s.reader)]),
        404,
        "not_found",
    );

    // Method not on the route: 405 with Allow.
    let r = s.request("DELETE", "/api/items", &[("X-API-Key", &s.reader)]);
    let allow = all(&r, "allow");
    denied(s, r, 405, "method_not_allowed");
    assert_eq!(allow.len(), 1);
    assert!(
        allow[0].contains("GET") && allow[0].contains("POST"),
        "{allow:?}"
    );
}

/// With Portcullis stopped, the proxy answers 502 itself and nothing
/// reaches the upstream.
pub fn assert_fails_closed(s: &mut Stack) {
    s.echoed(s.get("/api/items", &[("X-API-Key", &s.reader)]));
    s.server.take().unwrap().stop();
    let r = s.get("/api/items", &[("X-API-Key", &s.reader)]);
    assert_eq!(r.status(), 502, "{}", s.logs());
    assert!(r.headers().get("x-upstream").is_none());
    assert_eq!(
        s.hits(),
        1,
        "the request reached the upstream without a decision"
    );
}

// --- Every spelling of a protected path -----------------------------------------------

/// boundary.rs's decoding app (`/w/**` public, `/w/private/**` behind a
/// key; it routes on the path it decodes) behind Portcullis and the
/// proxy, which passes the app the request target as the client sent it
/// and asks Portcullis about the same bytes.
pub struct Spellings {
    pub proxy: Proxy,
    srv: Server,
    key: String,
    _env: Env,
    _up: DecodingUpstream,
}

impl Spellings {
    pub fn start(start: StartProxy) -> Spellings {
        let up = DecodingUpstream::start();
        let env = Env::new(&protected_config(up.port));
        env.init();
        let key = env.create_key(&["--name", "reader"]);
        let srv = env.serve();
        let proxy = start(&env.dir.path().join("proxy"), env.port, up.port);
        Spellings {
            proxy,
            srv,
            key,
            _env: env,
            _up: up,
        }
    }

    /// Without a key, no spelling of the protected path reaches the
    /// protected resource: each is the public one, challenged (most of
    /// them, or the check is vacuous), or refused.
    pub fn assert_none_reaches_the_protected_resource(&self) {
        let name = self.proxy.name;
        let mut challenged = 0;
        let mut other = std::collections::BTreeMap::<u16, usize>::new();
        for p in private_spellings() {
            let (status, body) = raw_get(self.proxy.port, &p, &[]);
            if status == 200 {
                let j: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    j["served"],
                    "public",
                    "{p:?} reached the protected resource through {name} without a key: {j}\n{}\n{}",
                    self.proxy.log(),
                    self.srv.log()
                );
            } else if status == 401 {
                challenged += 1;
            } else {
                assert!(
                    matches!(status, 400 | 404),
                    "{p:?}: unexpected {status}: {body}"
                );
                *other.entry(status).or_default() += 1;
            }
        }
        assert!(
            challenged > 250,
            "{challenged} challenged, others {other:?}"
        );
    }

    /// GET `target` through the proxy with the key: (status, body).
    pub fn with_key(&self, target: &str) -> (u16, String) {
        raw_get(self.proxy.port, target, &[("X-API-Key", &self.key)])
    }

    /// With the key, a spelling with an escaped letter is the protected
    /// resource. Returns what the app answered.
    pub fn assert_key_opens_an_escaped_spelling(&self) -> Value {
        let (status, body) = self.with_key("/w/%70rivate/secret");
        assert_eq!(status, 200, "{body}");
        let j: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["served"], "private", "{j}");
        j
    }
}

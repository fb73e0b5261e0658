//! FastAPI's own security tests, ported to the library: the conformance
//! suite behind docs/fastapi-compat.md.
//!
//! Each case is one row of a table: one request from one of FastAPI's test
//! files (or one item of the edge-case checklist in the FastAPI semantics
//! reference, §10), sent over a real socket to the equivalent axum app
//! built on the library, with FastAPI's answer as its test states it
//! (status, `detail`, `WWW-Authenticate`, other headers, and the body
//! wherever FastAPI's test checks one). Every case asserts Portcullis'
//! answer exactly: status, `detail` (absent when `None`), the problem+json
//! `code` (every problem+json answer must have its code asserted),
//! `WWW-Authenticate` (absent when `None`) and the headers named. A case
//! FastAPI and Portcullis answer differently names the headings of
//! docs/fastapi-compat.md that explain why AND the answer Portcullis gives
//! instead (`.differs(anchors, ours)`). The suite fails when
//!
//! * a case differs from FastAPI and names no heading,
//! * a differing case's answer is not the `ours` it states,
//! * a named heading is not in docs/fastapi-compat.md (`### Title {#anchor}`), or
//! * a case that names a heading now matches FastAPI (the doc is stale).
//!
//! Classes Portcullis does not provide are cases with a `not-provided-…`
//! anchor, run against the nearest reader (`HTTPBase` on `HttpBearer`,
//! `HTTPDigest` on `HttpBasic`, `OAuth2`/`OpenIdConnect` on
//! `OAuth2PasswordBearer`). Run with `--nocapture` for the tally and what
//! each differing case answered; a failing case prints what it answered as
//! a `Want` expression, to be read critically before it is encoded.

use crate::common::serve;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis::core::cors::CorsConfig;
use portcullis::core::net::{Cidr, ForwardedHeader};
use portcullis::core::{Scheme, Scopes, Secret};
use portcullis::oauth::Endpoint;
use portcullis::schemes::{
    ApiKeyCookie, ApiKeyHeader, ApiKeyQuery, HttpBasic, HttpBearer, OAuth2PasswordBearer,
};
use portcullis::static_key::StaticKey;
use portcullis::{Portcullis, SecurityScopes, Verified};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use utoipa::openapi::path::OperationBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{HttpMethod, OpenApi, OpenApiBuilder, PathItem, PathsBuilder};

portcullis::scopes!(Me = ["me"]);
portcullis::scopes!(Scope1 = ["scope1"]);
portcullis::scopes!(Scope2 = ["scope2"]);
portcullis::scopes!(FooBar = ["foo", "bar"]);

/// The static key the apps that verify accept (as a header, or as
/// `Authorization: Bearer`).
const KEY: &str = "fastapi-compat-static-key-0001";

/// The headings every version of docs/fastapi-compat.md must keep: the
/// differences this suite and the browser/transport tests rely on.
const REQUIRED_ANCHORS: &[&str] = &[
    "problem-json",
    "ambiguous-credentials",
    "strict-basic",
    "basic-realm",
    "invalid-credentials",
    "insufficient-scope",
    "token-endpoint-errors",
    "token-grant-type",
    "token-scopes",
    "disabled-users",
    "empty-bearer-token",
    "not-provided-http-base",
    "not-provided-http-digest",
    "not-provided-oauth2",
    "not-provided-authorization-code",
    "not-provided-openid-connect",
    "not-provided-password-form",
    "not-provided-error-override",
    "case-insensitive-hosts",
    "no-wildcard-host",
    "https-redirect",
    "cors-exact-origins",
    "cors-refused-origin",
    "cors-upstream-replaced",
    "rate-limit-answers",
    "token-format",
];

// ---- a minimal HTTP/1.1 client ------------------------------------------

/// One request, written byte for byte as given.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: String,
    /// `None` sends no Host header at all.
    host: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &'static str, target: &str) -> Req {
        Req {
            method,
            target: target.to_owned(),
            host: Some("testserver".to_owned()),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    fn get(target: &str) -> Req {
        Req::new("GET", target)
    }
    fn post(target: &str) -> Req {
        Req::new("POST", target)
    }
    fn options(target: &str) -> Req {
        Req::new("OPTIONS", target)
    }
    /// A POST of `application/x-www-form-urlencoded` fields.
    fn form(target: &str, fields: &[(&str, &str)]) -> Req {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut r = Req::post(target).h("Content-Type", "application/x-www-form-urlencoded");
        r.body = body.into_bytes();
        r
    }
    fn h(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    fn auth(self, value: &str) -> Req {
        self.h("Authorization", value)
    }
    /// `auth=(user, password)` in requests' terms.
    fn basic(self, user: &str, password: &str) -> Req {
        let v = portcullis::core::basic::encode(user, password);
        self.auth(&v)
    }
    fn bearer(self, token: &str) -> Req {
        self.auth(&format!("Bearer {token}"))
    }
    fn host(mut self, host: Option<&str>) -> Req {
        self.host = host.map(str::to_owned);
        self
    }
}

/// What came back.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
    /// The problem+json `code` member.
    fn code(&self) -> Option<String> {
        let problem = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json"));
        if !problem {
            return None;
        }
        self.json()
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
    /// Our `detail` member, or a plain-text body (Starlette's middleware
    /// answers in text; we answer problem+json with the same `detail`).
    fn detail(&self) -> Option<String> {
        if let Some(d) = self
            .json()
            .as_ref()
            .and_then(|v| v.get("detail"))
            .and_then(Value::as_str)
        {
            return Some(d.to_owned());
        }
        let text = self.text();
        let is_text = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"));
        (is_text && !text.is_empty()).then_some(text)
    }
}

/// Sends `req` on a new connection (`Connection: close`) and reads the
/// whole answer.
async fn send(addr: SocketAddr, req: &Req) -> Resp {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    if let Some(h) = &req.host {
        head.push_str(&format!("Host: {h}\r\n"));
    }
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    if !req.body.is_empty() || req.method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&bytes).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .unwrap_or_else(|_| panic!("{} {}: no answer in 30 s", req.method, req.target))
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.target));
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    } else if let Some(n) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("0").trim();
        let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[(start + size + 2).min(b.len())..];
    }
}

// ---- expected answers ----------------------------------------------------

/// An answer, as FastAPI's test states it or as Portcullis must give it.
///
/// Status, `detail` and `WWW-Authenticate` are always compared (`None`:
/// absent); `code` is compared when given, and must be given when the
/// answer is `application/problem+json`.
#[derive(Debug, Clone, Default)]
struct Want {
    status: u16,
    /// `{"detail": ...}` (compared with our `detail` member, or a
    /// plain-text body); `None`: no such string.
    detail: Option<String>,
    /// The problem+json `code` (FastAPI has none).
    code: Option<String>,
    /// `WWW-Authenticate`; `None` means none is sent.
    www: Option<String>,
    /// The whole JSON body.
    body: Option<Value>,
    /// JSON pointers into the body, and their values.
    fields: Vec<(&'static str, Value)>,
    /// JSON pointers that must hold a non-empty string (tokens).
    present: Vec<&'static str>,
    /// Further headers: a value, or `None` for "not sent".
    headers: Vec<(&'static str, Option<String>)>,
    /// Headers holding a whole number within a range (timing-dependent
    /// values: `Retry-After`).
    ranges: Vec<(&'static str, std::ops::RangeInclusive<u64>)>,
}

fn status(s: u16) -> Want {
    Want {
        status: s,
        ..Want::default()
    }
}

/// 200 with `body`.
fn ok(body: Value) -> Want {
    status(200).body(body)
}

/// FastAPI's 401 `Not authenticated` with challenge `www` (our code:
/// `not_authenticated`).
fn not_auth(www: &str) -> Want {
    status(401)
        .detail("Not authenticated")
        .www(www)
        .code("not_authenticated")
}

/// `status` with `{"detail": detail}` and no challenge.
fn err(s: u16, detail: &str) -> Want {
    status(s).detail(detail)
}

/// Our problem+json denial: `status`, `code`, `detail`, no challenge.
fn problem(s: u16, code: &str, detail: &str) -> Want {
    status(s).detail(detail).code(code)
}

/// Our 401 `invalid_credentials`, challenging `www`.
fn invalid_credentials(www: &str) -> Want {
    problem(401, "invalid_credentials", "Invalid or expired credentials").www(www)
}

/// The Basic challenge Portcullis always sends ([`basic-realm`]).
const OUR_BASIC: &str = r#"Basic realm="portcullis", charset="UTF-8""#;
/// The challenge for a bad bearer token.
const OUR_BAD_BEARER: &str = r#"Bearer error="invalid_token""#;

/// The token endpoint's RFC 6749 error: 400, `error`, `error_description`,
/// `Cache-Control: no-store`.
fn oauth_error(error: &str, description: &str) -> Want {
    status(400)
        .body(json!({"error": error, "error_description": description}))
        .header("cache-control", Some("no-store"))
}

/// The token endpoint's answer to a wrong user name or password (or a
/// disabled user's right one).
fn refused_login() -> Want {
    oauth_error("invalid_grant", "invalid username or password")
}

impl Want {
    fn detail(mut self, d: &str) -> Want {
        self.detail = Some(d.to_owned());
        self
    }
    fn code(mut self, c: &str) -> Want {
        self.code = Some(c.to_owned());
        self
    }
    fn www(mut self, w: &str) -> Want {
        self.www = Some(w.to_owned());
        self
    }
    fn body(mut self, b: Value) -> Want {
        self.body = Some(b);
        self
    }
    fn field(mut self, pointer: &'static str, v: Value) -> Want {
        self.fields.push((pointer, v));
        self
    }
    fn present(mut self, pointer: &'static str) -> Want {
        self.present.push(pointer);
        self
    }
    fn header(mut self, name: &'static str, v: Option<&str>) -> Want {
        self.headers.push((name, v.map(str::to_owned)));
        self
    }
    fn header_in(mut self, name: &'static str, range: std::ops::RangeInclusive<u64>) -> Want {
        self.ranges.push((name, range));
        self
    }

    /// Where `got` differs from this; empty when it matches.
    fn compare(&self, got: &Resp) -> Vec<String> {
        let mut m = Vec::new();
        if got.status != self.status {
            m.push(format!("status {} (expected {})", got.status, self.status));
        }
        let ours = got.detail();
        if ours != self.detail {
            m.push(format!("detail {ours:?} (expected {:?})", self.detail));
        }
        if let Some(c) = &self.code {
            let ours = got.code();
            if ours.as_deref() != Some(c.as_str()) {
                m.push(format!("code {ours:?} (expected {c:?})"));
            }
        }
        let ours = got.header("www-authenticate");
        if ours != self.www.as_deref() {
            m.push(format!(
                "WWW-Authenticate {ours:?} (expected {:?})",
                self.www
            ));
        }
        if let Some(b) = &self.body {
            let ours = got.json();
            if ours.as_ref() != Some(b) {
                m.push(format!("body {} (expected {b})", got.text()));
            }
        }
        for (p, v) in &self.fields {
            let ours = got.json().and_then(|j| j.pointer(p).cloned());
            if ours.as_ref() != Some(v) {
                m.push(format!("{p} {ours:?} (expected {v})"));
            }
        }
        for p in &self.present {
            let ours = got.json().and_then(|j| j.pointer(p).cloned());
            if ours
                .as_ref()
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                m.push(format!("{p} {ours:?} (expected a non-empty string)"));
            }
        }
        for (n, v) in &self.headers {
            let ours = got.header(n);
            if ours != v.as_deref() {
                m.push(format!("{n} {ours:?} (expected {v:?})"));
            }
        }
        for (n, range) in &self.ranges {
            let ours = got.header(n);
            if !ours
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| range.contains(&v))
            {
                m.push(format!("{n} {ours:?} (expected a number in {range:?})"));
            }
        }
        m
    }

    /// What this leaves unchecked in `got` that every case must check:
    /// a problem+json answer's `code`.
    fn unasserted(&self, got: &Resp) -> Vec<String> {
        match got.code() {
            Some(c) if self.code.is_none() => {
                vec![format!("problem+json code {c:?} not asserted")]
            }
            _ => Vec::new(),
        }
    }
}

/// Rust source for a [`Want`] matching `got` (printed for a case whose
/// expected answer is wrong, to be read critically before use).
fn suggest(got: &Resp, fastapi: &Want) -> String {
    let mut s = match (got.detail(), got.code()) {
        (Some(d), Some(c)) => format!("problem({}, {c:?}, {d:?})", got.status),
        (Some(d), None) => format!("err({}, {d:?})", got.status),
        (None, _) => match got.json() {
            Some(j) => format!("status({}).body(json!({j}))", got.status),
            None => format!("status({})", got.status),
        },
    };
    if let Some(w) = got.header("www-authenticate") {
        s.push_str(&format!(".www({w:?})"));
    }
    for (n, _) in &fastapi.headers {
        s.push_str(&format!(".header({n:?}, {:?})", got.header(n)));
    }
    s
}

// ---- cases and verdicts --------------------------------------------------

/// One row of a table: a request to an app, FastAPI's answer, and where
/// Portcullis answers differently, the anchors explaining it and the
/// answer it gives instead.
#[derive(Clone)]
struct Case {
    app: SocketAddr,
    source: String,
    req: Req,
    fastapi: Want,
    differs: &'static [&'static str],
    ours: Option<Want>,
}

/// A case Portcullis answers as FastAPI does.
fn case(app: SocketAddr, source: impl Into<String>, req: Req, fastapi: Want) -> Case {
    Case {
        app,
        source: source.into(),
        req,
        fastapi,
        differs: &[],
        ours: None,
    }
}

/// A row of one FastAPI test file's table: the test's name, its request
/// and FastAPI's answer. [`file`] gives it its app and its source.
fn t(test: &str, req: Req, fastapi: Want) -> Case {
    case(SocketAddr::from(([0, 0, 0, 0], 0)), test, req, fastapi)
}

/// The table of one FastAPI test file `f`, each row sent to `app`; a
/// row's source is `f::test`.
fn file(app: SocketAddr, f: &str, rows: impl IntoIterator<Item = Case>) -> Vec<Case> {
    rows.into_iter()
        .map(|c| Case {
            app,
            source: format!("{f}::{}", c.source),
            ..c
        })
        .collect()
}

impl Case {
    /// Portcullis answers `ours` instead, for the reasons under `anchors`.
    fn differs(mut self, anchors: &'static [&'static str], ours: Want) -> Case {
        self.differs = anchors;
        self.ours = Some(ours);
        self
    }
    /// Bad Basic credentials: 401 `invalid_credentials` with our challenge.
    fn bad_basic(self) -> Case {
        self.differs(
            &["invalid-credentials", "basic-realm"],
            invalid_credentials(OUR_BASIC),
        )
    }
    /// A bad bearer token: 401 `invalid_credentials`, `invalid_token`.
    fn bad_token(self) -> Case {
        self.differs(
            &["invalid-credentials"],
            invalid_credentials(OUR_BAD_BEARER),
        )
    }
}

/// One case's outcome.
struct Verdict {
    source: String,
    differs: &'static [&'static str],
    /// Where the answer differs from FastAPI's (empty: identical).
    from_fastapi: Vec<String>,
    /// Where the answer differs from what the case expects of Portcullis
    /// (FastAPI's answer, or `ours` for a documented difference), with
    /// what the expectation leaves unchecked; empty when it holds.
    from_expected: Vec<String>,
    /// A replacement expectation, for the failure message.
    suggestion: Option<String>,
}

/// A group of cases, judged together at the end.
struct Suite {
    name: &'static str,
    verdicts: Vec<Verdict>,
}

fn doc_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/fastapi-compat.md")
}

/// The `{#anchor}` ids of the headings of docs/fastapi-compat.md.
fn doc_anchors() -> Vec<String> {
    let text = std::fs::read_to_string(doc_path()).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim_end();
            let at = l.rfind("{#")?;
            l.strip_suffix('}').map(|s| s[at + 2..].to_owned())
        })
        .collect()
}

impl Suite {
    fn new(name: &'static str) -> Suite {
        Suite {
            name,
            verdicts: Vec::new(),
        }
    }

    /// Runs a table of cases, in order (some are stateful: a rate limit).
    async fn run(&mut self, cases: impl IntoIterator<Item = Case>) {
        for c in cases {
            let got = send(c.app, &c.req).await;
            self.judge(c, &got);
        }
    }

    /// Records `c`'s verdict on the answer `got`.
    fn judge(&mut self, c: Case, got: &Resp) {
        let from_fastapi = c.fastapi.compare(got);
        let expected = c.ours.as_ref().unwrap_or(&c.fastapi);
        let mut from_expected = expected.compare(got);
        from_expected.extend(expected.unasserted(got));
        let at = format!("{} {}", c.req.method, c.req.target);
        let suggestion = (!from_expected.is_empty()).then(|| suggest(got, &c.fastapi));
        self.verdicts.push(Verdict {
            source: c.source,
            differs: c.differs,
            from_fastapi: prefixed(&at, from_fastapi),
            from_expected: prefixed(&at, from_expected),
            suggestion,
        });
    }

    /// A case judged without a request (a configuration, an OpenAPI
    /// document): `from_fastapi` and `from_expected` as in [`Verdict`].
    fn record(
        &mut self,
        source: &str,
        differs: &'static [&'static str],
        from_fastapi: Vec<String>,
        from_expected: Vec<String>,
    ) {
        self.verdicts.push(Verdict {
            source: source.to_owned(),
            differs,
            from_fastapi,
            from_expected,
            suggestion: None,
        });
    }

    /// A configuration FastAPI accepts and Portcullis refuses with
    /// `expected` (the error's text).
    fn refused<T, E: std::fmt::Display>(
        &mut self,
        source: &str,
        differs: &'static [&'static str],
        result: Result<T, E>,
        expected: &str,
    ) {
        let (from_fastapi, from_expected) = match result {
            Ok(_) => (
                Vec::new(),
                vec![format!("accepted (expected refused: {expected})")],
            ),
            Err(e) => {
                let e = e.to_string();
                let m = (e != expected).then(|| format!("refused: {e} (expected {expected})"));
                (vec![format!("refused: {e}")], m.into_iter().collect())
            }
        };
        self.record(source, differs, from_fastapi, from_expected);
    }

    /// Judges every case; panics listing each failure.
    fn finish(self) {
        let anchors = doc_anchors();
        let (mut matching, mut documented, mut not_provided, mut bugs) = (0, 0, 0, 0);
        let mut failures = Vec::new();
        for v in &self.verdicts {
            for a in v.differs {
                if !anchors.iter().any(|x| x == a) {
                    failures.push(format!(
                        "{}: #{a} is not a heading in docs/fastapi-compat.md",
                        v.source
                    ));
                }
            }
            let hint = v
                .suggestion
                .as_ref()
                .map_or(String::new(), |s| format!("\n    it answers: {s}"));
            if v.differs.is_empty() {
                if v.from_expected.is_empty() {
                    matching += 1;
                } else {
                    failures.push(format!(
                        "{}: differs from FastAPI with no documented reason: {}{hint}",
                        v.source,
                        v.from_expected.join("; ")
                    ));
                }
                continue;
            }
            if v.from_fastapi.is_empty() {
                failures.push(format!(
                    "{}: matches FastAPI now, but is marked as differing ({}): update docs/fastapi-compat.md and the case",
                    v.source,
                    v.differs.join(", ")
                ));
                continue;
            }
            if !v.from_expected.is_empty() {
                failures.push(format!(
                    "{}: [{}] not the documented answer: {}{hint}",
                    v.source,
                    v.differs.join(", "),
                    v.from_expected.join("; ")
                ));
                continue;
            }
            eprintln!(
                "  [{}] {} ~ {}",
                v.differs.join(", "),
                v.source,
                v.from_fastapi.join("; ")
            );
            if v.differs.iter().any(|a| a.starts_with("not-provided-")) {
                not_provided += 1;
            } else if v.differs.iter().any(|a| a.starts_with("bug-")) {
                bugs += 1;
            } else {
                documented += 1;
            }
        }
        eprintln!(
            "fastapi[{}]: {} cases: {matching} match FastAPI, {documented} documented differences, {not_provided} not provided, {bugs} known bugs",
            self.name,
            self.verdicts.len()
        );
        assert!(
            failures.is_empty(),
            "fastapi[{}]: {} failure(s):\n{}",
            self.name,
            failures.len(),
            failures.join("\n")
        );
    }
}

fn prefixed(at: &str, mut m: Vec<String>) -> Vec<String> {
    if !m.is_empty() {
        m.insert(0, at.to_owned());
    }
    m
}

// ---- apps ----------------------------------------------------------------

/// Serves `routes` under `pc`'s handle.
async fn app(pc: &Portcullis, routes: Router) -> SocketAddr {
    serve(routes.layer(pc.layer())).await
}

fn msg() -> Value {
    json!({"msg": "Create an account first"})
}

/// A handle reading API keys under FastAPI's test name `key`, accepting
/// [`KEY`] (owner `john`) wherever an API key is read.
async fn readers() -> Portcullis {
    let scopes = Scopes::parse("foo bar scope1 scope2 scope3 me items read write").unwrap();
    let key = StaticKey::new(Secret::new(KEY.to_owned()))
        .unwrap()
        .owner("john")
        .scopes(scopes);
    Portcullis::builder()
        .header_name("key")
        .unwrap()
        .query_name("key")
        .cookie_name("key")
        .static_key(key)
        .build()
        .await
        .unwrap()
}

/// Two apps answering `GET paths` with `echo` of the reader `T`: one
/// requiring it, and one taking `Option<T>` (`auto_error=False`) that
/// answers `msg()` without it.
async fn echo_apps<T>(
    pc: &Portcullis,
    paths: &[&'static str],
    echo: fn(T) -> Value,
) -> (SocketAddr, SocketAddr)
where
    T: FromRequestParts<()> + OptionalFromRequestParts<()> + Send + 'static,
{
    let (mut required, mut optional) = (Router::new(), Router::new());
    for p in paths {
        required = required.route(p, get(move |t: T| async move { Json(echo(t)) }));
        optional = optional.route(
            p,
            get(move |t: Option<T>| async move { Json(t.map_or_else(msg, echo)) }),
        );
    }
    (app(pc, required).await, app(pc, optional).await)
}

fn echo_key(k: &Secret<String>) -> Value {
    json!({"username": k.expose()})
}

fn echo_basic(c: &portcullis::schemes::HttpBasicCredentials) -> Value {
    json!({"username": c.username, "password": c.password.expose()})
}

fn echo_bearer(c: &portcullis::schemes::HttpAuthorizationCredentials) -> Value {
    json!({"scheme": c.scheme, "credentials": c.credentials.expose()})
}

// ---- readers: APIKey*, HTTPBasic, HTTPBearer, the OAuth2 bearers ----------

#[tokio::test]
async fn fastapi_readers() {
    let pc = readers().await;
    let mut s = Suite::new("readers");

    // APIKeyQuery / APIKeyHeader / APIKeyCookie(name="key"), required and
    // optional. (`*_description.py` sends the same requests.)
    let (query, query_opt) = echo_apps(&pc, &["/users/me"], |ApiKeyQuery(k)| echo_key(&k)).await;
    let (header, header_opt) = echo_apps(&pc, &["/users/me"], |ApiKeyHeader(k)| echo_key(&k)).await;
    let (cookie, cookie_opt) = echo_apps(&pc, &["/users/me"], |ApiKeyCookie(k)| echo_key(&k)).await;
    let secret = || ok(json!({"username": "secret"}));

    // Each file: the key sent, then none (401, or None when optional).
    let by_query = || Req::get("/users/me?key=secret");
    let by_header = || Req::get("/users/me").h("key", "secret");
    let by_cookie = || Req::get("/users/me").h("Cookie", "key=secret");
    for (f, app, with_key, no_key) in [
        ("query", query, by_query(), not_auth("APIKey")),
        ("query_optional", query_opt, by_query(), ok(msg())),
        ("header", header, by_header(), not_auth("APIKey")),
        ("header_optional", header_opt, by_header(), ok(msg())),
        ("cookie", cookie, by_cookie(), not_auth("APIKey")),
        ("cookie_optional", cookie_opt, by_cookie(), ok(msg())),
    ] {
        let f = format!("test_security_api_key_{f}.py");
        s.run(file(
            app,
            &f,
            [
                t("test_security_api_key", with_key, secret()),
                t(
                    "test_security_api_key_no_key",
                    Req::get("/users/me"),
                    no_key,
                ),
            ],
        ))
        .await;
    }
    s.run([case(
        query,
        "§1: the error body's media type",
        Req::get("/users/me"),
        not_auth("APIKey").header("content-type", Some("application/json")),
    )
    .differs(
        &["problem-json"],
        not_auth("APIKey").header("content-type", Some("application/problem+json")),
    )])
    .await;

    // Checklist 8 and 9: repeated and empty keys.
    let c = "checklist §10.8";
    s.run([
        case(
            query,
            format!("{c}: ?key=a&key=b, APIKeyQuery takes the last"),
            Req::get("/users/me?key=a&key=b"),
            ok(json!({"username": "b"})),
        )
        .differs(
            &["ambiguous-credentials"],
            problem(
                400,
                "ambiguous_credentials",
                "the API key query parameter was sent more than once",
            ),
        ),
        case(
            header,
            format!("{c}: two `key` headers, APIKeyHeader takes the first"),
            Req::get("/users/me").h("key", "a").h("key", "b"),
            ok(json!({"username": "a"})),
        )
        .differs(
            &["ambiguous-credentials"],
            problem(
                400,
                "ambiguous_credentials",
                "the API key header was sent more than once",
            ),
        ),
        case(
            cookie,
            format!("{c}: cookie key twice, APIKeyCookie takes the last"),
            Req::get("/users/me").h("Cookie", "key=a; key=b"),
            ok(json!({"username": "b"})),
        )
        .differs(
            &["ambiguous-credentials"],
            problem(
                400,
                "ambiguous_credentials",
                "the credential cookie was sent more than once",
            ),
        ),
    ])
    .await;
    let c = "checklist §10.9";
    s.run([
        case(
            query,
            format!("{c}: ?key= is missing"),
            Req::get("/users/me?key="),
            not_auth("APIKey"),
        ),
        case(
            header,
            format!("{c}: empty key header is missing"),
            Req::get("/users/me").h("key", ""),
            not_auth("APIKey"),
        ),
        case(
            cookie,
            format!("{c}: empty key cookie is missing"),
            Req::get("/users/me").h("Cookie", "key="),
            not_auth("APIKey"),
        ),
        case(
            query_opt,
            format!("{c}: ?key= is None under auto_error=False"),
            Req::get("/users/me?key="),
            ok(msg()),
        ),
    ])
    .await;

    // HTTPBasic(realm="simple"), HTTPBasic(auto_error=False), tutorial006.
    let (basic, basic_opt) = echo_apps(&pc, &["/users/me"], |HttpBasic(c)| echo_basic(&c)).await;
    let john = || ok(json!({"username": "john", "password": "secret"}));
    let realm = r#"Basic realm="simple""#;
    let no_colon = format!("Basic {}", b64("johnsecret"));
    // Each file: good credentials, none, not base64, no colon; `www` is
    // FastAPI's challenge.
    let no_credentials = |www: &str| {
        t(
            "test_security_http_basic_no_credentials",
            Req::get("/users/me"),
            not_auth(www),
        )
        .differs(&["basic-realm"], not_auth(OUR_BASIC))
    };
    for (f, app, www, no_credentials) in [
        (
            "test_security_http_basic_realm.py",
            basic,
            realm,
            no_credentials(realm),
        ),
        (
            "test_security_http_basic_optional.py",
            basic_opt,
            "Basic",
            t(
                "test_security_http_basic_no_credentials",
                Req::get("/users/me"),
                ok(msg()),
            ),
        ),
        (
            "test_tutorial/test_security/test_tutorial006.py",
            basic,
            "Basic",
            no_credentials("Basic"),
        ),
    ] {
        s.run(file(
            app,
            f,
            [
                t(
                    "test_security_http_basic",
                    Req::get("/users/me").basic("john", "secret"),
                    john(),
                ),
                no_credentials,
                t(
                    "test_security_http_basic_invalid_credentials",
                    Req::get("/users/me").auth("Basic notabase64token"),
                    not_auth(www),
                )
                .bad_basic(),
                t(
                    "test_security_http_basic_non_basic_credentials",
                    Req::get("/users/me").auth(&no_colon),
                    not_auth(www),
                )
                .bad_basic(),
            ],
        ))
        .await;
    }
    s.run([case(
        basic_opt,
        "test_security_http_basic_optional.py: Authorization with another scheme is None",
        Req::get("/users/me").auth("Bearer x"),
        ok(msg()),
    )])
    .await;

    // Checklist 4-7 and the Basic edge cases of §2.3.
    let c = "checklist §10";
    s.run([
        case(
            basic_opt,
            format!("{c}.4: HTTPBasic(auto_error=False) + `Basic ???` is 401, not None"),
            Req::get("/users/me").auth("Basic ???"),
            not_auth("Basic"),
        )
        .bad_basic(),
        case(
            basic,
            format!("{c}.5: base64 with trailing junk `!!` is accepted"),
            Req::get("/users/me").auth("Basic am9objpzZWNyZXQ=!!"),
            john(),
        )
        .differs(&["strict-basic"], invalid_credentials(OUR_BASIC)),
        case(
            basic,
            format!("{c}.6: a non-ASCII password is refused"),
            Req::get("/users/me").auth(&format!("Basic {}", b64("john:sécret"))),
            not_auth(realm),
        )
        .differs(
            &["strict-basic"],
            ok(json!({"password":"sécret","username":"john"})),
        ),
        case(
            basic,
            format!("{c}.7: the password keeps its colons"),
            Req::get("/users/me").basic("john", "se:cr:et"),
            ok(json!({"username": "john", "password": "se:cr:et"})),
        ),
        case(
            basic,
            "§2.3 HTTPBasic: an empty user name (`:pw`) is accepted",
            Req::get("/users/me").auth(&format!("Basic {}", b64(":pw"))),
            ok(json!({"username": "", "password": "pw"})),
        )
        .differs(&["strict-basic"], invalid_credentials(OUR_BASIC)),
        case(
            basic,
            "§2.3 HTTPBasic: missing padding is refused",
            Req::get("/users/me").auth("Basic am9objpzZWNyZXQ"),
            not_auth(realm),
        )
        .bad_basic(),
        case(
            basic,
            "§2.3 HTTPBasic: the scheme is case-insensitive (`basic`)",
            Req::get("/users/me").auth(&format!("basic {}", b64("john:secret"))),
            john(),
        ),
        case(
            basic,
            "§2.3 HTTPBasic: the scheme is case-insensitive (`BASIC`)",
            Req::get("/users/me").auth(&format!("BASIC {}", b64("john:secret"))),
            john(),
        ),
    ])
    .await;

    // HTTPBearer, required and optional.
    let (bearer, bearer_opt) =
        echo_apps(&pc, &["/users/me"], |HttpBearer(c)| echo_bearer(&c)).await;
    let foobar = || ok(json!({"scheme": "Bearer", "credentials": "foobar"}));
    // Each file: a token, none, another scheme (401, or None when
    // optional).
    for (f, app, refused) in [
        ("test_security_http_bearer.py", bearer, not_auth("Bearer")),
        (
            "test_security_http_bearer_optional.py",
            bearer_opt,
            ok(msg()),
        ),
    ] {
        s.run(file(
            app,
            f,
            [
                t(
                    "test_security_http_bearer",
                    Req::get("/users/me").auth("Bearer foobar"),
                    foobar(),
                ),
                t(
                    "test_security_http_bearer_no_credentials",
                    Req::get("/users/me"),
                    refused.clone(),
                ),
                t(
                    "test_security_http_bearer_incorrect_scheme_credentials",
                    Req::get("/users/me").auth("Basic notreally"),
                    refused,
                ),
            ],
        ))
        .await;
    }
    let c = "checklist §10";
    s.run([
        case(
            bearer,
            format!("{c}.1: `bearer abc` keeps the scheme's case"),
            Req::get("/users/me").auth("bearer abc"),
            ok(json!({"scheme": "bearer", "credentials": "abc"})),
        ),
        case(
            bearer,
            format!("{c}.2: HTTPBearer refuses `Bearer` with no token"),
            Req::get("/users/me").auth("Bearer"),
            not_auth("Bearer"),
        ),
        case(
            bearer,
            format!("{c}.3: a tab is not a separator (`Bearer\\tabc`)"),
            Req::get("/users/me").auth("Bearer\tabc"),
            not_auth("Bearer"),
        ),
        case(
            bearer,
            "§2.2: `Bearer  foobar ` is stripped",
            Req::get("/users/me").auth("Bearer  foobar "),
            foobar(),
        ),
    ])
    .await;

    // HTTPBase(scheme="Other") has no counterpart (no arbitrary-scheme
    // reader): its cases run against the nearest reader of Authorization,
    // HttpBearer, which reads only `Bearer`.
    let f = "test_security_http_base.py";
    let np: &'static [&'static str] = &["not-provided-http-base"];
    s.run([
        case(
            bearer,
            format!("{f}::test_security_http_base (on HttpBearer)"),
            Req::get("/users/me").auth("Other foobar"),
            ok(json!({"scheme": "Other", "credentials": "foobar"})),
        )
        .differs(np, not_auth("Bearer")),
        case(
            bearer,
            format!("{f}::test_security_http_base_with_whitespaces (on HttpBearer)"),
            Req::get("/users/me").auth("Other  foobar "),
            ok(json!({"scheme": "Other", "credentials": "foobar"})),
        )
        .differs(np, not_auth("Bearer")),
        case(
            bearer,
            format!("{f}::test_security_http_base_no_credentials (on HttpBearer)"),
            Req::get("/users/me"),
            not_auth("Other"),
        )
        .differs(np, not_auth("Bearer")),
        case(
            bearer_opt,
            "test_security_http_base_optional.py::test_security_http_base_no_credentials (on Option<HttpBearer>)",
            Req::get("/users/me"),
            ok(msg()),
        ),
        case(
            bearer,
            "checklist §10.11: HTTPBase(scheme=\"Other\") accepts `Bearer x` (on HttpBearer)",
            Req::get("/users/me").auth("Bearer x"),
            ok(json!({"scheme": "Bearer", "credentials": "x"})),
        ),
    ])
    .await;

    // HTTPDigest has no counterpart (no Digest reader): its cases run
    // against the nearest reader, HttpBasic, for which `Digest …` is
    // another scheme.
    let np: &'static [&'static str] = &["not-provided-http-digest"];
    let f = "test_security_http_digest.py";
    s.run(file(
        basic,
        f,
        [
            t(
                "test_security_http_digest (on HttpBasic)",
                Req::get("/users/me").auth("Digest foobar"),
                ok(json!({"scheme": "Digest", "credentials": "foobar"})),
            )
            .differs(np, not_auth(OUR_BASIC)),
            t(
                "test_security_http_digest_no_credentials (on HttpBasic)",
                Req::get("/users/me"),
                not_auth("Digest"),
            )
            .differs(np, not_auth(OUR_BASIC)),
            t(
                "test_security_http_digest_incorrect_scheme_credentials (on HttpBasic)",
                Req::get("/users/me").auth("Other invalidauthorization"),
                not_auth("Digest"),
            )
            .differs(np, not_auth(OUR_BASIC)),
        ],
    ))
    .await;
    let f = "test_security_http_digest_optional.py";
    s.run([
        case(
            basic_opt,
            format!("{f}::test_security_http_digest_no_credentials (on Option<HttpBasic>)"),
            Req::get("/users/me"),
            ok(msg()),
        ),
        case(
            basic_opt,
            format!(
                "{f}::test_security_http_digest_incorrect_scheme_credentials (on Option<HttpBasic>)"
            ),
            Req::get("/users/me").auth("Other invalidauthorization"),
            ok(msg()),
        ),
    ])
    .await;

    // OAuth2PasswordBearer: tutorial001, tutorial002, the optional file,
    // and the checklist's empty token.
    // FastAPI's TestClient follows the 307 from `/items` to `/items/`.
    let (items, items_opt) = echo_apps(
        &pc,
        &["/items", "/items/"],
        |OAuth2PasswordBearer(t)| json!({"token": t.expose()}),
    )
    .await;
    let t002 = app(
        &pc,
        Router::new().route(
            "/users/me",
            get(|OAuth2PasswordBearer(t): OAuth2PasswordBearer| async move {
                Json(json!({
                    "username": format!("{}fakedecoded", t.expose()),
                    "email": "john@example.com",
                    "full_name": "John Doe",
                    "disabled": null,
                }))
            }),
        ),
    )
    .await;
    let testtoken = || ok(json!({"token": "testtoken"}));
    let john_doe = json!({
        "username": "testtokenfakedecoded",
        "email": "john@example.com",
        "full_name": "John Doe",
        "disabled": null,
    });
    // Each file: no token (at `no_token_at`), a token, another scheme
    // (401, or None when optional).
    for (f, app, no_token_at, at, token, refused) in [
        (
            "test_tutorial/test_security/test_tutorial001.py",
            items,
            "/items",
            "/items/",
            testtoken(),
            not_auth("Bearer"),
        ),
        (
            "test_tutorial/test_security/test_tutorial002.py",
            t002,
            "/users/me",
            "/users/me",
            ok(john_doe),
            not_auth("Bearer"),
        ),
        (
            "test_security_oauth2_password_bearer_optional.py",
            items_opt,
            "/items/",
            "/items/",
            testtoken(),
            ok(msg()),
        ),
    ] {
        s.run(file(
            app,
            f,
            [
                t("test_no_token", Req::get(no_token_at), refused.clone()),
                t("test_token", Req::get(at).bearer("testtoken"), token),
                t(
                    "test_incorrect_token",
                    Req::get(at).auth("Notexistent testtoken"),
                    refused,
                ),
            ],
        ))
        .await;
    }
    let c = "checklist §10.2";
    s.run([
        case(
            items,
            format!("{c}: OAuth2PasswordBearer yields \"\" for `Bearer`"),
            Req::get("/items/").auth("Bearer"),
            testtoken().body(json!({"token": ""})),
        )
        .differs(&["empty-bearer-token"], not_auth("Bearer")),
        case(
            items,
            "checklist §10.3: OAuth2PasswordBearer and `Bearer\\tabc`",
            Req::get("/items/").auth("Bearer\tabc"),
            not_auth("Bearer"),
        ),
    ])
    .await;

    // OAuth2AuthorizationCodeBearer: its bearer cases, on OAuth2PasswordBearer.
    let f = "test_security_oauth2_authorization_code_bearer.py";
    s.run(file(
        items,
        f,
        [
            t("test_no_token", Req::get("/items"), not_auth("Bearer")),
            t(
                "test_incorrect_token",
                Req::get("/items").auth("Non-existent testtoken"),
                not_auth("Bearer"),
            ),
            t(
                "test_token",
                Req::get("/items").bearer("testtoken"),
                testtoken(),
            ),
            t(
                "test_token_with_whitespaces",
                Req::get("/items").auth("Bearer  testtoken "),
                testtoken(),
            ),
        ],
    ))
    .await;

    // OAuth2 (base class) and OpenIdConnect return the whole header; the
    // nearest reader is OAuth2PasswordBearer, which returns the token.
    let (me, me_opt) = echo_apps(
        &pc,
        &["/users/me"],
        |OAuth2PasswordBearer(t)| json!({"username": t.expose()}),
    )
    .await;
    // Each file: a bearer token, another scheme, no header; where
    // Portcullis answers another scheme, and no header (401, or None when
    // optional).
    let oauth2: &'static [&'static str] = &["not-provided-oauth2"];
    let oidc: &'static [&'static str] = &["not-provided-openid-connect"];
    for (f, np, app, other_header, no_header) in [
        (
            "test_security_oauth2.py",
            oauth2,
            me,
            not_auth("Bearer"),
            not_auth("Bearer"),
        ),
        (
            "test_security_openid_connect.py",
            oidc,
            me,
            not_auth("Bearer"),
            not_auth("Bearer"),
        ),
        (
            "test_security_oauth2_optional.py",
            oauth2,
            me_opt,
            ok(msg()),
            ok(msg()),
        ),
        (
            "test_security_openid_connect_optional.py",
            oidc,
            me_opt,
            ok(msg()),
            ok(msg()),
        ),
    ] {
        s.run(file(
            app,
            f,
            [
                t(
                    "test_security_oauth2",
                    Req::get("/users/me").auth("Bearer footokenbar"),
                    ok(json!({"username": "Bearer footokenbar"})),
                )
                .differs(np, ok(json!({"username":"footokenbar"}))),
                t(
                    "test_security_oauth2_password_other_header",
                    Req::get("/users/me").auth("Other footokenbar"),
                    ok(json!({"username": "Other footokenbar"})),
                )
                .differs(np, other_header),
                t(
                    "test_security_oauth2_password_bearer_no_header",
                    Req::get("/users/me"),
                    no_header,
                ),
            ],
        ))
        .await;
    }

    // how-to/authentication-error-status-code: the old 403, by answering
    // it from the Option form.
    let forbidden = app(
        &pc,
        Router::new().route(
            "/me",
            get(|c: Option<HttpBearer>| async move {
                match c {
                    Some(HttpBearer(c)) => Json(json!({"message": "You are authenticated", "token": c.credentials.expose()})).into_response(),
                    None => (StatusCode::FORBIDDEN, Json(json!({"detail": "Not authenticated"}))).into_response(),
                }
            }),
        ),
    )
    .await;
    let f = "test_tutorial/test_authentication_error_status_code/test_tutorial001.py";
    s.run(file(
        forbidden,
        f,
        [
            t(
                "test_get_me",
                Req::get("/me").bearer("secrettoken"),
                ok(json!({"message": "You are authenticated", "token": "secrettoken"})),
            ),
            t(
                "test_get_me_no_credentials",
                Req::get("/me"),
                err(403, "Not authenticated"),
            ),
        ],
    ))
    .await;

    // Two optional schemes, the user's dependency taking the first present
    // (§2.3): each reader reads only its own place, so this is FastAPI's.
    let either = app(
        &pc,
        Router::new().route(
            "/users/me",
            get(
                |k: Option<ApiKeyHeader>, b: Option<HttpBearer>| async move {
                    match (k, b) {
                        (Some(ApiKeyHeader(k)), _) => {
                            Json(json!({"via": "key", "value": k.expose()})).into_response()
                        }
                        (None, Some(HttpBearer(c))) => {
                            Json(json!({"via": "bearer", "value": c.credentials.expose()}))
                                .into_response()
                        }
                        (None, None) => portcullis::rejection::Rejection::not_authenticated(Some(
                            "APIKey, Bearer",
                        ))
                        .into_response(),
                    }
                },
            ),
        ),
    )
    .await;
    let c = "§2.3 auto_error=False with two schemes";
    s.run([
        case(
            either,
            format!("{c}: key and bearer, the first wins"),
            Req::get("/users/me").h("key", "k1").bearer("t1"),
            ok(json!({"via": "key", "value": "k1"})),
        ),
        case(
            either,
            format!("{c}: bearer only"),
            Req::get("/users/me").bearer("t1"),
            ok(json!({"via": "bearer", "value": "t1"})),
        ),
    ])
    .await;

    s.finish();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---- verified credentials, layers and SecurityScopes -----------------------

#[tokio::test]
async fn fastapi_layers_and_scopes() {
    let pc = readers().await;
    let mut s = Suite::new("layers");

    // test_top_level_security_scheme_in_openapi: dependencies=[Depends(HTTPBearer())].
    let top = app(
        &pc,
        Router::new().route(
            "/",
            get(|| async { Json(json!({"message": "Hello, World!"})) })
                .route_layer(pc.require([Scheme::Bearer])),
        ),
    )
    .await;
    let hello = || ok(json!({"message": "Hello, World!"}));
    let f = "test_top_level_security_scheme_in_openapi.py";
    s.run(file(
        top,
        f,
        [
            t("test_get_root", Req::get("/").bearer("token"), hello()).bad_token(),
            t(
                "test_get_root (with a key Portcullis accepts)",
                Req::get("/").bearer(KEY),
                hello(),
            ),
            t("test_get_root_no_token", Req::get("/"), not_auth("Bearer")),
        ],
    ))
    .await;

    // A credential in two places where the route accepts both.
    let both = app(
        &pc,
        Router::new().route(
            "/users/me",
            get(|who: portcullis::Authenticated| async move {
                Json(json!({"username": who.0.subject}))
            })
            .route_layer(pc.require([Scheme::ApiKeyHeader, Scheme::Bearer])),
        ),
    )
    .await;
    let c = "§2.3 auto_error=False with two schemes";
    s.run([
        case(
            both,
            format!("{c}: key and bearer on one protected route, the first wins"),
            Req::get("/users/me").h("key", KEY).bearer(KEY),
            ok(json!({"username": "john"})),
        )
        .differs(
            &["ambiguous-credentials"],
            problem(
                400,
                "ambiguous_credentials",
                "more than one credential was presented; send exactly one",
            ),
        ),
        case(
            both,
            format!("{c}: one of them"),
            Req::get("/users/me").bearer(KEY),
            ok(json!({"username": "john"})),
        ),
        case(
            both,
            format!("{c}: neither"),
            Req::get("/users/me"),
            not_auth("APIKey, Bearer"),
        ),
    ])
    .await;

    // test_security_scopes_dont_propagate: siblings do not see each
    // other's scopes.
    let scopes = app(
        &pc,
        Router::new().route(
            "/scopes",
            get(
                |a: Verified<ApiKeyHeader, Scope1>, b: Verified<ApiKeyHeader, Scope2>| async move {
                    Json(json!({
                        "dep1": a.security_scopes().scopes(),
                        "dep2": b.security_scopes().scopes(),
                    }))
                },
            )
            .route_layer(pc.require([]).scopes(["scope3"]).unwrap()),
        ),
    )
    .await;
    s.run([case(
        scopes,
        "test_security_scopes_dont_propagate.py::test_security_scopes_dont_propagate",
        Req::get("/scopes").h("key", KEY),
        ok(json!({"dep1": ["scope3", "scope1"], "dep2": ["scope3", "scope2"]})),
    )])
    .await;

    // test_dependency_security_overrides: Security(get_user, ["foo","bar"]).
    let user = app(
        &pc,
        Router::new().route(
            "/user",
            get(|u: Verified<ApiKeyHeader, FooBar>| async move {
                Json(json!({"user": u.subject, "scopes": u.security_scopes().scopes(), "data": [1, 2, 3]}))
            }),
        ),
    )
    .await;
    s.run([case(
        user,
        "test_dependency_security_overrides.py::test_normal",
        Req::get("/user").h("key", KEY),
        ok(json!({"user": "john", "scopes": ["foo", "bar"], "data": [1, 2, 3]})),
    )])
    .await;

    // test_security_scopes_sub_dependency / tutorial005: the scopes
    // get_current_user sees, outer first.
    let trail = app(
        &pc,
        Router::new()
            .route(
                "/users/me",
                get(|u: Verified<ApiKeyHeader, Me>| async move {
                    Json(json!({"scopes": u.security_scopes().scopes()}))
                }),
            )
            .route(
                "/users/me/items",
                get(
                    |u: Verified<ApiKeyHeader, Me>, s: SecurityScopes| async move {
                        Json(
                            json!({"scopes": u.security_scopes().scopes(), "layer": s.scope_str()}),
                        )
                    },
                )
                .route_layer(pc.require([]).scopes(["items"]).unwrap()),
            ),
    )
    .await;
    let f = "test_security_scopes_sub_dependency.py (§3.3)";
    s.run([
        case(
            trail,
            format!("{f}: Security(get_current_user, [\"me\"])"),
            Req::get("/users/me").h("key", KEY),
            ok(json!({"scopes": ["me"]})),
        ),
        case(
            trail,
            format!("{f}: under Security(..., [\"items\"])"),
            Req::get("/users/me/items").h("key", KEY),
            ok(json!({"scopes": ["items", "me"], "layer": "items"})),
        ),
    ])
    .await;

    // test_security_oauth2_authorization_code_bearer_scopes_openapi: scopes
    // from the router and the route, with the bearer read in each handler.
    let code = app(
        &pc,
        Router::new()
            .route(
                "/",
                get(|_: OAuth2PasswordBearer| async { Json(json!({"message": "Hello World"})) }),
            )
            .route(
                "/with-oauth2-scheme",
                get(|_: OAuth2PasswordBearer| async { Json(json!({"message": "Admin Access"})) })
                    .route_layer(pc.require([]).scopes(["read", "write"]).unwrap()),
            )
            .route(
                "/with-get-token",
                get(|_: OAuth2PasswordBearer| async { Json(json!({"message": "Admin Access"})) })
                    .route_layer(pc.require([]).scopes(["read", "write"]).unwrap()),
            )
            .merge(
                Router::new()
                    .route(
                        "/items/",
                        get(|OAuth2PasswordBearer(t): OAuth2PasswordBearer| async move {
                            Json(json!({"token": t.expose()}))
                        })
                        .merge(
                            post(|OAuth2PasswordBearer(t): OAuth2PasswordBearer| async move {
                                Json(json!({"token": t.expose()}))
                            })
                            .route_layer(pc.require([]).scopes(["read", "write"]).unwrap()),
                        ),
                    )
                    .route_layer(pc.require([]).scopes(["read"]).unwrap()),
            ),
    )
    .await;
    let f = "test_security_oauth2_authorization_code_bearer_scopes_openapi.py";
    let hello_world = || ok(json!({"message": "Hello World"}));
    let admin = || ok(json!({"message": "Admin Access"}));
    let echoed = || ok(json!({"token": "testtoken"}));
    // Each test sends the token `testtoken`.
    s.run(file(
        code,
        f,
        [
            ("test_root", Req::get("/"), hello_world()),
            (
                "test_read_with_oauth2_scheme",
                Req::get("/with-oauth2-scheme"),
                admin(),
            ),
            (
                "test_read_with_get_token",
                Req::get("/with-get-token"),
                admin(),
            ),
            ("test_read_token", Req::get("/items/"), echoed()),
            ("test_create_token", Req::post("/items/"), echoed()),
        ]
        .map(|(test, req, fastapi)| t(test, req.bearer("testtoken"), fastapi)),
    ))
    .await;

    s.finish();
}

// ---- the password flow: tutorials 003, 004, 005 and 007 ---------------------

/// FastAPI's tutorial users, as the tutorials' handlers return them.
fn profile(user: &str, with_hash: bool) -> Value {
    let (full, email, hash) = match user {
        "johndoe" => ("John Doe", "johndoe@example.com", "fakehashedsecret"),
        "alice" => ("Alice Wonderson", "alice@example.com", "fakehashedsecret2"),
        _ => (user, "", ""),
    };
    let mut v = json!({"username": user, "full_name": full, "email": email, "disabled": false});
    if with_hash && let Some(m) = v.as_object_mut() {
        m.insert("hashed_password".into(), hash.into());
    }
    v
}

/// FastAPI's 422 `detail` for form fields that are missing.
fn missing(fields: &[&str]) -> Value {
    fields
        .iter()
        .map(|f| json!({"type": "missing", "loc": ["body", f], "msg": "Field required", "input": null}))
        .collect()
}

/// A token from `/token` (the password grant).
async fn token(addr: SocketAddr, user: &str, password: &str, scope: Option<&str>) -> String {
    let mut f = vec![
        ("grant_type", "password"),
        ("username", user),
        ("password", password),
    ];
    if let Some(sc) = scope {
        f.push(("scope", sc));
    }
    let r = send(addr, &Req::form("/token", &f)).await;
    assert_eq!(r.status, 200, "token for {user}: {}", r.text());
    r.json()
        .and_then(|j| j["access_token"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no access_token in {}", r.text()))
}

/// The tokens of FastAPI's tests 004/005, signed with the tutorials'
/// HS256 secret: no `sub`, `sub` without a known user, `username:bob`.
const NO_SUB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJkYXRhIjoiZm9vIn0.9ynBhuYb4e6aW3oJr_K_TBgwcMTDpRToQIE25L57rOE";
const NO_USERNAME: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmb28ifQ.NnExK_dlNAYyzACrXtXDrcWOgGY2JuPbI4eDaHdfK5Y";
const INEXISTENT_USER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VybmFtZTpib2IifQ.HcfCW67Uda-0gz54ZWTqmtgJnZeNem0Q757eTa9EZuw";

#[tokio::test]
async fn fastapi_password_flow() {
    let dir = tempfile::tempdir().unwrap();
    let pc = Portcullis::builder()
        .store(&format!("sqlite://{}/fastapi.db", dir.path().display()))
        .users(true)
        .password_grant(true)
        .hash_parallelism(2)
        .token_url(
            "token",
            &[
                ("me", "Read information about the current user."),
                ("items", "Read items."),
            ],
        )
        .build()
        .await
        .unwrap();
    // johndoe's tutorial password, `secret`, is shorter than Portcullis
    // accepts for a new password, but a FastAPI app's bcrypt hash of it
    // imports as it is (and is checked as bcrypt until it can be
    // upgraded). The others are added as new users.
    let id = pc.identity().unwrap();
    let john = bcrypt::hash("secret", 4).unwrap();
    let me_items = Scopes::parse("me items").unwrap();
    id.import_users(
        vec![("johndoe".into(), john, me_items.clone(), false)],
        "fastapi-compat",
    )
    .await
    .unwrap();
    for (user, password, scopes) in [
        ("alice", "secretalice", me_items.clone()),
        ("bob", "secretbob", Scopes::parse("me").unwrap()),
        ("stanleyjobson", "swordfish", Scopes::empty()),
    ] {
        id.add_user(
            user,
            &Secret::new(password.to_owned()),
            scopes,
            "fastapi-compat",
        )
        .await
        .unwrap();
    }

    let t003 =
        app(
            &pc,
            Router::new()
                .route("/token", pc.endpoint(Endpoint::Token))
                .route(
                    "/users/me",
                    get(|u: Verified<OAuth2PasswordBearer>| async move {
                        Json(profile(&u.subject, true))
                    }),
                ),
        )
        .await;
    let me4 =
        || get(|u: Verified<OAuth2PasswordBearer>| async move { Json(profile(&u.subject, false)) });
    let t004 = app(
        &pc,
        Router::new()
            .route("/token", pc.endpoint(Endpoint::Token))
            .route("/users/me", me4())
            .route("/users/me/", me4())
            .route(
                "/users/me/items/",
                get(|u: Verified<OAuth2PasswordBearer>| async move {
                    Json(json!([{"item_id": "Foo", "owner": u.subject}]))
                }),
            ),
    )
    .await;
    let me5 = || {
        get(|u: Verified<OAuth2PasswordBearer, Me>| async move { Json(profile(&u.subject, false)) })
    };
    let t005 = app(
        &pc,
        Router::new()
            .route("/token", pc.endpoint(Endpoint::Token))
            .route("/users/me", me5())
            .route("/users/me/", me5())
            .route(
                "/users/me/items/",
                get(|u: Verified<OAuth2PasswordBearer, Me>| async move {
                    Json(json!([{"item_id": "Foo", "owner": u.subject}]))
                })
                .route_layer(pc.require([]).scopes(["items"]).unwrap()),
            )
            .route(
                "/status/",
                get(|_: Verified<OAuth2PasswordBearer>| async { Json(json!({"status": "ok"})) }),
            ),
    )
    .await;
    let t007 = app(
        &pc,
        Router::new().route(
            "/users/me",
            get(|u: Verified<HttpBasic>| async move { Json(json!({"username": u.subject})) }),
        ),
    )
    .await;

    // Tokens: johndoe's with each scope set, and alice's before she is
    // disabled (FastAPI's alice is disabled from the start, and its login
    // still issues her a token).
    let john_all = token(t005, "johndoe", "secret", None).await;
    let john_me = token(t005, "johndoe", "secret", Some("me")).await;
    let john_items = token(t005, "johndoe", "secret", Some("items")).await;
    let john_both = token(t005, "johndoe", "secret", Some("me items")).await;
    let alice = token(t005, "alice", "secretalice", Some("me")).await;
    id.set_user_disabled("alice", true, "fastapi-compat")
        .await
        .unwrap();

    let mut s = Suite::new("password flow");
    let login = |user: &str, pw: &str| Req::form("/token", &[("username", user), ("password", pw)]);
    let login_gt = |user: &str, pw: &str| {
        Req::form(
            "/token",
            &[
                ("grant_type", "password"),
                ("username", user),
                ("password", pw),
            ],
        )
    };
    let incorrect = "Incorrect username or password";
    // What FastAPI's tests check of a token answer.
    let bearer_token = || {
        status(200)
            .field("/token_type", json!("bearer"))
            .present("/access_token")
    };
    // Ours (#token-format): a JWT, its lifetime, the granted scopes, a
    // refresh token, and no caching.
    let our_token = |scope: &str| {
        bearer_token()
            .field("/scope", json!(scope))
            .field("/expires_in", json!(1800))
            .present("/refresh_token")
            .header("cache-control", Some("no-store"))
    };
    let john4 = || ok(profile("johndoe", false));
    let invalid = "Could not validate credentials";

    // Rows the tutorials share. A wrong password or user name (with
    // grant_type added): FastAPI answers `fastapi`, ours is the token
    // endpoint's refusal.
    let wrong_logins = |fastapi: Want| {
        [
            (
                "test_login_incorrect_password",
                login_gt("johndoe", "incorrect"),
            ),
            ("test_login_incorrect_username", login_gt("foo", "secret")),
        ]
        .map(|(test, req)| {
            t(&format!("{test} (grant_type added)"), req, fastapi.clone())
                .differs(&["token-endpoint-errors"], refused_login())
        })
        .to_vec()
    };
    let no_token = || {
        vec![t(
            "test_no_token",
            Req::get("/users/me"),
            not_auth("Bearer"),
        )]
    };
    let other_scheme = || {
        vec![t(
            "test_incorrect_token_type",
            Req::get("/users/me").auth("Notexistent testtoken"),
            not_auth("Bearer"),
        )]
    };
    // Tokens naming no known user: 401 with challenge `www`.
    let no_user_tokens = |www: &str, inexistent: &str| {
        [
            ("test_token_no_sub", NO_SUB),
            ("test_token_no_username", NO_USERNAME),
            (inexistent, INEXISTENT_USER),
        ]
        .map(|(test, token)| {
            t(
                test,
                Req::get("/users/me").bearer(token),
                err(401, invalid).www(www),
            )
            .bad_token()
        })
        .to_vec()
    };
    // Disabled alice: she logs in with `login`, then uses her token.
    let inactive_alice = |login: Req| {
        vec![
            t(
                "test_token_inactive_user: alice logs in",
                login,
                bearer_token(),
            )
            .differs(&["disabled-users"], refused_login()),
            t(
                "test_token_inactive_user: alice's token",
                Req::get("/users/me").bearer(&alice),
                err(400, "Inactive user"),
            )
            .differs(&["disabled-users"], invalid_credentials(OUR_BAD_BEARER)),
        ]
    };

    let f = "test_tutorial/test_security/test_tutorial003.py";
    s.run(file(
        t003,
        f,
        [
            vec![
                t(
                    "test_login",
                    login("johndoe", "secret"),
                    ok(json!({"access_token": "johndoe", "token_type": "bearer"})),
                )
                .differs(
                    &["token-grant-type"],
                    oauth_error("invalid_request", "grant_type is required"),
                ),
                t(
                    "test_login (grant_type=password added)",
                    login_gt("johndoe", "secret"),
                    ok(json!({"access_token": "johndoe", "token_type": "bearer"})),
                )
                .differs(&["token-format"], our_token("items me")),
            ],
            wrong_logins(err(400, incorrect)),
            no_token(),
            vec![
                t(
                    "test_token (johndoe's token)",
                    Req::get("/users/me").bearer(&john_all),
                    ok(profile("johndoe", true)),
                ),
                t(
                    "test_incorrect_token",
                    Req::get("/users/me").bearer("nonexistent"),
                    not_auth("Bearer"),
                )
                .bad_token(),
            ],
            other_scheme(),
            vec![
                t(
                    "test_inactive_user (alice's token)",
                    Req::get("/users/me").bearer(&alice),
                    err(400, "Inactive user"),
                )
                .differs(&["disabled-users"], invalid_credentials(OUR_BAD_BEARER)),
            ],
        ]
        .concat(),
    ))
    .await;

    let f = "test_tutorial/test_security/test_tutorial004.py";
    s.run(file(
        t004,
        f,
        [
            vec![t(
                "test_login (grant_type added)",
                login_gt("johndoe", "secret"),
                bearer_token(),
            )],
            wrong_logins(err(401, incorrect).www("Bearer")),
            no_token(),
            vec![
                t(
                    "test_token",
                    Req::get("/users/me").bearer(&john_all),
                    john4(),
                ),
                t(
                    "test_incorrect_token",
                    Req::get("/users/me").bearer("nonexistent"),
                    err(401, invalid).www("Bearer"),
                )
                .bad_token(),
            ],
            other_scheme(),
            no_user_tokens("Bearer", "test_token_nonexistent_user"),
            inactive_alice(login_gt("alice", "secretalice")),
            vec![t(
                "test_read_items",
                Req::get("/users/me/items/").bearer(&john_all),
                ok(json!([{"item_id": "Foo", "owner": "johndoe"}])),
            )],
        ]
        .concat(),
    ))
    .await;

    let f = "test_tutorial/test_security/test_tutorial005.py";
    let scope_me = r#"Bearer scope="me""#;
    s.run(file(
        t005,
        f,
        [
            vec![t(
                "test_login (grant_type added)",
                login_gt("johndoe", "secret"),
                bearer_token(),
            )],
            wrong_logins(err(400, incorrect)),
            no_token(),
            vec![
                t(
                    "test_token (scope=me)",
                    Req::get("/users/me").bearer(&john_me),
                    john4(),
                ),
                t(
                    "test_incorrect_token",
                    Req::get("/users/me").bearer("nonexistent"),
                    err(401, invalid).www(scope_me),
                )
                .bad_token(),
            ],
            other_scheme(),
            no_user_tokens(scope_me, "test_token_inexistent_user"),
            vec![
                t(
                    "test_token_no_scope (token asked with no scope)",
                    Req::get("/users/me").bearer(&john_all),
                    err(401, "Not enough permissions").www(scope_me),
                )
                .differs(&["token-scopes"], john4()),
                t(
                    "test_token_no_scope (a token without `me`)",
                    Req::get("/users/me").bearer(&john_items),
                    err(401, "Not enough permissions").www(scope_me),
                )
                .differs(
                    &["insufficient-scope"],
                    problem(403, "insufficient_scope", "Not enough permissions")
                        .www("Bearer error=\"insufficient_scope\", scope=\"me\""),
                ),
            ],
            inactive_alice(Req::form(
                "/token",
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "secretalice"),
                    ("scope", "me"),
                ],
            )),
            vec![
                t(
                    "test_read_items (scope=\"me items\")",
                    Req::get("/users/me/items/").bearer(&john_both),
                    ok(json!([{"item_id": "Foo", "owner": "johndoe"}])),
                ),
                t(
                    "test_read_system_status",
                    Req::get("/status/").bearer(&john_all),
                    ok(json!({"status": "ok"})),
                ),
                t(
                    "test_read_system_status_no_token",
                    Req::get("/status/"),
                    not_auth("Bearer"),
                ),
            ],
        ]
        .concat(),
    ))
    .await;
    s.run([case(
        t005,
        format!("{f} (§3.3): /users/me/items/ without `items`"),
        Req::get("/users/me/items/").bearer(&john_me),
        err(401, "Not enough permissions").www(r#"Bearer scope="items me""#),
    )
    .differs(
        &["insufficient-scope"],
        problem(403, "insufficient_scope", "Not enough permissions")
            .www("Bearer error=\"insufficient_scope\", scope=\"items me\""),
    )])
    .await;
    // Derived: tutorial005 puts whatever scopes were asked for in the token.
    let bob = token(t005, "bob", "secretbob", Some("me items")).await;
    s.run([case(
        t005,
        format!("{f} (derived): bob, allowed only `me`, asks for `me items`"),
        Req::get("/users/me/items/").bearer(&bob),
        ok(json!([{"item_id": "Foo", "owner": "bob"}])),
    )
    .differs(
        &["token-scopes"],
        problem(403, "insufficient_scope", "Not enough permissions")
            .www("Bearer error=\"insufficient_scope\", scope=\"items me\""),
    )])
    .await;

    // test_security_oauth2.py's /login takes OAuth2PasswordRequestFormStrict;
    // Portcullis' token endpoint reads the form itself.
    let f = "test_security_oauth2.py";
    let np: &'static [&'static str] = &["not-provided-password-form"];
    s.run(file(
        t005,
        f,
        [
            t(
                "test_strict_login_no_data",
                Req::form("/token", &[]),
                status(422)
                    .body(json!({"detail": missing(&["grant_type", "username", "password"])})),
            )
            .differs(np, oauth_error("invalid_request", "grant_type is required")),
            t(
                "test_strict_login_no_grant_type",
                login("johndoe", "secret"),
                status(422).body(json!({"detail": missing(&["grant_type"])})),
            )
            .differs(np, oauth_error("invalid_request", "grant_type is required")),
        ],
    ))
    .await;
    s.run(["incorrect", "passwordblah", "blahpassword"].map(|gt| {
        case(
            t005,
            format!("{f}::test_strict_login_incorrect_grant_type[{gt}]"),
            Req::form(
                "/token",
                &[
                    ("grant_type", gt),
                    ("username", "johndoe"),
                    ("password", "secret"),
                ],
            ),
            status(422).body(json!({"detail": [{
                "type": "string_pattern_mismatch",
                "loc": ["body", "grant_type"],
                "msg": "String should match pattern '^password$'",
                "input": gt,
                "ctx": {"pattern": "^password$"},
            }]})),
        )
        .differs(
            np,
            oauth_error("unsupported_grant_type", "this grant type is not enabled"),
        )
    }))
    .await;
    s.run(file(
        t005,
        f,
        [t(
            "test_strict_login_correct_grant_type",
            login_gt("johndoe", "secret"),
            ok(json!({
                "grant_type": "password",
                "username": "johndoe",
                "password": "secret",
                "scopes": [],
                "client_id": null,
                "client_secret": null,
            })),
        )
        .differs(np, our_token("items me"))],
    ))
    .await;

    let f = "test_tutorial/test_security/test_tutorial007.py";
    let incorrect_basic = || err(401, incorrect).www("Basic");
    s.run(file(
        t007,
        f,
        [
            t(
                "test_security_http_basic",
                Req::get("/users/me").basic("stanleyjobson", "swordfish"),
                ok(json!({"username": "stanleyjobson"})),
            ),
            t(
                "test_security_http_basic_no_credentials",
                Req::get("/users/me"),
                not_auth("Basic"),
            )
            .differs(&["basic-realm"], not_auth(OUR_BASIC)),
            t(
                "test_security_http_basic_invalid_credentials",
                Req::get("/users/me").auth("Basic notabase64token"),
                not_auth("Basic"),
            )
            .bad_basic(),
            t(
                "test_security_http_basic_non_basic_credentials",
                Req::get("/users/me").auth(&format!("Basic {}", b64("johnsecret"))),
                not_auth("Basic"),
            )
            .bad_basic(),
            t(
                "test_security_http_basic_invalid_username",
                Req::get("/users/me").basic("alice", "swordfish"),
                incorrect_basic(),
            )
            .bad_basic(),
            t(
                "test_security_http_basic_invalid_password",
                Req::get("/users/me").basic("stanleyjobson", "wrongpassword"),
                incorrect_basic(),
            )
            .bad_basic(),
        ],
    ))
    .await;

    s.finish();
}

// ---- OpenAPI ---------------------------------------------------------------

/// A document whose operations (GET) carry these requirements.
fn openapi(ops: &[(&str, Vec<SecurityRequirement>)]) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (path, reqs) in ops {
        let mut op = OperationBuilder::new();
        for r in reqs {
            op = op.security(r.clone());
        }
        paths = paths.path(*path, PathItem::new(HttpMethod::Get, op.build()));
    }
    OpenApiBuilder::new().paths(paths).build()
}

fn req(name: &str, scopes: &[&str]) -> SecurityRequirement {
    SecurityRequirement::new(name, scopes.iter().copied())
}

/// One OpenAPI case: the operations (GET) and their requirements,
/// documented with `pc`; FastAPI's `components.securitySchemes` (`None`:
/// no such key); where Portcullis differs, what it writes instead
/// (`Err`: the text of `document()`'s refusal).
struct DocCase<'a> {
    source: String,
    pc: &'a Portcullis,
    ops: Vec<(&'static str, Vec<SecurityRequirement>)>,
    fastapi: Option<Value>,
    differs: &'static [&'static str],
    ours: Option<Result<Option<Value>, &'static str>>,
}

fn doc_case<'a>(
    source: impl Into<String>,
    pc: &'a Portcullis,
    ops: Vec<(&'static str, Vec<SecurityRequirement>)>,
    fastapi: Option<Value>,
) -> DocCase<'a> {
    DocCase {
        source: source.into(),
        pc,
        ops,
        fastapi,
        differs: &[],
        ours: None,
    }
}

impl DocCase<'_> {
    fn differs(
        mut self,
        anchors: &'static [&'static str],
        ours: Result<Option<Value>, &'static str>,
    ) -> Self {
        self.differs = anchors;
        self.ours = Some(ours);
        self
    }
}

impl Suite {
    /// Runs a table of OpenAPI cases: each operation's `security` must be
    /// the requirements given, and `securitySchemes` FastAPI's (or ours).
    fn docs(&mut self, cases: Vec<DocCase<'_>>) {
        for c in cases {
            let mut doc = openapi(&c.ops);
            let got =
                c.pc.document(&mut doc)
                    .map(|()| serde_json::to_value(&doc).unwrap())
                    .map_err(|e| e.to_string());
            let schemes = |want: &Result<Option<Value>, &str>| -> Vec<String> {
                let ours = got
                    .as_ref()
                    .map(|v| v.pointer("/components/securitySchemes").cloned())
                    .map_err(Clone::clone);
                let want = want.clone().map_err(str::to_owned);
                if ours == want {
                    return Vec::new();
                }
                let show = |r: &Result<Option<Value>, String>| match r {
                    Ok(None) => "securitySchemes absent".to_owned(),
                    Ok(Some(v)) => format!("securitySchemes {v}"),
                    Err(e) => format!("document() refused it: {e}"),
                };
                vec![format!("{} (expected {})", show(&ours), show(&want))]
            };
            let mut security = Vec::new();
            if let Ok(v) = &got {
                for (path, reqs) in &c.ops {
                    let want = if reqs.is_empty() {
                        Value::Null
                    } else {
                        serde_json::to_value(reqs).unwrap()
                    };
                    let ours = v
                        .pointer(&format!("/paths/{}/get/security", path.replace('/', "~1")))
                        .cloned()
                        .unwrap_or(Value::Null);
                    if ours != want {
                        security.push(format!("{path} security {ours} (expected {want})"));
                    }
                }
            }
            let mut from_fastapi = schemes(&Ok(c.fastapi.clone()));
            from_fastapi.extend(security.iter().cloned());
            let mut from_expected = match &c.ours {
                Some(ours) => schemes(ours),
                None => schemes(&Ok(c.fastapi.clone())),
            };
            from_expected.extend(security);
            self.record(&c.source, c.differs, from_fastapi, from_expected);
        }
    }
}

#[tokio::test]
async fn fastapi_openapi() {
    let mut s = Suite::new("openapi");
    let build = |b: portcullis::service::Builder| async move { b.build().await.unwrap() };
    let named = || {
        Portcullis::builder()
            .header_name("key")
            .unwrap()
            .query_name("key")
            .cookie_name("key")
    };
    let plain = build(named()).await;
    let described = build(
        named()
            .describe(Scheme::ApiKeyHeader, "An API Key Header")
            .describe(Scheme::ApiKeyQuery, "API Key Query")
            .describe(Scheme::ApiKeyCookie, "An API Cookie Key")
            .describe(Scheme::Basic, "HTTPBasic scheme")
            .describe(Scheme::Bearer, "HTTP Bearer token scheme"),
    )
    .await;
    let token = build(Portcullis::builder().token_url("token", &[])).await;
    let token_slash = build(
        Portcullis::builder()
            .token_url("/token", &[])
            .describe(Scheme::Bearer, "OAuth2PasswordBearer security scheme"),
    )
    .await;
    let t005 = build(Portcullis::builder().token_url(
        "token",
        &[
            ("me", "Read information about the current user."),
            ("items", "Read items."),
        ],
    ))
    .await;

    let me = |name: &str| vec![("/users/me", vec![req(name, &[])])];

    let api_key = |place: &str| json!({"type": "apiKey", "name": "key", "in": place});
    let with = |mut v: Value, d: &str| {
        v["description"] = json!(d);
        v
    };
    // Each reader, plain and with a description.
    s.docs(
        [
            ("query", "APIKeyQuery", "API Key Query"),
            ("header", "APIKeyHeader", "An API Key Header"),
            ("cookie", "APIKeyCookie", "An API Cookie Key"),
        ]
        .into_iter()
        .flat_map(|(place, scheme, description)| {
            [
                doc_case(
                    format!("test_security_api_key_{place}.py::test_openapi_schema"),
                    &plain,
                    me(scheme),
                    Some(json!({scheme: api_key(place)})),
                ),
                doc_case(
                    format!("test_security_api_key_{place}_description.py::test_openapi_schema"),
                    &described,
                    me(scheme),
                    Some(json!({scheme: with(api_key(place), description)})),
                ),
            ]
        })
        .collect(),
    );
    let basic = json!({"type": "http", "scheme": "basic"});
    s.docs(vec![
        doc_case(
            "test_security_http_basic_realm.py::test_openapi_schema (realm not emitted)",
            &plain,
            me("HTTPBasic"),
            Some(json!({"HTTPBasic": basic})),
        ),
        doc_case(
            "test_security_http_basic_realm_description.py::test_openapi_schema",
            &described,
            me("HTTPBasic"),
            Some(json!({"HTTPBasic": with(basic.clone(), "HTTPBasic scheme")})),
        ),
        doc_case(
            "test_tutorial/test_security/test_tutorial007.py::test_openapi_schema",
            &plain,
            me("HTTPBasic"),
            Some(json!({"HTTPBasic": basic})),
        ),
    ]);
    let bearer = json!({"type": "http", "scheme": "bearer"});
    let status_code = "test_tutorial/test_authentication_error_status_code/test_tutorial001.py";
    s.docs(vec![
        doc_case(
            "test_security_http_bearer.py::test_openapi_schema",
            &plain,
            me("HTTPBearer"),
            Some(json!({"HTTPBearer": bearer})),
        ),
        doc_case(
            "test_security_http_bearer_description.py::test_openapi_schema",
            &described,
            me("HTTPBearer"),
            Some(json!({"HTTPBearer": with(bearer.clone(), "HTTP Bearer token scheme")})),
        ),
        doc_case(
            "test_top_level_security_scheme_in_openapi.py::test_openapi_schema",
            &plain,
            vec![("/", vec![req("HTTPBearer", &[])])],
            Some(json!({"HTTPBearer": bearer})),
        ),
        doc_case(
            format!("{status_code} (HTTPBearer403 under its class name)"),
            &plain,
            me("HTTPBearer"),
            Some(json!({"HTTPBearer403": bearer})),
        )
        .differs(
            &["not-provided-error-override"],
            Ok(Some(json!({"HTTPBearer": bearer}))),
        ),
    ]);
    let password = |url: &str, scopes: Value| json!({"type": "oauth2", "flows": {"password": {"scopes": scopes, "tokenUrl": url}}});
    let optional_bearer = with(
        password("/token", json!({})),
        "OAuth2PasswordBearer security scheme",
    );
    let t005_scopes = json!({
        "me": "Read information about the current user.",
        "items": "Read items.",
    });
    s.docs(vec![
        doc_case(
            "test_tutorial/test_security/test_tutorial003.py::test_openapi_schema",
            &token,
            me("OAuth2PasswordBearer"),
            Some(json!({"OAuth2PasswordBearer": password("token", json!({}))})),
        ),
        doc_case(
            "test_security_oauth2_password_bearer_optional.py::test_openapi_schema",
            &token_slash,
            vec![("/items/", vec![req("OAuth2PasswordBearer", &[])])],
            Some(json!({"OAuth2PasswordBearer": optional_bearer})),
        ),
        doc_case(
            "test_tutorial/test_security/test_tutorial005.py::test_openapi_schema",
            &t005,
            vec![
                ("/users/me/", vec![req("OAuth2PasswordBearer", &["me"])]),
                (
                    "/users/me/items/",
                    vec![req("OAuth2PasswordBearer", &["items", "me"])],
                ),
                ("/status/", vec![req("OAuth2PasswordBearer", &[])]),
            ],
            Some(json!({"OAuth2PasswordBearer": password("token", t005_scopes)})),
        ),
        doc_case(
            "§2.3 two optional schemes: separate requirement objects (OR)",
            &plain,
            vec![(
                "/users/me",
                vec![req("APIKeyHeader", &[]), req("HTTPBearer", &[])],
            )],
            Some(json!({"APIKeyHeader": api_key("header"), "HTTPBearer": bearer})),
        ),
        doc_case(
            "§4: no route uses a scheme, no securitySchemes key",
            &plain,
            vec![("/", vec![])],
            None,
        ),
    ]);

    // Scheme objects of classes Portcullis does not provide: document()
    // refuses their names.
    let oauth2 = json!({"type": "oauth2", "flows": {"password": {
        "tokenUrl": "token",
        "scopes": {"read:users": "Read the users", "write:users": "Create users"},
    }}});
    let code_flow = json!({"type": "oauth2", "flows": {"authorizationCode": {
        "authorizationUrl": "authorize",
        "tokenUrl": "token",
        "scopes": {},
    }}});
    let oidc = json!({"type": "openIdConnect", "openIdConnectUrl": "/openid"});
    s.docs(vec![
        doc_case(
            "test_security_http_base.py::test_openapi_schema",
            &plain,
            me("HTTPBase"),
            Some(json!({"HTTPBase": {"type": "http", "scheme": "Other"}})),
        )
        .differs(
            &["not-provided-http-base"],
            Err(r#"GET /users/me: unknown security scheme "HTTPBase""#),
        ),
        doc_case(
            "test_security_http_digest.py::test_openapi_schema",
            &plain,
            me("HTTPDigest"),
            Some(json!({"HTTPDigest": {"type": "http", "scheme": "digest"}})),
        )
        .differs(
            &["not-provided-http-digest"],
            Err(r#"GET /users/me: unknown security scheme "HTTPDigest""#),
        ),
        doc_case(
            "test_security_oauth2.py::test_openapi_schema",
            &plain,
            me("OAuth2"),
            Some(json!({"OAuth2": oauth2})),
        )
        .differs(
            &["not-provided-oauth2"],
            Err(r#"GET /users/me: unknown security scheme "OAuth2""#),
        ),
        doc_case(
            "test_security_oauth2_authorization_code_bearer.py::test_openapi_schema",
            &plain,
            vec![("/items/", vec![req("OAuth2AuthorizationCodeBearer", &[])])],
            Some(json!({"OAuth2AuthorizationCodeBearer": code_flow})),
        )
        .differs(
            &["not-provided-authorization-code"],
            Err(r#"GET /items/: unknown security scheme "OAuth2AuthorizationCodeBearer""#),
        ),
        doc_case(
            "test_security_openid_connect.py::test_openapi_schema",
            &plain,
            me("OpenIdConnect"),
            Some(json!({"OpenIdConnect": oidc})),
        )
        .differs(
            &["not-provided-openid-connect"],
            Err(r#"GET /users/me: unknown security scheme "OpenIdConnect""#),
        ),
    ]);

    s.finish();
}

// ---- CORS, trusted hosts, HTTPS redirects, rate limits ---------------------

fn hello() -> Value {
    json!({"message": "Hello World"})
}

/// An app answering `GET /` with `hello()` behind `edge`.
async fn edge_app(pc: &Portcullis, edge: portcullis::edge::EdgeLayer) -> SocketAddr {
    app(
        pc,
        Router::new()
            .route("/", get(|| async { Json(hello()) }))
            .route("/a", get(|| async { Json(hello()) }))
            // Starlette's answer for a method no route takes.
            .method_not_allowed_fallback(|| async {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    Json(json!({"detail": "Method Not Allowed"})),
                )
            })
            .layer(edge),
    )
    .await
}

#[tokio::test]
async fn fastapi_edge() {
    let pc = Portcullis::builder()
        .trusted_proxies(
            vec!["127.0.0.1/32".parse::<Cidr>().unwrap()],
            ForwardedHeader::XForwardedFor,
        )
        .build()
        .await
        .unwrap();
    let mut s = Suite::new("edge");

    // docs_src/cors/tutorial001: origins, credentials, methods "*", headers "*".
    let origins: Vec<String> = [
        "http://localhost.tiangolo.com",
        "https://localhost.tiangolo.com",
        "http://localhost",
        "http://localhost:8080",
    ]
    .map(String::from)
    .to_vec();
    let tutorial = CorsConfig {
        allow_origins: origins.clone(),
        allow_credentials: true,
        allow_methods: vec!["*".into()],
        allow_headers: vec!["*".into()],
        ..CorsConfig::default()
    };
    let f = "test_tutorial/test_cors/test_tutorial001.py";
    s.refused(
        &format!("{f}: the tutorial's configuration is accepted"),
        &["cors-exact-origins"],
        pc.edge().cors(&tutorial),
        r#"allow_headers[0]: `*` with allow_credentials = true reflects any requested header on credentialed requests; list the headers"#,
    );
    let listed = CorsConfig {
        allow_headers: vec!["X-Example".into()],
        ..tutorial.clone()
    };
    let cors = edge_app(&pc, pc.edge().cors(&listed).unwrap()).await;
    let origin = "https://localhost.tiangolo.com";
    // Starlette's answer to the tutorial's preflight, but for the allowed
    // headers.
    let tutorial_preflight = || {
        status(200)
            .detail("OK")
            .header("access-control-allow-origin", Some(origin))
            .header("access-control-allow-credentials", Some("true"))
            .header(
                "access-control-allow-methods",
                Some("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
            )
            .header("access-control-max-age", Some("600"))
    };
    let preflight = Req::options("/")
        .h("Origin", origin)
        .h("Access-Control-Request-Method", "GET")
        .h("Access-Control-Request-Headers", "X-Example");
    s.run(file(
        cors,
        f,
        [
            t(
                "test_cors preflight (headers listed)",
                preflight,
                tutorial_preflight().header("access-control-allow-headers", Some("X-Example")),
            )
            .differs(
                &["cors-exact-origins"],
                tutorial_preflight()
                    .header(
                        "access-control-allow-headers",
                        Some("Accept, Accept-Language, Content-Language, Content-Type, X-Example"),
                    )
                    .header(
                        "vary",
                        Some(
                            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                        ),
                    ),
            ),
            t(
                "test_cors simple request",
                Req::get("/").h("Origin", origin),
                ok(hello())
                    .header("access-control-allow-origin", Some(origin))
                    .header("access-control-allow-credentials", Some("true"))
                    .header("vary", Some("Origin")),
            ),
            t(
                "test_cors no Origin",
                Req::get("/"),
                ok(hello()).header("access-control-allow-origin", None),
            ),
        ],
    ))
    .await;

    // Checklist 13-14.
    let any = CorsConfig {
        allow_origins: vec!["*".into()],
        allow_methods: vec!["*".into()],
        allow_headers: vec!["X-Example".into()],
        ..CorsConfig::default()
    };
    let any = edge_app(&pc, pc.edge().cors(&any).unwrap()).await;
    let c = "checklist §10.13";
    let pre = |method: &str, headers: Option<&str>| {
        let r = Req::options("/")
            .h("Origin", "https://example.org")
            .h("Access-Control-Request-Method", method);
        match headers {
            Some(h) => r.h("Access-Control-Request-Headers", h),
            None => r,
        }
    };
    s.run([
        case(
            any,
            format!("{c}: preflight for method `get` (lowercase)"),
            pre("get", None),
            status(400)
                .detail("Disallowed CORS method")
                .code("cors_rejected")
                .header("access-control-allow-origin", Some("*")),
        ),
        case(
            any,
            format!("{c}: a trailing comma in the requested headers"),
            pre("GET", Some("X-Example,")),
            status(400)
                .detail("Disallowed CORS headers")
                .code("cors_rejected")
                .header("access-control-allow-origin", Some("*")),
        ),
        case(
            any,
            format!("{c}: OPTIONS with Origin but no request method goes to the app"),
            Req::options("/").h("Origin", "https://example.org"),
            // Starlette's simple-response headers, on the app's 405.
            err(405, "Method Not Allowed").header("access-control-allow-origin", Some("*")),
        ),
    ])
    .await;
    let credentialed = CorsConfig {
        allow_origins: vec!["https://app.example.com".into()],
        allow_credentials: true,
        ..CorsConfig::default()
    };
    let cred = edge_app(&pc, pc.edge().cors(&credentialed).unwrap()).await;
    s.run([
        case(
            cred,
            "checklist §10.14: a refused origin still gets Allow-Credentials",
            Req::get("/").h("Origin", "https://evil.example.com"),
            ok(hello())
                .header("access-control-allow-credentials", Some("true"))
                .header("access-control-allow-origin", None),
        )
        .differs(
            &["cors-refused-origin"],
            ok(json!({"message":"Hello World"}))
                .header("access-control-allow-credentials", None)
                .header("access-control-allow-origin", None),
        ),
        case(
            cred,
            "§5: an allowed origin on a credentialed simple request",
            Req::get("/").h("Origin", "https://app.example.com"),
            ok(hello())
                .header("access-control-allow-credentials", Some("true"))
                .header(
                    "access-control-allow-origin",
                    Some("https://app.example.com"),
                ),
        ),
    ])
    .await;
    let wild_cred = CorsConfig {
        allow_origins: vec!["*".into()],
        allow_credentials: true,
        ..CorsConfig::default()
    };
    s.refused(
        "§5 test_cors_allow_all: `*` with credentials mirrors the origin",
        &["cors-exact-origins"],
        pc.edge().cors(&wild_cred),
        r#"allow_origins[0]: `*` with allow_credentials = true would let any site read credentialed answers; list the origins"#,
    );
    // The app's own Access-Control-Allow-Origin on a refused origin: kept by
    // Starlette (its headers are only updated), replaced by Portcullis.
    let leaky = app(
        &pc,
        Router::new()
            .route(
                "/",
                get(|| async {
                    (
                        [("access-control-allow-origin", "https://evil.example.com")],
                        Json(hello()),
                    )
                }),
            )
            .layer(pc.edge().cors(&credentialed).unwrap()),
    )
    .await;
    s.run([case(
        leaky,
        "§5: the app's own Allow-Origin, refused origin",
        Req::get("/").h("Origin", "https://evil.example.com"),
        ok(hello()).header(
            "access-control-allow-origin",
            Some("https://evil.example.com"),
        ),
    )
    .differs(
        &["cors-upstream-replaced", "cors-refused-origin"],
        ok(json!({"message":"Hello World"})).header("access-control-allow-origin", None),
    )])
    .await;

    // docs_src/advanced_middleware/tutorial002: TrustedHostMiddleware.
    let hosts = edge_app(
        &pc,
        pc.edge()
            .trusted_hosts(&["example.com".into(), "*.example.com".into()])
            .unwrap(),
    )
    .await;
    let f = "test_tutorial/test_advanced_middleware/test_tutorial002.py";
    let invalid = || err(400, "Invalid host header").code("invalid_host");
    s.run([
        case(
            hosts,
            format!("{f}: example.com"),
            Req::get("/").host(Some("example.com")),
            ok(hello()),
        ),
        case(
            hosts,
            format!("{f}: subdomain.example.com"),
            Req::get("/").host(Some("subdomain.example.com")),
            ok(hello()),
        ),
        case(
            hosts,
            format!("{f}: invalidhost"),
            Req::get("/").host(Some("invalidhost")),
            invalid(),
        ),
    ])
    .await;
    let c = "checklist §10.15";
    s.run([
        case(
            hosts,
            format!("{c}: EXAMPLE.com is not example.com"),
            Req::get("/").host(Some("EXAMPLE.com")),
            invalid(),
        )
        .differs(
            &["case-insensitive-hosts"],
            ok(json!({"message":"Hello World"})),
        ),
        case(
            hosts,
            format!("{c}: example.com:8080"),
            Req::get("/").host(Some("example.com:8080")),
            ok(hello()),
        ),
        case(
            hosts,
            format!("{c}: no Host header"),
            Req::get("/").host(None),
            invalid(),
        ),
    ])
    .await;
    let sub = edge_app(
        &pc,
        pc.edge().trusted_hosts(&["*.example.com".into()]).unwrap(),
    )
    .await;
    s.run([
        case(
            sub,
            format!("{c}: *.example.com does not match example.com"),
            Req::get("/").host(Some("example.com")),
            invalid(),
        ),
        case(
            sub,
            format!("{c}: *.example.com matches a.b.example.com"),
            Req::get("/").host(Some("a.b.example.com")),
            ok(hello()),
        ),
    ])
    .await;
    s.refused(
        "§6.1: allowed_hosts=[\"*\"] lets every host through",
        &["no-wildcard-host"],
        pc.edge().trusted_hosts(&["*".into()]),
        r#"trusted_hosts[0]: "*": leave trusted_hosts empty to accept any host"#,
    );

    // docs_src/advanced_middleware/tutorial001: HTTPSRedirectMiddleware.
    let https = edge_app(&pc, pc.edge().https_redirect(true)).await;
    let f = "test_tutorial/test_advanced_middleware/test_tutorial001.py";
    let to = |loc: &str| status(307).header("location", Some(loc));
    // Ours (#https-redirect): 308, to the default port.
    let redirected = |c: Case, loc: &str| {
        c.differs(
            &["https-redirect"],
            status(308).header("location", Some(loc)),
        )
    };
    s.run([
        case(
            https,
            format!("{f}: https://testserver (X-Forwarded-Proto from a trusted proxy)"),
            Req::get("/").h("X-Forwarded-Proto", "https"),
            ok(hello()),
        ),
        redirected(
            case(
                https,
                format!("{f}: http, follow_redirects=False"),
                Req::get("/"),
                to("https://testserver/"),
            ),
            "https://testserver/",
        ),
    ])
    .await;
    let c = "checklist §10.16";
    // (what, request, FastAPI's location, ours)
    s.run(
        [
            (
                "port 80 is dropped",
                Req::get("/").host(Some("testserver:80")),
                "https://testserver/",
                "https://testserver/",
            ),
            (
                "port 443 is dropped",
                Req::get("/").host(Some("testserver:443")),
                "https://testserver/",
                "https://testserver/",
            ),
            (
                "other ports are kept",
                Req::get("/").host(Some("testserver:123")),
                "https://testserver:123/",
                "https://testserver/",
            ),
            (
                "the query is kept",
                Req::get("/a?b=c"),
                "https://testserver/a?b=c",
                "https://testserver/a?b=c",
            ),
        ]
        .map(|(what, req, fastapi, ours)| {
            redirected(case(https, format!("{c}: {what}"), req, to(fastapi)), ours)
        }),
    )
    .await;
    s.run([
        case(
            https,
            format!("{c}: POST is redirected too"),
            Req::post("/"),
            to("https://testserver/"),
        )
        .differs(
            &["https-redirect"],
            problem(403, "https_required", "HTTPS required").header("location", None),
        ),
        case(
            https,
            format!("{c}: a request carrying a credential is redirected too"),
            Req::get("/").bearer("sometoken"),
            to("https://testserver/"),
        )
        .differs(
            &["https-redirect"],
            problem(
                403,
                "https_required",
                "HTTPS required: this credential was sent in cleartext and should be rotated",
            )
            .header("location", None),
        ),
    ])
    .await;

    // Checklist 17: slowapi's 429 (headers_enabled=False, its default).
    let limited = app(
        &pc,
        Router::new().route(
            "/home",
            get(|| async { "home" }).route_layer(pc.rate_limit("1/minute").unwrap()),
        ),
    )
    .await;
    let c = "checklist §10.17";
    s.run([
        case(
            limited,
            format!("{c}: within the limit, no X-RateLimit headers"),
            Req::get("/home"),
            status(200)
                .detail("home")
                .header("x-ratelimit-limit", None)
                .header("retry-after", None),
        ),
        case(
            limited,
            format!("{c}: over the limit"),
            Req::get("/home"),
            status(429)
                .body(json!({"error": "Rate limit exceeded: 1 per 1 minute"}))
                .header("retry-after", None),
        )
        .differs(
            &["rate-limit-answers"],
            problem(429, "rate_limited", "Rate limit exceeded; retry later")
                .header_in("retry-after", 1..=60),
        ),
    ])
    .await;

    s.finish();
}

// ---- the document ----------------------------------------------------------

#[test]
fn fastapi_compat_doc_keeps_its_sections() {
    let anchors = doc_anchors();
    let missing: Vec<&&str> = REQUIRED_ANCHORS
        .iter()
        .filter(|a| !anchors.iter().any(|x| x == **a))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/fastapi-compat.md lacks the headings {missing:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for a in &anchors {
        assert!(
            seen.insert(a),
            "docs/fastapi-compat.md repeats the anchor #{a}"
        );
        assert!(
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "anchor #{a} is not kebab-case"
        );
    }
}

/// The judge itself: a documented difference fails when Portcullis gives
/// another answer than the one documented (a wrong password accepted), when
/// it leaves a problem+json code unasserted, and when it no longer differs.
#[test]
fn fastapi_suite_asserts_our_answer() {
    let answer = |status: &str, headers: &str, body: &str| {
        parse(
            format!(
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let problem_json = "content-type: application/problem+json\r\n";
    let refused = answer(
        "401 Unauthorized",
        &format!("{problem_json}www-authenticate: {OUR_BASIC}\r\n"),
        r#"{"detail":"Invalid or expired credentials","code":"invalid_credentials"}"#,
    );
    let accepted = answer(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"username":"stanleyjobson"}"#,
    );
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let wrong_password = || {
        case(
            addr,
            "wrong password",
            Req::get("/users/me").basic("stanleyjobson", "wrong"),
            err(401, "Incorrect username or password").www("Basic"),
        )
        .bad_basic()
    };
    let judged = |c: Case, got: &Resp| {
        let mut s = Suite::new("self-test");
        s.judge(c, got);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.finish()))
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
    };
    assert_eq!(judged(wrong_password(), &refused), None);
    let failed = judged(wrong_password(), &accepted).expect("a wrong password accepted passed");
    assert!(failed.contains("not the documented answer"), "{failed}");
    // The same denial, with its code left unchecked.
    let mut unchecked = wrong_password();
    unchecked.ours.as_mut().unwrap().code = None;
    let failed = judged(unchecked, &refused).expect("an unasserted code passed");
    assert!(failed.contains("not asserted"), "{failed}");
    // FastAPI's answer, on a case that says it differs: stale.
    let fastapi = answer(
        "401 Unauthorized",
        "content-type: application/json\r\nwww-authenticate: Basic\r\n",
        r#"{"detail":"Incorrect username or password"}"#,
    );
    let failed = judged(wrong_password(), &fastapi).expect("a stale difference passed");
    assert!(failed.contains("matches FastAPI now"), "{failed}");
}

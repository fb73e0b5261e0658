//! Traefik ForwardAuth's header contract against a real `portcullis
//! serve`. There is no Traefik package on the machines the suite runs on,
//! so no Traefik runs here: these tests build the decision request exactly
//! as Traefik's ForwardAuth does, with the settings docs/deploy/traefik.yml
//! (the file docs/deployment.md shows, byte for byte) gives it, send it to
//! `/auth/verify`, and apply the answer as Traefik would.
//!
//! What Traefik does, from its ForwardAuth documentation and its source
//! (`pkg/middlewares/auth/forward.go`, `writeHeader` and `ServeHTTP`):
//!
//! - the decision request is a GET without a body to `address`, carrying
//!   the client's headers (hop-by-hop ones removed), only those named in
//!   `authRequestHeaders` when that list is set;
//! - `trustForwardHeader: false` first removes every `X-Forwarded-*`
//!   field (and `X-Real-Ip`) the client sent; then Traefik sets
//!   `X-Forwarded-For` (the client's address, appended to a kept list when
//!   trusted), and, where not kept, `X-Forwarded-Method` (the client's
//!   method), `-Proto` (`http` or `https`), `-Port`, `-Host` (the client's
//!   Host) and `-Uri` (the request target as received, with its query);
//! - a non-2xx answer goes to the client as it is: status, headers (less
//!   hop-by-hop ones) and body;
//! - on 2xx, each `authResponseHeaders` name is removed from the client's
//!   request, then copied from the answer when the answer has it, and the
//!   request goes on (here through the `headers` middleware, whose empty
//!   `customRequestHeaders` values remove fields).

use crate::harness::*;
use crate::proxies::{FORGED, key_id, shown_in_deployment_doc};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

const TRAEFIK_YML: &str = include_str!("../../../../docs/deploy/traefik.yml");

/// Hop-by-hop fields Traefik drops from the decision request and answer.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// The X- fields `trustForwardHeader: false` removes (Traefik's
/// `forwardedheaders.XHeadersSet`).
const X_HEADERS: &[&str] = &[
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-prefix",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-scheme",
    "x-real-ip",
];

/// The ForwardAuth settings and the credential-stripping middleware, read
/// from docs/deploy/traefik.yml.
#[derive(Debug, Clone)]
struct ForwardAuth {
    address: String,
    trust_forward_header: bool,
    auth_request_headers: Vec<String>,
    auth_response_headers: Vec<String>,
    /// `customRequestHeaders` of the strip middleware: name → value
    /// (empty: remove).
    custom_request_headers: Vec<(String, String)>,
}

/// A value after `key:` on a line, unquoted.
fn scalar(line: &str, key: &str) -> Option<String> {
    let rest = line.trim().strip_prefix(key)?.strip_prefix(':')?.trim();
    Some(rest.trim_matches('"').to_owned())
}

/// The `- item` lines (or `name: value` lines) indented under `key:`.
fn block_under<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let Some(i) = lines.iter().position(|l| l.trim() == format!("{key}:")) else {
        panic!("docs/deploy/traefik.yml has no `{key}:`");
    };
    let indent = lines[i].len() - lines[i].trim_start().len();
    lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .copied()
        .collect()
}

impl ForwardAuth {
    fn from_doc() -> ForwardAuth {
        let lines: Vec<&str> = TRAEFIK_YML.lines().collect();
        let find = |key: &str| {
            lines
                .iter()
                .find_map(|l| scalar(l, key))
                .unwrap_or_else(|| panic!("docs/deploy/traefik.yml has no `{key}`"))
        };
        let list = |key: &str| {
            block_under(&lines, key)
                .iter()
                .map(|l| {
                    l.trim()
                        .strip_prefix("- ")
                        .unwrap_or_else(|| panic!("`{l}` under {key}"))
                        .to_owned()
                })
                .collect::<Vec<_>>()
        };
        ForwardAuth {
            address: find("address"),
            trust_forward_header: match find("trustForwardHeader").as_str() {
                "false" => false,
                "true" => true,
                v => panic!("trustForwardHeader: {v}"),
            },
            auth_request_headers: list("authRequestHeaders"),
            auth_response_headers: list("authResponseHeaders"),
            custom_request_headers: block_under(&lines, "customRequestHeaders")
                .iter()
                .map(|l| {
                    let (n, v) = l.trim().split_once(':').unwrap();
                    (n.to_owned(), v.trim().trim_matches('"').to_owned())
                })
                .collect(),
        }
    }
}

/// A request as it reaches Traefik.
#[derive(Debug, Clone)]
struct Incoming<'a> {
    method: &'a str,
    /// The request target, with its query, as the client sent it.
    target: &'a str,
    host: &'a str,
    tls: bool,
    client_ip: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Incoming<'a> {
    fn get(target: &'a str, headers: &[(&'a str, &'a str)]) -> Incoming<'a> {
        Incoming {
            method: "GET",
            target,
            host: "api.example.com",
            tls: true,
            client_ip: "198.51.100.7",
            headers: headers.to_vec(),
        }
    }
}

/// Header fields by lower-case name, values in order.
type Fields = BTreeMap<String, Vec<String>>;

fn fields(h: &[(&str, &str)]) -> Fields {
    let mut m = Fields::new();
    for (n, v) in h {
        m.entry(n.to_ascii_lowercase())
            .or_default()
            .push((*v).to_owned());
    }
    m
}

/// The header fields of Traefik's decision request (`writeHeader`).
fn decision_fields(fa: &ForwardAuth, req: &Incoming) -> Fields {
    let mut h = fields(&req.headers);
    // Fields the client's Connection names, then the hop-by-hop ones.
    let named: Vec<String> = h
        .get("connection")
        .into_iter()
        .flatten()
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for n in named.iter().map(String::as_str).chain(HOP.iter().copied()) {
        h.remove(n);
    }
    if !fa.trust_forward_header {
        h.retain(|n, _| !X_HEADERS.contains(&n.replace('_', "-").as_str()));
    }
    if !fa.auth_request_headers.is_empty() {
        let mut allowed: Vec<String> = fa
            .auth_request_headers
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if fa.trust_forward_header {
            allowed.extend(X_HEADERS.iter().map(|s| (*s).to_owned()));
        }
        h.retain(|n, _| allowed.contains(n));
    }
    let xff = match h.get("x-forwarded-for") {
        Some(prior) => format!("{}, {}", prior.join(", "), req.client_ip),
        None => req.client_ip.to_owned(),
    };
    h.insert("x-forwarded-for".into(), vec![xff]);
    let proto = if req.tls { "https" } else { "http" };
    let port = match req.host.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() => p.to_owned(),
        _ if req.tls => "443".into(),
        _ => "80".into(),
    };
    for (n, v) in [
        ("x-forwarded-method", req.method.to_owned()),
        ("x-forwarded-proto", proto.to_owned()),
        ("x-forwarded-port", port),
        ("x-forwarded-host", req.host.to_owned()),
        ("x-forwarded-uri", req.target.to_owned()),
    ] {
        h.entry(n.into()).or_insert_with(|| vec![v]);
    }
    h
}

/// What Traefik does with a request.
#[derive(Debug)]
enum Outcome {
    /// A non-2xx decision, as the client gets it.
    Refused {
        status: u16,
        headers: Fields,
        body: serde_json::Value,
    },
    /// Allowed: the fields the application gets.
    Forwarded { headers: Fields },
}

impl Outcome {
    fn refused(self, status: u16, code: &str) -> (Fields, serde_json::Value) {
        match self {
            Outcome::Refused {
                status: s,
                headers,
                body,
            } => {
                assert_eq!(s, status, "{headers:?} {body}");
                assert_eq!(
                    headers.get("x-portcullis-error"),
                    Some(&vec![code.to_owned()]),
                    "{headers:?}"
                );
                assert!(
                    headers["content-type"][0].starts_with("application/problem+json"),
                    "{headers:?}"
                );
                assert_eq!(body["status"], status, "{body}");
                (headers, body)
            }
            Outcome::Forwarded { headers } => {
                panic!("expected {status} {code}, forwarded with {headers:?}")
            }
        }
    }

    fn forwarded(self) -> Fields {
        match self {
            Outcome::Forwarded { headers } => headers,
            Outcome::Refused {
                status,
                headers,
                body,
            } => panic!("refused {status}: {headers:?} {body}"),
        }
    }
}

/// A Portcullis on a free port, and Traefik's side of the contract.
struct Contract {
    env: Env,
    server: Server,
    fa: ForwardAuth,
    http: reqwest::blocking::Client,
    /// Scopes `data:read`.
    reader: String,
}

/// The proxy tests' routes (to nowhere: no request goes past the
/// decision here), and one limited per client address.
fn routes() -> String {
    crate::proxies::routes("http://127.0.0.1:9")
        + r#"
[[routes]]
path = "/per-client"
methods = ["GET"]
upstream = "http://127.0.0.1:9"
auth = []
rate_limit = "1/hour"
rate_limit_by = "ip"
"#
}

/// A blocking client whose connections leave from `local`.
fn client_from(local: IpAddr) -> reqwest::blocking::Client {
    crypto_provider();
    reqwest::blocking::Client::builder()
        .local_address(local)
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

impl Contract {
    fn new() -> Contract {
        let env = Env::new(&routes());
        env.init();
        let reader = env.create_key(&["--name", "reader", "--scopes", "data:read"]);
        let server = env.serve();
        Contract {
            env,
            server,
            fa: ForwardAuth::from_doc(),
            http: client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            reader,
        }
    }

    /// `address` with the test's port in place of the documented one.
    fn address(&self) -> String {
        let a = &self.fa.address;
        assert_eq!(
            a, "http://127.0.0.1:8080/auth/verify",
            "address in traefik.yml"
        );
        a.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.env.port))
    }

    /// Traefik's ForwardAuth followed by the strip middleware, with
    /// `fa`'s settings, from a Traefik connecting with `http`.
    fn through(
        &self,
        fa: &ForwardAuth,
        http: &reqwest::blocking::Client,
        req: &Incoming,
    ) -> Outcome {
        let mut rb = http.get(self.address());
        for (n, vs) in decision_fields(fa, req) {
            for v in vs {
                rb = rb.header(n.as_str(), v);
            }
        }
        let r = rb.send().unwrap();
        let status = r.status().as_u16();
        let mut answer = Fields::new();
        for (n, v) in r.headers() {
            answer
                .entry(n.as_str().to_owned())
                .or_default()
                .push(v.to_str().unwrap().to_owned());
        }
        let text = r.text().unwrap();
        if !(200..300).contains(&status) {
            for n in HOP {
                answer.remove(*n);
            }
            let body = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "{status} body is not JSON ({e}): {text}\n{}",
                    self.server.log()
                )
            });
            return Outcome::Refused {
                status,
                headers: answer,
                body,
            };
        }
        let mut fwd = fields(&req.headers);
        for n in &fa.auth_response_headers {
            let n = n.to_ascii_lowercase();
            fwd.remove(&n);
            if let Some(v) = answer.get(&n) {
                fwd.insert(n, v.clone());
            }
        }
        for (n, v) in &fa.custom_request_headers {
            let n = n.to_ascii_lowercase();
            if v.is_empty() {
                fwd.remove(&n);
            } else {
                fwd.insert(n, vec![v.clone()]);
            }
        }
        Outcome::Forwarded { headers: fwd }
    }

    fn ask(&self, req: &Incoming) -> Outcome {
        self.through(&self.fa, &self.http, req)
    }
}

fn one(h: &Fields, n: &str) -> Option<String> {
    let v = h.get(n)?;
    assert_eq!(v.len(), 1, "{n}: {v:?}");
    Some(v[0].clone())
}

#[test]
fn doc_shows_the_tested_traefik_config() {
    let shown = shown_in_deployment_doc("yaml", "forwardAuth");
    assert_eq!(
        shown.trim_end(),
        TRAEFIK_YML.trim_end(),
        "the Traefik config in docs/deployment.md differs from docs/deploy/traefik.yml, \
         which the contract tests read: change both together"
    );
    let fa = ForwardAuth::from_doc();
    assert!(!fa.trust_forward_header, "{fa:?}");
    for n in [
        "X-API-Key",
        "Authorization",
        "Cookie",
        "Origin",
        "Sec-Fetch-Site",
        "X-CSRF-Token",
    ] {
        assert!(
            fa.auth_request_headers.iter().any(|h| h == n),
            "{n}: {fa:?}"
        );
    }
    // The identity fields of the decision: the ones a client forges.
    for (n, _) in FORGED {
        assert!(
            fa.auth_response_headers.iter().any(|h| h == n),
            "{n}: {fa:?}"
        );
    }
    for n in ["X-API-Key", "Authorization"] {
        assert!(
            fa.custom_request_headers
                .iter()
                .any(|(h, v)| h == n && v.is_empty()),
            "{n} is not stripped: {fa:?}"
        );
    }
}

#[test]
fn traefik_contract_allows_and_copies_the_identity() {
    let c = Contract::new();
    let id = key_id(&c.env, "reader");

    // What Traefik sends: only the listed client fields, and the
    // X-Forwarded-* it sets itself.
    let mut h = vec![
        ("X-API-Key", c.reader.as_str()),
        ("Accept", "application/json"),
        ("X-Original-URI", "/public"),
    ];
    h.extend_from_slice(FORGED);
    let req = Incoming::get("/api/items?page=2", &h);
    let sent = decision_fields(&c.fa, &req);
    assert_eq!(
        sent.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "x-api-key",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-method",
            "x-forwarded-port",
            "x-forwarded-proto",
            "x-forwarded-uri"
        ],
        "{sent:?}"
    );

    let fwd = c.ask(&req).forwarded();
    assert_eq!(
        one(&fwd, "x-portcullis-principal").as_deref(),
        Some("reader")
    );
    assert_eq!(one(&fwd, "x-portcullis-kind").as_deref(), Some("api_key"));
    assert_eq!(
        one(&fwd, "x-portcullis-scopes").as_deref(),
        Some("data:read")
    );
    assert_eq!(
        one(&fwd, "x-portcullis-credential-id").as_deref(),
        Some(id.as_str())
    );
    assert!(!fwd.contains_key("x-api-key"), "{fwd:?}");

    // A bearer token; the key in the query of X-Forwarded-Uri.
    let bearer = format!("Bearer {}", c.reader);
    let fwd = c
        .ask(&Incoming::get("/api/items", &[("Authorization", &bearer)]))
        .forwarded();
    assert_eq!(
        one(&fwd, "x-portcullis-principal").as_deref(),
        Some("reader")
    );
    assert!(!fwd.contains_key("authorization"), "{fwd:?}");
    let q = format!("/api/items?api_key={}", c.reader);
    let fwd = c.ask(&Incoming::get(&q, &[])).forwarded();
    assert_eq!(
        one(&fwd, "x-portcullis-principal").as_deref(),
        Some("reader")
    );

    // The original method is decided on: POST is on the route, DELETE
    // is not.
    let mut post = Incoming::get("/api/items", &[("X-API-Key", &c.reader)]);
    post.method = "POST";
    c.ask(&post).forwarded();
    let mut delete = post.clone();
    delete.method = "DELETE";
    let (h, _) = c.ask(&delete).refused(405, "method_not_allowed");
    assert!(h["allow"][0].contains("POST"), "{h:?}");

    // A public route: the decision names nobody, and Traefik's
    // delete-then-copy leaves none of the client's forgeries.
    let fwd = c.ask(&Incoming::get("/public", FORGED)).forwarded();
    for (n, _) in FORGED {
        assert!(!fwd.contains_key(&n.to_ascii_lowercase()), "{n}: {fwd:?}");
    }
}

#[test]
fn traefik_contract_passes_denials_to_the_client() {
    let c = Contract::new();

    let (h, body) = c
        .ask(&Incoming::get("/api/items", &[]))
        .refused(401, "not_authenticated");
    assert_eq!(body["detail"], "Not authenticated");
    let ch = &h["www-authenticate"];
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert!(
        ch[0].contains("APIKey") && ch[0].contains("Bearer"),
        "{ch:?}"
    );

    let (h, _) = c
        .ask(&Incoming::get(
            "/api/items",
            &[("X-API-Key", "pc_live_madeup")],
        ))
        .refused(401, "invalid_credentials");
    assert_eq!(h["www-authenticate"].len(), 1, "{h:?}");

    let (h, _) = c
        .ask(&Incoming::get("/reports/q1", &[("X-API-Key", &c.reader)]))
        .refused(403, "insufficient_scope");
    let ch = &h["www-authenticate"];
    assert!(
        ch.len() == 1 && ch[0].contains("insufficient_scope") && ch[0].contains("reports:read"),
        "{ch:?}"
    );

    c.ask(&Incoming::get("/nowhere", &[("X-API-Key", &c.reader)]))
        .refused(404, "not_found");

    // A client naming a public URI in the X-Forwarded-* fields changes
    // nothing: trustForwardHeader false removes them.
    c.ask(&Incoming::get(
        "/api/items",
        &[
            ("X-Forwarded-Uri", "/public"),
            ("X-Forwarded-Method", "GET"),
        ],
    ))
    .refused(401, "not_authenticated");

    // Without authRequestHeaders Traefik would forward a client's
    // X-Original-URI too; it contradicts X-Forwarded-Uri, and the
    // decision fails closed.
    let mut all_headers = c.fa.clone();
    all_headers.auth_request_headers.clear();
    let (_, body) = c
        .through(
            &all_headers,
            &c.http,
            &Incoming::get(
                "/api/items",
                &[("X-Original-URI", "/public"), ("X-Original-Method", "GET")],
            ),
        )
        .refused(400, "bad_request");
    assert!(
        body["detail"].as_str().unwrap().contains("named twice"),
        "{body}"
    );
}

#[test]
fn traefik_contract_answers_a_rate_limited_request_with_429_and_retry_after() {
    let c = Contract::new();
    let mut req = Incoming::get("/limited", &[("X-API-Key", &c.reader)]);
    req.method = "POST";
    for _ in 0..2 {
        let fwd = c.ask(&req).forwarded();
        assert_eq!(
            one(&fwd, "x-portcullis-principal").as_deref(),
            Some("reader")
        );
    }
    let (h, body) = c.ask(&req).refused(429, "rate_limited");
    let ra = &h["retry-after"];
    assert_eq!(ra.len(), 1, "{ra:?}");
    let secs: u64 = ra[0].parse().unwrap();
    assert!((1..=3600).contains(&secs), "{secs}");
    assert_eq!(h["ratelimit-policy"], ["\"p0\";q=2;w=3600"]);
    assert_eq!(body["code"], "rate_limited");
}

/// The X-Forwarded-For Traefik sets names the client: a per-address
/// limit counts each client apart, not Traefik's one address.
#[test]
fn traefik_contract_x_forwarded_for_decides_whose_allowance_it_is() {
    let c = Contract::new();
    let a = Incoming::get("/per-client", &[]);
    let mut b = a.clone();
    b.client_ip = "198.51.100.8";
    c.ask(&a).forwarded();
    c.ask(&a).refused(429, "rate_limited");
    c.ask(&b).forwarded();
    c.ask(&b).refused(429, "rate_limited");
}

/// `trustForwardHeader: true` (Traefik behind another proxy): the front
/// proxy's X-Forwarded-* are kept and its client address list is
/// extended; the decision is about the request the front proxy named.
#[test]
fn traefik_contract_with_trust_forward_header_keeps_the_front_proxys_fields() {
    let c = Contract::new();
    let mut trusting = c.fa.clone();
    trusting.trust_forward_header = true;
    let front = [
        ("X-API-Key", c.reader.as_str()),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/api/items?page=3"),
    ];
    let mut req = Incoming::get("/api/items?page=3", &front);
    req.tls = false;
    req.client_ip = "10.0.0.5";
    let sent = decision_fields(&trusting, &req);
    assert_eq!(sent["x-forwarded-for"], ["203.0.113.9, 10.0.0.5"]);
    assert_eq!(sent["x-forwarded-proto"], ["https"]);
    let fwd = c.through(&trusting, &c.http, &req).forwarded();
    assert_eq!(
        one(&fwd, "x-portcullis-principal").as_deref(),
        Some("reader")
    );
    let mut no_key = req.clone();
    no_key.headers.retain(|(n, _)| *n != "X-API-Key");
    c.through(&trusting, &c.http, &no_key)
        .refused(401, "not_authenticated");
}

/// The same fields from a peer not in `server.trusted_proxies` (here
/// 127.0.0.2, outside the default 127.0.0.1/32) are not believed: 400,
/// with a valid key as without, and Traefik would pass the 400 on.
#[test]
fn traefik_contract_from_an_untrusted_peer_is_refused() {
    let c = Contract::new();
    let stranger = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    for req in [
        Incoming::get("/api/items", &[("X-API-Key", &c.reader)]),
        Incoming::get("/public", &[]),
        Incoming::get("/api/items", &[]),
    ] {
        let (_, body) = c
            .through(&c.fa, &stranger, &req)
            .refused(400, "bad_request");
        assert!(
            body["detail"].as_str().unwrap().contains("trusted_proxies"),
            "{body}"
        );
    }
    // The same request from the trusted address is decided.
    c.ask(&Incoming::get("/api/items", &[("X-API-Key", &c.reader)]))
        .forwarded();
    // The log is written in batches by its own thread: wait for the line.
    within(std::time::Duration::from_secs(10), || {
        c.server.log().contains("untrusted_peer")
    })
    .unwrap_or_else(|| panic!("{}", c.server.log()));
}

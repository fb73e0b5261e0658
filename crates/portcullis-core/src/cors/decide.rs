//! The CORS decision: what a preflight is answered, which headers an
//! actual response gets, and the `Vary` that tells caches so. The policy
//! was validated by [`super::config`]; nothing here can fail on config.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};
use std::fmt;

use super::SAFELISTED_HEADERS;
use super::config::{self, CorsConfig, CorsConfigError, Origins, RequestHeaders};

/// Private Network Access request header (Chromium): the page asks to reach
/// a more private network than its own.
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";

/// Private Network Access answer header.
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";

/// The `Vary` tokens for an actual request.
const VARY_ACTUAL: [&str; 1] = ["Origin"];

/// The `Vary` tokens for a preflight, and the same joined for the common
/// case where the answer has no `Vary` yet.
const VARY_PREFLIGHT: [&str; 3] = [
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
];
const VARY_PREFLIGHT_JOINED: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Why a preflight was refused. The gateway answers 400 with the Display
/// text, which is Starlette's exact wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CorsRefusal {
    /// The `Origin` is not allowed (or was sent more than once).
    pub origin: bool,
    /// The `Access-Control-Request-Method` is not allowed.
    pub method: bool,
    /// A requested header is not allowed.
    pub headers: bool,
    /// Private Network Access was requested but is not allowed.
    pub private_network: bool,
}

impl CorsRefusal {
    /// True when nothing was refused.
    pub fn is_empty(&self) -> bool {
        !(self.origin || self.method || self.headers || self.private_network)
    }
}

impl fmt::Display for CorsRefusal {
    /// `Disallowed CORS origin, method, headers, private-network`, listing
    /// only the failures, in that order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Disallowed CORS")?;
        let parts = [
            (self.origin, "origin"),
            (self.method, "method"),
            (self.headers, "headers"),
            (self.private_network, "private-network"),
        ];
        let mut sep = " ";
        for (_, name) in parts.iter().filter(|(failed, _)| *failed) {
            f.write_str(sep)?;
            f.write_str(name)?;
            sep = ", ";
        }
        Ok(())
    }
}

/// A parsed, validated policy with precomputed header values.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    /// Configured spelling; a preflight's method must match exactly.
    methods: Vec<Box<[u8]>>,
    request_headers: RequestHeaders,
    credentials: bool,
    private_network: bool,
    allow_methods: HeaderValue,
    /// `None` in mirror mode.
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl Cors {
    /// Validates `c` and precomputes the answer headers. Every problem is a
    /// [`CorsConfigError`] naming the entry.
    pub fn new(c: &CorsConfig) -> Result<Cors, CorsConfigError> {
        let origins = config::parse_origins(&c.allow_origins, c.allow_credentials)?;
        let methods = config::parse_methods(&c.allow_methods)?;
        let (request_headers, allow_headers) =
            config::parse_allow_headers(&c.allow_headers, c.allow_credentials)?;
        let expose_headers = config::parse_expose_headers(&c.expose_headers, c.allow_credentials)?;
        let max_age = config::parse_max_age(c.max_age)?;
        let allow_methods = config::header_value(&methods.join(", "), "allow_methods")?;
        Ok(Cors {
            origins,
            methods: methods
                .iter()
                .map(|m| Box::<[u8]>::from(m.as_bytes()))
                .collect(),
            request_headers,
            credentials: c.allow_credentials,
            private_network: c.allow_private_network,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age: HeaderValue::from(max_age),
        })
    }

    /// OPTIONS with an `Origin` and an `Access-Control-Request-Method`.
    /// Any other OPTIONS is an ordinary request for the upstream.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        *method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight. Writes the response headers into `out` in every
    /// case; Ok(()) => the gateway answers 200 "OK"; Err(refusal) => the
    /// gateway answers 400 with `refusal.to_string()` as the detail.
    ///
    /// Methods, max-age, allowed headers and `Vary` are written whatever
    /// the outcome (as Starlette); `Access-Control-Allow-Origin`,
    /// `-Credentials` and `-Private-Network` only for an allowed origin.
    pub fn preflight(&self, req: &HeaderMap, out: &mut HeaderMap) -> Result<(), CorsRefusal> {
        strip_cors(out);
        out.remove(ALLOW_PRIVATE_NETWORK);
        out.remove(ACCESS_CONTROL_ALLOW_HEADERS);

        let origin = self.allowed_origin(single_origin(req));
        let pna_requested = req
            .get(REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let refusal = CorsRefusal {
            origin: origin.is_none(),
            method: !self.method_allowed(req),
            headers: !self.headers_allowed(req),
            private_network: pna_requested && !self.private_network,
        };

        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        match &self.allow_headers {
            Some(v) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            // Mirror mode: echo what was asked for, line by line.
            None => {
                for v in req.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
                    out.append(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
                }
            }
        }
        // Allow-Origin and, in mirror mode, Allow-Headers depend on these.
        add_vary(out, &VARY_PREFLIGHT, VARY_PREFLIGHT_JOINED);

        if let Some(origin) = origin {
            self.allow(origin, out);
            if pna_requested && self.private_network {
                out.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
            }
        }

        if refusal.is_empty() {
            Ok(())
        } else {
            Err(refusal)
        }
    }

    /// For an actual (non-preflight) request: adds the CORS headers for the
    /// request's Origin to the response headers `out` (which may already
    /// hold upstream headers, including upstream Access-Control-* headers
    /// and a Vary).
    ///
    /// The request itself is never blocked here: a browser withholds the
    /// answer from a refused origin's page on its own.
    pub fn apply(&self, req: &HeaderMap, out: &mut HeaderMap) {
        self.apply_origin(single_origin(req), out);
    }

    /// [`Cors::apply`] given the request's one `Origin` value (`None` when
    /// it had none, or more than one), for callers that no longer hold the
    /// request's headers by the time the response is ready.
    pub fn apply_origin(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        strip_cors(out);
        if let Some(origin) = self.allowed_origin(origin) {
            self.allow(origin, out);
            if let Some(v) = &self.expose_headers {
                out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
        // With a list, the answer differs by Origin (and by its absence), so
        // caches must key on it. `*` answers every origin alike.
        if matches!(self.origins, Origins::List(_)) {
            add_vary(out, &VARY_ACTUAL, "Origin");
        }
    }

    /// True when `origin` (the exact request header value) is allowed.
    /// Compared byte for byte: browsers always send the serialised form, so
    /// anything else (other case, default port, trailing slash) is not a
    /// browser and is not allowed.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| **o == *origin),
        }
    }

    /// The `Access-Control-Allow-Origin` value for the request's one
    /// `Origin` (from [`single_origin`]: two lines are refused, as no
    /// browser sends them and a proxy might read the other one), if it is
    /// allowed.
    fn allowed_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin.filter(|o| self.allows_origin(o.as_bytes()))?;
        Some(match self.origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::List(_) => origin.clone(),
        })
    }

    /// Lets `origin` read the answer: `Allow-Origin`, and `Allow-Credentials`
    /// when credentials are on. Preflight and actual answers alike.
    fn allow(&self, origin: HeaderValue, out: &mut HeaderMap) {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The one `Access-Control-Request-Method` is configured, exactly
    /// (case-sensitive, as Starlette: `get` is not `GET`).
    fn method_allowed(&self, req: &HeaderMap) -> bool {
        let mut lines = req.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
        match (lines.next(), lines.next()) {
            (Some(m), None) => self.methods.iter().any(|c| **c == *m.as_bytes()),
            _ => false,
        }
    }

    /// Every name in `Access-Control-Request-Headers` is allowed. Absent
    /// means nothing asked for; an empty item (`a,`) is refused as in
    /// Starlette.
    fn headers_allowed(&self, req: &HeaderMap) -> bool {
        let RequestHeaders::List(names) = &self.request_headers else {
            return true;
        };
        req.get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .all(|line| match line.to_str() {
                Ok(line) => line.split(',').all(|item| {
                    let item = item.trim();
                    !item.is_empty()
                        && (SAFELISTED_HEADERS
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(item))
                            || names.iter().any(|n| n.eq_ignore_ascii_case(item)))
                }),
                Err(_) => false,
            })
    }
}

/// The request's `Origin`, when it has exactly one.
pub fn single_origin(req: &HeaderMap) -> Option<&HeaderValue> {
    let mut lines = req.get_all(ORIGIN).iter();
    match (lines.next(), lines.next()) {
        (Some(o), None) => Some(o),
        _ => None,
    }
}

/// Removes the CORS headers that govern an actual response (an
/// upstream's, when Portcullis owns CORS: with no policy none may reach
/// the browser).
pub fn strip_cors(out: &mut HeaderMap) {
    out.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
    out.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
    out.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
}

/// Adds `tokens` to `Vary`, keeping what is there and not repeating a token
/// already listed. `joined` is `tokens` joined with ", ", used as is when
/// there is no `Vary` yet so the common case does not allocate.
fn add_vary(out: &mut HeaderMap, tokens: &[&str], joined: &'static str) {
    if !out.contains_key(VARY) {
        out.insert(VARY, HeaderValue::from_static(joined));
        return;
    }
    let listed = |token: &[u8]| {
        out.get_all(VARY).iter().any(|line| {
            line.as_bytes()
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    // `Vary: *` already says the answer depends on everything.
    if listed(b"*") {
        return;
    }
    let missing: Vec<&str> = tokens
        .iter()
        .copied()
        .filter(|t| !listed(t.as_bytes()))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut merged = Vec::new();
    let existing = out.get_all(VARY).iter().map(|v| v.as_bytes().trim_ascii());
    let added = missing.iter().map(|t| t.as_bytes());
    for part in existing.chain(added).filter(|p| !p.is_empty()) {
        if !merged.is_empty() {
            merged.extend_from_slice(b", ");
        }
        merged.extend_from_slice(part);
    }
    match HeaderValue::from_bytes(&merged) {
        Ok(v) => {
            out.insert(VARY, v);
        }
        // Unreachable (every part was a valid value), but a second Vary
        // line means the same thing.
        Err(_) => {
            out.append(VARY, HeaderValue::from_static(joined));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::testutil::{cors, get, req, strings};
    use super::*;

    /// Starlette's test_cors_allow_specific_origin.
    fn specific() -> Cors {
        cors(CorsConfig {
            allow_origins: strings(&["https://example.org"]),
            allow_headers: strings(&["X-Example", "Content-Type"]),
            ..Default::default()
        })
    }

    /// The hostile-origin policy.
    fn strict() -> Cors {
        cors(CorsConfig {
            allow_origins: strings(&["https://example.com", "https://app.example.com:8443"]),
            allow_methods: strings(&["GET", "POST"]),
            allow_headers: strings(&["X-Example"]),
            expose_headers: strings(&["X-Request-Id"]),
            allow_credentials: true,
            ..Default::default()
        })
    }

    #[test]
    fn allow_all_without_credentials() {
        let c = cors(CorsConfig {
            allow_origins: strings(&["*"]),
            allow_methods: strings(&["*"]),
            allow_headers: strings(&["*"]),
            expose_headers: strings(&["X-Status"]),
            ..Default::default()
        });
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-headers", b"X-Example"),
        ]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &r));
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(get(&out, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&out, "access-control-allow-headers"), Some("X-Example"));
        assert_eq!(
            get(&out, "access-control-allow-methods"),
            Some("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT")
        );
        assert_eq!(get(&out, "access-control-max-age"), Some("600"));
        assert!(out.get("access-control-allow-credentials").is_none());

        // Mirror mode with nothing requested: no Allow-Headers.
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"GET"),
        ]);
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert!(out.get("access-control-allow-headers").is_none());

        let mut out = HeaderMap::new();
        out.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        c.apply(&req(&[("origin", b"https://example.org")]), &mut out);
        assert_eq!(get(&out, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&out, "access-control-expose-headers"), Some("X-Status"));
        // Any-origin mode answers all alike: Vary untouched.
        assert_eq!(get(&out, "vary"), Some("Accept-Encoding"));

        let mut out = HeaderMap::new();
        c.apply(&HeaderMap::new(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn specific_origin_parity() {
        let c = specific();
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-headers", b"X-Example, Content-Type"),
        ]);
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(
            get(&out, "access-control-allow-origin"),
            Some("https://example.org")
        );
        assert_eq!(
            get(&out, "access-control-allow-headers"),
            Some("Accept, Accept-Language, Content-Language, Content-Type, X-Example")
        );
        assert_eq!(get(&out, "access-control-allow-methods"), Some("GET"));
        assert_eq!(
            get(&out, "vary"),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
        assert!(out.get("access-control-allow-credentials").is_none());

        let mut out = HeaderMap::new();
        c.apply(&req(&[("origin", b"https://example.org")]), &mut out);
        assert_eq!(
            get(&out, "access-control-allow-origin"),
            Some("https://example.org")
        );
        assert_eq!(get(&out, "vary"), Some("Origin"));

        // No Origin: no CORS headers, but caches must still key on Origin.
        let mut out = HeaderMap::new();
        c.apply(&HeaderMap::new(), &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
        assert_eq!(get(&out, "vary"), Some("Origin"));
    }

    #[test]
    fn disallowed_preflight_lists_failures_in_order() {
        let c = specific();
        let r = req(&[
            ("origin", b"https://another.org"),
            ("access-control-request-method", b"POST"),
            ("access-control-request-headers", b"X-Nope"),
        ]);
        let mut out = HeaderMap::new();
        let e = c.preflight(&r, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS origin, method, headers");
        assert!(out.get("access-control-allow-origin").is_none());
        // The precomputed headers are still there.
        assert_eq!(get(&out, "access-control-allow-methods"), Some("GET"));
        assert_eq!(get(&out, "access-control-max-age"), Some("600"));
        assert!(out.get("vary").is_some());
    }

    #[test]
    fn lowercase_method_refused() {
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"get"),
        ]);
        let e = specific().preflight(&r, &mut HeaderMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS method");
    }

    #[test]
    fn request_header_edge_cases() {
        let c = specific();
        let check = |value: &[u8]| {
            let r = req(&[
                ("origin", b"https://example.org"),
                ("access-control-request-method", b"GET"),
                ("access-control-request-headers", value),
            ]);
            c.preflight(&r, &mut HeaderMap::new())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check(b"X-Example,"),
            Err("Disallowed CORS headers".to_string())
        );
        assert_eq!(check(b""), Err("Disallowed CORS headers".to_string()));
        assert_eq!(check(b"x-example , ACCEPT,content-type"), Ok(()));
        assert_eq!(check(b"accept-language"), Ok(()));
        assert_eq!(
            check(b"X-Example, Authorization"),
            Err("Disallowed CORS headers".to_string())
        );
        assert_eq!(
            check(b"X-Example\xff"),
            Err("Disallowed CORS headers".to_string())
        );
    }

    #[test]
    fn any_origin_refusal_still_says_star() {
        let c = cors(CorsConfig {
            allow_origins: strings(&["*"]),
            ..Default::default()
        });
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"DELETE"),
        ]);
        let mut out = HeaderMap::new();
        let e = c.preflight(&r, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS method");
        assert_eq!(get(&out, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            get(&out, "access-control-allow-headers"),
            Some("Accept, Accept-Language, Content-Language, Content-Type")
        );
    }

    #[test]
    fn private_network() {
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-private-network", b"true"),
        ]);
        let mut out = HeaderMap::new();
        let e = specific().preflight(&r, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS private-network");
        assert!(out.get(ALLOW_PRIVATE_NETWORK).is_none());

        let c = cors(CorsConfig {
            allow_origins: strings(&["https://example.org"]),
            allow_private_network: true,
            ..Default::default()
        });
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(get(&out, ALLOW_PRIVATE_NETWORK), Some("true"));

        // Not asked for: not answered.
        let r = req(&[
            ("origin", b"https://example.org"),
            ("access-control-request-method", b"GET"),
        ]);
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert!(out.get(ALLOW_PRIVATE_NETWORK).is_none());

        // Allowed, but the origin is not: no PNA answer either.
        let r = req(&[
            ("origin", b"https://evil.example"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-private-network", b"true"),
        ]);
        let mut out = HeaderMap::new();
        let e = c.preflight(&r, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS origin");
        assert!(out.get(ALLOW_PRIVATE_NETWORK).is_none());
    }

    #[test]
    fn refusal_display() {
        let all = CorsRefusal {
            origin: true,
            method: true,
            headers: true,
            private_network: true,
        };
        assert_eq!(
            all.to_string(),
            "Disallowed CORS origin, method, headers, private-network"
        );
        let some = CorsRefusal {
            origin: true,
            headers: true,
            ..Default::default()
        };
        assert_eq!(some.to_string(), "Disallowed CORS origin, headers");
        assert!(CorsRefusal::default().is_empty());
        assert!(!some.is_empty());
    }

    #[test]
    fn allowed_origin_does_not_leak_between_requests() {
        let c = specific();
        let mut out = HeaderMap::new();
        c.apply(&req(&[("origin", b"https://example.org")]), &mut out);
        assert_eq!(
            get(&out, "access-control-allow-origin"),
            Some("https://example.org")
        );
        let mut out = HeaderMap::new();
        c.apply(&req(&[("origin", b"https://other.org")]), &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
        let mut out = HeaderMap::new();
        c.apply(&HeaderMap::new(), &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
    }

    #[test]
    fn upstream_cors_headers_are_replaced_and_vary_appended() {
        let c = strict();
        let upstream = || {
            let mut h = HeaderMap::new();
            h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Set-Cookie"),
            );
            h
        };
        // Refused origin: upstream headers gone, only Vary added.
        let mut out = upstream();
        c.apply(&req(&[("origin", b"https://evil.example")]), &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
        assert!(out.get("access-control-allow-credentials").is_none());
        assert!(out.get("access-control-expose-headers").is_none());
        assert_eq!(get(&out, "vary"), Some("Accept-Encoding, Origin"));
        assert_eq!(out.get_all(VARY).iter().count(), 1);

        // No Origin: likewise.
        let mut out = upstream();
        c.apply(&HeaderMap::new(), &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
        assert_eq!(get(&out, "vary"), Some("Accept-Encoding, Origin"));

        // Allowed origin: ours replace theirs.
        let mut out = upstream();
        c.apply(&req(&[("origin", b"https://example.com")]), &mut out);
        assert_eq!(
            get(&out, "access-control-allow-origin"),
            Some("https://example.com")
        );
        assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            get(&out, "access-control-expose-headers"),
            Some("X-Request-Id")
        );
        assert_eq!(out.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().count(), 1);
        assert_eq!(get(&out, "vary"), Some("Accept-Encoding, Origin"));
    }

    #[test]
    fn vary_tokens_are_not_repeated() {
        let c = strict();
        let origin = req(&[("origin", b"https://example.com")]);

        let mut out = HeaderMap::new();
        out.insert(VARY, HeaderValue::from_static("accept-encoding, origin"));
        c.apply(&origin, &mut out);
        assert_eq!(get(&out, "vary"), Some("accept-encoding, origin"));

        let mut out = HeaderMap::new();
        out.insert(VARY, HeaderValue::from_static("*"));
        c.apply(&origin, &mut out);
        assert_eq!(get(&out, "vary"), Some("*"));

        // Two upstream lines merge into one.
        let mut out = HeaderMap::new();
        out.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        out.append(VARY, HeaderValue::from_static("Cookie"));
        c.apply(&origin, &mut out);
        assert_eq!(get(&out, "vary"), Some("Accept-Encoding, Cookie, Origin"));
        assert_eq!(out.get_all(VARY).iter().count(), 1);

        // Preflight adds only the missing ones.
        let r = req(&[
            ("origin", b"https://example.com"),
            ("access-control-request-method", b"GET"),
        ]);
        let mut out = HeaderMap::new();
        out.insert(VARY, HeaderValue::from_static("Origin"));
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(
            get(&out, "vary"),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
        // And applying twice changes nothing.
        let before = out.clone();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(out, before);
    }

    #[test]
    fn allowed_origins_with_credentials() {
        let c = strict();
        for origin in ["https://example.com", "https://app.example.com:8443"] {
            let r = req(&[
                ("origin", origin.as_bytes()),
                ("access-control-request-method", b"POST"),
                ("access-control-request-headers", b"x-example"),
            ]);
            let mut out = HeaderMap::new();
            assert_eq!(c.preflight(&r, &mut out), Ok(()), "{origin}");
            assert_eq!(get(&out, "access-control-allow-origin"), Some(origin));
            assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
            assert_eq!(get(&out, "access-control-allow-methods"), Some("GET, POST"));
            let mut out = HeaderMap::new();
            c.apply(&r, &mut out);
            assert_eq!(get(&out, "access-control-allow-origin"), Some(origin));
            assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
            assert!(c.allows_origin(origin.as_bytes()));
        }
    }

    #[test]
    fn hostile_origins_get_nothing() {
        let c = strict();
        let single: &[&[u8]] = &[
            b"null",
            b"NULL",
            b"Null",
            b"https://example.com.evil.net",
            b"https://evilexample.com",
            b"https://evil-example.com",
            b"https://wwwXexample.com",
            b"http://example.com",
            b"https://example.com:444",
            // Browsers never send the default port, and we compare bytes.
            b"https://example.com:443",
            b"https://EXAMPLE.com",
            b"HTTPS://EXAMPLE.COM",
            b"https://example.com%60.evil.net",
            b"https://example.com_.evil.net",
            b"https://example.com`.evil.net",
            b"https://sub.example.com",
            b"https://example.co",
            b"https://example.com/",
            b"https://example.com.",
            b" https://example.com",
            b"https://example.com ",
            b"https://example.com\t",
            b"file://",
            b"https://app.example.com",
            b"https://app.example.com:08443",
            b"http://app.example.com:8443",
            b"",
            b"*",
            b"https://example.com\xff",
            b"https://user@example.com",
            b"https://example.com#",
            b"example.com",
        ];
        let mut cases: Vec<Vec<&[u8]>> = single.iter().map(|o| vec![*o]).collect();
        // Two Origin lines, each allowed on its own.
        cases.push(vec![b"https://example.com", b"https://example.com"]);
        cases.push(vec![
            b"https://example.com",
            b"https://app.example.com:8443",
        ]);
        cases.push(vec![b"https://evil.example", b"https://example.com"]);
        assert!(cases.len() >= 20);

        for origins in cases {
            let mut r = HeaderMap::new();
            for o in &origins {
                r.append(ORIGIN, HeaderValue::from_bytes(o).unwrap());
            }
            if let [o] = origins.as_slice() {
                assert!(!c.allows_origin(o), "{o:?}");
            }
            let mut a = r.clone();
            a.insert(
                ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static("GET"),
            );
            assert!(Cors::is_preflight(&Method::OPTIONS, &a));
            let mut out = HeaderMap::new();
            let e = c.preflight(&a, &mut out).unwrap_err();
            assert_eq!(e.to_string(), "Disallowed CORS origin", "{origins:?}");
            assert!(
                out.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{origins:?}"
            );
            assert!(
                out.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(),
                "{origins:?}"
            );
            assert!(get(&out, "vary").unwrap().contains("Origin"));

            let mut out = HeaderMap::new();
            c.apply(&r, &mut out);
            assert!(
                out.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{origins:?}"
            );
            assert!(
                out.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(),
                "{origins:?}"
            );
            assert!(
                out.get(ACCESS_CONTROL_EXPOSE_HEADERS).is_none(),
                "{origins:?}"
            );
            assert_eq!(get(&out, "vary"), Some("Origin"), "{origins:?}");
        }
    }

    #[test]
    fn preflight_detection() {
        let both = req(&[
            ("origin", b"https://example.com"),
            ("access-control-request-method", b"GET"),
        ]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &both));
        assert!(!Cors::is_preflight(&Method::GET, &both));
        let no_method = req(&[("origin", b"https://example.com")]);
        assert!(!Cors::is_preflight(&Method::OPTIONS, &no_method));
        let no_origin = req(&[("access-control-request-method", b"GET")]);
        assert!(!Cors::is_preflight(&Method::OPTIONS, &no_origin));
    }

    #[test]
    fn duplicate_request_lines() {
        let c = strict();
        let r = req(&[
            ("origin", b"https://example.com"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-method", b"GET"),
        ]);
        let e = c.preflight(&r, &mut HeaderMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS method");
        let r = req(&[
            ("origin", b"https://example.com"),
            ("access-control-request-method", b"GET"),
            ("access-control-request-headers", b"x-example"),
            ("access-control-request-headers", b"x-other"),
        ]);
        let e = c.preflight(&r, &mut HeaderMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS headers");
    }
}

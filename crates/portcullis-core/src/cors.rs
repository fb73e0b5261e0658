//! Cross-origin resource sharing: which other sites' pages may read our
//! answers, decided from an allowlist of exact origins.
//!
//! The behaviour follows Starlette's `CORSMiddleware` (same preflight
//! checks, failure order and wording, same `Allow-Headers` value) so a
//! FastAPI service moved behind the gateway answers browsers the same way.
//! Where Starlette is permissive, this module is deliberately stricter,
//! because CORS mistakes let any site read a user's credentialed answers:
//!
//! * Origins are exact `scheme://host[:port]` values, parsed and normalised
//!   when the config is loaded, then compared byte for byte with what the
//!   browser sends. No regex, prefix, suffix or subdomain matching: each of
//!   those has been bypassed in the wild (`https://example.com.evil.net`,
//!   `https://evilexample.com`, a taken-over subdomain).
//! * `null` is never allowed: sandboxed iframes, `file:` pages and
//!   redirects all send it, so allowing it allows anyone.
//! * `*` (any origin, any header, any exposed header) is refused together
//!   with credentials, at load time rather than as a surprise at runtime.
//! * A refused origin gets neither `Access-Control-Allow-Origin` nor
//!   `Access-Control-Allow-Credentials` (Starlette sends the latter anyway).
//! * The gateway owns CORS: upstream `Access-Control-Allow-Origin`,
//!   `-Credentials` and `-Expose-Headers` are removed from every answer, so an
//!   upstream that reflects origins cannot leak through.
//! * Every answer whose CORS headers depend on the request says so in
//!   `Vary`, so a shared cache never serves one origin's answer to another.
//!
//! CORS is not authorization: requests from refused origins still reach the
//! normal credential checks, and `Origin` is never used to grant access.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Private Network Access request header (Chromium): the page asks to reach
/// a more private network than its own.
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";

/// Private Network Access answer header.
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";

/// Request headers a browser may always send (Starlette's list).
const SAFELISTED_HEADERS: [&str; 4] = [
    "Accept",
    "Accept-Language",
    "Content-Language",
    "Content-Type",
];

/// What `*` in `allow_methods` stands for (Starlette's list).
const ALL_METHODS: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];

/// Starlette's default `max_age`.
const DEFAULT_MAX_AGE: u64 = 600;

/// The longest `max_age` accepted. Browsers cap it anyway (Chromium at two
/// hours, Firefox at a day), so a larger value only misleads the reader.
const MAX_MAX_AGE: u64 = 86_400;

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

/// The longest stretch of a bad config value quoted in an error.
const QUOTE_MAX: usize = 80;

/// CORS settings as written in config (the gateway fills this from TOML).
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `*` alone for any
    /// origin when credentials are off.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for, compared case-sensitively. Empty
    /// means `GET`; `*` means DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT.
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for, besides the safelisted
    /// Accept, Accept-Language, Content-Language and Content-Type. `*`
    /// (without credentials) allows whatever is asked for.
    pub allow_headers: Vec<String>,
    /// Response headers page scripts may read (`Access-Control-Expose-Headers`).
    pub expose_headers: Vec<String>,
    /// Let allowed origins send cookies and `Authorization` and read the
    /// answers (`Access-Control-Allow-Credentials: true`).
    pub allow_credentials: bool,
    /// Answer Private Network Access preflights for allowed origins.
    pub allow_private_network: bool,
    /// Seconds a browser may cache a preflight answer; `None` means 600.
    pub max_age: Option<u64>,
}

/// A CORS setting that cannot be used. Display is one line: the key path,
/// then what is wrong and what to write instead.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CorsConfigError {
    /// The entry or setting at `field` is refused.
    #[error("{field}: {message}")]
    Invalid {
        /// The key path, like `allow_origins[2]` or `max_age`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl CorsConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> CorsConfigError {
        CorsConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The key path of the offending setting (`allow_origins[2]`,
    /// `allow_headers[0]`, `max_age`), for the gateway to prefix with its
    /// own config path.
    pub fn field(&self) -> &str {
        match self {
            CorsConfigError::Invalid { field, .. } => field,
        }
    }

    /// What is wrong, without the key path.
    pub fn message(&self) -> &str {
        match self {
            CorsConfigError::Invalid { message, .. } => message,
        }
    }
}

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

/// Which origins are allowed.
#[derive(Debug, Clone)]
enum Origins {
    /// `*`: any origin, answered with `Access-Control-Allow-Origin: *`.
    /// Never combined with credentials.
    Any,
    /// Exact serialised origins, as browsers send them.
    List(Vec<Box<[u8]>>),
}

/// Which request headers a preflight may ask for.
#[derive(Debug, Clone)]
enum RequestHeaders {
    /// `*`: whatever is asked for is allowed and mirrored back.
    Mirror,
    /// The configured names (compared case-insensitively), besides the
    /// safelisted ones.
    List(Vec<Box<str>>),
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
        let origins = parse_origins(&c.allow_origins, c.allow_credentials)?;
        let methods = parse_methods(&c.allow_methods)?;
        let (request_headers, allow_headers) =
            parse_allow_headers(&c.allow_headers, c.allow_credentials)?;
        let expose_headers = parse_expose_headers(&c.expose_headers, c.allow_credentials)?;
        let max_age = c.max_age.unwrap_or(DEFAULT_MAX_AGE);
        if max_age > MAX_MAX_AGE {
            return Err(CorsConfigError::new(
                "max_age",
                format!(
                    "{max_age} is more than {MAX_MAX_AGE}: browsers cap it anyway: \
                     Chromium at 7200, Firefox at 86400"
                ),
            ));
        }
        let allow_methods = header_value(&methods.join(", "), "allow_methods")?;
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

        let origin = self.allowed_origin(req);
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
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if self.credentials {
                out.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
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
        let allowed = origin
            .filter(|o| self.allows_origin(o.as_bytes()))
            .map(|o| match self.origins {
                Origins::Any => HeaderValue::from_static("*"),
                Origins::List(_) => o.clone(),
            });
        if let Some(origin) = allowed {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if self.credentials {
                out.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
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

    /// The `Access-Control-Allow-Origin` value for this request, if its
    /// origin is allowed. Two `Origin` lines are refused: no browser sends
    /// them, and a proxy might read the other one.
    fn allowed_origin(&self, req: &HeaderMap) -> Option<HeaderValue> {
        let origin = single_origin(req)?;
        if !self.allows_origin(origin.as_bytes()) {
            return None;
        }
        Some(match self.origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::List(_) => origin.clone(),
        })
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

/// Removes the headers the gateway alone decides, whoever set them.
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

/// A config value quoted for an error, cut short so one bad entry cannot
/// flood the log.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE_MAX).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// A joined header value; the parts were validated, so this only fails on
/// a bug, reported as a config error rather than a panic.
fn header_value(s: &str, field: &str) -> Result<HeaderValue, CorsConfigError> {
    HeaderValue::from_str(s).map_err(|_| {
        CorsConfigError::new(field, format!("{} is not a valid header value", quote(s)))
    })
}

/// `*` may only stand alone; mixed with names it hides what was meant.
fn star_alone(list: &[String], field: &str, what: &str) -> Result<bool, CorsConfigError> {
    let Some(i) = list.iter().position(|s| s == "*") else {
        return Ok(false);
    };
    if list.len() > 1 {
        return Err(CorsConfigError::new(
            format!("{field}[{i}]"),
            format!("`*` already means {what}; use `*` alone or list each one"),
        ));
    }
    Ok(true)
}

fn parse_origins(list: &[String], credentials: bool) -> Result<Origins, CorsConfigError> {
    if let Some(i) = list.iter().position(|s| s == "*") {
        let field = format!("allow_origins[{i}]");
        if credentials {
            return Err(CorsConfigError::new(
                field,
                "`*` with allow_credentials = true would let any site read credentialed \
                 answers; list the origins",
            ));
        }
        if list.len() > 1 {
            return Err(CorsConfigError::new(
                field,
                "`*` already allows every origin; use `*` alone or list exact origins",
            ));
        }
        return Ok(Origins::Any);
    }
    let mut out: Vec<Box<[u8]>> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let field = format!("allow_origins[{i}]");
        let origin = parse_origin(raw)
            .map_err(|why| CorsConfigError::new(&field, format!("{}{why}", quote_prefix(raw))))?;
        if let Some(j) = out.iter().position(|o| **o == *origin.as_bytes()) {
            return Err(CorsConfigError::new(
                field,
                format!(
                    "{} is {origin} again (allow_origins[{j}]); list each origin once",
                    quote(raw)
                ),
            ));
        }
        out.push(origin.into_bytes().into_boxed_slice());
    }
    Ok(Origins::List(out))
}

/// `"value" ` before a parse message, so each message names the entry.
fn quote_prefix(raw: &str) -> String {
    format!("{} ", quote(raw))
}

/// Parses one configured origin into the form browsers send:
/// lowercase scheme and host, no default port. The error completes the
/// sentence `"<value>" ...`.
fn parse_origin(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("is empty; remove it".into());
    }
    if s.eq_ignore_ascii_case("null") {
        return Err(
            "is never allowed: sandboxed iframes, file: pages and redirects all send it".into(),
        );
    }
    if !s.is_ascii() {
        return Err("is not ASCII; write international host names in punycode (xn--...)".into());
    }
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("contains whitespace or control characters; browsers never send them".into());
    }
    if s.contains('*') {
        return Err(
            "has a wildcard: exact origins only (no `*.example.com`); list each origin".into(),
        );
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(
            "is not an origin: write scheme://host[:port], like https://app.example.com".into(),
        );
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err("has a scheme other than http or https".into()),
    };
    let (authority, tail) = rest
        .find(['/', '?', '#'])
        .map_or((rest, ""), |at| rest.split_at(at));
    match tail.as_bytes().first() {
        None => {}
        Some(_) if tail == "/" => {
            return Err(
                "ends in `/`: an origin has no path; drop the trailing `/` (browsers send \
                 https://host)"
                    .into(),
            );
        }
        Some(b'/') => return Err("has a path: an origin is scheme://host[:port] only".into()),
        Some(b'?') => return Err("has a query: an origin is scheme://host[:port] only".into()),
        Some(_) => return Err("has a fragment: an origin is scheme://host[:port] only".into()),
    }
    if authority.contains('@') {
        return Err("has user info (`user@`): an origin is scheme://host[:port] only".into());
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    let mut out = format!("{scheme}://{host}");
    if let Some(p) = port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(out)
}

/// Splits `host[:port]` or `[v6][:port]` and returns the host serialised
/// as a browser would.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("has an unclosed `[` in the host".into());
        };
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| String::from("has a bracketed host that is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| String::from("has text after the IPv6 address"))?,
            ),
        };
        return Ok((format!("[{}]", serialise_ipv6(addr)), port));
    }
    let (host, port) = authority
        .split_once(':')
        .map_or((authority, None), |(h, p)| (h, Some(p)));
    Ok((parse_host(host)?, port))
}

/// A DNS name or dotted IPv4 address, lowercased.
fn parse_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "has {c:?} in the host: only letters, digits, `-`, `_` and `.` (no escapes)"
        ));
    }
    if host.split('.').any(str::is_empty) {
        return Err("has an empty host label (a leading, trailing or doubled `.`)".into());
    }
    let host = host.to_ascii_lowercase();
    // A browser reads a host whose last label is a number as IPv4 and
    // re-serialises it (`127.1` becomes `127.0.0.1`); insist on the form it
    // sends rather than guess.
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        let ip: Ipv4Addr = host.parse().map_err(|_| {
            String::from("is not a valid IPv4 address: write four decimal numbers, like 127.0.0.1")
        })?;
        return Ok(ip.to_string());
    }
    Ok(host)
}

/// The port rule is the Host header's ([`crate::host::parse_port`]);
/// only the messages are config-specific.
fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("has an empty port; write the port or drop the `:`".into());
    }
    crate::host::parse_port(p)
        .ok_or_else(|| String::from("has a port that is not a number from 1 to 65535"))
}

/// IPv6 as the URL standard serialises it: lowercase hex, the first
/// longest run of two or more zero pieces as `::`, no embedded IPv4
/// (unlike `Ipv6Addr`'s Display for `::ffff:a.b.c.d`).
fn serialise_ipv6(addr: Ipv6Addr) -> String {
    let pieces = addr.segments();
    let (mut best_at, mut best_len) = (pieces.len(), 1);
    let mut run_at = 0;
    for (i, p) in pieces.iter().enumerate() {
        if *p != 0 {
            run_at = i + 1;
        } else if i + 1 - run_at > best_len {
            best_at = run_at;
            best_len = i + 1 - run_at;
        }
    }
    let hex = |ps: &[u16]| {
        ps.iter()
            .map(|p| format!("{p:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    match (pieces.get(..best_at), pieces.get(best_at + best_len..)) {
        (Some(before), Some(after)) if best_at < pieces.len() => {
            format!("{}::{}", hex(before), hex(after))
        }
        _ => hex(&pieces),
    }
}

/// RFC 9110 token characters, the alphabet of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The configured methods, `*` expanded and an empty list meaning GET.
fn parse_methods(list: &[String]) -> Result<Vec<String>, CorsConfigError> {
    if list.is_empty() {
        return Ok(vec!["GET".into()]);
    }
    if star_alone(list, "allow_methods", "every method")? {
        return Ok(ALL_METHODS.iter().map(|m| String::from(*m)).collect());
    }
    for (i, m) in list.iter().enumerate() {
        let field = format!("allow_methods[{i}]");
        if m.is_empty() {
            return Err(CorsConfigError::new(field, "empty method name"));
        }
        if !m.bytes().all(is_tchar) {
            return Err(CorsConfigError::new(
                field,
                format!(
                    "{} is not a method name (letters, digits, `-` ...)",
                    quote(m)
                ),
            ));
        }
        if let Some(j) = list
            .get(..i)
            .and_then(|prev| prev.iter().position(|p| p == m))
        {
            return Err(CorsConfigError::new(
                field,
                format!("{} is listed twice (also allow_methods[{j}])", quote(m)),
            ));
        }
    }
    Ok(list.to_vec())
}

/// Checks a list of header names: valid, each listed once (ignoring case).
fn check_header_names(list: &[String], field: &str) -> Result<(), CorsConfigError> {
    for (i, h) in list.iter().enumerate() {
        let here = format!("{field}[{i}]");
        if HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(CorsConfigError::new(
                here,
                format!("{} is not a valid header name", quote(h)),
            ));
        }
        if let Some(j) = list
            .get(..i)
            .and_then(|prev| prev.iter().position(|p| p.eq_ignore_ascii_case(h)))
        {
            return Err(CorsConfigError::new(
                here,
                format!("{} is listed twice (also {field}[{j}])", quote(h)),
            ));
        }
    }
    Ok(())
}

/// The request-header rule and the precomputed `Allow-Headers` value:
/// Starlette's sorted union of the safelisted and configured names, in
/// configured spelling, sorted case-sensitively.
fn parse_allow_headers(
    list: &[String],
    credentials: bool,
) -> Result<(RequestHeaders, Option<HeaderValue>), CorsConfigError> {
    if star_alone(list, "allow_headers", "every header")? {
        if credentials {
            return Err(CorsConfigError::new(
                "allow_headers[0]",
                "`*` with allow_credentials = true reflects any requested header on \
                 credentialed requests; list the headers",
            ));
        }
        return Ok((RequestHeaders::Mirror, None));
    }
    check_header_names(list, "allow_headers")?;
    let mut all: Vec<&str> = SAFELISTED_HEADERS.to_vec();
    // A configured safelisted name is already there, in canonical spelling.
    all.extend(
        list.iter()
            .map(String::as_str)
            .filter(|h| !SAFELISTED_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(h))),
    );
    all.sort_unstable();
    let value = header_value(&all.join(", "), "allow_headers")?;
    let names = list.iter().map(|h| Box::<str>::from(h.as_str())).collect();
    Ok((RequestHeaders::List(names), Some(value)))
}

/// The precomputed `Access-Control-Expose-Headers`, if any.
fn parse_expose_headers(
    list: &[String],
    credentials: bool,
) -> Result<Option<HeaderValue>, CorsConfigError> {
    if list.is_empty() {
        return Ok(None);
    }
    if star_alone(list, "expose_headers", "every header")? {
        if credentials {
            return Err(CorsConfigError::new(
                "expose_headers[0]",
                "`*` with allow_credentials = true is not honoured by browsers (it means the \
                 literal name `*`); list the headers",
            ));
        }
    } else {
        check_header_names(list, "expose_headers")?;
    }
    header_value(&list.join(", "), "expose_headers").map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| String::from(*s)).collect()
    }

    fn cors(c: CorsConfig) -> Cors {
        Cors::new(&c).unwrap()
    }

    fn req(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    fn config_err(c: CorsConfig) -> CorsConfigError {
        Cors::new(&c).unwrap_err()
    }

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
    fn origins_are_normalised() {
        let c = cors(CorsConfig {
            allow_origins: strings(&[
                "HTTPS://App.Example.COM:443",
                "http://127.0.0.1:8080",
                "http://Example.org:80",
                "https://example.net:8443",
                "http://[0:0:0:0:0:0:0:1]:3000",
                "https://[2001:DB8::1]:443",
                "http://[::ffff:127.0.0.1]",
                "http://[2001:db8:0:1:0:0:0:1]",
                "http://localhost:0080",
            ]),
            ..Default::default()
        });
        for ok in [
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "http://example.org",
            "https://example.net:8443",
            "http://[::1]:3000",
            "https://[2001:db8::1]",
            "http://[::ffff:7f00:1]",
            "http://[2001:db8:0:1::1]",
            "http://localhost",
        ] {
            assert!(c.allows_origin(ok.as_bytes()), "{ok}");
        }
        for no in [
            "https://App.Example.COM",
            "https://app.example.com:443",
            "http://[0:0:0:0:0:0:0:1]:3000",
            "http://[::ffff:127.0.0.1]",
        ] {
            assert!(!c.allows_origin(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn ipv6_serialisation() {
        let s = |a: &str| serialise_ipv6(a.parse().unwrap());
        assert_eq!(s("::"), "::");
        assert_eq!(s("::1"), "::1");
        assert_eq!(s("1::"), "1::");
        assert_eq!(s("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(s("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4");
        assert_eq!(s("1:0:2:3:4:5:6:7"), "1:0:2:3:4:5:6:7");
        assert_eq!(s("FE80::ABCD"), "fe80::abcd");
    }

    #[test]
    fn defaults_and_settings() {
        let c = cors(CorsConfig {
            allow_origins: strings(&["https://example.com"]),
            max_age: Some(86_400),
            ..Default::default()
        });
        let r = req(&[
            ("origin", b"https://example.com"),
            ("access-control-request-method", b"GET"),
        ]);
        let mut out = HeaderMap::new();
        assert_eq!(c.preflight(&r, &mut out), Ok(()));
        assert_eq!(get(&out, "access-control-allow-methods"), Some("GET"));
        assert_eq!(get(&out, "access-control-max-age"), Some("86400"));
        assert!(out.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());

        // A configured safelisted name appears once, canonically spelled;
        // the sort is case-sensitive as in Python.
        let c = cors(CorsConfig {
            allow_origins: strings(&["https://example.com"]),
            allow_methods: strings(&["PUT", "get"]),
            allow_headers: strings(&["content-type", "x-lower", "X-Upper"]),
            max_age: Some(0),
            ..Default::default()
        });
        let mut out = HeaderMap::new();
        let e = c.preflight(&r, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Disallowed CORS method");
        assert_eq!(get(&out, "access-control-allow-methods"), Some("PUT, get"));
        assert_eq!(get(&out, "access-control-max-age"), Some("0"));
        assert_eq!(
            get(&out, "access-control-allow-headers"),
            Some("Accept, Accept-Language, Content-Language, Content-Type, X-Upper, x-lower")
        );

        // Methods `*` is fine with credentials.
        assert!(
            Cors::new(&CorsConfig {
                allow_origins: strings(&["https://example.com"]),
                allow_methods: strings(&["*"]),
                allow_credentials: true,
                ..Default::default()
            })
            .is_ok()
        );
        // No origins: every origin refused, caches still told.
        let c = cors(CorsConfig::default());
        let mut out = HeaderMap::new();
        c.apply(&req(&[("origin", b"https://example.com")]), &mut out);
        assert!(out.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(get(&out, "vary"), Some("Origin"));
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

    fn origins_err(list: &[&str], credentials: bool) -> CorsConfigError {
        config_err(CorsConfig {
            allow_origins: strings(list),
            allow_credentials: credentials,
            ..Default::default()
        })
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases: Vec<(CorsConfigError, &str, &str)> = vec![
            (
                origins_err(&["*"], true),
                "allow_origins[0]",
                "would let any site read credentialed answers; list the origins",
            ),
            (
                origins_err(&["https://a.com", "*"], false),
                "allow_origins[1]",
                "`*` alone",
            ),
            (
                origins_err(&["https://a.com", "https://b.com", "null"], false),
                "allow_origins[2]",
                "\"null\" is never allowed: sandboxed iframes, file: pages and redirects all send it",
            ),
            (
                origins_err(&["NULL"], false),
                "allow_origins[0]",
                "never allowed",
            ),
            (origins_err(&[""], false), "allow_origins[0]", "empty"),
            (
                origins_err(&["https://*.example.com"], false),
                "allow_origins[0]",
                "exact origins only",
            ),
            (
                origins_err(&["https://example.com/app"], false),
                "allow_origins[0]",
                "has a path",
            ),
            (
                origins_err(&["https://example.com/"], false),
                "allow_origins[0]",
                "drop the trailing `/`",
            ),
            (
                origins_err(&["https://example.com?x=1"], false),
                "allow_origins[0]",
                "query",
            ),
            (
                origins_err(&["https://example.com#top"], false),
                "allow_origins[0]",
                "fragment",
            ),
            (
                origins_err(&["https://user:pw@example.com"], false),
                "allow_origins[0]",
                "user info",
            ),
            (
                origins_err(&["ftp://x"], false),
                "allow_origins[0]",
                "\"ftp://x\" has a scheme other than http or https",
            ),
            (
                origins_err(&["example.com"], false),
                "allow_origins[0]",
                "scheme://host[:port]",
            ),
            (
                origins_err(&["https://A.com", "https://a.com:443"], false),
                "allow_origins[1]",
                "is https://a.com again (allow_origins[0])",
            ),
            (
                origins_err(&[" https://a.com"], false),
                "allow_origins[0]",
                "whitespace",
            ),
            (
                origins_err(&["https://a%2ecom"], false),
                "allow_origins[0]",
                "'%'",
            ),
            (
                origins_err(&["https://bücher.de"], false),
                "allow_origins[0]",
                "punycode",
            ),
            (
                origins_err(&["https://example.com."], false),
                "allow_origins[0]",
                "empty host label",
            ),
            (
                origins_err(&["https://"], false),
                "allow_origins[0]",
                "no host",
            ),
            (
                origins_err(&["https://a.com:"], false),
                "allow_origins[0]",
                "empty port",
            ),
            (
                origins_err(&["https://a.com:65536"], false),
                "allow_origins[0]",
                "65535",
            ),
            (
                origins_err(&["https://a.com:8x"], false),
                "allow_origins[0]",
                "not a number",
            ),
            (
                origins_err(&["http://127.1"], false),
                "allow_origins[0]",
                "IPv4",
            ),
            (
                origins_err(&["http://0x7f.0.0.1"], false),
                "allow_origins[0]",
                "IPv4",
            ),
            (
                origins_err(&["http://[::1"], false),
                "allow_origins[0]",
                "unclosed",
            ),
            (
                origins_err(&["http://[zz::1]"], false),
                "allow_origins[0]",
                "IPv6",
            ),
            (
                config_err(CorsConfig {
                    allow_origins: strings(&["https://a.com"]),
                    allow_headers: strings(&["*"]),
                    allow_credentials: true,
                    ..Default::default()
                }),
                "allow_headers[0]",
                "list the headers",
            ),
            (
                config_err(CorsConfig {
                    allow_headers: strings(&["X-A", "x a"]),
                    ..Default::default()
                }),
                "allow_headers[1]",
                "not a valid header name",
            ),
            (
                config_err(CorsConfig {
                    allow_headers: strings(&["X-A", "x-a"]),
                    ..Default::default()
                }),
                "allow_headers[1]",
                "listed twice",
            ),
            (
                config_err(CorsConfig {
                    expose_headers: strings(&["*"]),
                    allow_credentials: true,
                    ..Default::default()
                }),
                "expose_headers[0]",
                "list the headers",
            ),
            (
                config_err(CorsConfig {
                    expose_headers: strings(&["X-Ok", ""]),
                    ..Default::default()
                }),
                "expose_headers[1]",
                "not a valid header name",
            ),
            (
                config_err(CorsConfig {
                    allow_methods: strings(&["GET", ""]),
                    ..Default::default()
                }),
                "allow_methods[1]",
                "empty method name",
            ),
            (
                config_err(CorsConfig {
                    allow_methods: strings(&["GET", "PO ST"]),
                    ..Default::default()
                }),
                "allow_methods[1]",
                "not a method name",
            ),
            (
                config_err(CorsConfig {
                    allow_methods: strings(&["GET", "GET"]),
                    ..Default::default()
                }),
                "allow_methods[1]",
                "listed twice",
            ),
            (
                config_err(CorsConfig {
                    allow_methods: strings(&["GET", "*"]),
                    ..Default::default()
                }),
                "allow_methods[1]",
                "`*` alone",
            ),
            (
                config_err(CorsConfig {
                    max_age: Some(86_401),
                    ..Default::default()
                }),
                "max_age",
                "browsers cap it anyway: Chromium at 7200",
            ),
        ];
        for (e, field, needle) in cases {
            assert_eq!(e.field(), field, "{e}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("{field}: ")), "{text}");
            assert!(text.contains(needle), "{text} lacks {needle}");
            assert!(!text.contains('\n'), "{text}");
            assert!(e.message().contains(needle));
        }
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = format!("https://{}/", "a".repeat(500));
        let e = origins_err(&[&long], false);
        assert!(e.to_string().len() < 300, "{e}");
    }
}

//! CORS settings as written in config, and their validation: each entry
//! is checked and normalised once, at load time, into the rules and
//! precomputed header values [`super::Cors`] answers with. Anything
//! refused is a [`CorsConfigError`] naming the entry and what to write
//! instead.

use http::{HeaderName, HeaderValue};

use super::SAFELISTED_HEADERS;
use crate::authority::{AuthorityError, HostKind, Syntax, parse_authority, serialise_ipv6};

/// What `*` in `allow_methods` stands for (Starlette's list).
const ALL_METHODS: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];

/// Starlette's default `max_age`.
const DEFAULT_MAX_AGE: u64 = 600;

/// The longest `max_age` accepted. Browsers cap it anyway (Chromium at two
/// hours, Firefox at a day), so a larger value only misleads the reader.
const MAX_MAX_AGE: u64 = 86_400;

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

/// Which origins are allowed.
#[derive(Debug, Clone)]
pub(super) enum Origins {
    /// `*`: any origin, answered with `Access-Control-Allow-Origin: *`.
    /// Never combined with credentials.
    Any,
    /// Exact serialised origins, as browsers send them.
    List(Vec<Box<[u8]>>),
}

/// Which request headers a preflight may ask for.
#[derive(Debug, Clone)]
pub(super) enum RequestHeaders {
    /// `*`: whatever is asked for is allowed and mirrored back.
    Mirror,
    /// The configured names (compared case-insensitively), besides the
    /// safelisted ones.
    List(Vec<Box<str>>),
}

/// The `max_age` setting, defaulted and bounded.
pub(super) fn parse_max_age(max_age: Option<u64>) -> Result<u64, CorsConfigError> {
    let max_age = max_age.unwrap_or(DEFAULT_MAX_AGE);
    if max_age > MAX_MAX_AGE {
        return Err(CorsConfigError::new(
            "max_age",
            format!(
                "{max_age} is more than {MAX_MAX_AGE}: browsers cap it anyway: \
                 Chromium at 7200, Firefox at 86400"
            ),
        ));
    }
    Ok(max_age)
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
pub(super) fn header_value(s: &str, field: &str) -> Result<HeaderValue, CorsConfigError> {
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

pub(super) fn parse_origins(
    list: &[String],
    credentials: bool,
) -> Result<Origins, CorsConfigError> {
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
    let authority = parse_authority(authority, Syntax::Origin).map_err(authority_problem)?;
    // The host serialised as a browser would: lowercase, IPv6 compressed.
    let host = match authority.kind {
        HostKind::Ipv6(addr) => format!("[{}]", serialise_ipv6(addr)),
        HostKind::Ipv4(addr) => addr.to_string(),
        HostKind::Name => authority.host.to_ascii_lowercase(),
    };
    let mut out = format!("{scheme}://{host}");
    if let Some(p) = authority.port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(out)
}

/// What to tell the operator about an origin's authority; completes the
/// sentence `"<value>" ...` as [`parse_origin`]'s other messages do.
fn authority_problem(e: AuthorityError) -> String {
    match e {
        AuthorityError::UnclosedBracket => "has an unclosed `[` in the host".into(),
        AuthorityError::NotIpv6 => "has a bracketed host that is not an IPv6 address".into(),
        AuthorityError::AfterIpv6 => "has text after the IPv6 address".into(),
        AuthorityError::EmptyHost => "has no host".into(),
        AuthorityError::HostChar(c) => {
            format!("has {c:?} in the host: only letters, digits, `-`, `_` and `.` (no escapes)")
        }
        AuthorityError::EmptyLabel => {
            "has an empty host label (a leading, trailing or doubled `.`)".into()
        }
        // Only the Host-header reading checks DNS lengths; kept worded in
        // case that ever changes.
        AuthorityError::NotDnsName => "has a host that is not a DNS name".into(),
        AuthorityError::NotIpv4 => {
            "is not a valid IPv4 address: write four decimal numbers, like 127.0.0.1".into()
        }
        AuthorityError::EmptyPort => "has an empty port; write the port or drop the `:`".into(),
        AuthorityError::BadPort => "has a port that is not a number from 1 to 65535".into(),
    }
}

/// RFC 9110 token characters, the alphabet of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The configured methods, `*` expanded and an empty list meaning GET.
pub(super) fn parse_methods(list: &[String]) -> Result<Vec<String>, CorsConfigError> {
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
        // Methods compare case-sensitively, as preflights are matched.
        not_repeated(list, i, "allow_methods", |p, m| p == m)?;
    }
    Ok(list.to_vec())
}

/// Refuses `list[i]` when an earlier entry is the `same`, naming both.
fn not_repeated(
    list: &[String],
    i: usize,
    field: &str,
    same: impl Fn(&str, &str) -> bool,
) -> Result<(), CorsConfigError> {
    let Some(item) = list.get(i) else {
        return Ok(());
    };
    match list
        .get(..i)
        .and_then(|prev| prev.iter().position(|p| same(p, item)))
    {
        Some(j) => Err(CorsConfigError::new(
            format!("{field}[{i}]"),
            format!("{} is listed twice (also {field}[{j}])", quote(item)),
        )),
        None => Ok(()),
    }
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
        not_repeated(list, i, field, str::eq_ignore_ascii_case)?;
    }
    Ok(())
}

/// The request-header rule and the precomputed `Allow-Headers` value:
/// Starlette's sorted union of the safelisted and configured names, in
/// configured spelling, sorted case-sensitively.
pub(super) fn parse_allow_headers(
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
pub(super) fn parse_expose_headers(
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

    use super::super::testutil::{cors, get, req, strings};
    use super::*;
    use crate::cors::Cors;
    use http::HeaderMap;
    use http::header::{ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN};

    fn config_err(c: CorsConfig) -> CorsConfigError {
        Cors::new(&c).unwrap_err()
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

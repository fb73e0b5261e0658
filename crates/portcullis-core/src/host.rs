//! Which host a request is addressed to, and whether we serve that host.
//!
//! A server that answers for any `Host` lets a client choose the name the
//! application believes it is reached under: password-reset links, cache
//! keys and virtual-host routing then follow the attacker's header. So the
//! gateway checks the name before routing, against the hosts it is
//! configured for.
//!
//! The name checked is the one the request is really addressed to: an
//! authority in the request target (HTTP/2 `:authority`, or HTTP/1.1
//! absolute-form) overrides `Host` (RFC 9112 §3.2.2), and when both are
//! present they must agree, so that no component downstream can be shown a
//! different host than the one checked here.
//!
//! Names are read strictly and compared lowercased. DNS is
//! case-insensitive, so `API.example.com` is the same host (Starlette
//! compares as written; we normalise on purpose). Anything a lenient reader
//! might resolve differently is refused rather than guessed at: userinfo,
//! a trailing dot, `_`, an unbracketed IPv6 address, an empty or zero port.
//! Every generous reading is a chance for the gateway and a backend to
//! disagree about which host a request is for.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::header::HOST;
use http::{HeaderMap, Uri, Version};

use crate::authority::{self, HostKind, Syntax, classify_name, lowercase, parse_port};

/// Host rules from config: `"api.example.com"` (exact) and
/// `"*.example.com"` (any subdomain at any depth, not the bare domain), or
/// empty = any host.
#[derive(Debug, Clone, Default)]
pub struct TrustedHosts {
    /// Exact names and IPv4 literals, lowercase.
    exact: Vec<String>,
    /// `*.example.com`, kept as `.example.com` so a match is one
    /// `ends_with`.
    suffixes: Vec<String>,
    /// Bracketed IPv6 literals, compared as addresses so that `[::1]` and
    /// `[0::1]` are one host.
    ipv6: Vec<Ipv6Addr>,
}

/// A `trusted_hosts` entry that could not be read. The message names the
/// entry by its index and says what to write instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostPatternError {
    /// An empty string.
    #[error("trusted_hosts[{index}]: empty: write a host name, like \"api.example.com\"")]
    Empty {
        /// Position in the list.
        index: usize,
    },
    /// `*` alone.
    #[error("trusted_hosts[{index}]: {pattern:?}: leave trusted_hosts empty to accept any host")]
    AnyHost {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// A `*` that is not a whole leading label.
    #[error(
        "trusted_hosts[{index}]: {pattern:?}: a wildcard must be a whole leading label, like \"*.example.com\""
    )]
    Wildcard {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// A URL rather than a host.
    #[error(
        "trusted_hosts[{index}]: {pattern:?}: write the host name alone, without a scheme, like \"api.example.com\""
    )]
    Scheme {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// A host followed by a path.
    #[error("trusted_hosts[{index}]: {pattern:?}: write the host name alone, without a path")]
    Path {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// A host with a port; rules match names, on any port.
    #[error(
        "trusted_hosts[{index}]: {pattern:?}: write the host name without a port (a rule accepts its host on any port)"
    )]
    Port {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// An IPv6 address without brackets.
    #[error(
        "trusted_hosts[{index}]: {pattern:?}: write an IPv6 address in brackets, like \"[::1]\""
    )]
    Ipv6Unbracketed {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
    /// Not a host name or IP literal.
    #[error(
        "trusted_hosts[{index}]: {pattern:?}: not a host name or IP address (letters, digits, \"-\" and \".\", labels of 1 to 63 characters not starting or ending with \"-\", no trailing dot)"
    )]
    Invalid {
        /// Position in the list.
        index: usize,
        /// The entry as written.
        pattern: String,
    },
}

/// What is wrong with a pattern, before it is given its place in the list.
#[derive(Debug, Clone, Copy)]
enum Problem {
    Empty,
    AnyHost,
    Wildcard,
    Scheme,
    Path,
    Port,
    Ipv6Unbracketed,
    Invalid,
}

impl Problem {
    fn at(self, index: usize, raw: &str) -> HostPatternError {
        // Config values can be long; an error message stays one short line.
        let pattern: String = raw.chars().take(100).collect();
        match self {
            Problem::Empty => HostPatternError::Empty { index },
            Problem::AnyHost => HostPatternError::AnyHost { index, pattern },
            Problem::Wildcard => HostPatternError::Wildcard { index, pattern },
            Problem::Scheme => HostPatternError::Scheme { index, pattern },
            Problem::Path => HostPatternError::Path { index, pattern },
            Problem::Port => HostPatternError::Port { index, pattern },
            Problem::Ipv6Unbracketed => HostPatternError::Ipv6Unbracketed { index, pattern },
            Problem::Invalid => HostPatternError::Invalid { index, pattern },
        }
    }
}

/// One parsed pattern.
enum Rule {
    Exact(String),
    Suffix(String),
    Ipv6(Ipv6Addr),
}

impl TrustedHosts {
    /// Reads the configured patterns. Case does not matter; duplicates are
    /// ignored.
    pub fn parse(patterns: &[String]) -> Result<TrustedHosts, HostPatternError> {
        let mut hosts = TrustedHosts::default();
        for (index, raw) in patterns.iter().enumerate() {
            let pattern = raw.to_ascii_lowercase();
            match read_pattern(&pattern).map_err(|p| p.at(index, raw))? {
                Rule::Exact(s) => push_new(&mut hosts.exact, s),
                Rule::Suffix(s) => push_new(&mut hosts.suffixes, s),
                Rule::Ipv6(a) => push_new(&mut hosts.ipv6, a),
            }
        }
        Ok(hosts)
    }

    /// true when no rules were given (every well-formed host passes).
    pub fn is_any(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty() && self.ipv6.is_empty()
    }

    /// `host` is a bare hostname already lowercased (no port); an IPv6
    /// literal keeps its brackets.
    pub fn allows(&self, host: &str) -> bool {
        if self.is_any() {
            return true;
        }
        if let Some(inner) = host.strip_prefix('[') {
            return inner
                .strip_suffix(']')
                .and_then(|a| a.parse::<Ipv6Addr>().ok())
                .is_some_and(|a| self.ipv6.contains(&a));
        }
        self.exact.iter().any(|e| e == host) || self.suffixes.iter().any(|s| under(host, s))
    }
}

/// `host` is a subdomain of `suffix` (`.example.com`): at least one whole
/// label in front, so neither `example.com` nor `evilexample.com` count.
fn under(host: &str, suffix: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|front| !front.is_empty() && !front.ends_with('.'))
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Reads one lowercased pattern.
fn read_pattern(p: &str) -> Result<Rule, Problem> {
    if p.is_empty() {
        return Err(Problem::Empty);
    }
    if p == "*" {
        return Err(Problem::AnyHost);
    }
    if p.contains("://") {
        return Err(Problem::Scheme);
    }
    let (wild, host) = match p.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, p),
    };
    if host.contains('*') {
        return Err(Problem::Wildcard);
    }
    if host.contains(['/', '?', '#']) {
        return Err(Problem::Path);
    }
    if let Some(inner) = host.strip_prefix('[') {
        return read_ipv6_pattern(inner, wild);
    }
    if host.contains(':') {
        return Err(colon_problem(host));
    }
    match (classify_name(host, Syntax::HostHeader), wild) {
        (Ok(HostKind::Name), true) => Ok(Rule::Suffix(format!(".{host}"))),
        (Ok(_), false) => Ok(Rule::Exact(host.to_owned())),
        // `*.10.0.0.1` names no subdomain of anything.
        (Ok(_), true) | (Err(_), _) => Err(Problem::Invalid),
    }
}

/// The part of a pattern after `[`.
fn read_ipv6_pattern(inner: &str, wild: bool) -> Result<Rule, Problem> {
    let Some((addr, after)) = inner.split_once(']') else {
        return Err(Problem::Invalid);
    };
    if after.starts_with(':') {
        return Err(Problem::Port);
    }
    if wild || !after.is_empty() {
        return Err(Problem::Invalid);
    }
    addr.parse().map(Rule::Ipv6).map_err(|_| Problem::Invalid)
}

/// Why an unbracketed pattern holds a colon: a bare IPv6 address, a port,
/// or neither.
fn colon_problem(host: &str) -> Problem {
    if host.parse::<Ipv6Addr>().is_ok() {
        return Problem::Ipv6Unbracketed;
    }
    match host.split_once(':') {
        Some((name, port))
            if classify_name(name, Syntax::HostHeader).is_ok() && parse_port(port).is_ok() =>
        {
            Problem::Port
        }
        _ => Problem::Invalid,
    }
}

/// Why a request's host was refused (all map to 400 "Invalid host
/// header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// No `Host` header where one is required.
    Missing,
    /// More than one `Host` header.
    Repeated,
    /// A host that is not a well-formed authority.
    Malformed,
    /// The request target's authority and `Host` name different hosts.
    Conflicting,
    /// A well-formed host that no rule allows.
    Untrusted,
}

impl HostError {
    /// The reason written to the log.
    pub fn log_reason(self) -> &'static str {
        match self {
            HostError::Missing => "host_missing",
            HostError::Repeated => "host_repeated",
            HostError::Malformed => "host_malformed",
            HostError::Conflicting => "host_conflicting",
            HostError::Untrusted => "host_untrusted",
        }
    }
}

/// The host a request is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost<'a> {
    /// The name, lowercased, without the port; an IPv6 literal keeps its
    /// brackets. Borrowed from the request unless it had to be lowercased.
    /// Empty only for an HTTP/1.0 request without `Host` when any host is
    /// accepted.
    pub name: Cow<'a, str>,
    /// The port, when the authority gave one.
    pub port: Option<u16>,
}

/// The host a request is addressed to, checked against `rules`: the
/// request target's authority when it has one (it must then agree with any
/// `Host`), else the single `Host` header. HTTP/1.0 may leave `Host` out,
/// but only when any host is accepted.
pub fn request_host<'a>(
    rules: &TrustedHosts,
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<RequestHost<'a>, HostError> {
    let header = single_host_header(headers)?;
    let host = match (uri.authority(), header) {
        // RFC 9112 §3.2: an HTTP/1.1 request without `Host` is a 400, even
        // in absolute form (HTTP/2 carries `:authority` instead).
        (Some(_), None) if version == Version::HTTP_11 => return Err(HostError::Missing),
        (Some(authority), header) => {
            let target = parse_authority(authority.as_str())?;
            if let Some(value) = header
                && parse_authority(value)? != target
            {
                return Err(HostError::Conflicting);
            }
            target
        }
        (None, Some(value)) => parse_authority(value)?,
        (None, None) if is_pre_11(version) && rules.is_any() => {
            return Ok(RequestHost {
                name: Cow::Borrowed(""),
                port: None,
            });
        }
        (None, None) => return Err(HostError::Missing),
    };
    trusted(rules, host)
}

/// Checks one authority string (e.g. an `X-Forwarded-Host` value; split a
/// comma list first) the same way.
pub fn check_authority<'a>(
    rules: &TrustedHosts,
    value: &'a str,
) -> Result<RequestHost<'a>, HostError> {
    trusted(rules, parse_authority(value)?)
}

fn trusted<'a>(rules: &TrustedHosts, host: RequestHost<'a>) -> Result<RequestHost<'a>, HostError> {
    if rules.allows(&host.name) {
        Ok(host)
    } else {
        Err(HostError::Untrusted)
    }
}

/// HTTP/1.0 (and 0.9) predate a required `Host`.
fn is_pre_11(version: Version) -> bool {
    version == Version::HTTP_10 || version == Version::HTTP_09
}

/// The `Host` header's value if there is exactly one, `None` if there is
/// none.
fn single_host_header(headers: &HeaderMap) -> Result<Option<&str>, HostError> {
    let mut values = headers.get_all(HOST).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| HostError::Malformed),
        (Some(_), Some(_)) => Err(HostError::Repeated),
    }
}

/// Reads `host[:port]` as a Host header ([`Syntax::HostHeader`]). Every
/// character outside the host and port grammar (whitespace, controls, `@`,
/// `/`, `_`) makes it Malformed; which rule it broke is not the client's
/// business.
fn parse_authority(value: &str) -> Result<RequestHost<'_>, HostError> {
    let a =
        authority::parse_authority(value, Syntax::HostHeader).map_err(|_| HostError::Malformed)?;
    Ok(RequestHost {
        name: lowercase(a.host),
        port: a.port,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use http::HeaderValue;

    fn rules(p: &[&str]) -> TrustedHosts {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        TrustedHosts::parse(&p).unwrap()
    }

    fn pattern_error(p: &str) -> HostPatternError {
        TrustedHosts::parse(&["ok.example.com".to_string(), p.to_string()]).unwrap_err()
    }

    /// Runs `request_host` on a request with this target and these `Host`
    /// values, returning an owned copy of the answer.
    fn check(
        r: &TrustedHosts,
        version: Version,
        target: &str,
        hosts: &[&[u8]],
    ) -> Result<(String, Option<u16>), HostError> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(HOST, HeaderValue::from_bytes(h).unwrap());
        }
        request_host(r, version, &uri, &headers).map(|h| (h.name.into_owned(), h.port))
    }

    fn h11(r: &TrustedHosts, host: &str) -> Result<(String, Option<u16>), HostError> {
        check(r, Version::HTTP_11, "/", &[host.as_bytes()])
    }

    fn ok(name: &str, port: Option<u16>) -> Result<(String, Option<u16>), HostError> {
        Ok((name.to_string(), port))
    }

    #[test]
    fn starlette_tutorial_table() {
        let r = rules(&["example.com", "*.example.com"]);
        assert_eq!(h11(&r, "example.com"), ok("example.com", None));
        assert_eq!(
            h11(&r, "subdomain.example.com"),
            ok("subdomain.example.com", None)
        );
        assert_eq!(h11(&r, "invalidhost"), Err(HostError::Untrusted));
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_the_bare_domain() {
        let r = rules(&["*.example.com"]);
        assert!(r.allows("a.example.com"));
        assert!(r.allows("a.b.example.com"));
        assert!(!r.allows("example.com"));
        assert!(!r.allows("evilexample.com"));
        assert!(!r.allows(".example.com"));
        assert!(!r.allows("..example.com"));
        assert!(!r.allows("example.com.evil.com"));
    }

    #[test]
    fn foreign_and_disguised_hosts_are_refused() {
        let r = rules(&["api.example.com"]);
        assert_eq!(h11(&r, "evil.com"), Err(HostError::Untrusted));
        assert_eq!(
            h11(&r, "api.example.com:1@evil.com"),
            Err(HostError::Malformed)
        );
        assert_eq!(h11(&r, "user@api.example.com"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "api.example.com/x"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "api.example.com."), Err(HostError::Malformed));
        assert_eq!(h11(&r, "a_b.example.com"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "api.example.com "), Err(HostError::Malformed));
        assert_eq!(h11(&r, "api.example.com\t"), Err(HostError::Malformed));
        assert_eq!(h11(&r, ""), Err(HostError::Malformed));
        assert_eq!(h11(&r, ":443"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "-api.example.com"), Err(HostError::Malformed));
        assert_eq!(
            check(&r, Version::HTTP_11, "/", &[b"caf\xe9.example.com"]),
            Err(HostError::Malformed)
        );
    }

    #[test]
    fn ports_must_be_plain_numbers_in_range() {
        let r = rules(&["api.example.com"]);
        assert_eq!(
            h11(&r, "api.example.com:8443"),
            ok("api.example.com", Some(8443))
        );
        assert_eq!(
            h11(&r, "api.example.com:65535"),
            ok("api.example.com", Some(65535))
        );
        for bad in ["", "0", "65536", "+80", "-1", "080a", "123456", "80:80"] {
            assert_eq!(
                h11(&r, &format!("api.example.com:{bad}")),
                Err(HostError::Malformed),
                "port {bad:?}"
            );
        }
    }

    #[test]
    fn host_header_must_appear_exactly_once() {
        let r = rules(&["api.example.com"]);
        assert_eq!(
            check(&r, Version::HTTP_11, "/", &[]),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(
                &r,
                Version::HTTP_11,
                "/",
                &[b"api.example.com", b"api.example.com"]
            ),
            Err(HostError::Repeated)
        );
        assert_eq!(
            check(
                &r,
                Version::HTTP_11,
                "/",
                &[b"api.example.com", b"evil.com"]
            ),
            Err(HostError::Repeated)
        );
        assert_eq!(
            check(&r, Version::HTTP_2, "/", &[]),
            Err(HostError::Missing)
        );
    }

    #[test]
    fn absolute_form_overrides_host_and_must_agree_with_it() {
        let r = rules(&["api.example.com"]);
        let evil = check(
            &r,
            Version::HTTP_11,
            "http://evil.com/",
            &[b"api.example.com"],
        );
        assert_eq!(evil, Err(HostError::Conflicting));
        // HTTP/1.1 without a Host header is refused, whatever the target
        // says (RFC 9112 §3.2); HTTP/1.0 may leave it out.
        assert_eq!(
            check(&r, Version::HTTP_11, "http://evil.com/", &[]),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(&r, Version::HTTP_11, "http://api.example.com/", &[]),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(&r, Version::HTTP_10, "http://evil.com/", &[]),
            Err(HostError::Untrusted)
        );
        assert_eq!(
            check(&r, Version::HTTP_10, "http://api.example.com/", &[]),
            ok("api.example.com", None)
        );
        assert_eq!(
            check(
                &r,
                Version::HTTP_11,
                "http://api.example.com/x",
                &[b"API.example.com"]
            ),
            ok("api.example.com", None)
        );
        // The port is part of the comparison.
        assert_eq!(
            check(
                &r,
                Version::HTTP_11,
                "http://api.example.com:8080/",
                &[b"api.example.com"]
            ),
            Err(HostError::Conflicting)
        );
        // Userinfo in the target is refused, not skipped.
        assert_eq!(
            check(
                &r,
                Version::HTTP_10,
                "http://evil.com@api.example.com/",
                &[]
            ),
            Err(HostError::Malformed)
        );
        assert_eq!(
            check(
                &r,
                Version::HTTP_11,
                "http://api.example.com/",
                &[b"api.example.com", b"api.example.com"]
            ),
            Err(HostError::Repeated)
        );
    }

    #[test]
    fn http2_authority_without_host_is_enough() {
        let r = rules(&["api.example.com"]);
        assert_eq!(
            check(&r, Version::HTTP_2, "https://api.example.com:8443/v1", &[]),
            ok("api.example.com", Some(8443))
        );
        assert_eq!(
            check(&r, Version::HTTP_2, "https://evil.com/v1", &[]),
            Err(HostError::Untrusted)
        );
    }

    #[test]
    fn names_are_lowercased_and_borrowed_when_already_lowercase() {
        let r = rules(&["API.Example.com"]);
        assert_eq!(
            h11(&r, "Api.EXAMPLE.com:80"),
            ok("api.example.com", Some(80))
        );
        let uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("api.example.com"));
        let h = request_host(&r, Version::HTTP_11, &uri, &headers).unwrap();
        assert!(matches!(h.name, Cow::Borrowed("api.example.com")));
    }

    #[test]
    fn ip_literals() {
        let r = rules(&["[::1]", "127.0.0.1"]);
        assert_eq!(h11(&r, "[::1]:8080"), ok("[::1]", Some(8080)));
        assert_eq!(h11(&r, "[0:0::1]"), ok("[0:0::1]", None));
        assert_eq!(h11(&r, "[::2]"), Err(HostError::Untrusted));
        assert_eq!(h11(&r, "::1"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "[::1"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "[::1]x"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "[fe80::1%25eth0]"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "127.0.0.1:80"), ok("127.0.0.1", Some(80)));
        // Numeric forms some resolvers read as 127.0.0.1.
        assert_eq!(h11(&r, "127.1"), Err(HostError::Malformed));
        assert_eq!(h11(&r, "127.0.0.01"), Err(HostError::Malformed));
    }

    #[test]
    fn http10_may_omit_host_only_when_any_host_is_accepted() {
        let any = TrustedHosts::default();
        assert!(any.is_any());
        assert_eq!(check(&any, Version::HTTP_10, "/", &[]), ok("", None));
        assert_eq!(
            check(&any, Version::HTTP_11, "/", &[]),
            Err(HostError::Missing)
        );
        let r = rules(&["api.example.com"]);
        assert!(!r.is_any());
        assert_eq!(
            check(&r, Version::HTTP_10, "/", &[]),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(&r, Version::HTTP_10, "/", &[b"api.example.com"]),
            ok("api.example.com", None)
        );
    }

    #[test]
    fn any_host_still_requires_a_well_formed_one() {
        let any = TrustedHosts::default();
        assert_eq!(h11(&any, "whatever.test"), ok("whatever.test", None));
        assert_eq!(h11(&any, "evil.com:1@x"), Err(HostError::Malformed));
        assert_eq!(
            check(&any, Version::HTTP_11, "/", &[b"a", b"b"]),
            Err(HostError::Repeated)
        );
    }

    #[test]
    fn forwarded_host_values_are_checked_the_same_way() {
        let r = rules(&["*.example.com"]);
        let h = check_authority(&r, "Shop.Example.com:443").unwrap();
        assert_eq!((h.name.as_ref(), h.port), ("shop.example.com", Some(443)));
        assert_eq!(check_authority(&r, "evil.com"), Err(HostError::Untrusted));
        assert_eq!(
            check_authority(&r, "a.example.com, evil.com"),
            Err(HostError::Malformed)
        );
    }

    #[test]
    fn pattern_errors_name_the_entry() {
        assert!(matches!(
            pattern_error("*"),
            HostPatternError::AnyHost { index: 1, .. }
        ));
        assert!(matches!(
            pattern_error("*example.com"),
            HostPatternError::Wildcard { .. }
        ));
        assert!(matches!(
            pattern_error("a.*.com"),
            HostPatternError::Wildcard { .. }
        ));
        assert!(matches!(
            pattern_error("*.*.com"),
            HostPatternError::Wildcard { .. }
        ));
        assert!(matches!(
            pattern_error("https://a.com"),
            HostPatternError::Scheme { .. }
        ));
        assert!(matches!(
            pattern_error("a.com:443"),
            HostPatternError::Port { .. }
        ));
        assert!(matches!(
            pattern_error("[::1]:443"),
            HostPatternError::Port { .. }
        ));
        assert!(matches!(
            pattern_error("a.com/x"),
            HostPatternError::Path { .. }
        ));
        assert!(matches!(
            pattern_error("::1"),
            HostPatternError::Ipv6Unbracketed { .. }
        ));
        assert!(matches!(
            pattern_error(""),
            HostPatternError::Empty { index: 1 }
        ));
        for bad in [
            "a_b.com",
            "a.com.",
            " a.com",
            "-a.com",
            "*.10.0.0.1",
            "[::1",
            "a..b",
        ] {
            assert!(
                matches!(pattern_error(bad), HostPatternError::Invalid { .. }),
                "{bad:?}"
            );
        }
        assert_eq!(
            pattern_error("*example.com").to_string(),
            r#"trusted_hosts[1]: "*example.com": a wildcard must be a whole leading label, like "*.example.com""#
        );
        assert!(
            pattern_error("*")
                .to_string()
                .contains("leave trusted_hosts empty to accept any host")
        );
    }

    #[test]
    fn patterns_are_lowercased_and_duplicates_ignored() {
        let r = rules(&[
            "API.example.com",
            "api.example.com",
            "*.A.com",
            "[::1]",
            "[0::1]",
        ]);
        assert_eq!(r.exact, vec!["api.example.com".to_string()]);
        assert_eq!(r.suffixes, vec![".a.com".to_string()]);
        assert_eq!(r.ipv6.len(), 1);
        assert!(r.allows("x.a.com"));
    }
}

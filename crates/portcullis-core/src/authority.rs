//! `host[:port]`: the one reader of an authority, shared by the `Host`
//! check ([`crate::host`]) and the CORS origin list ([`crate::cors`]).
//!
//! Both callers split the same way (a bracketed IPv6 literal, else the
//! first `:`), take the same ports (1 to 5 digits, 1–65535, no sign), the
//! same characters and the same IPv4 rule: a name whose last label is a
//! number must be a dotted quad exactly as a browser writes it, because
//! `127.1` or `010.0.0.1` mean other addresses to some resolvers.
//!
//! They differ on purpose in three places, named by [`Syntax`]:
//!
//! * A `Host` header must be a DNS name (labels of 1 to 63 characters, not
//!   starting or ending with `-`, at most 253 in all, no `_`): anything a
//!   backend might read differently is refused.
//! * A configured origin is read as browsers read URL hosts, so that what
//!   is compared later is what a browser sends: `_` is allowed, lengths are
//!   not checked, and a last label like `0x7f` counts as a number (and so
//!   must be a valid IPv4 address, which it never is in that spelling).
//!
//! Only the reading is here; what a caller does with a refusal (a 400, or
//! a config error naming the entry) stays with it.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Which reading of a host name applies. See the module docs for why they
/// differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// A request's `Host` (or `:authority`, `X-Forwarded-Host`) and the
    /// configured trusted hosts: strict DNS names.
    HostHeader,
    /// A configured CORS origin's host, read as a browser's URL parser
    /// would.
    Origin,
}

impl Syntax {
    /// `_` may appear in a label.
    fn allows_underscore(self) -> bool {
        self == Syntax::Origin
    }

    /// DNS lengths and hyphen placement are checked.
    fn checks_dns_labels(self) -> bool {
        self == Syntax::HostHeader
    }

    /// A last label `0x...` is a (hex) number, as in the URL standard's
    /// IPv4 parser.
    fn hex_is_numeric(self) -> bool {
        self == Syntax::Origin
    }
}

/// Why an authority was refused, in the order the checks run. The `Host`
/// check folds all of these into one answer; the CORS config turns each
/// into its own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// `[` without a closing `]`.
    #[error("unclosed `[`")]
    UnclosedBracket,
    /// The text between `[` and `]` is not an IPv6 address.
    #[error("bracketed host is not an IPv6 address")]
    NotIpv6,
    /// Something other than `:port` follows `]`.
    #[error("text after the IPv6 address")]
    AfterIpv6,
    /// No host before the port (or nothing at all).
    #[error("no host")]
    EmptyHost,
    /// A character outside the host alphabet.
    #[error("{0:?} in the host")]
    HostChar(char),
    /// A leading, trailing or doubled `.`.
    #[error("empty host label")]
    EmptyLabel,
    /// A label too long, starting or ending with `-`, or a name over 253
    /// characters ([`Syntax::HostHeader`] only).
    #[error("not a DNS name")]
    NotDnsName,
    /// A numeric last label, but not a dotted-quad IPv4 address.
    #[error("not a dotted-quad IPv4 address")]
    NotIpv4,
    /// A `:` with no port after it.
    #[error("empty port")]
    EmptyPort,
    /// A port that is not 1 to 5 digits from 1 to 65535.
    #[error("port not a number from 1 to 65535")]
    BadPort,
}

/// What a well-formed host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A DNS name (in the case it was written in).
    Name,
    /// A dotted-quad IPv4 literal.
    Ipv4(Ipv4Addr),
    /// A bracketed IPv6 literal.
    Ipv6(Ipv6Addr),
}

/// A parsed `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// The host as written: not lowercased, an IPv6 literal with its
    /// brackets.
    pub host: &'a str,
    /// What the host is.
    pub kind: HostKind,
    /// The port, when one was given.
    pub port: Option<u16>,
}

/// Reads `host[:port]` or `[v6][:port]` under `syntax`. The host is
/// checked before the port, so an error names the first problem from the
/// left.
pub fn parse_authority(value: &str, syntax: Syntax) -> Result<Authority<'_>, AuthorityError> {
    let (host, kind, port) = match value.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(AuthorityError::UnclosedBracket)?;
            let addr: Ipv6Addr = addr.parse().map_err(|_| AuthorityError::NotIpv6)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(AuthorityError::AfterIpv6)?),
            };
            // `]` is one byte, so this is the bracketed literal.
            let host = value.get(..value.len() - after.len()).unwrap_or(value);
            (host, HostKind::Ipv6(addr), port)
        }
        None => {
            // A second colon lands in the port and fails there, which is
            // how an unbracketed IPv6 address is refused.
            // A byte scan: a `str` pattern search costs more than the short
            // authority it looks through. `:` is ASCII, so `i` and `i + 1`
            // are character boundaries and the slices cannot panic.
            let (host, port) = match value.bytes().position(|b| b == b':') {
                Some(i) => (&value[..i], Some(&value[i + 1..])),
                None => (value, None),
            };
            (host, classify_name(host, syntax)?, port)
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok(Authority { host, kind, port })
}

/// Whether `name` (no port, no brackets) is a host name or an IPv4
/// literal under `syntax`, in either case.
pub fn classify_name(name: &str, syntax: Syntax) -> Result<HostKind, AuthorityError> {
    match quick_classify(name, syntax) {
        Some(kind) => Ok(kind),
        None => classify_fully(name, syntax),
    }
}

/// [`classify_name`]'s every check, in the order its errors are reported.
fn classify_fully(name: &str, syntax: Syntax) -> Result<HostKind, AuthorityError> {
    if name.is_empty() {
        return Err(AuthorityError::EmptyHost);
    }
    if let Some(c) = name.chars().find(|&c| {
        !(c.is_ascii_alphanumeric()
            || c == '-'
            || c == '.'
            || (c == '_' && syntax.allows_underscore()))
    }) {
        return Err(AuthorityError::HostChar(c));
    }
    if name.split('.').any(str::is_empty) {
        return Err(AuthorityError::EmptyLabel);
    }
    if syntax.checks_dns_labels() && (name.len() > 253 || !name.split('.').all(is_dns_label)) {
        return Err(AuthorityError::NotDnsName);
    }
    // Labels are non-empty by now, so there is a last one.
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (syntax.hex_is_numeric()
            && last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
            && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return name
            .parse()
            .map(HostKind::Ipv4)
            .map_err(|_| AuthorityError::NotIpv4);
    }
    Ok(HostKind::Name)
}

/// One pass over the common case, every request's `Host`: a well-formed
/// name, or a dotted IPv4 address. `None` sends anything else (every
/// mistake) through the checks of [`classify_fully`], which say exactly
/// what is wrong; this never accepts what they refuse, nor reads a name
/// differently (a property test holds it to that).
fn quick_classify(name: &str, syntax: Syntax) -> Option<HostKind> {
    let b = name.as_bytes();
    let dns = syntax.checks_dns_labels();
    if b.is_empty() || (dns && b.len() > 253) {
        return None;
    }
    let label_ok = |l: &[u8]| {
        !l.is_empty() && (!dns || (l.len() <= 63 && l[0] != b'-' && l[l.len() - 1] != b'-'))
    };
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'.' => {
                if !label_ok(&b[start..i]) {
                    return None;
                }
                start = i + 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => {}
            b'_' if syntax.allows_underscore() => {}
            _ => return None,
        }
    }
    let last = &b[start..];
    if !label_ok(last) {
        return None;
    }
    // A last label of digits (or `0x` and hex digits, for an Origin) makes
    // the name a number, as in the full checks: an IPv4 address, or (when
    // it does not parse) a mistake they name.
    let numeric = last.iter().all(u8::is_ascii_digit)
        || (syntax.hex_is_numeric()
            && last.len() >= 2
            && last[..2].eq_ignore_ascii_case(b"0x")
            && last[2..].iter().all(u8::is_ascii_hexdigit));
    if numeric {
        return name.parse().ok().map(HostKind::Ipv4);
    }
    Some(HostKind::Name)
}

/// A non-empty label's DNS limits: at most 63 characters, no `-` at either
/// end (the alphabet was checked already).
fn is_dns_label(label: &str) -> bool {
    label.len() <= 63 && !label.starts_with('-') && !label.ends_with('-')
}

/// A port of 1 to 5 digits, 1–65535. `u16::from_str` alone would take a
/// leading `+`.
pub fn parse_port(port: &str) -> Result<u16, AuthorityError> {
    if port.is_empty() {
        return Err(AuthorityError::EmptyPort);
    }
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::BadPort);
    }
    port.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(AuthorityError::BadPort)
}

/// Lowercases only when needed: most clients already send lowercase.
pub fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// IPv6 as the URL standard serialises it: lowercase hex, the first
/// longest run of two or more zero pieces as `::`, no embedded IPv4
/// (unlike `Ipv6Addr`'s Display for `::ffff:a.b.c.d`).
pub fn serialise_ipv6(addr: Ipv6Addr) -> String {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

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
    fn the_two_syntaxes_differ_only_where_named() {
        use Syntax::{HostHeader, Origin};
        let kind = |v: &str, s| parse_authority(v, s).map(|a| a.kind);
        assert_eq!(kind("a_b.com", Origin), Ok(HostKind::Name));
        assert_eq!(
            kind("a_b.com", HostHeader),
            Err(AuthorityError::HostChar('_'))
        );
        assert_eq!(kind("-a.com", Origin), Ok(HostKind::Name));
        assert_eq!(kind("-a.com", HostHeader), Err(AuthorityError::NotDnsName));
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(kind(&long, Origin), Ok(HostKind::Name));
        assert_eq!(kind(&long, HostHeader), Err(AuthorityError::NotDnsName));
        assert_eq!(kind("a.0x1", Origin), Err(AuthorityError::NotIpv4));
        assert_eq!(kind("a.0X1", Origin), Err(AuthorityError::NotIpv4));
        assert_eq!(kind("a.0x1", HostHeader), Ok(HostKind::Name));
        for s in [Origin, HostHeader] {
            assert_eq!(kind("127.1", s), Err(AuthorityError::NotIpv4));
            assert_eq!(
                kind("127.0.0.1", s),
                Ok(HostKind::Ipv4(Ipv4Addr::LOCALHOST))
            );
            assert_eq!(kind("[::1]", s), Ok(HostKind::Ipv6(Ipv6Addr::LOCALHOST)));
            assert_eq!(kind("a.com:", s), Err(AuthorityError::EmptyPort));
            assert_eq!(kind("a.com:0", s), Err(AuthorityError::BadPort));
            assert_eq!(kind("::1", s), Err(AuthorityError::EmptyHost));
            assert_eq!(kind("a::1", s), Err(AuthorityError::BadPort));
        }
    }
}

/// The shared reader against the two it replaced, kept here verbatim as
/// oracles: host.rs's `parse_authority` (`HostHeader`) and cors.rs's
/// `split_host_port` + `parse_port` (`Origin`).
#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    mod old_host {
        use std::net::{Ipv4Addr, Ipv6Addr};

        pub fn parse_authority(value: &str) -> Option<(String, Option<u16>)> {
            let (host, port) = split_port(value)?;
            let port = match port {
                Some(p) => Some(parse_port(p)?),
                None => None,
            };
            let well_formed = match host.strip_prefix('[') {
                Some(inner) => inner
                    .strip_suffix(']')
                    .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok()),
                None => classify(host),
            };
            well_formed.then(|| (host.to_ascii_lowercase(), port))
        }

        fn split_port(value: &str) -> Option<(&str, Option<&str>)> {
            if value.starts_with('[') {
                let close = value.find(']')?;
                let (host, after) = value.split_at(close + 1);
                return match after {
                    "" => Some((host, None)),
                    _ => after.strip_prefix(':').map(|p| (host, Some(p))),
                };
            }
            Some(match value.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (value, None),
            })
        }

        fn classify(name: &str) -> bool {
            if name.is_empty() || name.len() > 253 {
                return false;
            }
            let mut last = "";
            for label in name.split('.') {
                if !is_label(label) {
                    return false;
                }
                last = label;
            }
            if last.bytes().all(|b| b.is_ascii_digit()) {
                return name.parse::<Ipv4Addr>().is_ok();
            }
            true
        }

        fn is_label(label: &str) -> bool {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        }

        pub fn parse_port(port: &str) -> Option<u16> {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            port.parse().ok().filter(|p| *p != 0)
        }
    }

    mod old_cors {
        use std::net::{Ipv4Addr, Ipv6Addr};

        pub fn authority(a: &str) -> Result<(String, Option<u16>), String> {
            let (host, port) = split_host_port(a)?;
            let port = match port {
                None => None,
                Some("") => return Err("empty port".into()),
                Some(p) => Some(super::old_host::parse_port(p).ok_or("bad port")?),
            };
            Ok((host, port))
        }

        fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
            if let Some(v6) = authority.strip_prefix('[') {
                let Some((addr, after)) = v6.split_once(']') else {
                    return Err("unclosed".into());
                };
                let addr: Ipv6Addr = addr.parse().map_err(|_| String::from("not v6"))?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or("after")?),
                };
                return Ok((format!("[{}]", super::serialise_ipv6(addr)), port));
            }
            let (host, port) = authority
                .split_once(':')
                .map_or((authority, None), |(h, p)| (h, Some(p)));
            Ok((parse_host(host)?, port))
        }

        fn parse_host(host: &str) -> Result<String, String> {
            if host.is_empty() {
                return Err("no host".into());
            }
            if let Some(c) = host
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
            {
                return Err(format!("{c:?}"));
            }
            if host.split('.').any(str::is_empty) {
                return Err("empty label".into());
            }
            let host = host.to_ascii_lowercase();
            let last = host.rsplit('.').next().unwrap_or_default();
            let numeric = !last.is_empty()
                && (last.bytes().all(|b| b.is_ascii_digit())
                    || last
                        .strip_prefix("0x")
                        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
            if numeric {
                let ip: Ipv4Addr = host.parse().map_err(|_| String::from("v4"))?;
                return Ok(ip.to_string());
            }
            Ok(host)
        }
    }

    /// Host as the Host check reports it.
    fn new_host(v: &str) -> Option<(String, Option<u16>)> {
        parse_authority(v, Syntax::HostHeader)
            .ok()
            .map(|a| (a.host.to_ascii_lowercase(), a.port))
    }

    /// Host as the CORS config serialises it; the error only as a kind.
    fn new_origin(v: &str) -> Result<(String, Option<u16>), AuthorityError> {
        let a = parse_authority(v, Syntax::Origin)?;
        let host = match a.kind {
            HostKind::Ipv6(addr) => format!("[{}]", serialise_ipv6(addr)),
            HostKind::Ipv4(addr) => addr.to_string(),
            HostKind::Name => a.host.to_ascii_lowercase(),
        };
        Ok((host, a.port))
    }

    /// The old CORS message for each new error kind (the config module
    /// words them; here only which problem it was matters).
    fn old_message(e: AuthorityError) -> String {
        match e {
            AuthorityError::UnclosedBracket => "unclosed".into(),
            AuthorityError::NotIpv6 => "not v6".into(),
            AuthorityError::AfterIpv6 => "after".into(),
            AuthorityError::EmptyHost => "no host".into(),
            AuthorityError::HostChar(c) => format!("{c:?}"),
            AuthorityError::EmptyLabel => "empty label".into(),
            AuthorityError::NotDnsName => "dns".into(),
            AuthorityError::NotIpv4 => "v4".into(),
            AuthorityError::EmptyPort => "empty port".into(),
            AuthorityError::BadPort => "bad port".into(),
        }
    }

    /// Short strings over the characters that matter to the grammar, so
    /// that the interesting edges (`[`, `]`, `:`, `.`, `0x`, `_`, `-`,
    /// digits) come up often.
    fn raw() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-fA-FxX0-9._:\\[\\]@ %-]{0,24}").unwrap()
    }

    /// Near misses: labels that are nearly names, numbers or hex, a
    /// bracketed part that is nearly IPv6, and nearly ports, so that both
    /// readings' edges come up often.
    fn tricky() -> impl Strategy<Value = String> {
        let label = proptest::string::string_regex(
            "[a-zA-Z0-9_-]{0,4}|0[xX][0-9a-fA-F]{0,3}|[0-9]{1,4}|[a-z]{60,66}",
        )
        .unwrap();
        let name = prop::collection::vec(label, 1..5).prop_map(|ls| ls.join("."));
        let v6 = proptest::string::string_regex("\\[[0-9a-fA-F:.%]{0,12}\\]?").unwrap();
        let host = prop_oneof![3 => name, 1 => v6];
        let port = prop::option::of(proptest::string::string_regex("[0-9+:]{0,6}").unwrap());
        (host, port).prop_map(|(h, p)| match p {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    }

    /// Well-formed authorities: names, IPv4 and IPv6 literals, with or
    /// without a port. Labels start with a letter so that no name is read
    /// as a number.
    fn valid() -> impl Strategy<Value = String> {
        let label =
            proptest::string::string_regex("[a-zA-Z]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?").unwrap();
        let name = prop::collection::vec(label, 1..4).prop_map(|ls| ls.join("."));
        let v4 = any::<[u8; 4]>().prop_map(|b| Ipv4Addr::from(b).to_string());
        let v6 = any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s)));
        let host = prop_oneof![name, v4, v6];
        (host, prop::option::of(1u16..=u16::MAX)).prop_map(|(h, p)| match p {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn host_header_reading_is_unchanged(v in prop_oneof![raw(), tricky(), valid()]) {
            prop_assert_eq!(new_host(&v), old_host::parse_authority(&v));
        }

        #[test]
        fn origin_reading_is_unchanged(v in prop_oneof![raw(), tricky(), valid()]) {
            prop_assert_eq!(new_origin(&v).map_err(old_message), old_cors::authority(&v));
        }

        /// The one-pass shortcut never accepts a name the full checks
        /// refuse, nor reads one differently, under either syntax.
        #[test]
        fn the_shortcut_agrees_with_the_full_checks(v in prop_oneof![raw(), tricky(), valid()]) {
            for syntax in [Syntax::HostHeader, Syntax::Origin] {
                if let Some(kind) = quick_classify(&v, syntax) {
                    prop_assert_eq!(classify_fully(&v, syntax), Ok(kind), "{:?}", v);
                }
                prop_assert_eq!(classify_name(&v, syntax), classify_fully(&v, syntax));
            }
        }

        #[test]
        fn well_formed_authorities_round_trip(v in valid()) {
            for syntax in [Syntax::HostHeader, Syntax::Origin] {
                let a = parse_authority(&v, syntax).unwrap();
                let again = match a.port {
                    Some(p) => format!("{}:{p}", a.host),
                    None => a.host.to_string(),
                };
                prop_assert_eq!(&again, &v);
                // The serialised origin form reads back as itself.
                let (host, port) = new_origin(&v).unwrap();
                let ser = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                };
                prop_assert_eq!(new_origin(&ser).unwrap(), new_origin(&v).unwrap());
            }
        }
    }
}

//! Where a request was sent: whether it came over HTTPS, and the origin
//! (`https://api.example.com`) the browser addressed — the one rule the
//! gateway's proxy path, its decision endpoint and the library's layers
//! all use for the HTTPS redirect and the CSRF origin check.
//!
//! What a client says about the connection counts only from a trusted
//! proxy: `X-Forwarded-Host` and `X-Forwarded-Proto` from anyone else are
//! ignored here (and stripped before forwarding).

use crate::host::HostError;
use http::{HeaderMap, Uri};

/// How a request reached this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrival {
    /// The connection is HTTPS as far as this server knows: it terminated
    /// TLS itself, or it is told it is only ever reached over HTTPS.
    pub tls: bool,
    /// The peer is a trusted proxy, so its `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` describe the browser's connection.
    pub trusted_peer: bool,
}

/// Whether the browser's request came over HTTPS: the connection is TLS,
/// or a trusted proxy says `X-Forwarded-Proto: https`, once (the scheme
/// is case-insensitive, RFC 3986 §3.1; a repeated field is not https).
pub fn is_https(arrival: Arrival, headers: &HeaderMap) -> bool {
    if arrival.tls {
        return true;
    }
    if !arrival.trusted_peer {
        return false;
    }
    // Exactly one: a proxy that appends instead of overwriting would pass
    // on a client's own `https` before its `http`.
    let mut proto = headers.get_all("x-forwarded-proto").iter();
    match (proto.next(), proto.next()) {
        (Some(v), None) => v.as_bytes().eq_ignore_ascii_case(b"https"),
        _ => false,
    }
}

/// What a trusted proxy says the browser's host was: `None` when the peer
/// is not trusted or sent no `X-Forwarded-Host`; `Some(Err)` when the
/// field repeats or is not text (the host check refuses that; the origin
/// has none).
pub fn forwarded_host(arrival: Arrival, headers: &HeaderMap) -> Option<Result<&str, HostError>> {
    if !arrival.trusted_peer {
        return None;
    }
    let mut xfh = headers.get_all("x-forwarded-host").iter();
    match (xfh.next(), xfh.next()) {
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().map_err(|_| HostError::Malformed)),
        (Some(_), Some(_)) => Some(Err(HostError::Repeated)),
    }
}

/// The host the browser addressed: a trusted proxy's single
/// `X-Forwarded-Host`, else the request target's authority (HTTP/2's
/// `:authority`, an absolute-form target), else `Host`. `None` when there
/// is none, or it repeats, or it is not text.
pub fn browser_host<'a>(arrival: Arrival, uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(forwarded) = forwarded_host(arrival, headers) {
        return forwarded.ok();
    }
    if let Some(a) = uri.authority() {
        return Some(a.as_str());
    }
    headers.get(http::header::HOST)?.to_str().ok()
}

/// The origin the browser addressed, serialised as a browser serialises
/// `Origin` (RFC 6454 §6.2): scheme, lower-case host, and the port only
/// when it is not the scheme's default. Compared with the request's
/// `Origin` by the CSRF check.
pub fn browser_origin(arrival: Arrival, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = browser_host(arrival, uri, headers)?;
    let https = is_https(arrival, headers);
    let (scheme, default_port) = if https {
        ("https", ":443")
    } else {
        ("http", ":80")
    };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    let mut o = String::with_capacity(scheme.len() + 3 + host.len());
    o.push_str(scheme);
    o.push_str("://");
    o.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }
    const DIRECT: Arrival = Arrival {
        tls: false,
        trusted_peer: false,
    };
    const PROXY: Arrival = Arrival {
        tls: false,
        trusted_peer: true,
    };
    const TLS: Arrival = Arrival {
        tls: true,
        trusted_peer: false,
    };

    #[test]
    fn forwarded_fields_count_only_from_a_trusted_proxy() {
        let hs = h(&[
            ("host", "internal:8080"),
            ("x-forwarded-host", "API.example.com"),
            ("x-forwarded-proto", "HTTPS"),
        ]);
        let uri = Uri::from_static("/x");
        assert_eq!(
            browser_origin(DIRECT, &uri, &hs).as_deref(),
            Some("http://internal:8080")
        );
        assert_eq!(
            browser_origin(PROXY, &uri, &hs).as_deref(),
            Some("https://api.example.com")
        );
        assert!(!is_https(DIRECT, &hs));
        assert!(is_https(PROXY, &hs));
        // Appended by a proxy after the client's own: not believed.
        let twice = h(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ]);
        assert!(!is_https(PROXY, &twice));
    }

    #[test]
    fn default_ports_are_left_out_and_others_kept() {
        let uri = Uri::from_static("/");
        let hs = h(&[("host", "api.test:443")]);
        assert_eq!(
            browser_origin(TLS, &uri, &hs).as_deref(),
            Some("https://api.test")
        );
        assert_eq!(
            browser_origin(DIRECT, &uri, &hs).as_deref(),
            Some("http://api.test:443")
        );
        let hs = h(&[("host", "api.test:80")]);
        assert_eq!(
            browser_origin(DIRECT, &uri, &hs).as_deref(),
            Some("http://api.test")
        );
    }

    #[test]
    fn the_target_authority_comes_before_host_and_repeats_refuse() {
        let uri = Uri::from_static("https://Over.test/x");
        let hs = h(&[("host", "host.test")]);
        assert_eq!(
            browser_origin(DIRECT, &uri, &hs).as_deref(),
            Some("http://over.test")
        );
        let hs = h(&[
            ("x-forwarded-host", "a.test"),
            ("x-forwarded-host", "b.test"),
        ]);
        assert_eq!(browser_origin(PROXY, &Uri::from_static("/"), &hs), None);
        assert_eq!(
            browser_origin(DIRECT, &Uri::from_static("/"), &HeaderMap::new()),
            None
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = String> {
            "[A-Za-z0-9.-]{1,20}(:[0-9]{1,5})?"
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            /// What a client says about the connection changes nothing
            /// unless the peer is a trusted proxy; and an origin is always
            /// lower case, with no default port.
            #[test]
            fn forwarded_fields_from_an_untrusted_peer_change_nothing(
                host in host(),
                xfh in host(),
                proto in "(https|HTTPS|http|Https|ftp)",
                tls in any::<bool>(),
            ) {
                let mut plain = HeaderMap::new();
                plain.insert(http::header::HOST, HeaderValue::from_str(&host).unwrap());
                let mut spoofed = plain.clone();
                spoofed.insert("x-forwarded-host", HeaderValue::from_str(&xfh).unwrap());
                spoofed.insert("x-forwarded-proto", HeaderValue::from_str(&proto).unwrap());
                let a = Arrival { tls, trusted_peer: false };
                let uri = Uri::from_static("/");
                prop_assert_eq!(browser_origin(a, &uri, &plain), browser_origin(a, &uri, &spoofed));
                prop_assert_eq!(is_https(a, &plain), is_https(a, &spoofed));
                let trusted = Arrival { tls, trusted_peer: true };
                for o in [browser_origin(a, &uri, &plain), browser_origin(trusted, &uri, &spoofed)] {
                    let o = o.unwrap();
                    prop_assert_eq!(o.to_ascii_lowercase(), o.clone());
                    prop_assert!(!o.starts_with("https://") || !o.ends_with(":443"));
                    prop_assert!(!o.starts_with("http://") || !o.ends_with(":80"));
                }
                // A trusted proxy's word decides the scheme.
                prop_assert_eq!(
                    is_https(trusted, &spoofed),
                    tls || proto.eq_ignore_ascii_case("https")
                );
            }
        }
    }
}

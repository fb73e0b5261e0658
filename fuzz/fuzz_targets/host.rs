//! Trusted hosts: `host::TrustedHosts::parse` patterns, `request_host`
//! and `check_authority` with arbitrary `Host` / authority bytes.
//!
//! Input: lines.
//! 1. trusted_hosts patterns, separated by spaces (none = any host);
//! 2. the request target (`/`, `http://a.example:80/x`, `a:443`, `*`);
//! 3. the HTTP version: `0.9`, `1.0`, `1.1` (anything else), `2`, `3`;
//! 4. and on: `Host` header values, raw bytes, one header per line; each
//!    is also checked on its own with `check_authority`.
//!
//! Invariants:
//! - an accepted host is lower case, not empty (unless HTTP/1.0 without
//!   `Host` under any-host rules), holds a `:` only inside an IPv6
//!   literal's brackets, has no port 0, and the rules allow it;
//! - what is accepted under some rules is accepted, the same, under the
//!   any-host rules, and also when the value is upper-cased;
//! - a `request_host` answer names the same host as the request target's
//!   authority and any single `Host` header, each checked on its own;
//! - every exact pattern that parses is accepted as an authority by its own
//!   rules, and `*.d` allows `x.d` but not `d`.
#![no_main]

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;
use portcullis_core::host::{self, HostError, RequestHost, TrustedHosts};
use portcullis_fuzz::{lines, text};

fuzz_target!(|data: &[u8]| {
    let mut it = lines(data);
    let patterns: Vec<String> = text(it.next().unwrap_or_default())
        .split(' ')
        .filter(|p| !p.is_empty())
        .take(8)
        .map(str::to_owned)
        .collect();
    let target = it.next().unwrap_or(b"/");
    let version = match it.next().unwrap_or_default() {
        b"0.9" => Version::HTTP_09,
        b"1.0" => Version::HTTP_10,
        b"2" => Version::HTTP_2,
        b"3" => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    let host_lines: Vec<&[u8]> = it.take(4).collect();

    let any = TrustedHosts::default();
    assert!(any.is_any());
    let rules = TrustedHosts::parse(&patterns).unwrap_or_default();

    // Each pattern on its own.
    for p in &patterns {
        let Ok(own) = TrustedHosts::parse(std::slice::from_ref(p)) else {
            continue;
        };
        assert!(!own.is_any(), "{p:?} parsed to no rule");
        match p.strip_prefix("*.") {
            // A subdomain of a 252- or 253-character domain is too long to
            // be a host name at all.
            Some(domain) if domain.len() + 2 <= 253 => {
                let sub = format!("x.{domain}");
                assert!(
                    host::check_authority(&own, &sub).is_ok(),
                    "{p:?} refuses {sub:?}"
                );
                assert_eq!(
                    host::check_authority(&own, domain),
                    Err(HostError::Untrusted),
                    "{p:?} allows its bare domain"
                );
            }
            Some(_) => {}
            None => {
                let got = host::check_authority(&own, p);
                assert!(
                    got.is_ok(),
                    "{p:?} is not accepted by its own rule: {got:?}"
                );
            }
        }
    }

    // Host values one by one.
    for raw in &host_lines {
        let value = text(raw);
        let value: &str = &value;
        let got = host::check_authority(&rules, value);
        if let Ok(h) = &got {
            check_host(&rules, h, value);
            let under_any = host::check_authority(&any, value);
            assert_eq!(under_any.as_ref(), Ok(h), "any-host rules disagree");
            let upper = value.to_ascii_uppercase();
            let up = host::check_authority(&rules, &upper).map(|u| owned(&u));
            assert_eq!(up.as_ref(), Ok(&owned(h)), "case changed the answer");
        }
        if got == Err(HostError::Malformed) {
            assert_eq!(
                host::check_authority(&any, value),
                Err(HostError::Malformed)
            );
        }
    }

    // The request as a whole.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for raw in &host_lines {
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            headers.append(HOST, v);
        }
    }
    let got = host::request_host(&rules, version, &uri, &headers);
    let Ok(h) = got else { return };
    assert!(rules.allows(&h.name));
    if h.name.is_empty() {
        assert!(rules.is_any() && matches!(version, Version::HTTP_09 | Version::HTTP_10));
        assert!(uri.authority().is_none() && headers.get(HOST).is_none());
        return;
    }
    let host_values: Vec<&HeaderValue> = headers.get_all(HOST).iter().collect();
    assert!(host_values.len() <= 1, "accepted a repeated Host");
    if let Some(a) = uri.authority() {
        check_host(&rules, &h, a.as_str());
        assert_eq!(host::check_authority(&rules, a.as_str()).as_ref(), Ok(&h));
    }
    if let Some(v) = host_values.first() {
        let Ok(v) = v.to_str() else {
            panic!("accepted an unreadable Host");
        };
        check_host(&rules, &h, v);
        assert_eq!(
            host::check_authority(&rules, v).as_ref(),
            Ok(&h),
            "the Host header names another host"
        );
    } else {
        assert!(
            uri.authority().is_some() && version != Version::HTTP_11,
            "accepted HTTP/1.1 without Host"
        );
    }
});

fn owned(h: &RequestHost<'_>) -> (String, Option<u16>) {
    (h.name.to_string(), h.port)
}

/// What every accepted host looks like, given the value it was read from.
fn check_host(rules: &TrustedHosts, h: &RequestHost<'_>, value: &str) {
    let name: &str = &h.name;
    assert!(!name.is_empty(), "accepted an empty host from {value:?}");
    assert!(
        !name.bytes().any(|b| b.is_ascii_uppercase()),
        "not lower-cased: {name:?}"
    );
    assert!(rules.allows(name), "rules do not allow what they accepted");
    assert_ne!(h.port, Some(0), "port 0 accepted");
    if name.starts_with('[') {
        assert!(name.ends_with(']'), "unclosed IPv6 literal {name:?}");
    } else {
        assert!(!name.contains(':'), "unbracketed colon in {name:?}");
    }
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)),
        "unexpected character in {name:?}"
    );
    assert!(
        value.to_ascii_lowercase().starts_with(name),
        "{name:?} is not the start of {value:?}"
    );
    assert!(!name.ends_with('.'), "trailing dot accepted: {name:?}");
}

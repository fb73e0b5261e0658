//! Where credentials are read from: `credential::extract` for every
//! `SchemeSet`, and `credential::cookie`, `percent_decode`,
//! `strip_query_param`, `strip_cookie`.
//!
//! Input: lines. `Name: value` lines are request headers (Authorization,
//! X-API-Key and Cookie are the interesting ones; repeats are kept); a
//! line starting with `?` is the query string (the last one wins); a line
//! starting with `!` names one more cookie / query parameter to look for
//! and strip, besides the default names.
//!
//! Invariants:
//! - the empty set finds nothing; a found credential's scheme is in the set;
//! - the set of every scheme decides every subset: if it finds one
//!   credential, each subset holding that scheme finds the same one and
//!   every other subset finds nothing; if it finds nothing, so does every
//!   subset; a subset's ambiguity is the full set's too;
//! - the order schemes are listed in changes nothing but the outcome's
//!   wording;
//! - after `strip_query_param(q, n)`, the query holds no parameter `n`
//!   (extract with `api_key_query` named `n` finds nothing) and what is
//!   kept is a subsequence of the original pairs; likewise
//!   `strip_cookie(h, n)` leaves no cookie `n` for `cookie` to find;
//! - `percent_decode` of an all-escaped spelling of a decoded value gives
//!   the value back, and input without `%` or `+` is returned borrowed.
#![no_main]

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis_core::credential::{
    self, CredentialNames, Extracted, Scheme, SchemeSet, cookie, percent_decode, strip_cookie,
    strip_query_param,
};
use portcullis_fuzz::{header_line, lines, text};
use std::borrow::Cow;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut query: Option<String> = None;
    let mut extra_names: Vec<String> = Vec::new();
    for line in lines(data) {
        if let Some(q) = line.strip_prefix(b"?") {
            query = Some(text(q).into_owned());
        } else if let Some(n) = line.strip_prefix(b"!") {
            extra_names.push(text(n).into_owned());
        } else if let Some((name, value)) = header_line(line) {
            headers.append(name, value);
        }
    }
    let query = query.as_deref();
    let names = CredentialNames::default();

    check_subsets(&names, &headers, query);

    // Custom names: the extra ones read as the header, query and cookie
    // names (a header name only when it is one).
    for n in extra_names.iter().take(2) {
        let mut custom = CredentialNames {
            query: n.clone(),
            cookie: n.clone(),
            session_cookie: format!("{n}_s"),
            ..CredentialNames::default()
        };
        if let Ok(h) = HeaderName::from_bytes(n.as_bytes()) {
            custom.header = h;
        }
        check_subsets(&custom, &headers, query);
    }

    // Stripping.
    let mut strip_names: Vec<&str> = vec![&names.query, &names.session_cookie];
    strip_names.extend(extra_names.iter().map(String::as_str).take(4));
    for name in strip_names {
        if let Some(q) = query {
            check_strip_query(q, name);
        }
        check_strip_cookie(&headers, name);
        // cookie() never panics and finds only a non-empty value.
        if let Ok(Some(v)) = cookie(&headers, name) {
            assert!(!v.is_empty());
        }
    }

    // percent_decode on the query and on each pair.
    if let Some(q) = query {
        check_percent_decode(q);
        for pair in q.split('&').take(16) {
            for half in pair.splitn(2, '=') {
                check_percent_decode(half);
            }
        }
    }
});

/// Every subset of the six schemes (in `Scheme::ALL` order), checked
/// against the full set, plus the full set in reverse order.
fn check_subsets(names: &CredentialNames, headers: &HeaderMap, query: Option<&str>) {
    let all = SchemeSet::new(&Scheme::ALL);
    let full = credential::extract(&all, names, headers, query);
    let mut reversed = Scheme::ALL;
    reversed.reverse();
    let rev = credential::extract(&SchemeSet::new(&reversed), names, headers, query);
    match (&full, &rev) {
        (Extracted::Missing, Extracted::Missing) => {}
        (Extracted::One(a), Extracted::One(b)) => assert_eq!(a, b),
        (Extracted::Ambiguous(_), Extracted::Ambiguous(_)) => {}
        (a, b) => panic!("scheme order changed the outcome: {a:?} vs {b:?}"),
    }
    for mask in 0u32..64 {
        let schemes: Vec<Scheme> = Scheme::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| s)
            .collect();
        let set = SchemeSet::new(&schemes);
        let got = credential::extract(&set, names, headers, query);
        if set.is_public() {
            assert_eq!(got, Extracted::Missing, "the empty set found something");
        }
        if let Extracted::One(p) = &got {
            assert!(
                set.accepts(p.scheme),
                "found {:?} outside the set",
                p.scheme
            );
        }
        match (&full, &got) {
            (Extracted::One(p), got) if set.accepts(p.scheme) => {
                assert_eq!(got, &Extracted::One(p.clone()), "subset {mask:#b}")
            }
            (Extracted::One(_) | Extracted::Missing, got) => {
                assert_eq!(got, &Extracted::Missing, "subset {mask:#b}")
            }
            (Extracted::Ambiguous(_), _) => {}
        }
        if matches!(got, Extracted::Ambiguous(_)) {
            assert!(
                matches!(full, Extracted::Ambiguous(_)),
                "subset {mask:#b} ambiguous, the full set not"
            );
        }
    }
}

fn check_strip_query(q: &str, name: &str) {
    let stripped = strip_query_param(q, name);
    let Some(s) = stripped else { return };
    assert!(!s.is_empty(), "strip_query_param returned an empty query");
    // No parameter `name` is left.
    let names = CredentialNames {
        query: name.to_owned(),
        ..CredentialNames::default()
    };
    let set = SchemeSet::new(&[Scheme::ApiKeyQuery]);
    let no_headers = HeaderMap::new();
    let got = credential::extract(&set, &names, &no_headers, Some(&s));
    assert_eq!(
        got,
        Extracted::Missing,
        "a stripped query still yields {name:?}: {s:?}"
    );
    // What is kept is a subsequence of the original pairs.
    let mut orig = q.split('&');
    for kept in s.split('&') {
        assert!(
            orig.any(|p| p == kept),
            "strip_query_param invented {kept:?}"
        );
    }
    // Stripping again changes nothing.
    assert_eq!(strip_query_param(&s, name).as_deref(), Some(s.as_str()));
}

fn check_strip_cookie(headers: &HeaderMap, name: &str) {
    let mut after = HeaderMap::new();
    for h in headers.get_all(COOKIE) {
        let Ok(s) = h.to_str() else {
            // cookie() skips unreadable lines; so would the gateway's strip.
            continue;
        };
        if let Some(kept) = strip_cookie(s, name) {
            assert!(!kept.is_empty());
            let Ok(v) = HeaderValue::from_str(&kept) else {
                panic!("strip_cookie made an invalid header value: {kept:?}");
            };
            assert_eq!(strip_cookie(&kept, name).as_deref(), Some(kept.as_str()));
            after.append(COOKIE, v);
        }
    }
    assert_eq!(
        cookie(&after, name),
        Ok(None),
        "a stripped Cookie header still yields {name:?}"
    );
    let names = CredentialNames {
        cookie: name.to_owned(),
        ..CredentialNames::default()
    };
    let set = SchemeSet::new(&[Scheme::ApiKeyCookie]);
    assert_eq!(
        credential::extract(&set, &names, &after, None),
        Extracted::Missing
    );
}

fn check_percent_decode(s: &str) {
    let Some(d) = percent_decode(s) else { return };
    if !s.contains(['%', '+']) {
        assert!(matches!(d, Cow::Borrowed(_)));
        assert_eq!(d, s);
    }
    assert!(d.len() <= s.len(), "decoding made {s:?} longer");
    let mut escaped = String::with_capacity(d.len() * 3);
    for b in d.bytes() {
        escaped.push_str(&format!("%{b:02X}"));
    }
    assert_eq!(
        percent_decode(&escaped).as_deref(),
        Some(d.as_ref()),
        "escaping {d:?} does not round-trip"
    );
}

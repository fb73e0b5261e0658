//! What another OpenID provider sends: `oidc::discovery_jwks_uri`,
//! `oidc::cache_max_age` and `oidc::scopes_from_claim`.
//!
//! Input: line 1 is tried as `Cache-Control` values (split on `;`); the
//! whole input is a discovery document, and, parsed as JSON, each of its
//! members (and the input itself) is a scope claim.
//!
//! Invariants:
//! - a discovery document is used only when its `issuer` is exactly the
//!   expected one, and then the `jwks_uri` returned is its own;
//! - `no-store` / `no-cache` anywhere mean 0; otherwise a max-age found
//!   is one of the `max-age=` arguments written;
//! - scopes read from a claim are valid scope tokens that were in it
//!   (each in the string or the array), and a `scope` claim is never
//!   read from an array.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::oidc;
use serde_json::Value;

const ISSUER: &str = "https://idp.example.com";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let first = text.lines().next().unwrap_or("");
    let values: Vec<&str> = first.split(';').collect();
    let got = oidc::cache_max_age(values.iter().copied());
    let lower = first.to_ascii_lowercase();
    if lower.contains("no-store") || lower.contains("no-cache") {
        // Only a directive named exactly so counts, so this is one-way.
        if got != Some(0) {
            assert!(
                !first
                    .split([';', ','])
                    .map(|d| d
                        .split('=')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase())
                    .any(|n| n == "no-store" || n == "no-cache")
            );
        }
    }
    if let Some(n) = got.filter(|n| *n > 0) {
        assert!(
            lower.contains(&format!("{n}")),
            "max-age {n} not in {first:?}"
        );
    }

    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    match oidc::discovery_jwks_uri(data, ISSUER) {
        Ok(uri) => {
            let v = parsed.as_ref().expect("used a document that is not JSON");
            assert_eq!(v.get("issuer").and_then(Value::as_str), Some(ISSUER));
            assert_eq!(
                v.get("jwks_uri").and_then(Value::as_str),
                Some(uri.as_str())
            );
        }
        Err(oidc::DiscoveryError::OtherIssuer) => {
            let v = parsed.as_ref().expect("not JSON yet another issuer");
            assert_ne!(v.get("issuer").and_then(Value::as_str), Some(ISSUER));
        }
        Err(_) => {}
    }

    let Some(v) = parsed else { return };
    let mut claims: Vec<&Value> = vec![&v];
    if let Some(o) = v.as_object() {
        claims.extend(o.values());
    }
    for c in claims {
        for string_only in [true, false] {
            let Ok(scopes) = oidc::scopes_from_claim(Some(c), string_only) else {
                continue;
            };
            let written: Vec<String> = match c {
                Value::String(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
                Value::Array(a) => {
                    assert!(!string_only, "a scope claim read from an array");
                    a.iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                }
                Value::Null => Vec::new(),
                other => panic!("scopes read from {other}"),
            };
            for s in scopes.iter() {
                assert!(written.iter().any(|w| w == s), "{s:?} was not in {c}");
                // Each is a scope Portcullis can hold and print back.
                assert!(portcullis_core::Scopes::parse(s).is_ok_and(|p| p.iter().count() == 1));
            }
        }
    }
});

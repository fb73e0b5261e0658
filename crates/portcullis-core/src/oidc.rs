//! What another OpenID provider sends, read as attacker bytes (whoever
//! answers at its URL): the discovery document, the `Cache-Control` of its
//! answers, and the claim its access tokens carry scopes in. The library
//! fetches and verifies (`portcullis::auth::external`); the rules live
//! here, once, with a fuzz target (`fuzz/fuzz_targets/oidc.rs`).

use crate::scope::Scopes;
use serde_json::Value;

/// Most scopes read from one array claim.
pub const MAX_SCOPE_ITEMS: usize = 256;

/// Why a discovery document is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// No `issuer` string.
    #[error("no issuer in it")]
    NoIssuer,
    /// OpenID Connect Discovery §4.3: the document's `issuer` must be
    /// the one it was fetched for, exactly.
    #[error("its issuer is not the configured one (they must be equal, character for character)")]
    OtherIssuer,
    /// No `jwks_uri` string.
    #[error("no jwks_uri in it")]
    NoJwksUri,
}

/// The `jwks_uri` of a discovery document whose `issuer` is exactly
/// `issuer`.
pub fn discovery_jwks_uri(body: &[u8], issuer: &str) -> Result<String, DiscoveryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| DiscoveryError::NotAnObject)?;
    let o = v.as_object().ok_or(DiscoveryError::NotAnObject)?;
    match o.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        Some(_) => return Err(DiscoveryError::OtherIssuer),
        None => return Err(DiscoveryError::NoIssuer),
    }
    o.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(DiscoveryError::NoJwksUri)
}

/// The `max-age` of `Cache-Control` header values, in seconds: zero for
/// `no-store` or `no-cache` (refetch as soon as allowed), `None` when
/// absent or unreadable (a negative or overflowing number, say).
pub fn cache_max_age<'a>(values: impl Iterator<Item = &'a str>) -> Option<u64> {
    let mut found = None;
    for v in values {
        for d in v.split(',') {
            let d = d.trim();
            let (name, arg) = match d.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (d, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(0);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok())
            {
                found = Some(secs);
            }
        }
    }
    found
}

/// A scope claim that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scope claim is not a string of scopes or an array of them")]
pub struct ScopeClaimError;

/// The scopes a claim holds. With `string_only` (the `scope` claim, RFC
/// 9068 §2.2.3) only a space-separated string; otherwise a string or an
/// array of strings (`scp`, `permissions`, `roles`, …). A value that is
/// not a scope Portcullis can hold (spaces inside an array item, a comma,
/// quotes, over 128 characters) refuses the whole claim rather than
/// dropping the scope quietly. Absent or null: no scopes.
pub fn scopes_from_claim(v: Option<&Value>, string_only: bool) -> Result<Scopes, ScopeClaimError> {
    match v {
        None | Some(Value::Null) => Ok(Scopes::empty()),
        Some(Value::String(s)) => {
            Scopes::from_iter_checked(s.split_ascii_whitespace()).map_err(|_| ScopeClaimError)
        }
        Some(Value::Array(a)) if !string_only => {
            if a.len() > MAX_SCOPE_ITEMS {
                return Err(ScopeClaimError);
            }
            let mut items = Vec::with_capacity(a.len());
            for i in a {
                items.push(i.as_str().ok_or(ScopeClaimError)?);
            }
            Scopes::from_iter_checked(items).map_err(|_| ScopeClaimError)
        }
        Some(_) => Err(ScopeClaimError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_control() {
        let m = |v: &[&str]| cache_max_age(v.iter().copied());
        assert_eq!(m(&["public, max-age=300"]), Some(300));
        assert_eq!(m(&["max-age=\"60\""]), Some(60));
        assert_eq!(m(&["max-age=60, no-cache"]), Some(0));
        assert_eq!(m(&["no-store"]), Some(0));
        assert_eq!(m(&["max-age=-1"]), None);
        assert_eq!(m(&["max-age=99999999999999999999999"]), None);
        assert_eq!(m(&[]), None);
        assert_eq!(m(&["public", "MAX-AGE=5"]), Some(5));
    }

    #[test]
    fn discovery() {
        let d = |v: Value| discovery_jwks_uri(v.to_string().as_bytes(), "https://idp.test");
        assert_eq!(
            d(json!({"issuer": "https://idp.test", "jwks_uri": "https://idp.test/k"})),
            Ok("https://idp.test/k".into())
        );
        assert_eq!(
            d(json!({"issuer": "https://idp.test/", "jwks_uri": "x"})),
            Err(DiscoveryError::OtherIssuer)
        );
        assert_eq!(
            d(json!({"issuer": "https://idp.test"})),
            Err(DiscoveryError::NoJwksUri)
        );
        assert_eq!(d(json!({"jwks_uri": "x"})), Err(DiscoveryError::NoIssuer));
        assert_eq!(d(json!([1])), Err(DiscoveryError::NotAnObject));
        assert_eq!(
            discovery_jwks_uri(b"\xff{", "https://idp.test"),
            Err(DiscoveryError::NotAnObject)
        );
    }

    #[test]
    fn scope_claims() {
        let s = |v: Value, only: bool| {
            scopes_from_claim(Some(&v), only).map(|s| s.to_space_separated())
        };
        assert_eq!(s(json!("a b"), true).unwrap(), "a b");
        assert!(s(json!(["a"]), true).is_err());
        assert_eq!(s(json!(["a", "b"]), false).unwrap(), "a b");
        assert_eq!(s(json!("a  b"), false).unwrap(), "a b");
        assert!(s(json!(["a b"]), false).is_err());
        assert!(s(json!(["a,b"]), false).is_err());
        assert!(s(json!([1]), false).is_err());
        assert!(s(json!({"a": 1}), false).is_err());
        assert!(scopes_from_claim(None, true).unwrap().is_empty());
    }
}

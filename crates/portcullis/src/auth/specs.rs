//! What an operator asks for, read once for the CLI and the admin API:
//! the fields of a key to create ([`KeyRequest`]), the scopes of a body or
//! import file ([`ScopeList`]), the `users import` file
//! ([`parse_user_import`]), and the JSON that shows a new key or client
//! (its secret, once) with its record.
//!
//! Nothing here reads HTTP; the admin API checks its own rules on a body
//! first (`crate::admin`), then builds the same [`KeyRequest`] the CLI
//! builds from its flags.

use crate::auth::identity::{IdentityError, NewClientSecret};
use crate::auth::keys::{CreatedKey, KeyError, KeySpec};
use portcullis_core::Scopes;
use portcullis_core::quota::{Refill, RefillPlan};
use portcullis_core::time::parse_duration;
use serde::Deserialize;

/// A key to create, as the CLI's flags or the admin API's body give it;
/// [`KeyRequest::into_spec`] reads it.
#[derive(Default)]
pub struct KeyRequest {
    /// Name.
    pub name: String,
    /// Owner; defaults to the name.
    pub owner: Option<String>,
    /// Scopes, space- or comma-separated; default none.
    pub scopes: Option<String>,
    /// Environment label; default `live`.
    pub env: Option<String>,
    /// Lifetime (`30d`, `1h30m`); default: never expires.
    pub expires_in: Option<String>,
    /// Uses; default unlimited.
    pub uses: Option<i64>,
    /// Refill period, `day` or `month`; needs `uses` or `refill_amount`.
    pub refill: Option<String>,
    /// The uses each refill gives; default `uses`. Needs `refill`.
    pub refill_amount: Option<i64>,
    /// Rate-limit override (`100/minute`).
    pub rate_limit: Option<String>,
    /// Free JSON metadata; default `{}`.
    pub metadata: Option<serde_json::Value>,
}

impl KeyRequest {
    /// The spec: scopes, then lifetime, then refill are read, and the first
    /// mistake is [`KeyError::Invalid`] naming its field. The rest is
    /// checked by [`crate::auth::keys::KeyService::create`].
    pub fn into_spec(self) -> Result<KeySpec, KeyError> {
        let scopes = Scopes::parse(self.scopes.as_deref().unwrap_or(""))
            .map_err(|e| KeyError::Invalid(format!("scopes: {e}")))?;
        let owner = self.owner.unwrap_or_else(|| self.name.clone());
        let mut spec = KeySpec::new(self.name, owner, scopes);
        if let Some(env) = self.env {
            spec.env = env;
        }
        spec.expires_in = self
            .expires_in
            .as_deref()
            .map(|e| parse_duration(e).map_err(|e| KeyError::Invalid(format!("expires_in: {e}"))))
            .transpose()?;
        spec.uses = self.uses;
        spec.rate_limit = self.rate_limit;
        if let Some(m) = self.metadata {
            spec.metadata = m;
        }
        spec.refill = refill_from(self.refill.as_deref(), self.refill_amount, self.uses)?;
        Ok(spec)
    }
}

/// A key's refill from `refill` (`day` / `month`) and an amount, which
/// defaults to `uses`.
fn refill_from(
    refill: Option<&str>,
    amount: Option<i64>,
    uses: Option<i64>,
) -> Result<Option<RefillPlan>, KeyError> {
    let Some(r) = refill else {
        if amount.is_some() {
            return Err(KeyError::Invalid(
                "refill_amount: needs refill (day or month)".into(),
            ));
        }
        return Ok(None);
    };
    let every = Refill::parse(r).ok_or_else(|| {
        KeyError::Invalid(format!(
            "refill: {:?} is not day or month",
            r.chars().take(32).collect::<String>()
        ))
    })?;
    let amount = amount.or(uses).ok_or_else(|| {
        KeyError::Invalid(
            "refill: say how many uses each refill gives (uses or refill_amount)".into(),
        )
    })?;
    Ok(Some(RefillPlan { every, amount }))
}

/// The JSON for a newly created key: the key itself (shown once) and its record.
pub fn created_json(c: &CreatedKey) -> serde_json::Value {
    let mut v = serde_json::to_value(&c.record).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "key".into(),
            serde_json::Value::String(c.key.expose().to_owned()),
        );
    }
    v
}

/// The JSON for a new client: its id and secret (shown once) and its
/// record.
pub fn client_created_json(c: &NewClientSecret) -> serde_json::Value {
    let mut v = serde_json::to_value(&c.record).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "client_secret".into(),
            serde_json::Value::String(c.secret.expose().clone()),
        );
    }
    v
}

/// Splits a comma- or space-separated list, dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Scopes as JSON gives them: one string, space- or comma-separated
/// (`"data:read data:write"`), or a list of single scopes. The admin API
/// checks its own rules on it before reading it; an import file is read
/// by [`scopes_of`].
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ScopeList {
    /// Space- or comma-separated.
    One(String),
    /// One scope per item.
    Many(Vec<String>),
}

/// Scopes from a string (space- or comma-separated) or a list of single
/// scopes; none when left out.
fn scopes_of(s: Option<ScopeList>) -> Result<Scopes, String> {
    let parsed = match s {
        None => Ok(Scopes::empty()),
        Some(ScopeList::One(s)) => Scopes::parse(&s),
        Some(ScopeList::Many(v)) => {
            if v.iter().any(|s| s.contains([' ', ','])) {
                return Err("scopes: each list item must be a single scope".into());
            }
            Scopes::from_iter_checked(v.iter().map(String::as_str))
        }
    };
    parsed.map_err(|e| format!("scopes: {e}"))
}

#[derive(Deserialize)]
struct ImportEntry {
    username: Option<String>,
    hashed_password: String,
    #[serde(default)]
    scopes: Option<ScopeList>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// One user to import: name, hash, scopes, disabled.
pub type ImportedUser = (String, String, Scopes, bool);

/// Reads a `users import` file: a JSON array of
/// `{"username","hashed_password","scopes"?,"disabled"?}` or an object
/// mapping each name to such an object (FastAPI's `fake_users_db`; the
/// inner `username`, when present, must match its key). Other fields
/// (`full_name`, `email`, …) are ignored. Every mistake is
/// [`IdentityError::Invalid`] naming the entry.
pub fn parse_user_import(bytes: &[u8]) -> Result<Vec<ImportedUser>, IdentityError> {
    let invalid = |m: String| IdentityError::Invalid(m);
    let top: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    // (label for messages, the key in the object form, the entry)
    let entries: Vec<(String, Option<String>, serde_json::Value)> = match top {
        serde_json::Value::Array(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("entry {}", i + 1), None, e))
            .collect(),
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, e)| (format!("user {k:?}"), Some(k), e))
            .collect(),
        _ => {
            return Err(invalid(
                "expected an array of users or an object mapping names to users".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (label, key, v) in entries {
        let e: ImportEntry =
            serde_json::from_value(v).map_err(|e| invalid(format!("{label}: {e}")))?;
        let username = match (key, e.username) {
            (Some(k), Some(u)) if k != u => {
                return Err(invalid(format!(
                    "{label}: its username {u:?} differs from its key"
                )));
            }
            (Some(k), _) => k,
            (None, Some(u)) => u,
            (None, None) => return Err(invalid(format!("{label}: missing field `username`"))),
        };
        let scopes = scopes_of(e.scopes).map_err(|m| invalid(format!("{label}: {m}")))?;
        out.push((
            username,
            e.hashed_password,
            scopes,
            e.disabled.unwrap_or(false),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW";

    #[test]
    fn import_array_and_map() {
        let arr = format!(
            r#"[{{"username":"a","hashed_password":"{H}","scopes":["x","y"]}},
               {{"username":"b","hashed_password":"{H}","scopes":"x y","disabled":true}}]"#
        );
        let v = parse_user_import(arr.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "a");
        assert_eq!(v[0].2.to_space_separated(), "x y");
        assert!(v[1].3);

        let map = format!(
            r#"{{"johndoe": {{"username":"johndoe","full_name":"John Doe","email":"j@example.com","hashed_password":"{H}","disabled":false}},
                "alice": {{"hashed_password":"{H}"}}}}"#
        );
        let mut v = parse_user_import(map.as_bytes()).unwrap();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(v[0].0, "alice");
        assert_eq!(v[1].0, "johndoe");
        assert!(!v[1].3);
    }

    #[test]
    fn import_mistakes() {
        let bad = [
            "3".to_owned(),
            "not json".to_owned(),
            r#"[{"username":"a"}]"#.to_owned(),
            format!(r#"[{{"hashed_password":"{H}"}}]"#),
            format!(r#"{{"a": {{"username":"b","hashed_password":"{H}"}}}}"#),
            format!(r#"[{{"username":"a","hashed_password":"{H}","scopes":["x y"]}}]"#),
            format!(r#"[{{"username":"a","hashed_password":"{H}","disabled":"no"}}]"#),
        ];
        for b in bad {
            let e = parse_user_import(b.as_bytes()).unwrap_err();
            assert!(matches!(e, IdentityError::Invalid(_)), "{b}");
        }
    }

    #[test]
    fn key_request_defaults_and_refill() {
        let s = KeyRequest {
            name: "n".into(),
            scopes: Some("a b".into()),
            uses: Some(5),
            refill: Some("day".into()),
            ..KeyRequest::default()
        }
        .into_spec()
        .unwrap();
        assert_eq!(s.owner, "n");
        assert_eq!(s.env, "live");
        assert_eq!(s.refill.map(|r| r.amount), Some(5));

        let e = KeyRequest {
            name: "n".into(),
            refill_amount: Some(3),
            ..KeyRequest::default()
        }
        .into_spec()
        .unwrap_err();
        assert!(matches!(e, KeyError::Invalid(m) if m.starts_with("refill_amount")));
    }
}

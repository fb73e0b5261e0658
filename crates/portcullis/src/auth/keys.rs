//! Managing keys: create, rotate, revoke, disable — each with its audit
//! event, committed before the caller is told it happened.

use crate::auth::verifier::Verifier;
use crate::clock::SharedClock;
use crate::store::{
    KeyChange, KeyFilter, KeyRecord, KeySettings, LastAdmin, NewAudit, NewKey, Store, StoreError,
};
use portcullis_core::key::{RANDOM_BYTES, valid_env};
use portcullis_core::{ApiKey, Scopes, base62};
use std::sync::Arc;

/// Why a key operation failed. Messages are safe to show the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A field is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A field is larger than allowed; the message names it. A size in
    /// bytes is no rule a JSON Schema can state, so the admin API answers
    /// it as it answers a body over its limit (413), not as a field that
    /// breaks its schema (422).
    #[error("{0}")]
    TooLarge(String),
    /// No such key.
    #[error("no key with id {0:?}")]
    NotFound(String),
    /// The key's state forbids the change.
    #[error("{0}")]
    Conflict(&'static str),
    /// Revoking or disabling the key would leave no active admin key
    /// ([`LastAdmin`]).
    #[error("{id} is the last active admin key: {} it would leave no key that can use the admin API", gerund(.action))]
    LastAdminKey {
        /// The key's id.
        id: String,
        /// `revoke`, `disable` or `update`.
        action: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The OS random source failed.
    #[error("the system random source failed")]
    Random,
}

fn gerund(action: &str) -> &'static str {
    match action {
        "disable" => "disabling",
        "update" => "changing",
        _ => "revoking",
    }
}

impl KeyError {
    /// As [`KeyError::from_store`], for a change named `action` that the
    /// last-admin rule may refuse.
    fn from_change(e: StoreError, id: &str, action: &'static str) -> KeyError {
        match e {
            StoreError::LastAdminKey => KeyError::LastAdminKey {
                id: id.chars().take(64).collect(),
                action,
            },
            e => KeyError::from_store(e, id),
        }
    }

    fn from_store(e: StoreError, id: &str) -> KeyError {
        match e {
            StoreError::NotFound => KeyError::NotFound(id.chars().take(64).collect()),
            StoreError::Conflict(m) => KeyError::Conflict(m),
            e => KeyError::Store(e),
        }
    }
}

/// What a new key should be.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// A name for people.
    pub name: String,
    /// Who the key acts for.
    pub owner: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Environment label (`live`).
    pub env: String,
    /// Lifetime in seconds from now.
    pub expires_in: Option<i64>,
    /// Number of uses.
    pub uses: Option<i64>,
    /// Refill the uses to this plan's amount every day or month.
    pub refill: Option<portcullis_core::quota::RefillPlan>,
    /// Rate-limit override (`100/minute`).
    pub rate_limit: Option<String>,
    /// Free JSON metadata (an object).
    pub metadata: serde_json::Value,
}

impl KeySpec {
    /// A spec with defaults: env `live`, no expiry, unlimited uses.
    pub fn new(name: impl Into<String>, owner: impl Into<String>, scopes: Scopes) -> KeySpec {
        KeySpec {
            name: name.into(),
            owner: owner.into(),
            scopes,
            env: "live".into(),
            expires_in: None,
            uses: None,
            refill: None,
            rate_limit: None,
            metadata: serde_json::json!({}),
        }
    }

    fn check(&self) -> Result<(), KeyError> {
        check_label("name", &self.name)?;
        check_label("owner", &self.owner)?;
        if !valid_env(&self.env) {
            return Err(KeyError::Invalid(
                "env: use 1-16 lowercase letters or digits, like live or test".into(),
            ));
        }
        if self.expires_in.is_some_and(|s| s <= 0) {
            return Err(KeyError::Invalid("expires: must be in the future".into()));
        }
        if self.uses.is_some_and(|u| u < 1) {
            return Err(KeyError::Invalid("uses: must be at least 1".into()));
        }
        if self.refill.is_some_and(|r| r.amount < 1) {
            return Err(KeyError::Invalid(
                "refill: the amount must be at least 1".into(),
            ));
        }
        if let Some(r) = &self.rate_limit {
            check_rate(r)?;
        }
        if !self.metadata.is_object() {
            return Err(KeyError::Invalid("metadata: must be a JSON object".into()));
        }
        if self.metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(KeyError::TooLarge(format!(
                "metadata: at most {MAX_METADATA_BYTES} bytes of JSON"
            )));
        }
        Ok(())
    }
}

/// The most a key's metadata may take, written as compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Names and owners: 1-128 characters (Unicode scalar values, as JSON
/// Schema's `maxLength` counts them), not only spaces, no control
/// characters (the admin API's document states the same rule).
pub(crate) fn check_label(field: &str, v: &str) -> Result<(), KeyError> {
    if v.trim().is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
        return Err(KeyError::Invalid(format!(
            "{field}: must be 1-128 characters with no control characters"
        )));
    }
    Ok(())
}

/// Checks a key's rate-limit policy: the same syntax and parser as the
/// config's (`100/minute`, `10/second; 1000/hour`, `… burst 20`).
pub fn check_rate(r: &str) -> Result<(), KeyError> {
    if r.len() > 256 {
        return Err(KeyError::Invalid(
            "rate_limit: at most 256 characters".into(),
        ));
    }
    portcullis_core::ratelimit::Policy::parse(r)
        .map(|_| ())
        .map_err(|e| KeyError::Invalid(format!("rate_limit: {e}")))
}

/// A created key: the plaintext (shown once) and its record.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key. Show it once; it cannot be recovered.
    pub key: ApiKey,
    /// What was stored.
    pub record: KeyRecord,
}

/// Key management over a store.
#[derive(Clone)]
pub struct KeyService {
    store: Store,
    clock: SharedClock,
    verifier: Option<Arc<Verifier>>,
}

impl KeyService {
    /// A service; with `verifier`, changes also drop that process's cache
    /// entries at once.
    pub fn new(store: Store, clock: SharedClock, verifier: Option<Arc<Verifier>>) -> KeyService {
        KeyService {
            store,
            clock,
            verifier,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn fresh(&self, spec: &KeySpec) -> Result<(ApiKey, NewKey), KeyError> {
        spec.check()?;
        let mut random = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(|_| KeyError::Random)?;
        let key =
            ApiKey::generate(&spec.env, &random).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let now = self.clock.now();
        let new = NewKey {
            id: new_id("key_")?,
            hash: key.hash(),
            prefix: key.display_prefix(),
            env: spec.env.clone(),
            owner: spec.owner.clone(),
            name: spec.name.clone(),
            scopes: spec.scopes.clone(),
            created_at: now,
            expires_at: spec.expires_in.map(|s| now.saturating_add(s)),
            // A refilled key starts with its amount unless told otherwise.
            remaining_uses: spec.uses.or(spec.refill.map(|r| r.amount)),
            refill: spec.refill,
            refilled_at: spec.refill.map_or(0, |r| r.every.period_start(now)),
            rate_limit: spec.rate_limit.clone(),
            metadata: spec.metadata.clone(),
            rotated_from: None,
        };
        Ok((key, new))
    }

    fn audit(
        &self,
        actor: &str,
        action: &'static str,
        target: &str,
        detail: serde_json::Value,
    ) -> NewAudit {
        NewAudit {
            at: self.clock.now(),
            actor: actor.to_owned(),
            action,
            target: Some(target.to_owned()),
            detail,
        }
    }

    /// Applies the change log to this process's cache now, so an admin
    /// change takes effect before the caller hears it is done.
    async fn sync(&self) {
        if let Some(v) = &self.verifier {
            v.sync_changes().await;
        }
    }

    /// Creates a key. Returns only after the row is committed.
    pub async fn create(&self, actor: &str, spec: &KeySpec) -> Result<CreatedKey, KeyError> {
        let (key, new) = self.fresh(spec)?;
        let audit = self.audit(
            actor,
            "key.create",
            &new.id,
            serde_json::json!({"owner": new.owner, "name": new.name, "scopes": new.scopes.to_space_separated()}),
        );
        let record = self
            .store
            .insert_key(&new, &audit)
            .await
            .map_err(KeyError::Store)?;
        self.sync().await;
        Ok(CreatedKey { key, record })
    }

    /// One key.
    pub async fn show(&self, id: &str) -> Result<KeyRecord, KeyError> {
        self.store
            .get_key(id)
            .await
            .map_err(|e| KeyError::from_store(e, id))
    }

    /// Keys by filter.
    pub async fn list(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, KeyError> {
        self.store.list_keys(filter).await.map_err(KeyError::Store)
    }

    /// Revokes now. Final. Refuses to revoke the last active admin key
    /// ([`KeyError::LastAdminKey`]); see [`KeyService::revoke_with`].
    pub async fn revoke(&self, actor: &str, id: &str) -> Result<KeyRecord, KeyError> {
        self.revoke_with(actor, id, LastAdmin::Protect).await
    }

    /// Revokes now, with `last_admin` saying whether the last active admin
    /// key may go.
    pub async fn revoke_with(
        &self,
        actor: &str,
        id: &str,
        last_admin: LastAdmin,
    ) -> Result<KeyRecord, KeyError> {
        let audit = self.audit(actor, "key.revoke", id, forced(last_admin));
        let r = self
            .store
            .change_key(id, KeyChange::Revoke(audit.at), last_admin, &audit)
            .await
            .map_err(|e| KeyError::from_change(e, id, "revoke"))?;
        self.sync().await;
        Ok(r)
    }

    /// Switches a key off (or back on). Refuses to switch off the last
    /// active admin key ([`KeyError::LastAdminKey`]); see
    /// [`KeyService::set_disabled_with`].
    pub async fn set_disabled(
        &self,
        actor: &str,
        id: &str,
        disabled: bool,
    ) -> Result<KeyRecord, KeyError> {
        self.set_disabled_with(actor, id, disabled, LastAdmin::Protect)
            .await
    }

    /// Switches a key off (or back on), with `last_admin` saying whether
    /// the last active admin key may be switched off.
    pub async fn set_disabled_with(
        &self,
        actor: &str,
        id: &str,
        disabled: bool,
        last_admin: LastAdmin,
    ) -> Result<KeyRecord, KeyError> {
        let (change, action) = if disabled {
            (KeyChange::Disable, "key.disable")
        } else {
            (KeyChange::Enable, "key.enable")
        };
        let audit = self.audit(actor, action, id, forced(last_admin));
        let r = self
            .store
            .change_key(id, change, last_admin, &audit)
            .await
            .map_err(|e| KeyError::from_change(e, id, "disable"))?;
        self.sync().await;
        Ok(r)
    }

    /// Changes a key's scopes, rate-limit override and remaining uses (those
    /// `settings` gives; the others stay as they are), with the last-admin rule as for
    /// [`KeyService::revoke_with`]: the last lasting admin key cannot lose
    /// the admin scope or be given a number of uses. Takes effect on this
    /// process at once, elsewhere with the change log.
    pub async fn update(
        &self,
        actor: &str,
        id: &str,
        settings: &KeySettings,
        last_admin: LastAdmin,
    ) -> Result<KeyRecord, KeyError> {
        if let Some(Some(r)) = &settings.rate_limit {
            check_rate(r)?;
        }
        if settings.remaining_uses.flatten().is_some_and(|u| u < 1) {
            return Err(KeyError::Invalid("uses: must be at least 1".into()));
        }
        // What changed, and only that.
        let mut detail = serde_json::Map::new();
        if let Some(s) = &settings.scopes {
            detail.insert("scopes".into(), s.to_space_separated().into());
        }
        if let Some(r) = &settings.rate_limit {
            detail.insert("rate_limit".into(), r.clone().into());
        }
        if let Some(u) = settings.remaining_uses {
            detail.insert("remaining_uses".into(), u.into());
        }
        let mut detail = serde_json::Value::Object(detail);
        if let (Some(o), serde_json::Value::Object(f)) =
            (detail.as_object_mut(), forced(last_admin))
        {
            o.extend(f);
        }
        let audit = self.audit(actor, "key.update", id, detail);
        let r = self
            .store
            .update_key(id, settings, last_admin, &audit)
            .await
            .map_err(|e| KeyError::from_change(e, id, "update"))?;
        self.sync().await;
        Ok(r)
    }

    /// Issues a replacement with the same settings; the old key keeps
    /// working for `grace` seconds (0 = ends now).
    pub async fn rotate(&self, actor: &str, id: &str, grace: i64) -> Result<CreatedKey, KeyError> {
        if grace < 0 {
            return Err(KeyError::Invalid("grace: must not be negative".into()));
        }
        let old = self.show(id).await?;
        let now = self.clock.now();
        let spec = KeySpec {
            name: old.name.clone(),
            owner: old.owner.clone(),
            scopes: Scopes::parse(&old.scopes).map_err(|e| KeyError::Invalid(e.to_string()))?,
            env: old.env.clone(),
            // The replacement keeps the old key's end of life, if it had one.
            expires_in: old.expires_at.map(|e| e - now).filter(|s| *s > 0).or(None),
            uses: old.remaining_uses.map(|u| u.max(1)),
            refill: match (old.refill.as_deref(), old.refill_amount) {
                (Some(e), Some(amount)) => portcullis_core::quota::Refill::parse(e)
                    .map(|every| portcullis_core::quota::RefillPlan { every, amount }),
                _ => None,
            },
            rate_limit: old.rate_limit.clone(),
            metadata: old.metadata.clone(),
        };
        if old.expires_at.is_some_and(|e| e <= now) {
            return Err(KeyError::Conflict("an expired key cannot be rotated"));
        }
        let (key, mut new) = self.fresh(&spec)?;
        new.rotated_from = Some(old.id.clone());
        let audit = self.audit(
            actor,
            "key.rotate",
            id,
            serde_json::json!({"replacement": new.id, "grace_seconds": grace}),
        );
        let record = self
            .store
            .rotate_key(id, &new, now.saturating_add(grace), &audit)
            .await
            .map_err(|e| KeyError::from_store(e, id))?;
        self.sync().await;
        Ok(CreatedKey { key, record })
    }
}

/// The audit detail of a revoke or disable: whether the last-admin rule
/// was off for it, so a lock-out can be traced to the command that did it.
fn forced(last_admin: LastAdmin) -> serde_json::Value {
    match last_admin {
        LastAdmin::Protect => serde_json::json!({}),
        LastAdmin::Allow => serde_json::json!({"force_last_admin": true}),
    }
}

/// A fresh public id: `prefix` and 16 base62 characters (95 bits).
pub fn new_id(prefix: &str) -> Result<String, KeyError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|_| KeyError::Random)?;
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    base62::encode_fixed(&b, 17, &mut s);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rates() {
        for ok in [
            "100/minute",
            "10/second; 1000/hour",
            "5/day",
            "2/minutes",
            "1 / hour",
        ] {
            assert!(check_rate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "0/minute", "x/minute", "10/fortnight", "10"] {
            assert!(check_rate(bad).is_err(), "{bad}");
        }
    }
}

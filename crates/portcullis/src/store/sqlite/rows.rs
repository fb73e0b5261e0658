//! Reading SQLite rows back into the store's records. A value that does
//! not parse is [`StoreError::Corrupt`], naming the column, never the
//! value (it may be a secret's hash).

use crate::store::backend::{KeyState, RefreshRow};
use crate::store::identity::{
    ClientAuth, ClientRecord, RefreshGrant, SessionRow, SigningKeyRow, UserAuth, UserRecord,
    hash_algorithm,
};
use crate::store::{AuditEvent, KeyRecord, StoreError};
use portcullis_core::quota::{Refill, RefillPlan};
use portcullis_core::ratelimit::Policy;
use portcullis_core::{KeyGrant, KeyHash, Scopes};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::sync::Arc;

/// The columns [`key_record`] reads.
pub(super) const KEY_COLUMNS: &str = "id, prefix, env, owner, name, scopes, created_at, expires_at, revoked_at, disabled, remaining_uses, refill_interval, refill_amount, rate_limit, metadata, last_used_at, rotated_from, rotated_to";

/// The columns [`key_state`] reads.
pub(super) const STATE_COLUMNS: &str = "id, key_hash, scopes, revoked_at, disabled, expires_at, remaining_uses, refill_interval, rotated_to";

pub(super) fn hash32(r: &SqliteRow, col: &'static str) -> Result<KeyHash, StoreError> {
    let b: &[u8] = r.try_get(col)?;
    Ok(KeyHash(b.try_into().map_err(|_| StoreError::Corrupt(col))?))
}

fn scopes(r: &SqliteRow, col: &'static str) -> Result<Scopes, StoreError> {
    Scopes::parse(r.try_get::<&str, _>(col)?).map_err(|_| StoreError::Corrupt(col))
}

fn json(
    r: &SqliteRow,
    col: &'static str,
    what: &'static str,
) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(r.try_get::<&str, _>(col)?).map_err(|_| StoreError::Corrupt(what))
}

fn refill_of(r: &SqliteRow) -> Result<Option<RefillPlan>, StoreError> {
    let every: Option<&str> = r.try_get("refill_interval")?;
    let amount: Option<i64> = r.try_get("refill_amount")?;
    match (every, amount) {
        (None, _) => Ok(None),
        (Some(e), Some(amount)) => Ok(Some(RefillPlan {
            every: Refill::parse(e).ok_or(StoreError::Corrupt("api_keys.refill_interval"))?,
            amount,
        })),
        (Some(_), None) => Err(StoreError::Corrupt("api_keys.refill_amount")),
    }
}

pub(super) fn key_record(r: &SqliteRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: r.try_get("id")?,
        prefix: r.try_get("prefix")?,
        env: r.try_get("env")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        disabled: r.try_get("disabled")?,
        remaining_uses: r.try_get("remaining_uses")?,
        refill: r.try_get("refill_interval")?,
        refill_amount: r.try_get("refill_amount")?,
        rate_limit: r.try_get("rate_limit")?,
        metadata: json(r, "metadata", "api_keys.metadata")?,
        last_used_at: r.try_get("last_used_at")?,
        rotated_from: r.try_get("rotated_from")?,
        rotated_to: r.try_get("rotated_to")?,
    })
}

pub(super) fn key_state(r: &SqliteRow) -> Result<KeyState, StoreError> {
    Ok(KeyState {
        hash: hash32(r, "key_hash")?,
        scopes: r.try_get("scopes")?,
        revoked_at: r.try_get("revoked_at")?,
        disabled: r.try_get("disabled")?,
        expires_at: r.try_get("expires_at")?,
        remaining_uses: r.try_get("remaining_uses")?,
        refilled: r.try_get::<Option<&str>, _>("refill_interval")?.is_some(),
        rotated_to: r.try_get("rotated_to")?,
    })
}

pub(super) fn key_grant(r: &SqliteRow) -> Result<KeyGrant, StoreError> {
    Ok(KeyGrant {
        key_id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        scopes: Scopes::parse(r.try_get::<&str, _>("scopes")?)
            .map_err(|_| StoreError::Corrupt("api_keys.scopes"))?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        disabled: r.try_get("disabled")?,
        remaining_uses: r.try_get("remaining_uses")?,
        refill: refill_of(r)?,
        refilled_at: r.try_get("refilled_at")?,
        rate_limit: r
            .try_get::<Option<&str>, _>("rate_limit")?
            .map(Policy::parse)
            .transpose()
            .map_err(|_| StoreError::Corrupt("api_keys.rate_limit"))?
            .map(Arc::new),
    })
}

pub(super) fn audit_event(r: &SqliteRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: json(r, "detail", "audit_events.detail")?,
    })
}

pub(super) fn user_record(r: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: r.try_get("username")?,
        scopes: r.try_get("scopes")?,
        disabled: r.try_get("disabled")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        hash_algorithm: hash_algorithm(r.try_get::<&str, _>("password_hash")?),
    })
}

pub(super) fn user_auth(r: &SqliteRow) -> Result<UserAuth, StoreError> {
    Ok(UserAuth {
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        scopes: scopes(r, "scopes")?,
        disabled: r.try_get("disabled")?,
        tokens_after: r.try_get("tokens_after")?,
    })
}

pub(super) fn client_record(r: &SqliteRow) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id: r.try_get("client_id")?,
        name: r.try_get("name")?,
        scopes: r.try_get("scopes")?,
        grants: r.try_get("grants")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) fn client_auth(r: &SqliteRow) -> Result<ClientAuth, StoreError> {
    Ok(ClientAuth {
        client_id: r.try_get("client_id")?,
        secret_hash: hash32(r, "secret_hash")?,
        scopes: scopes(r, "scopes")?,
        grants: r.try_get("grants")?,
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

pub(super) fn refresh_row(r: &SqliteRow) -> Result<RefreshRow, StoreError> {
    Ok(RefreshRow {
        grant: RefreshGrant {
            family: r.try_get("family")?,
            client_id: r.try_get("client_id")?,
            subject: r.try_get("subject")?,
            kind: r.try_get("kind")?,
            scopes: scopes(r, "scopes")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
        },
        used_at: r.try_get("used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) fn session_row(r: &SqliteRow) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        username: r.try_get("username")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

pub(super) fn signing_key_row(r: &SqliteRow) -> Result<SigningKeyRow, StoreError> {
    Ok(SigningKeyRow {
        kid: r.try_get("kid")?,
        alg: r.try_get("alg")?,
        private_der: r.try_get("private_der")?,
        public_jwk: r.try_get("public_jwk")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
        drop_after: r.try_get("drop_after")?,
    })
}

/// A decoder of one row.
pub(super) type Decode<T> = fn(&SqliteRow) -> Result<T, StoreError>;

/// Runs a bound query for at most one row and decodes it.
pub(super) async fn one<'e, 'q: 'e, E, Q, T>(
    db: E,
    query: Q,
    decode: Decode<T>,
) -> Result<Option<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    Q: 'q + sqlx::Execute<'q, sqlx::Sqlite>,
{
    db.fetch_optional(query)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Runs a bound query and decodes every row.
pub(super) async fn all<'e, 'q: 'e, E, Q, T>(
    db: E,
    query: Q,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    Q: 'q + sqlx::Execute<'q, sqlx::Sqlite>,
{
    db.fetch_all(query).await?.iter().map(decode).collect()
}

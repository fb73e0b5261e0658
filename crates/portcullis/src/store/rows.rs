//! Reading rows back into the store's records, once for every backend:
//! a backend's row type gives typed cells ([`Cells`]), and the decoders
//! here build records from them. A value that does not parse is
//! [`StoreError::Corrupt`], naming the column, never the value (it may be
//! a secret's hash).

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
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use std::sync::Arc;

/// A value a cell decodes to, in every backend.
pub(crate) trait Cell: Sized {
    /// From a SQLite row.
    fn sqlite(r: &SqliteRow, col: &'static str) -> Result<Self, sqlx::Error>;
    /// From a Postgres row.
    fn pg(r: &PgRow, col: &'static str) -> Result<Self, sqlx::Error>;
}

macro_rules! cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn sqlite(r: &SqliteRow, col: &'static str) -> Result<Self, sqlx::Error> {
                r.try_get(col)
            }
            fn pg(r: &PgRow, col: &'static str) -> Result<Self, sqlx::Error> {
                r.try_get(col)
            }
        }
    )*};
}
cell!(String, Option<String>, i64, Option<i64>, bool, Vec<u8>);

/// A row of any backend, read by column name.
pub(crate) trait Cells {
    /// An owned cell.
    fn get<T: Cell>(&self, col: &'static str) -> Result<T, StoreError>;
    /// A text cell, borrowed.
    fn text(&self, col: &'static str) -> Result<&str, StoreError>;
    /// A nullable text cell, borrowed.
    fn opt_text(&self, col: &'static str) -> Result<Option<&str>, StoreError>;
    /// A nullable integer cell.
    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
        self.get(col)
    }
    /// A blob cell, borrowed.
    fn bytes(&self, col: &'static str) -> Result<&[u8], StoreError>;
}

macro_rules! cells {
    ($row:ty, $via:ident) => {
        impl Cells for $row {
            fn get<T: Cell>(&self, col: &'static str) -> Result<T, StoreError> {
                Ok(T::$via(self, col)?)
            }
            fn text(&self, col: &'static str) -> Result<&str, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &'static str) -> Result<Option<&str>, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn bytes(&self, col: &'static str) -> Result<&[u8], StoreError> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
cells!(SqliteRow, sqlite);
cells!(PgRow, pg);

/// The columns [`key_record`] reads.
pub(crate) const KEY_COLUMNS: &str = "id, prefix, env, owner, name, scopes, created_at, expires_at, revoked_at, disabled, remaining_uses, refill_interval, refill_amount, rate_limit, metadata, last_used_at, rotated_from, rotated_to";

/// The columns [`key_state`] reads.
pub(crate) const STATE_COLUMNS: &str = "id, key_hash, scopes, revoked_at, disabled, expires_at, remaining_uses, refill_interval, rotated_to";

pub(crate) fn hash32(r: &impl Cells, col: &'static str) -> Result<KeyHash, StoreError> {
    let b = r.bytes(col)?;
    Ok(KeyHash(b.try_into().map_err(|_| StoreError::Corrupt(col))?))
}

fn scopes(r: &impl Cells, col: &'static str) -> Result<Scopes, StoreError> {
    Scopes::parse(r.text(col)?).map_err(|_| StoreError::Corrupt(col))
}

fn json(
    r: &impl Cells,
    col: &'static str,
    what: &'static str,
) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(r.text(col)?).map_err(|_| StoreError::Corrupt(what))
}

fn refill_of(r: &impl Cells) -> Result<Option<RefillPlan>, StoreError> {
    let every = r.opt_text("refill_interval")?;
    let amount = r.opt_int("refill_amount")?;
    match (every, amount) {
        (None, _) => Ok(None),
        (Some(e), Some(amount)) => Ok(Some(RefillPlan {
            every: Refill::parse(e).ok_or(StoreError::Corrupt("api_keys.refill_interval"))?,
            amount,
        })),
        (Some(_), None) => Err(StoreError::Corrupt("api_keys.refill_amount")),
    }
}

pub(crate) fn key_record(r: &impl Cells) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: r.get("id")?,
        prefix: r.get("prefix")?,
        env: r.get("env")?,
        owner: r.get("owner")?,
        name: r.get("name")?,
        scopes: r.get("scopes")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        revoked_at: r.get("revoked_at")?,
        disabled: r.get("disabled")?,
        remaining_uses: r.get("remaining_uses")?,
        refill: r.get("refill_interval")?,
        refill_amount: r.get("refill_amount")?,
        rate_limit: r.get("rate_limit")?,
        metadata: json(r, "metadata", "api_keys.metadata")?,
        last_used_at: r.get("last_used_at")?,
        rotated_from: r.get("rotated_from")?,
        rotated_to: r.get("rotated_to")?,
    })
}

pub(crate) fn key_state(r: &impl Cells) -> Result<KeyState, StoreError> {
    Ok(KeyState {
        hash: hash32(r, "key_hash")?,
        scopes: r.get("scopes")?,
        revoked_at: r.get("revoked_at")?,
        disabled: r.get("disabled")?,
        expires_at: r.get("expires_at")?,
        remaining_uses: r.get("remaining_uses")?,
        refilled: r.opt_text("refill_interval")?.is_some(),
        rotated_to: r.get("rotated_to")?,
    })
}

pub(crate) fn key_grant(r: &impl Cells) -> Result<KeyGrant, StoreError> {
    Ok(KeyGrant {
        key_id: r.text("id")?.into(),
        owner: r.text("owner")?.into(),
        scopes: Scopes::parse(r.text("scopes")?)
            .map_err(|_| StoreError::Corrupt("api_keys.scopes"))?,
        expires_at: r.get("expires_at")?,
        revoked_at: r.get("revoked_at")?,
        disabled: r.get("disabled")?,
        remaining_uses: r.get("remaining_uses")?,
        refill: refill_of(r)?,
        refilled_at: r.get("refilled_at")?,
        rate_limit: r
            .opt_text("rate_limit")?
            .map(Policy::parse)
            .transpose()
            .map_err(|_| StoreError::Corrupt("api_keys.rate_limit"))?
            .map(Arc::new),
    })
}

pub(crate) fn audit_event(r: &impl Cells) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: r.get("id")?,
        at: r.get("at")?,
        actor: r.get("actor")?,
        action: r.get("action")?,
        target: r.get("target")?,
        detail: json(r, "detail", "audit_events.detail")?,
    })
}

pub(crate) fn user_record(r: &impl Cells) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: r.get("username")?,
        scopes: r.get("scopes")?,
        disabled: r.get("disabled")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        hash_algorithm: hash_algorithm(r.text("password_hash")?),
    })
}

pub(crate) fn user_auth(r: &impl Cells) -> Result<UserAuth, StoreError> {
    Ok(UserAuth {
        username: r.get("username")?,
        password_hash: r.get("password_hash")?,
        scopes: scopes(r, "scopes")?,
        disabled: r.get("disabled")?,
        tokens_after: r.get("tokens_after")?,
    })
}

pub(crate) fn client_record(r: &impl Cells) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id: r.get("client_id")?,
        name: r.get("name")?,
        scopes: r.get("scopes")?,
        grants: r.get("grants")?,
        created_at: r.get("created_at")?,
        revoked_at: r.get("revoked_at")?,
    })
}

pub(crate) fn client_auth(r: &impl Cells) -> Result<ClientAuth, StoreError> {
    Ok(ClientAuth {
        client_id: r.get("client_id")?,
        secret_hash: hash32(r, "secret_hash")?,
        scopes: scopes(r, "scopes")?,
        grants: r.get("grants")?,
        revoked: r.opt_int("revoked_at")?.is_some(),
    })
}

pub(crate) fn refresh_row(r: &impl Cells) -> Result<RefreshRow, StoreError> {
    Ok(RefreshRow {
        grant: RefreshGrant {
            family: r.get("family")?,
            client_id: r.get("client_id")?,
            subject: r.get("subject")?,
            kind: r.get("kind")?,
            scopes: scopes(r, "scopes")?,
            created_at: r.get("created_at")?,
            expires_at: r.get("expires_at")?,
        },
        used_at: r.get("used_at")?,
        revoked_at: r.get("revoked_at")?,
    })
}

pub(crate) fn session_row(r: &impl Cells) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        username: r.get("username")?,
        created_at: r.get("created_at")?,
        last_seen_at: r.get("last_seen_at")?,
        expires_at: r.get("expires_at")?,
        revoked: r.opt_int("revoked_at")?.is_some(),
    })
}

pub(crate) fn signing_key_row(r: &impl Cells) -> Result<SigningKeyRow, StoreError> {
    Ok(SigningKeyRow {
        kid: r.get("kid")?,
        alg: r.get("alg")?,
        private_der: r.get("private_der")?,
        public_jwk: r.get("public_jwk")?,
        created_at: r.get("created_at")?,
        retired_at: r.get("retired_at")?,
        drop_after: r.get("drop_after")?,
    })
}

//! The store: keys, their change log and the audit trail.
//!
//! Callers hold a [`Store`], whatever database is behind it. Today that is
//! SQLite; a Postgres implementation adds a variant with the same schema
//! and the same methods, and no caller changes. Every query binds its
//! parameters; none is built from strings.

mod sqlite;

pub use sqlite::SqliteStore;

use portcullis_core::{KeyGrant, KeyHash, Scopes};
use serde::Serialize;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A store failure. The message never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a database this build does not support.
    #[error(
        "unsupported store URL {0:?}: use sqlite://PATH (postgres:// arrives with the Postgres store)"
    )]
    UnsupportedUrl(String),
    /// The database could not be opened, read or written.
    #[error("store error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No such record.
    #[error("not found")]
    NotFound,
    /// The record is in a state that forbids the change.
    #[error("{0}")]
    Conflict(&'static str),
    /// The change would leave no active admin key (see [`LastAdmin`]).
    #[error("this is the last active admin key")]
    LastAdminKey,
    /// A stored value could not be read back.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// A failure another request met in a lookup this one waited on (the
    /// verifier makes concurrent lookups of one key share one query).
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

/// A stored key as the admin API and CLI show it. Never holds the key or
/// its hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRecord {
    /// Public id.
    pub id: String,
    /// Display prefix (`pc_live_Ab12Cd`).
    pub prefix: String,
    /// Environment label.
    pub env: String,
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Switched off.
    pub disabled: bool,
    /// Uses left; `None` = unlimited.
    pub remaining_uses: Option<i64>,
    /// `day` or `month`: the uses are refilled at the start of each.
    pub refill: Option<String>,
    /// The uses the key gets at each refill.
    pub refill_amount: Option<i64>,
    /// Rate-limit override.
    pub rate_limit: Option<String>,
    /// Free JSON metadata.
    pub metadata: serde_json::Value,
    /// Last use, written in batches.
    pub last_used_at: Option<i64>,
    /// The key this one replaced.
    pub rotated_from: Option<String>,
    /// The key that replaced this one.
    pub rotated_to: Option<String>,
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public id.
    pub id: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Display prefix.
    pub prefix: String,
    /// Environment label.
    pub env: String,
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Uses; `None` = unlimited.
    pub remaining_uses: Option<i64>,
    /// The refill, if the uses are refilled.
    pub refill: Option<portcullis_core::quota::RefillPlan>,
    /// The start of the current refill period (Unix seconds).
    pub refilled_at: i64,
    /// Rate-limit override.
    pub rate_limit: Option<String>,
    /// Free JSON metadata.
    pub metadata: serde_json::Value,
    /// The key this one replaces.
    pub rotated_from: Option<String>,
}

/// A change of a key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Revoke at this time; final.
    Revoke(i64),
    /// Switch off.
    Disable,
    /// Switch back on.
    Enable,
}

/// The scope that opens the admin API.
pub const ADMIN_SCOPE: &str = "admin";

/// Whether [`Store::change_key`] may revoke or disable the last active
/// admin key.
///
/// An active admin key holds [`ADMIN_SCOPE`] and is not revoked, disabled,
/// expired or used up. With [`LastAdmin::Protect`], revoking or disabling
/// such a key fails with [`StoreError::LastAdminKey`] unless another one
/// remains that has not been rotated away (a key in its rotation grace
/// ends with the grace, so it does not count). The check runs in the
/// change's own write transaction, so two concurrent changes cannot each
/// count the other's key and both succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAdmin {
    /// Refuse a change that leaves no active admin key.
    Protect,
    /// Allow it (the CLI's `--force-last-admin`, or an admin API that has
    /// another admin credential the API cannot take away).
    Allow,
}

/// An audit event to write.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// When.
    pub at: i64,
    /// Who: `cli`, or the admin key's id.
    pub actor: String,
    /// What (`key.create`, `key.revoke`, ...).
    pub action: &'static str,
    /// The object's id.
    pub target: Option<String>,
    /// Non-secret detail.
    pub detail: serde_json::Value,
}

/// A written audit event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The object's id.
    pub target: Option<String>,
    /// Detail.
    pub detail: serde_json::Value,
}

/// Filters for listing keys.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this owner's.
    pub owner: Option<String>,
    /// Include revoked keys.
    pub include_revoked: bool,
    /// Only ids after this one (paging).
    pub after: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// The store.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite, one file.
    Sqlite(Counted<SqliteStore>),
}

/// A backend with the counters every clone of its [`Store`] shares. It
/// dereferences to the backend.
#[derive(Debug, Clone)]
pub struct Counted<B> {
    backend: B,
    key_lookups: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    fn new(backend: B) -> Counted<B> {
        Counted {
            backend,
            key_lookups: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<B> Deref for Counted<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.backend
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
        }
    };
}

pub mod identity;
mod sqlite_identity;

impl Store {
    /// Opens the store named by `url`, creating it when `create` is set,
    /// and applies migrations.
    pub async fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Store::Sqlite(Counted::new(
                SqliteStore::open(path, create).await?,
            )))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(Counted::new(
                SqliteStore::open(url.trim_start_matches("sqlite:"), create).await?,
            )))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Writes a consistent copy of the store to `to`, online (writers
    /// carry on), and returns each table's row count in the copy.
    pub async fn backup(&self, to: &std::path::Path) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch!(self, s => s.backup(to).await)
    }

    /// Checks a backup file (`PRAGMA integrity_check`) and counts its rows,
    /// without changing it.
    pub async fn inspect_backup(path: &std::path::Path) -> Result<Vec<(String, i64)>, StoreError> {
        SqliteStore::open_existing_read_only(path)
            .await?
            .table_counts()
            .await
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Inserts a key and its audit event in one transaction; returns once
    /// both are committed.
    pub async fn insert_key(
        &self,
        key: &NewKey,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        dispatch!(self, s => s.insert_key(key, audit).await)
    }

    /// One key by id.
    pub async fn get_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        dispatch!(self, s => s.get_key(id).await)
    }

    /// Keys, ordered by id.
    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self, s => s.list_keys(filter).await)
    }

    /// What the verifier needs about the key with this hash. Every call
    /// is counted ([`Store::key_lookups`]).
    pub async fn grant_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyGrant>, StoreError> {
        dispatch!(self, s => {
            s.key_lookups.fetch_add(1, Ordering::Relaxed);
            s.grant_by_hash(hash).await
        })
    }

    /// How many key lookups ([`Store::grant_by_hash`]) went to the
    /// database through this store or any clone of it, since it was
    /// opened. A failed lookup counts too.
    pub fn key_lookups(&self) -> u64 {
        dispatch!(self, s => s.key_lookups.load(Ordering::Relaxed))
    }

    /// Changes a key's state, with its audit event, atomically. With
    /// [`LastAdmin::Protect`], a revoke or disable that would leave no
    /// active admin key fails with [`StoreError::LastAdminKey`], decided
    /// in the same transaction as the write.
    pub async fn change_key(
        &self,
        id: &str,
        change: KeyChange,
        last_admin: LastAdmin,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        dispatch!(self, s => s.change_key(id, change, last_admin, audit).await)
    }

    /// Rotates: inserts `new`, limits the old key's life to `grace_until`,
    /// links the two, and writes the audit event, atomically.
    pub async fn rotate_key(
        &self,
        old_id: &str,
        new: &NewKey,
        grace_until: i64,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        dispatch!(self, s => s.rotate_key(old_id, new, grace_until, audit).await)
    }

    /// Spends `cost` uses of a limited key at `now`, refilling it first if
    /// a refill is due. `Some(left)` when enough uses were available,
    /// `None` when not (and nothing is spent).
    pub async fn consume_use(
        &self,
        hash: &KeyHash,
        cost: u32,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.consume_use(hash, cost, now).await)
    }

    /// Records last-used times in one transaction.
    pub async fn touch_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch_last_used(batch).await)
    }

    /// Changed key hashes after `seq`, with the newest sequence number.
    pub async fn changes_since(&self, seq: i64) -> Result<(i64, Vec<KeyHash>), StoreError> {
        dispatch!(self, s => s.changes_since(seq).await)
    }

    /// Deletes change-log rows older than `before`.
    pub async fn prune_changes(&self, before: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.prune_changes(before).await)
    }

    /// Audit events, newest first, before id `before`.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        dispatch!(self, s => s.list_audit(before, limit).await)
    }
}

/// A URL with any password removed, for error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[REDACTED]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

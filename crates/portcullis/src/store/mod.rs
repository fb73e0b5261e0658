//! The store: keys, their change log, the audit trail and the identity
//! records (users, clients, refresh tokens, sessions, signing keys).
//!
//! Callers hold a [`Store`], whatever database is behind it. The store is
//! a façade over a backend (`backend.rs`): the façade decides the rules
//! (`rules.rs`, `keys.rs`, `identity.rs`), the backend only reads rows and
//! runs statements. Every query binds its parameters; none is built from
//! input.
//!
//! # The contract a backend keeps
//!
//! - **Serialised writes.** `Backend::begin` opens a transaction that no
//!   other write transaction (this process or another) can interleave
//!   with from its first read: what the façade reads in it (a key's
//!   state, the other admin keys, a refresh token) still holds when it
//!   commits. SQLite: `BEGIN IMMEDIATE`.
//! - **All or nothing.** A change, its change-log entries and its audit
//!   event are written in that one transaction (`write.rs`: the façade's
//!   only write path), so they commit together or not at all; dropping
//!   the transaction rolls it back.
//! - **A monotonic change log.** Sequence numbers grow strictly and are
//!   never reused (not even after a prune); `changes_after` returns
//!   entries in sequence order. Because writes are serialised, entries
//!   become visible in sequence order, so a poller that keeps the last
//!   number it saw misses none ([`Store::changes_since`]; the gateways'
//!   poller is [`Store::poll_changes`]). (The poller does
//!   not rely on it alone: `portcullis_core::changes` re-reads gaps below
//!   the highest number seen for a grace window, so an entry that commits
//!   out of order is still applied once.) The façade writes an entry for every
//!   change that affects verification, so a polling gateway drops exactly
//!   what changed.
//! - **Atomic spends.** `Backend::spend_uses` refills (when due) and spends
//!   in one statement: concurrent spends never take the same use twice.
//! - **Additive usage counts.** `Backend::add_usage` adds each count to
//!   its `usage` row (`ON CONFLICT … DO UPDATE SET count = usage.count +
//!   excluded.count`), a batch in one transaction; outside the serialised
//!   façade writes (each upsert is atomic on its own), so flushes from
//!   several gateways sum ([`usage`]).
//! - **Misses are answers.** A missing row is `None`, `false` or a zero
//!   count, never an error: the façade decides what a miss means
//!   ([`StoreError::NotFound`], [`RefreshOutcome::Invalid`], ...).
//!
//! # Adding a backend
//!
//! 1. Write `store/<name>/` with its migrations (the same tables and
//!    meanings as `migrations/sqlite`).
//! 2. Implement `Backend` (pool reads and single statements) and `Tx` (the
//!    write transaction's statements), keeping the contract above.
//! 3. Pick it in [`Store::open`] by URL scheme.
//! 4. Run `tests/it/store_contract.rs`'s `run_all` against a store opened
//!    on it; verification, guard, identity and tokens need no change.
//! 5. Implement `export` / `import` over the tables `dump.rs` lists, so
//!    `store copy` moves stores to and from it (the copy tests in
//!    `tests/it/copy.rs` check the checksums agree), and add its URL to
//!    the docs.
//!
//! [`RefreshOutcome::Invalid`]: identity::RefreshOutcome::Invalid

pub(crate) mod backend;
pub mod dump;
pub mod identity;
mod keys;
mod postgres;
mod rows;
mod rules;
mod sqlite;
pub mod usage;
mod write;

use backend::Backend;
use portcullis_core::{KeyHash, Scopes};
use serde::Serialize;
use sqlite::SqliteStore;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// A store failure. The message never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a database this build does not support.
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    /// The store is known to be unreachable right now (a recent query
    /// failed and no later one has succeeded): answered at once instead of
    /// waiting for another timeout.
    #[error("store unavailable: {0}")]
    Unavailable(&'static str),
    /// The database could not be opened, read or written.
    #[error("store error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No such record.
    #[error("not found")]
    NotFound,
    /// The backend cannot do this (e.g. a file backup of Postgres).
    #[error("{0}")]
    Unsupported(&'static str),
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

/// A change to a key's settings that may change after it is made: its
/// scopes, its rate-limit override and its remaining uses. Each member is
/// `None` to leave that setting as it is (written in the change's own
/// transaction, so a use spent meanwhile is not written back), or the new
/// value: for the override `Some(None)` removes it (the route's limit
/// applies), for the uses `Some(None)` makes the key unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySettings {
    /// New scopes.
    pub scopes: Option<Scopes>,
    /// New rate-limit override.
    pub rate_limit: Option<Option<String>>,
    /// New uses left.
    pub remaining_uses: Option<Option<i64>>,
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

/// The store: a cheap handle (clones share one backend and one set of
/// counters).
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Key lookups that reached the backend; an atomic beside the
    /// backend, so counting costs no dynamic call.
    key_lookups: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// How a networked store (Postgres) is reached. SQLite ignores these.
#[derive(Clone)]
pub struct StoreOptions {
    /// Connections in the pool, at most.
    pub pool_size: u32,
    /// How long to wait for a connection (from the pool, or a new one to
    /// the server) before the query fails.
    pub connect_timeout: std::time::Duration,
    /// The server cancels any statement running longer than this.
    pub statement_timeout: std::time::Duration,
    /// Where change notifications are listened for.
    pub listen: Listen,
}

/// Where a gateway listens for change notifications (Postgres
/// `LISTEN/NOTIFY`, the wake-up of the change-log poller).
#[derive(Clone, PartialEq, Eq)]
pub enum Listen {
    /// On the store's own URL.
    Store,
    /// On this URL: a direct connection to the primary when the store URL
    /// goes through PgBouncer in transaction mode (where LISTEN does not
    /// work) or to a read replica.
    Url(String),
    /// Not at all: poll the change log only (staleness up to the poll
    /// interval).
    Off,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Store => f.write_str("Store"),
            Listen::Url(u) => f.debug_tuple("Url").field(&redact_url(u)).finish(),
            Listen::Off => f.write_str("Off"),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("listen", &self.listen)
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 16,
            connect_timeout: std::time::Duration::from_secs(2),
            statement_timeout: std::time::Duration::from_secs(5),
            listen: Listen::Store,
        }
    }
}

impl Store {
    /// Opens the store named by `url`, creating it when `create` is set,
    /// and applies migrations.
    pub async fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        Store::open_with(url, create, &StoreOptions::default()).await
    }

    /// [`Store::open`] with options for a networked store.
    pub async fn open_with(
        url: &str,
        create: bool,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store::over(postgres::open(url, options).await?));
        }
        let path = if let Some(path) = url.strip_prefix("sqlite://") {
            path
        } else if url.starts_with("sqlite:") {
            url.trim_start_matches("sqlite:")
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store::over(Arc::new(
            SqliteStore::open(path, create).await?,
        )))
    }

    /// The backend's change wake-up, if it has one (see
    /// `Backend::changes_wake`).
    pub fn changes_wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.backend.changes_wake()
    }

    /// A store over a backend.
    pub(crate) fn over(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            key_lookups: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Writes a consistent copy of the store to `to`, online (writers
    /// carry on), and returns each table's row count in the copy.
    pub async fn backup(&self, to: &std::path::Path) -> Result<Vec<(String, i64)>, StoreError> {
        self.backend.backup(to).await
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
        self.backend.ping().await
    }
}

/// A URL with any password removed, for error messages: the user-info
/// part (everything before the last `@`, also when the scheme is
/// mistyped), and the value of a `password` or `sslpassword` query
/// parameter.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[REDACTED]@{}", &head[..s], &head[at + 1..]),
        (_, Some(at)) => format!("[REDACTED]@{}", &head[at + 1..]),
        _ => head.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if is_password_param(k) => {
                    out.push_str(k);
                    out.push_str("=[REDACTED]");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// Query parameters that carry a secret (libpq's names).
fn is_password_param(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_every_password_spelling() {
        for (url, secret) in [
            ("postgres://u:S3cret@h/db", "S3cret"),
            ("postgres://u@h/db?password=S3cret", "S3cret"),
            (
                "postgres://u@h/db?sslmode=require&PASSWORD=S3cret&x=1",
                "S3cret",
            ),
            ("postgres://u@h/db?sslpassword=S3cret", "S3cret"),
            ("postgres:/u:S3cret@h/db", "S3cret"),
            ("postgres//u:S3cret@h/db", "S3cret"),
            ("u:S3cret@h", "S3cret"),
        ] {
            let r = redact_url(url);
            assert!(!r.contains(secret), "{url} -> {r}");
        }
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db?sslmode=verify-full"),
            "postgres://[REDACTED]@h:5432/db?sslmode=verify-full"
        );
        assert_eq!(redact_url("sqlite://data/p.db"), "sqlite://data/p.db");
    }
}

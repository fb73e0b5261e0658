//! SQLite: one file, WAL, migrations at open, bound parameters only.
//!
//! This module answers the pool-side half of the backend contract (reads
//! and single statements); `tx.rs` is the write transaction, taken with
//! `BEGIN IMMEDIATE` so it holds the write lock from its first read.

mod dump;
mod rows;
mod tx;
mod usage;

use super::backend::{Backend, Fut, RefreshRow, Spend, Tx};
use super::identity::{
    ClientAuth, ClientRecord, RefreshGrant, SessionRow, SigningKeyRow, UserAuth, UserRecord,
};
use super::{AuditEvent, KeyFilter, KeyRecord, StoreError};
use portcullis_core::{KeyGrant, KeyHash};
use rows::{KEY_COLUMNS, all, hash32, one};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// The SQLite store.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

/// Every table of the schema, for backup counts.
const TABLES: &[&str] = &[
    "api_keys",
    "key_changes",
    "audit_events",
    "users",
    "oauth_clients",
    "refresh_tokens",
    "sessions",
    "signing_keys",
    "secrets",
    "usage",
];

impl SqliteStore {
    /// Opens (and with `create`, creates) the database file.
    pub(crate) async fn open(path: &str, create: bool) -> Result<SqliteStore, StoreError> {
        if create {
            create_private(Path::new(path));
        }
        let opts = SqliteConnectOptions::new()
            .filename(Path::new(path))
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Opens a database file read-only, without migrating it.
    pub(crate) async fn open_existing_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// `PRAGMA integrity_check` passes, and every table's row count.
    pub(crate) async fn table_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        if ok != "ok" {
            return Err(StoreError::Corrupt("integrity_check failed"));
        }
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            // A name from the fixed list above, never from input.
            let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}"));
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
            out.push(((*t).to_owned(), n));
        }
        Ok(out)
    }
}

impl Backend for SqliteStore {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    /// `VACUUM INTO`: online, one read transaction, so writers carry on.
    fn backup<'a>(&'a self, to: &'a Path) -> Fut<'a, Vec<(String, i64)>> {
        Box::pin(async move {
            let target = to
                .to_str()
                .ok_or(StoreError::Corrupt("backup path is not UTF-8"))?;
            sqlx::query("VACUUM INTO ?1")
                .bind(target)
                .execute(&self.pool)
                .await?;
            let copy = SqliteStore::open_existing_read_only(to).await?;
            copy.table_counts().await
        })
    }

    fn export(&self) -> Fut<'_, crate::store::dump::Dump> {
        Box::pin(dump::export(&self.pool))
    }

    fn import<'a>(&'a self, d: &'a crate::store::dump::Dump) -> Fut<'a, Vec<u64>> {
        Box::pin(dump::import(&self.pool, d))
    }

    fn begin(&self) -> Fut<'_, Box<dyn Tx>> {
        Box::pin(async move {
            // IMMEDIATE takes the write lock up front, so a read-then-write
            // transaction cannot fail half-way when another process writes,
            // and what it read cannot change before it commits.
            let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            Ok(Box::new(tx::SqliteTx(tx)) as Box<dyn Tx>)
        })
    }

    fn get_key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>> {
        Box::pin(async move {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1");
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
            one(&self.pool, query, rows::key_record).await
        })
    }

    fn list_keys<'a>(&'a self, f: &'a KeyFilter) -> Fut<'a, Vec<KeyRecord>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys
                 WHERE (?1 IS NULL OR owner = ?1)
                   AND (?2 OR revoked_at IS NULL)
                   AND (?3 IS NULL OR id > ?3)
                 ORDER BY id LIMIT ?4"
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(f.owner.as_deref())
                .bind(f.include_revoked)
                .bind(f.after.as_deref())
                .bind(f.limit);
            all(&self.pool, query, rows::key_record).await
        })
    }

    fn grant_by_hash<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<KeyGrant>> {
        let query = sqlx::query(
            "SELECT id, owner, scopes, expires_at, revoked_at, disabled, remaining_uses,
                    refill_interval, refill_amount, refilled_at, rate_limit
             FROM api_keys WHERE key_hash = ?1",
        )
        .bind(&hash.0[..]);
        Box::pin(one(&self.pool, query, rows::key_grant))
    }

    fn spend_uses<'a>(&'a self, hash: &'a KeyHash, spend: Spend) -> Fut<'a, Option<i64>> {
        Box::pin(async move {
            // One statement: the refill, the check and the decrement cannot
            // be split by a concurrent request, in this process or another.
            // SET expressions all read the row as it was before the update.
            Ok(sqlx::query_scalar(
                "UPDATE api_keys SET
                    remaining_uses = CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN ?3 ELSE ?4 END)
                        THEN refill_amount - ?2 ELSE remaining_uses - ?2 END,
                    refilled_at = CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN ?3 ELSE ?4 END)
                        THEN (CASE refill_interval WHEN 'day' THEN ?3 ELSE ?4 END) ELSE refilled_at END
                 WHERE key_hash = ?1 AND remaining_uses IS NOT NULL
                   AND (CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN ?3 ELSE ?4 END)
                        THEN refill_amount ELSE remaining_uses END) >= ?2
                 RETURNING remaining_uses",
            )
            .bind(&hash.0[..])
            .bind(spend.cost)
            .bind(spend.day_start)
            .bind(spend.month_start)
            .fetch_optional(&self.pool)
            .await?)
        })
    }

    fn changes_after(&self, seq: i64) -> Fut<'_, Vec<(i64, KeyHash)>> {
        let query = sqlx::query(
            "SELECT seq, key_hash FROM key_changes WHERE seq > ?1 ORDER BY seq LIMIT 10000",
        )
        .bind(seq);
        Box::pin(all(&self.pool, query, |r| {
            Ok((r.try_get("seq")?, hash32(r, "key_hash")?))
        }))
    }

    fn last_change(&self) -> Fut<'_, i64> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM key_changes")
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
    }

    fn prune_changes(&self, before: i64) -> Fut<'_, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM key_changes WHERE changed_at < ?1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn list_audit(&self, before: Option<i64>, limit: i64) -> Fut<'_, Vec<AuditEvent>> {
        let query = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_events
             WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(limit);
        Box::pin(all(&self.pool, query, rows::audit_event))
    }

    fn get_user<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserRecord>> {
        let query = sqlx::query("SELECT * FROM users WHERE username = ?1").bind(username);
        Box::pin(one(&self.pool, query, rows::user_record))
    }

    fn list_users(&self) -> Fut<'_, Vec<UserRecord>> {
        let query = sqlx::query("SELECT * FROM users ORDER BY username");
        Box::pin(all(&self.pool, query, rows::user_record))
    }

    fn user_auth<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserAuth>> {
        let query = sqlx::query(
            "SELECT username, password_hash, scopes, disabled, tokens_after
             FROM users WHERE username = ?1",
        )
        .bind(username);
        Box::pin(one(&self.pool, query, rows::user_auth))
    }

    fn upgrade_hash<'a>(
        &'a self,
        username: &'a str,
        old: &'a str,
        new: &'a str,
        at: i64,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE users SET password_hash = ?3, updated_at = ?4
                 WHERE username = ?1 AND password_hash = ?2",
            )
            .bind(username)
            .bind(old)
            .bind(new)
            .bind(at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn get_client<'a>(&'a self, client_id: &'a str) -> Fut<'a, Option<ClientRecord>> {
        let query = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = ?1").bind(client_id);
        Box::pin(one(&self.pool, query, rows::client_record))
    }

    fn list_clients(&self) -> Fut<'_, Vec<ClientRecord>> {
        let query = sqlx::query("SELECT * FROM oauth_clients ORDER BY created_at, client_id");
        Box::pin(all(&self.pool, query, rows::client_record))
    }

    fn client_auth<'a>(&'a self, client_id: &'a str) -> Fut<'a, Option<ClientAuth>> {
        let query = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = ?1").bind(client_id);
        Box::pin(one(&self.pool, query, rows::client_auth))
    }

    fn insert_refresh<'a>(&'a self, hash: &'a KeyHash, grant: &'a RefreshGrant) -> Fut<'a, ()> {
        Box::pin(tx::insert_refresh(&self.pool, hash, grant))
    }

    fn refresh<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<RefreshRow>> {
        Box::pin(tx::refresh(&self.pool, hash))
    }

    fn insert_session<'a>(&'a self, hash: &'a KeyHash, s: &'a SessionRow) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO sessions (session_hash, username, created_at, last_seen_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&hash.0[..])
            .bind(&s.username)
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.expires_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn session<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<SessionRow>> {
        let query = sqlx::query("SELECT * FROM sessions WHERE session_hash = ?1").bind(&hash.0[..]);
        Box::pin(one(&self.pool, query, rows::session_row))
    }

    fn signing_keys(&self, now: i64) -> Fut<'_, Vec<SigningKeyRow>> {
        let query = sqlx::query(
            "SELECT * FROM signing_keys WHERE drop_after IS NULL OR drop_after > ?1
             ORDER BY created_at DESC, kid DESC",
        )
        .bind(now);
        Box::pin(all(&self.pool, query, rows::signing_key_row))
    }

    fn secret<'a>(&'a self, name: &'a str, fresh: &'a [u8], now: i64) -> Fut<'a, Vec<u8>> {
        Box::pin(async move {
            // Insert-or-keep, then read: two processes starting together
            // agree on whichever value landed first.
            sqlx::query(
                "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
    }

    fn add_usage<'a>(&'a self, buckets: &'a [crate::store::usage::Bucket]) -> Fut<'a, ()> {
        Box::pin(usage::add(&self.pool, buckets))
    }

    fn usage_series<'a>(
        &'a self,
        key_id: &'a str,
        span: &'static str,
        from: i64,
        to: i64,
    ) -> Fut<'a, Vec<(i64, String, i64)>> {
        Box::pin(usage::series(&self.pool, key_id, span, from, to))
    }

    fn usage_top(
        &self,
        span: &'static str,
        from: i64,
        to: i64,
        order: crate::analytics::TopOrder,
        limit: i64,
    ) -> Fut<'_, Vec<crate::store::usage::TopRow>> {
        Box::pin(usage::top(&self.pool, span, from, to, order, limit))
    }

    fn prune_usage(&self, span: &'static str, before: i64, limit: i64) -> Fut<'_, u64> {
        Box::pin(usage::prune(&self.pool, span, before, limit))
    }
}

/// Creates the database file readable and writable by its owner only, if
/// it does not exist: it holds signing keys and password hashes. SQLite
/// gives its -wal and -shm files the main file's mode.
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}

//! SQLite: one file, WAL, migrations at open, bound parameters only.

use super::{
    ADMIN_SCOPE, AuditEvent, KeyChange, KeyFilter, KeyRecord, LastAdmin, NewAudit, NewKey,
    StoreError,
};
use portcullis_core::{KeyGrant, KeyHash, Scopes};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
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
];

const KEY_COLUMNS: &str = "id, prefix, env, owner, name, scopes, created_at, expires_at, revoked_at, disabled, remaining_uses, refill_interval, refill_amount, rate_limit, metadata, last_used_at, rotated_from, rotated_to";

impl SqliteStore {
    /// Opens (and with `create`, creates) the database file.
    pub async fn open(path: &str, create: bool) -> Result<SqliteStore, StoreError> {
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

    /// Writes a consistent copy of the database to `to` (`VACUUM INTO`:
    /// online, one read transaction, so writers carry on) and returns the
    /// row count of each table in the copy.
    pub(super) async fn backup(&self, to: &Path) -> Result<Vec<(String, i64)>, StoreError> {
        let target = to
            .to_str()
            .ok_or(StoreError::Corrupt("backup path is not UTF-8"))?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        let copy = SqliteStore::open_existing_read_only(to).await?;
        copy.table_counts().await
    }

    /// Opens a database file read-only, without migrating it.
    pub(super) async fn open_existing_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
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
    pub(super) async fn table_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
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

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn begin(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so a read-then-write
        // transaction cannot fail half-way when another process writes.
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub(super) async fn insert_key(
        &self,
        k: &NewKey,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        let mut tx = self.begin().await?;
        insert_key_tx(&mut tx, k).await?;
        log_change(&mut tx, &k.hash, k.created_at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_key(&k.id).await
    }

    pub(super) async fn get_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_record(&row)
    }

    pub(super) async fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE (?1 IS NULL OR owner = ?1)
               AND (?2 OR revoked_at IS NULL)
               AND (?3 IS NULL OR id > ?3)
             ORDER BY id LIMIT ?4"
        )))
        .bind(f.owner.as_deref())
        .bind(f.include_revoked)
        .bind(f.after.as_deref())
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_record).collect()
    }

    pub(super) async fn grant_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<KeyGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT id, owner, scopes, expires_at, revoked_at, disabled, remaining_uses,
                    refill_interval, refill_amount, refilled_at, rate_limit
             FROM api_keys WHERE key_hash = ?1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(KeyGrant {
            key_id: r.try_get("id")?,
            owner: r.try_get("owner")?,
            scopes: Scopes::parse(r.try_get::<&str, _>("scopes")?)
                .map_err(|_| StoreError::Corrupt("api_keys.scopes"))?,
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
            disabled: r.try_get("disabled")?,
            remaining_uses: r.try_get("remaining_uses")?,
            refill: refill_of(&r)?,
            refilled_at: r.try_get("refilled_at")?,
            rate_limit: r
                .try_get::<Option<&str>, _>("rate_limit")?
                .map(portcullis_core::ratelimit::Policy::parse)
                .transpose()
                .map_err(|_| StoreError::Corrupt("api_keys.rate_limit"))?
                .map(std::sync::Arc::new),
        }))
    }

    pub(super) async fn change_key(
        &self,
        id: &str,
        change: KeyChange,
        last_admin: LastAdmin,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        // BEGIN IMMEDIATE: the write lock is held from the first read, so
        // the last-admin count below cannot be changed by another writer
        // (this process or another) before this change commits.
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT key_hash, revoked_at, disabled, scopes, expires_at, remaining_uses, refill_interval
             FROM api_keys WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let hash = hash_of(&row)?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        if revoked.is_some() {
            return Err(StoreError::Conflict(
                "the key is revoked; revocation is final",
            ));
        }
        let removes_access = matches!(change, KeyChange::Revoke(_) | KeyChange::Disable);
        if last_admin == LastAdmin::Protect
            && removes_access
            && active_admin(&row, audit.at)?
            && other_active_admins(&mut tx, id, audit.at).await? == 0
        {
            return Err(StoreError::LastAdminKey);
        }
        match change {
            KeyChange::Revoke(at) => {
                sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            KeyChange::Disable | KeyChange::Enable => {
                sqlx::query("UPDATE api_keys SET disabled = ?2 WHERE id = ?1")
                    .bind(id)
                    .bind(change == KeyChange::Disable)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        log_change(&mut tx, &hash, audit.at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_key(id).await
    }

    pub(super) async fn rotate_key(
        &self,
        old_id: &str,
        new: &NewKey,
        grace_until: i64,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT key_hash, revoked_at, rotated_to, expires_at FROM api_keys WHERE id = ?1",
        )
        .bind(old_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let old_hash = hash_of(&row)?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Err(StoreError::Conflict("a revoked key cannot be rotated"));
        }
        if row.try_get::<Option<String>, _>("rotated_to")?.is_some() {
            return Err(StoreError::Conflict(
                "the key was already rotated; rotate its replacement",
            ));
        }
        if row
            .try_get::<Option<i64>, _>("expires_at")?
            .is_some_and(|e| e <= new.created_at)
        {
            return Err(StoreError::Conflict("an expired key cannot be rotated"));
        }
        insert_key_tx(&mut tx, new).await?;
        sqlx::query(
            "UPDATE api_keys SET rotated_to = ?2,
                 expires_at = CASE WHEN expires_at IS NULL OR expires_at > ?3 THEN ?3 ELSE expires_at END
             WHERE id = ?1",
        )
        .bind(old_id)
        .bind(&new.id)
        .bind(grace_until)
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, &old_hash, audit.at).await?;
        log_change(&mut tx, &new.hash, audit.at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_key(&new.id).await
    }

    pub(super) async fn consume_use(
        &self,
        hash: &KeyHash,
        cost: u32,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        use portcullis_core::quota::Refill;
        // One statement: the refill, the check and the decrement cannot be
        // split by a concurrent request, in this process or another. SET
        // expressions all read the row as it was before the update.
        let left: Option<i64> = sqlx::query_scalar(
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
        .bind(i64::from(cost.max(1)))
        .bind(Refill::Daily.period_start(now))
        .bind(Refill::Monthly.period_start(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(left)
    }

    pub(super) async fn touch_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn changes_since(&self, seq: i64) -> Result<(i64, Vec<KeyHash>), StoreError> {
        let rows = sqlx::query(
            "SELECT seq, key_hash FROM key_changes WHERE seq > ?1 ORDER BY seq LIMIT 10000",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await?;
        let mut last = seq;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            last = last.max(r.try_get("seq")?);
            out.push(hash_of(r)?);
        }
        if rows.is_empty() && seq == 0 {
            // First call: start from the newest change, not from history.
            last = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM key_changes")
                .fetch_one(&self.pool)
                .await?;
        }
        Ok((last, out))
    }

    pub(super) async fn prune_changes(&self, before: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM key_changes WHERE changed_at < ?1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_events
             WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: serde_json::from_str(r.try_get::<&str, _>("detail")?)
                        .map_err(|_| StoreError::Corrupt("audit_events.detail"))?,
                })
            })
            .collect()
    }
}

pub(super) type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn insert_key_tx(tx: &mut Tx, k: &NewKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, prefix, env, owner, name, scopes, created_at, expires_at,
                               remaining_uses, rate_limit, metadata, rotated_from,
                               refill_interval, refill_amount, refilled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .bind(&k.id)
    .bind(&k.hash.0[..])
    .bind(&k.prefix)
    .bind(&k.env)
    .bind(&k.owner)
    .bind(&k.name)
    .bind(k.scopes.to_space_separated())
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.remaining_uses)
    .bind(k.rate_limit.as_deref())
    .bind(k.metadata.to_string())
    .bind(k.rotated_from.as_deref())
    .bind(k.refill.map(|r| r.every.as_str()))
    .bind(k.refill.map(|r| r.amount))
    .bind(k.refilled_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn log_change(tx: &mut Tx, hash: &KeyHash, at: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO key_changes (key_hash, changed_at) VALUES (?1, ?2)")
        .bind(&hash.0[..])
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn write_audit(tx: &mut Tx, a: &NewAudit) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(a.at)
    .bind(&a.actor)
    .bind(a.action)
    .bind(a.target.as_deref())
    .bind(a.detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether the key in `row` (not revoked) opens the admin API at `now`:
/// it holds the admin scope and is not disabled, expired or used up.
fn active_admin(row: &SqliteRow, now: i64) -> Result<bool, StoreError> {
    let scopes: &str = row.try_get("scopes")?;
    let disabled: bool = row.try_get("disabled")?;
    let expires_at: Option<i64> = row.try_get("expires_at")?;
    let uses: Option<i64> = row.try_get("remaining_uses")?;
    let refill: Option<&str> = row.try_get("refill_interval")?;
    Ok(scopes.split(' ').any(|s| s == ADMIN_SCOPE)
        && !disabled
        && expires_at.is_none_or(|e| e > now)
        && (uses.is_none_or(|u| u > 0) || refill.is_some()))
}

/// Active admin keys other than `id` that will stay so: the same test as
/// [`active_admin`], and not rotated away (a key in its rotation grace
/// ends with the grace; its replacement is the one that counts).
async fn other_active_admins(tx: &mut Tx, id: &str, now: i64) -> Result<i64, StoreError> {
    // `instr` on the space-padded list: scopes are stored space-separated,
    // and `instr` is case-sensitive as scopes are (LIKE is not).
    Ok(sqlx::query_scalar(
        // Only a key that will stay usable counts: one that expires, or
        // whose uses run out for good, would leave nobody once it does
        // (a key created with `expires_in = "3s"` must not let the last
        // lasting admin key go; found in review).
        "SELECT COUNT(*) FROM api_keys
         WHERE id <> ?1 AND revoked_at IS NULL AND disabled = 0
           AND expires_at IS NULL
           AND (remaining_uses IS NULL OR refill_interval IS NOT NULL)
           AND rotated_to IS NULL
           AND instr(' ' || scopes || ' ', ?3) > 0",
    )
    .bind(id)
    .bind(now)
    .bind(format!(" {ADMIN_SCOPE} "))
    .fetch_one(&mut **tx)
    .await?)
}

fn hash_of(row: &SqliteRow) -> Result<KeyHash, StoreError> {
    let b: &[u8] = row.try_get("key_hash")?;
    let arr: [u8; 32] = b.try_into().map_err(|_| StoreError::Corrupt("key_hash"))?;
    Ok(KeyHash(arr))
}

fn refill_of(r: &SqliteRow) -> Result<Option<portcullis_core::quota::RefillPlan>, StoreError> {
    let every: Option<&str> = r.try_get("refill_interval")?;
    let amount: Option<i64> = r.try_get("refill_amount")?;
    match (every, amount) {
        (None, _) => Ok(None),
        (Some(e), Some(amount)) => Ok(Some(portcullis_core::quota::RefillPlan {
            every: portcullis_core::quota::Refill::parse(e)
                .ok_or(StoreError::Corrupt("api_keys.refill_interval"))?,
            amount,
        })),
        (Some(_), None) => Err(StoreError::Corrupt("api_keys.refill_amount")),
    }
}

fn key_record(r: &SqliteRow) -> Result<KeyRecord, StoreError> {
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
        metadata: serde_json::from_str(r.try_get::<&str, _>("metadata")?)
            .map_err(|_| StoreError::Corrupt("api_keys.metadata"))?,
        last_used_at: r.try_get("last_used_at")?,
        rotated_from: r.try_get("rotated_from")?,
        rotated_to: r.try_get("rotated_to")?,
    })
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

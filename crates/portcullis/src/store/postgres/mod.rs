//! Postgres: the store several gateways share. Same tables and meanings
//! as SQLite (`migrations/postgres`), bound parameters only.
//!
//! How it keeps the backend contract (`store/backend.rs`):
//! - **Serialised writes**: every write transaction takes one
//!   transaction-scoped advisory lock first (`pg_advisory_xact_lock`), so
//!   façade writes from every gateway and the CLI run one at a time, as
//!   SQLite's `BEGIN IMMEDIATE` makes them; what a transaction reads (the
//!   other admin keys, a refresh token) holds until it commits. Writes
//!   are rare (admin changes, batched last-used times); reads and spends
//!   never take the lock.
//! - **The change log** is `key_changes` (an identity column). Because
//!   writes are serialised, entries become visible in sequence order; the
//!   poller still tolerates a gap (`portcullis_core::changes`), so an
//!   entry written outside the façade cannot be skipped either. Each
//!   entry also sends `NOTIFY portcullis_changes`, delivered on commit,
//!   which wakes every gateway's poller ([`Backend::changes_wake`]).
//! - **Atomic spends**: one `UPDATE … RETURNING`; the row lock and READ
//!   COMMITTED's re-check of the WHERE clause on the newest row version
//!   make concurrent spends exact.
//! - **Bounded waits**: a pool of `pool_size` connections, a connect /
//!   acquire timeout, a server-side `statement_timeout`, and an
//!   `idle_in_transaction_session_timeout` so a stalled writer cannot hold
//!   the write lock for long. Requests' lookups share `pool_size - 2`
//!   permits (`gate`), so a flood of made-up credentials (each a first-
//!   sight query) cannot take the connections the change-log poll and the
//!   admin API need; a request that finds no permit in time gets 503.
//! - **TLS** to the server: `sslmode` (and `sslrootcert`) in the URL, as
//!   libpq reads them, over rustls; `verify-full` checks the server's
//!   certificate and name.

mod dump;
mod listen;
mod tx;
mod usage;

use super::backend::{Backend, Fut, RefreshRow, Spend, Tx};
use super::identity::{
    ClientAuth, ClientRecord, RefreshGrant, SessionRow, SigningKeyRow, UserAuth, UserRecord,
};
use super::rows::{self, KEY_COLUMNS};
use super::{AuditEvent, KeyFilter, KeyRecord, Listen, StoreError, StoreOptions, redact_url};
use portcullis_core::{KeyGrant, KeyHash};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Connections the request path leaves to the poll and the writers.
const RESERVED: u32 = 2;

/// The key of the advisory lock every write transaction takes: any
/// constant works, as long as every Portcullis process uses the same one
/// ("PORTCULL" in ASCII).
const WRITE_LOCK: i64 = 0x504f_5254_4355_4c4c;

/// The Postgres store.
#[derive(Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
    wake: Option<Arc<Notify>>,
    /// Permits for the queries requests make (key, session, user and
    /// client lookups, spends): two connections fewer than the pool, so
    /// the change-log poll, admin writes and last-used writes always find
    /// one, however many lookups a flood of made-up credentials starts.
    gate: Arc<Semaphore>,
    /// How long a request waits for a permit before its 503.
    gate_wait: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's options hold the password: show nothing of them.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The query parameters sqlx's Postgres driver reads.
const KNOWN_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Connect options from a URL, with the timeouts applied on the server.
fn connect_options(url: &str, o: &StoreOptions) -> Result<PgConnectOptions, StoreError> {
    // sqlx logs a query parameter it does not know with its value (at
    // warn): a mistyped or libpq-only one (`sslpassword`) may be a secret,
    // so only the parameters sqlx reads are allowed.
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if !KNOWN_PARAMS.contains(&key) {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{} (unknown parameter {key:?}; known: {})",
                    redact_url(url),
                    KNOWN_PARAMS.join(", ")
                )));
            }
        }
    }
    // sqlx's parse error can quote the URL: say only that it is not one.
    let opts =
        PgConnectOptions::from_str(url).map_err(|_| StoreError::UnsupportedUrl(redact_url(url)))?;
    let statement_ms = o.statement_timeout.as_millis().max(1).to_string();
    // Twice the statement timeout: long enough for a transaction's few
    // statements, short enough that a stalled writer frees the write lock.
    let idle_ms = (o.statement_timeout.as_millis().max(1) * 2).to_string();
    Ok(opts.application_name("portcullis").options([
        ("statement_timeout", statement_ms.as_str()),
        ("idle_in_transaction_session_timeout", idle_ms.as_str()),
    ]))
}

/// Says so at start-up when the server is not on this machine and its
/// certificate is not checked: the store holds key hashes, password hashes
/// and signing keys, and `sslmode=prefer` (the default, as in libpq) lets
/// anyone on the path downgrade the connection to plain text.
fn warn_unverified_tls(opts: &PgConnectOptions) {
    use sqlx::postgres::PgSslMode;
    let host = opts.get_host();
    // An IPv6 literal comes back in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.starts_with('/')
        || host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let verified = matches!(
        opts.get_ssl_mode(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    if !local && !verified {
        tracing::warn!(
            host,
            "the Postgres store's certificate is not verified: add sslmode=verify-full (and sslrootcert=CA.pem) to the store URL"
        );
    }
}

/// Opens the Postgres store named by `url`, applies migrations (under
/// sqlx's migration lock, so gateways starting together migrate once),
/// and starts listening for changes unless told not to.
pub(crate) async fn open(url: &str, o: &StoreOptions) -> Result<Arc<dyn Backend>, StoreError> {
    let opts = connect_options(url, o)?;
    warn_unverified_tls(&opts);
    let pool = PgPoolOptions::new()
        .max_connections(o.pool_size.max(1))
        .acquire_timeout(o.connect_timeout)
        .connect_with(opts.clone())
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    let wake = match &o.listen {
        Listen::Off => None,
        Listen::Store => Some(listen::spawn(opts)),
        Listen::Url(direct) => {
            let direct = connect_options(direct, o)?;
            warn_unverified_tls(&direct);
            Some(listen::spawn(direct))
        }
    };
    let pool_size = o.pool_size.max(1);
    let permits = usize::try_from(pool_size.saturating_sub(RESERVED).max(1)).unwrap_or(1);
    Ok(Arc::new(PgStore {
        pool,
        wake,
        gate: Arc::new(Semaphore::new(permits)),
        gate_wait: o.connect_timeout,
    }))
}

impl PgStore {
    /// Runs a request's query under the gate: waits at most `gate_wait`
    /// for a permit, then answers "busy" (503 for that request alone).
    async fn gated<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let permit = tokio::time::timeout(self.gate_wait, self.gate.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("the store is busy: too many lookups at once"))?
            .map_err(|_| StoreError::Unavailable("the store is closed"))?;
        let r = query.await;
        drop(permit);
        r
    }
}

/// Runs a bound query for at most one row and decodes it.
pub(super) async fn one<'e, 'q: 'e, E, Q, T>(
    db: E,
    query: Q,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
    Q: 'q + sqlx::Execute<'q, Postgres>,
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
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
    Q: 'q + sqlx::Execute<'q, Postgres>,
{
    db.fetch_all(query).await?.iter().map(decode).collect()
}

impl Backend for PgStore {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn changes_wake(&self) -> Option<Arc<Notify>> {
        self.wake.clone()
    }

    fn backup<'a>(&'a self, _to: &'a Path) -> Fut<'a, Vec<(String, i64)>> {
        Box::pin(async move {
            Err(StoreError::Unsupported(
                "store backup copies SQLite files; back up Postgres with pg_dump or your provider's snapshots",
            ))
        })
    }

    fn export(&self) -> Fut<'_, super::dump::Dump> {
        Box::pin(dump::export(&self.pool))
    }

    fn import<'a>(&'a self, d: &'a super::dump::Dump) -> Fut<'a, Vec<u64>> {
        Box::pin(dump::import(&self.pool, d))
    }

    fn begin(&self) -> Fut<'_, Box<dyn Tx>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            // Serialises every façade write transaction, from every
            // process, from its first statement (see the module comment).
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(Box::new(tx::PgTx(tx)) as Box<dyn Tx>)
        })
    }

    fn get_key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>> {
        Box::pin(async move {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
            one(&self.pool, query, rows::key_record).await
        })
    }

    fn list_keys<'a>(&'a self, f: &'a KeyFilter) -> Fut<'a, Vec<KeyRecord>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys
                 WHERE ($1 IS NULL OR owner = $1)
                   AND ($2 OR revoked_at IS NULL)
                   AND ($3 IS NULL OR id > $3)
                 ORDER BY id LIMIT $4"
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
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(&hash.0[..]);
        Box::pin(self.gated(one(&self.pool, query, rows::key_grant)))
    }

    fn spend_uses<'a>(&'a self, hash: &'a KeyHash, spend: Spend) -> Fut<'a, Option<i64>> {
        Box::pin(self.gated(async move {
            // One statement: the refill, the check and the decrement cannot
            // be split by a concurrent request, in this process or another.
            // SET expressions all read the row as it was before the update.
            Ok(sqlx::query_scalar(
                "UPDATE api_keys SET
                    remaining_uses = CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN $3 ELSE $4 END)
                        THEN refill_amount - $2 ELSE remaining_uses - $2 END,
                    refilled_at = CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN $3 ELSE $4 END)
                        THEN (CASE refill_interval WHEN 'day' THEN $3 ELSE $4 END) ELSE refilled_at END
                 WHERE key_hash = $1 AND remaining_uses IS NOT NULL
                   AND (CASE WHEN refill_interval IS NOT NULL
                            AND refilled_at < (CASE refill_interval WHEN 'day' THEN $3 ELSE $4 END)
                        THEN refill_amount ELSE remaining_uses END) >= $2
                 RETURNING remaining_uses",
            )
            .bind(&hash.0[..])
            .bind(spend.cost)
            .bind(spend.day_start)
            .bind(spend.month_start)
            .fetch_optional(&self.pool)
            .await?)
        }))
    }

    fn changes_after(&self, seq: i64) -> Fut<'_, Vec<(i64, KeyHash)>> {
        let query = sqlx::query(
            "SELECT seq, key_hash FROM key_changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
        )
        .bind(seq);
        Box::pin(all(&self.pool, query, |r| {
            Ok((r.try_get("seq")?, rows::hash32(r, "key_hash")?))
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
            sqlx::query("DELETE FROM key_changes WHERE changed_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn list_audit(&self, before: Option<i64>, limit: i64) -> Fut<'_, Vec<AuditEvent>> {
        let query = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_events
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit);
        Box::pin(all(&self.pool, query, rows::audit_event))
    }

    fn get_user<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserRecord>> {
        let query = sqlx::query("SELECT * FROM users WHERE username = $1").bind(username);
        Box::pin(one(&self.pool, query, rows::user_record))
    }

    fn list_users(&self) -> Fut<'_, Vec<UserRecord>> {
        let query = sqlx::query("SELECT * FROM users ORDER BY username");
        Box::pin(all(&self.pool, query, rows::user_record))
    }

    fn user_auth<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserAuth>> {
        let query = sqlx::query(
            "SELECT username, password_hash, scopes, disabled, tokens_after
             FROM users WHERE username = $1",
        )
        .bind(username);
        Box::pin(self.gated(one(&self.pool, query, rows::user_auth)))
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
                "UPDATE users SET password_hash = $3, updated_at = $4
                 WHERE username = $1 AND password_hash = $2",
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
        let query = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = $1").bind(client_id);
        Box::pin(one(&self.pool, query, rows::client_record))
    }

    fn list_clients(&self) -> Fut<'_, Vec<ClientRecord>> {
        let query = sqlx::query("SELECT * FROM oauth_clients ORDER BY created_at, client_id");
        Box::pin(all(&self.pool, query, rows::client_record))
    }

    fn client_auth<'a>(&'a self, client_id: &'a str) -> Fut<'a, Option<ClientAuth>> {
        let query = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = $1").bind(client_id);
        Box::pin(self.gated(one(&self.pool, query, rows::client_auth)))
    }

    fn insert_refresh<'a>(&'a self, hash: &'a KeyHash, grant: &'a RefreshGrant) -> Fut<'a, ()> {
        Box::pin(tx::insert_refresh(&self.pool, hash, grant))
    }

    fn refresh<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<RefreshRow>> {
        Box::pin(self.gated(tx::refresh(&self.pool, hash)))
    }

    fn insert_session<'a>(&'a self, hash: &'a KeyHash, s: &'a SessionRow) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO sessions (session_hash, username, created_at, last_seen_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
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
        let query = sqlx::query("SELECT * FROM sessions WHERE session_hash = $1").bind(&hash.0[..]);
        Box::pin(self.gated(one(&self.pool, query, rows::session_row)))
    }

    fn signing_keys(&self, now: i64) -> Fut<'_, Vec<SigningKeyRow>> {
        let query = sqlx::query(
            "SELECT * FROM signing_keys WHERE drop_after IS NULL OR drop_after > $1
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
                "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
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

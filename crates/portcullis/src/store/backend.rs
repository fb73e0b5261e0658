//! The backend contract: what a database must do for the [`Store`]
//! façade, and nothing it must decide.
//!
//! A backend offers reads and single atomic statements on its pool
//! ([`Backend`]) and a serialised write transaction ([`Tx`]) whose
//! statements the façade composes. Which rotations conflict, what a
//! revocation cascades to, what a disable ends, what is audited and which
//! subjects enter the change log are decided in `store/rules.rs` and the
//! façade; a backend only reads and writes rows.
//!
//! [`Store`]: super::Store

use super::dump::Dump;
use super::identity::{ClientAuth, ClientRecord, UserAuth, UserRecord};
use super::identity::{NewClient, NewUser, RefreshGrant, SessionRow, SigningKeyRow};
use super::usage::{Bucket, TopRow};
use super::{AuditEvent, KeyFilter, KeyRecord, NewAudit, NewKey, StoreError};
use crate::analytics::TopOrder;
use portcullis_core::{KeyGrant, KeyHash};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// A backend's answer: boxed so the traits stay object-safe (the store
/// holds an `Arc<dyn Backend>`), `Send` so a handler can hold it.
pub(crate) type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the rules need to know about a stored key (read inside a write
/// transaction, so it cannot change before the transaction commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyState {
    /// SHA-256 of the key: its change-log entry.
    pub hash: KeyHash,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Switched off.
    pub disabled: bool,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Uses left; `None` = unlimited.
    pub remaining_uses: Option<i64>,
    /// The uses are refilled (daily or monthly).
    pub refilled: bool,
    /// The key that replaced this one.
    pub rotated_to: Option<String>,
}

/// A stored refresh token: its grant and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefreshRow {
    /// The grant it carries.
    pub grant: RefreshGrant,
    /// When it was spent (rotated), if it was.
    pub used_at: Option<i64>,
    /// When it (or its family) was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// The spend of a limited key's uses, with the refill periods the façade
/// computed from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spend {
    /// Uses to take (at least 1).
    pub cost: i64,
    /// Start of the current UTC day (Unix seconds).
    pub day_start: i64,
    /// Start of the current UTC month (Unix seconds).
    pub month_start: i64,
}

/// A database behind the store. Reads see committed data; every write
/// here is one atomic statement (or, for batches, one transaction).
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Checks the database answers.
    fn ping(&self) -> Fut<'_, ()>;

    /// A wake-up for the change-log poller, notified soon after another
    /// process (or this one) commits a change-log entry: Postgres
    /// `LISTEN/NOTIFY`. `None` when the backend has none (SQLite): the
    /// poller's interval alone bounds staleness. A wake-up only shortens
    /// the wait; the change log stays the truth, so a lost notification
    /// costs latency, never correctness.
    fn changes_wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Writes a consistent copy to `to`, online, and returns each table's
    /// row count in the copy.
    fn backup<'a>(&'a self, to: &'a Path) -> Fut<'a, Vec<(String, i64)>>;

    /// Every row of the copied tables (`dump::TABLES`, everything but the
    /// change log), read in one read transaction: a consistent snapshot
    /// while writers carry on. Fails when the database has a table or
    /// column the dump does not list (`dump::check_schema`).
    fn export(&self) -> Fut<'_, Dump> {
        Box::pin(async { Err(StoreError::Unsupported("this store cannot be copied")) })
    }

    /// Inserts every row of `dump` in one transaction, skipping a row
    /// whose primary key is there already (`ON CONFLICT DO NOTHING`), and
    /// moves each generated key's generator past the inserted ids, so
    /// later inserts do not collide. Returns how many rows each table
    /// gained, in `dump` order.
    fn import<'a>(&'a self, dump: &'a Dump) -> Fut<'a, Vec<u64>> {
        let _ = dump;
        Box::pin(async { Err(StoreError::Unsupported("this store cannot be copied")) })
    }

    /// Begins a write transaction, serialised against every other write
    /// transaction on the database (from this process or another) from
    /// its first statement: what it reads cannot change before it
    /// commits. Dropping it without [`Tx::commit`] rolls it back.
    fn begin(&self) -> Fut<'_, Box<dyn Tx>>;

    /// One key by id.
    fn get_key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>>;

    /// Keys matching `filter`, ordered by id.
    fn list_keys<'a>(&'a self, filter: &'a KeyFilter) -> Fut<'a, Vec<KeyRecord>>;

    /// What the verifier needs about the key with this hash.
    fn grant_by_hash<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<KeyGrant>>;

    /// One atomic statement (no other spend of the key can interleave,
    /// from any process): if the key's uses are limited, first refill
    /// them to its refill amount when its refill is due (it was last
    /// refilled before the start of its period: `day_start` or
    /// `month_start`), then take `cost` uses if that many are there.
    /// Returns the uses left, or `None` when nothing was taken.
    fn spend_uses<'a>(&'a self, hash: &'a KeyHash, spend: Spend) -> Fut<'a, Option<i64>>;

    /// Change-log entries after `seq`, in sequence order, at most 10,000:
    /// each with its sequence number.
    fn changes_after(&self, seq: i64) -> Fut<'_, Vec<(i64, KeyHash)>>;

    /// The newest change-log sequence number (0 when empty).
    fn last_change(&self) -> Fut<'_, i64>;

    /// Deletes change-log rows recorded before `before` (Unix seconds).
    fn prune_changes(&self, before: i64) -> Fut<'_, ()>;

    /// Audit events with id below `before`, newest first.
    fn list_audit(&self, before: Option<i64>, limit: i64) -> Fut<'_, Vec<AuditEvent>>;

    /// One user, for display.
    fn get_user<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserRecord>>;

    /// Every user, by name.
    fn list_users(&self) -> Fut<'_, Vec<UserRecord>>;

    /// What authentication needs about a user.
    fn user_auth<'a>(&'a self, username: &'a str) -> Fut<'a, Option<UserAuth>>;

    /// Replaces a user's hash with `new` only while it is still `old`
    /// (one compare-and-set statement).
    fn upgrade_hash<'a>(
        &'a self,
        username: &'a str,
        old: &'a str,
        new: &'a str,
        at: i64,
    ) -> Fut<'a, ()>;

    /// One client, for display.
    fn get_client<'a>(&'a self, client_id: &'a str) -> Fut<'a, Option<ClientRecord>>;

    /// Every client, by creation time then id.
    fn list_clients(&self) -> Fut<'_, Vec<ClientRecord>>;

    /// What client authentication needs.
    fn client_auth<'a>(&'a self, client_id: &'a str) -> Fut<'a, Option<ClientAuth>>;

    /// Stores a refresh token.
    fn insert_refresh<'a>(&'a self, hash: &'a KeyHash, grant: &'a RefreshGrant) -> Fut<'a, ()>;

    /// A refresh token as stored, whatever its state.
    fn refresh<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<RefreshRow>>;

    /// Stores a session.
    fn insert_session<'a>(&'a self, hash: &'a KeyHash, row: &'a SessionRow) -> Fut<'a, ()>;

    /// A session by hash.
    fn session<'a>(&'a self, hash: &'a KeyHash) -> Fut<'a, Option<SessionRow>>;

    /// Signing keys not dropped by `now` (no `drop_after`, or later),
    /// newest first (by creation, then kid).
    fn signing_keys(&self, now: i64) -> Fut<'_, Vec<SigningKeyRow>>;

    /// Inserts the secret `name` unless it exists (one statement), then
    /// returns the stored value: concurrent callers agree on one.
    fn secret<'a>(&'a self, name: &'a str, fresh: &'a [u8], now: i64) -> Fut<'a, Vec<u8>>;

    /// Adds each bucket's count to its `usage` row, inserting the row when
    /// it is not there, all in one transaction. `buckets` are unique and
    /// in primary-key order. Not a façade write (no change log, no audit,
    /// no write lock): each row's upsert is atomic on its own.
    fn add_usage<'a>(&'a self, buckets: &'a [Bucket]) -> Fut<'a, ()>;

    /// `(bucket start, outcome, sum)` of a key's `span` rows starting in
    /// `[from, to)`, by bucket start.
    fn usage_series<'a>(
        &'a self,
        key_id: &'a str,
        span: &'static str,
        from: i64,
        to: i64,
    ) -> Fut<'a, Vec<(i64, String, i64)>>;

    /// The `limit` keys (a key id, or a subject's own row under key id
    /// `""`) with the most decisions / refusals in the `span` rows
    /// starting in `[from, to)`: each one's sum per outcome.
    fn usage_top(
        &self,
        span: &'static str,
        from: i64,
        to: i64,
        order: TopOrder,
        limit: i64,
    ) -> Fut<'_, Vec<TopRow>>;

    /// Deletes at most `limit` `span` rows starting before `before`; how
    /// many it deleted.
    fn prune_usage(&self, span: &'static str, before: i64, limit: i64) -> Fut<'_, u64>;
}

/// A write transaction (see [`Backend::begin`]): the statements the
/// façade composes into one atomic change. Methods that name a row which
/// may be missing say so by their answer (`bool`, `Option`, a count),
/// never by an error, so the façade decides what a miss means.
pub(crate) trait Tx: Send {
    /// Appends `hash` to the change log, stamped `at`. Sequence numbers
    /// grow strictly, and are assigned in commit order for transactions
    /// that touch the log (writes are serialised).
    fn record_change<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()>;

    /// Writes an audit event; ids grow strictly.
    fn audit<'a>(&'a mut self, event: &'a NewAudit) -> Fut<'a, ()>;

    /// Commits everything done in the transaction, or nothing.
    fn commit(self: Box<Self>) -> Fut<'static, ()>;

    /// A key's state by id.
    fn key_state<'a>(&'a mut self, id: &'a str) -> Fut<'a, Option<KeyState>>;

    /// Keys not revoked whose scopes include `scope` (exact, case-
    /// sensitive), with their ids.
    fn unrevoked_keys_with_scope<'a>(
        &'a mut self,
        scope: &'a str,
    ) -> Fut<'a, Vec<(String, KeyState)>>;

    /// Inserts a key (its id and hash must be new).
    fn insert_key<'a>(&'a mut self, key: &'a NewKey) -> Fut<'a, ()>;

    /// Sets a key's `revoked_at`.
    fn set_key_revoked<'a>(&'a mut self, id: &'a str, at: i64) -> Fut<'a, ()>;

    /// Switches a key off or on.
    fn set_key_disabled<'a>(&'a mut self, id: &'a str, disabled: bool) -> Fut<'a, ()>;

    /// Sets the settings that are `Some` (scopes; the rate-limit override,
    /// `Some(None)` removing it; the remaining uses, `Some(None)` for
    /// unlimited) and leaves the others as they are, in one statement:
    /// a use spent meanwhile is never written back.
    fn set_key_settings<'a>(
        &'a mut self,
        id: &'a str,
        scopes: Option<&'a str>,
        rate_limit: Option<Option<&'a str>>,
        remaining_uses: Option<Option<i64>>,
    ) -> Fut<'a, ()>;

    /// Links a rotated key to its replacement and sets its expiry.
    fn set_key_rotated<'a>(
        &'a mut self,
        id: &'a str,
        rotated_to: &'a str,
        expires_at: i64,
    ) -> Fut<'a, ()>;

    /// Raises a key's last-used time to `at` (never lowers it).
    fn touch_key<'a>(&'a mut self, id: &'a str, at: i64) -> Fut<'a, ()>;

    /// [`Tx::touch_key`] for a batch. A backend across a network answers
    /// it in one statement (Postgres: `unnest`), so an instance's flush
    /// costs one round trip, not one per key in use.
    fn touch_keys<'a>(&'a mut self, batch: &'a [(String, i64)]) -> Fut<'a, ()> {
        Box::pin(async move {
            for (id, at) in batch {
                self.touch_key(id, *at).await?;
            }
            Ok(())
        })
    }

    /// Inserts a user; `false` (and nothing written) when the name exists.
    fn insert_user<'a>(&'a mut self, user: &'a NewUser) -> Fut<'a, bool>;

    /// Sets a user's password hash and `updated_at`; `false` when there is
    /// no such user.
    fn set_password_hash<'a>(
        &'a mut self,
        username: &'a str,
        hash: &'a str,
        at: i64,
    ) -> Fut<'a, bool>;

    /// Switches a user off or on and sets `updated_at`; `false` when there
    /// is no such user.
    fn set_user_disabled<'a>(
        &'a mut self,
        username: &'a str,
        disabled: bool,
        at: i64,
    ) -> Fut<'a, bool>;

    /// Sets the time before which the user's tokens are refused.
    fn set_tokens_after<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()>;

    /// Revokes the user's sessions not revoked yet.
    fn revoke_user_sessions<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()>;

    /// Revokes refresh tokens not revoked yet whose subject is this user
    /// (kind `user`).
    fn revoke_user_refresh<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()>;

    /// Inserts a client (its id must be new).
    fn insert_client<'a>(&'a mut self, client: &'a NewClient) -> Fut<'a, ()>;

    /// A client's `revoked_at`: `None` when there is no such client.
    fn client_revoked_at<'a>(&'a mut self, client_id: &'a str) -> Fut<'a, Option<Option<i64>>>;

    /// Sets a client's `revoked_at`.
    fn set_client_revoked<'a>(&'a mut self, client_id: &'a str, at: i64) -> Fut<'a, ()>;

    /// Revokes refresh tokens not revoked yet that are bound to the client.
    fn revoke_client_refresh<'a>(&'a mut self, client_id: &'a str, at: i64) -> Fut<'a, ()>;

    /// A refresh token as stored.
    fn refresh<'a>(&'a mut self, hash: &'a KeyHash) -> Fut<'a, Option<RefreshRow>>;

    /// Marks a refresh token spent.
    fn set_refresh_used<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()>;

    /// Stores a refresh token.
    fn insert_refresh<'a>(&'a mut self, hash: &'a KeyHash, grant: &'a RefreshGrant) -> Fut<'a, ()>;

    /// Revokes a family's tokens not revoked yet; how many it revoked.
    fn revoke_refresh_family<'a>(&'a mut self, family: &'a str, at: i64) -> Fut<'a, u64>;

    /// Revokes a session if it is not revoked yet.
    fn revoke_session<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()>;

    /// Raises a session's last-seen time to `at` (never lowers it).
    fn touch_session<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()>;

    /// How many signing keys of `alg` are not retired.
    fn live_signing_keys<'a>(&'a mut self, alg: &'a str) -> Fut<'a, i64>;

    /// Retires at `at` every signing key not retired yet; they leave the
    /// JWKS at `drop_after`.
    fn retire_signing_keys(&mut self, at: i64, drop_after: i64) -> Fut<'_, ()>;

    /// Inserts a signing key (not retired).
    fn insert_signing_key<'a>(&'a mut self, row: &'a SigningKeyRow) -> Fut<'a, ()>;
}

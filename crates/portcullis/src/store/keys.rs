//! The store's key operations: the rules of a key's life (creation,
//! state changes, rotation, spending uses) over the backend's statements,
//! each write through one audited transaction.

use super::{
    ADMIN_SCOPE, AuditEvent, KeyChange, KeyFilter, KeyRecord, KeySettings, LastAdmin, NewAudit,
    NewKey, Store, StoreError, rules,
};
use portcullis_core::changes::ChangeCursor;
use portcullis_core::{KeyGrant, KeyHash};
use std::sync::atomic::Ordering;

/// The most rows `Backend::changes_after` returns: a page that full may
/// have more behind it.
const CHANGES_PAGE: usize = 10_000;

impl Store {
    /// Inserts a key and its audit event in one transaction; returns once
    /// both are committed.
    pub async fn insert_key(
        &self,
        key: &NewKey,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        let mut w = self.write().await?;
        w.insert_key(key).await?;
        w.changed(key.hash, key.created_at);
        w.commit(Some(audit)).await?;
        self.get_key(&key.id).await
    }

    /// One key by id.
    pub async fn get_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.backend.get_key(id).await?.ok_or(StoreError::NotFound)
    }

    /// Keys, ordered by id.
    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.backend.list_keys(filter).await
    }

    /// What the verifier needs about the key with this hash. Every call
    /// is counted ([`Store::key_lookups`]).
    pub async fn grant_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyGrant>, StoreError> {
        self.key_lookups.fetch_add(1, Ordering::Relaxed);
        self.backend.grant_by_hash(hash).await
    }

    /// How many key lookups ([`Store::grant_by_hash`]) went to the
    /// database through this store or any clone of it, since it was
    /// opened. A failed lookup counts too.
    pub fn key_lookups(&self) -> u64 {
        self.key_lookups.load(Ordering::Relaxed)
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
        // The transaction is serialised from its first read, so the other
        // admin keys counted below cannot change (in this process or
        // another) before this change commits.
        let mut w = self.write().await?;
        let key = w.key_state(id).await?.ok_or(StoreError::NotFound)?;
        let others = other_admin_keys(&mut w, id).await?;
        rules::check_key_change(&key, change, last_admin, &others, audit.at)?;
        match change {
            KeyChange::Revoke(at) => w.set_key_revoked(id, at).await?,
            KeyChange::Disable => w.set_key_disabled(id, true).await?,
            KeyChange::Enable => w.set_key_disabled(id, false).await?,
        }
        w.changed(key.hash, audit.at);
        w.commit(Some(audit)).await?;
        self.get_key(id).await
    }

    /// Sets the settings `settings` gives (scopes, rate-limit override,
    /// remaining uses; the others are left as they are), with
    /// its audit event and change-log entry (so every gateway drops what
    /// it cached about the key), atomically. A revoked key cannot change;
    /// with [`LastAdmin::Protect`], neither can the last lasting admin key
    /// lose the admin scope or become one that runs out of uses.
    pub async fn update_key(
        &self,
        id: &str,
        settings: &KeySettings,
        last_admin: LastAdmin,
        audit: &NewAudit,
    ) -> Result<KeyRecord, StoreError> {
        let mut w = self.write().await?;
        let key = w.key_state(id).await?.ok_or(StoreError::NotFound)?;
        let others = other_admin_keys(&mut w, id).await?;
        rules::check_key_update(&key, settings, last_admin, &others, audit.at)?;
        let scopes = settings
            .scopes
            .as_ref()
            .map(portcullis_core::Scopes::to_space_separated);
        w.set_key_settings(
            id,
            scopes.as_deref(),
            settings.rate_limit.as_ref().map(Option::as_deref),
            settings.remaining_uses,
        )
        .await?;
        w.changed(key.hash, audit.at);
        w.commit(Some(audit)).await?;
        self.get_key(id).await
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
        let mut w = self.write().await?;
        let old = w.key_state(old_id).await?.ok_or(StoreError::NotFound)?;
        let old_ends = rules::rotation(&old, new.created_at, grace_until)?;
        w.insert_key(new).await?;
        w.set_key_rotated(old_id, &new.id, old_ends).await?;
        w.changed(old.hash, audit.at);
        w.changed(new.hash, audit.at);
        w.commit(Some(audit)).await?;
        self.get_key(&new.id).await
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
        self.backend.spend_uses(hash, rules::spend(cost, now)).await
    }

    /// Records last-used times in one transaction.
    pub async fn touch_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut w = self.write().await?;
        w.touch_keys(batch).await?;
        w.commit(None).await
    }

    /// Changed key hashes after `seq`, with the newest sequence number.
    ///
    /// Keeps only a high mark, so it is exact only where rows become
    /// visible in sequence order (serialised writers: SQLite). A poller
    /// that must not skip a row committed out of order (Postgres) uses
    /// [`Store::poll_changes`].
    pub async fn changes_since(&self, seq: i64) -> Result<(i64, Vec<KeyHash>), StoreError> {
        let rows = self.backend.changes_after(seq).await?;
        if rows.is_empty() && seq == 0 {
            // First call: start from the newest change, not from history.
            return Ok((self.backend.last_change().await?, Vec::new()));
        }
        let last = rows.iter().map(|(s, _)| *s).fold(seq, i64::max);
        Ok((last, rows.into_iter().map(|(_, h)| h).collect()))
    }

    /// The newest change-log sequence number (0 when the log is empty).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        self.backend.last_change().await
    }

    /// Reads the change log from `cursor` (see
    /// [`portcullis_core::changes`]) and appends to `out` the hashes of
    /// the rows it had not delivered yet, each once, in sequence order.
    /// Pages through the log until a short page, so a poll covers every
    /// number from the lowest open gap up. `now` is read around each query
    /// (the cursor needs the time before the first and after each one).
    ///
    /// On an error, the rows of the pages already read are in `out` (and
    /// taken by the cursor): the caller applies them anyway, or they would
    /// never be delivered.
    pub async fn poll_changes(
        &self,
        cursor: &mut ChangeCursor,
        now: &(dyn Fn() -> i64 + Send + Sync),
        out: &mut Vec<KeyHash>,
    ) -> Result<(), StoreError> {
        // Read before the first query runs: every open gap's position is
        // covered by a query that started at or after it.
        let started = now();
        let mut from = cursor.after();
        loop {
            let rows = self.backend.changes_after(from).await?;
            // Read after the query has answered: a gap it reveals was
            // taken before the row above it committed, so before this.
            let seen_at = now();
            let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
            let fresh = cursor.take(&seqs, seen_at);
            out.extend(
                rows.iter()
                    .zip(fresh)
                    .filter(|(_, new)| *new)
                    .map(|((_, h), _)| *h),
            );
            match seqs.last() {
                Some(&last) if rows.len() >= CHANGES_PAGE => from = last,
                _ => break,
            }
        }
        cursor.expire(started);
        Ok(())
    }

    /// Deletes change-log rows older than `before`.
    pub async fn prune_changes(&self, before: i64) -> Result<(), StoreError> {
        self.backend.prune_changes(before).await
    }

    /// Audit events, newest first, before id `before`.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.backend.list_audit(before, limit).await
    }
}

/// The unrevoked admin keys other than `id`, read inside `w`'s
/// transaction: what the last-admin rule counts.
async fn other_admin_keys(
    w: &mut super::write::Write,
    id: &str,
) -> Result<Vec<super::backend::KeyState>, StoreError> {
    Ok(w.unrevoked_keys_with_scope(ADMIN_SCOPE)
        .await?
        .into_iter()
        .filter(|(other, _)| other != id)
        .map(|(_, k)| k)
        .collect())
}

//! The one write path: a backend transaction that carries its change-log
//! entries and its audit event to the commit, so a change, the entries
//! that tell every gateway to drop what it cached, and the audit row
//! commit together or not at all.

use super::backend::Tx;
use super::{NewAudit, Store, StoreError};
use portcullis_core::KeyHash;
use std::ops::{Deref, DerefMut};

/// An open write transaction of the façade. It dereferences to the
/// backend's [`Tx`] for the change's own statements; [`Write::changed`]
/// notes a subject for the change log; [`Write::commit`] writes the notes
/// and the audit event, then commits. Dropped (an early `return` or `?`),
/// it rolls back: nothing of the change, its log entries or its audit
/// event is written.
pub(crate) struct Write {
    tx: Box<dyn Tx>,
    changes: Vec<(KeyHash, i64)>,
}

impl Store {
    /// Begins a write transaction (serialised against every other write,
    /// see [`Backend::begin`](super::backend::Backend::begin)).
    pub(crate) async fn write(&self) -> Result<Write, StoreError> {
        Ok(Write {
            tx: self.backend.begin().await?,
            changes: Vec::new(),
        })
    }
}

impl Write {
    /// Notes that the subject with this hash changed at `at`: committed to
    /// the change log with the transaction.
    pub(crate) fn changed(&mut self, hash: KeyHash, at: i64) {
        self.changes.push((hash, at));
    }

    /// Writes the noted change-log entries in the order noted, then the
    /// audit event (when the change is one an operator made), and commits.
    pub(crate) async fn commit(mut self, audit: Option<&NewAudit>) -> Result<(), StoreError> {
        for (hash, at) in &self.changes {
            self.tx.record_change(hash, *at).await?;
        }
        if let Some(a) = audit {
            self.tx.audit(a).await?;
        }
        self.tx.commit().await
    }
}

impl Deref for Write {
    type Target = dyn Tx;
    fn deref(&self) -> &(dyn Tx + 'static) {
        &*self.tx
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut (dyn Tx + 'static) {
        &mut *self.tx
    }
}

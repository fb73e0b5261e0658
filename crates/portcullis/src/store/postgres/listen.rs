//! `LISTEN portcullis_changes`: the wake-up of every gateway's change-log
//! poller. One connection of its own (not the pool's), reconnected with
//! backoff for as long as the store is open.
//!
//! A notification only says "poll now": the change log is the truth. So
//! a notification lost while the connection was down costs latency,
//! never correctness, and after every (re)connect the poller is woken once
//! to catch up on whatever happened meanwhile.

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The channel the store's change-log entries notify.
pub(super) const CHANNEL: &str = "portcullis_changes";

/// Starts the listener task; it ends when the returned wake-up is
/// dropped (the store is closed).
pub(super) fn spawn(opts: PgConnectOptions) -> Arc<Notify> {
    let wake = Arc::new(Notify::new());
    let weak = Arc::downgrade(&wake);
    tokio::spawn(run(opts, weak));
    wake
}

async fn run(opts: PgConnectOptions, wake: Weak<Notify>) {
    let mut backoff = Duration::from_millis(100);
    while wake.strong_count() > 0 {
        match listen_once(&opts, &wake).await {
            // The store was closed.
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "lost the store's change notifications; polling alone until they are back");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens until the connection fails (`Err`) or the store is closed.
async fn listen_once(opts: &PgConnectOptions, wake: &Weak<Notify>) -> Result<(), sqlx::Error> {
    // A one-connection pool only to build the listener from options (the
    // listener keeps its own connection, out of the pool).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    // Connected: whatever happened while we were not must be polled for.
    match wake.upgrade() {
        Some(w) => w.notify_one(),
        None => return Ok(()),
    }
    loop {
        // Wakes at least every few seconds to notice a closed store.
        let got = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
        let Some(w) = wake.upgrade() else {
            return Ok(());
        };
        match got {
            Err(_elapsed) => {}
            // A notification, or `None`: the connection was lost and the
            // next call reconnects; either way, poll.
            Ok(Ok(_)) => w.notify_one(),
            Ok(Err(e)) => {
                w.notify_one();
                return Err(e);
            }
        }
    }
}

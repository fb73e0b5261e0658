//! Building the identity service (users, clients, tokens, sessions) from
//! the config, and wiring it to the change log.

use crate::config::Config;
use anyhow::Result;
use portcullis::auth::identity::Identity;
use portcullis::auth::verifier::Verifier;
use portcullis::clock::SharedClock;
use portcullis::store::Store;
use std::sync::Arc;

/// The identity service for `cfg`, listening to `verifier`'s change log
/// when one is given (the server; the CLI needs none).
pub async fn build(
    cfg: &Config,
    store: &Store,
    clock: SharedClock,
    verifier: Option<&Arc<Verifier>>,
) -> Result<Arc<Identity>> {
    let ic = &cfg.identity;
    Ok(portcullis::service::start_identity(
        store,
        clock,
        ic.tokens.clone(),
        ic.sessions.clone(),
        ic.throttle.clone(),
        ic.hash_parallelism,
        verifier,
    )
    .await?)
}

//! Building the identity service (users, clients, tokens, sessions) from
//! the config, and wiring it to the change log.

use crate::config::Config;
use anyhow::{Context, Result};
use portcullis::clock::SharedClock;
use portcullis::identity::Identity;
use portcullis::password::{Passwords, default_params};
use portcullis::store::Store;
use portcullis::throttle::Throttle;
use portcullis::tokens::Tokens;
use portcullis::verify::Verifier;
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
    let tokens = Tokens::start(ic.tokens.clone(), store.clone(), clock.clone())
        .await
        .context("cannot load the token signing keys")?;
    let passwords = Passwords::new(default_params(), ic.hash_parallelism)
        .context("cannot set up password hashing")?;
    let identity = Identity::new(
        store.clone(),
        clock.clone(),
        passwords,
        tokens,
        ic.sessions.clone(),
        Throttle::new(ic.throttle.clone(), clock),
    )
    .await
    .context("cannot set up users and sessions")?;
    if let Some(v) = verifier {
        let weak = Arc::downgrade(&identity);
        v.on_change(move |changed| {
            if let Some(id) = weak.upgrade() {
                tokio::spawn(async move { id.on_changes(&changed).await });
            }
        });
    }
    Ok(identity)
}

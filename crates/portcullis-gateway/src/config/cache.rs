//! `[cache]`: how long verification results are kept, and how often the
//! store is polled for revocations.

use super::value::dur;
use super::{ConfigError, cerr};
use portcullis::auth::verifier::VerifierConfig;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    negative_ttl: Option<String>,
    positive_ttl: Option<String>,
    sync_interval_ms: Option<u64>,
    last_used_interval: Option<String>,
}

/// The verifier's tuning.
pub(super) fn parse(cache: &RawCache) -> Result<VerifierConfig, ConfigError> {
    let mut verifier = VerifierConfig::default();
    verifier.negative_ttl = dur(
        "cache.negative_ttl",
        &cache.negative_ttl,
        verifier.negative_ttl,
    )?;
    verifier.positive_ttl = dur(
        "cache.positive_ttl",
        &cache.positive_ttl,
        verifier.positive_ttl,
    )?;
    verifier.touch_interval = dur(
        "cache.last_used_interval",
        &cache.last_used_interval,
        verifier.touch_interval,
    )?;
    if let Some(ms) = cache.sync_interval_ms {
        if !(10..=1000).contains(&ms) {
            return Err(cerr(
                "cache.sync_interval_ms",
                "must be between 10 and 1000: it bounds how long a revoked key can still pass",
            ));
        }
        verifier.sync_interval = Duration::from_millis(ms);
    }
    if verifier.touch_interval.is_zero() {
        return Err(cerr("cache.last_used_interval", "must be at least 1s"));
    }
    Ok(verifier)
}

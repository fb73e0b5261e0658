//! `[abuse]`: failed credentials counted per client address (an IPv4
//! address, an IPv6 /64), and an address past the threshold refused with
//! 429 before any verification work (docs/security.md, "Floods of bad
//! credentials"). On by default.

use super::value::secs;
use super::{ConfigError, cerr};
use portcullis::pipeline::{AbuseSettings, AddressBlock};
use portcullis::store::Store;
use portcullis_core::net::Cidr;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbuse {
    enabled: Option<bool>,
    threshold: Option<u32>,
    window: Option<String>,
    block: Option<String>,
    max_block: Option<String>,
    max_addresses: Option<u64>,
    max_in_flight: Option<u32>,
    close_connections: Option<bool>,
}

/// The most addresses tracked: about 200 bytes each, so 2 GiB at most.
const MAX_ADDRESSES: u64 = 10_000_000;
/// The longest block or window: one day.
const MAX_SPAN: i64 = 86_400;

/// The settings (`enabled: false` when `[abuse] enabled = false`; the
/// other values are checked either way).
pub(super) fn parse(raw: &RawAbuse) -> Result<AbuseSettings, ConfigError> {
    let d = AbuseSettings::default();
    let threshold = raw.threshold.unwrap_or(d.threshold);
    if threshold == 0 {
        return Err(cerr(
            "abuse.threshold",
            "must be at least 1: the failed credentials from one address that block it (turn blocking off with enabled = false)",
        ));
    }
    let span = |path: &str, v: &Option<String>, default: i64| {
        let s = secs(path, v, default)?;
        if !(1..=MAX_SPAN).contains(&s) {
            return Err(cerr(path, "must be between 1s and 1d"));
        }
        Ok(s)
    };
    let window = span("abuse.window", &raw.window, d.window)?;
    let block = span("abuse.block", &raw.block, d.block)?;
    let max_block = span("abuse.max_block", &raw.max_block, d.max_block.max(block))?;
    if max_block < block {
        return Err(cerr(
            "abuse.max_block",
            "must be at least abuse.block: repeated blocks double up to it",
        ));
    }
    let max_addresses = raw.max_addresses.unwrap_or(d.max_addresses);
    if !(1..=MAX_ADDRESSES).contains(&max_addresses) {
        return Err(cerr(
            "abuse.max_addresses",
            format!(
                "must be between 1 and {MAX_ADDRESSES}: the addresses tracked in memory at once (about 200 bytes each)"
            ),
        ));
    }
    let max_in_flight = raw.max_in_flight.unwrap_or(d.max_in_flight);
    if max_in_flight == 0 {
        return Err(cerr(
            "abuse.max_in_flight",
            "must be at least 1: the verifications an address that has failed may have waiting at once",
        ));
    }
    Ok(AbuseSettings {
        enabled: raw.enabled.unwrap_or(true),
        threshold,
        window,
        block,
        max_block,
        max_addresses,
        max_in_flight,
        close_connections: raw.close_connections.unwrap_or(d.close_connections),
    })
}

/// The counter the gateway's pipeline uses under `settings`, auditing new
/// blocks in `store`; `None` when off. The `trusted_proxies` are never
/// counted nor blocked: when one stands for its clients (a forwarded
/// entry it wrote that does not parse), blocking it would refuse them all.
/// For `Pipeline::with_address_block`.
pub fn address_block(
    settings: &AbuseSettings,
    trusted_proxies: &[Cidr],
    store: &Store,
) -> Option<Arc<AddressBlock>> {
    settings.enabled.then(|| {
        Arc::new(
            AddressBlock::new(settings.clone(), Arc::new(portcullis::clock::SystemClock))
                .exempting(trusted_proxies)
                .audited_in(store.clone()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(f: impl FnOnce(&mut RawAbuse)) -> RawAbuse {
        let mut r = RawAbuse::default();
        f(&mut r);
        r
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse(&RawAbuse::default()).unwrap();
        assert_eq!(c, AbuseSettings::default());
        assert!(c.enabled);
        assert!(!parse(&raw(|r| r.enabled = Some(false))).unwrap().enabled);
        let c = parse(&raw(|r| {
            r.threshold = Some(5);
            r.window = Some("10s".into());
            r.block = Some("2m".into());
        }))
        .unwrap();
        assert_eq!(
            (c.threshold, c.window, c.block, c.max_block),
            (5, 10, 120, 900)
        );
        // A first block longer than the default cap raises the cap with it.
        let c = parse(&raw(|r| r.block = Some("1h".into()))).unwrap();
        assert_eq!(c.max_block, 3600);
        let err = |r: RawAbuse| parse(&r).unwrap_err().to_string();
        assert!(err(raw(|r| r.threshold = Some(0))).contains("abuse.threshold"));
        assert!(err(raw(|r| r.window = Some("0s".into()))).contains("abuse.window"));
        assert!(err(raw(|r| r.block = Some("2d".into()))).contains("abuse.block"));
        assert!(err(raw(|r| r.block = Some("10 sec".into()))).contains("abuse.block"));
        assert!(
            err(raw(|r| {
                r.block = Some("10m".into());
                r.max_block = Some("1m".into());
            }))
            .contains("abuse.max_block: must be at least abuse.block")
        );
        assert!(err(raw(|r| r.max_addresses = Some(0))).contains("abuse.max_addresses"));
        assert!(err(raw(|r| r.max_in_flight = Some(0))).contains("abuse.max_in_flight"));
        // A bad value is reported even when blocking is off.
        assert!(
            parse(&raw(|r| {
                r.enabled = Some(false);
                r.threshold = Some(0);
            }))
            .is_err()
        );
    }
}

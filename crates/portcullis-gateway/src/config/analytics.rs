//! `[analytics]`: per-key usage counts (docs/analytics.md) — whether they
//! are kept, how often they are written, how many keys a minute may hold
//! in memory, and how long each bucket width is kept.

use super::value::dur;
use super::{ConfigError, cerr};
use portcullis::analytics::{AnalyticsConfig, Retention};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnalytics {
    enabled: Option<bool>,
    flush_interval: Option<String>,
    max_keys_per_window: Option<u64>,
    retention_minutes: Option<String>,
    retention_hours: Option<String>,
    retention_days: Option<String>,
}

/// The longest flush interval: the counts wait in memory that long, and a
/// stop or crash loses at most that much.
const MAX_FLUSH: Duration = Duration::from_secs(300);
/// The most keys a minute may hold: about 200 bytes each.
const MAX_KEYS: u64 = 10_000_000;
/// The longest retention: ten years.
const MAX_RETENTION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// The aggregator's settings, or `None` when analytics are off.
pub(super) fn parse(raw: &RawAnalytics) -> Result<Option<AnalyticsConfig>, ConfigError> {
    let d = AnalyticsConfig::default();
    let flush_interval = dur(
        "analytics.flush_interval",
        &raw.flush_interval,
        d.flush_interval,
    )?;
    if flush_interval.is_zero() || flush_interval > MAX_FLUSH {
        return Err(cerr(
            "analytics.flush_interval",
            "must be between 1s and 5m: the counts wait in memory that long",
        ));
    }
    let max_keys = raw
        .max_keys_per_window
        .unwrap_or(d.max_keys_per_window as u64);
    if !(1..=MAX_KEYS).contains(&max_keys) {
        return Err(cerr(
            "analytics.max_keys_per_window",
            format!(
                "must be between 1 and {MAX_KEYS}: the keys one minute holds in memory (further keys are counted in the overflow row)"
            ),
        ));
    }
    let r = Retention::default();
    let minutes = retention(
        "analytics.retention_minutes",
        &raw.retention_minutes,
        r.minutes,
        60,
        "1m",
    )?;
    let hours = retention(
        "analytics.retention_hours",
        &raw.retention_hours,
        r.hours,
        3_600,
        "1h",
    )?;
    let days = retention(
        "analytics.retention_days",
        &raw.retention_days,
        r.days,
        86_400,
        "1d",
    )?;
    if hours < minutes {
        return Err(cerr(
            "analytics.retention_hours",
            "must be at least retention_minutes: hour buckets are kept at least as long as minute buckets",
        ));
    }
    if days < hours {
        return Err(cerr(
            "analytics.retention_days",
            "must be at least retention_hours: day buckets are kept at least as long as hour buckets",
        ));
    }
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(AnalyticsConfig {
        flush_interval,
        max_keys_per_window: usize::try_from(max_keys).unwrap_or(usize::MAX),
        retention: Retention {
            minutes,
            hours,
            days,
        },
        ..d
    }))
}

fn retention(
    path: &str,
    v: &Option<String>,
    default: Duration,
    at_least: u64,
    shortest: &str,
) -> Result<Duration, ConfigError> {
    let d = dur(path, v, default)?;
    if d.as_secs() < at_least || d > MAX_RETENTION {
        return Err(cerr(
            path,
            format!("must be between {shortest} (one bucket) and 520w (ten years)"),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(f: impl FnOnce(&mut RawAnalytics)) -> RawAnalytics {
        let mut r = RawAnalytics::default();
        f(&mut r);
        r
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse(&RawAnalytics::default()).unwrap().unwrap();
        assert_eq!(c.flush_interval, Duration::from_secs(10));
        assert_eq!(c.max_keys_per_window, 100_000);
        assert_eq!(c.retention, Retention::default());
        assert!(parse(&raw(|r| r.enabled = Some(false))).unwrap().is_none());
        let err = |r: RawAnalytics| parse(&r).unwrap_err().to_string();
        assert!(
            err(raw(|r| r.flush_interval = Some("0s".into()))).contains("analytics.flush_interval")
        );
        assert!(
            err(raw(|r| r.flush_interval = Some("10 sec".into())))
                .contains("analytics.flush_interval")
        );
        assert!(err(raw(|r| r.max_keys_per_window = Some(0))).contains("max_keys_per_window"));
        assert!(
            err(raw(|r| r.retention_minutes = Some("30s".into()))).contains("retention_minutes")
        );
        assert!(
            err(raw(|r| r.retention_hours = Some("1h".into())))
                .contains("retention_hours: must be at least retention_minutes")
        );
        assert!(err(raw(|r| r.retention_days = Some("11y".into()))).contains("retention_days"));
        // A bad value is reported even when analytics are off.
        assert!(
            parse(&raw(|r| {
                r.enabled = Some(false);
                r.max_keys_per_window = Some(0);
            }))
            .is_err()
        );
    }
}

//! `[metrics]`: Prometheus metrics at `GET /metrics` (docs/metrics.md).

use super::value::addr;
use super::{ConfigError, cerr};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<String>,
    require_key: Option<bool>,
    buckets: Option<Vec<f64>>,
}

/// What `[metrics]` sets.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Record and serve metrics at all.
    pub enabled: bool,
    /// A listener of its own for `GET /metrics`, besides the admin one.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` asks for a key (`metrics` or `admin` scope); the
    /// admin listener always does.
    pub require_key: bool,
    /// Upper bounds of every latency histogram's buckets, in seconds.
    pub buckets: Vec<f64>,
}

/// From 100 µs (a Redis decision on loopback) to 10 s (an upstream's
/// timeout).
pub const DEFAULT_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// More buckets than this cost every histogram a series each for little.
const MAX_BUCKETS: usize = 40;

pub(super) fn parse(
    r: &RawMetrics,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<MetricsConfig, ConfigError> {
    let enabled = r.enabled.unwrap_or(true);
    if !enabled {
        // A setting that would do nothing is more likely a mistake.
        for (set, key) in [
            (r.listen.is_some(), "listen"),
            (r.require_key.is_some(), "require_key"),
            (r.buckets.is_some(), "buckets"),
        ] {
            if set {
                return Err(cerr(
                    format!("metrics.{key}"),
                    "is set but metrics.enabled = false: remove one of them",
                ));
            }
        }
    }
    let own = match &r.listen {
        None => None,
        Some(_) => {
            let a = addr("metrics.listen", &r.listen, "")?;
            if a == listen || a == admin_listen {
                return Err(cerr(
                    "metrics.listen",
                    "must differ from server.listen and server.admin_listen (/metrics is served on the admin listener already)",
                ));
            }
            Some(a)
        }
    };
    let require_key = match (r.require_key, own) {
        (None, _) => true,
        (Some(_), None) => {
            return Err(cerr(
                "metrics.require_key",
                "applies only to metrics.listen; /metrics on the admin listener always needs a key with scope metrics or admin",
            ));
        }
        (Some(false), Some(a)) if !a.ip().is_loopback() => {
            return Err(cerr(
                "metrics.require_key",
                format!(
                    "false is allowed only on a loopback address, and metrics.listen is {a}: anyone who can reach it would read the gateway's traffic figures. Keep the key, or listen on 127.0.0.1 / [::1]"
                ),
            ));
        }
        (Some(k), Some(_)) => k,
    };
    let buckets = match &r.buckets {
        None => DEFAULT_BUCKETS.to_vec(),
        Some(b) => {
            if b.is_empty() || b.len() > MAX_BUCKETS {
                return Err(cerr(
                    "metrics.buckets",
                    format!("give between 1 and {MAX_BUCKETS} upper bounds, in seconds"),
                ));
            }
            for (i, v) in b.iter().enumerate() {
                if !v.is_finite() || *v <= 0.0 {
                    return Err(cerr(
                        format!("metrics.buckets[{i}]"),
                        "must be a positive number of seconds",
                    ));
                }
                if i > 0 && b.get(i - 1).is_some_and(|p| p >= v) {
                    return Err(cerr(
                        format!("metrics.buckets[{i}]"),
                        "must be greater than the bound before it (bounds go in increasing order)",
                    ));
                }
            }
            b.clone()
        }
    };
    Ok(MetricsConfig {
        enabled,
        listen: own,
        require_key,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(s: &str) -> Result<MetricsConfig, ConfigError> {
        let r: RawMetrics = toml::from_str(s).unwrap();
        parse(
            &r,
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:8081".parse().unwrap(),
        )
    }

    fn err(s: &str) -> String {
        parse_toml(s).unwrap_err().to_string()
    }

    #[test]
    fn defaults_record_with_a_key_on_the_admin_listener() {
        let c = parse_toml("").unwrap();
        assert!(c.enabled && c.require_key && c.listen.is_none());
        assert_eq!(c.buckets, DEFAULT_BUCKETS);
    }

    #[test]
    fn own_listener_without_key_only_on_loopback() {
        let c = parse_toml("listen = \"127.0.0.1:9464\"\nrequire_key = false").unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!c.require_key);
        parse_toml("listen = \"[::1]:9464\"\nrequire_key = false").unwrap();
        assert!(
            err("listen = \"0.0.0.0:9464\"\nrequire_key = false")
                .starts_with("metrics.require_key: false is allowed only on a loopback address")
        );
        // With a key, any address.
        assert!(parse_toml("listen = \"0.0.0.0:9464\"").unwrap().require_key);
    }

    #[test]
    fn precise_errors() {
        assert!(err("require_key = false").starts_with("metrics.require_key: applies only to"));
        assert!(err("listen = \"127.0.0.1:8081\"").starts_with("metrics.listen: must differ"));
        assert!(err("listen = \"nope\"").starts_with("metrics.listen: \"nope\" is not an address"));
        assert!(err("buckets = []").starts_with("metrics.buckets: give between"));
        assert!(err("buckets = [0.1, 0.1]").starts_with("metrics.buckets[1]: must be greater"));
        assert!(err("buckets = [0.1, -1.0]").starts_with("metrics.buckets[1]: must be a positive"));
        assert!(
            err("enabled = false\nlisten = \"127.0.0.1:9464\"")
                .starts_with("metrics.listen: is set but metrics.enabled = false")
        );
        parse_toml("enabled = false").unwrap();
    }
}

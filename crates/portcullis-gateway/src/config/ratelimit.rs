//! `[rate_limit]`: the default policy, where counters live, and the limit
//! on the login and token endpoints.

use super::value::dur;
use super::{ConfigError, cerr};
use portcullis_core::ratelimit::Policy as RatePolicy;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    backend: Option<String>,
    default: Option<String>,
    legacy_headers: Option<bool>,
    max_counters: Option<u64>,
    on_backend_error: Option<String>,
    timeout_ms: Option<u64>,
    breaker_threshold: Option<u32>,
    breaker_cooldown: Option<String>,
    key_prefix: Option<String>,
    auth_endpoints: Option<String>,
}

/// Rate limiting.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// The policy for routes that name none; `None` = unlimited.
    pub default: Option<portcullis_core::ratelimit::Policy>,
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset`.
    pub legacy_headers: bool,
    /// Counters held in memory, at most.
    pub max_counters: u64,
    /// Where counters live: `None` = this process's memory.
    pub redis: Option<portcullis::ratelimit::RedisSettings>,
    /// What to do while Redis cannot answer.
    pub on_backend_error: portcullis::ratelimit::OnBackendError,
    /// The per-address limit on `/oauth/token` and `/auth/login`.
    pub auth_endpoints: Option<portcullis_core::ratelimit::Policy>,
}

/// A policy like `100/minute`; absent or `off` is none.
pub(super) fn policy(path: &str, v: Option<&str>) -> Result<Option<RatePolicy>, ConfigError> {
    match v {
        None | Some("off") => Ok(None),
        Some(s) => RatePolicy::parse(s)
            .map(Some)
            .map_err(|e| cerr(path, e.to_string())),
    }
}

pub(super) fn parse(r: &RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
    use portcullis::ratelimit::RedisSettings;
    let redis = match r.backend.as_deref().unwrap_or("memory") {
        "memory" => None,
        b if b.starts_with("redis://") || b.starts_with("rediss://") => {
            if b.starts_with("rediss://") {
                return Err(cerr(
                    "rate_limit.backend",
                    "TLS to Redis (rediss://) is not supported in this version; reach Redis over loopback or a private network",
                ));
            }
            let mut s = RedisSettings::new(b);
            if let Some(ms) = r.timeout_ms {
                if !(1..=5000).contains(&ms) {
                    return Err(cerr("rate_limit.timeout_ms", "must be 1 to 5000"));
                }
                s.timeout = Duration::from_millis(ms);
            }
            if let Some(n) = r.breaker_threshold {
                if n == 0 {
                    return Err(cerr("rate_limit.breaker_threshold", "must be at least 1"));
                }
                s.breaker_threshold = n;
            }
            s.breaker_cooldown = dur(
                "rate_limit.breaker_cooldown",
                &r.breaker_cooldown,
                s.breaker_cooldown,
            )?;
            if let Some(p) = &r.key_prefix {
                s.key_prefix = p.clone();
            }
            // Parse the URL now, so a bad one stops start-up; the message
            // never repeats the URL (it may hold a password).
            portcullis::ratelimit::RedisLimiter::check_url(&s.url)
                .map_err(|e| cerr("rate_limit.backend", e.to_string()))?;
            Some(s)
        }
        _ => {
            return Err(cerr(
                "rate_limit.backend",
                "use \"memory\" or a redis://host:port URL",
            ));
        }
    };
    let on_backend_error = match r.on_backend_error.as_deref() {
        None => portcullis::ratelimit::OnBackendError::default(),
        Some(s) => s
            .parse()
            .map_err(|e: String| cerr("rate_limit.on_backend_error", e))?,
    };
    if redis.is_none() && r.on_backend_error.is_some() {
        return Err(cerr(
            "rate_limit.on_backend_error",
            "applies only with a Redis backend",
        ));
    }
    Ok(RateLimitConfig {
        default: policy("rate_limit.default", r.default.as_deref())?,
        legacy_headers: r.legacy_headers.unwrap_or(false),
        max_counters: r.max_counters.unwrap_or(1_000_000).max(1000),
        redis,
        on_backend_error,
        auth_endpoints: policy(
            "rate_limit.auth_endpoints",
            Some(r.auth_endpoints.as_deref().unwrap_or("60/minute")),
        )?,
    })
}

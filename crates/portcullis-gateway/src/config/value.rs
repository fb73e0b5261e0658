//! The value kinds several sections share: durations, addresses and
//! names, each read with the key path its error names.

use super::{ConfigError, cerr};
use portcullis_core::time::parse_duration;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn dur(
    path: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s)
            .map(|n| Duration::from_secs(n as u64))
            .map_err(|e| cerr(path, e.to_string())),
    }
}

pub(super) fn secs(path: &str, v: &Option<String>, default: i64) -> Result<i64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| cerr(path, e.to_string())),
    }
}

pub(super) fn positive(d: Duration, path: &str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(cerr(path, "must be at least 1s"));
    }
    Ok(d)
}

pub(super) fn addr(
    path: &str,
    v: &Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let s = v.as_deref().unwrap_or(default);
    s.parse()
        .map_err(|_| cerr(path, format!("{s:?} is not an address like 127.0.0.1:8080")))
}

pub(super) fn nonempty(
    path: &str,
    v: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let v = v.unwrap_or_else(|| default.into());
    if v.is_empty() || v.contains([';', '=', ' ', '&']) {
        return Err(cerr(
            path,
            "must be a non-empty name without ';', '=', '&' or spaces",
        ));
    }
    Ok(v)
}

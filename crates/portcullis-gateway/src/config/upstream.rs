//! `[upstream]`: the defaults every route's upstream is held to, and the
//! connection pool to each upstream.

use super::value::dur;
use super::{ConfigError, cerr};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    connect_timeout: Option<String>,
    timeout: Option<String>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    queue_timeout: Option<String>,
}

/// Route defaults: the connect timeout, the time allowed for response
/// headers, and the largest body forwarded.
pub(super) struct Defaults {
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
    pub(super) max_body_bytes: usize,
}

pub(super) fn defaults(u: &RawUpstream) -> Result<Defaults, ConfigError> {
    let connect_timeout = dur(
        "upstream.connect_timeout",
        &u.connect_timeout,
        Duration::from_secs(5),
    )?;
    let default_timeout = dur("upstream.timeout", &u.timeout, Duration::from_secs(30))?;
    Ok(Defaults {
        connect_timeout,
        timeout: default_timeout,
        max_body_bytes: u.max_body_bytes.unwrap_or(10 * 1024 * 1024),
    })
}

/// The pool to each upstream: its size, and how long a request waits for
/// a connection.
pub(super) struct Pool {
    pub(super) max_connections: usize,
    pub(super) queue_timeout: Duration,
}

pub(super) fn pool(u: &RawUpstream) -> Result<Pool, ConfigError> {
    Ok(Pool {
        max_connections: match u.max_connections {
            Some(0) => return Err(cerr("upstream.max_connections", "must be at least 1")),
            Some(n) => n,
            None => 512,
        },
        queue_timeout: dur(
            "upstream.queue_timeout",
            &u.queue_timeout,
            Duration::from_secs(5),
        )?,
    })
}

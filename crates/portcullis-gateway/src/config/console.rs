//! `[console]`: the admin console at `/console/` on the admin listener
//! (docs/console.md).

use super::value::{dur, positive};
use super::{ConfigError, cerr};
use portcullis::console::ConsoleOptions;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    enabled: Option<bool>,
    session_ttl: Option<String>,
    idle_timeout: Option<String>,
    hosts: Option<Vec<String>>,
}

/// What `[console]` sets.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Serve the console at all.
    pub enabled: bool,
    /// Sessions, hosts.
    pub options: ConsoleOptions,
}

/// The longest a console session may last: a day. A session is a
/// bearer of the admin scope; it should not outlive a working day.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

pub(super) fn parse(r: &RawConsole) -> Result<ConsoleConfig, ConfigError> {
    let enabled = r.enabled.unwrap_or(true);
    let defaults = ConsoleOptions::default();
    let session_ttl = positive(
        dur("console.session_ttl", &r.session_ttl, defaults.session_ttl)?,
        "console.session_ttl",
    )?;
    if session_ttl > MAX_TTL {
        return Err(cerr("console.session_ttl", "must be at most 24h"));
    }
    let idle_timeout = positive(
        dur(
            "console.idle_timeout",
            &r.idle_timeout,
            defaults.idle_timeout,
        )?,
        "console.idle_timeout",
    )?;
    if idle_timeout > session_ttl {
        return Err(cerr(
            "console.idle_timeout",
            "must not be longer than console.session_ttl",
        ));
    }
    let hosts = r.hosts.clone().unwrap_or_default();
    for (i, h) in hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(cerr(
                format!("console.hosts[{i}]"),
                "must be a host name (letters, digits, '-' and '.'), without a port",
            ));
        }
    }
    Ok(ConsoleConfig {
        enabled,
        options: ConsoleOptions {
            session_ttl,
            idle_timeout,
            hosts,
            ..defaults
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml: &str) -> RawConsole {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn defaults_and_limits() {
        let c = parse(&RawConsole::default()).unwrap();
        assert!(c.enabled);
        assert_eq!(c.options.session_ttl, Duration::from_secs(8 * 3600));
        assert_eq!(c.options.idle_timeout, Duration::from_secs(1800));
        let c = parse(&raw("session_ttl = \"2s\"\nidle_timeout = \"1s\"")).unwrap();
        assert_eq!(c.options.idle_timeout, Duration::from_secs(1));
        for bad in [
            "session_ttl = \"0s\"",
            "session_ttl = \"25h\"",
            "idle_timeout = \"9h\"",
            "hosts = [\"a.example:8081\"]",
            "hosts = [\"\"]",
        ] {
            assert!(parse(&raw(bad)).is_err(), "{bad}");
        }
    }
}

//! `[log]`: level, format and the access log.

use super::{ConfigError, cerr};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    level: Option<String>,
    format: Option<String>,
    access_log: Option<bool>,
    dependency_level: Option<String>,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable.
    Text,
}

/// What `[log]` sets.
pub(super) struct Log {
    pub(super) level: String,
    pub(super) dependency_level: Option<String>,
    pub(super) format: LogFormat,
    pub(super) access_log: bool,
}

pub(super) fn parse(r: &RawLog) -> Result<Log, ConfigError> {
    let log_format = match r.format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            return Err(cerr(
                "log.format",
                format!("{other:?}: use \"json\" or \"text\""),
            ));
        }
    };
    let log_level = r.level.clone().unwrap_or_else(|| "info".into());
    let levels = ["trace", "debug", "info", "warn", "error"];
    if !levels.contains(&log_level.as_str()) {
        return Err(cerr("log.level", "use trace, debug, info, warn or error"));
    }
    let dependency_log_level = r.dependency_level.clone();
    if let Some(l) = &dependency_log_level
        && !levels.contains(&l.as_str())
    {
        return Err(cerr(
            "log.dependency_level",
            "use trace, debug, info, warn or error",
        ));
    }
    Ok(Log {
        level: log_level,
        dependency_level: dependency_log_level,
        format: log_format,
        access_log: r.access_log.unwrap_or(true),
    })
}

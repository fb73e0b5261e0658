//! `[cors]` and a route's own `cors`: read into the core's CORS policy.

use super::{ConfigError, cerr};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    #[serde(default)]
    allow_origins: Vec<String>,
    allow_methods: Option<Vec<String>>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    allow_private_network: bool,
    max_age: Option<u64>,
}

/// `path` is where the table is: `cors` or `routes[i].cors`.
pub(super) fn parse(
    path: &str,
    c: Option<&RawCors>,
) -> Result<Option<std::sync::Arc<portcullis_core::cors::Cors>>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    let cfg = portcullis_core::cors::CorsConfig {
        allow_origins: c.allow_origins.clone(),
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        allow_credentials: c.allow_credentials,
        allow_private_network: c.allow_private_network,
        max_age: c.max_age,
    };
    portcullis_core::cors::Cors::new(&cfg)
        .map(|c| Some(std::sync::Arc::new(c)))
        .map_err(|e| cerr(format!("{path}.{}", e.field()), e.message()))
}

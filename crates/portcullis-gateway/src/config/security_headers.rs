//! `[security_headers]`: headers added to upstream responses.

use super::{ConfigError, cerr};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurityHeaders {
    #[serde(default)]
    proxied: std::collections::BTreeMap<String, String>,
    overwrite: Option<bool>,
}

/// Headers added to responses.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Added to upstream responses.
    pub proxied: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Replace the upstream's own value (else only fill in missing ones).
    pub overwrite: bool,
}

pub(super) fn parse(r: &RawSecurityHeaders) -> Result<SecurityHeaders, ConfigError> {
    let mut proxied = Vec::new();
    for (k, v) in &r.proxied {
        let at = format!("security_headers.proxied.{k}");
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| cerr(&at, "not a header name"))?;
        if name.as_str().starts_with("access-control-")
            || [
                http::header::SET_COOKIE,
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
                http::header::CONNECTION,
            ]
            .contains(&name)
        {
            return Err(cerr(
                &at,
                "this header is Portcullis's or the upstream's to set (CORS comes from [cors])",
            ));
        }
        let value = http::HeaderValue::from_str(v).map_err(|_| cerr(&at, "not a header value"))?;
        proxied.push((name, value));
    }
    Ok(SecurityHeaders {
        proxied,
        overwrite: r.overwrite.unwrap_or(false),
    })
}

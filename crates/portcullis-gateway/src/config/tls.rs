//! `[tls]`: terminating TLS here, the plain-HTTP redirect listener, and
//! HSTS.

use super::value::{addr, dur, positive, secs};
use super::{ConfigError, cerr};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: String,
    key: String,
    redirect_http_from: Option<String>,
    redirect_host: Option<String>,
    hsts_max_age: Option<String>,
    hsts_include_subdomains: Option<bool>,
    hsts_preload: Option<bool>,
    handshake_timeout: Option<String>,
}

/// Terminating TLS here.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// A plain-HTTP listener that redirects browsers to HTTPS.
    pub redirect_http_from: Option<SocketAddr>,
    /// The host named in redirects; else the request's (trusted) host.
    pub redirect_host: Option<String>,
    /// The `Strict-Transport-Security` value.
    pub hsts: http::HeaderValue,
}

/// Time allowed for a TLS handshake (read even without `[tls]`: the
/// default applies then).
pub(super) fn handshake_timeout(t: Option<&RawTls>) -> Result<Duration, ConfigError> {
    positive(
        dur(
            "tls.handshake_timeout",
            &t.and_then(|t| t.handshake_timeout.clone()),
            Duration::from_secs(10),
        )?,
        "tls.handshake_timeout",
    )
}

/// The redirect listener must not be one of `[server]`'s: checked here,
/// in the order this section's errors have always been reported.
pub(super) fn parse(
    t: Option<&RawTls>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(t) = t else { return Ok(None) };
    if t.cert.is_empty() || t.key.is_empty() {
        return Err(cerr("tls", "cert and key must name PEM files"));
    }
    let redirect_http_from = match &t.redirect_http_from {
        None => None,
        Some(a) => {
            let a = addr("tls.redirect_http_from", &Some(a.clone()), "")?;
            if a == listen || a == admin_listen {
                return Err(cerr(
                    "tls.redirect_http_from",
                    "must differ from server.listen and server.admin_listen",
                ));
            }
            Some(a)
        }
    };
    let redirect_host = match &t.redirect_host {
        None => None,
        Some(h) => {
            portcullis_core::host::check_authority(
                &portcullis_core::host::TrustedHosts::default(),
                h,
            )
            .map_err(|_| {
                cerr(
                    "tls.redirect_host",
                    format!(
                        "{h:?} is not a host name (a name, optionally :port, no scheme or path)"
                    ),
                )
            })?;
            Some(h.to_ascii_lowercase())
        }
    };
    let max_age = secs("tls.hsts_max_age", &t.hsts_max_age, 2 * 365 * 86_400)?;
    if max_age < 365 * 86_400 {
        return Err(cerr(
            "tls.hsts_max_age",
            "must be at least 365d: shorter HSTS leaves first visits after expiry open to downgrade",
        ));
    }
    let sub = t.hsts_include_subdomains.unwrap_or(false);
    let preload = t.hsts_preload.unwrap_or(false);
    if preload && (!sub || max_age < 365 * 86_400) {
        return Err(cerr(
            "tls.hsts_preload",
            "preload lists require hsts_include_subdomains = true",
        ));
    }
    let mut hsts = format!("max-age={max_age}");
    if sub {
        hsts.push_str("; includeSubDomains");
    }
    if preload {
        hsts.push_str("; preload");
    }
    Ok(Some(TlsConfig {
        cert: t.cert.clone().into(),
        key: t.key.clone().into(),
        redirect_http_from,
        redirect_host,
        hsts: http::HeaderValue::from_str(&hsts)
            .map_err(|_| cerr("tls.hsts_max_age", "not a header value"))?,
    }))
}

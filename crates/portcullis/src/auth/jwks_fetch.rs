//! One small HTTPS GET for a trusted issuer's discovery document and JWKS.
//!
//! Everything here reads bytes from the network, from a server we trust
//! only for its keys: HTTPS only (plain HTTP only when the operator set a
//! `danger_` option, for local tests), rustls with aws-lc-rs and either
//! the Mozilla roots (webpki-roots) or the issuer's own CA file, a connect
//! timeout and a deadline for the whole exchange, a cap on the body, and
//! no redirects (a 3xx is a failure: a JWKS that moved is a config change,
//! and following one would let whoever answers the first URL choose the
//! second). One connection per fetch: fetches happen minutes apart, so a
//! pool would only hold sockets open.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The most a discovery document or JWKS may weigh.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a fetch failed. Never holds the body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not one we fetch.
    #[error("bad URL: {0}")]
    Url(&'static str),
    /// The TLS settings could not be made (unreadable CA file).
    #[error("TLS setup: {0}")]
    Setup(String),
    /// No TCP connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (an untrusted certificate, say).
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// Connect or the whole exchange took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A redirect (refused).
    #[error("answered a redirect ({0}); redirects are not followed")]
    Redirect(u16),
    /// Any other status than 200.
    #[error("answered status {0}")]
    Status(u16),
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("answer larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

/// A fetched body and how long the server says it may be cached.
#[derive(Debug)]
pub struct Fetched {
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: Bytes,
    /// `Cache-Control: max-age`, or zero for `no-store` / `no-cache`;
    /// `None` when the server said nothing.
    pub max_age: Option<Duration>,
}

/// An HTTPS client for one issuer.
#[derive(Clone)]
pub struct Fetcher {
    tls: tokio_rustls::TlsConnector,
    allow_http: bool,
    connect_timeout: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("allow_http", &self.allow_http)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A client trusting `ca_file`'s certificates only (a private CA), or
    /// the Mozilla roots when there is none.
    pub fn new(
        ca_file: Option<&Path>,
        allow_http: bool,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Fetcher, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    FetchError::Setup(format!("cannot read {}: {e}", path.display()))
                })?;
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|_| {
                        FetchError::Setup(format!("{}: not PEM certificates", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        FetchError::Setup(format!("{}: unusable certificate: {e}", path.display()))
                    })?;
                    n += 1;
                }
                if n == 0 {
                    return Err(FetchError::Setup(format!(
                        "{}: no certificate in it",
                        path.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            allow_http,
            connect_timeout,
            timeout,
        })
    }

    /// Checks a URL is one this client would fetch.
    pub fn check_url(&self, url: &str) -> Result<(), FetchError> {
        target(url, self.allow_http).map(|_| ())
    }

    /// GETs `url`: 200 with a body under the cap, or an error.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let t = target(url, self.allow_http)?;
        tokio::time::timeout(self.timeout, self.exchange(t))
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }

    async fn exchange(&self, t: Target) -> Result<Fetched, FetchError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| FetchError::Timeout(self.connect_timeout))?
        .map_err(|e| FetchError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let req = http::Request::get(t.path)
            .header(http::header::HOST, t.authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "portcullis")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if t.tls {
            let name = ServerName::try_from(t.host.clone()).map_err(|_| FetchError::Url("host"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls(e.to_string()))?;
            send(TokioIo::new(tls), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    }
}

async fn send<I>(io: I, req: http::Request<Empty<Bytes>>) -> Result<Fetched, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    // The connection task ends with the exchange (or with the caller's
    // timeout dropping the sender).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    if resp.status().is_redirection() {
        return Err(FetchError::Redirect(status));
    }
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let max_age = max_age(
        resp.headers()
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    if resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok(Fetched { body, max_age })
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn target(url: &str, allow_http: bool) -> Result<Target, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::Url("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if allow_http => false,
        Some("http") => {
            return Err(FetchError::Url(
                "plain http: keys must come over HTTPS (danger_allow_http is for local tests)",
            ));
        }
        _ => return Err(FetchError::Url("not an https:// URL")),
    };
    let auth = uri.authority().ok_or(FetchError::Url("no host"))?;
    if auth.as_str().contains('@') {
        return Err(FetchError::Url("user info in the URL"));
    }
    let host = auth.host();
    // IPv6 literals come bracketed; connect and SNI want them bare.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    if host.is_empty() {
        return Err(FetchError::Url("no host"));
    }
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Target {
        tls,
        host,
        port,
        authority: auth.as_str().to_owned(),
        path,
    })
}

/// The `max-age` of `Cache-Control` values
/// ([`portcullis_core::oidc::cache_max_age`]).
pub fn max_age<'a>(values: impl Iterator<Item = &'a str>) -> Option<Duration> {
    portcullis_core::oidc::cache_max_age(values).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(target("https://login.example.com/jwks", false).is_ok());
        assert!(target("http://127.0.0.1:1/jwks", false).is_err());
        assert!(target("http://127.0.0.1:1/jwks", true).is_ok());
        assert!(target("ftp://x/", true).is_err());
        assert!(target("https://user:pw@x/", false).is_err());
        assert!(target("/relative", false).is_err());
        let t = target("https://[::1]:8443/a?b=c", false).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8443, "/a?b=c")
        );
    }
}

//! TLS termination with rustls: TLS 1.2 and 1.3 only (rustls has nothing
//! older), aws-lc-rs as the one crypto provider, HTTP/2 and HTTP/1.1 by
//! ALPN, and a certificate that SIGHUP replaces without touching open
//! connections: the resolver is asked once per handshake, so only new
//! handshakes see the new certificate.

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The key does not fit the certificate, or rustls refused it.
    #[error("{0}")]
    Rustls(String),
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a certificate chain and its private key from PEM files and
/// checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = std::fs::read(cert).map_err(|e| file_err(cert, format!("cannot read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(cert, "holds no CERTIFICATE block"));
    }
    let pem = std::fs::read(key).map_err(|e| file_err(key, format!("cannot read: {e}")))?;
    // The parse error never quotes the file: it is a private key.
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        file_err(
            key,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1 expected)",
        )
    })?;
    let provider = aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
        TlsError::Rustls(format!(
            "{} and {} do not form a usable certificate and key: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// The certificate in use, swapped whole on reload.
#[derive(Debug)]
pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    /// Loads the files once; a failure here stops start-up.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<Reloadable>, TlsError> {
        let ck = load(&cert, &key)?;
        Ok(Arc::new(Reloadable {
            cert,
            key,
            current: RwLock::new(ck),
        }))
    }

    /// Re-reads the files. On failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load(&self.cert, &self.key)?;
        match self.current.write() {
            Ok(mut g) => *g = ck,
            // A panic while holding the lock cannot happen (the guarded
            // code is one assignment), but a poisoned lock still holds a
            // valid value, so carry on with it.
            Err(p) => *p.into_inner() = ck,
        }
        Ok(())
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        })
    }
}

/// The rustls server config: TLS 1.3 and 1.2, `h2` then `http/1.1`.
pub fn server_config(certs: Arc<Reloadable>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Handles every SIGHUP: reloads `certs` when there are some, logging the
/// outcome; without TLS there is nothing to reload, and the signal is
/// logged and ignored. Either way SIGHUP never ends the process (its
/// default action would, exit 129).
pub fn handle_sighup(certs: Option<Arc<Reloadable>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(certs) = &certs else {
                tracing::info!("SIGHUP: nothing to reload (no [tls]); ignored");
                continue;
            };
            // Reading two small files: fine on the runtime.
            match certs.reload() {
                Ok(()) => tracing::info!(cert = %certs.cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous one")
                }
            }
        }
    });
}

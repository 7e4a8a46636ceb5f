//! RTMPS, the server side: loading the certificate chain and private key (PEM) into a
//! rustls server configuration, checked at config time (files readable, PEM parses, the
//! key matches the certificate), and the TLS handshake of an accepted socket under a
//! deadline. The accept loop and the connection task are the plain ones
//! (`rtmp::listener`, `rtmp::conn`); this module imports nothing else of livesnap.
//!
//! The certificate is read once at start: replacing the files needs a restart (no hot
//! reload).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Which of the two files a [`TlsFilesError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

/// Why the certificate and key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsFilesError {
    pub file: TlsFile,
    pub path: String,
    pub message: String,
}

/// A loaded TLS server configuration (cheap to clone).
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// Reads a PEM certificate chain (end-entity first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1) and checks that the key belongs to the certificate.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsServer, TlsFilesError> {
        let fail = |file, path: &Path, message: String| TlsFilesError {
            file,
            path: path.display().to_string(),
            message,
        };
        let cert_pem = std::fs::read(cert_file)
            .map_err(|e| fail(TlsFile::Cert, cert_file, format!("cannot read: {e}")))?;
        let key_pem = std::fs::read(key_file)
            .map_err(|e| fail(TlsFile::Key, key_file, format!("cannot read: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                fail(
                    TlsFile::Cert,
                    cert_file,
                    format!("not a PEM certificate: {e}"),
                )
            })?;
        if certs.is_empty() {
            return Err(fail(
                TlsFile::Cert,
                cert_file,
                "no CERTIFICATE block found (expected a PEM certificate chain)".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            fail(
                TlsFile::Key,
                key_file,
                format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(TlsFile::Key, key_file, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                let message = match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "the private key does not match the certificate in {}",
                        cert_file.display()
                    ),
                    other => format!("unusable certificate or key: {other}"),
                };
                fail(TlsFile::Key, key_file, message)
            })?;
        Ok(TlsServer {
            config: Arc::new(config),
        })
    }

    /// The acceptor for sockets of the RTMPS listener.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsAcceptError {
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake: {0}")]
    Failed(std::io::Error),
}

/// Runs the server side of the TLS handshake on `socket`, within `limit`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, TlsAcceptError> {
    match tokio::time::timeout(limit, acceptor.accept(socket)).await {
        Err(_) => Err(TlsAcceptError::Timeout(limit)),
        Ok(Err(e)) => Err(TlsAcceptError::Failed(e)),
        Ok(Ok(s)) => Ok(s),
    }
}

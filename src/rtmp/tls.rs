//! RTMPS, the server side: loading the certificate chain and private key (PEM) into a
//! rustls server configuration, checked at config time (files readable, PEM parses, the
//! key matches the certificate), reloading them when the files change, and the TLS
//! handshake of an accepted socket under a deadline. The accept loop and the connection
//! task are the plain ones (`rtmp::listener`, `rtmp::conn`); this module imports nothing
//! else of livesnap.
//!
//! Reload: [`watch`] looks at the two files' modification times and sizes every
//! `server.tls_reload_secs`; when they changed, it loads them again and, only when they
//! load and match, new handshakes use them (connections already up keep theirs). A pair
//! that fails (a renewal caught between writing the certificate and the key) is logged
//! once and tried again when the files change again, while the last good pair stays in
//! use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// A loaded TLS server configuration (cheap to clone; clones share the certificate, so a
/// reload through one is seen by all).
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<Certs>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

/// The files and the pair loaded from them last, which every new handshake is given.
#[derive(Debug)]
struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and sizes when they were loaded at start.
    loaded_at: Stamps,
}

/// What the watcher last saw of the files: their stamps when the pair in use was loaded,
/// and when a load last failed (not tried again until the files change again).
#[derive(Debug, Clone, Copy)]
struct Seen {
    loaded: Stamps,
    failed: Option<Stamps>,
}

type Stamp = (SystemTime, u64);
/// The certificate file's and the key file's [`Stamp`].
type Stamps = (Option<Stamp>, Option<Stamp>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Reads a PEM certificate chain and private key and checks that they are a pair.
fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsFilesError> {
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
    CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => fail(
            TlsFile::Key,
            key_file,
            format!(
                "the private key does not match the certificate in {}",
                cert_file.display()
            ),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => fail(
            TlsFile::Cert,
            cert_file,
            format!("unusable certificate: {e}"),
        ),
        other => fail(
            TlsFile::Key,
            key_file,
            format!("unusable certificate or key: {other}"),
        ),
    })
}

impl TlsServer {
    /// Reads a PEM certificate chain (end-entity first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1) and checks that the key belongs to the certificate.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsServer, TlsFilesError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (stamp(cert_file), stamp(key_file));
        let pair = load_pair(cert_file, key_file, &provider)?;
        let certs = Arc::new(Certs {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(pair)),
            loaded_at: stamps,
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFilesError {
                file: TlsFile::Key,
                path: key_file.display().to_string(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        Ok(TlsServer {
            config: Arc::new(config),
            certs,
        })
    }

    /// The acceptor for sockets of the RTMPS listener.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Loads the files again if their modification time or size changed since the pair in
    /// use was loaded: `Ok(true)` when new handshakes now get the new pair, `Ok(false)`
    /// when nothing changed (or the files are as they were when they last failed), an
    /// error (and the old pair kept) when the new files do not load or do not match; they
    /// are tried again once they change again. Reads files: call it off the runtime.
    fn reload_if_changed(&self, seen: &mut Seen) -> Result<bool, TlsFilesError> {
        let c = &self.certs;
        let now = (stamp(&c.cert_file), stamp(&c.key_file));
        if now == seen.loaded || Some(now) == seen.failed {
            return Ok(false);
        }
        match load_pair(&c.cert_file, &c.key_file, &c.provider) {
            Ok(pair) => {
                *c.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                *seen = Seen {
                    loaded: now,
                    failed: None,
                };
                Ok(true)
            }
            Err(e) => {
                seen.failed = Some(now);
                Err(e)
            }
        }
    }
}

/// Reloads the certificate and key when their files change, looking every `every`, until
/// `stop` is cancelled. Logs each load of changed files (with the file and why when it
/// failed) and tells `counted` whether its pair was used.
pub async fn watch(
    tls: TlsServer,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
    counted: impl Fn(bool) + Send + 'static,
) {
    let mut seen = Seen {
        loaded: tls.certs.loaded_at,
        failed: None,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // Metadata and file reads are blocking I/O: on the blocking pool.
        let t = tls.clone();
        let mut look = seen;
        let result = match tokio::task::spawn_blocking(move || {
            let r = t.reload_if_changed(&mut look);
            (r, look)
        })
        .await
        {
            Ok((r, after)) => {
                seen = after;
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "RTMPS certificate check failed to run");
                continue;
            }
        };
        let files = &tls.certs;
        match result {
            Ok(false) => {}
            Ok(true) => {
                counted(true);
                tracing::info!(
                    cert = %files.cert_file.display(),
                    key = %files.key_file.display(),
                    "RTMPS certificate reloaded; new connections use it"
                )
            }
            Err(e) => {
                counted(false);
                tracing::warn!(
                    error = %e,
                    "RTMPS certificate files changed but do not load; the previous pair stays in use"
                )
            }
        }
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

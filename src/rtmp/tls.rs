//! RTMPS, the server side: loading the certificate chain and private key (PEM) into a
//! rustls server configuration, checked at config time (files readable, PEM parses, the
//! key matches the certificate), reloading them when the files change or when asked
//! (SIGHUP), and the TLS handshake of an accepted socket under a deadline. The accept
//! loop and the connection task are the plain ones (`rtmp::listener`, `rtmp::conn`); of
//! the rest of livesnap this module uses only `x509` (the certificate's validity),
//! `clock` and `metrics`.
//!
//! Reload: [`watch`] looks at the two files' modification times and sizes every
//! `server.tls_reload_secs`; when they changed, it loads them again and, only when they
//! load and match, new handshakes use them (connections already up keep theirs). A pair
//! that fails (a renewal caught between writing the certificate and the key) is logged
//! once and tried again when the files change again, while the last good pair stays in
//! use. Asked to reload ([`Reloader::reload_now`]), it loads the files whatever their
//! stamps say. It also sets `livesnap_tls_certificate_expiry_timestamp_seconds` and warns,
//! at most once a day, while the certificate in use expires within [`EXPIRY_WARNING`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::clock::{rfc3339, unix_now};
use crate::metrics::Metrics;

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

    /// The validity period of the certificate new handshakes get (the chain's first),
    /// `None` when its DER is not one [`crate::x509::validity`] reads.
    pub fn validity(&self) -> Option<crate::x509::Validity> {
        let pair = self
            .certs
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        pair.cert.first().and_then(|c| crate::x509::validity(c))
    }

    /// The acceptor for sockets of the RTMPS listener.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Loads the files again if their modification time or size changed since the pair in
    /// use was loaded: `Ok(true)` when new handshakes now get the new pair, `Ok(false)`
    /// when nothing changed (or the files are as they were when they last failed), an
    /// error (and the old pair kept) when the new files do not load or do not match; they
    /// are tried again once they change again. `force` loads them whatever their stamps.
    /// Reads files: call it off the runtime.
    fn reload_if_changed(&self, seen: &mut Seen, force: bool) -> Result<bool, TlsFilesError> {
        let c = &self.certs;
        let now = (stamp(&c.cert_file), stamp(&c.key_file));
        if !force && (now == seen.loaded || Some(now) == seen.failed) {
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

/// Seconds in a day.
const DAY: u64 = 86_400;

/// A certificate that expires within this is warned about (once a day while it is in use).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * DAY);

/// Asks a running [`watch`] to load the files now (cheap to clone).
#[derive(Clone, Default)]
pub struct Reloader(Arc<Notify>);

impl Reloader {
    /// The watcher loads the files at once, even if their stamps did not change. A request
    /// made while it is loading is served right after that load.
    pub fn reload_now(&self) {
        self.0.notify_one();
    }
}

/// When the certificate in use expires: sets the gauge, and warns (or, once expired, logs
/// an error) while it expires within [`EXPIRY_WARNING`].
fn report_expiry(tls: &TlsServer, metrics: &Metrics, now: u64) {
    let cert = tls.certs.cert_file.display();
    let Some(v) = tls.validity() else {
        tracing::warn!(%cert, "RTMPS certificate: its validity period is not readable; no expiry gauge");
        return;
    };
    metrics.set_tls_certificate_expiry(v.not_after);
    let expires = rfc3339(v.not_after);
    if v.not_after <= now {
        tracing::error!(%cert, %expires, "RTMPS certificate has expired: clients that check it refuse the node");
    } else if v.not_after - now < EXPIRY_WARNING.as_secs() {
        let days_left = (v.not_after - now) / DAY;
        tracing::warn!(%cert, %expires, days_left, "RTMPS certificate expires soon");
    }
}

/// Keeps the RTMPS certificate fresh until `stop` is cancelled: reloads the certificate
/// and key when their files change, looking every `every` (`None`: only when asked
/// through `asked`), and loads them whatever their stamps when asked. Logs each load (with
/// the file and why when it failed), counts it in `livesnap_tls_reloads_total{result}`,
/// and keeps `livesnap_tls_certificate_expiry_timestamp_seconds` on the pair in use.
pub async fn watch(
    tls: TlsServer,
    every: Option<Duration>,
    asked: Reloader,
    stop: tokio_util::sync::CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut seen = Seen {
        loaded: tls.certs.loaded_at,
        failed: None,
    };
    let mut reported_at = unix_now();
    report_expiry(&tls, &metrics, reported_at);
    // Without a look at the files, the tick only repeats the expiry report once a day.
    let period = every.unwrap_or(Duration::from_secs(DAY));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            _ = asked.0.notified() => true,
            _ = stop.cancelled() => return,
        };
        if force {
            tracing::info!("RTMPS certificate reload asked for: loading the files");
        }
        let reloaded = if force || every.is_some() {
            look(&tls, &mut seen, force, &metrics).await
        } else {
            false
        };
        let now = unix_now();
        if reloaded || now >= reported_at + DAY {
            report_expiry(&tls, &metrics, now);
            reported_at = now;
        }
    }
}

/// One look at the files (a load when they changed, or when `force`), logged and counted;
/// whether new handshakes now get a new pair.
async fn look(tls: &TlsServer, seen: &mut Seen, force: bool, metrics: &Metrics) -> bool {
    // Metadata and file reads are blocking I/O: on the blocking pool.
    let t = tls.clone();
    let mut after = *seen;
    let result = match tokio::task::spawn_blocking(move || {
        let r = t.reload_if_changed(&mut after, force);
        (r, after)
    })
    .await
    {
        Ok((r, after)) => {
            *seen = after;
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "RTMPS certificate check failed to run");
            return false;
        }
    };
    let files = &tls.certs;
    match result {
        Ok(false) => false,
        Ok(true) => {
            metrics.tls_reload(true);
            tracing::info!(
                cert = %files.cert_file.display(),
                key = %files.key_file.display(),
                "RTMPS certificate reloaded; new connections use it"
            );
            true
        }
        Err(e) => {
            metrics.tls_reload(false);
            tracing::warn!(
                error = %e,
                "RTMPS certificate files do not load; the previous pair stays in use"
            );
            false
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

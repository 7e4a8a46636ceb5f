//! The TLS client of `rtmps://` targets: rustls (the aws-lc-rs provider the rest of the
//! tree already builds), trusting the system's roots through the platform verifier, or
//! only the CA certificates of a target's `tls_ca_file`.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The certificates of a PEM file (at least one).
pub fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A connector trusting `ca_file`'s certificates, or the system's when `None`.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let config = match ca_file {
        Some(f) => {
            let mut roots = RootCertStore::empty();
            for c in read_roots(f)? {
                roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
            }
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            ClientConfig::with_platform_verifier()
                .map_err(|e| format!("system trust store: {e}"))?
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// TLS over `tcp` to `host` (its certificate must name it).
pub async fn connect(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
    })?;
    connector.connect(name, tcp).await
}

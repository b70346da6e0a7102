//! `wss://`: the rustls client of a worker (ring provider, TLS 1.2 and 1.3, ALPN
//! `http/1.1`). Trusted roots: the system's, plus the certificates of `--ca <pem>`; with
//! `--ca` only, when the system has none.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::wire::errors::{classify_io, ConnectError};

/// The TLS side of every connection of a worker.
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

/// The certificates of a PEM file.
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parsing --ca {}", path.display()))?;
    if certs.is_empty() {
        bail!("--ca {}: no CERTIFICATE in the file", path.display());
    }
    Ok(certs)
}

impl Tls {
    /// A client for `host` trusting the system's roots and those of `ca`.
    pub fn new(host: &str, ca: Option<&Path>) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            for cert in load_pem_certs(ca)? {
                roots.add(cert).with_context(|| {
                    format!("--ca {}: not a usable CA certificate", ca.display())
                })?;
            }
        }
        // The system's roots (none is fine when --ca gave some).
        let native = rustls_native_certs::load_native_certs().unwrap_or_default();
        roots.add_parsable_certificates(native);
        if roots.is_empty() {
            bail!("wss://: no trusted root certificates (give the server's CA with --ca <pem>)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host:?} is not a TLS server name"))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake on a connected socket. A refused certificate or another TLS
    /// alert is the failure `tls_error`.
    pub async fn connect(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, ConnectError> {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|e| {
                let tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
                ConnectError::from(if tls { "tls_error" } else { classify_io(&e) })
            })
    }
}

//! Certificates and keys named by the configuration (`[tls]`, `[cluster]`), read from PEM
//! files, and the one crypto provider every TLS configuration uses.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Every certificate of a PEM file (errors name the file).
pub fn pem_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// The private key of a PEM file (errors name the file).
pub fn pem_key(p: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(p).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read the certificate chain and key; the server offers ALPN `http/1.1`, TLS 1.2 and 1.3.
pub fn tls_server_config(cfg: &super::TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = pem_certs(&cfg.cert).map_err(|e| format!("tls.cert {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert {}: no PEM certificate in the file",
            cfg.cert.display()
        ));
    }
    let key = pem_key(&cfg.key).map_err(|e| format!("tls.key {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "tls.cert {} / tls.key {}: {e}",
                cfg.cert.display(),
                cfg.key.display()
            )
        })?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

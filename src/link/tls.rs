//! Mutual TLS for the cluster link: every node presents its certificate and accepts only
//! peers whose certificate the cluster CA signed; a client checks that the server's
//! certificate names the peer id it dialled.
use crate::config::pem::{pem_certs, pem_key, provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// ALPN of the cluster protocol (version 1).
pub const ALPN: &[u8] = b"ringwire-cluster/1";

pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

fn load(
    files: &TlsFiles<'_>,
) -> Result<
    (
        rustls::RootCertStore,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    ),
    String,
> {
    let certs = pem_certs;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(files.ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", files.ca.display()))?;
    }
    let chain = certs(files.cert)?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key = pem_key(files.key)?;
    Ok((roots, chain, key))
}

pub fn server_config(files: &TlsFiles<'_>) -> Result<quinn::ServerConfig, String> {
    let (roots, chain, key) = load(files)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

pub fn client_config(files: &TlsFiles<'_>) -> Result<quinn::ClientConfig, String> {
    let (roots, chain, key) = load(files)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Keepalives every second and a 3 s idle timeout: a dead or partitioned peer is noticed
/// within about 3 s.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    t.max_idle_timeout(Some(
        std::time::Duration::from_secs(3)
            .try_into()
            .expect("3 s is a valid idle timeout"),
    ));
    Arc::new(t)
}

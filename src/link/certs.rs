//! `ringwire cluster certs`: a development CA and one certificate per node, for the mutual
//! TLS of the cluster link. Node certificates name the node id (DNS SAN), which is the name
//! peers verify. Production deployments use their own CA; these files have the same shape.
//!
//! The same command makes test certificates for the public listener's TLS (`[tls]`): a name
//! that is an IP address (`127.0.0.1`) gets an IP SAN, any other name a DNS SAN.
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;

/// Write `ca.pem`, `ca.key` and `<node>.pem`, `<node>.key` for each node into `out`.
pub fn generate(out: &Path, nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("name at least one node id".into());
    }
    for n in nodes {
        let ip = n.parse::<std::net::IpAddr>().is_ok();
        if !ip
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(format!(
                "node id {n:?}: use letters, digits, '-' and '.' only (or, for a test TLS certificate, an IP address)"
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "ringwire cluster development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    write(out, "ca.pem", &ca_cert.pem())?;
    write(out, "ca.key", &ca_key.serialize_pem())?;
    for node in nodes {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(vec![node.clone()]).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, node.as_str());
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
        write(out, &format!("{node}.pem"), &cert.pem())?;
        write(out, &format!("{node}.key"), &key.serialize_pem())?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

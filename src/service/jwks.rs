//! `[jwt] jwks_url`: the JSON Web Key Set (RFC 7517) of an identity provider, fetched off the
//! cores (on the control thread's runtime), parsed there into [`JwkKeys`] and handed to every
//! core whole (`Arc`, through the cores' command queues) by the `publish` callback. A core
//! only reads the set it was given; a failed fetch keeps the last good set in place.
use crate::config::{JwtAlgorithm, JwtConfig};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Most keys kept from one set: providers publish two or three (current, next, previous).
pub const MAX_JWKS_KEYS: usize = 64;
/// Shortest time between two fetches when a token named a `kid` the set lacks (a provider
/// that signs with a key as soon as it publishes it): at most 6 fetches a minute however
/// many tokens with unknown (possibly forged) `kid`s arrive.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// The usable keys of a fetched set: RSA keys for RS256, P-256 keys for ES256, each with
/// its `kid` when it has one. Keys for other algorithms, for encryption, or malformed, are
/// left out (counted in `skipped`).
pub struct JwkKeys {
    keys: Vec<(Option<Box<str>>, Algorithm, DecodingKey)>,
    pub skipped: usize,
    /// Shared with the fetch loop: a core raises it when a token's `kid` was not found.
    wanted: Arc<AtomicBool>,
}

impl JwkKeys {
    /// Parse a key set's JSON, keeping the keys of the `allowed` algorithms.
    pub fn parse(body: &[u8], allowed: &[JwtAlgorithm]) -> Result<JwkKeys, String> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut out = JwkKeys {
            keys: Vec::new(),
            skipped: 0,
            wanted: Arc::default(),
        };
        for v in set.keys {
            match serde_json::from_value::<Jwk>(v)
                .ok()
                .and_then(|k| usable(&k, allowed))
            {
                Some(k) if out.keys.len() < MAX_JWKS_KEYS => out.keys.push(k),
                _ => out.skipped += 1,
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// A token named a key this set lacks: ask the fetch loop for an early fetch (one
    /// relaxed store; the loop looks every second and fetches at most every [`MIN_REFETCH`]).
    pub fn want_refresh(&self) {
        self.wanted.store(true, Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token of `alg`: the one with its `kid`, or without a `kid` the set's
    /// only key of that algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let mut of_alg = self.keys.iter().filter(|(_, a, _)| *a == alg);
        match kid {
            Some(kid) => of_alg
                .find(|(k, _, _)| k.as_deref() == Some(kid))
                .map(|(_, _, key)| key),
            None => match (of_alg.next(), of_alg.next()) {
                (Some((_, _, key)), None) => Some(key),
                _ => None,
            },
        }
    }
}

/// A JWK as (kid, algorithm, key) when it is a signing key of an allowed algorithm.
fn usable(
    jwk: &Jwk,
    allowed: &[JwtAlgorithm],
) -> Option<(Option<Box<str>>, Algorithm, DecodingKey)> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => JwtAlgorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            JwtAlgorithm::ES256
        }
        _ => return None,
    };
    if !allowed.contains(&alg) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let alg = match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        _ => Algorithm::ES256,
    };
    Some((jwk.common.key_id.as_deref().map(Into::into), alg, key))
}

/// What the fetches did (read by `/metrics`).
#[derive(Default)]
pub struct JwksStats {
    pub fetches_ok: AtomicU64,
    pub fetches_failed: AtomicU64,
    /// Keys in the set in use (0 until the first good fetch).
    pub keys: AtomicU64,
    /// Unix seconds of the last good fetch (0: none yet).
    pub last_ok_unix: AtomicU64,
}

impl JwksStats {
    /// The `/metrics` lines of the key set's fetches.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(768);
        let mut one = |name: &str, kind: &str, help: &str, series: &[(&str, u64)]| {
            crate::service::prometheus::metric(&mut out, name, kind, help, series)
        };
        one(
            "ringwire_jwks_fetches_total",
            "counter",
            "Fetches of [jwt] jwks_url, by result (a failed one keeps the last good set)",
            &[
                ("{result=\"ok\"}", self.fetches_ok.load(Relaxed)),
                ("{result=\"error\"}", self.fetches_failed.load(Relaxed)),
            ],
        );
        one(
            "ringwire_jwks_keys",
            "gauge",
            "Usable keys in the JWK set in use (0 until the first good fetch)",
            &[("", self.keys.load(Relaxed))],
        );
        one(
            "ringwire_jwks_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last good fetch of the JWK set (0: none yet)",
            &[("", self.last_ok_unix.load(Relaxed))],
        );
        out
    }
}

/// The fetch loop: at once, then every `jwks_refresh_secs`; after a failure sooner (10 s,
/// doubling up to the interval). Each good set goes to `publish`. Runs until dropped.
pub async fn run(
    cfg: JwtConfig,
    stats: Arc<JwksStats>,
    publish: impl Fn(Arc<JwkKeys>) + Send + 'static,
) {
    let Some(url) = cfg.jwks_url.clone() else {
        return;
    };
    let refresh = Duration::from_secs(cfg.jwks_refresh_secs);
    let mut retry = Duration::from_secs(10).min(refresh);
    let wanted = Arc::new(AtomicBool::new(false));
    loop {
        let fetched_at = tokio::time::Instant::now();
        wanted.store(false, Relaxed);
        let wait = match fetch(&url, &cfg).await {
            Ok(mut keys) => {
                keys.wanted = wanted.clone();
                if keys.is_empty() {
                    tracing::warn!(
                        "jwks {url}: no usable key in the set ({} skipped)",
                        keys.skipped
                    );
                }
                stats.fetches_ok.fetch_add(1, Relaxed);
                stats.keys.store(keys.len() as u64, Relaxed);
                stats
                    .last_ok_unix
                    .store(crate::service::session::unix_now(), Relaxed);
                publish(Arc::new(keys));
                retry = Duration::from_secs(10).min(refresh);
                refresh
            }
            Err(e) => {
                stats.fetches_failed.fetch_add(1, Relaxed);
                tracing::warn!("jwks {url}: {e}; the last good key set stays in use");
                let wait = retry;
                retry = (retry * 2).min(refresh);
                wait
            }
        };
        // The next fetch at `wait`, or earlier when a core asked (not before MIN_REFETCH).
        let due = fetched_at + wait;
        let early = fetched_at + MIN_REFETCH;
        loop {
            let now = tokio::time::Instant::now();
            if now >= due || (now >= early && wanted.load(Relaxed)) {
                break;
            }
            let step = due.saturating_duration_since(now);
            tokio::time::sleep(step.min(Duration::from_secs(1))).await;
        }
    }
}

/// One bounded GET of the key set, parsed.
async fn fetch(url: &str, cfg: &JwtConfig) -> Result<JwkKeys, String> {
    let timeout = Duration::from_millis(cfg.jwks_timeout_ms);
    let ca = cfg.jwks_ca_file.as_deref();
    let body = tokio::time::timeout(timeout, get(url, ca, cfg.jwks_max_bytes))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    JwkKeys::parse(&body, &cfg.algorithms)
}

/// GET `url` over HTTP/1.1 (for `https`, TLS verified with the system's roots or `ca`), at
/// most `max` bytes.
async fn get(url: &str, ca: Option<&std::path::Path>, max: usize) -> Result<Bytes, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("url has no host")?.to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or(&*host, |a| a.as_str()),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "ringwire")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let tls = tls_connector(ca)?;
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| format!("server name: {e}"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(stream, req, max).await
    } else {
        exchange(tcp, req, max).await
    }
}

async fn exchange<S>(io: S, req: hyper::Request<Empty<Bytes>>, max: usize) -> Result<Bytes, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("http: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e} (limit {max} bytes, jwt.jwks_max_bytes)"))
    }
    .await;
    conn.abort();
    result
}

/// Trusts `ca` (`jwks_ca_file`) or the system's root certificates, read at each fetch (a few
/// ms every few minutes, and a renewed store is picked up).
fn tls_connector(ca: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs =
                crate::config::pem::pem_certs(path).map_err(|e| format!("jwks_ca_file {e}"))?;
            roots.add_parsable_certificates(certs);
        }
        None => {
            let found =
                rustls_native_certs::load_native_certs().map_err(|e| format!("roots: {e}"))?;
            roots.add_parsable_certificates(found);
        }
    }
    if roots.is_empty() {
        return Err("no root certificate to verify https with".into());
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::config::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_jwk(kid: Option<&str>) -> serde_json::Value {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw(); // 0x04 | x | y
        let b64 =
            |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let mut v =
            json!({ "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]) });
        if let Some(k) = kid {
            v["kid"] = json!(k);
        }
        v
    }

    #[test]
    fn parse_keeps_the_usable_keys() {
        let both = [JwtAlgorithm::RS256, JwtAlgorithm::ES256];
        let set = json!({ "keys": [
            ec_jwk(Some("a")),
            ec_jwk(Some("b")),
            { "kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "oct", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA" },
            { "kty": "RSA", "alg": "RS512", "n": "AQAB", "e": "AQAB" },
            "junk",
        ]});
        let keys = JwkKeys::parse(set.to_string().as_bytes(), &both).unwrap();
        assert_eq!((keys.len(), keys.skipped), (3, 5));
        assert!(keys.find(Some("a"), Algorithm::ES256).is_some());
        assert!(keys.find(Some("r"), Algorithm::RS256).is_some());
        assert!(
            keys.find(Some("r"), Algorithm::ES256).is_none(),
            "kid of another alg"
        );
        assert!(keys.find(Some("zz"), Algorithm::ES256).is_none());
        assert!(
            keys.find(None, Algorithm::RS256).is_some(),
            "the only RSA key"
        );
        assert!(
            keys.find(None, Algorithm::ES256).is_none(),
            "two EC keys: kid needed"
        );
        // Only the algorithms of [jwt] algorithms are kept.
        let es = JwkKeys::parse(set.to_string().as_bytes(), &[JwtAlgorithm::ES256]).unwrap();
        assert_eq!(es.len(), 2);
        assert!(JwkKeys::parse(b"{\"keys\": 1}", &both).is_err());
        assert!(JwkKeys::parse(b"<html>", &both).is_err());
        let many: Vec<_> = (0..MAX_JWKS_KEYS + 3).map(|_| ec_jwk(None)).collect();
        let keys = JwkKeys::parse(json!({ "keys": many }).to_string().as_bytes(), &both).unwrap();
        assert_eq!((keys.len(), keys.skipped), (MAX_JWKS_KEYS, 3));
    }
}

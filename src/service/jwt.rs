//! JSON Web Tokens on `auth = "jwt"` endpoints: where a request carries its token, and the
//! pure verification of one (signature with the `[jwt]` keys, then `exp`/`nbf` against the
//! `now` passed in, issuer, audience, and the claims that give the socket its context, user
//! and expiry). The keys are read when the verifier is built (start, reload), never on a core.
use crate::config::{JwtAlgorithm, JwtConfig};
use crate::protocol::handshake::{self, Request};
use crate::service::jwks::JwkKeys;
use crate::service::session::{SessionId, SocketAuth};
use crate::service::user_id::UserId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The `Sec-WebSocket-Protocol` a browser offers beside its token (`new WebSocket(url,
/// ["ringwire.jwt", token])`); the 101 echoes it, never the token.
pub const JWT_PROTOCOL: &str = "ringwire.jwt";

/// Why a token does not authorize an upgrade: each is a 401 with its one-line reason and is
/// counted under its label (`refusal::LABELS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// No token in the request.
    Missing,
    /// Not three base64url parts, or a header or payload that is not JSON.
    Malformed,
    BadSignature,
    /// The header's `alg` is not in `[jwt] algorithms`.
    Algorithm,
    /// No key for the token: its `kid` is not in the key set (or the set is not fetched yet).
    UnknownKey,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingExp,
    MissingUser,
    MissingContext,
    /// The user claim is not a user id (an integer 0..=4294967295 or a string of 1-128
    /// bytes without control characters, see `UserId`).
    BadUser,
    /// The context claim is not a u32 (number or decimal string).
    BadContext,
}

impl JwtError {
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing token",
            JwtError::Malformed => "malformed token",
            JwtError::BadSignature => "bad token signature",
            JwtError::Algorithm => "token algorithm not allowed",
            JwtError::UnknownKey => "no key for this token (kid)",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid (nbf)",
            JwtError::Issuer => "wrong or missing token issuer",
            JwtError::Audience => "wrong or missing token audience",
            JwtError::MissingExp => "token has no exp claim",
            JwtError::MissingUser => "token has no user claim",
            JwtError::MissingContext => "token has no context claim",
            JwtError::BadUser => {
                "token user id is not a user id (an integer from 0 to 4294967295, or a string \
                 of 1-128 bytes without control characters)"
            }
            JwtError::BadContext => "token context id is not a u32",
        }
    }
}

/// A token found in a request, and how it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundToken<'a> {
    pub token: &'a str,
    /// It came in the query parameter (to be removed from the query the socket keeps).
    pub in_query: bool,
}

/// The token of a request: `Authorization: Bearer`, then the query parameter, then the
/// `Sec-WebSocket-Protocol` entry beside [`JWT_PROTOCOL`].
pub fn find_token<'a>(req: &Request<'a>, query_param: &str) -> Option<FoundToken<'a>> {
    if let Some(t) = req
        .headers
        .get_str("authorization")
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .filter(|v| v.len() > 7 && v.as_bytes()[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|v| v[7..].trim())
        .filter(|t| !t.is_empty())
    {
        return Some(FoundToken {
            token: t,
            in_query: false,
        });
    }
    if let Some(t) = handshake::query_param(req.query, query_param).filter(|t| !t.is_empty()) {
        return Some(FoundToken {
            token: t,
            in_query: true,
        });
    }
    let offered = req.headers.get_str("sec-websocket-protocol")?;
    let mut entries = offered.split(',').map(str::trim);
    if !entries.clone().any(|p| p == JWT_PROTOCOL) {
        return None;
    }
    entries
        .find(|p| *p != JWT_PROTOCOL && !p.is_empty())
        .map(|t| FoundToken {
            token: t,
            in_query: false,
        })
}

/// Whether the client offered [`JWT_PROTOCOL`] (then the 101 must name it).
pub fn offers_protocol(offered: Option<&str>) -> bool {
    offered.is_some_and(|o| o.split(',').any(|p| p.trim() == JWT_PROTOCOL))
}

/// `query` without its `name=` parameters (the token is a credential: the socket's query,
/// shown to listeners and the webhook, must not carry it).
pub fn strip_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
        .collect::<Vec<_>>()
        .join("&")
}

/// The `[jwt]` keys and claim rules, ready to verify (built at start and on reload).
pub struct JwtVerifier {
    /// The crate's checks for each accepted algorithm (it wants every algorithm of a
    /// `Validation` to be of its key's family, so one each).
    checks: Vec<(Algorithm, Validation)>,
    /// The keys of the file config: `secret` (HS256) and `public_key_file` (RS256 or ES256).
    keys: Vec<(Algorithm, DecodingKey)>,
    user_claim: Box<str>,
    context_claim: Box<str>,
    context: Option<u32>,
    leeway: u64,
    pub query_param: Box<str>,
}

impl JwtVerifier {
    /// Reads `public_key_file` (a validated config is assumed: keys match algorithms).
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked here against the `now` given (pure, testable), not the crate's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        let hmac = cfg
            .allows(JwtAlgorithm::HS256)
            .then(|| cfg.secret_bytes().map(|s| DecodingKey::from_secret(&s)))
            .flatten();
        if cfg.allows(JwtAlgorithm::HS256) && hmac.is_none() {
            return Err("jwt.secret: HS256 needs a hex secret".into());
        }
        let (mut rsa, mut ec) = (None, None);
        if let Some(path) = &cfg.public_key_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("jwt.public_key_file {}: {e}", path.display()))?;
            if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                ec = Some(k);
            } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                rsa = Some(k);
            } else {
                return Err(format!(
                    "jwt.public_key_file {}: no RSA or EC public key in PEM form",
                    path.display()
                ));
            }
        }
        for (alg, key, kind) in [
            (JwtAlgorithm::RS256, &rsa, "RSA"),
            (JwtAlgorithm::ES256, &ec, "P-256 EC"),
        ] {
            // With a key set, an algorithm may have its keys there only.
            if cfg.allows(alg) && key.is_none() && cfg.jwks_url.is_none() {
                return Err(format!(
                    "jwt: algorithms has {} but public_key_file holds no {kind} public key",
                    alg.name()
                ));
            }
        }
        let (mut checks, mut keys) = (Vec::new(), Vec::new());
        for (alg, key, ours) in [
            (Algorithm::HS256, hmac, JwtAlgorithm::HS256),
            (Algorithm::RS256, rsa, JwtAlgorithm::RS256),
            (Algorithm::ES256, ec, JwtAlgorithm::ES256),
        ] {
            if cfg.allows(ours) {
                let mut v = validation.clone();
                v.algorithms = vec![alg];
                checks.push((alg, v));
                keys.extend(key.map(|k| (alg, k)));
            }
        }
        Ok(JwtVerifier {
            checks,
            keys,
            user_claim: cfg.user_claim.as_str().into(),
            context_claim: cfg.context_claim.as_str().into(),
            context: cfg.context,
            leeway: cfg.leeway_secs,
            query_param: cfg.query_param.as_str().into(),
        })
    }

    /// Verify `token` at `now` (unix seconds) with the configured keys and the fetched key
    /// set `jwks` (`[jwt] jwks_url`; a key there is chosen by the token's `kid`, before the
    /// key file). The socket's expiry is `exp + leeway`: the last moment this node takes
    /// the token as valid.
    pub fn verify(
        &self,
        token: &str,
        now: u64,
        jwks: Option<&JwkKeys>,
    ) -> Result<SocketAuth, JwtError> {
        self.check(token, Some(now), jwks)
    }

    /// [`JwtVerifier::verify`] but for the time (`exp`, `nbf`): the token of a Socket.IO
    /// session that ended at its expiry, still asking for the session's last packets.
    pub fn verify_ended(
        &self,
        token: &str,
        jwks: Option<&JwkKeys>,
    ) -> Result<SocketAuth, JwtError> {
        self.check(token, None, jwks)
    }

    fn check(
        &self,
        token: &str,
        now: Option<u64>,
        jwks: Option<&JwkKeys>,
    ) -> Result<SocketAuth, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let (alg, validation) = self
            .checks
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(JwtError::Algorithm)?;
        let from_set = match alg {
            Algorithm::HS256 => None,
            _ => jwks.and_then(|set| set.find(header.kid.as_deref(), *alg)),
        };
        let key = from_set
            .or_else(|| self.keys.iter().find(|(a, _)| a == alg).map(|(_, k)| k))
            .ok_or(JwtError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => JwtError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::Algorithm,
                ErrorKind::InvalidIssuer => JwtError::Issuer,
                ErrorKind::InvalidAudience => JwtError::Audience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => JwtError::Issuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => JwtError::Audience,
                _ => JwtError::Malformed,
            },
        )?;
        let claims = data.claims;
        let exp = match claims.get("exp") {
            None => return Err(JwtError::MissingExp),
            Some(v) => numeric_date(v).ok_or(JwtError::Malformed)?,
        };
        let expires_at = exp.saturating_add(self.leeway);
        if now.is_some_and(|now| now >= expires_at) {
            return Err(JwtError::Expired);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v).ok_or(JwtError::Malformed)?;
            if now.is_some_and(|now| now.saturating_add(self.leeway) < nbf) {
                return Err(JwtError::NotYetValid);
            }
        }
        let user = match claims.get(&*self.user_claim) {
            None => return Err(JwtError::MissingUser),
            Some(v) => UserId::from_json(v).map_err(|_| JwtError::BadUser)?,
        };
        let context = match (claims.get(&*self.context_claim), self.context) {
            (Some(v), _) => id_u32(v).ok_or(JwtError::BadContext)?,
            (None, Some(c)) => c,
            (None, None) => return Err(JwtError::MissingContext),
        };
        Ok(SocketAuth {
            session: SessionId::of_token(token.as_bytes()),
            context,
            user,
            expires_at,
        })
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction (dropped).
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

/// A u32 id: a JSON number or a string of ASCII digits.
fn id_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;

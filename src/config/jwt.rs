//! `[jwt]`: upgrades of `auth = "jwt"` endpoints authenticated by a JSON Web Token (RFC 7519)
//! instead of a ringwire session. One section for every such endpoint; absent = no endpoint
//! may use `auth = "jwt"`. Applied on reload (the key file is read again then).
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// Shortest HS256 secret, in bytes: RFC 7518 §3.2 asks for a key at least as long as the
/// hash output (32 bytes for SHA-256).
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Largest `leeway_secs`: a leeway lets an expired token in (and keeps its socket open) that
/// much longer, so it covers clock skew, never token lifetimes.
pub const MAX_JWT_LEEWAY_SECS: u64 = 300;

/// A signature algorithm a token may use (the header's `alg`). Any other (`none` included)
/// is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `secret`.
    HS256,
    /// RSASSA-PKCS1-v1_5 SHA-256 with the RSA public key in `public_key_file`.
    RS256,
    /// ECDSA P-256 SHA-256 with the EC public key in `public_key_file`.
    ES256,
}

impl JwtAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        }
    }
}

/// `[jwt]`: how a token is found, which keys verify it and which claims give the socket its
/// context, user and expiry.
///
/// The token is taken from, in this order: an `Authorization: Bearer <token>` header, the
/// query parameter `query_param`, or the `Sec-WebSocket-Protocol` header when the client
/// offers the protocol `ringwire.jwt` and the token as a second entry (browsers cannot set
/// headers: `new WebSocket(url, ["ringwire.jwt", token])`); the server then answers
/// `Sec-WebSocket-Protocol: ringwire.jwt`, never the token.
///
/// A token must carry `exp`: the socket closes with 4002 at `exp + leeway_secs`, exactly as a
/// session's socket does at its expiry.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Algorithms accepted in a token's header. Default `["HS256"]`: the one that needs no
    /// key file. Every algorithm listed needs its key (`secret` for HS256,
    /// `public_key_file` for RS256 or ES256) and every key given needs its algorithm listed.
    pub algorithms: Vec<JwtAlgorithm>,
    /// HS256 key as hex (at least 64 hex digits = 32 bytes, RFC 7518 §3.2), like
    /// `[sessions] key`: `openssl rand -hex 32`. Hex, not base64, so that one encoding is used
    /// for every key of the file. The application signs with the decoded bytes.
    pub secret: Option<String>,
    /// PEM file with the public key (SPKI `BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`) that
    /// verifies RS256 (an RSA key) or ES256 (a P-256 key) tokens. Read at start and on every
    /// reload; an unreadable or unparsable file fails the start or the reload.
    pub public_key_file: Option<PathBuf>,
    /// URL (`https://` or `http://`) of a JSON Web Key Set (RFC 7517) whose RSA and P-256 keys
    /// verify RS256 / ES256 tokens, chosen by the token's `kid` (a token without `kid` is
    /// verified with the set's only key of its algorithm). Fetched off the cores, at start and
    /// every `jwks_refresh_secs`; a failed fetch keeps the last good set. HTTPS trusts the
    /// system's root certificates. Absent: `public_key_file` only. Restart to change.
    pub jwks_url: Option<String>,
    /// PEM file of the CA certificates an `https` `jwks_url` is verified with, instead of the
    /// system's roots (an identity provider behind a private CA). Read at each fetch.
    pub jwks_ca_file: Option<PathBuf>,
    /// Time between two fetches of `jwks_url`. 300 s: identity providers publish a new key
    /// well before signing with it (hours to days), so five minutes picks it up in time
    /// without loading the provider. After a failed fetch the next try comes sooner
    /// (10 s, doubling up to this interval).
    pub jwks_refresh_secs: u64,
    /// Longest a fetch (connect, TLS, answer) may take. 5 s: a key set is a few kilobytes.
    pub jwks_timeout_ms: u64,
    /// Largest key set accepted, in bytes. 256 KiB: a set of a dozen RSA-4096 keys is under
    /// 20 KB; this bounds what a broken or hostile URL can make the process hold.
    pub jwks_max_bytes: usize,
    /// When set, a token's `iss` must be this value (a token without `iss` is refused).
    /// Absent: not checked.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain this value (a token without `aud` is refused).
    /// Absent: a token that names an audience is refused (RFC 7519 §4.1.3: a recipient that
    /// is not in `aud` must refuse it).
    pub audience: Option<String>,
    /// Claim holding the user id: a number or a decimal string, 0..=4294967295 (user ids are
    /// u32 for now; others are refused with 401). Default `"sub"`, the standard subject.
    pub user_claim: String,
    /// Claim holding the context id (a u32, number or decimal string). Default `"ctx"`.
    pub context_claim: String,
    /// Context of a token without `context_claim` (single-tenant issuers). Absent: such a
    /// token is refused.
    pub context: Option<u32>,
    /// Clock skew allowed between the issuer and this node on `exp` and `nbf`, at most
    /// [`MAX_JWT_LEEWAY_SECS`]. 30 s: hosts kept by NTP differ by far less, and an expired
    /// token stays usable for at most half a minute.
    pub leeway_secs: u64,
    /// Query parameter carrying the token. Default `"token"`. Removed from the query the
    /// socket keeps (listeners, webhook), as the token is a credential.
    pub query_param: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithms: vec![JwtAlgorithm::HS256],
            secret: None,
            public_key_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            jwks_refresh_secs: 300,
            jwks_timeout_ms: 5_000,
            jwks_max_bytes: 256 * 1024,
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            context_claim: "ctx".into(),
            context: None,
            leeway_secs: 30,
            query_param: "token".into(),
        }
    }
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_ca_file", &self.jwks_ca_file)
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("jwks_timeout_ms", &self.jwks_timeout_ms)
            .field("jwks_max_bytes", &self.jwks_max_bytes)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .field("context_claim", &self.context_claim)
            .field("context", &self.context)
            .field("leeway_secs", &self.leeway_secs)
            .field("query_param", &self.query_param)
            .finish()
    }
}

impl JwtConfig {
    /// The HS256 key's bytes (`secret` decoded from hex), once validated.
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        decode_hex(self.secret.as_deref()?.trim())
    }

    pub fn allows(&self, alg: JwtAlgorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// Keys match algorithms, names are usable, bounds hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(format!("jwt.{m}")));
        if self.algorithms.is_empty() {
            return err("algorithms must name at least one of HS256, RS256, ES256".into());
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(a) {
                return err(format!("algorithms lists {} twice", a.name()));
            }
        }
        match (&self.secret, self.allows(JwtAlgorithm::HS256)) {
            (None, true) => return err("secret is required when algorithms has HS256".into()),
            (Some(_), false) => {
                return err("secret is set but algorithms lacks HS256 (it would be unused)".into())
            }
            (Some(_), true) => match self.secret_bytes() {
                Some(b) if b.len() >= MIN_JWT_SECRET_BYTES => {}
                Some(b) => {
                    return err(format!(
                        "secret is {} bytes; use at least {MIN_JWT_SECRET_BYTES} \
                         (64 hex digits, `openssl rand -hex 32`)",
                        b.len()
                    ))
                }
                None => return err("secret must be hex digits (`openssl rand -hex 32`)".into()),
            },
            (None, false) => {}
        }
        let asymmetric = self.allows(JwtAlgorithm::RS256) || self.allows(JwtAlgorithm::ES256);
        let public = self.public_key_file.is_some() || self.jwks_url.is_some();
        match (public, asymmetric) {
            (false, true) => {
                return err(
                    "public_key_file or jwks_url is required when algorithms has RS256 or ES256"
                        .into(),
                )
            }
            (true, false) => {
                return err(
                    "public_key_file or jwks_url is set but algorithms has neither \
                     RS256 nor ES256 (they would be unused)"
                        .into(),
                )
            }
            _ => {}
        }
        if let Some(url) = &self.jwks_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
            if host.is_none_or(|h| h.is_empty() || h.contains('@')) {
                return err(format!(
                    "jwks_url = {url:?}: use https://host[:port]/path (or http://)"
                ));
            }
        }
        if self.jwks_ca_file.is_some()
            && !self
                .jwks_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            return err(
                "jwks_ca_file is set but jwks_url is not https:// (it would be unused)".into(),
            );
        }
        if self.jwks_refresh_secs == 0 || self.jwks_timeout_ms == 0 {
            return err("jwks_refresh_secs and jwks_timeout_ms must be > 0".into());
        }
        if self.jwks_max_bytes < 1024 {
            return err("jwks_max_bytes must be at least 1024".into());
        }
        for (name, v) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return err(format!("{name} is empty; remove it to skip the check"));
            }
        }
        for (name, v) in [
            ("user_claim", &self.user_claim),
            ("context_claim", &self.context_claim),
        ] {
            if v.is_empty() {
                return err(format!("{name} must not be empty"));
            }
        }
        let param_ok = !self.query_param.is_empty()
            && self
                .query_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !param_ok {
            return err(format!(
                "query_param = {:?}: use letters, digits, '-', '_' or '.'",
                self.query_param
            ));
        }
        if self.leeway_secs > MAX_JWT_LEEWAY_SECS {
            return err(format!("leeway_secs must be at most {MAX_JWT_LEEWAY_SECS}"));
        }
        Ok(())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<JwtConfig, String> {
        let c: JwtConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.0)?;
        Ok(c)
    }

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// The commented `[jwt]` of the example file names real keys, and those it shows with a
    /// default value show the default.
    #[test]
    fn example_file_shows_the_defaults() {
        let text = include_str!("../../tuning/ringwire.example.toml");
        let section = &text[text.find("# [jwt]").expect("example has # [jwt]")..];
        let mut defaults = String::new();
        for line in section.lines().skip(1) {
            let Some(kv) = line.strip_prefix("# ") else {
                break;
            };
            if kv.starts_with(' ') {
                continue; // a comment's second line
            }
            let kv = kv.split("  #").next().unwrap().trim();
            let key = kv.split(" = ").next().unwrap();
            let example: JwtConfig = toml::from_str(kv).unwrap_or_else(|e| panic!("{kv}: {e}"));
            let shown_as_default = !matches!(
                key,
                "secret"
                    | "public_key_file"
                    | "jwks_url"
                    | "jwks_ca_file"
                    | "issuer"
                    | "audience"
                    | "context"
            );
            if shown_as_default {
                assert_eq!(example, JwtConfig::default(), "{kv}");
                defaults.push_str(key);
            }
        }
        for key in [
            "algorithms",
            "user_claim",
            "leeway_secs",
            "query_param",
            "jwks_max_bytes",
        ] {
            assert!(defaults.contains(key), "{key} shown in the example");
        }
    }

    #[test]
    fn keys_match_algorithms() {
        let c = parse(&format!("secret = \"{HEX}\"")).unwrap();
        assert_eq!(c.algorithms, [JwtAlgorithm::HS256]);
        assert_eq!(c.secret_bytes().unwrap().len(), 32);
        assert!(!format!("{c:?}").contains(HEX), "Debug hides the secret");
        for (toml, why) in [
            ("", "secret is required"),
            ("secret = \"abcd\"", "secret is 2 bytes"),
            ("secret = \"zz\"", "hex digits"),
            (
                &format!("algorithms = [\"RS256\"]\nsecret = \"{HEX}\""),
                "lacks HS256",
            ),
            (
                "algorithms = [\"ES256\"]",
                "public_key_file or jwks_url is required",
            ),
            (
                &format!("secret = \"{HEX}\"\npublic_key_file = \"k.pem\""),
                "neither RS256 nor ES256",
            ),
            (
                &format!("secret = \"{HEX}\"\njwks_url = \"https://idp/jwks\""),
                "neither RS256 nor ES256",
            ),
            (
                "algorithms = [\"RS256\"]\njwks_url = \"ftp://idp/jwks\"",
                "jwks_url",
            ),
            (
                "algorithms = [\"RS256\"]\njwks_url = \"https:///jwks\"",
                "jwks_url",
            ),
            (
                "algorithms = [\"RS256\"]\njwks_url = \"http://a/\"\njwks_refresh_secs = 0",
                "jwks_refresh_secs",
            ),
            ("algorithms = []", "at least one"),
            (
                &format!("algorithms = [\"HS256\", \"HS256\"]\nsecret = \"{HEX}\""),
                "twice",
            ),
            (
                &format!("secret = \"{HEX}\"\nissuer = \"\""),
                "issuer is empty",
            ),
            (
                &format!("secret = \"{HEX}\"\nuser_claim = \"\""),
                "user_claim",
            ),
            (
                &format!("secret = \"{HEX}\"\nquery_param = \"a b\""),
                "query_param",
            ),
            (
                &format!("secret = \"{HEX}\"\nleeway_secs = 301"),
                "leeway_secs",
            ),
            ("algorithms = [\"none\"]", "unknown variant"),
            (&format!("secret = \"{HEX}\"\nbogus = 1"), "unknown field"),
        ] {
            let e = parse(toml).unwrap_err();
            assert!(e.contains(why), "{toml:?}: {e}");
        }
        let c = parse("algorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"k.pem\"").unwrap();
        assert!(c.allows(JwtAlgorithm::ES256) && c.secret_bytes().is_none());
        let c = parse(
            "algorithms = [\"RS256\"]\njwks_url = \"https://idp.example/.well-known/jwks.json\"",
        )
        .unwrap();
        assert_eq!((c.jwks_refresh_secs, c.jwks_max_bytes), (300, 256 * 1024));
    }
}

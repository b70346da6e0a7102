//! Sessions: self-verifying tokens, so any node holding the cluster's session key verifies a
//! session minted anywhere without a shared store or a lock.
//!
//! `session id` = base64url(version | context u32 | user u32 | expires_at u64 | nonce 8 | tag 16)
//! with `tag = HMAC-SHA256(key, "ringwire-session" | fields)[..16]`. The client's secret (sent as
//! a cookie) is derived, not stored: `secret = base64url(HMAC-SHA256(key, "secret" | id bytes))`.
//! A session ends by expiry (in the id) or by revocation (a set of ids kept until their expiry,
//! copied to every core and node).
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const FIELDS_LEN: usize = 1 + 4 + 4 + 8 + 8;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = FIELDS_LEN + TAG_LEN;
/// Length of a session id in characters.
pub const ID_LEN: usize = (RAW_LEN * 8).div_ceil(6);

/// What a valid session id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    pub context: u32,
    pub user: u32,
    /// Unix seconds.
    pub expires_at: u64,
    pub nonce: u64,
}

/// A session id in compact form (the raw bytes), for sets and per-socket storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; RAW_LEN]);

impl SessionId {
    /// What stands for the session of a socket opened with a JSON Web Token (`auth = "jwt"`):
    /// byte 0 is 0 (never a session's version, so no session id equals it), then the SHA-256
    /// of the token. The same token gives the same id (a Socket.IO `sid` stays bound to it).
    pub fn of_token(token: &[u8]) -> SessionId {
        use sha2::Digest as _;
        let mut raw = [0u8; RAW_LEN];
        raw[1..33].copy_from_slice(&Sha256::digest(token));
        SessionId(raw)
    }

    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// The session a socket is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAuth {
    pub session: SessionId,
    pub context: u32,
    pub user: u32,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Why a session does not authorize an upgrade (each is a 401 with its own reason and metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    Malformed,
    BadSignature,
    Expired,
    Revoked,
    WrongSecret,
}

impl SessionError {
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Malformed | SessionError::BadSignature => "unknown session",
            SessionError::Expired => "session expired",
            SessionError::Revoked => "session terminated",
            SessionError::WrongSecret => "wrong or missing session secret",
        }
    }
}

/// The key that signs sessions (shared by every node of a cluster).
#[derive(Clone)]
pub struct SessionKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    pub fn new(key: [u8; 32]) -> SessionKey {
        SessionKey { key }
    }

    /// A random key (single node without a configured key: sessions die with the process).
    pub fn random() -> SessionKey {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("OS random source");
        SessionKey { key }
    }

    /// From configuration: 64 hex characters.
    pub fn from_hex(hex: &str) -> Option<SessionKey> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SessionKey { key })
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(label);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Mint a session: returns its id and the client's secret.
    pub fn mint(&self, context: u32, user: u32, expires_at: u64) -> (SessionId, String) {
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).expect("OS random source");
        let id = self.mint_with_nonce(context, user, expires_at, nonce);
        let secret = self.secret_for(&id);
        (id, secret)
    }

    /// The session of an `auth = "proxy"` socket: (context, user, expires_at) and a nonce
    /// derived from its credentials' key under this key (keyed, so that the id, seen by the
    /// webhook, tells nothing of the credentials). The same credentials and answer give the
    /// same id, so `DELETE /v1/sessions/{id}` ends it (4001) and refuses them after.
    pub fn proxy_session(
        &self,
        context: u32,
        user: u32,
        expires_at: u64,
        credentials: &[u8],
    ) -> SessionId {
        let mac = self.mac(b"ringwire-proxy-nonce", credentials);
        let nonce = mac[..8].try_into().expect("8 bytes of 32");
        self.mint_with_nonce(context, user, expires_at, nonce)
    }

    /// The session id of (context, user, expires_at, nonce): the same fields give the same
    /// id.
    fn mint_with_nonce(
        &self,
        context: u32,
        user: u32,
        expires_at: u64,
        nonce: [u8; 8],
    ) -> SessionId {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..5].copy_from_slice(&context.to_be_bytes());
        raw[5..9].copy_from_slice(&user.to_be_bytes());
        raw[9..17].copy_from_slice(&expires_at.to_be_bytes());
        raw[17..25].copy_from_slice(&nonce);
        let tag = self.mac(b"ringwire-session", &raw[..FIELDS_LEN]);
        raw[FIELDS_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        SessionId(raw)
    }

    /// The secret the client must present for `id`.
    pub fn secret_for(&self, id: &SessionId) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"secret", &id.0))
    }

    /// Check an id's format and signature (not expiry, revocation or secret).
    pub fn parse(&self, text: &str) -> Result<(SessionId, Session), SessionError> {
        if text.len() != ID_LEN {
            return Err(SessionError::Malformed);
        }
        let mut raw = [0u8; RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return Err(SessionError::Malformed),
        }
        if raw[0] != VERSION {
            return Err(SessionError::Malformed);
        }
        let tag = self.mac(b"ringwire-session", &raw[..FIELDS_LEN]);
        if !bool::from(tag[..TAG_LEN].ct_eq(&raw[FIELDS_LEN..])) {
            return Err(SessionError::BadSignature);
        }
        let u32_at = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let session = Session {
            context: u32_at(1),
            user: u32_at(5),
            expires_at: u64_at(9),
            nonce: u64_at(17),
        };
        Ok((SessionId(raw), session))
    }

    /// Full check at upgrade time: signature, expiry at `now` (unix seconds), revocation, and the
    /// presented secret (constant-time).
    ///
    /// `secrets` are every secret the client presented (a browser may send several cookies
    /// of the same name, a stale one first): the session passes when any of them matches.
    /// Each is compared in constant time, and all of them are compared.
    pub fn verify<S: AsRef<[u8]>>(
        &self,
        id_text: &str,
        secrets: impl IntoIterator<Item = S>,
        now: u64,
        is_revoked: impl FnOnce(&SessionId) -> bool,
    ) -> Result<(SessionId, Session), SessionError> {
        let (id, session) = self.parse(id_text)?;
        if session.expires_at <= now {
            return Err(SessionError::Expired);
        }
        if is_revoked(&id) {
            return Err(SessionError::Revoked);
        }
        let want = self.secret_for(&id);
        let mut matched = subtle::Choice::from(0);
        for got in secrets {
            matched |= want.as_bytes().ct_eq(got.as_ref());
        }
        if !bool::from(matched) {
            return Err(SessionError::WrongSecret);
        }
        Ok((id, session))
    }
}

/// A terminated session: refused from now on, its sockets closed, on every core and every
/// node, until it would have expired anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub id: SessionId,
    pub context: u32,
    pub user: u32,
    pub expires_at: u64,
}

/// Unix time in seconds (control plane and upgrade checks; the protocol core reads no clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_session_is_a_session_of_its_credentials() {
        let k = SessionKey::random();
        let a = k.proxy_session(1, 42, 2_000, b"cookie a");
        assert_eq!(a, k.proxy_session(1, 42, 2_000, b"cookie a"));
        assert_ne!(a, k.proxy_session(1, 42, 2_000, b"cookie b"));
        assert_ne!(a, k.proxy_session(1, 42, 2_001, b"cookie a"));
        assert_ne!(
            a,
            SessionKey::random().proxy_session(1, 42, 2_000, b"cookie a")
        );
        // A real session id: any node with the key parses it (DELETE /v1/sessions/{id}).
        let (id, s) = k.parse(&a.to_text()).unwrap();
        assert_eq!((id, s.context, s.user, s.expires_at), (a, 1, 42, 2_000));
    }

    #[test]
    fn any_presented_secret_may_match() {
        let k = SessionKey::random();
        let (id, secret) = k.mint(7, 42, 2_000);
        let text = id.to_text();
        for order in [["stale", secret.as_str()], [secret.as_str(), "stale"]] {
            assert!(k.verify(&text, order, 1, |_| false).is_ok());
        }
        assert_eq!(
            k.verify(&text, ["stale", "older"], 1, |_| false).err(),
            Some(SessionError::WrongSecret)
        );
        assert_eq!(
            k.verify(&text, [""; 0], 1, |_| false).err(),
            Some(SessionError::WrongSecret)
        );
    }

    #[test]
    fn mint_and_verify() {
        let k = SessionKey::random();
        let (id, secret) = k.mint(7, 42, 2_000);
        let text = id.to_text();
        assert_eq!(text.len(), ID_LEN);
        let (id2, s) = k.verify(&text, Some(&secret), 1_000, |_| false).unwrap();
        assert_eq!(id2, id);
        assert_eq!((s.context, s.user, s.expires_at), (7, 42, 2_000));
    }

    #[test]
    fn every_failure_has_its_reason() {
        let k = SessionKey::random();
        let (id, secret) = k.mint(1, 2, 2_000);
        let text = id.to_text();
        assert_eq!(
            k.verify("nope", Some(&secret), 1, |_| false),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            k.verify(&text, Some(&secret), 2_000, |_| false),
            Err(SessionError::Expired)
        );
        assert_eq!(
            k.verify(&text, Some(&secret), 1, |_| true),
            Err(SessionError::Revoked)
        );
        assert_eq!(
            k.verify(&text, Some("x"), 1, |_| false),
            Err(SessionError::WrongSecret)
        );
        assert_eq!(
            k.verify(&text, None::<&str>, 1, |_| false),
            Err(SessionError::WrongSecret)
        );
        // Another key (another cluster) does not accept it.
        let other = SessionKey::random();
        assert_eq!(
            other.verify(&text, Some(&secret), 1, |_| false),
            Err(SessionError::BadSignature)
        );
        // A tampered user id breaks the signature.
        let mut raw = id.0;
        raw[8] ^= 1;
        let tampered = SessionId(raw).to_text();
        assert_eq!(
            k.verify(&tampered, Some(&secret), 1, |_| false),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn hex_keys() {
        assert!(SessionKey::from_hex(&"ab".repeat(32)).is_some());
        assert!(SessionKey::from_hex("abc").is_none());
        assert!(SessionKey::from_hex(&"zz".repeat(32)).is_none());
        let a = SessionKey::from_hex(&"01".repeat(32)).unwrap();
        let b = SessionKey::from_hex(&"01".repeat(32)).unwrap();
        let (id, secret) = a.mint(1, 1, 10);
        assert!(
            b.verify(&id.to_text(), Some(&secret), 1, |_| false).is_ok(),
            "same key on two nodes"
        );
    }
}

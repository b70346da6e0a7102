//! Sessions: self-verifying tokens, so any node holding the cluster's session key verifies a
//! session minted anywhere without a shared store or a lock.
//!
//! Two formats, both base64url without padding, with
//! `tag = HMAC-SHA256(key, "ringwire-session" | fields)[..16]`:
//! - v1, a numeric user (55 characters; every token minted before string user ids):
//!   `version 1 | context u32 | user u32 | expires_at u64 | nonce 8 | tag 16`
//! - v2, a string user (1-128 bytes, see [`UserId`]):
//!   `version 2 | context u32 | expires_at u64 | nonce 8 | user length u8 | user bytes | tag 16`
//!
//! A session is known inside the server by its compact [`SessionId`] (41 bytes): a v1 token's
//! bytes; for v2 `2 | context | 0u32 | expires_at | nonce | tag` (the tag covers the user, so
//! it is as unique as the token), whose text is made again with the user
//! ([`SessionId::to_text`]). The client's secret (sent as a cookie) is derived, not stored:
//! `secret = base64url(HMAC-SHA256(key, "secret" | compact id bytes))`.
//! A session ends by expiry (in the id) or by revocation (a set of ids kept until their expiry,
//! copied to every core and node).
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use crate::service::user_id::UserId;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
/// The format of a string user's session.
const VERSION_STRING_USER: u8 = 2;
const FIELDS_LEN: usize = 1 + 4 + 4 + 8 + 8;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = FIELDS_LEN + TAG_LEN;
/// Length of a numeric user's (v1) session id in characters.
pub const ID_LEN: usize = (RAW_LEN * 8).div_ceil(6);
/// v2 before the user's bytes: version, context, expires_at, nonce, user length.
const V2_HEAD: usize = 1 + 4 + 8 + 8 + 1;
/// Longest session id in characters (v2 with a 128-byte user).
pub const MAX_ID_LEN: usize =
    ((V2_HEAD + crate::service::user_id::MAX_LEN + TAG_LEN) * 8).div_ceil(6);

/// What a valid session id says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Session {
    pub context: u32,
    pub user: UserId,
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

    /// The session id's text: the token a client presents. `user` is the session's user
    /// (a v2 token carries its bytes, which the compact id leaves out).
    pub fn to_text(&self, user: &UserId) -> String {
        if self.0[0] != VERSION_STRING_USER {
            return URL_SAFE_NO_PAD.encode(self.0);
        }
        let text = user.text();
        let mut raw = Vec::with_capacity(V2_HEAD + text.len() + TAG_LEN);
        raw.push(VERSION_STRING_USER);
        raw.extend_from_slice(&self.0[1..5]);
        raw.extend_from_slice(&self.0[9..25]);
        raw.push(text.len() as u8);
        raw.extend_from_slice(text.as_bytes());
        raw.extend_from_slice(&self.0[FIELDS_LEN..]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The text of an id that carries everything (a numeric user's v1 session, a token's
    /// id): for tests that have no user at hand.
    #[cfg(test)]
    pub fn v1_text(&self) -> String {
        assert_ne!(self.0[0], VERSION_STRING_USER, "a v2 id needs its user");
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// The session a socket is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAuth {
    pub session: SessionId,
    pub context: u32,
    pub user: UserId,
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
    pub fn mint(&self, context: u32, user: &UserId, expires_at: u64) -> (SessionId, String) {
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
        user: &UserId,
        expires_at: u64,
        credentials: &[u8],
    ) -> SessionId {
        let mac = self.mac(b"ringwire-proxy-nonce", credentials);
        let nonce = mac[..8].try_into().expect("8 bytes of 32");
        self.mint_with_nonce(context, user, expires_at, nonce)
    }

    /// The session id of (context, user, expires_at, nonce): the same fields give the same
    /// id. A numeric user's is v1, a string user's v2.
    fn mint_with_nonce(
        &self,
        context: u32,
        user: &UserId,
        expires_at: u64,
        nonce: [u8; 8],
    ) -> SessionId {
        let mut raw = [0u8; RAW_LEN];
        raw[1..5].copy_from_slice(&context.to_be_bytes());
        raw[9..17].copy_from_slice(&expires_at.to_be_bytes());
        raw[17..25].copy_from_slice(&nonce);
        let tag = match (user.as_num(), user.as_str()) {
            (Some(n), _) => {
                raw[0] = VERSION;
                raw[5..9].copy_from_slice(&n.to_be_bytes());
                self.mac(b"ringwire-session", &raw[..FIELDS_LEN])
            }
            (None, s) => {
                raw[0] = VERSION_STRING_USER;
                self.mac(b"ringwire-session", &v2_fields(&raw, s.unwrap_or_default()))
            }
        };
        raw[FIELDS_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        SessionId(raw)
    }

    /// The secret the client must present for `id`.
    pub fn secret_for(&self, id: &SessionId) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"secret", &id.0))
    }

    /// Check an id's format and signature (not expiry, revocation or secret).
    pub fn parse(&self, text: &str) -> Result<(SessionId, Session), SessionError> {
        if text.len() > MAX_ID_LEN {
            return Err(SessionError::Malformed);
        }
        // Room for the decoder's estimate of the longest id (a multiple of 3).
        let mut bytes = [0u8; V2_HEAD + crate::service::user_id::MAX_LEN + TAG_LEN + 3];
        let n = URL_SAFE_NO_PAD
            .decode_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| SessionError::Malformed)?;
        let bytes = &bytes[..n];
        match bytes.first() {
            Some(&VERSION) if n == RAW_LEN => self.parse_v1(bytes),
            Some(&VERSION_STRING_USER) => self.parse_v2(bytes),
            _ => Err(SessionError::Malformed),
        }
    }

    fn parse_v1(&self, bytes: &[u8]) -> Result<(SessionId, Session), SessionError> {
        let mut raw = [0u8; RAW_LEN];
        raw.copy_from_slice(bytes);
        let tag = self.mac(b"ringwire-session", &raw[..FIELDS_LEN]);
        if !bool::from(tag[..TAG_LEN].ct_eq(&raw[FIELDS_LEN..])) {
            return Err(SessionError::BadSignature);
        }
        let user = u32::from_be_bytes(raw[5..9].try_into().expect("4 bytes"));
        let session = session_of(&raw, user.into());
        Ok((SessionId(raw), session))
    }

    fn parse_v2(&self, bytes: &[u8]) -> Result<(SessionId, Session), SessionError> {
        if bytes.len() < V2_HEAD + 1 + TAG_LEN {
            return Err(SessionError::Malformed);
        }
        let user_len = bytes[V2_HEAD - 1] as usize;
        if bytes.len() != V2_HEAD + user_len + TAG_LEN {
            return Err(SessionError::Malformed);
        }
        let (fields, got_tag) = bytes.split_at(V2_HEAD + user_len);
        let tag = self.mac(b"ringwire-session", fields);
        if !bool::from(tag[..TAG_LEN].ct_eq(got_tag)) {
            return Err(SessionError::BadSignature);
        }
        let user = UserId::from_bytes(&fields[V2_HEAD..]).map_err(|_| SessionError::Malformed)?;
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION_STRING_USER;
        raw[1..5].copy_from_slice(&fields[1..5]);
        raw[9..25].copy_from_slice(&fields[5..21]);
        raw[FIELDS_LEN..].copy_from_slice(got_tag);
        let session = session_of(&raw, user);
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

/// The signed fields of a v2 token whose compact id is `raw` (its tag not yet set).
fn v2_fields(raw: &[u8; RAW_LEN], user: &str) -> Vec<u8> {
    let mut fields = Vec::with_capacity(V2_HEAD + user.len());
    fields.push(VERSION_STRING_USER);
    fields.extend_from_slice(&raw[1..5]);
    fields.extend_from_slice(&raw[9..25]);
    fields.push(user.len() as u8);
    fields.extend_from_slice(user.as_bytes());
    fields
}

/// The session a compact id of `user` says.
fn session_of(raw: &[u8; RAW_LEN], user: UserId) -> Session {
    let u32_at = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
    Session {
        context: u32_at(1),
        user,
        expires_at: u64_at(9),
        nonce: u64_at(17),
    }
}

/// A terminated session: refused from now on, its sockets closed, on every core and every
/// node, until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: SessionId,
    pub context: u32,
    pub user: UserId,
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
        let a = k.proxy_session(1, &42.into(), 2_000, b"cookie a");
        assert_eq!(a, k.proxy_session(1, &42.into(), 2_000, b"cookie a"));
        assert_ne!(a, k.proxy_session(1, &42.into(), 2_000, b"cookie b"));
        assert_ne!(a, k.proxy_session(1, &42.into(), 2_001, b"cookie a"));
        assert_ne!(
            a,
            SessionKey::random().proxy_session(1, &42.into(), 2_000, b"cookie a")
        );
        // A real session id: any node with the key parses it (DELETE /v1/sessions/{id}).
        let (id, s) = k.parse(&a.to_text(&42.into())).unwrap();
        assert_eq!(
            (id, s.context, s.user, s.expires_at),
            (a, 1, 42.into(), 2_000)
        );
    }

    #[test]
    fn any_presented_secret_may_match() {
        let k = SessionKey::random();
        let (id, secret) = k.mint(7, &42.into(), 2_000);
        let text = id.v1_text();
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
        let (id, secret) = k.mint(7, &42.into(), 2_000);
        let text = id.v1_text();
        assert_eq!(text.len(), ID_LEN);
        let (id2, s) = k.verify(&text, Some(&secret), 1_000, |_| false).unwrap();
        assert_eq!(id2, id);
        assert_eq!((s.context, s.user, s.expires_at), (7, 42.into(), 2_000));
    }

    #[test]
    fn every_failure_has_its_reason() {
        let k = SessionKey::random();
        let (id, secret) = k.mint(1, &2.into(), 2_000);
        let text = id.v1_text();
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
        let tampered = SessionId(raw).v1_text();
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
        let (id, secret) = a.mint(1, &1.into(), 10);
        assert!(
            b.verify(&id.v1_text(), Some(&secret), 1, |_| false).is_ok(),
            "same key on two nodes"
        );
    }

    #[test]
    fn string_users_have_v2_sessions() {
        let k = SessionKey::random();
        for user in ["alice", "abc", "6f1c1d2e-8d3b-4b0c-9a59-2b8f7d1e0a44"] {
            let user = UserId::parse(user).unwrap();
            let (id, secret) = k.mint(3, &user, 2_000);
            let text = id.to_text(&user);
            let (id2, s) = k.verify(&text, Some(&secret), 1_000, |_| false).unwrap();
            assert_eq!(id2, id);
            assert_eq!((s.context, &s.user, s.expires_at), (3, &user, 2_000));
        }
        // The longest user id fits; its token is the longest.
        let long = UserId::parse(&"é".repeat(64)).unwrap();
        let (id, secret) = k.mint(1, &long, 2_000);
        let text = id.to_text(&long);
        assert_eq!(text.len(), MAX_ID_LEN);
        let (_, s) = k.verify(&text, Some(&secret), 1, |_| false).unwrap();
        assert_eq!(s.user, long);
        // A numeric user keeps v1, also when named by its text.
        let (id, _) = k.mint(1, &UserId::parse("42").unwrap(), 2_000);
        assert_eq!(id.0[0], VERSION);
        assert_eq!(id.to_text(&42.into()).len(), ID_LEN);
    }

    #[test]
    fn a_tampered_v2_session_is_refused() {
        let k = SessionKey::random();
        let alice = UserId::parse("alice").unwrap();
        let (id, secret) = k.mint(3, &alice, 2_000);
        let raw = URL_SAFE_NO_PAD.decode(id.to_text(&alice)).unwrap();
        // The user's bytes, the context, the expiry, the tag: each change breaks the signature.
        for at in [V2_HEAD, V2_HEAD + 4, 1, 9, raw.len() - 1] {
            let mut t = raw.clone();
            t[at] ^= 1;
            assert_eq!(
                k.verify(&URL_SAFE_NO_PAD.encode(&t), Some(&secret), 1, |_| false),
                Err(SessionError::BadSignature),
                "byte {at}"
            );
        }
        // Another user named in the compact id's text is another token.
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            k.verify(&id.to_text(&bob), Some(&secret), 1, |_| false),
            Err(SessionError::BadSignature)
        );
        // A wrong length byte, a cut token, a control character: malformed.
        let mut t = raw.clone();
        t[V2_HEAD - 1] += 1;
        assert_eq!(
            k.verify(&URL_SAFE_NO_PAD.encode(&t), Some(&secret), 1, |_| false),
            Err(SessionError::Malformed)
        );
        let cut = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]);
        assert_eq!(
            k.verify(&cut, Some(&secret), 1, |_| false),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            k.verify(&"A".repeat(MAX_ID_LEN + 1), Some(&secret), 1, |_| false),
            Err(SessionError::Malformed)
        );
        // Revocation works on the compact id.
        assert_eq!(
            k.verify(&id.to_text(&alice), Some(&secret), 1, |r| *r == id),
            Err(SessionError::Revoked)
        );
    }
}

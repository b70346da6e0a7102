//! `auth = "proxy"` endpoints, the sans-IO part: what the application is asked (the
//! request's forwarded headers and URI, and the key that names its credentials), what its
//! answer means (admit with an identity, refuse with its status and reason, or unavailable),
//! and the bounded cache of admitting answers. The call itself is made off the cores
//! (`service::proxy_client`); a core parks the connection meanwhile (`runtime::shard::proxy`).
//! Pure: the clock is passed in.
use crate::protocol::handshake::Request;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};

/// Longest reason taken from a refusing answer (bytes); longer ones are cut.
pub const MAX_REASON_BYTES: usize = 200;
/// Most attributes an answer may give a socket, and their sizes (as `POST` attributes).
pub const MAX_ATTRS: usize = 16;
pub const MAX_ATTR_KEY: usize = 64;
pub const MAX_ATTR_VALUE: usize = 1024;

/// The expiry of a socket whose application gave none (unix seconds, year 36812: far
/// enough, and small enough for the core's deadline arithmetic).
pub const NO_EXPIRY: u64 = 1 << 40;

/// The session of a parked polling request until the application answers (never used:
/// the answer replaces it before the request is served).
pub fn unknown_yet() -> crate::service::session::SocketAuth {
    crate::service::session::SocketAuth {
        session: crate::service::session::SessionId::of_token(b""),
        context: 0,
        user: crate::service::user_id::UserId::default(),
        expires_at: 0,
    }
}

/// The credentials' key: SHA-256 of the endpoint and the forwarded headers.
pub type CredKey = [u8; 32];

/// What the application is asked for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    pub key: CredKey,
    /// The forwarded headers as they came (lowercase names; a repeated header repeats).
    pub headers: Vec<(Box<str>, Box<[u8]>)>,
    /// `X-Forwarded-Uri`: the request's path and query as sent.
    pub uri: Box<str>,
    /// `X-Forwarded-Host`: its `Host` header, if any.
    pub host: Option<Box<str>>,
    /// `X-Forwarded-Method`: `GET` for an upgrade, the polling request's method.
    pub method: Box<str>,
}

impl ProxyRequest {
    /// The request to forward for `req` on endpoint `endpoint` (its index), with the headers
    /// named in `forward` (lowercase). The cache key covers the endpoint and those headers,
    /// present or not, never the URI (a polling request's query changes every time).
    pub fn of(req: &Request<'_>, endpoint: u8, forward: &[String]) -> ProxyRequest {
        let mut h = Sha256::new();
        h.update(b"ringwire-proxy\0");
        h.update([endpoint]);
        let mut headers = Vec::new();
        for name in forward {
            h.update((name.len() as u32).to_be_bytes());
            h.update(name.as_bytes());
            for v in req.headers.all(name) {
                h.update((v.len() as u32).to_be_bytes());
                h.update(v);
                headers.push((name.as_str().into(), v.into()));
            }
            h.update(u32::MAX.to_be_bytes()); // end of this header's values
        }
        let uri = if req.query.is_empty() {
            req.path.to_string()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        ProxyRequest {
            key: h.finalize().into(),
            headers,
            uri: uri.into(),
            host: req.headers.get_str("host").map(Into::into),
            method: req.method.into(),
        }
    }
}

/// Who the application says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub context: u32,
    pub user: crate::service::user_id::UserId,
    /// Unix seconds; the socket closes with 4002 then. `None`: no expiry.
    pub expires_at: Option<u64>,
    /// Given to the socket's attribute store (listeners see them).
    pub attrs: Vec<(Box<str>, Box<str>)>,
}

/// What the application's answer means for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAnswer {
    Admit(Identity),
    /// 401 or 403 with the application's one-line reason.
    Refuse {
        status: u16,
        reason: Box<str>,
    },
    /// No usable answer (timeout, connection failure, 5xx, a malformed 2xx, any other
    /// status) or too many calls under way: 503 with `Retry-After`. `why` is for the log.
    Unavailable {
        why: Box<str>,
        busy: bool,
    },
}

impl ProxyAnswer {
    pub fn unavailable(why: impl Into<Box<str>>) -> ProxyAnswer {
        ProxyAnswer::Unavailable {
            why: why.into(),
            busy: false,
        }
    }
}

/// The meaning of the application's answer: its status and body.
pub fn parse_answer(status: u16, body: &[u8]) -> ProxyAnswer {
    match status {
        200..=299 => match parse_identity(body) {
            Ok(id) => ProxyAnswer::Admit(id),
            Err(e) => ProxyAnswer::unavailable(format!("bad {status} answer: {e}")),
        },
        401 | 403 => ProxyAnswer::Refuse {
            status,
            reason: refusal_reason(body).into(),
        },
        _ => ProxyAnswer::unavailable(format!("the application answered {status}")),
    }
}

/// The identity of an admitting answer: `{"user": .., "context": .., "expires_at": ..,
/// "attributes": {..}}`; `context` is a u32 as a number or a decimal string (default 0),
/// `user` a user id: an integer 0..=4294967295 or a string of 1-128 bytes (`UserId`).
fn parse_identity(body: &[u8]) -> Result<Identity, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let id = |name: &str| -> Result<Option<u32>, String> {
        let parsed = match obj.get(name) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| format!("{name} is not a u32 (number or decimal string)"))
    };
    let user = match obj.get("user") {
        None | Some(serde_json::Value::Null) => return Err("no user".into()),
        Some(u) => crate::service::user_id::UserId::from_json(u).map_err(|e| e.to_string())?,
    };
    let context = id("context")?.unwrap_or(0);
    let expires_at = match obj.get("expires_at") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(e.as_u64().ok_or("expires_at is not unix seconds")?),
    };
    let mut attrs = Vec::new();
    match obj.get("attributes") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) => {
            if m.len() > MAX_ATTRS {
                return Err(format!("more than {MAX_ATTRS} attributes"));
            }
            for (k, v) in m {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if k.len() > MAX_ATTR_KEY || v.len() > MAX_ATTR_VALUE {
                    return Err(format!("attribute {k:?} is too large"));
                }
                attrs.push((k.as_str().into(), v.into()));
            }
        }
        Some(_) => return Err("attributes is not an object".into()),
    }
    Ok(Identity {
        context,
        user,
        expires_at,
        attrs,
    })
}

/// A refusal's reason: the `reason` of a JSON body, else a text body's first line; printable
/// and one line (it goes into an HTTP answer), at most [`MAX_REASON_BYTES`].
fn refusal_reason(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        // A JSON body: its `reason` or none (never the JSON text itself).
        Ok(v) => v
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("")
            .to_string(),
        Err(_) => String::from_utf8_lossy(body)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    };
    let mut out = String::new();
    for ch in text.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + ch.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(ch);
    }
    if out.is_empty() {
        "refused by the application".into()
    } else {
        out
    }
}

/// Admitting answers by credentials key, each kept until its deadline (unix ms: an answer's
/// `expires_at` is unix seconds), at most `max`
/// entries. Entries are dropped oldest first (insertion order is deadline order but for
/// answers whose `expires_at` cut their time short, which go earlier and are checked on use).
pub struct AnswerCache {
    ttl_ms: u64,
    max: usize,
    map: HashMap<CredKey, (u64, Identity)>,
    /// Insertion order: (deadline, key); a key inserted again leaves a stale entry here,
    /// recognised by its deadline.
    order: VecDeque<(u64, CredKey)>,
}

impl AnswerCache {
    pub fn new(ttl_ms: u64, max: usize) -> AnswerCache {
        AnswerCache {
            ttl_ms,
            max,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cached identity for `key` at `now_ms`, if still fresh.
    pub fn get(&mut self, key: &CredKey, now_ms: u64) -> Option<Identity> {
        match self.map.get(key) {
            Some((deadline, id)) if *deadline > now_ms => Some(id.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep an admitting answer (no-op when the ttl is 0 or it expires before now + ttl
    /// would matter: kept until the earlier of the two).
    pub fn put(&mut self, key: CredKey, id: Identity, now_ms: u64) {
        if self.ttl_ms == 0 || self.max == 0 {
            return;
        }
        let mut deadline = now_ms + self.ttl_ms;
        if let Some(exp) = id.expires_at {
            deadline = deadline.min(exp.saturating_mul(1000));
        }
        if deadline <= now_ms {
            return;
        }
        self.evict(now_ms);
        while self.map.len() >= self.max && !self.map.contains_key(&key) {
            if !self.pop_oldest() {
                break;
            }
        }
        self.map.insert(key, (deadline, id));
        self.order.push_back((deadline, key));
        // Stale order entries are bounded too: at most one per insert kept.
        while self.order.len() > 2 * self.max.max(1) {
            self.pop_oldest();
        }
    }

    /// Drop what is due at `now_ms` from the front of the insertion order.
    fn evict(&mut self, now_ms: u64) {
        while let Some(&(deadline, _)) = self.order.front() {
            if deadline > now_ms {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drop the oldest insertion (its key too if the map still holds that insertion).
    fn pop_oldest(&mut self) -> bool {
        let Some((deadline, key)) = self.order.pop_front() else {
            return false;
        };
        if self.map.get(&key).is_some_and(|(d, _)| *d == deadline) {
            self.map.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{parse_request, HandshakeLimits};

    fn request(extra: &str) -> Vec<u8> {
        format!("GET /ws?a=1 HTTP/1.1\r\nHost: push.example\r\n{extra}\r\n").into_bytes()
    }

    fn of(raw: &[u8], endpoint: u8) -> ProxyRequest {
        let req = parse_request(raw, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        let forward = [
            "cookie".to_string(),
            "authorization".into(),
            "origin".into(),
        ];
        ProxyRequest::of(&req, endpoint, &forward)
    }

    #[test]
    fn request_forwards_the_named_headers_and_keys_the_credentials() {
        let a = of(&request("Cookie: sid=1\r\nUser-Agent: x\r\n"), 0);
        assert_eq!(&*a.uri, "/ws?a=1");
        assert_eq!(a.host.as_deref(), Some("push.example"));
        assert_eq!(a.headers, [("cookie".into(), b"sid=1"[..].into())]);
        // Same credentials, other query and other unforwarded headers: same key.
        let same = of(
            b"GET /ws?t=2 HTTP/1.1\r\nHost: other\r\ncookie: sid=1\r\nUser-Agent: y\r\n\r\n",
            0,
        );
        assert_eq!(a.key, same.key);
        assert_ne!(a.key, of(&request("Cookie: sid=2\r\n"), 0).key);
        assert_ne!(a.key, of(&request("Cookie: sid=1\r\n"), 1).key, "endpoint");
        // A value moved from one header to another is other credentials.
        assert_ne!(
            of(&request("Cookie: x\r\n"), 0).key,
            of(&request("Authorization: x\r\n"), 0).key
        );
        assert_ne!(
            a.key,
            of(&request("Cookie: sid=1\r\nOrigin: https://a\r\n"), 0).key
        );
    }

    #[test]
    fn answers() {
        let admit = parse_answer(
            200,
            br#"{"user": "42", "context": 7, "expires_at": 2000, "attributes": {"plan": "pro", "n": 3}}"#,
        );
        assert_eq!(
            admit,
            ProxyAnswer::Admit(Identity {
                context: 7,
                user: 42.into(),
                expires_at: Some(2000),
                attrs: vec![("n".into(), "3".into()), ("plan".into(), "pro".into())],
            })
        );
        let ProxyAnswer::Admit(id) = parse_answer(204, br#"{"user": 1}"#) else {
            panic!()
        };
        assert_eq!((id.context, id.expires_at), (0, None));
        let ProxyAnswer::Admit(id) = parse_answer(200, br#"{"user": "alice@example.com"}"#) else {
            panic!()
        };
        assert_eq!(id.user.as_str(), Some("alice@example.com"));
        assert!(
            matches!(
                parse_answer(200, br#"{"user": ""}"#),
                ProxyAnswer::Unavailable { ref why, .. } if why.contains("user id is empty")
            ),
            "{:?}",
            parse_answer(200, br#"{"user": ""}"#)
        );
        for bad in [
            &b""[..],
            b"[]",
            br#"{"context": 1}"#,
            br#"{"user": -1}"#,
            br#"{"user": 4294967296}"#,
            br#"{"user": ""}"#,
            br#"{"user": "a\u0001"}"#,
            br#"{"user": 1.5}"#,
            br#"{"user": {}}"#,
            br#"{"user": 1, "expires_at": "soon"}"#,
            br#"{"user": 1, "attributes": []}"#,
        ] {
            assert!(
                matches!(
                    parse_answer(200, bad),
                    ProxyAnswer::Unavailable { busy: false, .. }
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_answer(401, br#"{"reason": "login expired"}"#),
            ProxyAnswer::Refuse {
                status: 401,
                reason: "login expired".into()
            }
        );
        assert_eq!(
            parse_answer(403, b"banned\r\nX-Injected: 1\r\n"),
            ProxyAnswer::Refuse {
                status: 403,
                reason: "banned".into()
            }
        );
        let ProxyAnswer::Refuse { reason, .. } = parse_answer(403, &[b'a'; 1000]) else {
            panic!()
        };
        assert_eq!(reason.len(), MAX_REASON_BYTES);
        for empty in [&b""[..], b"{}", br#"{"reason": 3}"#] {
            let ProxyAnswer::Refuse { reason, .. } = parse_answer(401, empty) else {
                panic!()
            };
            assert_eq!(&*reason, "refused by the application");
        }
        for status in [500, 502, 404, 302, 429] {
            assert!(matches!(
                parse_answer(status, b"{}"),
                ProxyAnswer::Unavailable { .. }
            ));
        }
    }

    fn id(user: u32, expires_at: Option<u64>) -> Identity {
        Identity {
            context: 1,
            user: user.into(),
            expires_at,
            attrs: Vec::new(),
        }
    }

    #[test]
    fn cache_keeps_answers_for_their_time_and_is_bounded() {
        let mut c = AnswerCache::new(1_000, 3);
        c.put([1; 32], id(1, None), 0);
        assert_eq!(c.get(&[1; 32], 999), Some(id(1, None)));
        assert_eq!(c.get(&[1; 32], 1_000), None, "expired");
        assert!(c.is_empty());
        // An answer's expires_at cuts its time short; one already expired is not kept.
        c.put([2; 32], id(2, Some(1)), 500);
        assert_eq!(c.get(&[2; 32], 999), Some(id(2, Some(1))));
        assert_eq!(c.get(&[2; 32], 1_000), None, "expires_at (s) came first");
        c.put([2; 32], id(2, Some(0)), 500);
        assert!(c.is_empty());
        // Bounded: the oldest go first.
        for k in 0..10u8 {
            c.put([k; 32], id(k as u32, None), 10_000 + k as u64);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(&[9; 32], 10_100), Some(id(9, None)));
        assert_eq!(c.get(&[6; 32], 10_100), None);
        // The same key again: one entry, its new time, and the order stays bounded.
        for t in 0..100 {
            c.put([9; 32], id(9, None), 20_000 + t);
        }
        assert_eq!(c.len(), 1, "the others expired");
        assert!(c.order.len() <= 6);
        assert_eq!(c.get(&[9; 32], 21_050), Some(id(9, None)));
        // A ttl of 0 caches nothing.
        let mut off = AnswerCache::new(0, 10);
        off.put([1; 32], id(1, None), 0);
        assert!(off.is_empty());
    }

    /// An `auth = "proxy"` endpoint's upgrade and polling request are decided but for the
    /// user: parked with what to ask; Origin and framing are checked first as for sessions.
    #[test]
    fn proxy_endpoints_park_their_requests() {
        use crate::config::Config;
        use crate::service::plan::PendingPlan;
        use crate::service::session::SessionKey;
        use crate::service::upgrade::{Decision, SessionCheck, UpgradePolicy};
        let cfg = Config::from_toml(
            "[proxy]\nurl = \"http://127.0.0.1:1/a\"\n[[endpoints]]\npath = \"/socket.io/\"\n\
             kind = \"socketio\"\nauth = \"proxy\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n\
             auth = \"proxy\"\n",
        )
        .unwrap();
        let p = UpgradePolicy::new(cfg).unwrap();
        let key = SessionKey::random();
        let revoked = HashMap::new();
        let check = SessionCheck {
            key: &key,
            now: 1_000,
            revoked: &revoked,
            jwks: None,
        };
        let ws = b"GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: sid=1\r\n\r\n";
        match p.decide(ws, &check) {
            Decision::Proxy(pending) => {
                assert_eq!(&*pending.request.uri, "/ws?x=1");
                assert_eq!(pending.request.headers.len(), 1);
                let PendingPlan::Upgrade(plan) = pending.plan else {
                    panic!("an upgrade")
                };
                assert!(plan.auth.is_none());
                assert_eq!(plan.endpoint, 1);
            }
            _ => panic!("expected a parked upgrade"),
        }
        let evil = String::from_utf8_lossy(ws).replace("Cookie", "Origin: https://evil\r\nCookie");
        assert!(matches!(
            p.decide(evil.as_bytes(), &check),
            Decision::Refuse(_)
        ));
        let poll =
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\nCookie: sid=1\r\n\r\n";
        match p.decide(poll, &check) {
            Decision::Proxy(pending) => {
                assert!(matches!(pending.plan, PendingPlan::Poll(_)));
                assert_eq!(pending.request.method.as_ref(), "GET");
            }
            _ => panic!("expected a parked polling request"),
        }
    }
}

//! The decision on a complete HTTP request head: open a WebSocket, or answer with a status.
//! Pure over the request bytes and the configuration (no I/O), so it is tested directly.
use super::conn::UpgradePlan;
use super::refusal::Refusal;
use crate::config::{Config, EndpointAuth, EndpointKind};
use crate::protocol::deflate::{self, DeflateConfig};
use crate::protocol::handshake::{self, HandshakeLimits, Request};
use crate::service::cascade::Cascade;
use crate::service::session::{SessionId, SessionKey, SocketAuth};
use std::collections::HashMap;

pub enum Decision {
    /// The request head is not complete yet.
    NeedMore,
    /// A valid upgrade; bytes after the head are in `leftover`.
    Upgrade(Box<UpgradePlan>),
    /// Answer with the refusal's status and one-line reason, then close.
    Refuse(Refusal),
}

/// What the accepting core knows when it checks a session.
pub struct SessionCheck<'a> {
    pub key: &'a SessionKey,
    /// Unix seconds.
    pub now: u64,
    pub revoked: &'a HashMap<SessionId, u64>,
}

/// Engine-side view of the configuration used at upgrade time (replaced whole on reload).
pub struct UpgradePolicy {
    pub config: Config,
    pub handshake: HandshakeLimits,
    pub deflate: DeflateConfig,
    pub cascade: Cascade,
}

impl UpgradePolicy {
    pub fn new(config: Config) -> Result<UpgradePolicy, String> {
        let handshake = HandshakeLimits {
            max_header_bytes: config.limits.max_header_bytes,
            max_headers: config.limits.max_headers,
        };
        let deflate = DeflateConfig {
            enabled: config.compression.enabled,
            min_compress_bytes: config.compression.min_bytes,
            server_max_window_bits: config.compression.server_max_window_bits,
            allow_no_context_takeover: true,
        };
        let cascade = Cascade::compile(&config.websockets)?;
        Ok(UpgradePolicy {
            config,
            handshake,
            deflate,
            cascade,
        })
    }

    /// Decide on the bytes received so far. Checks in the order of the product brief:
    /// well-formed upgrade, Origin, session (known, live, unrevoked), secret cookie, cascade.
    /// (Admission limits are the shard's: they need its counters.)
    pub fn decide(&self, buf: &[u8], sessions: &SessionCheck<'_>) -> Decision {
        let req = match handshake::parse_request(buf, &self.handshake) {
            Ok(Some(req)) => req,
            Ok(None) => return Decision::NeedMore,
            Err(e) => return Decision::Refuse(Refusal::Protocol(e)),
        };
        let Some((endpoint, ep)) = self.config.endpoint_for(req.path) else {
            return Decision::Refuse(Refusal::NotFound);
        };
        let upgrade = match handshake::validate_upgrade(&req) {
            Ok(u) => u,
            Err(e) => return Decision::Refuse(Refusal::Protocol(e)),
        };
        if !self.origin_allowed(upgrade.origin, &req) {
            return Decision::Refuse(Refusal::Origin);
        }
        let auth = match ep.auth {
            EndpointAuth::None => None,
            EndpointAuth::Session => {
                let Some(id) = handshake::query_param(req.query, "session") else {
                    return Decision::Refuse(Refusal::MissingSession);
                };
                let secret = handshake::cookie(&req, &self.config.security.cookie_name);
                match sessions.key.verify(id, secret, sessions.now, |id| {
                    sessions.revoked.contains_key(id)
                }) {
                    Ok((id, s)) => Some(SocketAuth {
                        session: id,
                        context: s.context,
                        user: s.user,
                        expires_at: s.expires_at,
                    }),
                    Err(e) => return Decision::Refuse(Refusal::Session(e)),
                }
            }
        };
        if let Some(a) = &auth {
            if !self.cascade.enabled(a.context, a.user) {
                return Decision::Refuse(Refusal::Disabled);
            }
        }
        if ep.kind == EndpointKind::Socketio {
            return Decision::Refuse(Refusal::NotImplemented);
        }
        let deflate = match upgrade.deflate_offer {
            Some(offer) if self.deflate.enabled => deflate::negotiate(offer, &self.deflate),
            _ => None,
        };
        // A user's sockets live on the core owning (context, user). Echo sockets have no user:
        // an optional `key` parameter places them (tests, load); otherwise they stay put.
        let shard_key = match &auth {
            Some(a) => Some(user_key(a.context, a.user)),
            None => handshake::query_param(req.query, "key").map(hash_key),
        };
        Decision::Upgrade(Box::new(UpgradePlan {
            endpoint: endpoint as u8,
            shard_key,
            ws_key: upgrade.key.to_string(),
            deflate,
            leftover: buf[req.head_len..].to_vec(),
            auth,
            path: req.path.into(),
            query: req.query.into(),
        }))
    }

    /// Cross-site upgrades are refused: an `Origin` must be in the allow-list (or `"*"`), or,
    /// with an empty list, name the same host the request was sent to. Requests without an
    /// `Origin` (non-browser clients) pass.
    fn origin_allowed(&self, origin: Option<&str>, req: &Request<'_>) -> bool {
        let Some(origin) = origin else { return true };
        let allowed = &self.config.security.allowed_origins;
        if allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        if !allowed.is_empty() {
            return false;
        }
        let host = req.headers.get_str("host").unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
    }
}

/// The sharding key of a user.
pub fn user_key(context: u32, user: u32) -> u64 {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&context.to_be_bytes());
    k[4..].copy_from_slice(&user.to_be_bytes());
    hash_bytes(&k)
}

/// Stable 64-bit hash (FNV-1a) of a sharding key: the same on every core and every node.
pub fn hash_key(key: &str) -> u64 {
    hash_bytes(key.as_bytes())
}

fn hash_bytes(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The core that owns a key.
pub fn owner_core(shard_key: u64, cores: usize) -> usize {
    // Fold the high bits in so that keys differing only there still spread.
    ((shard_key ^ (shard_key >> 32)) % cores as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::session::SessionError;

    struct Fixture {
        key: SessionKey,
        revoked: HashMap<SessionId, u64>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                key: SessionKey::random(),
                revoked: HashMap::new(),
            }
        }
        fn decide(&self, p: &UpgradePolicy, buf: &[u8]) -> Decision {
            p.decide(
                buf,
                &SessionCheck {
                    key: &self.key,
                    now: 1_000,
                    revoked: &self.revoked,
                },
            )
        }
        fn status(&self, p: &UpgradePolicy, buf: &[u8]) -> u16 {
            match self.decide(p, buf) {
                Decision::Refuse(r) => r.status(),
                Decision::Upgrade(_) => 101,
                Decision::NeedMore => 0,
            }
        }
    }

    fn policy(toml: &str) -> UpgradePolicy {
        UpgradePolicy::new(Config::from_toml(toml).unwrap()).unwrap()
    }

    const ECHO: &str = "[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\nauth = \"none\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n";

    fn req(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn echo_upgrade_keeps_leftover_and_key() {
        let f = Fixture::new();
        let p = policy(ECHO);
        let mut r = req("/echo?key=abc", "");
        r.extend_from_slice(b"\x81\x80");
        match f.decide(&p, &r) {
            Decision::Upgrade(plan) => {
                assert_eq!(plan.leftover, b"\x81\x80");
                assert_eq!(plan.shard_key, Some(hash_key("abc")));
                assert_eq!(plan.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
                assert!(plan.auth.is_none());
                assert_eq!(&*plan.path, "/echo");
                assert_eq!(&*plan.query, "key=abc");
            }
            _ => panic!("expected upgrade"),
        }
        assert_eq!(f.status(&p, &r[..20]), 0);
    }

    #[test]
    fn refusals() {
        let f = Fixture::new();
        let p = policy(ECHO);
        assert_eq!(f.status(&p, &req("/nope", "")), 404);
        assert_eq!(f.status(&p, &req("/ws", "")), 401);
        assert_eq!(f.status(&p, &req("/ws?session=x", "")), 401);
        assert_eq!(
            f.status(&p, &req("/echo", "Origin: https://evil.example\r\n")),
            403
        );
        assert_eq!(
            f.status(&p, &req("/echo", "Origin: https://example.org\r\n")),
            101
        );
        assert_eq!(f.status(&p, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"), 426);
        assert_eq!(f.status(&p, b"BLAH\r\n\r\n"), 400);
    }

    #[test]
    fn session_upgrades_in_the_briefs_order() {
        let mut f = Fixture::new();
        let p = policy(&format!(
            "[websockets]\ncontexts = {{ \"9\" = false }}\n{ECHO}"
        ));
        let (id, secret) = f.key.mint(1, 42, 2_000);
        let ok = req(
            &format!("/ws?session={}", id.to_text()),
            &format!("Cookie: a=b; ringwire-secret={secret}\r\n"),
        );
        match f.decide(&p, &ok) {
            Decision::Upgrade(plan) => {
                let a = plan.auth.unwrap();
                assert_eq!((a.context, a.user, a.session), (1, 42, id));
                assert_eq!(plan.shard_key, Some(user_key(1, 42)));
            }
            _ => panic!("expected upgrade"),
        }
        let wrong = req(
            &format!("/ws?session={}", id.to_text()),
            "Cookie: ringwire-secret=nope\r\n",
        );
        assert!(matches!(
            f.decide(&p, &wrong),
            Decision::Refuse(Refusal::Session(SessionError::WrongSecret))
        ));
        // Origin is checked before the session.
        let evil = req(
            &format!("/ws?session={}", id.to_text()),
            "Origin: https://evil.example\r\n",
        );
        assert!(matches!(
            f.decide(&p, &evil),
            Decision::Refuse(Refusal::Origin)
        ));
        f.revoked.insert(id, 2_000);
        assert!(matches!(
            f.decide(&p, &ok),
            Decision::Refuse(Refusal::Session(SessionError::Revoked))
        ));
        let (id9, secret9) = f.key.mint(9, 1, 2_000);
        let disabled = req(
            &format!("/ws?session={}", id9.to_text()),
            &format!("Cookie: ringwire-secret={secret9}\r\n"),
        );
        assert!(matches!(
            f.decide(&p, &disabled),
            Decision::Refuse(Refusal::Disabled)
        ));
    }

    #[test]
    fn owner_spreads_keys() {
        let mut counts = [0usize; 2];
        for i in 0..1000 {
            counts[owner_core(user_key(1, i), 2)] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }
}

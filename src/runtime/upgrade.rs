//! The decision on a complete HTTP request head: open a WebSocket, or answer with a status.
//! Pure over the request bytes and the configuration (no I/O), so it is tested directly.
use super::conn::UpgradePlan;
use crate::config::{Config, EndpointAuth};
use crate::protocol::deflate::{self, DeflateConfig};
use crate::protocol::handshake::{self, HandshakeLimits, Request};

pub enum Decision {
    /// The request head is not complete yet.
    NeedMore,
    /// A valid upgrade; bytes after the head are in `leftover`.
    Upgrade(UpgradePlan),
    /// Answer with this status, extra headers and one-line reason, then close.
    Respond {
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        reason: &'static str,
    },
}

fn respond(status: u16, reason: &'static str) -> Decision {
    Decision::Respond {
        status,
        headers: &[],
        reason,
    }
}

/// Engine-side view of the configuration used at upgrade time.
pub struct UpgradePolicy {
    pub config: Config,
    pub handshake: HandshakeLimits,
    pub deflate: DeflateConfig,
}

impl UpgradePolicy {
    pub fn new(config: Config) -> UpgradePolicy {
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
        UpgradePolicy {
            config,
            handshake,
            deflate,
        }
    }

    /// Decide on the bytes received so far.
    pub fn decide(&self, buf: &[u8]) -> Decision {
        let req = match handshake::parse_request(buf, &self.handshake) {
            Ok(Some(req)) => req,
            Ok(None) => return Decision::NeedMore,
            Err(e) => {
                return Decision::Respond {
                    status: e.http_status(),
                    headers: e.extra_headers(),
                    reason: e.reason(),
                }
            }
        };
        let Some((endpoint, ep)) = self.config.endpoint_for(req.path) else {
            return respond(404, "no WebSocket endpoint at this path");
        };
        let upgrade = match handshake::validate_upgrade(&req) {
            Ok(u) => u,
            Err(e) => {
                return Decision::Respond {
                    status: e.http_status(),
                    headers: e.extra_headers(),
                    reason: e.reason(),
                }
            }
        };
        if !self.origin_allowed(upgrade.origin, &req) {
            return respond(403, "origin not allowed");
        }
        if ep.auth == EndpointAuth::Session {
            if handshake::query_param(req.query, "session").is_none() {
                return respond(401, "missing session parameter");
            }
            // Sessions are minted by the admin API (not yet available in this build).
            return respond(401, "unknown session");
        }
        let deflate = match upgrade.deflate_offer {
            Some(offer) if self.deflate.enabled => deflate::negotiate(offer, &self.deflate),
            _ => None,
        };
        // Echo sockets have no user: an optional `key` parameter places them (tests, load).
        let shard_key = handshake::query_param(req.query, "key").map(hash_key);
        Decision::Upgrade(UpgradePlan {
            endpoint: endpoint as u8,
            shard_key,
            ws_key: upgrade.key.to_string(),
            deflate,
            leftover: buf[req.head_len..].to_vec(),
        })
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

/// Stable 64-bit hash (FNV-1a) of a sharding key: the same on every core and every node.
pub fn hash_key(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
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

    fn policy(toml: &str) -> UpgradePolicy {
        UpgradePolicy::new(Config::from_toml(toml).unwrap())
    }

    const ECHO: &str = "[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\nauth = \"none\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n";

    fn req(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Respond { status, .. } => status,
            Decision::Upgrade(_) => 101,
            Decision::NeedMore => 0,
        }
    }

    #[test]
    fn echo_upgrade_keeps_leftover_and_key() {
        let p = policy(ECHO);
        let mut r = req("/echo?key=abc", "");
        r.extend_from_slice(b"\x81\x80");
        match p.decide(&r) {
            Decision::Upgrade(plan) => {
                assert_eq!(plan.leftover, b"\x81\x80");
                assert_eq!(plan.shard_key, Some(hash_key("abc")));
                assert_eq!(plan.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
            }
            _ => panic!("expected upgrade"),
        }
        assert_eq!(status(p.decide(&r[..20])), 0);
    }

    #[test]
    fn refusals() {
        let p = policy(ECHO);
        assert_eq!(status(p.decide(&req("/nope", ""))), 404);
        assert_eq!(status(p.decide(&req("/ws", ""))), 401);
        assert_eq!(status(p.decide(&req("/ws?session=x", ""))), 401);
        assert_eq!(
            status(p.decide(&req("/echo", "Origin: https://evil.example\r\n"))),
            403
        );
        assert_eq!(
            status(p.decide(&req("/echo", "Origin: https://example.org\r\n"))),
            101
        );
        assert_eq!(
            status(p.decide(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")),
            426
        );
        assert_eq!(status(p.decide(b"BLAH\r\n\r\n")), 400);
    }

    #[test]
    fn origin_allow_list() {
        let p = policy(&format!(
            "[security]\nallowed_origins = [\"https://app.example\"]\n{ECHO}"
        ));
        assert_eq!(
            status(p.decide(&req("/echo", "Origin: https://app.example\r\n"))),
            101
        );
        assert_eq!(
            status(p.decide(&req("/echo", "Origin: https://example.org\r\n"))),
            403
        );
    }

    #[test]
    fn owner_spreads_keys() {
        let mut counts = [0usize; 2];
        for i in 0..1000 {
            counts[owner_core(hash_key(&format!("user{i}")), 2)] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }
}

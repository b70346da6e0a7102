//! The per-connection parameters a worker hands to all of its connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::cli::{url_with_session, Protocol, Scenario, Transport};
use crate::ipc::SessionCred;

/// Per-connection parameters shared by all connections of a worker.
pub struct ConnParams {
    /// Where to connect, before the `session` parameter (Socket.IO: `EIO` and
    /// `transport` included).
    pub url: String,
    pub protocol: Protocol,
    pub transport: Transport,
    /// Engine.IO version (Socket.IO only).
    pub eio: u8,
    pub target: SocketAddr,
    pub source_addrs: Vec<IpAddr>,
    pub connect_timeout: Duration,
    pub scenario: Scenario,
    pub message_bytes: usize,
    pub interval: Duration,
    pub echo_timeout: Duration,
    /// `wss://`: the TLS client.
    pub tls: Option<crate::client::tls::Tls>,
    /// `--origin`: the Origin header of every WebSocket handshake.
    pub origin: Option<String>,
    /// `--header`: more headers of every WebSocket handshake.
    pub headers: Vec<(String, String)>,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// `--auth session`: the sessions by user.
    pub sessions: Option<Sessions>,
    /// How connections reconnect after a churn close or a storm drop.
    pub reconnect: ReconnectPolicy,
    /// `--recover`: resume from the last position, reconnect after a drop too.
    pub recover: bool,
}

/// Session credentials of a worker's users.
pub struct Sessions {
    pub users: u64,
    pub by_user: HashMap<u64, SessionCred>,
}

impl ConnParams {
    /// The URL of connection `id` (`session=` added with --auth session) and the value
    /// of its Cookie header.
    pub fn url_and_cookie(&self, id: u64) -> Result<(String, Option<&str>), String> {
        match &self.sessions {
            None => Ok((self.url.clone(), None)),
            Some(s) => {
                let Some(cred) = s.by_user.get(&s.user_of(id)) else {
                    return Err("no_session".to_string());
                };
                Ok((
                    url_with_session(&self.url, &cred.session),
                    Some(cred.cookie.as_str()),
                ))
            }
        }
    }

    /// The source address of connection `id` (round robin), if any.
    pub fn source_of(&self, id: u64) -> Option<IpAddr> {
        match self.source_addrs.len() {
            0 => None,
            n => Some(self.source_addrs[(id % n as u64) as usize]),
        }
    }
}

impl Sessions {
    pub fn new(users: u64, creds: Vec<SessionCred>) -> Self {
        Sessions {
            users: users.max(1),
            by_user: creds.into_iter().map(|c| (c.user, c)).collect(),
        }
    }

    /// The user connection `id` belongs to.
    pub fn user_of(&self, id: u64) -> u64 {
        id % self.users + 1
    }
}

/// How long a single send may block before the connection is given up.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful close may take when stopping.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnect behaviour (churn and storm scenarios).
#[derive(Debug, Clone, Copy)]
pub struct ReconnectPolicy {
    /// Storm: give up this long after the drop.
    pub storm_timeout: Duration,
    /// Longest single wait between two attempts.
    pub max_wait: Duration,
    /// Exponential backoff (socket.io-client): base delay and cap.
    pub delay: Duration,
    pub delay_max: Duration,
}

impl ReconnectPolicy {
    /// The wait after a failed attempt: the server's `Retry-After: S` as S + random(0..S),
    /// otherwise socket.io-client's backoff (`delay * 2^failures`, +-50 % jitter, capped at
    /// `delay_max`); never more than `max_wait`. `failures` counts the earlier failures of
    /// this reconnect, `r` is uniform in [0, 1). Returns the wait and whether it followed
    /// `Retry-After`.
    pub fn wait(&self, retry_after: Option<u64>, failures: u32, r: f64) -> (Duration, bool) {
        let (wait, honoured) = match retry_after {
            Some(s) if s > 0 => (Duration::from_secs_f64(s as f64 * (1.0 + r)), true),
            _ => {
                // socket.io-client (engine.io-client's Backoff): jitter 0.5, factor 2.
                let base = self.delay.as_secs_f64() * 2f64.powi(failures.min(30) as i32);
                let deviation = (r * 0.5 * base * 1000.0).floor() / 1000.0;
                let secs = if ((r * 10.0).floor() as u64) & 1 == 0 {
                    base - deviation
                } else {
                    base + deviation
                };
                (
                    Duration::from_secs_f64(secs.min(self.delay_max.as_secs_f64()).max(0.0)),
                    false,
                )
            }
        };
        (wait.min(self.max_wait), honoured)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(max_wait_ms: u64) -> ReconnectPolicy {
        ReconnectPolicy {
            storm_timeout: Duration::from_secs(60),
            max_wait: Duration::from_millis(max_wait_ms),
            delay: Duration::from_secs(1),
            delay_max: Duration::from_secs(5),
        }
    }

    #[test]
    fn reconnect_waits() {
        let p = policy(30_000);
        let ms = Duration::from_millis;
        // Retry-After: S -> S + random(0..S), capped by the max wait.
        assert_eq!(p.wait(Some(1), 0, 0.0), (ms(1000), true));
        assert_eq!(p.wait(Some(1), 5, 0.5), (ms(1500), true));
        assert_eq!(p.wait(Some(5), 0, 0.999).0, ms(9995));
        assert_eq!(p.wait(Some(100), 0, 0.9), (ms(30_000), true));
        // Otherwise socket.io-client's backoff: 1 s * 2^failures +-50 %, at most 5 s.
        assert_eq!(p.wait(None, 0, 0.0), (ms(1000), false));
        assert_eq!(p.wait(None, 0, 0.13), (ms(1065), false));
        assert_eq!(p.wait(Some(0), 1, 0.5), (ms(2500), false));
        for r in [0.0, 0.13, 0.25, 0.5, 0.77, 0.999] {
            let w = p.wait(None, 0, r).0;
            assert!(w >= ms(500) && w <= ms(1500), "{w:?}");
            let w = p.wait(None, 1, r).0;
            assert!(w >= ms(1000) && w <= ms(3000), "{w:?}");
            assert_eq!(p.wait(None, 40, r).0, ms(5000));
            assert!(policy(200).wait(None, 3, r).0 <= ms(200));
        }
    }
}

//! The per-connection parameters a worker hands to all of its connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cli::{url_with_session, Protocol, Scenario, Transport};
use crate::client::ReconnectPolicy;
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
    pub ws_config: WebSocketConfig,
    /// `--auth session`: the sessions by user.
    pub sessions: Option<Sessions>,
    /// How connections reconnect after a churn close or a storm drop.
    pub reconnect: ReconnectPolicy,
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

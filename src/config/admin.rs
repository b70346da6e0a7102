//! `[admin]`: the admin API listener, its bearer token and the bounds on its connections.
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

/// Shortest `admin.token` accepted on a listener that is not loopback, in bytes. 16 random
/// characters (e.g. `openssl rand -hex 16` gives 32) are out of reach of guessing over the
/// network; anything shorter is more likely a placeholder or a template variable that expanded
/// to almost nothing. On a loopback listener, where a token is optional, a shorter (never an
/// empty) token is accepted with a warning ([`super::Config::warnings`]).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// Longest `admin.token` accepted (it travels in a request header).
pub const MAX_ADMIN_TOKEN_BYTES: usize = 1024;

/// `[admin]`: the admin HTTP API listener (control plane).
///
/// The listener serves few clients (the application's push clients, monitoring), so every
/// connection is bounded: a request head must arrive within `header_read_timeout_ms`, a
/// keep-alive connection may sit idle for `idle_timeout_ms`, a request (body and handling) may
/// take `request_timeout_ms`, and at most `max_connections` are open at once. Reaching the
/// cap closes the connection that has waited longest without a request in progress (one that
/// never sent a request first), so a flood of idle or half-sent connections cannot lock out
/// health checks, pushes or a reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token: visible ASCII, at least [`MIN_ADMIN_TOKEN_BYTES`] characters unless
    /// `listen` is loopback (then shorter is a warning). Optional only when `listen` is a
    /// loopback address; when set it is required on every request, loopback or not. An empty
    /// token, or a short one off loopback, is a configuration error, never "no token".
    pub token: Option<String>,
    /// Time a client has to send a complete request head: from the accept for a connection's
    /// first request, from the first byte for the following ones. 5 s: admin clients are
    /// programs on a local network; a head that takes longer is a stalled or hostile client
    /// (slowloris). Reload.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in progress is closed after this long. 60 s:
    /// longer than typical client pools keep an idle connection (set the client's pool idle
    /// timeout below it to avoid reusing a connection the server is closing). Reload.
    pub idle_timeout_ms: u64,
    /// Longest time from a complete request head to the end of its handling, body upload
    /// included; the connection is closed beyond. 30 s: a push batch of 10,000 takes
    /// milliseconds; this only cuts a body trickled byte by byte. Reload.
    pub request_timeout_ms: u64,
    /// Admin connections open at once. 256: a few application servers with connection pools
    /// plus monitoring, far below any descriptor limit (at start it must be at most half of
    /// RLIMIT_NOFILE, so the process keeps descriptors for reloads, certificates and the
    /// webhook). Restart.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8081".parse().expect("valid literal"),
            token: None,
            header_read_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            max_connections: 256,
        }
    }
}

impl AdminConfig {
    /// Token and listener checks; messages name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.token {
            None if !self.listen.ip().is_loopback() => {
                return Err(ConfigError(format!(
                    "admin.listen = {} is not a loopback address: admin.token is mandatory \
                     (at least {MIN_ADMIN_TOKEN_BYTES} characters, e.g. `openssl rand -hex 32`)",
                    self.listen
                )))
            }
            None => {}
            Some(t) if t.is_empty() => {
                return Err(ConfigError(format!(
                    "admin.token is empty: set a token of at least {MIN_ADMIN_TOKEN_BYTES} \
                     characters (e.g. `openssl rand -hex 32`), or remove the key to run without \
                     one (loopback listen only); an empty token never disables authentication"
                )))
            }
            Some(t) if t.len() < MIN_ADMIN_TOKEN_BYTES && !self.listen.ip().is_loopback() => {
                return Err(ConfigError(format!(
                    "admin.token is {} bytes: at least {MIN_ADMIN_TOKEN_BYTES} are required \
                     when admin.listen ({}) is not loopback (e.g. `openssl rand -hex 32`)",
                    t.len(),
                    self.listen
                )))
            }
            Some(t) if t.len() > MAX_ADMIN_TOKEN_BYTES => {
                return Err(ConfigError(format!(
                    "admin.token is {} bytes: at most {MAX_ADMIN_TOKEN_BYTES}",
                    t.len()
                )))
            }
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError(
                    "admin.token must be visible ASCII without spaces (it is sent as \
                     `Authorization: Bearer <token>`)"
                        .into(),
                ))
            }
            Some(_) => {}
        }
        if !(1..=600_000).contains(&self.header_read_timeout_ms) {
            return Err(ConfigError(
                "admin.header_read_timeout_ms must be between 1 and 600000".into(),
            ));
        }
        if !(1..=3_600_000).contains(&self.idle_timeout_ms) {
            return Err(ConfigError(
                "admin.idle_timeout_ms must be between 1 and 3600000".into(),
            ));
        }
        if !(1..=600_000).contains(&self.request_timeout_ms) {
            return Err(ConfigError(
                "admin.request_timeout_ms must be between 1 and 600000".into(),
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(ConfigError(
                "admin.max_connections must be between 1 and 65536".into(),
            ));
        }
        Ok(())
    }
}

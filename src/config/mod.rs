//! Configuration: one TOML file, every key optional, unknown keys rejected.
//!
//! Every key, its default and the reason for the default is documented here and in
//! `tuning/ringwire.example.toml` (kept in sync by a unit test that parses that file).
#![forbid(unsafe_code)]
mod admin;
mod cluster;
mod history;
pub mod jwt;
mod limits;
pub mod pem;
pub mod proxy;
mod reload;
mod validate;
pub mod webhook;
mod websockets;

pub use admin::{AdminConfig, MAX_ADMIN_TOKEN_BYTES, MIN_ADMIN_TOKEN_BYTES};
pub use cluster::{ClusterConfig, Discovery, PeerConfig};
pub use history::{HistoryConfig, HistoryStore, NatsConfig};
pub use jwt::{JwtAlgorithm, JwtConfig};
pub use limits::{EngineConfig, Limits};
pub use proxy::ProxyConfig;
pub use reload::Reload;
pub use webhook::{WebhookConfig, WebhookEventKind};
pub use websockets::{ContextSet, WebsocketsConfig};

/// Most nodes a cluster may have (this one and its peers): node indexes are one byte in the
/// presence directory and on the wire.
pub const MAX_CLUSTER_NODES: usize = 1024;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub engine: EngineConfig,
    pub compression: CompressionConfig,
    pub admin: AdminConfig,
    pub security: SecurityConfig,
    pub endpoints: Vec<EndpointConfig>,
    pub remote: RemoteConfig,
    pub cluster: Option<ClusterConfig>,
    pub sessions: SessionsConfig,
    pub websockets: WebsocketsConfig,
    pub socketio: SocketIoConfig,
    /// Optional: socket events POSTed to an HTTP endpoint (absent = off).
    pub webhook: Option<WebhookConfig>,
    /// Optional: TLS on the public listener (`wss://`, `https://` polling); absent = plain.
    pub tls: Option<TlsConfig>,
    /// Push history for recovery across reconnects (off unless an endpoint enables it).
    pub history: HistoryConfig,
    pub nats: NatsConfig,
    /// Optional: JSON Web Tokens for `auth = "jwt"` endpoints (absent = no such endpoint).
    pub jwt: Option<JwtConfig>,
    /// Optional: the application's connect proxy for `auth = "proxy"` endpoints.
    pub proxy: Option<ProxyConfig>,
}

/// `[tls]`: certificate chain and private key (PEM) of the public listener. Read at start and
/// on every reload (new connections get the new certificate).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            limits: Limits::default(),
            engine: EngineConfig::default(),
            compression: CompressionConfig::default(),
            admin: AdminConfig::default(),
            security: SecurityConfig::default(),
            endpoints: default_endpoints(),
            remote: RemoteConfig::default(),
            cluster: None,
            sessions: SessionsConfig::default(),
            websockets: WebsocketsConfig::default(),
            socketio: SocketIoConfig::default(),
            webhook: None,
            tls: None,
            history: HistoryConfig::default(),
            nats: NatsConfig::default(),
            jwt: None,
            proxy: None,
        }
    }
}

/// `[server]`: the public listener (upgrades, long-polling).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public listener. Default loopback: exposing a port is an operator decision.
    pub listen: SocketAddr,
    /// Number of data-plane cores (one pinned thread and one io_uring each). 0 = every available core.
    pub cores: usize,
    /// Pin each data-plane thread to its core (default true; disable when sharing a host).
    pub pin_threads: bool,
    /// Graceful drain on SIGTERM: sockets are closed (1001) spread evenly over this many
    /// seconds, so that their reconnects reach the other nodes as a ramp, not a storm.
    pub drain_secs: u64,
    /// The process exits at this deadline even if sockets remain (peers that never finish
    /// their close). Keep it under the supervisor's stop timeout (systemd: 90 s).
    pub drain_deadline_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            cores: 0,
            pin_threads: true,
            drain_secs: 5,
            drain_deadline_secs: 15,
        }
    }
}

/// `[compression]`: permessage-deflate (RFC 7692).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Negotiate permessage-deflate when a client offers it. Default true: browsers offer it and
    /// push payloads (JSON) compress well.
    pub enabled: bool,
    /// Messages shorter than this are sent uncompressed (deflate overhead exceeds the gain).
    pub min_bytes: usize,
    /// Largest LZ77 window the server compresses with (8..=15). 15 = best ratio. With the default
    /// shared compressors this is per core, not per socket.
    pub server_max_window_bits: u8,
    /// Per-socket context takeover. false (default): every offer is answered with
    /// `server_no_context_takeover; client_no_context_takeover`; each core compresses with one
    /// compressor per window size and inflates with an inflater lent for one message, so an idle
    /// compressing socket holds no zlib state (measured: 7.0 KB of RSS per socket after a 2 KB
    /// push vs 5.9 KB for a plain one). true: a socket whose client allows it keeps its own
    /// compressor (about 320 KB at window 15, 200 KB at 9) from its first compressed push, and
    /// its own inflater (about 22 KB) from its first compressed message, until it closes: better
    /// ratio on streams of similar messages (148 vs 423 B for the 2 KB pushes of
    /// benches/deflate/mem.py), at about 320 KB per socket.
    pub context_takeover: bool,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_bytes: 64,
            server_max_window_bits: 15,
            context_takeover: false,
        }
    }
}

/// `[socketio]`: Engine.IO / Socket.IO endpoints (`kind = "socketio"`). The ping interval is
/// `limits.ping_interval_secs`, shared with plain WebSockets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SocketIoConfig {
    /// Announced `pingTimeout`: how long a client waits for the server's ping (v4) or pong (v3)
    /// beyond the interval before it gives up. 20 s is socket.io's own default.
    pub ping_timeout_ms: u64,
    /// Longest a long-polling GET is held with nothing to send before it is answered with a
    /// noop. Under the usual 30-60 s proxy read timeouts.
    pub polling_timeout_ms: u64,
    /// Largest long-polling POST body (413 above); announced to v4 clients as `maxPayload`.
    /// 1 MB is socket.io's default.
    pub max_http_body_bytes: usize,
    /// Packets queued per long-polling session between two GETs; beyond, new packets are
    /// dropped (counted). Bounds memory for a client that stopped polling.
    pub max_buffered_packets: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            ping_timeout_ms: 20_000,
            polling_timeout_ms: 25_000,
            max_http_body_bytes: 1_000_000,
            max_buffered_packets: 1_000,
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Origins allowed to upgrade. Empty = only requests without an `Origin` header or whose
    /// Origin matches the Host (same-site); `"*"` allows any origin.
    pub allowed_origins: Vec<String>,
    /// Name of the cookie carrying the session secret.
    pub cookie_name: String,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            allowed_origins: Vec::new(),
            cookie_name: "ringwire-secret".to_string(),
        }
    }
}

/// What an endpoint does with its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// Engine.IO / Socket.IO.
    Socketio,
    /// Text frames exactly as pushed.
    Raw,
    /// Echoes every frame back (conformance testing). Off by default.
    Echo,
}

impl EndpointKind {
    /// As written in the config.
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Socketio => "socketio",
            EndpointKind::Raw => "raw",
            EndpointKind::Echo => "echo",
        }
    }
}

/// How an endpoint authenticates upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointAuth {
    /// `session` query parameter plus the secret cookie (default).
    #[default]
    Session,
    /// A JSON Web Token verified with the keys of `[jwt]` (required then).
    Jwt,
    /// The application answers for each upgrade, asked off the cores (`[proxy]` required).
    Proxy,
    /// No authentication: allowed for `echo` endpoints only.
    None,
}

/// `[[endpoints]]`: a path prefix and what it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub path: String,
    pub kind: EndpointKind,
    #[serde(default)]
    pub auth: EndpointAuth,
    /// Keep and replay push history for this endpoint's clients (absent: `[history]
    /// enabled`). On a `raw` endpoint each push arrives in an envelope with its position;
    /// on a `socketio` endpoint it turns on connection state recovery.
    #[serde(default)]
    pub history: Option<bool>,
}

fn default_endpoints() -> Vec<EndpointConfig> {
    vec![
        EndpointConfig {
            path: "/socket.io/".into(),
            kind: EndpointKind::Socketio,
            auth: EndpointAuth::Session,
            history: None,
        },
        EndpointConfig {
            path: "/ws".into(),
            kind: EndpointKind::Raw,
            auth: EndpointAuth::Session,
            history: None,
        },
    ]
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// 64 hex characters: the key that signs session ids. Every node of a cluster must share
    /// it. Absent: a random key per process (sessions end with the process). Restart to change.
    pub key: Option<String>,
    /// Longest session a client may request (`ttl_secs`). 30 days.
    pub max_ttl_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            key: None,
            max_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// `[remote]`: coalescing of messages bound for other cluster nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// When a coalesced push leaves (see [`CoalesceMode`]); default `edges`.
    pub mode: CoalesceMode,
    /// `edges`: the window after a send in which equal pushes are held and merged into one
    /// trailing send. `wait`: how long a remote message waits for an equal one to merge with.
    pub delay_ms: u64,
    /// No remote message waits longer than this.
    pub max_delay_ms: u64,
    /// How often the queues are checked in `wait` mode (`edges` checks on every core tick,
    /// 100 ms).
    pub timer_ms: u64,
    /// Pushes waiting per core per destination node (in `edges` mode an open window counts as
    /// one); beyond, pushes for that node are dropped and counted. 100,000 holds a full
    /// `max_delay_ms` of a heavy push rate.
    pub max_queued_messages: usize,
    /// Bytes (texts and filters) waiting per core per destination node: 64 MiB.
    pub max_queued_bytes: usize,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            mode: CoalesceMode::Edges,
            delay_ms: 1000,
            max_delay_ms: 3000,
            timer_ms: 500,
            max_queued_messages: 100_000,
            max_queued_bytes: 64 << 20,
        }
    }
}

/// `remote.mode`: how a coalesced push for another node is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoalesceMode {
    /// Leading and trailing edge: the first push of a kind leaves at once; equal pushes
    /// within `delay_ms` after a send leave as one more send when that window ends.
    Edges,
    /// Every push waits up to `delay_ms` for an equal one (each merge restarts the wait),
    /// never longer than `max_delay_ms`.
    Wait,
}

/// A configuration that cannot be used, with a message an operator can act on.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parse and validate a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// The endpoint serving `path`: the longest configured prefix that matches.
    pub fn endpoint_for(&self, path: &str) -> Option<(usize, &EndpointConfig)> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(_, ep)| path_matches_prefix(path, &ep.path))
            .max_by_key(|(_, ep)| ep.path.len())
    }

    /// Does endpoint `i` keep and replay push history (its own `history`, else `[history]
    /// enabled`)? Echo endpoints never do (they have no user).
    pub fn endpoint_history(&self, i: usize) -> bool {
        self.endpoints.get(i).is_some_and(|ep| {
            ep.kind != EndpointKind::Echo && ep.history.unwrap_or(self.history.enabled)
        })
    }

    /// Does any endpoint keep history (then every push gets a position)?
    pub fn history_on(&self) -> bool {
        (0..self.endpoints.len()).any(|i| self.endpoint_history(i))
    }
}

/// `/ws` matches `/ws`, `/ws/x` and `/ws?..` but not `/wsx`; `/socket.io/` matches `/socket.io/...`.
pub fn path_matches_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => prefix.ends_with('/') && path == &prefix[..prefix.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.endpoints.len(), 2);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.0.contains("bogus"), "{err}");
        let err = Config::from_toml("[nosuchsection]\n").unwrap_err();
        assert!(err.0.contains("nosuchsection"), "{err}");
    }

    #[test]
    fn history_per_endpoint_with_the_section_as_default() {
        let c = Config::from_toml("[history]\nenabled = true\n").unwrap();
        assert!(c.endpoint_history(0) && c.endpoint_history(1) && c.history_on());
        let c = Config::from_toml(
            "[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nhistory = true\n\
             [[endpoints]]\npath = \"/e\"\nkind = \"echo\"\nauth = \"none\"\n",
        )
        .unwrap();
        assert!(c.endpoint_history(0) && !c.endpoint_history(1));
        assert!(!Config::default().history_on());
        let echo =
            "[[endpoints]]\npath = \"/e\"\nkind = \"echo\"\nauth = \"none\"\nhistory = true\n";
        assert!(Config::from_toml(echo)
            .unwrap_err()
            .0
            .contains("echo has no user"));
        let err = Config::from_toml("[history]\nsize = 0\n").unwrap_err();
        assert!(err.0.contains("history.size"), "{err}");
        let c = Config::from_toml("[history]\nstore = \"nats\"\n[nats]\nurl = \"nats://n:4222\"\n");
        assert_eq!(c.unwrap().history.store, HistoryStore::Nats);
        let err = Config::from_toml("[history]\nstore = \"redis\"\n").unwrap_err();
        assert!(err.0.contains("redis"), "{err}");
    }

    #[test]
    fn remote_mode_defaults_to_edges_and_names_the_choices() {
        assert_eq!(Config::default().remote.mode, CoalesceMode::Edges);
        let c = Config::from_toml("[remote]\nmode = \"wait\"\n").unwrap();
        assert_eq!(c.remote.mode, CoalesceMode::Wait);
        let err = Config::from_toml("[remote]\nmode = \"trailing\"\n").unwrap_err();
        assert!(
            err.0.contains("trailing") && err.0.contains("edges") && err.0.contains("wait"),
            "{err}"
        );
    }

    #[test]
    fn auth_none_only_for_echo() {
        let bad = "[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"none\"\n";
        assert!(Config::from_toml(bad).is_err());
        let good = "[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\nauth = \"none\"\n";
        assert!(Config::from_toml(good).is_ok());
    }

    #[test]
    fn admin_token_mandatory_off_loopback() {
        assert!(Config::from_toml("[admin]\nlisten = \"0.0.0.0:8081\"\n").is_err());
        let good = "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"0123456789abcdef\"\n";
        assert!(Config::from_toml(good).is_ok());
    }

    #[test]
    fn empty_or_short_admin_token_is_an_error() {
        for listen in ["0.0.0.0:8081", "127.0.0.1:8081"] {
            let loopback = listen.starts_with("127.");
            for (token, says) in [
                ("", "empty"),
                ("t", "at least 16"),
                ("0123456789abcde", "at least 16"),
                ("0123456789 abcdef", "visible ASCII"),
                ("0123456789abcdef\\n", "visible ASCII"),
            ] {
                let text = format!("[admin]\nlisten = \"{listen}\"\ntoken = \"{token}\"\n");
                if loopback && says == "at least 16" {
                    // Optional on loopback: a short token is accepted, with a warning.
                    let c = Config::from_toml(&text).expect(&text);
                    assert!(
                        c.warnings().iter().any(|w| w.contains("loopback")),
                        "{text}"
                    );
                    continue;
                }
                let err = Config::from_toml(&text).expect_err(&text);
                assert!(err.0.contains("admin.token"), "{err}");
                assert!(err.0.contains(says), "{token:?}: {err}");
            }
        }
        let good = Config::from_toml("[admin]\ntoken = \"0123456789abcdef\"\n").unwrap();
        assert!(!good.warnings().iter().any(|w| w.contains("admin.token")));
        let long = format!("[admin]\ntoken = \"{}\"\n", "x".repeat(1025));
        assert!(Config::from_toml(&long).is_err());
    }

    #[test]
    fn admin_listener_bounds() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.admin.header_read_timeout_ms, 5_000);
        assert_eq!(c.admin.idle_timeout_ms, 60_000);
        assert_eq!(c.admin.request_timeout_ms, 30_000);
        assert_eq!(c.admin.max_connections, 256);
        for bad in [
            "header_read_timeout_ms = 0",
            "idle_timeout_ms = 0",
            "request_timeout_ms = 0",
            "max_connections = 0",
        ] {
            let err = Config::from_toml(&format!("[admin]\n{bad}\n")).unwrap_err();
            assert!(err.0.contains("admin."), "{bad}: {err}");
        }
        assert!(Config::from_toml("[admin]\nmax_idle = 1\n").is_err());
    }

    #[test]
    fn empty_cluster_peer_id_is_an_error() {
        let key = "0123456789abcdef".repeat(4);
        let text = format!(
            "[sessions]\nkey = \"{key}\"\n[cluster]\nnode_id = \"a\"\nlisten = \"127.0.0.1:9000\"\n\
             ca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             peers = [{{ id = \"\", addr = \"127.0.0.1:9001\" }}]\n"
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert!(err.0.contains("cluster.peers[0].id"), "{err}");
    }

    #[test]
    fn nats_discovery_needs_no_peers_a_dialable_address_and_a_key_safe_id() {
        let key = "0123456789abcdef".repeat(4);
        let cfg = |node: &str, listen: &str, more: &str| {
            format!(
                "[sessions]\nkey = \"{key}\"\n[cluster]\nnode_id = \"{node}\"\nlisten = \"{listen}\"\n\
                 ca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\ndiscovery = \"nats\"\n{more}"
            )
        };
        let ok = Config::from_toml(&cfg("node-1", "127.0.0.1:9000", "")).unwrap();
        let c = ok.cluster.unwrap();
        assert_eq!(c.discovery, Discovery::Nats);
        assert_eq!(c.advertised(), "127.0.0.1:9000".parse().unwrap());
        for (text, want) in [
            (
                cfg(
                    "a",
                    "127.0.0.1:9000",
                    "peers = [{ id = \"b\", addr = \"127.0.0.1:9001\" }]",
                ),
                "cluster.peers must be empty",
            ),
            (cfg("a.b", "127.0.0.1:9000", ""), "cluster.node_id"),
            (cfg("a", "0.0.0.0:9000", ""), "cluster.advertise"),
            (
                cfg("a", "127.0.0.1:9000", "members_bucket = \"x.y\""),
                "cluster.members_bucket",
            ),
            (
                cfg("a", "127.0.0.1:9000", "member_ttl_ms = 10"),
                "member_ttl_ms",
            ),
        ] {
            let err = Config::from_toml(&text).unwrap_err();
            assert!(err.0.contains(want), "{want}: {err}");
        }
        let behind = cfg("a", "0.0.0.0:9000", "advertise = \"10.0.0.5:9000\"");
        assert!(Config::from_toml(&behind).is_ok());
    }

    #[test]
    fn placeholder_sessions_key_is_an_error() {
        for key in [
            "",
            "00",
            &"0".repeat(64),
            &"aA".repeat(32),
            &format!("+f{}", "0f".repeat(31)),
        ] {
            let text = format!("[sessions]\nkey = \"{key}\"\n");
            assert!(Config::from_toml(&text).is_err(), "{key:?}");
        }
        let good = format!("[sessions]\nkey = \"{}\"\n", "0123456789abcdef".repeat(4));
        assert!(Config::from_toml(&good).is_ok());
    }

    #[test]
    fn prefix_matching() {
        assert!(path_matches_prefix("/ws", "/ws"));
        assert!(path_matches_prefix("/ws/a", "/ws"));
        assert!(!path_matches_prefix("/wsx", "/ws"));
        assert!(path_matches_prefix("/socket.io/", "/socket.io/"));
        assert!(path_matches_prefix("/socket.io", "/socket.io/"));
        assert!(path_matches_prefix("/anything", "/"));
        let c = Config::from_toml(
            "[[endpoints]]\npath = \"/\"\nkind = \"echo\"\nauth = \"none\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n",
        )
        .unwrap();
        assert_eq!(c.endpoint_for("/ws").unwrap().1.kind, EndpointKind::Raw);
        assert_eq!(c.endpoint_for("/x").unwrap().1.kind, EndpointKind::Echo);
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../../tuning/ringwire.example.toml");
        let c = Config::from_toml(text).expect("tuning/ringwire.example.toml must be valid");
        let d = Config::default();
        assert_eq!(
            c.limits, d.limits,
            "example file limits must equal the defaults"
        );
        assert_eq!(
            c.engine, d.engine,
            "example file engine section must equal the defaults"
        );
        assert_eq!(
            c.socketio, d.socketio,
            "example file [socketio] must equal the defaults"
        );
        assert_eq!(
            c.remote, d.remote,
            "example file [remote] must equal the defaults"
        );
        assert_eq!(
            (&c.history, &c.nats),
            (&d.history, &d.nats),
            "example file [history] and [nats] must equal the defaults"
        );
        assert_eq!(
            (
                c.admin.listen,
                c.admin.header_read_timeout_ms,
                c.admin.idle_timeout_ms,
                c.admin.request_timeout_ms,
                c.admin.max_connections
            ),
            (
                d.admin.listen,
                d.admin.header_read_timeout_ms,
                d.admin.idle_timeout_ms,
                d.admin.request_timeout_ms,
                d.admin.max_connections
            ),
            "example file [admin] must equal the defaults"
        );
    }
}

//! Command line interface: the user-facing `run` options (top level) and the
//! hidden `worker` subcommand used when the coordinator re-executes itself.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod choices;
mod target;

pub use choices::{choice_name, AuthMode, Protocol, PushMode, Scenario, Transport};
pub use target::{
    parse_source_range, percent_encode, split_url, url_with_param, url_with_session, AdminTarget,
    Target,
};

/// Load tester for ringwire (works against any RFC 6455 WebSocket server).
///
/// Opens many WebSocket connections from several worker processes (each process
/// is limited by RLIMIT_NOFILE), optionally exchanges messages, and prints a
/// report (human table + JSON). Exit code 0 = all thresholds were met,
/// 1 = a threshold was violated (or the hard deadline was hit), 2 = the run
/// could not be performed, 130 = interrupted by Ctrl-C (report still written).
#[derive(Debug, Parser)]
#[command(
    name = "ringwire-loadtest",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "EXAMPLES:\n  \
  # 30,000 idle connections from 2 workers, echo once on every one, server memory per connection\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/echo --connections 30000 --workers 2 \\\n      \
  --scenario hold --echo-check --duration 10 --server-pid $(pidof ringwire)\n\n  \
  # 1,000 connections each echoing 32 bytes every 100 ms for 30 s, fail if p99 > 5 ms\n  \
  ringwire-loadtest --connections 1000 --scenario echo --interval-ms 100 --duration 30 --max-p99-ms 5\n\n  \
  # 20,000 users with one session socket each, 5,000 pushes/s through the admin API for 10 s\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/ws --auth session --scenario push --connections 20000 \\\n      \
  --push-rate 5000 --duration 10 --max-p99-ms 20 --max-missing 0\n\n  \
  # The same over Socket.IO (Engine.IO 4, WebSocket transport), then over HTTP long-polling\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/socket.io/ --protocol socketio --auth session \\\n      \
  --scenario push --connections 2000 --push-rate 1000 --duration 10 --max-missing 0\n  \
  ringwire-loadtest --url http://127.0.0.1:8080/socket.io/ --protocol socketio --transport polling \\\n      \
  --auth session --scenario push --connections 1000 --push-rate 1000 --duration 10 --max-missing 0\n\n  \
  # Churn: 2,000 sockets, 200 graceful close + reconnect per second for 10 s, no failure allowed\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/ws --auth session --scenario churn --connections 2000 \\\n      \
  --churn-per-sec 200 --duration 10 --max-reconnect-failures 0\n\n  \
  # Reconnect storm: 3,000 sockets drop at once and reconnect; all back within 15 s, none gives up\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/ws --auth session --scenario storm --connections 3000 \\\n      \
  --ramp-per-sec 400 --duration 2 --max-storm-secs 15\n\n  \
  # The same storm pushing 1,000/s to a raw endpoint with history: clients resume, none loses a push\n  \
  ringwire-loadtest --url ws://127.0.0.1:8080/ws --auth session --scenario storm --connections 3000 \\\n      \
  --ramp-per-sec 400 --duration 2 --push-rate 1000 --recover --max-missing 0"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: a worker process driven by the coordinator over stdin/stdout (JSON lines).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Target URL: a ws:// or wss:// WebSocket URL. The default is the `/ws` endpoint of
    /// ringwire's default configuration, which needs `--auth session`. With --protocol
    /// socketio: the endpoint base, e.g. ws://127.0.0.1:8080/socket.io/ or
    /// http://127.0.0.1:8080/socket.io/ (either scheme, whatever the transport; wss:// for
    /// the websocket transport over TLS); the tool adds `EIO=<--eio>&transport=<--transport>`
    /// and `session=<id>` to its query.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// [wss://] A PEM file of certificates to trust (e.g. the server's CA or its
    /// self-signed certificate), on top of the system's roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,

    /// The Origin header of every WebSocket handshake (a server may allow only some).
    #[arg(long)]
    pub origin: Option<String>,

    /// One more header of every WebSocket handshake, `'Name: value'` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Wire protocol. `raw`: WebSocket text frames, pushes arrive as sent. `socketio`:
    /// Engine.IO + Socket.IO (ringwire's `socketio` endpoints); needs --auth session. A
    /// connection counts as established once the server confirmed the default namespace
    /// (`40{"sid":..}`); Engine.IO pings are answered (EIO 4) or sent (EIO 3), and a
    /// connection that misses them for pingInterval + pingTimeout is dropped as
    /// `ping_timeout`. Pushes are sent as the event `["lt","<payload>"]` and unwrapped on
    /// receipt. Scenarios hold, push, churn and storm (the server does not echo Socket.IO
    /// events, so `echo` and --echo-check are refused).
    #[arg(long, value_enum, default_value_t = Protocol::Raw)]
    pub protocol: Protocol,

    /// [socketio] Engine.IO transport: `websocket` (default) or `polling` (HTTP/1.1
    /// long-polling; up to 2 sockets per client, counted in the file descriptor plan).
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,

    /// [socketio] Engine.IO protocol version: 4 (default; Socket.IO v3/v4 clients: the
    /// client sends `40` to connect, the server pings) or 3 (Socket.IO v2 clients: the
    /// server connects the default namespace by itself, the client pings every pingInterval).
    #[arg(long, value_parser = clap::value_parser!(u8).range(3..=4))]
    pub eio: Option<u8>,

    /// Number of connections to open in total (split among the workers).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub connections: u64,

    /// Connection attempts per second across all workers (0 = as fast as possible,
    /// limited by --max-inflight-connects).
    #[arg(long, default_value_t = 0.0)]
    pub ramp_per_sec: f64,

    /// Maximum number of connection attempts (TCP connect + WebSocket handshake)
    /// in flight at once across all workers.
    #[arg(long, default_value_t = 512)]
    pub max_inflight_connects: u64,

    /// Comma separated source IPs; every outgoing socket is bound to one of them
    /// (round robin) so ephemeral ports do not run out (~28k per source IP and target).
    #[arg(long, value_delimiter = ',', conflicts_with = "source_range")]
    pub source_addrs: Vec<IpAddr>,

    /// Inclusive IPv4 source range, e.g. 127.0.0.1-127.0.0.20 (same purpose as --source-addrs).
    /// Default for loopback targets: 127.0.0.1 .. 127.0.0.k with k = N / P + 1, P = 3/8 of
    /// the ephemeral port range (10,587 for 32768-60999): the kernel gives connect() the even
    /// half of the range first, and connects past it are slow.
    #[arg(long)]
    pub source_range: Option<String>,

    /// Number of worker processes (default: ceil(N / 15000)); each one holds at most
    /// RLIMIT_NOFILE (hard) minus a small margin sockets.
    #[arg(short = 'w', long)]
    pub workers: Option<u64>,

    /// What the connections do once open.
    #[arg(short = 's', long, value_enum, default_value_t = Scenario::Hold)]
    pub scenario: Scenario,

    /// Seconds to keep running after all connections are up (0 = stop right away). churn:
    /// how long reconnects are started; storm: how long all connections are held before
    /// they are dropped.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,

    /// [echo] Size in bytes of every text message (minimum: the timestamp header).
    #[arg(long, default_value_t = 32)]
    pub message_bytes: usize,

    /// [echo] Milliseconds between two messages on one connection.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,

    /// After the hold period, send one message on EVERY open connection and verify
    /// that each one gets its echo (reports echoes_ok / echoes_failed).
    #[arg(long)]
    pub echo_check: bool,

    /// How long each connection waits for its --echo-check echo.
    #[arg(long, default_value_t = 10_000)]
    pub echo_timeout_ms: u64,

    /// PID of the server; its VmRSS (and the machine's kernel Slab) is sampled before
    /// connecting, when all connections are up, and at the end.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Timeout for TCP connect + WebSocket handshake of one connection.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// Hard limit on the whole run in seconds (0 = automatic: connect budget +
    /// duration + echo check + close, with slack). When hit, the run is stopped and reported.
    #[arg(long, default_value_t = 0.0)]
    pub max_runtime_s: f64,

    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    pub report: PathBuf,

    /// Write an SVG plot (connections over time, latency percentiles if any).
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// No progress bar / periodic status lines (for CI logs).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Threshold: fail (exit 1) if more than N first connection attempts failed (failed
    /// reconnects of churn and storm: --max-reconnect-failures).
    #[arg(long)]
    pub max_connect_errors: Option<u64>,

    /// Threshold: fail (exit 1) if the p99 round-trip latency exceeds X milliseconds.
    #[arg(long)]
    pub max_p99_ms: Option<f64>,

    /// Threshold: fail (exit 1) if fewer than N connections were established
    /// or fewer than N were still open at the end of the hold period.
    #[arg(long)]
    pub min_connected: Option<u64>,

    /// Threshold: fail (exit 1) if more than N connections failed the --echo-check.
    #[arg(long)]
    pub max_echo_failures: Option<u64>,

    /// Threshold: fail (exit 1) if more than N messages are missing at the end
    /// (push: expected deliveries - received after the drain wait; echo: sent - echoed;
    /// with --recover: pushes lost without a recovery marker saying so, in any scenario).
    #[arg(long)]
    pub max_missing: Option<u64>,

    /// How connections authenticate (`session` is required by the push scenario).
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// Base URL of the server's admin API (http:// only).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub admin_url: String,

    /// Bearer token for the admin API (sent as `Authorization: Bearer <token>`).
    #[arg(long, env = "RINGWIRE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// [auth session] Number of simulated users, ids 1..=U (default: --connections).
    /// Connections are spread over users round robin: connection i belongs to user i % U + 1.
    #[arg(long)]
    pub users: Option<u64>,

    /// [auth session] Name the users with strings: user i is `<PREFIX>i` (e.g. `--user-prefix u`
    /// gives "u1", "u2", ...) in the sessions minted and the pushes made, instead of the
    /// number i (ringwire's string user ids).
    #[arg(long, value_name = "PREFIX")]
    pub user_prefix: Option<String>,

    /// [auth session] Context id of the sessions and pushes.
    #[arg(long, default_value_t = 1)]
    pub context: u64,

    /// [auth session] Lifetime of the minted sessions.
    #[arg(long, default_value_t = 3600)]
    pub session_ttl_secs: u64,

    /// [auth session] Admin API requests in flight while minting sessions (one keep-alive
    /// HTTP connection each).
    #[arg(long, default_value_t = 32)]
    pub mint_concurrency: u64,

    /// [push] Pushes per second (fanout mode: fan-out events per second).
    #[arg(long, default_value_t = 1000.0)]
    pub push_rate: f64,

    /// [push] Pushes per POST /v1/push/batch request (1 = use POST /v1/push).
    #[arg(long, default_value_t = 100)]
    pub batch_size: u64,

    /// [push] Whom every push goes to.
    #[arg(long, value_enum, default_value_t = PushMode::RoundRobin)]
    pub push_mode: PushMode,

    /// [push] Admin API requests in flight while pushing (one keep-alive HTTP connection each).
    #[arg(long, default_value_t = 8)]
    pub push_concurrency: u64,

    /// [push] The `path` field of every push (the endpoint whose sockets receive it).
    /// Default: `/ws`, or `/socket.io/*` with --protocol socketio.
    #[arg(long)]
    pub push_path: Option<String>,

    /// [push] Set `"coalesce": true` on every push.
    #[arg(long)]
    pub push_coalesce: bool,

    /// [push] Expect N deliveries per accepted push instead of the `sockets` count of the
    /// admin API's answers. For a cluster: when the clients are connected to another node
    /// than the admin API pushed through, the answer counts only that node's own sockets
    /// (the other nodes it forwarded to are its `remote_nodes`), so give the sockets per
    /// user here (connections / users), e.g. 1.
    #[arg(long)]
    pub expect_per_push: Option<u64>,

    /// [push] After the last push was accepted, wait up to this long for the
    /// expected deliveries before counting the rest as missing.
    #[arg(long, default_value_t = 5_000)]
    pub drain_timeout_ms: u64,

    /// Recovery across reconnects, for raw endpoints with history (ringwire `history =
    /// true`): every client keeps the position (epoch, offset) of the last push it got and
    /// reconnects with `epoch=..&since=..` after a churn close, a storm drop or a drop by
    /// the server (it then reconnects too). Pushes carry the user and a per-user sequence
    /// number, so each client counts missing, duplicated and out-of-order pushes; a gap
    /// after a recovery marker with `recovered: false` counts as acknowledged, not missing.
    /// Scenarios push, churn and storm (churn and storm then push at --push-rate too, storm
    /// until every client is back); needs --auth session and --protocol raw.
    #[arg(long)]
    pub recover: bool,

    /// [churn] Reconnects started per second across all workers, for --duration seconds
    /// once all connections are up. Each one closes an open connection gracefully (close
    /// frame; Socket.IO: `41` then close, polling: the close packet) and connects it again
    /// with the same user and session. Connections are taken round robin.
    #[arg(long, default_value_t = 100.0)]
    pub churn_per_sec: f64,

    /// [storm] A dropped connection gives up when it is not connected again this many
    /// seconds after the drop.
    #[arg(long, default_value_t = 60.0)]
    pub storm_timeout: f64,

    /// [churn, storm] Longest single wait between two reconnect attempts, in seconds: caps
    /// `Retry-After` + jitter as well as the exponential backoff.
    #[arg(long, default_value_t = 30.0)]
    pub storm_max_wait: f64,

    /// [churn, storm] Backoff after a failed reconnect attempt without `Retry-After`
    /// (refused, reset, timeout, other statuses), as socket.io-client's reconnectionDelay:
    /// delay * 2^failures, +-50 % jitter, at most --reconnect-delay-max-ms.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_delay_ms: u64,

    /// [churn, storm] Upper bound of the exponential backoff (socket.io-client's
    /// reconnectionDelayMax).
    #[arg(long, default_value_t = 5000)]
    pub reconnect_delay_max_ms: u64,

    /// Threshold [storm]: fail (exit 1) unless every dropped connection is connected again
    /// within X seconds of the drop.
    #[arg(long)]
    pub max_storm_secs: Option<f64>,

    /// Threshold [storm]: fail (exit 1) if more than N clients gave up (--storm-timeout).
    /// Without it, a single client that gave up fails the run.
    #[arg(long)]
    pub max_gave_up: Option<u64>,

    /// Threshold [churn, storm]: fail (exit 1) if more than N reconnect attempts failed
    /// (in a storm every refused attempt counts, 503s included).
    #[arg(long)]
    pub max_reconnect_failures: Option<u64>,

    /// Threshold [churn, storm]: fail (exit 1) if the p99 connect latency of the reconnects
    /// (TCP connect + upgrade [+ Socket.IO connect]) exceeds X milliseconds.
    #[arg(long)]
    pub max_reconnect_p99_ms: Option<f64>,
}

impl RunArgs {
    /// --transport as given, or its default.
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// The --header arguments as (name, value) pairs.
    pub fn header_pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.headers
            .iter()
            .map(|h| crate::wire::handshake::parse_header_arg(h).map_err(anyhow::Error::msg))
            .collect()
    }

    /// --eio as given, or its default (4).
    pub fn eio(&self) -> u8 {
        self.eio.unwrap_or(4)
    }

    /// --push-path as given, or the default endpoint of the protocol.
    pub fn push_path(&self) -> String {
        self.push_path.clone().unwrap_or_else(|| {
            match self.protocol {
                Protocol::Raw => "/ws",
                Protocol::Socketio => "/socket.io/*",
            }
            .to_string()
        })
    }

    /// Whether the run pushes through the admin API: the push scenario, and churn and
    /// storm with --recover.
    pub fn pushes(&self) -> bool {
        match self.scenario {
            Scenario::Push => true,
            Scenario::Churn | Scenario::Storm => self.recover,
            Scenario::Hold | Scenario::Echo => false,
        }
    }

    /// Sockets one simulated connection may hold at once (long-polling: a GET
    /// connection plus a POST connection).
    pub fn sockets_per_connection(&self) -> u64 {
        match (self.protocol, self.transport()) {
            (Protocol::Socketio, Transport::Polling) => 2,
            _ => 1,
        }
    }

    /// The URL the workers connect to, before the per-connection `session` parameter:
    /// --url itself (raw), or the Socket.IO endpoint with `EIO` and `transport` added
    /// (ws:// for the websocket transport, http:// for polling).
    pub fn connect_url(&self) -> String {
        match self.protocol {
            Protocol::Raw => self.url.clone(),
            Protocol::Socketio => {
                let (tls, rest) = match self.url.strip_prefix("wss://") {
                    Some(rest) => (true, rest),
                    None => (
                        false,
                        self.url
                            .strip_prefix("ws://")
                            .or_else(|| self.url.strip_prefix("http://"))
                            .unwrap_or(&self.url),
                    ),
                };
                let (scheme, transport) = match self.transport() {
                    Transport::Websocket if tls => ("wss://", "websocket"),
                    Transport::Websocket => ("ws://", "websocket"),
                    Transport::Polling => ("http://", "polling"),
                };
                let url = format!("{scheme}{rest}");
                let url = url_with_param(&url, "EIO", &self.eio().to_string());
                url_with_param(&url, "transport", transport)
            }
        }
    }

    /// A short description of the protocol for logs and the report.
    pub fn protocol_label(&self) -> String {
        match self.protocol {
            Protocol::Raw => "raw websocket".to_string(),
            Protocol::Socketio => format!(
                "socket.io over {} (EIO {})",
                match self.transport() {
                    Transport::Websocket => "websocket",
                    Transport::Polling => "polling",
                },
                self.eio()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["ringwire-loadtest"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().run
    }

    #[test]
    fn socketio_urls() {
        let a = args(&["--url", "ws://h:1/socket.io/", "--protocol", "socketio"]);
        assert_eq!(
            a.connect_url(),
            "ws://h:1/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(a.push_path(), "/socket.io/*");
        assert_eq!(a.sockets_per_connection(), 1);
        let a = args(&[
            "--url",
            "ws://h:1/socket.io/",
            "--protocol",
            "socketio",
            "--transport",
            "polling",
            "--eio",
            "3",
        ]);
        let url = a.connect_url();
        assert_eq!(url, "http://h:1/socket.io/?EIO=3&transport=polling");
        assert_eq!(a.sockets_per_connection(), 2);
        assert_eq!(
            split_url(&url_with_session(&url, "s/1")),
            (
                "h:1".to_string(),
                "/socket.io/?EIO=3&transport=polling&session=s%2F1".to_string()
            )
        );
        assert_eq!(split_url("http://h"), ("h".to_string(), "/".to_string()));
        let a = args(&["--url", "ws://h/ws"]);
        assert_eq!(a.connect_url(), "ws://h/ws");
        assert_eq!(a.push_path(), "/ws");
        assert!(Cli::try_parse_from(["x", "--eio", "5"]).is_err());
        assert!(Target::parse_for("http://h:2/socket.io/", Protocol::Socketio).is_ok());
        assert!(Target::parse_for("http://h:2/ws", Protocol::Raw).is_err());
        assert!(Target::parse_for("https://h/", Protocol::Socketio).is_err());
    }
}

//! The values of the choice options (`--scenario`, `--auth`, `--push-mode`,
//! `--protocol`, `--transport`), also carried in the worker spec and the report.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The command line name of a choice (`round-robin`, `storm`, ...), for logs and reports.
pub fn choice_name(choice: impl ValueEnum) -> String {
    choice
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// What every connection does once it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Open all connections and keep them idle (answering pings) for --duration seconds.
    Hold,
    /// Every connection sends a timestamped text message every --interval-ms and
    /// measures the round-trip latency of its echo.
    Echo,
    /// Needs --auth session. After all connections are up, the coordinator pushes
    /// through the admin API (POST /v1/push/batch) at --push-rate for --duration
    /// seconds; every connection measures the end-to-end latency of each push it receives.
    Push,
    /// After all connections are up, connections are closed gracefully and reopened (same
    /// user and session) at --churn-per-sec reconnects per second (total) for --duration
    /// seconds. Reports the reconnects, their connect latency and failures by kind.
    Churn,
    /// Reconnect storm: after all connections are up and held for --duration seconds, every
    /// connection drops its TCP socket abruptly (RST) and reconnects at once. A refusal with
    /// `Retry-After: S` (ringwire: 503 on its upgrade rate limit) waits S + random(0..S)
    /// seconds; other failures back off exponentially with jitter (socket.io-client). Reports
    /// the time until 50/90/99/100 % are back, 503s, retries and clients that gave up.
    Storm,
}

/// How connections authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Plain upgrade to --url.
    None,
    /// Mint one session per user through the admin API (POST /v1/sessions), then upgrade to
    /// `--url?session=<id>` with the header `Cookie: ringwire-secret=<secret>`.
    Session,
}

/// Whom the pushes of the `push` scenario go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// Every push goes to one user, users taken in turn (1, 2, ..., U, 1, ...).
    RoundRobin,
    /// Every push goes to one user chosen at random.
    Random,
    /// Every push goes to ALL users (one push per user, sent in batches of --batch-size);
    /// --push-rate then counts these fan-out events per second.
    Fanout,
}

/// The protocol every connection speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Plain WebSocket text frames (ringwire `raw` and `echo` endpoints, any RFC 6455 server).
    #[default]
    Raw,
    /// Engine.IO v3/v4 + Socket.IO (ringwire `socketio` endpoints), over a WebSocket or
    /// HTTP long-polling (--transport). Connects the default namespace.
    Socketio,
}

/// The Engine.IO transport of `--protocol socketio`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One WebSocket per client (`transport=websocket`), no polling phase before it.
    #[default]
    Websocket,
    /// HTTP/1.1 long-polling (`transport=polling`) with keep-alive: a GET loop on one
    /// connection; a second connection is opened only when a packet must be POSTed while
    /// a GET is held (EIO 3 client pings, the close packet when stopping).
    Polling,
}

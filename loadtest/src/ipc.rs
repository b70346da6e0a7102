//! Coordinator <-> worker protocol: JSON lines.
//!
//! * coordinator -> worker (worker stdin): first line is a [`WorkerSpec`], then
//!   [`Command`]s. EOF on stdin means the coordinator is gone: the worker stops.
//! * worker -> coordinator (worker stdout): [`Event`]s. Worker diagnostics go to stderr.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cli::{Protocol, Scenario, Transport};
use crate::recovery::{Ledger, RecoveryCounts};

/// Credentials of one user's session, handed to the workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCred {
    pub user: u64,
    pub session: String,
    /// Value of the Cookie header (`ringwire-secret=<secret>`).
    pub cookie: String,
}

/// Everything a worker needs to run its share of the connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub index: u64,
    /// Where to connect, before the per-connection `session` parameter (Socket.IO: with
    /// `EIO` and `transport` already in the query).
    pub url: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Socket.IO only.
    #[serde(default)]
    pub transport: Transport,
    /// Socket.IO only: Engine.IO version (3 or 4).
    #[serde(default = "default_eio")]
    pub eio: u8,
    /// Global id of this worker's first connection (ids are global so that source
    /// addresses are assigned round robin across all workers).
    pub first_conn_id: u64,
    pub connections: u64,
    /// Attempts per second for this worker (0 = unlimited).
    pub ramp_per_sec: f64,
    pub max_inflight_connects: u64,
    pub source_addrs: Vec<IpAddr>,
    pub connect_timeout_ms: u64,
    pub scenario: Scenario,
    pub message_bytes: usize,
    pub interval_ms: u64,
    pub echo_timeout_ms: u64,
    /// Failsafe: the worker stops by itself after this many seconds.
    pub max_runtime_s: f64,
    /// `--auth session`: number of users (connection `id` belongs to user `id % users + 1`);
    /// 0 = no authentication.
    #[serde(default)]
    pub users: u64,
    /// `--auth session`: the sessions of the users this worker's connections belong to.
    #[serde(default)]
    pub sessions: Vec<SessionCred>,
    /// Churn scenario: reconnects per second for this worker.
    #[serde(default)]
    pub churn_per_sec: f64,
    /// Storm: a dropped connection gives up this long after the drop.
    #[serde(default)]
    pub storm_timeout_ms: u64,
    /// Churn and storm: longest single wait between two reconnect attempts.
    #[serde(default)]
    pub max_wait_ms: u64,
    /// Churn and storm: exponential backoff base and cap (socket.io-client).
    #[serde(default)]
    pub reconnect_delay_ms: u64,
    #[serde(default)]
    pub reconnect_delay_max_ms: u64,
    /// `--recover`: track every connection's pushes and resume from its position.
    #[serde(default)]
    pub recover: bool,
    /// `--origin`: the Origin header of the WebSocket handshakes.
    #[serde(default)]
    pub origin: Option<String>,
    /// `--header`: more handshake headers, as (name, value).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// `--ca`: a PEM file of certificates to trust for `wss://`.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

fn default_eio() -> u8 {
    4
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Send one message on every open connection and verify its echo.
    EchoCheck,
    /// Close all connections, send the final event and exit.
    Stop,
    /// Churn scenario: start closing and reopening connections at `churn_per_sec`.
    StartChurn,
    /// Churn scenario: stop starting new reconnects (the ones under way finish).
    EndChurn,
    /// Storm scenario: drop every open connection abruptly; they all reconnect.
    Storm,
    /// `--recover`: pushing is over, this is what was sent to every user; the workers
    /// count what their connections should have received.
    Expect { ledger: Ledger },
}

/// Cumulative counters of one worker (sent in every progress event; the
/// coordinator keeps the latest per worker and sums them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Connection attempts started.
    pub attempts: u64,
    /// Successful WebSocket handshakes.
    pub connected: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Failed attempts by kind (refused, timeout, http_503, io_error, ...).
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Currently open connections.
    pub open: u64,
    pub peak_open: u64,
    /// Established connections that ended before we stopped them, by kind.
    pub dropped: u64,
    pub dropped_by_kind: BTreeMap<String, u64>,
    /// Scenario messages sent / echoes received / echoes that did not match.
    pub sent: u64,
    pub received: u64,
    pub mismatches: u64,
    /// Messages the server sent that were not echoes of ours (e.g. pushes).
    pub unsolicited: u64,
    /// Errors while sending on an established connection.
    pub send_errors: u64,
    /// Keepalives: WebSocket pings, Engine.IO pings (EIO 4) or pongs (EIO 3).
    pub pings_received: u64,
    pub echo_check_ok: u64,
    pub echo_check_failed: u64,
    /// Push scenario: pushed messages received (one per socket per push).
    #[serde(default)]
    pub push_received: u64,
    /// Churn and storm: reconnect attempts (after a churn close or a storm drop).
    #[serde(default)]
    pub reconnect_attempts: u64,
    /// Reconnect attempts that succeeded.
    #[serde(default)]
    pub reconnects: u64,
    /// Reconnect attempts that failed, and by kind (http_503, refused, timeout, ...).
    #[serde(default)]
    pub reconnect_failed: u64,
    #[serde(default)]
    pub reconnect_failed_by_kind: BTreeMap<String, u64>,
    /// Attempts made after a failed one (after waiting).
    #[serde(default)]
    pub reconnect_retries: u64,
    /// Waits that followed the server's `Retry-After`, and backoff waits.
    #[serde(default)]
    pub retry_after_waits: u64,
    #[serde(default)]
    pub backoff_waits: u64,
    /// Largest `Retry-After` seen (seconds).
    #[serde(default)]
    pub retry_after_max_s: u64,
    /// Connections between their close/drop and being connected again (gauge).
    #[serde(default)]
    pub reconnecting: u64,
    /// Reconnects given up because the run was stopped.
    #[serde(default)]
    pub reconnect_abandoned: u64,
    /// Churn: reconnects started; ticks that found no open connection to close.
    #[serde(default)]
    pub churn_kicks: u64,
    #[serde(default)]
    pub churn_skipped: u64,
    /// Storm: connections dropped, connected again, given up (--storm-timeout).
    #[serde(default)]
    pub storm_dropped: u64,
    #[serde(default)]
    pub storm_reconnected: u64,
    #[serde(default)]
    pub storm_gave_up: u64,
    /// `--recover`: delivery by per-user sequence number and resumes.
    #[serde(default)]
    pub recovery: RecoveryCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Worker is up; reports its file descriptor limits.
    Hello {
        pid: u32,
        nofile_soft: u64,
        nofile_hard: u64,
    },
    /// Every 250 ms. `lat` holds the latency samples recorded since the last
    /// progress event as (microseconds, count) pairs.
    Progress {
        counters: Counters,
        lat: Vec<(u64, u64)>,
        /// Connect latency (TCP connect + upgrade [+ Socket.IO connect]) of the first
        /// connection attempts that succeeded, µs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        connect_lat: Vec<(u64, u64)>,
        /// The same for reconnects (churn, storm).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reconnect_lat: Vec<(u64, u64)>,
        /// Storm: time from the drop until the connection was connected again, µs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        storm_lat: Vec<(u64, u64)>,
        /// `--recover`: time from a connection's drop until its recovery marker, µs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recover_lat: Vec<(u64, u64)>,
    },
    /// All connection attempts of this worker have finished (ok or failed).
    /// `at_unix_us`: wall clock time when the last attempt finished.
    ConnectDone {
        connected: u64,
        failed: u64,
        at_unix_us: u64,
    },
    /// The echo check finished: `ok` echoes verified, `failed` = established - ok.
    EchoCheckDone { ok: u64, failed: u64 },
    /// Storm: `dropped` open connections were dropped at `at_unix_us` (sent after a
    /// progress event that already counts them as reconnecting).
    StormStarted { dropped: u64, at_unix_us: u64 },
    /// Last event before exit.
    Final {
        counters: Counters,
        /// Peak RSS of the worker process itself.
        self_peak_rss_bytes: Option<u64>,
    },
}

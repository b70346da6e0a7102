//! The final report: its JSON structure (here), the human readable table ([`table`]),
//! the threshold checks ([`thresholds`]) and the SVG plot ([`plot`]).

pub mod cpu;
pub mod plot;
mod table;
mod thresholds;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::{AuthMode, Protocol, PushMode, Scenario, Transport};
use crate::ipc::Counters;
use crate::recovery::RecoveryCounts;
use crate::stats::LatencySummary;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub target: String,
    pub scenario: Scenario,
    pub config: RunConfig,
    pub outcome: Outcome,
    pub connections: ConnectionStats,
    /// From starting the workers until every connection attempt finished.
    pub time_to_connect_all_s: Option<f64>,
    /// Established connections per second over `time_to_connect_all_s`.
    pub connect_rate_per_s: Option<f64>,
    pub messages: MessageStats,
    pub echo_check: Option<EchoCheck>,
    /// `--auth session`: the minted sessions.
    pub auth: Option<AuthReport>,
    /// Push scenario results.
    pub push: Option<PushReport>,
    /// Churn scenario results.
    #[serde(default)]
    pub churn: Option<ChurnReport>,
    /// Storm scenario results.
    #[serde(default)]
    pub storm: Option<StormReport>,
    /// `--recover`: delivery across reconnects, by per-user sequence number.
    #[serde(default)]
    pub recovery: Option<RecoveryReport>,
    pub memory: Option<Memory>,
    /// The host's CPU over the run, and whether it was contended.
    #[serde(default)]
    pub host_cpu: Option<cpu::HostCpu>,
    pub workers: Vec<WorkerSummary>,
    pub elapsed_s: f64,
    /// Threshold violations (empty = pass).
    pub violations: Vec<String>,
    /// One sample every 250 ms.
    pub timeline: Vec<TimelineSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// raw or socketio.
    #[serde(default)]
    pub protocol: Protocol,
    /// Socket.IO: the Engine.IO transport and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eio: Option<u8>,
    /// The URL connections go to, before `session=` (Socket.IO: with EIO and transport).
    #[serde(default)]
    pub connect_url: String,
    pub connections: u64,
    pub workers: u64,
    pub ramp_per_sec: f64,
    pub max_inflight_connects: u64,
    pub source_addrs: Vec<String>,
    pub duration_s: f64,
    pub message_bytes: usize,
    pub interval_ms: u64,
    pub echo_check: bool,
    pub connect_timeout_ms: u64,
    pub max_runtime_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Ran through all phases without interruption, deadline or worker failure.
    pub completed: bool,
    pub interrupted: bool,
    pub deadline_hit: bool,
    /// Every worker finished all of its connection attempts.
    pub connect_phase_complete: bool,
    /// Seconds spent in each phase: connect, hold, echo_check, stop.
    pub phase_seconds: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionStats {
    pub requested: u64,
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// refused, timeout, http_XXX, reset, addr_unavailable, fd_limit, io_error, ...
    pub failed_by_kind: BTreeMap<String, u64>,
    pub open_at_all_up: u64,
    pub open_at_end: u64,
    pub peak_open: u64,
    /// Established connections that ended before the test closed them.
    pub dropped: u64,
    pub dropped_by_kind: BTreeMap<String, u64>,
    /// Connect latency of the first attempts that succeeded: TCP connect + upgrade
    /// (+ Socket.IO open and namespace connect), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_latency_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageStats {
    pub sent: u64,
    pub received: u64,
    /// sent - received (in flight at stop, or lost).
    pub missing: u64,
    pub mismatches: u64,
    pub send_errors: u64,
    pub unsolicited: u64,
    pub pings_received: u64,
    /// Round-trip latency of all echoed messages (ramp-up and stop included), µs.
    pub latency_us: Option<LatencySummary>,
    /// Round-trip latency while holding (all connections up, before the echo
    /// check and stop), µs. This is what --max-p99-ms is checked against when present.
    pub latency_steady_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoCheck {
    pub completed: bool,
    pub echoes_ok: u64,
    /// Established connections that did not return their check message.
    pub echoes_failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthReport {
    pub mode: AuthMode,
    pub admin_url: String,
    pub users: u64,
    pub context: u64,
    /// Connections per user: connection i belongs to user i % users + 1.
    pub sockets_per_user: f64,
    pub sessions_minted: u64,
    pub sessions_failed: u64,
    pub mint_errors_by_kind: BTreeMap<String, u64>,
    pub mint_first_error: Option<String>,
    pub mint_seconds: f64,
    pub mint_rate_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub mode: PushMode,
    /// --push-rate: pushes/s (fanout: fan-out events/s, each one push per user).
    pub target_rate: f64,
    pub batch_size: u64,
    pub users: u64,
    /// From the first push request until the push driver finished.
    pub push_seconds: f64,
    /// From the end of pushing until every expected message arrived (or the drain timeout).
    pub drain_seconds: f64,
    /// Every expected message arrived before the drain timeout.
    pub drain_complete: bool,
    pub requests: u64,
    pub requests_ok: u64,
    /// Pushes in the requests that were sent.
    pub pushes_sent: u64,
    /// Sum of the `pushes` counts of the 202 answers.
    pub pushes_accepted: u64,
    pub pushes_accepted_per_s: f64,
    /// Requests that failed (transport error or non-2xx status).
    pub http_errors: u64,
    pub http_errors_by_kind: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Requests that went out more than 100 ms late (the driver could not keep the rate).
    pub late_requests: u64,
    /// Sum of the `sockets` counts of the 202 answers (or accepted pushes x
    /// `--expect-per-push`).
    pub messages_expected: u64,
    /// Sum of the `remote_nodes` counts of the 202 answers (cluster: pushes queued for
    /// other nodes).
    #[serde(default)]
    pub remote_nodes: u64,
    /// Pushed messages received by all connections.
    pub messages_received: u64,
    /// expected - received, after the drain wait.
    pub missing: u64,
    /// received - expected when positive (duplicates, or deliveries of failed requests).
    pub unexpected: u64,
    /// Messages received / (time of the last delivery - start of pushing).
    pub delivery_rate_per_s: Option<f64>,
    /// Highest delivery rate over one 1-second window.
    pub delivery_rate_peak_per_s: Option<f64>,
    /// From the start of pushing until every expected delivery had been received (seen in
    /// the 250 ms progress samples, so up to 250 ms late); `null` if some never were.
    #[serde(default)]
    pub all_delivered_s: Option<f64>,
    /// End-to-end latency (timestamp taken right before the push request was sent ->
    /// message read by the client), µs.
    pub latency_us: Option<LatencySummary>,
    /// Round trip of the admin API requests, µs.
    pub api_latency_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    /// --churn-per-sec: reconnects started per second.
    pub target_rate_per_s: f64,
    /// How long reconnects were started (--duration, unless interrupted).
    pub churn_seconds: f64,
    /// Connections closed gracefully to be reconnected.
    pub reconnects_started: u64,
    /// Reconnects that completed (connected again).
    pub reconnects: u64,
    /// `reconnects / churn_seconds`.
    pub reconnects_per_s: f64,
    /// Reconnect attempts, failed ones and by kind (http_503, refused, timeout, ...).
    pub attempts: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Attempts after a failed one; waits that followed `Retry-After`, backoff waits.
    pub retries: u64,
    pub retry_after_waits: u64,
    pub backoff_waits: u64,
    /// Due reconnects that found no open connection to close.
    pub skipped: u64,
    /// After the churn ended: time until the reconnects under way finished.
    pub settle_seconds: f64,
    pub settled: bool,
    /// Reconnects that had not connected when the run stopped.
    pub unfinished: u64,
    /// Open connections during the churn (lowest / highest 250 ms sample).
    pub open_min: Option<u64>,
    pub open_max: Option<u64>,
    /// Connect latency of the reconnects: TCP connect + upgrade (+ Socket.IO connect), µs.
    pub connect_latency_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormReport {
    /// Seconds all connections were held before the drop (--duration).
    pub held_s: f64,
    /// --storm-timeout, --storm-max-wait, backoff base and cap.
    pub timeout_s: f64,
    pub max_wait_s: f64,
    pub reconnect_delay_ms: u64,
    pub reconnect_delay_max_ms: u64,
    /// Open connections dropped at once (socket closed with RST).
    pub dropped: u64,
    /// Dropped connections that connected again / gave up after --storm-timeout.
    pub reconnected: u64,
    pub gave_up: u64,
    /// Still reconnecting when the run was stopped (interrupted or storm phase deadline).
    pub unfinished: u64,
    pub all_reconnected: bool,
    /// From the drop until the last dropped connection was connected again.
    pub all_reconnected_s: Option<f64>,
    /// From the drop until 50 / 90 / 99 % of the dropped connections were connected again.
    pub reconnected_50pct_s: Option<f64>,
    pub reconnected_90pct_s: Option<f64>,
    pub reconnected_99pct_s: Option<f64>,
    /// Per connection: from the drop until connected again, µs.
    pub time_to_reconnect_us: Option<LatencySummary>,
    /// Coordinator: from sending the drop until every connection was back or gave up.
    pub storm_seconds: f64,
    /// Reconnect attempts, failed attempts, attempts after waiting.
    pub attempts: u64,
    pub failed_attempts: u64,
    pub retries: u64,
    /// Refusals with status 503 (node-wide admission: rate, capacity, drain).
    pub http_503: u64,
    /// Failed attempts answered with an HTTP status (http_503, http_429, ...).
    pub refusals_by_status: BTreeMap<String, u64>,
    /// Other failed attempts by kind (refused, reset, timeout, ...).
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Waits that followed `Retry-After` (S + random(0..S)) / the exponential backoff.
    pub retry_after_waits: u64,
    pub backoff_waits: u64,
    /// Largest `Retry-After` seen, seconds.
    pub retry_after_max_s: u64,
    /// Connect latency of the successful reconnect attempts, µs.
    pub connect_latency_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Every worker got the ledger of what was pushed: the expected counts are known.
    pub ledger_complete: bool,
    /// The counts summed over the connections; `missing` includes what was still pending
    /// after the drain.
    #[serde(flatten)]
    pub counts: RecoveryCounts,
    /// Resumes whose connection ended before its recovery marker.
    pub resumes_unanswered: u64,
    /// Per outage: from the connection's drop (storm: the worker's drop) until the
    /// recovery marker of its next connection, µs.
    pub time_to_recover_us: Option<LatencySummary>,
    /// Storm: from the drop until the last dropped client had its recovery marker (`null`
    /// unless every dropped client got one).
    pub all_recovered_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    pub server_pid: Option<u32>,
    pub rss_before_bytes: Option<u64>,
    pub rss_all_up_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    /// (rss_all_up - rss_before) / open connections at all-up.
    pub rss_bytes_per_connection: Option<f64>,
    pub slab_before_bytes: Option<u64>,
    pub slab_all_up_bytes: Option<u64>,
    pub slab_end_bytes: Option<u64>,
    /// Whole-machine kernel slab growth per connection: approximate kernel memory
    /// per connection, both ends (client and server sockets) included.
    pub approx_kernel_bytes_per_connection_both_ends: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub index: u64,
    pub pid: Option<u32>,
    pub connections_assigned: u64,
    pub nofile_limit: Option<u64>,
    pub exit: Option<String>,
    pub self_peak_rss_bytes: Option<u64>,
    pub counters: Counters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineSample {
    pub t: f64,
    /// Currently open connections.
    pub connected: u64,
    pub failed: u64,
    pub sent: u64,
    pub received: u64,
    /// Latency percentiles of the echoes received during this interval, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    /// The whole host's CPU during this interval: busy and stolen (by the hypervisor), %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_busy_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_steal_pct: Option<f64>,
    /// Push scenario: pushes accepted, deliveries expected and received (cumulative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_accepted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_expected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_received: Option<u64>,
    /// Churn and storm: reconnects done and failed reconnect attempts (cumulative), and
    /// connections reconnecting at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnecting: Option<u64>,
}

impl Report {
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

//! The final report: JSON structure, human readable table, threshold checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::cli::{AuthMode, Protocol, PushMode, RunArgs, Scenario, Transport};
use crate::ipc::Counters;
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
    pub memory: Option<Memory>,
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

    /// Fills `violations` from the thresholds given on the command line.
    pub fn check_thresholds(&mut self, args: &RunArgs) {
        let mut v = Vec::new();
        if let Some(max) = args.max_connect_errors {
            if self.connections.failed > max {
                v.push(format!(
                    "connect errors {} > --max-connect-errors {max}",
                    self.connections.failed
                ));
            }
        }
        if let Some(min) = args.min_connected {
            if self.connections.connected < min {
                v.push(format!(
                    "connected {} < --min-connected {min}",
                    self.connections.connected
                ));
            } else if self.connections.open_at_end < min {
                v.push(format!(
                    "still open at the end {} < --min-connected {min}",
                    self.connections.open_at_end
                ));
            }
        }
        if let Some(max_ms) = args.max_p99_ms {
            let lat = self.messages.latency_steady_us.as_ref();
            match lat.or(self.messages.latency_us.as_ref()) {
                Some(l) if l.p99_us as f64 / 1000.0 > max_ms => v.push(format!(
                    "p99 latency {:.3} ms > --max-p99-ms {max_ms}",
                    l.p99_us as f64 / 1000.0
                )),
                Some(_) => {}
                None => v.push("--max-p99-ms given but no latency was measured".to_string()),
            }
        }
        if let Some(max) = args.max_echo_failures {
            match &self.echo_check {
                Some(c) if c.echoes_failed > max => v.push(format!(
                    "echo check failures {} > --max-echo-failures {max}",
                    c.echoes_failed
                )),
                Some(_) => {}
                None => v.push("--max-echo-failures given but no echo check ran".to_string()),
            }
        }
        if let Some(max) = args.max_missing {
            let missing = match &self.push {
                Some(p) => p.missing,
                None => self.messages.missing,
            };
            if missing > max {
                v.push(format!("missing messages {missing} > --max-missing {max}"));
            }
        }
        let reconnect = match (&self.churn, &self.storm) {
            (Some(c), _) => Some((c.failed, c.connect_latency_us.as_ref())),
            (_, Some(s)) => Some((s.failed_attempts, s.connect_latency_us.as_ref())),
            _ => None,
        };
        if let Some(max) = args.max_reconnect_failures {
            match reconnect {
                Some((failed, _)) if failed > max => v.push(format!(
                    "failed reconnect attempts {failed} > --max-reconnect-failures {max}"
                )),
                Some(_) => {}
                None => {
                    v.push("--max-reconnect-failures given but no churn or storm ran".to_string())
                }
            }
        }
        if let Some(max_ms) = args.max_reconnect_p99_ms {
            match reconnect.map(|r| r.1) {
                Some(Some(l)) if l.p99_us as f64 / 1000.0 > max_ms => v.push(format!(
                    "reconnect p99 connect latency {:.3} ms > --max-reconnect-p99-ms {max_ms}",
                    l.p99_us as f64 / 1000.0
                )),
                Some(Some(_)) => {}
                _ => v.push("--max-reconnect-p99-ms given but no reconnect was made".to_string()),
            }
        }
        if self.scenario == Scenario::Storm {
            match &self.storm {
                None => v.push("the storm did not take place".to_string()),
                Some(st) => {
                    let max_gave_up = args.max_gave_up.unwrap_or(0);
                    if st.gave_up > max_gave_up {
                        v.push(format!(
                            "{} clients gave up reconnecting > --max-gave-up {max_gave_up}",
                            st.gave_up
                        ));
                    }
                    if let Some(max) = args.max_storm_secs {
                        match st.all_reconnected_s {
                            Some(secs) if secs <= max => {}
                            Some(secs) => v.push(format!(
                                "all reconnected after {secs:.2} s > --max-storm-secs {max}"
                            )),
                            None => v.push(format!(
                                "not all reconnected ({} of {}) within --max-storm-secs {max}",
                                st.reconnected, st.dropped
                            )),
                        }
                    }
                }
            }
        }
        if self.outcome.deadline_hit {
            v.push("the hard deadline (--max-runtime-s) was hit".to_string());
        }
        self.violations = v;
    }

    /// Human readable summary.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let c = &self.connections;
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<34} {v}");
        };
        let _ = writeln!(s, "\n=== ringwire-loadtest report ===");
        row(&mut s, "target", self.target.clone());
        if self.config.protocol == Protocol::Socketio {
            row(
                &mut s,
                "protocol",
                format!(
                    "socket.io over {} (EIO {})",
                    self.config
                        .transport
                        .and_then(|t| t.to_possible_value())
                        .map(|v| v.get_name().to_string())
                        .unwrap_or_default(),
                    self.config.eio.unwrap_or(4)
                ),
            );
        }
        row(
            &mut s,
            "scenario",
            format!(
                "{:?} ({} workers, duration {} s)",
                self.scenario, self.config.workers, self.config.duration_s
            )
            .to_lowercase(),
        );
        let mut status = if self.outcome.completed {
            "completed".to_string()
        } else {
            "INCOMPLETE".to_string()
        };
        if self.outcome.interrupted {
            status += ", interrupted (Ctrl-C)";
        }
        if self.outcome.deadline_hit {
            status += ", hard deadline hit";
        }
        row(&mut s, "status", status);
        let phases: Vec<String> = [
            "mint",
            "connect",
            "hold",
            "churn",
            "settle",
            "storm",
            "drain",
            "echo_check",
            "stop",
        ]
        .iter()
        .filter_map(|p| {
            self.outcome
                .phase_seconds
                .get(*p)
                .map(|s| format!("{p} {s:.2}"))
        })
        .collect();
        row(&mut s, "phases (s)", phases.join(", "));
        for n in &self.outcome.notes {
            row(&mut s, "note", n.clone());
        }
        let _ = writeln!(s, "connections");
        row(&mut s, "requested", c.requested.to_string());
        row(&mut s, "connected", c.connected.to_string());
        row(&mut s, "failed", c.failed.to_string());
        for (k, n) in &c.failed_by_kind {
            row(&mut s, &format!("  failed: {k}"), n.to_string());
        }
        row(
            &mut s,
            "open when all up / at end",
            format!("{} / {}", c.open_at_all_up, c.open_at_end),
        );
        row(&mut s, "peak open", c.peak_open.to_string());
        row(&mut s, "dropped by peer", c.dropped.to_string());
        for (k, n) in &c.dropped_by_kind {
            row(&mut s, &format!("  dropped: {k}"), n.to_string());
        }
        row(
            &mut s,
            "time to connect all",
            opt(self.time_to_connect_all_s, |x| format!("{x:.2} s")),
        );
        row(
            &mut s,
            "connect rate",
            opt(self.connect_rate_per_s, |x| format!("{x:.0} conn/s")),
        );
        if let Some(l) = &c.connect_latency_us {
            row(&mut s, "connect latency p50 / p99 / max", lat_ms(l));
        }
        let m = &self.messages;
        if m.sent > 0 || m.received > 0 || self.scenario == Scenario::Echo {
            let _ = writeln!(s, "messages");
            row(
                &mut s,
                "sent / received",
                format!("{} / {}", m.sent, m.received),
            );
            row(
                &mut s,
                "missing / mismatches / send errors",
                format!("{} / {} / {}", m.missing, m.mismatches, m.send_errors),
            );
            for (name, lat) in [("all", &m.latency_us), ("steady", &m.latency_steady_us)] {
                if let Some(l) = lat {
                    row(
                        &mut s,
                        &format!("rtt {name}: n / p50 / p90 / p99 µs"),
                        format!("{} / {} / {} / {}", l.count, l.p50_us, l.p90_us, l.p99_us),
                    );
                    row(
                        &mut s,
                        &format!("rtt {name}: p99.9 / max / mean µs"),
                        format!("{} / {} / {:.0}", l.p999_us, l.max_us, l.mean_us),
                    );
                }
            }
        }
        if m.unsolicited > 0 || m.pings_received > 0 {
            row(
                &mut s,
                "unsolicited msgs / pings",
                format!("{} / {}", m.unsolicited, m.pings_received),
            );
        }
        if let Some(a) = &self.auth {
            let _ = writeln!(s, "auth (sessions via {})", a.admin_url);
            row(
                &mut s,
                "users / sockets per user",
                format!("{} / {:.2}", a.users, a.sockets_per_user),
            );
            row(
                &mut s,
                "sessions minted / failed",
                format!("{} / {}", a.sessions_minted, a.sessions_failed),
            );
            for (k, n) in &a.mint_errors_by_kind {
                row(&mut s, &format!("  mint failed: {k}"), n.to_string());
            }
            if let Some(e) = &a.mint_first_error {
                row(&mut s, "  first mint error", e.clone());
            }
            row(
                &mut s,
                "mint time / rate",
                format!(
                    "{:.2} s / {:.0} sessions/s",
                    a.mint_seconds, a.mint_rate_per_s
                ),
            );
        }
        if let Some(p) = &self.push {
            let _ = writeln!(
                s,
                "push ({}, target {} {}/s, batch {})",
                p.mode
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                p.target_rate,
                if p.mode == PushMode::Fanout {
                    "fan-out events"
                } else {
                    "pushes"
                },
                p.batch_size
            );
            row(
                &mut s,
                "requests ok / sent / http errors",
                format!("{} / {} / {}", p.requests_ok, p.requests, p.http_errors),
            );
            for (k, n) in &p.http_errors_by_kind {
                row(&mut s, &format!("  http error: {k}"), n.to_string());
            }
            if let Some(e) = &p.first_error {
                row(&mut s, "  first push error", e.clone());
            }
            row(
                &mut s,
                "pushes sent / accepted",
                format!("{} / {}", p.pushes_sent, p.pushes_accepted),
            );
            row(
                &mut s,
                "pushes accepted per second",
                format!(
                    "{:.0} over {:.2} s (late requests: {})",
                    p.pushes_accepted_per_s, p.push_seconds, p.late_requests
                ),
            );
            row(
                &mut s,
                "messages expected / received",
                format!("{} / {}", p.messages_expected, p.messages_received),
            );
            if p.remote_nodes > 0 {
                row(
                    &mut s,
                    "queued for other nodes (remote_nodes)",
                    p.remote_nodes.to_string(),
                );
            }
            row(
                &mut s,
                "MISSING / unexpected",
                format!("{} / {}", p.missing, p.unexpected),
            );
            row(
                &mut s,
                "drain",
                format!(
                    "{:.2} s, {}",
                    p.drain_seconds,
                    if p.drain_complete {
                        "complete"
                    } else {
                        "timed out"
                    }
                ),
            );
            row(
                &mut s,
                "delivery rate avg / peak 1 s",
                format!(
                    "{} / {} msg/s",
                    opt(p.delivery_rate_per_s, |x| format!("{x:.0}")),
                    opt(p.delivery_rate_peak_per_s, |x| format!("{x:.0}"))
                ),
            );
            for (name, lat) in [
                ("end-to-end", &p.latency_us),
                ("admin api", &p.api_latency_us),
            ] {
                if let Some(l) = lat {
                    row(
                        &mut s,
                        &format!("{name}: n / p50 / p90 / p99 µs"),
                        format!("{} / {} / {} / {}", l.count, l.p50_us, l.p90_us, l.p99_us),
                    );
                    row(
                        &mut s,
                        &format!("{name}: p99.9 / max / mean µs"),
                        format!("{} / {} / {:.0}", l.p999_us, l.max_us, l.mean_us),
                    );
                }
            }
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "churn (target {} reconnects/s for {:.2} s)",
                c.target_rate_per_s, c.churn_seconds
            );
            row(
                &mut s,
                "reconnects started / done",
                format!("{} / {}", c.reconnects_started, c.reconnects),
            );
            row(
                &mut s,
                "reconnects per second",
                format!("{:.1}", c.reconnects_per_s),
            );
            row(
                &mut s,
                "attempts / FAILED / retries",
                format!("{} / {} / {}", c.attempts, c.failed, c.retries),
            );
            for (k, n) in &c.failed_by_kind {
                row(&mut s, &format!("  reconnect failed: {k}"), n.to_string());
            }
            if c.skipped > 0 {
                row(&mut s, "skipped (none open)", c.skipped.to_string());
            }
            row(
                &mut s,
                "open during churn min / max",
                format!(
                    "{} / {}",
                    c.open_min.map_or("-".to_string(), |v| v.to_string()),
                    c.open_max.map_or("-".to_string(), |v| v.to_string())
                ),
            );
            row(
                &mut s,
                "settle after churn",
                format!(
                    "{:.2} s, {}{}",
                    c.settle_seconds,
                    if c.settled { "settled" } else { "NOT settled" },
                    if c.unfinished > 0 {
                        format!(", {} unfinished", c.unfinished)
                    } else {
                        String::new()
                    }
                ),
            );
            if let Some(l) = &c.connect_latency_us {
                row(
                    &mut s,
                    &format!("reconnect latency n={}", l.count),
                    format!("p50 / p99 / max {}", lat_ms(l)),
                );
            }
        }
        if let Some(st) = &self.storm {
            let _ = writeln!(
                s,
                "storm (held {} s, then {} connections dropped at once)",
                st.held_s, st.dropped
            );
            row(
                &mut s,
                "reconnected / GAVE UP / unfinished",
                format!("{} / {} / {}", st.reconnected, st.gave_up, st.unfinished),
            );
            let secs = |v: Option<f64>| opt(v, |x| format!("{x:.2}"));
            row(
                &mut s,
                "all reconnected after",
                match st.all_reconnected_s {
                    Some(x) if st.all_reconnected => format!("{x:.2} s"),
                    _ => format!("NOT all ({} of {})", st.reconnected, st.dropped),
                },
            );
            row(
                &mut s,
                "50 / 90 / 99 % reconnected after",
                format!(
                    "{} / {} / {} s",
                    secs(st.reconnected_50pct_s),
                    secs(st.reconnected_90pct_s),
                    secs(st.reconnected_99pct_s)
                ),
            );
            row(
                &mut s,
                "attempts / failed / retries",
                format!("{} / {} / {}", st.attempts, st.failed_attempts, st.retries),
            );
            row(&mut s, "503 refusals", st.http_503.to_string());
            for (k, n) in &st.refusals_by_status {
                row(&mut s, &format!("  refused: {k}"), n.to_string());
            }
            for (k, n) in &st.failures_by_kind {
                row(&mut s, &format!("  failed: {k}"), n.to_string());
            }
            row(
                &mut s,
                "waits Retry-After / backoff",
                format!(
                    "{} / {} (largest Retry-After {} s)",
                    st.retry_after_waits, st.backoff_waits, st.retry_after_max_s
                ),
            );
            if let Some(l) = &st.connect_latency_us {
                row(
                    &mut s,
                    &format!("reconnect latency n={}", l.count),
                    format!("p50 / p99 / max {}", lat_ms(l)),
                );
            }
        }
        if let Some(e) = &self.echo_check {
            let _ = writeln!(s, "echo check (one message on every connection)");
            row(&mut s, "echoes_ok", e.echoes_ok.to_string());
            row(&mut s, "echoes_failed", e.echoes_failed.to_string());
            if !e.completed {
                row(&mut s, "note", "did not complete".to_string());
            }
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(s, "memory");
            if let Some(pid) = mem.server_pid {
                row(
                    &mut s,
                    &format!("server {pid} RSS before/all-up/end"),
                    format!(
                        "{} / {} / {}",
                        mib(mem.rss_before_bytes),
                        mib(mem.rss_all_up_bytes),
                        mib(mem.rss_end_bytes)
                    ),
                );
                row(
                    &mut s,
                    "server RSS per connection",
                    opt(mem.rss_bytes_per_connection, |x| format!("{x:.0} bytes")),
                );
            }
            row(
                &mut s,
                "kernel slab before/all-up/end",
                format!(
                    "{} / {} / {}",
                    mib(mem.slab_before_bytes),
                    mib(mem.slab_all_up_bytes),
                    mib(mem.slab_end_bytes)
                ),
            );
            row(
                &mut s,
                "approx kernel mem per connection",
                opt(mem.approx_kernel_bytes_per_connection_both_ends, |x| {
                    format!("{x:.0} bytes (both ends)")
                }),
            );
        }
        let _ = writeln!(s, "workers");
        for w in &self.workers {
            let _ = writeln!(
                s,
                "  #{:<3} pid {:<8} assigned {:<7} connected {:<7} failed {:<6} dropped {:<6} sent {:<9} recv {:<9} rss {} {}",
                w.index,
                w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                w.connections_assigned,
                w.counters.connected,
                w.counters.failed,
                w.counters.dropped,
                w.counters.sent,
                w.counters.received + w.counters.push_received,
                mib(w.self_peak_rss_bytes),
                w.exit.as_deref().unwrap_or(""),
            );
        }
        let _ = writeln!(s, "  elapsed {:.1} s", self.elapsed_s);
        if self.outcome.interrupted {
            let _ = writeln!(s, "RESULT: INTERRUPTED");
        } else if self.violations.is_empty() {
            let _ = writeln!(s, "RESULT: PASS");
        } else {
            let _ = writeln!(s, "RESULT: FAIL");
        }
        for v in &self.violations {
            let _ = writeln!(s, "  threshold violated: {v}");
        }
        s
    }
}

/// `p50 / p99 / max` in ms.
fn lat_ms(l: &LatencySummary) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        l.p50_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0,
        l.max_us as f64 / 1000.0
    )
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".to_string())
}

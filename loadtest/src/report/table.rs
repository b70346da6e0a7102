//! The human readable report (printed on stdout), one section per function.

use std::fmt::Write as _;

use clap::ValueEnum;

use crate::cli::{Protocol, PushMode, Scenario};
use crate::report::{PushReport, Report};
use crate::stats::LatencySummary;

/// One `key value` row, the keys aligned.
fn row(s: &mut String, k: &str, v: String) {
    let _ = writeln!(s, "  {k:<34} {v}");
}

impl Report {
    /// Human readable summary.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        self.table_header(&mut s);
        self.table_connections(&mut s);
        self.table_messages(&mut s);
        self.table_auth(&mut s);
        self.table_push(&mut s);
        self.table_churn(&mut s);
        self.table_storm(&mut s);
        self.table_recovery(&mut s);
        self.table_echo_check(&mut s);
        self.table_memory(&mut s);
        self.table_host_cpu(&mut s);
        self.table_workers_and_result(&mut s);
        s
    }

    /// The title, target, status and phases.
    fn table_header(&self, s: &mut String) {
        let _ = writeln!(s, "\n=== ringwire-loadtest report ===");
        row(s, "target", self.target.clone());
        if self.config.protocol == Protocol::Socketio {
            row(
                s,
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
            s,
            "scenario",
            format!(
                "{} ({} workers, duration {} s)",
                crate::cli::choice_name(self.scenario),
                self.config.workers,
                self.config.duration_s
            ),
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
        row(s, "status", status);
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
        row(s, "phases (s)", phases.join(", "));
        for n in &self.outcome.notes {
            row(s, "note", n.clone());
        }
    }

    /// Connection counts, failures, connect rate and latency.
    fn table_connections(&self, s: &mut String) {
        let c = &self.connections;
        let _ = writeln!(s, "connections");
        row(s, "requested", c.requested.to_string());
        row(s, "connected", c.connected.to_string());
        row(s, "failed", c.failed.to_string());
        for (k, n) in &c.failed_by_kind {
            row(s, &format!("  failed: {k}"), n.to_string());
        }
        row(
            s,
            "open when all up / at end",
            format!("{} / {}", c.open_at_all_up, c.open_at_end),
        );
        row(s, "peak open", c.peak_open.to_string());
        row(s, "dropped by peer", c.dropped.to_string());
        for (k, n) in &c.dropped_by_kind {
            row(s, &format!("  dropped: {k}"), n.to_string());
        }
        row(
            s,
            "time to connect all",
            opt(self.time_to_connect_all_s, |x| format!("{x:.2} s")),
        );
        row(
            s,
            "connect rate",
            opt(self.connect_rate_per_s, |x| format!("{x:.0} conn/s")),
        );
        if let Some(l) = &c.connect_latency_us {
            row(s, "connect latency p50 / p99 / max", lat_ms(l));
        }
    }

    /// Scenario messages and their latency.
    fn table_messages(&self, s: &mut String) {
        let m = &self.messages;
        if m.sent > 0 || m.received > 0 || self.scenario == Scenario::Echo {
            let _ = writeln!(s, "messages");
            row(s, "sent / received", format!("{} / {}", m.sent, m.received));
            row(
                s,
                "missing / mismatches / send errors",
                format!("{} / {} / {}", m.missing, m.mismatches, m.send_errors),
            );
            for (name, lat) in [("all", &m.latency_us), ("steady", &m.latency_steady_us)] {
                if let Some(l) = lat {
                    row(
                        s,
                        &format!("rtt {name}: n / p50 / p90 / p99 µs"),
                        format!("{} / {} / {} / {}", l.count, l.p50_us, l.p90_us, l.p99_us),
                    );
                    row(
                        s,
                        &format!("rtt {name}: p99.9 / max / mean µs"),
                        format!("{} / {} / {:.0}", l.p999_us, l.max_us, l.mean_us),
                    );
                }
            }
        }
        if m.unsolicited > 0 || m.pings_received > 0 {
            row(
                s,
                "unsolicited msgs / pings",
                format!("{} / {}", m.unsolicited, m.pings_received),
            );
        }
    }

    /// Sessions minted (`--auth session`).
    fn table_auth(&self, s: &mut String) {
        if let Some(a) = &self.auth {
            let _ = writeln!(s, "auth (sessions via {})", a.admin_url);
            row(
                s,
                "users / sockets per user",
                format!("{} / {:.2}", a.users, a.sockets_per_user),
            );
            row(
                s,
                "sessions minted / failed",
                format!("{} / {}", a.sessions_minted, a.sessions_failed),
            );
            for (k, n) in &a.mint_errors_by_kind {
                row(s, &format!("  mint failed: {k}"), n.to_string());
            }
            if let Some(e) = &a.mint_first_error {
                row(s, "  first mint error", e.clone());
            }
            row(
                s,
                "mint time / rate",
                format!(
                    "{:.2} s / {:.0} sessions/s",
                    a.mint_seconds, a.mint_rate_per_s
                ),
            );
        }
    }

    /// The push scenario.
    fn table_push(&self, s: &mut String) {
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
                s,
                "requests ok / sent / http errors",
                format!("{} / {} / {}", p.requests_ok, p.requests, p.http_errors),
            );
            for (k, n) in &p.http_errors_by_kind {
                row(s, &format!("  http error: {k}"), n.to_string());
            }
            if let Some(e) = &p.first_error {
                row(s, "  first push error", e.clone());
            }
            row(
                s,
                "pushes sent / accepted",
                format!("{} / {}", p.pushes_sent, p.pushes_accepted),
            );
            row(
                s,
                "pushes accepted per second",
                format!(
                    "{:.0} over {:.2} s (late requests: {})",
                    p.pushes_accepted_per_s, p.push_seconds, p.late_requests
                ),
            );
            self.push_deliveries(s, p);
            row(
                s,
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
                s,
                "delivery rate avg / peak 1 s",
                format!(
                    "{} / {} msg/s",
                    opt(p.delivery_rate_per_s, |x| format!("{x:.0}")),
                    opt(p.delivery_rate_peak_per_s, |x| format!("{x:.0}"))
                ),
            );
            row(
                s,
                "all delivered after",
                opt(p.all_delivered_s, |x| format!("{x:.2} s")),
            );
            for (name, lat) in [
                ("end-to-end", &p.latency_us),
                ("admin api", &p.api_latency_us),
            ] {
                if let Some(l) = lat {
                    row(
                        s,
                        &format!("{name}: n / p50 / p90 / p99 µs"),
                        format!("{} / {} / {} / {}", l.count, l.p50_us, l.p90_us, l.p99_us),
                    );
                    row(
                        s,
                        &format!("{name}: p99.9 / max / mean µs"),
                        format!("{} / {} / {:.0}", l.p999_us, l.max_us, l.mean_us),
                    );
                }
            }
        }
    }

    /// The push scenario's deliveries: expected from the admin API's answers, or with
    /// `--recover` only what arrived (the sockets the answers count leave out the clients
    /// that were reconnecting; the recovery section counts by sequence number).
    fn push_deliveries(&self, s: &mut String, p: &PushReport) {
        if self.recovery.is_some() {
            let received = p.messages_received.to_string();
            row(s, "messages received (with replays)", received);
        } else {
            let expected = [p.messages_expected, p.messages_received];
            row(s, "messages expected / received", slashed(&expected));
        }
        if p.remote_nodes > 0 {
            let remote = p.remote_nodes.to_string();
            row(s, "queued for other nodes (remote_nodes)", remote);
        }
        if self.recovery.is_none() {
            row(
                s,
                "MISSING / unexpected",
                slashed(&[p.missing, p.unexpected]),
            );
        }
    }

    /// The churn scenario.
    fn table_churn(&self, s: &mut String) {
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "churn (target {} reconnects/s for {:.2} s)",
                c.target_rate_per_s, c.churn_seconds
            );
            row(
                s,
                "reconnects started / done",
                format!("{} / {}", c.reconnects_started, c.reconnects),
            );
            row(
                s,
                "reconnects per second",
                format!("{:.1}", c.reconnects_per_s),
            );
            row(
                s,
                "attempts / FAILED / retries",
                format!("{} / {} / {}", c.attempts, c.failed, c.retries),
            );
            for (k, n) in &c.failed_by_kind {
                row(s, &format!("  reconnect failed: {k}"), n.to_string());
            }
            if c.skipped > 0 {
                row(s, "skipped (none open)", c.skipped.to_string());
            }
            row(
                s,
                "open during churn min / max",
                format!(
                    "{} / {}",
                    c.open_min.map_or("-".to_string(), |v| v.to_string()),
                    c.open_max.map_or("-".to_string(), |v| v.to_string())
                ),
            );
            row(
                s,
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
                    s,
                    &format!("reconnect latency n={}", l.count),
                    format!("p50 / p99 / max {}", lat_ms(l)),
                );
            }
        }
    }

    /// The storm scenario.
    fn table_storm(&self, s: &mut String) {
        if let Some(st) = &self.storm {
            let _ = writeln!(
                s,
                "storm (held {} s, then {} connections dropped at once)",
                st.held_s, st.dropped
            );
            row(
                s,
                "reconnected / GAVE UP / unfinished",
                format!("{} / {} / {}", st.reconnected, st.gave_up, st.unfinished),
            );
            let secs = |v: Option<f64>| opt(v, |x| format!("{x:.2}"));
            row(
                s,
                "all reconnected after",
                match st.all_reconnected_s {
                    Some(x) if st.all_reconnected => format!("{x:.2} s"),
                    _ => format!("NOT all ({} of {})", st.reconnected, st.dropped),
                },
            );
            row(
                s,
                "50 / 90 / 99 % reconnected after",
                format!(
                    "{} / {} / {} s",
                    secs(st.reconnected_50pct_s),
                    secs(st.reconnected_90pct_s),
                    secs(st.reconnected_99pct_s)
                ),
            );
            row(
                s,
                "attempts / failed / retries",
                format!("{} / {} / {}", st.attempts, st.failed_attempts, st.retries),
            );
            row(s, "503 refusals", st.http_503.to_string());
            for (k, n) in &st.refusals_by_status {
                row(s, &format!("  refused: {k}"), n.to_string());
            }
            for (k, n) in &st.failures_by_kind {
                row(s, &format!("  failed: {k}"), n.to_string());
            }
            row(
                s,
                "waits Retry-After / backoff",
                format!(
                    "{} / {} (largest Retry-After {} s)",
                    st.retry_after_waits, st.backoff_waits, st.retry_after_max_s
                ),
            );
            if let Some(l) = &st.connect_latency_us {
                row(
                    s,
                    &format!("reconnect latency n={}", l.count),
                    format!("p50 / p99 / max {}", lat_ms(l)),
                );
            }
        }
    }

    /// `--recover`: delivery across reconnects.
    fn table_recovery(&self, s: &mut String) {
        let Some(r) = &self.recovery else {
            return;
        };
        let c = &r.counts;
        let _ = writeln!(
            s,
            "recovery (resume from the last position, by per-user sequence)"
        );
        row(s, "connections tracked", c.connections_tracked.to_string());
        if !r.ledger_complete {
            row(
                s,
                "note",
                "pushes to expect unknown: pushing did not end".into(),
            );
        }
        let expected = [c.messages_expected, c.messages_received];
        row(s, "messages expected / received", slashed(&expected));
        let lost = [c.missing, c.missing_acknowledged, c.missing_disconnected];
        row(s, "MISSING / acknowledged / offline", slashed(&lost));
        let disorder = [c.duplicated, c.out_of_order];
        row(s, "DUPLICATED / OUT OF ORDER", slashed(&disorder));
        row(s, "resumes attempted", c.resumes_attempted.to_string());
        let outcomes = [
            c.resumes_recovered,
            c.resumes_not_recovered,
            r.resumes_unanswered,
        ];
        row(s, "  recovered / not / no marker", slashed(&outcomes));
        row(s, "replayed messages", c.replayed.to_string());
        for (name, n) in [
            ("unexpected (request had failed)", c.unexpected),
            ("foreign pushes", c.foreign),
            ("PROTOCOL ERRORS", c.protocol_errors),
            ("epoch changes", c.epoch_changes),
        ] {
            if n > 0 {
                row(s, name, n.to_string());
            }
        }
        if let Some(l) = &r.time_to_recover_us {
            let key = format!("time to recover n={}", l.count);
            row(s, &key, format!("p50 / p99 / max {}", lat_ms(l)));
        }
        if self.storm.is_some() {
            let all = opt(r.all_recovered_s, |x| format!("{x:.2} s"));
            row(s, "all recovered after the drop", all);
        }
    }

    /// The echo check.
    fn table_echo_check(&self, s: &mut String) {
        if let Some(e) = &self.echo_check {
            let _ = writeln!(s, "echo check (one message on every connection)");
            row(s, "echoes_ok", e.echoes_ok.to_string());
            row(s, "echoes_failed", e.echoes_failed.to_string());
            if !e.completed {
                row(s, "note", "did not complete".to_string());
            }
        }
    }

    /// Server RSS and kernel slab per connection.
    fn table_memory(&self, s: &mut String) {
        if let Some(mem) = &self.memory {
            let _ = writeln!(s, "memory");
            if let Some(pid) = mem.server_pid {
                row(
                    s,
                    &format!("server {pid} RSS before/all-up/end"),
                    format!(
                        "{} / {} / {}",
                        mib(mem.rss_before_bytes),
                        mib(mem.rss_all_up_bytes),
                        mib(mem.rss_end_bytes)
                    ),
                );
                row(
                    s,
                    "server RSS per connection",
                    opt(mem.rss_bytes_per_connection, |x| format!("{x:.0} bytes")),
                );
            }
            row(
                s,
                "kernel slab before/all-up/end",
                format!(
                    "{} / {} / {}",
                    mib(mem.slab_before_bytes),
                    mib(mem.slab_all_up_bytes),
                    mib(mem.slab_end_bytes)
                ),
            );
            row(
                s,
                "approx kernel mem per connection",
                opt(mem.approx_kernel_bytes_per_connection_both_ends, |x| {
                    format!("{x:.0} bytes (both ends)")
                }),
            );
        }
    }

    /// Per-worker lines, then PASS / FAIL / INTERRUPTED and the violations.
    fn table_workers_and_result(&self, s: &mut String) {
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
        } else if let Some(nothing) = self
            .violations
            .iter()
            .find(|v| v.starts_with("nothing connected"))
        {
            let _ = writeln!(s, "RESULT: FAIL: {nothing}");
        } else {
            let _ = writeln!(s, "RESULT: FAIL");
        }
        for v in &self.violations {
            let _ = writeln!(s, "  threshold violated: {v}");
        }
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

/// `a / b / c`.
fn slashed(values: &[u64]) -> String {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    values.join(" / ")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".to_string())
}

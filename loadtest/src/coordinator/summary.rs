//! The report of a run, built from the coordinator's state once the workers are reaped.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::cli::Protocol;
use crate::coordinator::state::Run;
use crate::coordinator::workers::sum_counters;
use crate::ipc::Counters;
use crate::report::{
    ChurnReport, ConnectionStats, EchoCheck, Memory, MessageStats, PushReport, RecoveryReport,
    Report, RunConfig, StormReport, WorkerSummary,
};
use crate::stats::LatencySummary;

impl Run<'_> {
    /// The report (thresholds checked).
    pub(super) fn into_report(mut self) -> Report {
        let args = self.args;
        let elapsed = self.started.elapsed().as_secs_f64();
        let t = sum_counters(&self.workers);
        // Precise: when the last attempt of the slowest worker finished.
        let time_to_connect_all = self
            .workers
            .iter()
            .map(|w| w.connect_done_unix_us)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
            .map(|last| last.saturating_sub(self.started_unix_us) as f64 / 1e6);
        let outcome = &mut self.outcome;
        outcome.completed = outcome.connect_phase_complete
            && !outcome.interrupted
            && !outcome.deadline_hit
            && self.workers.iter().all(|w| w.got_final && w.exit.is_none())
            && (!args.echo_check || self.check_completed);
        let mut report = Report {
            tool: format!("ringwire-loadtest {}", env!("CARGO_PKG_VERSION")),
            target: args.url.clone(),
            scenario: args.scenario,
            config: self.run_config(),
            connections: self.connection_stats(&t),
            outcome: std::mem::take(&mut self.outcome),
            time_to_connect_all_s: time_to_connect_all,
            connect_rate_per_s: time_to_connect_all
                .filter(|s| *s > 0.0)
                .map(|s| t.connected as f64 / s),
            messages: self.message_stats(&t),
            echo_check: self.echo_check(&t),
            auth: self.auth_report.take(),
            push: self.push_report(&t),
            churn: self.churn_report(&t, elapsed),
            storm: self.storm_report(&t),
            recovery: self.recovery_report(&t),
            memory: self.memory(),
            host_cpu: crate::report::cpu::HostCpu::from_timeline(&self.timeline),
            workers: self.worker_summaries(),
            elapsed_s: elapsed,
            violations: Vec::new(),
            timeline: std::mem::take(&mut self.timeline),
        };
        if let Some(r) = &report.recovery {
            if r.counts.connections_tracked > 0 && r.counts.markers == 0 {
                report.outcome.notes.push(
                    "--recover: no recovery marker arrived; is history on for this endpoint \
                     (`history = true`)?"
                        .to_string(),
                );
            }
        }
        report.check_thresholds(args);
        report
    }

    fn run_config(&self) -> RunConfig {
        let args = self.args;
        let sio = args.protocol == Protocol::Socketio;
        RunConfig {
            protocol: args.protocol,
            transport: sio.then(|| args.transport()),
            eio: sio.then(|| args.eio()),
            connect_url: args.connect_url(),
            connections: args.connections,
            workers: self.plan.workers,
            ramp_per_sec: args.ramp_per_sec,
            max_inflight_connects: args.max_inflight_connects,
            source_addrs: self
                .plan
                .source_addrs
                .iter()
                .map(|a| a.to_string())
                .collect(),
            duration_s: args.duration,
            message_bytes: args.message_bytes,
            interval_ms: args.interval_ms,
            echo_check: args.echo_check,
            connect_timeout_ms: args.connect_timeout_ms,
            max_runtime_s: self.plan.max_runtime.as_secs_f64(),
        }
    }

    fn connection_stats(&self, t: &Counters) -> ConnectionStats {
        ConnectionStats {
            requested: self.args.connections,
            attempted: t.attempts,
            connected: t.connected,
            failed: t.failed,
            failed_by_kind: t.failed_by_kind.clone(),
            open_at_all_up: self.open_at_all_up,
            open_at_end: self.open_at_end.unwrap_or(t.open),
            peak_open: t.peak_open,
            dropped: t.dropped,
            dropped_by_kind: t.dropped_by_kind.clone(),
            connect_latency_us: LatencySummary::of(&self.hist.connect),
        }
    }

    fn message_stats(&self, t: &Counters) -> MessageStats {
        MessageStats {
            sent: t.sent,
            received: t.received,
            missing: t.sent.saturating_sub(t.received),
            mismatches: t.mismatches,
            send_errors: t.send_errors,
            unsolicited: t.unsolicited,
            pings_received: t.pings_received,
            latency_us: LatencySummary::of(&self.hist.total),
            latency_steady_us: LatencySummary::of(&self.hist.steady),
        }
    }

    fn echo_check(&self, t: &Counters) -> Option<EchoCheck> {
        self.check_started.then(|| {
            let ok: u64 = self
                .workers
                .iter()
                .filter_map(|w| w.check.map(|c| c.0))
                .sum();
            EchoCheck {
                completed: self.check_completed,
                echoes_ok: ok,
                echoes_failed: t.connected.saturating_sub(ok),
            }
        })
    }

    fn memory(&self) -> Option<Memory> {
        let open_at_all_up = self.open_at_all_up;
        let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if open_at_all_up > 0 => {
                Some((b as f64 - a as f64) / open_at_all_up as f64)
            }
            _ => None,
        };
        let (before, all_up, end) = (self.mem_before, self.mem_all_up, self.mem_end);
        (self.args.server_pid.is_some() || before.slab.is_some()).then(|| Memory {
            server_pid: self.args.server_pid,
            rss_before_bytes: before.rss,
            rss_all_up_bytes: all_up.rss,
            rss_end_bytes: end.rss,
            rss_bytes_per_connection: per_conn(before.rss, all_up.rss),
            slab_before_bytes: before.slab,
            slab_all_up_bytes: all_up.slab,
            slab_end_bytes: end.slab,
            approx_kernel_bytes_per_connection_both_ends: per_conn(before.slab, all_up.slab),
        })
    }

    fn push_report(&self, t: &Counters) -> Option<PushReport> {
        let args = self.args;
        self.push.started.map(|start| {
            let p = &self.push.stats;
            let start = p.started_at.lock().unwrap().unwrap_or(start);
            let end = p
                .finished_at
                .lock()
                .unwrap()
                .or(self.push.finished)
                .unwrap_or_else(Instant::now);
            let push_seconds = end.duration_since(start).as_secs_f64();
            let accepted = p.pushes_accepted.load(Relaxed);
            let expected = p.sockets_expected.load(Relaxed);
            let received = t.push_received;
            let peak = self
                .push
                .delivery_marks
                .windows(2)
                .map(|w| (w[1].1 - w[0].1) as f64 / w[1].0.duration_since(w[0].0).as_secs_f64())
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            PushReport {
                mode: args.push_mode,
                target_rate: args.push_rate,
                batch_size: args.batch_size,
                users: self.users,
                push_seconds,
                drain_seconds: self
                    .push
                    .drain_done
                    .map(|(at, _)| at.duration_since(end).as_secs_f64())
                    .unwrap_or(0.0),
                drain_complete: self.push.drain_done.is_some_and(|(_, c)| c),
                requests: p.requests.load(Relaxed),
                requests_ok: p.requests_ok.load(Relaxed),
                pushes_sent: p.pushes_sent.load(Relaxed),
                pushes_accepted: accepted,
                // Over the planned pacing window (--duration), or longer if the driver fell behind.
                pushes_accepted_per_s: accepted as f64
                    / if p.finished.load(Relaxed) {
                        push_seconds.max(args.duration)
                    } else {
                        push_seconds
                    }
                    .max(1e-9),
                http_errors: p.http_errors.load(Relaxed),
                http_errors_by_kind: p.errors_by_kind.lock().unwrap().clone(),
                first_error: p.first_error.lock().unwrap().clone(),
                late_requests: p.late_jobs.load(Relaxed),
                messages_expected: expected,
                remote_nodes: p.remote_nodes.load(Relaxed),
                messages_received: received,
                missing: expected.saturating_sub(received),
                unexpected: received.saturating_sub(expected),
                delivery_rate_per_s: self
                    .push
                    .last_delivery
                    .map(|at| at.duration_since(start).as_secs_f64())
                    .filter(|s| *s > 0.0)
                    .map(|s| received as f64 / s),
                delivery_rate_peak_per_s: peak,
                all_delivered_s: self
                    .push
                    .last_delivery
                    .filter(|_| expected > 0 && received >= expected)
                    .map(|at| at.duration_since(start).as_secs_f64()),
                latency_us: LatencySummary::of(&self.hist.total),
                api_latency_us: LatencySummary::of(&p.api_latency.lock().unwrap()),
            }
        })
    }

    fn churn_report(&self, t: &Counters, elapsed: f64) -> Option<ChurnReport> {
        let args = self.args;
        self.churn.started.map(|start| {
            let end = self
                .churn
                .ended
                .unwrap_or_else(|| self.started + Duration::from_secs_f64(elapsed));
            let churn_seconds = end.duration_since(start).as_secs_f64();
            ChurnReport {
                target_rate_per_s: args.churn_per_sec,
                churn_seconds,
                reconnects_started: t.churn_kicks,
                reconnects: t.reconnects,
                reconnects_per_s: t.reconnects as f64 / churn_seconds.max(1e-9),
                attempts: t.reconnect_attempts,
                failed: t.reconnect_failed,
                failed_by_kind: t.reconnect_failed_by_kind.clone(),
                retries: t.reconnect_retries,
                retry_after_waits: t.retry_after_waits,
                backoff_waits: t.backoff_waits,
                skipped: t.churn_skipped,
                settle_seconds: match (self.churn.ended, self.churn.settled) {
                    (Some(e), Some((at, _))) => at.duration_since(e).as_secs_f64(),
                    _ => 0.0,
                },
                settled: self.churn.settled.is_some_and(|(_, done)| done),
                unfinished: t.reconnect_abandoned,
                open_min: self.churn.open.map(|o| o.0),
                open_max: self.churn.open.map(|o| o.1),
                connect_latency_us: LatencySummary::of(&self.hist.reconnect),
            }
        })
    }

    fn storm_report(&self, t: &Counters) -> Option<StormReport> {
        let args = self.args;
        self.storm.sent.map(|start| {
            let dropped = t.storm_dropped;
            let reconnected = t.storm_reconnected;
            let all = dropped > 0 && reconnected >= dropped;
            let until = |q: f64| time_until_fraction(&self.hist.storm, dropped, q);
            let (refusals, failures): (Vec<_>, Vec<_>) = t
                .reconnect_failed_by_kind
                .iter()
                .map(|(k, n)| (k.clone(), *n))
                .partition(|(k, _)| k.starts_with("http_"));
            StormReport {
                held_s: args.duration,
                timeout_s: args.storm_timeout,
                max_wait_s: args.storm_max_wait,
                reconnect_delay_ms: args.reconnect_delay_ms,
                reconnect_delay_max_ms: args.reconnect_delay_max_ms,
                dropped,
                reconnected,
                gave_up: t.storm_gave_up,
                unfinished: dropped.saturating_sub(reconnected + t.storm_gave_up),
                all_reconnected: all,
                all_reconnected_s: if all { until(1.0) } else { None },
                reconnected_50pct_s: until(0.5),
                reconnected_90pct_s: until(0.9),
                reconnected_99pct_s: until(0.99),
                time_to_reconnect_us: LatencySummary::of(&self.hist.storm),
                storm_seconds: self
                    .storm
                    .done
                    .unwrap_or_else(Instant::now)
                    .duration_since(start)
                    .as_secs_f64(),
                attempts: t.reconnect_attempts,
                failed_attempts: t.reconnect_failed,
                retries: t.reconnect_retries,
                http_503: t
                    .reconnect_failed_by_kind
                    .get("http_503")
                    .copied()
                    .unwrap_or(0),
                refusals_by_status: refusals.into_iter().collect(),
                failures_by_kind: failures.into_iter().collect(),
                retry_after_waits: t.retry_after_waits,
                backoff_waits: t.backoff_waits,
                retry_after_max_s: t.retry_after_max_s,
                connect_latency_us: LatencySummary::of(&self.hist.reconnect),
            }
        })
    }

    fn recovery_report(&self, t: &Counters) -> Option<RecoveryReport> {
        let mut counts = t.recovery.clone();
        // What is still pending after the drain did not come.
        counts.missing += std::mem::take(&mut counts.pending);
        let answered = counts.resumes_recovered + counts.resumes_not_recovered;
        let recover = &self.hist.recover;
        let dropped = t.storm_dropped;
        let all_recovered = dropped > 0 && recover.len() >= dropped;
        self.args.recover.then(|| RecoveryReport {
            ledger_complete: counts.workers_with_ledger >= self.workers.len() as u64,
            resumes_unanswered: counts.resumes_attempted.saturating_sub(answered),
            counts,
            time_to_recover_us: LatencySummary::of(recover),
            all_recovered_s: all_recovered.then(|| recover.max() as f64 / 1e6),
        })
    }

    fn worker_summaries(&self) -> Vec<WorkerSummary> {
        self.workers
            .iter()
            .map(|w| WorkerSummary {
                index: w.spec.index,
                pid: w.pid,
                connections_assigned: w.spec.connections,
                nofile_limit: w.nofile,
                exit: w.exit.clone(),
                self_peak_rss_bytes: w.final_rss,
                counters: w.counters.clone(),
            })
            .collect()
    }
}

/// Storm: seconds from the drop until a fraction `q` of the `dropped` connections were
/// connected again, from the per-connection times to reconnect (µs) in `h`. `None` if
/// fewer than that reconnected.
fn time_until_fraction(h: &Histogram<u64>, dropped: u64, q: f64) -> Option<f64> {
    let need = (q * dropped as f64).ceil().max(1.0) as u64;
    (dropped > 0 && h.len() >= need)
        .then(|| h.value_at_quantile(need as f64 / h.len() as f64) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    #[test]
    fn storm_fractions() {
        let mut h = stats::new_histogram();
        // 100 dropped, 90 back after 1..=90 s.
        for s in 1..=90u64 {
            stats::record(&mut h, s * 1_000_000);
        }
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < want * 0.002;
        assert!(near(time_until_fraction(&h, 100, 0.5), 50.0));
        assert!(near(time_until_fraction(&h, 100, 0.9), 90.0));
        assert_eq!(time_until_fraction(&h, 100, 0.99), None);
        assert_eq!(time_until_fraction(&h, 100, 1.0), None);
        assert!(near(time_until_fraction(&h, 90, 1.0), 90.0));
        assert_eq!(time_until_fraction(&h, 0, 0.5), None);
    }
}

//! The coordinator's event loop: worker events, the 250 ms tick (timeline sample and
//! progress), Ctrl-C / SIGTERM and the hard deadline; after each, the phase machine
//! ([`Run::advance`]) decides what comes next.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::coordinator::state::{phase_name, Phase, Run, TICK};
use crate::coordinator::ui::fmt_ms;
use crate::coordinator::workers::{sum_counters, Msg};
use crate::ipc::{Counters, Event};
use crate::report::TimelineSample;
use crate::stats;
use crate::sysinfo;

impl Run<'_> {
    /// Runs until every worker has stopped (or was given up on).
    pub(super) async fn event_loop(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Result<()> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut phase_started = Instant::now();
        let mut prev_phase_name = "connect";
        while self.phase != Phase::Done {
            // Wake up right at the end of the hold / churn period.
            let period_end = match self.phase {
                Phase::Holding { until } | Phase::Churning { until } => Some(until),
                _ => None,
            };
            let stopping = matches!(self.phase, Phase::Stopping { .. });
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Event(i, ev)) => self.on_event(i, *ev),
                    Some(Msg::Eof(i)) => self.on_eof(i),
                    None => self.phase = Phase::Done,
                },
                _ = ticker.tick() => self.on_tick(),
                _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                    self.on_interrupt().await
                }
                _ = tokio::time::sleep_until(self.hard_deadline), if !stopping => {
                    self.outcome.deadline_hit = true;
                    self.ui.log(format!(
                        "hard deadline of {:.0} s reached: stopping",
                        self.plan.max_runtime.as_secs_f64()
                    ));
                    self.stop_now().await;
                }
                _ = async { tokio::time::sleep_until(period_end.unwrap()).await }, if period_end.is_some() => {}
            }
            self.advance(Instant::now()).await;
            if self.workers.iter().all(|w| w.exited) {
                self.phase = Phase::Done;
            }
            let name = phase_name(self.phase);
            if name != prev_phase_name {
                *self
                    .outcome
                    .phase_seconds
                    .entry(prev_phase_name.to_string())
                    .or_default() += phase_started.elapsed().as_secs_f64();
                phase_started = Instant::now();
                prev_phase_name = name;
            }
        }
        Ok(())
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        let w = &mut self.workers[i];
        match ev {
            Event::Hello {
                pid, nofile_hard, ..
            } => {
                w.pid = Some(pid);
                w.nofile = Some(nofile_hard);
            }
            Event::Progress {
                counters,
                lat,
                connect_lat,
                reconnect_lat,
                storm_lat,
                recover_lat,
            } => {
                w.counters = counters;
                let h = &mut self.hist;
                stats::merge_pairs(&mut h.connect, &connect_lat);
                stats::merge_pairs(&mut h.reconnect, &reconnect_lat);
                stats::merge_pairs(&mut h.storm, &storm_lat);
                stats::merge_pairs(&mut h.recover, &recover_lat);
                stats::merge_pairs(&mut h.total, &lat);
                stats::merge_pairs(&mut h.tick, &lat);
                if matches!(self.phase, Phase::Holding { .. } | Phase::Draining { .. }) {
                    stats::merge_pairs(&mut h.steady, &lat);
                }
            }
            Event::ConnectDone { at_unix_us, .. } => {
                w.connect_done = true;
                w.connect_done_unix_us = Some(at_unix_us);
            }
            Event::EchoCheckDone { ok, failed } => w.check = Some((ok, failed)),
            Event::StormStarted { at_unix_us, .. } => w.storm_started = Some(at_unix_us),
            Event::Final {
                counters,
                self_peak_rss_bytes,
            } => {
                w.counters = counters;
                w.final_rss = self_peak_rss_bytes;
                w.got_final = true;
            }
        }
    }

    fn on_eof(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.exited = true;
        w.stdin = None;
        if !w.got_final {
            self.outcome
                .notes
                .push(format!("worker {i} exited before its final report"));
        }
    }

    /// Ctrl-C or SIGTERM: the first stops the workers cleanly, the second kills them.
    async fn on_interrupt(&mut self) {
        self.interrupts += 1;
        self.outcome.interrupted = true;
        if self.interrupts == 1 && !matches!(self.phase, Phase::Stopping { .. }) {
            self.ui
                .log("interrupted: stopping workers (Ctrl-C again to kill them)".to_string());
            self.stop_now().await;
        } else {
            self.ui.log("killing workers".to_string());
            self.phase = Phase::Done;
        }
    }

    /// Every 250 ms: a timeline sample, the scenario's gauges, the progress.
    fn on_tick(&mut self) {
        let now = Instant::now();
        let t = sum_counters(&self.workers);
        let dt = now.duration_since(self.rate.last_at).as_secs_f64();
        if dt >= 1.0 {
            let received = t.received + t.push_received;
            self.rate.per_s = received.saturating_sub(self.rate.last_received) as f64 / dt;
            self.rate.last_received = received;
            self.rate.last_at = now;
        }
        let mut sample = self.timeline_sample(now, &t);
        let cpu = crate::sysinfo::CpuTimes::now();
        if let (Some(now_cpu), Some(last)) = (cpu, self.cpu_last) {
            if let Some((busy, steal)) = now_cpu.busy_since(&last) {
                sample.host_cpu_busy_pct = Some(busy);
                sample.host_cpu_steal_pct = Some(steal);
            }
        }
        self.cpu_last = cpu.or(self.cpu_last);
        self.timeline.push(sample);
        if matches!(self.phase, Phase::Churning { .. }) {
            self.churn.open = Some(match self.churn.open {
                None => (t.open, t.open),
                Some((lo, hi)) => (lo.min(t.open), hi.max(t.open)),
            });
        }
        if self.push.started.is_some() {
            let p = &mut self.push;
            if t.push_received > p.last_received {
                p.last_received = t.push_received;
                p.last_delivery = Some(now);
            }
            if p.delivery_marks
                .last()
                .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
            {
                p.delivery_marks.push((now, t.push_received));
            }
        }
        self.hist.tick.reset();
        let status = format!(
            "{} | failed {} | dropped {}{}",
            phase_name(self.phase),
            t.failed,
            t.dropped,
            self.status_detail(&t)
        );
        let secs = now.duration_since(self.started).as_secs_f64();
        self.ui
            .show(now, secs, t.open, self.args.connections, status);
    }

    fn timeline_sample(&self, now: Instant, t: &Counters) -> TimelineSample {
        let tick = &self.hist.tick;
        let ip = |q: f64| (!tick.is_empty()).then(|| tick.value_at_quantile(q) as f64 / 1000.0);
        let push = self.push.started.map(|_| &self.push.stats);
        let re = self.reconnect_scenario;
        TimelineSample {
            t: now.duration_since(self.started).as_secs_f64(),
            connected: t.open,
            failed: t.failed,
            sent: t.sent,
            received: t.received,
            p50_ms: ip(0.5),
            p99_ms: ip(0.99),
            max_ms: (!tick.is_empty()).then(|| tick.max() as f64 / 1000.0),
            server_rss_bytes: self.args.server_pid.and_then(sysinfo::process_rss),
            host_cpu_busy_pct: None,
            host_cpu_steal_pct: None,
            pushes_accepted: push.map(|p| p.pushes_accepted.load(Relaxed)),
            push_expected: push.map(|p| p.sockets_expected.load(Relaxed)),
            push_received: push.map(|_| t.push_received),
            reconnects: re.then_some(t.reconnects),
            reconnect_failed: re.then_some(t.reconnect_failed),
            reconnecting: re.then_some(t.reconnecting),
        }
    }

    /// The scenario's part of the status line.
    fn status_detail(&self, t: &Counters) -> String {
        let total = &self.hist.total;
        let q = |q: f64| {
            if total.is_empty() {
                0
            } else {
                total.value_at_quantile(q)
            }
        };
        let mut detail = String::new();
        if self.push.started.is_some() {
            let p = &self.push.stats;
            let expected = p.sockets_expected.load(Relaxed);
            detail += &format!(
                " | pushes {} accepted {} | msgs {}/{} ({} in flight) {:.0} msg/s | p50 {} p99 {}",
                p.pushes_sent.load(Relaxed),
                p.pushes_accepted.load(Relaxed),
                t.push_received,
                expected,
                expected.saturating_sub(t.push_received),
                self.rate.per_s,
                fmt_ms(q(0.5)),
                fmt_ms(q(0.99))
            );
        }
        if self.reconnect_scenario && (self.churn.started.is_some() || self.storm.sent.is_some()) {
            detail += &format!(
                " | reconnects {} ({} failed attempts) reconnecting {}",
                t.reconnects, t.reconnect_failed, t.reconnecting
            );
            if t.storm_gave_up > 0 {
                detail += &format!(" gave up {}", t.storm_gave_up);
            }
        }
        if self.args.recover {
            let r = &t.recovery;
            detail += &format!(
                " | resumes {} recovered {} | gaps {} dup {} late {}",
                r.resumes_attempted, r.resumes_recovered, r.missing, r.duplicated, r.out_of_order
            );
        }
        if detail.is_empty() && !total.is_empty() {
            detail = format!(
                " | {:.0} msg/s p50 {} p99 {}",
                self.rate.per_s,
                fmt_ms(q(0.5)),
                fmt_ms(q(0.99))
            );
        }
        detail
    }
}

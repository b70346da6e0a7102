//! The phase machine of a run, one function per phase:
//! connect -> hold -> (push: drain | churn: churn, settle | storm: storm) -> echo check ->
//! stop. With `--recover`, churn and storm push too, and drain after settle / the storm.
//! [`Run::advance`] runs after every event and tick and moves on when a phase is over.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use crate::admin::push::{self, PushConfig};
use crate::cli::{choice_name, Protocol, Scenario};
use crate::coordinator::plan::{PUSH_FINISH_GRACE, SETTLE_SLACK, STORM_SLACK};
use crate::coordinator::state::{sample_mem, Phase, Run, TICK};
use crate::coordinator::workers::sum_counters;
use crate::ipc::Command;

impl Run<'_> {
    /// Moves to the next phase when the current one is over.
    pub(super) async fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Connecting => self.connecting(now).await,
            Phase::Holding { until } if now >= until => self.hold_over(now).await,
            Phase::Draining { push_deadline } => self.draining(now, push_deadline).await,
            Phase::Churning { until } if now >= until => self.churn_over(now).await,
            Phase::Settling { since, deadline } => self.settling(now, since, deadline).await,
            Phase::Storming { deadline } => self.storming(now, deadline).await,
            Phase::Checking { deadline } => self.checking(now, deadline).await,
            Phase::Stopping { deadline } => self.stopping(now, deadline),
            _ => {}
        }
    }

    /// Connect: until every worker finished its attempts (or the connect budget is over);
    /// then the memory sample "all up" and the hold (churn, pushes) begins.
    async fn connecting(&mut self, now: Instant) {
        let all_done = self.workers.iter().all(|w| w.connect_done || w.exited);
        let over_budget = now.duration_since(self.started) > self.plan.connect_budget;
        if !(all_done || over_budget) {
            return;
        }
        self.outcome.connect_phase_complete = self.workers.iter().all(|w| w.connect_done);
        if over_budget && !all_done {
            self.outcome
                .notes
                .push("connect phase did not finish within its time budget".into());
        }
        self.mem_all_up = sample_mem(self.args.server_pid);
        let t = sum_counters(&self.workers);
        self.open_at_all_up = t.open;
        let args = self.args;
        self.ui.log(format!(
            "all connection attempts done in {:.2} s: {} connected, {} failed; {} for {} s{}",
            now.duration_since(self.started).as_secs_f64(),
            t.connected,
            t.failed,
            if args.scenario == Scenario::Churn {
                "churning"
            } else {
                "holding"
            },
            args.duration,
            if args.scenario == Scenario::Storm {
                ", then the storm"
            } else {
                ""
            }
        ));
        let until = now + Duration::from_secs_f64(args.duration.max(0.0));
        self.phase = Phase::Holding { until };
        if args.scenario == Scenario::Churn {
            self.start_churn(now, until).await;
        }
        if args.pushes() {
            self.start_push(now);
        }
    }

    /// Churn: the workers start closing and reopening connections until `until`.
    async fn start_churn(&mut self, now: Instant, until: Instant) {
        self.ui.log(format!(
            "churn: {} graceful close + reconnect per second for {} s",
            self.args.churn_per_sec, self.args.duration
        ));
        for w in self.workers.iter_mut() {
            w.send(Command::StartChurn).await;
        }
        self.churn.started = Some(now);
        self.phase = Phase::Churning { until };
    }

    /// The push driver starts (in its own task) for `--duration` (storm: until the storm
    /// is over).
    fn start_push(&mut self, now: Instant) {
        let Some(client) = self.admin_client.clone() else {
            return;
        };
        let args = self.args;
        let storm = args.scenario == Scenario::Storm;
        let mut duration = Duration::from_secs_f64(args.duration.max(0.0));
        if storm {
            // Stopped when the storm is over (`PushStats::stop`).
            duration += Duration::from_secs_f64(args.storm_timeout)
                + Duration::from_millis(args.connect_timeout_ms)
                + STORM_SLACK;
        }
        let cfg = PushConfig {
            mode: args.push_mode,
            rate: args.push_rate,
            duration,
            batch_size: args.batch_size,
            users: self.users,
            user_prefix: args.user_prefix.clone(),
            context: args.context,
            path: args.push_path(),
            coalesce: args.push_coalesce,
            concurrency: args.push_concurrency,
            message_bytes: args.message_bytes,
            event: (args.protocol == Protocol::Socketio)
                .then(|| crate::wire::messages::PUSH_EVENT.to_string()),
            expect_per_push: args.expect_per_push,
            user_seq: args.recover,
        };
        let how_long = if storm {
            "until the storm is over".to_string()
        } else {
            format!("for {} s: {}", args.duration, push::planned_units(&cfg))
        };
        self.ui.log(format!(
            "pushing {} per second {how_long}, mode {}, batches of {} ({} HTTP connections)",
            args.push_rate,
            choice_name(args.push_mode),
            args.batch_size,
            args.push_concurrency
        ));
        self.push.started = Some(now);
        self.push.task = Some(tokio::spawn(push::run_push(
            client,
            cfg,
            self.push.stats.clone(),
        )));
    }

    /// The hold is over: storm: the storm; push: drain; otherwise the echo check or stop.
    async fn hold_over(&mut self, now: Instant) {
        if self.args.scenario == Scenario::Storm {
            self.start_storm(now).await;
        } else {
            self.drain_or_check(now).await;
        }
    }

    /// After the pushing scenario's part: the drain if it pushed, otherwise the echo check
    /// or stop.
    async fn drain_or_check(&mut self, now: Instant) {
        if self.push.started.is_none() {
            return self.check_or_stop(now).await;
        }
        if self.args.scenario == Scenario::Storm {
            self.push.stats.stop.store(true, Relaxed);
        }
        self.phase = Phase::Draining {
            push_deadline: now + PUSH_FINISH_GRACE,
        };
    }

    /// Waits for the push driver to finish (aborted after its grace time), then for the
    /// expected deliveries (`--drain-timeout-ms`).
    async fn draining(&mut self, now: Instant, push_deadline: Instant) {
        if self.push.finished.is_none() {
            self.push_finishing(now, push_deadline).await;
        }
        let Some(deadline) = self.push.drain_deadline else {
            return;
        };
        let shortfall = self.undelivered();
        if shortfall.is_none() || now >= deadline {
            self.push.drain_done = Some((now, shortfall.is_none()));
            if let Some(what) = shortfall {
                self.ui.log(format!("drain timeout: {what}"));
            }
            self.check_or_stop(now).await;
        }
    }

    /// Until the push driver has finished (or is aborted at `push_deadline`); then the
    /// drain begins (`--recover`: the workers get the ledger of what was pushed).
    async fn push_finishing(&mut self, now: Instant, push_deadline: Instant) {
        let p = &mut self.push;
        if p.stats.finished.load(Relaxed) {
            p.finished = Some(now);
        } else if now >= push_deadline {
            self.outcome.notes.push(format!(
                "the push driver did not finish within {} s after pushing ended; aborted",
                PUSH_FINISH_GRACE.as_secs()
            ));
            if let Some(task) = p.task.take() {
                task.abort();
            }
            p.finished = Some(now);
        } else {
            return;
        }
        p.drain_deadline = Some(now + Duration::from_millis(self.args.drain_timeout_ms));
        if self.args.recover {
            let ledger = p.stats.ledger.lock().unwrap().clone();
            for w in self.workers.iter_mut() {
                w.send(Command::Expect {
                    ledger: ledger.clone(),
                })
                .await;
            }
        }
    }

    /// What has not been delivered yet, or `None` when everything expected arrived
    /// (`--recover`: no push pending on a connected client, none reconnecting).
    fn undelivered(&self) -> Option<String> {
        let t = sum_counters(&self.workers);
        if self.args.recover {
            let r = &t.recovery;
            let workers = self.workers.iter().filter(|w| !w.exited).count() as u64;
            let done = r.workers_with_ledger >= workers && r.pending == 0 && t.reconnecting == 0;
            return (!done).then(|| {
                format!(
                    "{} pushes still pending, {} clients reconnecting",
                    r.pending, t.reconnecting
                )
            });
        }
        let expected = self.push.stats.sockets_expected.load(Relaxed);
        let received = t.push_received;
        (received < expected)
            .then(|| format!("{received} of {expected} expected messages received"))
    }

    /// Storm: every worker drops all of its connections at once.
    async fn start_storm(&mut self, now: Instant) {
        self.ui.log(format!(
            "storm: dropping all {} open connections at once",
            sum_counters(&self.workers).open
        ));
        for w in self.workers.iter_mut() {
            w.send(Command::Storm).await;
        }
        self.storm.sent = Some(now);
        self.phase = Phase::Storming {
            deadline: now
                + Duration::from_secs_f64(self.args.storm_timeout)
                + Duration::from_millis(self.args.connect_timeout_ms)
                + STORM_SLACK,
        };
    }

    /// Storm: until every dropped connection is back or gave up (or the deadline).
    async fn storming(&mut self, now: Instant, deadline: Instant) {
        let t = sum_counters(&self.workers);
        let all_dropped = self
            .workers
            .iter()
            .all(|w| w.storm_started.is_some() || w.exited);
        let done = all_dropped && t.reconnecting == 0;
        if !(done || now >= deadline) {
            return;
        }
        self.storm.done = Some(now);
        let secs = self
            .storm
            .sent
            .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        self.ui.log(format!(
            "storm over after {secs:.2} s: {} of {} reconnected, {} gave up, {} still reconnecting",
            t.storm_reconnected, t.storm_dropped, t.storm_gave_up, t.reconnecting
        ));
        if !done {
            self.outcome.notes.push(format!(
                "the storm phase ended at its deadline with {} connections still reconnecting",
                t.reconnecting
            ));
        }
        self.drain_or_check(now).await;
    }

    /// Churn: the churn period is over; the reconnects under way settle.
    async fn churn_over(&mut self, now: Instant) {
        for w in self.workers.iter_mut() {
            w.send(Command::EndChurn).await;
        }
        self.churn.ended = Some(now);
        self.phase = Phase::Settling {
            since: now,
            deadline: now + Duration::from_millis(self.args.connect_timeout_ms) + SETTLE_SLACK,
        };
    }

    /// Churn: until no connection is reconnecting (or the deadline).
    async fn settling(&mut self, now: Instant, since: Instant, deadline: Instant) {
        // Wait for at least two progress reports after the end of the churn.
        let t = sum_counters(&self.workers);
        let done = now.duration_since(since) >= 2 * TICK && t.reconnecting == 0;
        if !(done || now >= deadline) {
            return;
        }
        self.churn.settled = Some((now, done));
        if !done {
            let note = format!(
                "{} reconnects were still under way {:.0} s after the churn ended",
                t.reconnecting,
                deadline.duration_since(since).as_secs_f64()
            );
            self.ui.log(note.clone());
            self.outcome.notes.push(note);
        }
        self.drain_or_check(now).await;
    }

    /// End of the active part: the echo check when asked for, otherwise stop.
    async fn check_or_stop(&mut self, now: Instant) {
        if !self.args.echo_check {
            return self.stop_now().await;
        }
        self.ui
            .log("echo check: one message on every open connection".to_string());
        self.check_started = true;
        for w in self.workers.iter_mut() {
            w.send(Command::EchoCheck).await;
        }
        self.phase = Phase::Checking {
            deadline: now
                + Duration::from_millis(self.args.echo_timeout_ms)
                + Duration::from_secs(15),
        };
    }

    /// Echo check: until every worker answered (or the deadline), then stop.
    async fn checking(&mut self, now: Instant, deadline: Instant) {
        let all = self.workers.iter().all(|w| w.check.is_some() || w.exited);
        if all || now >= deadline {
            self.check_completed = self.workers.iter().all(|w| w.check.is_some());
            self.stop_now().await;
        }
    }

    /// Stops the run: the final memory sample, the push driver aborted, `Stop` to every
    /// worker.
    pub(super) async fn stop_now(&mut self) {
        self.mem_end = sample_mem(self.args.server_pid);
        self.open_at_end = Some(sum_counters(&self.workers).open);
        if let Some(task) = self.push.task.take() {
            task.abort();
        }
        for w in self.workers.iter_mut() {
            w.send(Command::Stop).await;
        }
        self.phase = Phase::Stopping {
            deadline: Instant::now() + Duration::from_secs(20),
        };
    }

    /// Stop: until every worker sent its final report (or 20 s).
    fn stopping(&mut self, now: Instant, deadline: Instant) {
        if self.workers.iter().all(|w| w.got_final || w.exited) {
            self.phase = Phase::Done;
        } else if now >= deadline {
            self.outcome
                .notes
                .push("workers did not stop in time and were killed".into());
            self.phase = Phase::Done;
        }
    }
}

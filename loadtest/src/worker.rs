//! Worker process (`ringwire-loadtest worker`, started by the coordinator).
//!
//! Reads a [`WorkerSpec`] and then [`Command`]s from stdin, opens its share of
//! the connections and reports [`Event`]s as JSON lines on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::cli::{Protocol, Target, Transport};
use crate::client::{self, ConnParams, Kick, Phase, ReconnectPolicy, Sessions, Shared, Slot};
use crate::ipc::{Command, Counters, Event, WorkerSpec};
use crate::recovery::{Ledger, RecoveryCounts};
use crate::{stats, sysinfo};

/// Progress report period.
const TICK: Duration = Duration::from_millis(250);
/// Extra time on top of the spec's runtime before the worker gives up by itself.
const FAILSAFE_SLACK: Duration = Duration::from_secs(30);
/// How long to wait for connections to close after `Stop`.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn emit(ev: &Event) {
    let mut out = std::io::stdout().lock();
    // If the coordinator is gone there is nobody to report to; ignore errors.
    let _ = serde_json::to_writer(&mut out, ev);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

pub fn main() -> Result<()> {
    sysinfo::ignore_sigint();
    let (soft, hard) = sysinfo::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building tokio runtime")?;
    rt.block_on(run(soft, hard))
}

async fn resolve(spec: &WorkerSpec) -> Result<SocketAddr> {
    let target = Target::parse_for(&spec.url, spec.protocol)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .collect();
    // Prefer an address of the same family as the source addresses.
    let want_v4 = spec.source_addrs.first().map(|a| a.is_ipv4());
    addrs
        .iter()
        .find(|a| want_v4.is_none_or(|v4| a.is_ipv4() == v4))
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{} resolved to no address", target.host))
}

async fn run(nofile_soft: u64, nofile_hard: u64) -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec_line = lines
        .next_line()
        .await
        .context("reading worker spec")?
        .context("no worker spec on stdin")?;
    let mut spec: WorkerSpec = serde_json::from_str(&spec_line).context("parsing worker spec")?;
    let sessions =
        (spec.users > 0).then(|| Sessions::new(spec.users, std::mem::take(&mut spec.sessions)));
    emit(&Event::Hello {
        pid: std::process::id(),
        nofile_soft,
        nofile_hard,
    });
    check_fd_limit(&spec, nofile_soft)?;
    let params = Arc::new(conn_params(&spec, sessions).await?);
    let shared = Arc::new(Shared::new());
    let slots: Arc<Vec<Arc<Slot>>> = Arc::new(
        (spec.first_conn_id..spec.first_conn_id + spec.connections)
            .map(|id| Arc::new(slot_of(&spec, &params, id)))
            .collect(),
    );
    let (ctrl_tx, ctrl_rx) = watch::channel(Phase::Run);
    let connector = tokio::spawn(connect_all(
        spec.clone(),
        params.clone(),
        shared.clone(),
        slots.clone(),
        ctrl_rx,
    ));
    let mut w = Worker {
        spec,
        params,
        shared,
        slots,
        ctrl_tx,
        churn: None,
        connect_done_sent: false,
        check: None,
        ledger: None,
    };
    w.serve(&mut lines).await;
    w.stop().await;
    connector.abort();
    w.send_progress();
    emit(&Event::Final {
        counters: w.counters(),
        self_peak_rss_bytes: sysinfo::self_peak_rss(),
    });
    Ok(())
}

/// The slot of connection `id`; with `--recover` it tracks the pushes of its user.
fn slot_of(spec: &WorkerSpec, params: &ConnParams, id: u64) -> Slot {
    match &params.sessions {
        Some(sessions) if spec.recover => Slot::tracking(sessions.user_of(id)),
        _ => Slot::default(),
    }
}

/// Refuses to start when the connections do not fit into the fd limit.
fn check_fd_limit(spec: &WorkerSpec, nofile_soft: u64) -> Result<()> {
    // Long-polling clients may hold two sockets each.
    let per_conn = match (spec.protocol, spec.transport) {
        (Protocol::Socketio, Transport::Polling) => 2,
        _ => 1,
    };
    if spec.connections * per_conn + 16 > nofile_soft {
        bail!(
            "worker {}: {} connections ({} sockets each) do not fit into RLIMIT_NOFILE {}",
            spec.index,
            spec.connections,
            per_conn,
            nofile_soft
        );
    }
    Ok(())
}

/// The parameters of this worker's connections.
async fn conn_params(spec: &WorkerSpec, sessions: Option<Sessions>) -> Result<ConnParams> {
    let target = resolve(spec).await?;
    let source_addrs: Vec<_> = spec
        .source_addrs
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == target.is_ipv4())
        .collect();
    if source_addrs.len() != spec.source_addrs.len() {
        eprintln!(
            "worker {}: ignoring source addresses of another family than {target}",
            spec.index
        );
    }
    let url_target = Target::parse_for(&spec.url, spec.protocol)?;
    let tls = if url_target.tls {
        Some(crate::client::tls::Tls::new(
            &url_target.host,
            spec.ca.as_deref(),
        )?)
    } else {
        None
    };
    Ok(ConnParams {
        url: spec.url.clone(),
        protocol: spec.protocol,
        transport: spec.transport,
        eio: spec.eio,
        target,
        source_addrs,
        connect_timeout: Duration::from_millis(spec.connect_timeout_ms.max(1)),
        scenario: spec.scenario,
        message_bytes: spec.message_bytes,
        interval: Duration::from_millis(spec.interval_ms.max(1)),
        echo_timeout: Duration::from_millis(spec.echo_timeout_ms.max(1)),
        tls,
        origin: spec.origin.clone(),
        headers: spec.headers.clone(),
        max_message_bytes: 16 << 20,
        sessions,
        reconnect: ReconnectPolicy {
            storm_timeout: Duration::from_millis(spec.storm_timeout_ms.max(1)),
            max_wait: Duration::from_millis(spec.max_wait_ms),
            delay: Duration::from_millis(spec.reconnect_delay_ms),
            delay_max: Duration::from_millis(spec.reconnect_delay_max_ms),
        },
        recover: spec.recover,
    })
}

/// A running worker: its connections and what the coordinator asked for.
struct Worker {
    spec: WorkerSpec,
    params: Arc<ConnParams>,
    shared: Arc<Shared>,
    slots: Arc<Vec<Arc<Slot>>>,
    ctrl_tx: watch::Sender<Phase>,
    /// Churn scenario: the task that closes and reopens connections.
    churn: Option<tokio::task::JoinHandle<()>>,
    connect_done_sent: bool,
    /// Echo check in progress: (open connections when it started, give-up time).
    check: Option<(u64, Instant)>,
    /// `--recover`: what was pushed to every user, once pushing is over.
    ledger: Option<Ledger>,
}

impl Worker {
    /// Follows the coordinator's commands and reports progress until `Stop`, EOF on
    /// stdin, or the failsafe deadline.
    async fn serve(&mut self, lines: &mut Lines<BufReader<Stdin>>) {
        let failsafe =
            Instant::now() + Duration::from_secs_f64(self.spec.max_runtime_s) + FAILSAFE_SLACK;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                        Ok(Command::Stop) => return,
                        Ok(cmd) => self.on_command(cmd),
                        Err(e) => eprintln!("worker {}: bad command {line:?}: {e}", self.spec.index),
                    },
                    // Coordinator gone (or stdin broken): stop.
                    Ok(None) | Err(_) => return,
                },
                _ = tick.tick() => self.on_tick(),
                _ = sleep_until(failsafe) => {
                    eprintln!("worker {}: hard deadline reached, stopping", self.spec.index);
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let shared = &self.shared;
        match cmd {
            Command::StartChurn => {
                if self.churn.is_none() && self.spec.churn_per_sec > 0.0 {
                    self.churn = Some(tokio::spawn(churn_driver(
                        self.spec.churn_per_sec,
                        self.slots.clone(),
                        shared.clone(),
                    )));
                }
            }
            Command::EndChurn => {
                if let Some(task) = self.churn.take() {
                    task.abort();
                }
            }
            Command::Storm => {
                // Drop every open connection at once; each one reconnects by itself.
                *shared.storm_at.lock().unwrap() = Some(Instant::now());
                let at_unix_us = sysinfo::unix_now_us();
                let dropped = self
                    .slots
                    .iter()
                    .filter(|s| s.kick(shared, Kick::Storm))
                    .count() as u64;
                shared.storm_dropped.fetch_add(dropped, Relaxed);
                // The progress event first, so that the coordinator already counts
                // them as reconnecting when it reads StormStarted.
                self.send_progress();
                emit(&Event::StormStarted {
                    dropped,
                    at_unix_us,
                });
            }
            Command::EchoCheck => {
                if let Some(task) = self.churn.take() {
                    task.abort();
                }
                let expected = shared.open.load(Relaxed);
                let give_up = Instant::now() + self.params.echo_timeout + Duration::from_secs(2);
                self.check = Some((expected, give_up));
                let _ = self.ctrl_tx.send(Phase::EchoCheck);
            }
            Command::Expect { ledger } => {
                self.ledger = Some(ledger);
                self.send_progress();
            }
            Command::Stop => {}
        }
    }

    /// The counters of this worker, with its connections' delivery counts (`--recover`).
    fn counters(&self) -> Counters {
        let mut counters = self.shared.counters();
        counters.recovery = self.recovery_counts();
        counters
    }

    /// The delivery counts of the connections that track their pushes, against the ledger
    /// once it is known.
    fn recovery_counts(&self) -> RecoveryCounts {
        let mut total = RecoveryCounts::default();
        if !self.spec.recover {
            return total;
        }
        total.workers_with_ledger = u64::from(self.ledger.is_some());
        for slot in self.slots.iter() {
            if let Some(stream) = slot.stream() {
                let expected = self.ledger.as_ref().map(|l| l.expected(stream.user()));
                total.add(&stream.counts(expected));
            }
        }
        total
    }

    /// A progress event: the counters, and the histograms' samples since the last one.
    fn send_progress(&self) {
        let shared = &self.shared;
        let drain = |h: &std::sync::Mutex<_>| stats::drain_pairs(&mut h.lock().unwrap());
        emit(&Event::Progress {
            counters: self.counters(),
            lat: drain(&shared.latency),
            connect_lat: drain(&shared.connect_latency),
            reconnect_lat: drain(&shared.reconnect_latency),
            storm_lat: drain(&shared.storm_latency),
            recover_lat: drain(&shared.recover_latency),
        });
    }

    /// Every 250 ms: progress, and the one-time events once they are due.
    fn on_tick(&mut self) {
        self.send_progress();
        let shared = &self.shared;
        let done = shared.connected.load(Relaxed) + shared.failed.load(Relaxed);
        if !self.connect_done_sent && done >= self.spec.connections {
            self.connect_done_sent = true;
            emit(&Event::ConnectDone {
                connected: shared.connected.load(Relaxed),
                failed: shared.failed.load(Relaxed),
                at_unix_us: shared.epoch_unix_us + shared.last_attempt_done_us.load(Relaxed),
            });
        }
        if let Some((expected, give_up)) = self.check {
            let ok = shared.check_ok.load(Relaxed);
            let answered = ok + shared.check_failed.load(Relaxed);
            if answered >= expected || Instant::now() >= give_up {
                self.check = None;
                let connected = shared.connected.load(Relaxed);
                emit(&Event::EchoCheckDone {
                    ok,
                    failed: connected.saturating_sub(ok),
                });
            }
        }
    }

    /// Stop: close every connection (connections still connecting close as soon as they
    /// are up), within a grace period.
    async fn stop(&mut self) {
        if let Some(task) = self.churn.take() {
            task.abort();
        }
        let _ = self.ctrl_tx.send(Phase::Stop);
        let shared = &self.shared;
        let grace = Instant::now() + self.params.connect_timeout.min(STOP_GRACE) + STOP_GRACE;
        let mut next_progress = Instant::now() + TICK;
        loop {
            let attempts_done = shared.connected.load(Relaxed) + shared.failed.load(Relaxed)
                >= shared.attempts.load(Relaxed);
            if (attempts_done && shared.open.load(Relaxed) == 0) || Instant::now() >= grace {
                break;
            }
            if Instant::now() >= next_progress {
                next_progress += TICK;
                self.send_progress();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Churn: starts `rate` reconnects per second (graceful close, then connect again),
/// taking the open connections round robin, until aborted.
async fn churn_driver(rate: f64, slots: Arc<Vec<Arc<Slot>>>, shared: Arc<Shared>) {
    if slots.is_empty() {
        return;
    }
    let start = Instant::now();
    // Wake up often enough for the rate (tokio timers have 1 ms resolution), at most every
    // 50 ms; every tick starts the reconnects that are due.
    let period = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.05));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut started = 0u64;
    let mut next = 0usize;
    loop {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while started < due {
            started += 1;
            let kicked = (0..slots.len()).any(|_| {
                let slot = &slots[next];
                next = (next + 1) % slots.len();
                slot.kick(&shared, Kick::Churn)
            });
            if kicked {
                shared.churn_kicks.fetch_add(1, Relaxed);
            } else {
                // No open connection to close (all are reconnecting or gone).
                shared.churn_skipped.fetch_add(1 + due - started, Relaxed);
                started = due;
            }
        }
    }
}

/// Starts all connection attempts of this worker, paced by `ramp_per_sec` and
/// bounded by `max_inflight_connects`.
async fn connect_all(
    spec: WorkerSpec,
    params: Arc<ConnParams>,
    shared: Arc<Shared>,
    slots: Arc<Vec<Arc<Slot>>>,
    ctrl: watch::Receiver<Phase>,
) {
    let inflight = Arc::new(Semaphore::new(spec.max_inflight_connects.max(1) as usize));
    let start = Instant::now();
    for i in 0..spec.connections {
        if *ctrl.borrow() == Phase::Stop {
            break;
        }
        if spec.ramp_per_sec > 0.0 {
            sleep_until(start + Duration::from_secs_f64(i as f64 / spec.ramp_per_sec)).await;
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        if *ctrl.borrow() == Phase::Stop {
            break;
        }
        shared.attempts.fetch_add(1, Relaxed);
        tokio::spawn(client::run(
            spec.first_conn_id + i,
            params.clone(),
            shared.clone(),
            slots[i as usize].clone(),
            permit,
            ctrl.clone(),
        ));
    }
}

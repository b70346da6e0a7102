//! Coordinator: plans the run, starts the worker processes (re-executing this
//! binary with the hidden `worker` subcommand), drives the phases
//! (connect -> hold -> echo check -> stop), aggregates their JSON-line events,
//! shows progress and builds the [`Report`].

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::push::{self, PushConfig, PushStats};
use crate::admin::{sessions, AdminClient};
use crate::cli::{parse_source_range, AuthMode, Protocol, RunArgs, Scenario, Target};
use crate::ipc::{Command, Counters, Event, SessionCred, WorkerSpec};
use crate::report::{
    AuthReport, ChurnReport, ConnectionStats, EchoCheck, Memory, MessageStats, Outcome, PushReport,
    Report, RunConfig, StormReport, TimelineSample, WorkerSummary,
};
use crate::stats::{self, LatencySummary};
use crate::sysinfo;

/// Sockets kept free in every worker for stdio, the runtime, DNS, ...
const FD_MARGIN: u64 = 64;
/// Default connections per worker when --workers is not given.
const DEFAULT_PER_WORKER: u64 = 15_000;
/// Connections per source IP when choosing loopback source addresses automatically.
const PER_SOURCE_ADDR: u64 = 20_000;
/// Roughly the ephemeral port range (32768-60999) per (source IP, target) pair.
const EPHEMERAL_PORTS: u64 = 28_000;
const TICK: Duration = Duration::from_millis(250);
/// How long the push driver may take beyond --duration to send what was scheduled.
const PUSH_FINISH_GRACE: Duration = Duration::from_secs(30);
/// Churn: after the last reconnect was started, how long (beyond the connect timeout)
/// the reconnects under way may take to finish.
const SETTLE_SLACK: Duration = Duration::from_secs(10);
/// Storm: slack on top of --storm-timeout + the connect timeout for the storm phase.
const STORM_SLACK: Duration = Duration::from_secs(15);

/// The resolved plan of a run.
struct Plan {
    source_addrs: Vec<IpAddr>,
    workers: u64,
    max_runtime: Duration,
    connect_budget: Duration,
}

fn plan(args: &RunArgs, target_ip: IpAddr) -> Result<Plan> {
    let n = args.connections;
    if n == 0 {
        bail!("--connections must be at least 1");
    }
    if args.scenario == Scenario::Push {
        if args.auth != AuthMode::Session {
            bail!("the push scenario pushes to users: it needs --auth session");
        }
        if !(args.push_rate > 0.0 && args.push_rate.is_finite()) {
            bail!("--push-rate must be > 0");
        }
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
    }
    if args.auth == AuthMode::Session && args.users == Some(0) {
        bail!("--users must be at least 1");
    }
    let reconnecting = matches!(args.scenario, Scenario::Churn | Scenario::Storm);
    if args.scenario == Scenario::Churn
        && !(args.churn_per_sec > 0.0 && args.churn_per_sec.is_finite())
    {
        bail!("--churn-per-sec must be > 0");
    }
    if args.scenario == Scenario::Storm
        && !(args.storm_timeout > 0.0 && args.storm_timeout.is_finite())
    {
        bail!("--storm-timeout must be > 0");
    }
    if !(args.storm_max_wait >= 0.0 && args.storm_max_wait.is_finite()) {
        bail!("--storm-max-wait must be >= 0");
    }
    if args.scenario != Scenario::Storm
        && (args.max_storm_secs.is_some() || args.max_gave_up.is_some())
    {
        bail!("--max-storm-secs and --max-gave-up apply to --scenario storm only");
    }
    if !reconnecting
        && (args.max_reconnect_failures.is_some() || args.max_reconnect_p99_ms.is_some())
    {
        bail!(
            "--max-reconnect-failures and --max-reconnect-p99-ms apply to --scenario churn and \
             storm only"
        );
    }
    match args.protocol {
        Protocol::Raw => {
            if args.transport.is_some() || args.eio.is_some() {
                bail!("--transport and --eio apply to --protocol socketio only");
            }
        }
        Protocol::Socketio => {
            if args.auth != AuthMode::Session {
                bail!(
                    "--protocol socketio needs --auth session (ringwire's socketio endpoints \
                     only accept sessions minted through the admin API)"
                );
            }
            if args.scenario == Scenario::Echo {
                bail!(
                    "--scenario echo is not available with --protocol socketio: the server does \
                     not echo Socket.IO events (use hold or push)"
                );
            }
            if args.echo_check {
                bail!(
                    "--echo-check is not available with --protocol socketio: the server does \
                     not echo Socket.IO events"
                );
            }
        }
    }
    let (_, hard) = sysinfo::nofile_limit().context("reading RLIMIT_NOFILE")?;
    // Sockets one connection may hold (long-polling: 2), counted against the fd limit.
    let per_conn = args.sockets_per_connection();
    let per_worker_cap = (hard.saturating_sub(FD_MARGIN) / per_conn).max(1);
    let workers = args
        .workers
        .unwrap_or_else(|| n.div_ceil(DEFAULT_PER_WORKER / per_conn))
        .clamp(1, n);
    let largest_share = n.div_ceil(workers);
    if largest_share > per_worker_cap {
        bail!(
            "{n} connections over {workers} worker(s) = {largest_share} per worker, but one process \
             can hold at most {per_worker_cap} (RLIMIT_NOFILE hard limit {hard} - {FD_MARGIN}{}); \
             use --workers {} or more",
            if per_conn > 1 {
                format!(", {per_conn} sockets per connection")
            } else {
                String::new()
            },
            n.div_ceil(per_worker_cap)
        );
    }

    let mut source_addrs = if let Some(range) = &args.source_range {
        parse_source_range(range)?
    } else {
        args.source_addrs.clone()
    };
    if source_addrs.is_empty() && target_ip.is_loopback() && target_ip.is_ipv4() {
        let k = n / PER_SOURCE_ADDR + 1;
        if k > 1 {
            source_addrs = (1..=k.min(254))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect();
        }
    }
    if let Some(bad) = source_addrs
        .iter()
        .find(|a| a.is_ipv4() != target_ip.is_ipv4())
    {
        bail!("source address {bad} is not of the same family as the target {target_ip}");
    }
    let port_capacity = source_addrs.len().max(1) as u64 * EPHEMERAL_PORTS;
    if n > port_capacity {
        eprintln!(
            "warning: {n} connections but only ~{port_capacity} ephemeral ports with {} source \
             address(es); add --source-addrs/--source-range",
            source_addrs.len().max(1)
        );
    }

    let ct = args.connect_timeout_ms as f64 / 1000.0;
    let connect_budget = if args.ramp_per_sec > 0.0 {
        n as f64 / args.ramp_per_sec * 1.2 + ct + 30.0
    } else {
        n as f64 / 200.0 + ct + 60.0
    };
    let max_runtime = if args.max_runtime_s > 0.0 {
        args.max_runtime_s
    } else {
        let check = if args.echo_check {
            args.echo_timeout_ms as f64 / 1000.0 + 20.0
        } else {
            0.0
        };
        let drain = match args.scenario {
            Scenario::Push => {
                args.drain_timeout_ms as f64 / 1000.0 + PUSH_FINISH_GRACE.as_secs_f64()
            }
            Scenario::Churn => ct + SETTLE_SLACK.as_secs_f64(),
            Scenario::Storm => args.storm_timeout + ct + STORM_SLACK.as_secs_f64(),
            Scenario::Hold | Scenario::Echo => 0.0,
        };
        connect_budget + args.duration.max(0.0) + check + drain + 30.0
    };
    Ok(Plan {
        source_addrs,
        workers,
        max_runtime: Duration::from_secs_f64(max_runtime),
        connect_budget: Duration::from_secs_f64(connect_budget),
    })
}

struct Worker {
    spec: WorkerSpec,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
    nofile: Option<u64>,
    counters: Counters,
    connect_done: bool,
    connect_done_unix_us: Option<u64>,
    check: Option<(u64, u64)>,
    /// Storm: when this worker dropped its connections (unix µs).
    storm_started: Option<u64>,
    final_rss: Option<u64>,
    got_final: bool,
    exited: bool,
    exit: Option<String>,
}

impl Worker {
    async fn send(&mut self, cmd: Command) {
        if let Some(stdin) = self.stdin.as_mut() {
            let mut line = serde_json::to_string(&cmd).expect("serializable command");
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                self.stdin = None;
            }
        }
    }
}

enum Msg {
    Event(usize, Box<Event>),
    Eof(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Connecting,
    Holding {
        until: Instant,
    },
    /// Push scenario: waiting for the push driver to finish, then for the deliveries.
    Draining {
        push_deadline: Instant,
    },
    /// Churn scenario: connections are closed and reopened until `until`.
    Churning {
        until: Instant,
    },
    /// Churn scenario: waiting for the reconnects under way.
    Settling {
        since: Instant,
        deadline: Instant,
    },
    /// Storm scenario: all connections were dropped; waiting until they are back.
    Storming {
        deadline: Instant,
    },
    Checking {
        deadline: Instant,
    },
    Stopping {
        deadline: Instant,
    },
    Done,
}

#[derive(Default, Clone, Copy)]
struct MemSample {
    rss: Option<u64>,
    slab: Option<u64>,
}

fn sample_mem(pid: Option<u32>) -> MemSample {
    MemSample {
        rss: pid.and_then(sysinfo::process_rss),
        slab: sysinfo::slab_bytes(),
    }
}

fn sum_counters(workers: &[Worker]) -> Counters {
    let mut t = Counters::default();
    for w in workers {
        let c = &w.counters;
        t.attempts += c.attempts;
        t.connected += c.connected;
        t.failed += c.failed;
        t.open += c.open;
        t.peak_open += c.peak_open;
        t.dropped += c.dropped;
        t.sent += c.sent;
        t.received += c.received;
        t.mismatches += c.mismatches;
        t.unsolicited += c.unsolicited;
        t.send_errors += c.send_errors;
        t.pings_received += c.pings_received;
        t.echo_check_ok += c.echo_check_ok;
        t.echo_check_failed += c.echo_check_failed;
        t.push_received += c.push_received;
        t.reconnect_attempts += c.reconnect_attempts;
        t.reconnects += c.reconnects;
        t.reconnect_failed += c.reconnect_failed;
        t.reconnect_retries += c.reconnect_retries;
        t.retry_after_waits += c.retry_after_waits;
        t.backoff_waits += c.backoff_waits;
        t.retry_after_max_s = t.retry_after_max_s.max(c.retry_after_max_s);
        t.reconnecting += c.reconnecting;
        t.reconnect_abandoned += c.reconnect_abandoned;
        t.churn_kicks += c.churn_kicks;
        t.churn_skipped += c.churn_skipped;
        t.storm_dropped += c.storm_dropped;
        t.storm_reconnected += c.storm_reconnected;
        t.storm_gave_up += c.storm_gave_up;
        for (k, n) in &c.failed_by_kind {
            *t.failed_by_kind.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &c.reconnect_failed_by_kind {
            *t.reconnect_failed_by_kind.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &c.dropped_by_kind {
            *t.dropped_by_kind.entry(k.clone()).or_default() += n;
        }
    }
    t
}

fn spawn_worker(index: usize, spec: WorkerSpec, tx: mpsc::UnboundedSender<Msg>) -> Result<Worker> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting worker process")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let pid = child.id();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(ev) => {
                    if tx.send(Msg::Event(index, Box::new(ev))).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker {index}: unparsable event ({e}): {line}"),
            }
        }
        let _ = tx.send(Msg::Eof(index));
    });
    Ok(Worker {
        spec,
        child: Some(child),
        stdin: Some(stdin),
        pid,
        nofile: None,
        counters: Counters::default(),
        connect_done: false,
        connect_done_unix_us: None,
        check: None,
        storm_started: None,
        final_rss: None,
        got_final: false,
        exited: false,
        exit: None,
    })
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Connecting => "connect",
        Phase::Holding { .. } => "hold",
        Phase::Draining { .. } => "drain",
        Phase::Churning { .. } => "churn",
        Phase::Settling { .. } => "settle",
        Phase::Storming { .. } => "storm",
        Phase::Checking { .. } => "echo_check",
        Phase::Stopping { .. } => "stop",
        Phase::Done => "done",
    }
}

fn fmt_ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

pub async fn run(args: &RunArgs) -> Result<Report> {
    let target = Target::parse_for(&args.url, args.protocol)?;
    let target_ip = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} resolved to no address", target.host))?
        .ip();
    let plan = plan(args, target_ip)?;
    let _ = sysinfo::raise_nofile_limit();
    let n = args.connections;
    let w_count = plan.workers;

    let interactive = !args.quiet && std::io::stdout().is_terminal();
    let bar = if interactive {
        let pb = ProgressBar::new(n);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} open | {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    } else {
        ProgressBar::hidden()
    };
    let log = |msg: String| {
        if interactive {
            bar.println(msg);
        } else if !args.quiet {
            eprintln!("{msg}");
        }
    };
    log(format!(
        "target {} ({target_ip}, {}), {n} connections, {w_count} worker(s), {} source address(es), \
         scenario {:?}, hard deadline {:.0} s",
        args.connect_url(),
        args.protocol_label(),
        plan.source_addrs.len(),
        args.scenario,
        plan.max_runtime.as_secs_f64()
    ));

    let mem_before = sample_mem(args.server_pid);
    if args.server_pid.is_some() && mem_before.rss.is_none() {
        log(format!(
            "warning: cannot read /proc/{}/status",
            args.server_pid.unwrap_or(0)
        ));
    }

    // --auth session: mint one session per user before any connection is opened.
    let users = if args.auth == AuthMode::Session {
        args.users.unwrap_or(n)
    } else {
        0
    };
    let mut admin_client: Option<Arc<AdminClient>> = None;
    let mut creds: Vec<Option<SessionCred>> = Vec::new();
    let mut auth_report: Option<AuthReport> = None;
    let mut mint_seconds: Option<f64> = None;
    let mut pre_notes: Vec<String> = Vec::new();
    if users > 0 {
        let client = AdminClient::new(&args.admin_url, args.admin_token.as_deref()).await?;
        log(format!(
            "minting {users} sessions (context {}) via {} ({}) with {} connections",
            args.context,
            args.admin_url,
            client.addr(),
            args.mint_concurrency
        ));
        let m = sessions::mint_sessions(
            client.clone(),
            users,
            args.context,
            args.session_ttl_secs,
            args.mint_concurrency,
            &log,
        )
        .await;
        log(format!(
            "minted {} sessions in {:.2} s ({:.0}/s), {} failed",
            m.minted,
            m.seconds,
            m.minted as f64 / m.seconds.max(1e-9),
            m.failed
        ));
        if m.minted == 0 {
            bail!(
                "could not mint any session via {}: {}",
                args.admin_url,
                m.first_error.as_deref().unwrap_or("unknown error")
            );
        }
        if m.failed > 0 {
            pre_notes.push(format!(
                "{} of {users} sessions could not be minted; their connections fail with no_session",
                m.failed
            ));
        }
        mint_seconds = Some(m.seconds);
        auth_report = Some(AuthReport {
            mode: args.auth,
            admin_url: args.admin_url.clone(),
            users,
            context: args.context,
            sockets_per_user: n as f64 / users as f64,
            sessions_minted: m.minted,
            sessions_failed: m.failed,
            mint_errors_by_kind: m.errors_by_kind,
            mint_first_error: m.first_error,
            mint_seconds: m.seconds,
            mint_rate_per_s: m.minted as f64 / m.seconds.max(1e-9),
        });
        creds = m.creds;
        admin_client = Some(client);
    }

    // Start the workers.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let started_unix_us = sysinfo::unix_now_us();
    let hard_deadline = started + plan.max_runtime;
    let mut workers: Vec<Worker> = Vec::new();
    let mut first = 0u64;
    for i in 0..w_count {
        let share = n / w_count + u64::from(i < n % w_count);
        let spec = WorkerSpec {
            index: i,
            url: args.connect_url(),
            protocol: args.protocol,
            transport: args.transport(),
            eio: args.eio(),
            first_conn_id: first,
            connections: share,
            ramp_per_sec: args.ramp_per_sec * share as f64 / n as f64,
            max_inflight_connects: args.max_inflight_connects.div_ceil(w_count).max(1),
            source_addrs: plan.source_addrs.clone(),
            connect_timeout_ms: args.connect_timeout_ms,
            scenario: args.scenario,
            message_bytes: args.message_bytes,
            interval_ms: args.interval_ms,
            echo_timeout_ms: args.echo_timeout_ms,
            max_runtime_s: plan.max_runtime.as_secs_f64(),
            users,
            sessions: worker_sessions(&creds, users, first, share),
            churn_per_sec: args.churn_per_sec * share as f64 / n as f64,
            storm_timeout_ms: (args.storm_timeout * 1000.0) as u64,
            max_wait_ms: (args.storm_max_wait * 1000.0) as u64,
            reconnect_delay_ms: args.reconnect_delay_ms,
            reconnect_delay_max_ms: args.reconnect_delay_max_ms,
        };
        first += share;
        let mut line = serde_json::to_string(&spec)?;
        let mut spec = spec;
        spec.sessions = Vec::new();
        let mut w = spawn_worker(i as usize, spec, tx.clone())?;
        line.push('\n');
        if let Some(stdin) = w.stdin.as_mut() {
            stdin
                .write_all(line.as_bytes())
                .await
                .context("sending worker spec")?;
        }
        workers.push(w);
    }
    drop(tx);
    drop(creds);

    let mut phase = Phase::Connecting;
    let mut outcome = Outcome {
        notes: pre_notes,
        ..Outcome::default()
    };
    if let Some(secs) = mint_seconds {
        outcome.phase_seconds.insert("mint".to_string(), secs);
    }
    // Push scenario state.
    let push_stats = PushStats::new();
    let mut push_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut push_started: Option<Instant> = None;
    let mut push_finished: Option<Instant> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut drain_done: Option<(Instant, bool)> = None;
    let mut last_delivery: Option<Instant> = None;
    let mut last_push_received = 0u64;
    // (time, received) once per second, for the peak delivery rate.
    let mut delivery_marks: Vec<(Instant, u64)> = Vec::new();
    let mut open_at_all_up = 0u64;
    let mut open_at_end: Option<u64> = None;
    let mut mem_all_up = MemSample::default();
    let mut mem_end = MemSample::default();
    let mut total_hist: Histogram<u64> = stats::new_histogram();
    let mut tick_hist: Histogram<u64> = stats::new_histogram();
    // Only what arrives while holding: all connections up, no ramp, no echo-check burst.
    let mut steady_hist: Histogram<u64> = stats::new_histogram();
    let mut timeline: Vec<TimelineSample> = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_status = Instant::now();
    let mut last_received = 0u64;
    let mut last_rate_at = Instant::now();
    let mut msg_rate = 0.0f64;
    let mut interrupts = 0u32;
    let mut check_started = false;
    let mut check_completed = false;
    // Connect latency of first connects and of reconnects; storm time to reconnect.
    let mut connect_hist: Histogram<u64> = stats::new_histogram();
    let mut reconnect_hist: Histogram<u64> = stats::new_histogram();
    let mut storm_hist: Histogram<u64> = stats::new_histogram();
    let reconnect_scenario = matches!(args.scenario, Scenario::Churn | Scenario::Storm);
    // Churn: when it started and ended, when the reconnects under way were done, open
    // connections (min, max) while churning.
    let mut churn_started: Option<Instant> = None;
    let mut churn_ended: Option<Instant> = None;
    let mut settled: Option<(Instant, bool)> = None;
    let mut churn_open: Option<(u64, u64)> = None;
    // Storm: when the drop was sent, and when all were back (or the phase ended).
    let mut storm_sent: Option<Instant> = None;
    let mut storm_done: Option<Instant> = None;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    // The actions that end the active part of the run.
    macro_rules! stop_now {
        () => {{
            mem_end = sample_mem(args.server_pid);
            open_at_end = Some(sum_counters(&workers).open);
            if let Some(task) = push_task.take() {
                task.abort();
            }
            for w in workers.iter_mut() {
                w.send(Command::Stop).await;
            }
            phase = Phase::Stopping {
                deadline: Instant::now() + Duration::from_secs(20),
            };
        }};
    }
    // End of the hold phase: the echo check when asked for, otherwise stop.
    macro_rules! check_or_stop {
        ($now:expr) => {{
            if args.echo_check {
                log("echo check: one message on every open connection".to_string());
                check_started = true;
                for w in workers.iter_mut() {
                    w.send(Command::EchoCheck).await;
                }
                phase = Phase::Checking {
                    deadline: $now
                        + Duration::from_millis(args.echo_timeout_ms)
                        + Duration::from_secs(15),
                };
            } else {
                stop_now!();
            }
        }};
    }

    let mut phase_started = Instant::now();
    let mut prev_phase_name = "connect";
    while phase != Phase::Done {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Event(i, ev)) => {
                    let w = &mut workers[i];
                    match *ev {
                        Event::Hello { pid, nofile_hard, .. } => {
                            w.pid = Some(pid);
                            w.nofile = Some(nofile_hard);
                        }
                        Event::Progress { counters, lat, connect_lat, reconnect_lat, storm_lat } => {
                            w.counters = counters;
                            stats::merge_pairs(&mut connect_hist, &connect_lat);
                            stats::merge_pairs(&mut reconnect_hist, &reconnect_lat);
                            stats::merge_pairs(&mut storm_hist, &storm_lat);
                            stats::merge_pairs(&mut total_hist, &lat);
                            stats::merge_pairs(&mut tick_hist, &lat);
                            if matches!(phase, Phase::Holding { .. } | Phase::Draining { .. }) {
                                stats::merge_pairs(&mut steady_hist, &lat);
                            }
                        }
                        Event::ConnectDone { at_unix_us, .. } => {
                            w.connect_done = true;
                            w.connect_done_unix_us = Some(at_unix_us);
                        }
                        Event::EchoCheckDone { ok, failed } => w.check = Some((ok, failed)),
                        Event::StormStarted { at_unix_us, .. } => w.storm_started = Some(at_unix_us),
                        Event::Final { counters, self_peak_rss_bytes } => {
                            w.counters = counters;
                            w.final_rss = self_peak_rss_bytes;
                            w.got_final = true;
                        }
                    }
                }
                Some(Msg::Eof(i)) => {
                    let w = &mut workers[i];
                    w.exited = true;
                    w.stdin = None;
                    if !w.got_final {
                        outcome.notes.push(format!("worker {i} exited before its final report"));
                    }
                }
                None => phase = Phase::Done,
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                let t = sum_counters(&workers);
                let dt = now.duration_since(last_rate_at).as_secs_f64();
                if dt >= 1.0 {
                    let received = t.received + t.push_received;
                    msg_rate = received.saturating_sub(last_received) as f64 / dt;
                    last_received = received;
                    last_rate_at = now;
                }
                let ip = |q: f64| (!tick_hist.is_empty()).then(|| tick_hist.value_at_quantile(q) as f64 / 1000.0);
                timeline.push(TimelineSample {
                    t: now.duration_since(started).as_secs_f64(),
                    connected: t.open,
                    failed: t.failed,
                    sent: t.sent,
                    received: t.received,
                    p50_ms: ip(0.5),
                    p99_ms: ip(0.99),
                    max_ms: (!tick_hist.is_empty()).then(|| tick_hist.max() as f64 / 1000.0),
                    server_rss_bytes: args.server_pid.and_then(sysinfo::process_rss),
                    pushes_accepted: push_started.map(|_| push_stats.pushes_accepted.load(Relaxed)),
                    push_expected: push_started.map(|_| push_stats.sockets_expected.load(Relaxed)),
                    push_received: push_started.map(|_| t.push_received),
                    reconnects: reconnect_scenario.then_some(t.reconnects),
                    reconnect_failed: reconnect_scenario.then_some(t.reconnect_failed),
                    reconnecting: reconnect_scenario.then_some(t.reconnecting),
                });
                if matches!(phase, Phase::Churning { .. }) {
                    churn_open = Some(match churn_open {
                        None => (t.open, t.open),
                        Some((lo, hi)) => (lo.min(t.open), hi.max(t.open)),
                    });
                }
                if push_started.is_some() {
                    if t.push_received > last_push_received {
                        last_push_received = t.push_received;
                        last_delivery = Some(now);
                    }
                    if delivery_marks.last().is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1)) {
                        delivery_marks.push((now, t.push_received));
                    }
                }
                tick_hist.reset();

                let phase_name = phase_name(phase);
                let lat = if push_started.is_some() {
                    let p = &push_stats;
                    format!(
                        " | pushes {} accepted {} | msgs {}/{} ({} in flight) {:.0} msg/s | p50 {} p99 {}",
                        p.pushes_sent.load(Relaxed),
                        p.pushes_accepted.load(Relaxed),
                        t.push_received,
                        p.sockets_expected.load(Relaxed),
                        p.sockets_expected.load(Relaxed).saturating_sub(t.push_received),
                        msg_rate,
                        fmt_ms(if total_hist.is_empty() { 0 } else { total_hist.value_at_quantile(0.5) }),
                        fmt_ms(if total_hist.is_empty() { 0 } else { total_hist.value_at_quantile(0.99) })
                    )
                } else if reconnect_scenario && (churn_started.is_some() || storm_sent.is_some()) {
                    format!(
                        " | reconnects {} ({} failed attempts) reconnecting {}{}",
                        t.reconnects,
                        t.reconnect_failed,
                        t.reconnecting,
                        if t.storm_gave_up > 0 {
                            format!(" gave up {}", t.storm_gave_up)
                        } else {
                            String::new()
                        }
                    )
                } else if total_hist.is_empty() {
                    String::new()
                } else {
                    format!(
                        " | {:.0} msg/s p50 {} p99 {}",
                        msg_rate,
                        fmt_ms(total_hist.value_at_quantile(0.5)),
                        fmt_ms(total_hist.value_at_quantile(0.99))
                    )
                };
                let status = format!(
                    "{phase_name} | failed {} | dropped {}{lat}",
                    t.failed, t.dropped
                );
                bar.set_position(t.open);
                bar.set_message(status.clone());
                if !interactive && !args.quiet && now.duration_since(last_status) >= Duration::from_secs(5) {
                    last_status = now;
                    eprintln!(
                        "[{:>6.1}s] open {}/{n} | {status}",
                        now.duration_since(started).as_secs_f64(),
                        t.open
                    );
                }
            }
            _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                interrupts += 1;
                outcome.interrupted = true;
                if interrupts == 1 && !matches!(phase, Phase::Stopping { .. }) {
                    log("interrupted: stopping workers (Ctrl-C again to kill them)".to_string());
                    stop_now!();
                } else {
                    log("killing workers".to_string());
                    phase = Phase::Done;
                }
            }
            _ = tokio::time::sleep_until(hard_deadline), if !matches!(phase, Phase::Stopping { .. }) => {
                outcome.deadline_hit = true;
                log(format!("hard deadline of {:.0} s reached: stopping", plan.max_runtime.as_secs_f64()));
                stop_now!();
            }
            // Wake up right at the end of the hold / churn period (checked below).
            _ = async {
                if let Phase::Holding { until } | Phase::Churning { until } = phase {
                    tokio::time::sleep_until(until).await
                }
            }, if matches!(phase, Phase::Holding { .. } | Phase::Churning { .. }) => {}
        }

        // Phase transitions.
        let now = Instant::now();
        let live = |w: &Worker| !w.exited;
        match phase {
            Phase::Connecting => {
                let all_done = workers.iter().all(|w| w.connect_done || !live(w));
                let over_budget = now.duration_since(started) > plan.connect_budget;
                if all_done || over_budget {
                    outcome.connect_phase_complete = workers.iter().all(|w| w.connect_done);
                    if over_budget && !all_done {
                        outcome
                            .notes
                            .push("connect phase did not finish within its time budget".into());
                    }
                    mem_all_up = sample_mem(args.server_pid);
                    let t = sum_counters(&workers);
                    open_at_all_up = t.open;
                    log(format!(
                        "all connection attempts done in {:.2} s: {} connected, {} failed; {} for {} s{}",
                        now.duration_since(started).as_secs_f64(),
                        t.connected,
                        t.failed,
                        if args.scenario == Scenario::Churn { "churning" } else { "holding" },
                        args.duration,
                        if args.scenario == Scenario::Storm { ", then the storm" } else { "" }
                    ));
                    phase = Phase::Holding {
                        until: now + Duration::from_secs_f64(args.duration.max(0.0)),
                    };
                    if args.scenario == Scenario::Churn {
                        log(format!(
                            "churn: {} graceful close + reconnect per second for {} s",
                            args.churn_per_sec, args.duration
                        ));
                        for w in workers.iter_mut() {
                            w.send(Command::StartChurn).await;
                        }
                        churn_started = Some(now);
                        phase = Phase::Churning {
                            until: now + Duration::from_secs_f64(args.duration.max(0.0)),
                        };
                    }
                    if args.scenario == Scenario::Push {
                        if let Some(client) = admin_client.clone() {
                            let cfg = PushConfig {
                                mode: args.push_mode,
                                rate: args.push_rate,
                                duration: Duration::from_secs_f64(args.duration.max(0.0)),
                                batch_size: args.batch_size,
                                users,
                                context: args.context,
                                path: args.push_path(),
                                coalesce: args.push_coalesce,
                                concurrency: args.push_concurrency,
                                message_bytes: args.message_bytes,
                                event: (args.protocol == Protocol::Socketio)
                                    .then(|| crate::wire::messages::PUSH_EVENT.to_string()),
                                expect_per_push: args.expect_per_push,
                            };
                            log(format!(
                                "pushing: {} {:?} {} per second for {} s, batches of {} ({} HTTP connections)",
                                push::planned_units(&cfg),
                                args.push_mode,
                                args.push_rate,
                                args.duration,
                                args.batch_size,
                                args.push_concurrency
                            ));
                            push_started = Some(now);
                            push_task = Some(tokio::spawn(push::run_push(
                                client,
                                cfg,
                                push_stats.clone(),
                            )));
                        }
                    }
                }
            }
            Phase::Holding { until } if now >= until && push_started.is_some() => {
                phase = Phase::Draining {
                    push_deadline: now + PUSH_FINISH_GRACE,
                };
            }
            Phase::Draining { push_deadline } => {
                if push_finished.is_none() {
                    if push_stats.finished.load(Relaxed) {
                        push_finished = Some(now);
                    } else if now >= push_deadline {
                        outcome.notes.push(format!(
                            "the push driver did not finish within {} s after --duration; aborted",
                            PUSH_FINISH_GRACE.as_secs()
                        ));
                        if let Some(task) = push_task.take() {
                            task.abort();
                        }
                        push_finished = Some(now);
                    }
                    if push_finished.is_some() {
                        drain_deadline = Some(now + Duration::from_millis(args.drain_timeout_ms));
                    }
                }
                if let Some(deadline) = drain_deadline {
                    let expected = push_stats.sockets_expected.load(Relaxed);
                    let received = sum_counters(&workers).push_received;
                    let complete = received >= expected;
                    if complete || now >= deadline {
                        drain_done = Some((now, complete));
                        if !complete {
                            log(format!(
                                "drain timeout: {received} of {expected} expected messages received"
                            ));
                        }
                        check_or_stop!(now);
                    }
                }
            }
            Phase::Holding { until } if now >= until && args.scenario == Scenario::Storm => {
                log(format!(
                    "storm: dropping all {} open connections at once",
                    sum_counters(&workers).open
                ));
                for w in workers.iter_mut() {
                    w.send(Command::Storm).await;
                }
                storm_sent = Some(now);
                phase = Phase::Storming {
                    deadline: now
                        + Duration::from_secs_f64(args.storm_timeout)
                        + Duration::from_millis(args.connect_timeout_ms)
                        + STORM_SLACK,
                };
            }
            Phase::Holding { until } if now >= until => {
                check_or_stop!(now);
            }
            Phase::Churning { until } if now >= until => {
                for w in workers.iter_mut() {
                    w.send(Command::EndChurn).await;
                }
                churn_ended = Some(now);
                phase = Phase::Settling {
                    since: now,
                    deadline: now + Duration::from_millis(args.connect_timeout_ms) + SETTLE_SLACK,
                };
            }
            Phase::Settling { since, deadline } => {
                // Wait for at least two progress reports after the end of the churn.
                let t = sum_counters(&workers);
                let done = now.duration_since(since) >= 2 * TICK && t.reconnecting == 0;
                if done || now >= deadline {
                    settled = Some((now, done));
                    if !done {
                        let note = format!(
                            "{} reconnects were still under way {:.0} s after the churn ended",
                            t.reconnecting,
                            deadline.duration_since(since).as_secs_f64()
                        );
                        log(note.clone());
                        outcome.notes.push(note);
                    }
                    check_or_stop!(now);
                }
            }
            Phase::Storming { deadline } => {
                let t = sum_counters(&workers);
                let all_dropped = workers
                    .iter()
                    .all(|w| w.storm_started.is_some() || !live(w));
                let done = all_dropped && t.reconnecting == 0;
                if done || now >= deadline {
                    storm_done = Some(now);
                    let secs = storm_sent.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
                    log(format!(
                        "storm over after {secs:.2} s: {} of {} reconnected, {} gave up, {} still reconnecting",
                        t.storm_reconnected, t.storm_dropped, t.storm_gave_up, t.reconnecting
                    ));
                    if !done {
                        outcome.notes.push(format!(
                            "the storm phase ended at its deadline with {} connections still reconnecting",
                            t.reconnecting
                        ));
                    }
                    check_or_stop!(now);
                }
            }
            Phase::Checking { deadline } => {
                let all = workers.iter().all(|w| w.check.is_some() || !live(w));
                if all || now >= deadline {
                    check_completed = workers.iter().all(|w| w.check.is_some());
                    stop_now!();
                }
            }
            Phase::Stopping { deadline } => {
                if workers.iter().all(|w| w.got_final || !live(w)) {
                    phase = Phase::Done;
                } else if now >= deadline {
                    outcome
                        .notes
                        .push("workers did not stop in time and were killed".into());
                    phase = Phase::Done;
                }
            }
            _ => {}
        }
        if workers.iter().all(|w| !live(w)) {
            phase = Phase::Done;
        }
        let name = phase_name(phase);
        if name != prev_phase_name {
            *outcome
                .phase_seconds
                .entry(prev_phase_name.to_string())
                .or_default() += phase_started.elapsed().as_secs_f64();
            phase_started = Instant::now();
            prev_phase_name = name;
        }
    }
    bar.finish_and_clear();

    // Reap the workers (killing any that are still running).
    for w in workers.iter_mut() {
        w.stdin = None;
        if let Some(mut child) = w.child.take() {
            let status = match tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
                Ok(Ok(s)) => s,
                _ => {
                    let _ = child.start_kill();
                    match child.wait().await {
                        Ok(s) => s,
                        Err(e) => {
                            w.exit = Some(format!("wait failed: {e}"));
                            continue;
                        }
                    }
                }
            };
            if !status.success() {
                w.exit = Some(format!("exit: {status}"));
            }
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    let t = sum_counters(&workers);
    // Precise: when the last attempt of the slowest worker finished.
    let time_to_connect_all = workers
        .iter()
        .map(|w| w.connect_done_unix_us)
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max())
        .map(|last| last.saturating_sub(started_unix_us) as f64 / 1e6);
    outcome.completed = outcome.connect_phase_complete
        && !outcome.interrupted
        && !outcome.deadline_hit
        && workers.iter().all(|w| w.got_final && w.exit.is_none())
        && (!args.echo_check || check_completed);

    let echo_check = check_started.then(|| {
        let ok: u64 = workers.iter().filter_map(|w| w.check.map(|c| c.0)).sum();
        EchoCheck {
            completed: check_completed,
            echoes_ok: ok,
            echoes_failed: t.connected.saturating_sub(ok),
        }
    });
    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if open_at_all_up > 0 => {
            Some((b as f64 - a as f64) / open_at_all_up as f64)
        }
        _ => None,
    };
    let memory = (args.server_pid.is_some() || mem_before.slab.is_some()).then(|| Memory {
        server_pid: args.server_pid,
        rss_before_bytes: mem_before.rss,
        rss_all_up_bytes: mem_all_up.rss,
        rss_end_bytes: mem_end.rss,
        rss_bytes_per_connection: per_conn(mem_before.rss, mem_all_up.rss),
        slab_before_bytes: mem_before.slab,
        slab_all_up_bytes: mem_all_up.slab,
        slab_end_bytes: mem_end.slab,
        approx_kernel_bytes_per_connection_both_ends: per_conn(mem_before.slab, mem_all_up.slab),
    });

    let push = push_started.map(|start| {
        let p = &push_stats;
        let start = p.started_at.lock().unwrap().unwrap_or(start);
        let end = p
            .finished_at
            .lock()
            .unwrap()
            .or(push_finished)
            .unwrap_or_else(Instant::now);
        let push_seconds = end.duration_since(start).as_secs_f64();
        let accepted = p.pushes_accepted.load(Relaxed);
        let expected = p.sockets_expected.load(Relaxed);
        let received = t.push_received;
        let peak = delivery_marks
            .windows(2)
            .map(|w| (w[1].1 - w[0].1) as f64 / w[1].0.duration_since(w[0].0).as_secs_f64())
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        PushReport {
            mode: args.push_mode,
            target_rate: args.push_rate,
            batch_size: args.batch_size,
            users,
            push_seconds,
            drain_seconds: drain_done
                .map(|(at, _)| at.duration_since(end).as_secs_f64())
                .unwrap_or(0.0),
            drain_complete: drain_done.is_some_and(|(_, c)| c),
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
            delivery_rate_per_s: last_delivery
                .map(|at| at.duration_since(start).as_secs_f64())
                .filter(|s| *s > 0.0)
                .map(|s| received as f64 / s),
            delivery_rate_peak_per_s: peak,
            latency_us: LatencySummary::of(&total_hist),
            api_latency_us: LatencySummary::of(&p.api_latency.lock().unwrap()),
        }
    });

    let churn = churn_started.map(|start| {
        let end = churn_ended.unwrap_or_else(|| started + Duration::from_secs_f64(elapsed));
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
            settle_seconds: match (churn_ended, settled) {
                (Some(e), Some((at, _))) => at.duration_since(e).as_secs_f64(),
                _ => 0.0,
            },
            settled: settled.is_some_and(|(_, done)| done),
            unfinished: t.reconnect_abandoned,
            open_min: churn_open.map(|o| o.0),
            open_max: churn_open.map(|o| o.1),
            connect_latency_us: LatencySummary::of(&reconnect_hist),
        }
    });
    let storm = storm_sent.map(|start| {
        let dropped = t.storm_dropped;
        let reconnected = t.storm_reconnected;
        let all = dropped > 0 && reconnected >= dropped;
        let until = |q: f64| time_until_fraction(&storm_hist, dropped, q);
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
            time_to_reconnect_us: LatencySummary::of(&storm_hist),
            storm_seconds: storm_done
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
            connect_latency_us: LatencySummary::of(&reconnect_hist),
        }
    });

    let mut report = Report {
        tool: format!("ringwire-loadtest {}", env!("CARGO_PKG_VERSION")),
        target: args.url.clone(),
        scenario: args.scenario,
        config: RunConfig {
            protocol: args.protocol,
            transport: (args.protocol == Protocol::Socketio).then(|| args.transport()),
            eio: (args.protocol == Protocol::Socketio).then(|| args.eio()),
            connect_url: args.connect_url(),
            connections: n,
            workers: w_count,
            ramp_per_sec: args.ramp_per_sec,
            max_inflight_connects: args.max_inflight_connects,
            source_addrs: plan.source_addrs.iter().map(|a| a.to_string()).collect(),
            duration_s: args.duration,
            message_bytes: args.message_bytes,
            interval_ms: args.interval_ms,
            echo_check: args.echo_check,
            connect_timeout_ms: args.connect_timeout_ms,
            max_runtime_s: plan.max_runtime.as_secs_f64(),
        },
        connections: ConnectionStats {
            requested: n,
            attempted: t.attempts,
            connected: t.connected,
            failed: t.failed,
            failed_by_kind: t.failed_by_kind.clone(),
            open_at_all_up,
            open_at_end: open_at_end.unwrap_or(t.open),
            peak_open: t.peak_open,
            dropped: t.dropped,
            dropped_by_kind: t.dropped_by_kind.clone(),
            connect_latency_us: LatencySummary::of(&connect_hist),
        },
        outcome,
        time_to_connect_all_s: time_to_connect_all,
        connect_rate_per_s: time_to_connect_all
            .filter(|s| *s > 0.0)
            .map(|s| t.connected as f64 / s),
        messages: MessageStats {
            sent: t.sent,
            received: t.received,
            missing: t.sent.saturating_sub(t.received),
            mismatches: t.mismatches,
            send_errors: t.send_errors,
            unsolicited: t.unsolicited,
            pings_received: t.pings_received,
            latency_us: LatencySummary::of(&total_hist),
            latency_steady_us: LatencySummary::of(&steady_hist),
        },
        echo_check,
        auth: auth_report,
        push,
        churn,
        storm,
        memory,
        workers: workers
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
            .collect(),
        elapsed_s: elapsed,
        violations: Vec::new(),
        timeline,
    };
    report.check_thresholds(args);
    Ok(report)
}

/// Storm: seconds from the drop until a fraction `q` of the `dropped` connections were
/// connected again, from the per-connection times to reconnect (µs) in `h`. `None` if
/// fewer than that reconnected.
fn time_until_fraction(h: &Histogram<u64>, dropped: u64, q: f64) -> Option<f64> {
    let need = (q * dropped as f64).ceil().max(1.0) as u64;
    (dropped > 0 && h.len() >= need)
        .then(|| h.value_at_quantile(need as f64 / h.len() as f64) as f64 / 1e6)
}

/// The sessions of the users that connections `first .. first + count` belong to
/// (connection `id` belongs to user `id % users + 1`).
fn worker_sessions(
    creds: &[Option<SessionCred>],
    users: u64,
    first: u64,
    count: u64,
) -> Vec<SessionCred> {
    if users == 0 {
        return Vec::new();
    }
    let needed: Box<dyn Iterator<Item = u64>> = if count >= users {
        Box::new(1..=users)
    } else {
        Box::new((first..first + count).map(|id| id % users + 1))
    };
    needed
        .filter_map(|u| creds.get((u - 1) as usize).cloned().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: u64) -> Option<SessionCred> {
        Some(SessionCred {
            user,
            session: format!("s{user}"),
            cookie: format!("ringwire-secret=x{user}"),
        })
    }

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

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["ringwire-loadtest"];
        v.extend_from_slice(extra);
        <crate::cli::Cli as clap::Parser>::try_parse_from(v)
            .unwrap()
            .run
    }

    #[test]
    fn reconnect_options_are_checked() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ok = |a: &[&str]| plan(&args(a), ip).map(|_| ()).map_err(|e| e.to_string());
        assert!(ok(&["--scenario", "churn", "--churn-per-sec", "50"]).is_ok());
        assert!(ok(&["--scenario", "churn", "--churn-per-sec", "0"]).is_err());
        assert!(ok(&[
            "--scenario",
            "storm",
            "--max-storm-secs",
            "10",
            "--max-gave-up",
            "2"
        ])
        .is_ok());
        assert!(ok(&["--scenario", "storm", "--storm-timeout", "0"]).is_err());
        assert!(ok(&["--scenario", "hold", "--max-storm-secs", "10"]).is_err());
        assert!(ok(&["--scenario", "hold", "--max-reconnect-failures", "0"]).is_err());
        assert!(ok(&["--scenario", "churn", "--max-reconnect-p99-ms", "5"]).is_ok());
        // The storm's time budget is part of the hard deadline.
        let short = plan(&args(&["--scenario", "storm", "--storm-timeout", "1"]), ip).unwrap();
        let long = plan(
            &args(&["--scenario", "storm", "--storm-timeout", "100"]),
            ip,
        )
        .unwrap();
        assert!(long.max_runtime >= short.max_runtime + Duration::from_secs(99));
    }

    #[test]
    fn sessions_per_worker() {
        let creds: Vec<_> = (1..=5).map(cred).collect();
        let users = |v: Vec<SessionCred>| v.iter().map(|c| c.user).collect::<Vec<_>>();
        // 12 connections over 5 users, workers of 4: ids 0..4, 4..8, 8..12.
        assert_eq!(users(worker_sessions(&creds, 5, 0, 4)), vec![1, 2, 3, 4]);
        assert_eq!(users(worker_sessions(&creds, 5, 4, 4)), vec![5, 1, 2, 3]);
        assert_eq!(users(worker_sessions(&creds, 5, 8, 4)), vec![4, 5, 1, 2]);
        assert_eq!(
            users(worker_sessions(&creds, 5, 0, 12)),
            vec![1, 2, 3, 4, 5]
        );
        assert!(worker_sessions(&creds, 0, 0, 4).is_empty());
        let mut holes = creds.clone();
        holes[1] = None;
        assert_eq!(users(worker_sessions(&holes, 5, 0, 3)), vec![1, 3]);
    }
}

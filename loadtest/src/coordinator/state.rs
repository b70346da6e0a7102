//! The coordinator's state while a run goes on ([`Run`]), and its phases ([`Phase`]).

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::push::PushStats;
use crate::admin::AdminClient;
use crate::cli::{RunArgs, Scenario};
use crate::coordinator::auth::Auth;
use crate::coordinator::plan::Plan;
use crate::coordinator::ui::Ui;
use crate::coordinator::workers::Worker;
use crate::report::{AuthReport, Outcome, TimelineSample};
use crate::stats;
use crate::sysinfo;

/// Progress period (the workers report at the same pace).
pub const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
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

/// The name of a phase in the report's `phase_seconds` and the status line.
pub fn phase_name(p: Phase) -> &'static str {
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

#[derive(Default, Clone, Copy)]
pub struct MemSample {
    pub rss: Option<u64>,
    pub slab: Option<u64>,
}

pub fn sample_mem(pid: Option<u32>) -> MemSample {
    MemSample {
        rss: pid.and_then(sysinfo::process_rss),
        slab: sysinfo::slab_bytes(),
    }
}

/// The latency histograms (µs) of a run.
pub struct Hists {
    /// Everything recorded (echo round trips, push latencies).
    pub total: Histogram<u64>,
    /// Since the last tick (the timeline's per-interval percentiles).
    pub tick: Histogram<u64>,
    /// Only what arrives while holding: all connections up, no ramp, no echo-check burst.
    pub steady: Histogram<u64>,
    /// Connect latency of first connects and of reconnects; storm time to reconnect.
    pub connect: Histogram<u64>,
    pub reconnect: Histogram<u64>,
    pub storm: Histogram<u64>,
    /// `--recover`: from a connection's drop until its recovery marker.
    pub recover: Histogram<u64>,
}

/// The push scenario's state.
pub struct PushRun {
    pub stats: Arc<PushStats>,
    pub task: Option<JoinHandle<()>>,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    pub drain_deadline: Option<Instant>,
    /// When the drain ended, and whether every expected message arrived.
    pub drain_done: Option<(Instant, bool)>,
    pub last_delivery: Option<Instant>,
    pub last_received: u64,
    /// (time, received) once per second, for the peak delivery rate.
    pub delivery_marks: Vec<(Instant, u64)>,
}

/// The churn scenario's state: when it started and ended, when the reconnects under way
/// were done (and whether all were), open connections (min, max) while churning.
#[derive(Default)]
pub struct ChurnRun {
    pub started: Option<Instant>,
    pub ended: Option<Instant>,
    pub settled: Option<(Instant, bool)>,
    pub open: Option<(u64, u64)>,
}

/// The storm scenario's state: when the drop was sent, and when all were back (or the
/// phase ended).
#[derive(Default)]
pub struct StormRun {
    pub sent: Option<Instant>,
    pub done: Option<Instant>,
}

/// The message rate shown in the status line (received per second, over >= 1 s).
pub struct Rate {
    pub last_received: u64,
    pub last_at: Instant,
    pub per_s: f64,
}

/// Everything the coordinator tracks while a run goes on.
pub struct Run<'a> {
    pub args: &'a RunArgs,
    pub plan: &'a Plan,
    pub ui: &'a Ui,
    pub users: u64,
    pub admin_client: Option<Arc<AdminClient>>,
    pub auth_report: Option<AuthReport>,
    pub workers: Vec<Worker>,
    pub started: Instant,
    pub started_unix_us: u64,
    pub hard_deadline: Instant,
    pub phase: Phase,
    pub outcome: Outcome,
    pub mem_before: MemSample,
    pub mem_all_up: MemSample,
    pub mem_end: MemSample,
    pub open_at_all_up: u64,
    pub open_at_end: Option<u64>,
    pub hist: Hists,
    pub timeline: Vec<TimelineSample>,
    pub rate: Rate,
    pub interrupts: u32,
    pub check_started: bool,
    pub check_completed: bool,
    pub reconnect_scenario: bool,
    pub push: PushRun,
    pub churn: ChurnRun,
    pub storm: StormRun,
    /// The host's CPU counters at the last timeline sample.
    pub cpu_last: Option<crate::sysinfo::CpuTimes>,
}

impl<'a> Run<'a> {
    pub fn new(
        args: &'a RunArgs,
        plan: &'a Plan,
        ui: &'a Ui,
        auth: Auth,
        workers: Vec<Worker>,
        started: Instant,
        started_unix_us: u64,
    ) -> Self {
        let mut outcome = Outcome {
            notes: auth.notes,
            ..Outcome::default()
        };
        if let Some(secs) = auth.mint_seconds {
            outcome.phase_seconds.insert("mint".to_string(), secs);
        }
        ui.restart_clock();
        Run {
            args,
            plan,
            ui,
            users: auth.users,
            admin_client: auth.admin_client,
            auth_report: auth.report,
            workers,
            started,
            started_unix_us,
            hard_deadline: started + plan.max_runtime,
            phase: Phase::Connecting,
            outcome,
            mem_before: MemSample::default(),
            mem_all_up: MemSample::default(),
            mem_end: MemSample::default(),
            open_at_all_up: 0,
            open_at_end: None,
            hist: Hists {
                total: stats::new_histogram(),
                tick: stats::new_histogram(),
                steady: stats::new_histogram(),
                connect: stats::new_histogram(),
                reconnect: stats::new_histogram(),
                storm: stats::new_histogram(),
                recover: stats::new_histogram(),
            },
            timeline: Vec::new(),
            rate: Rate {
                last_received: 0,
                last_at: Instant::now(),
                per_s: 0.0,
            },
            interrupts: 0,
            check_started: false,
            check_completed: false,
            reconnect_scenario: matches!(args.scenario, Scenario::Churn | Scenario::Storm),
            push: PushRun {
                stats: PushStats::new(),
                task: None,
                started: None,
                finished: None,
                drain_deadline: None,
                drain_done: None,
                last_delivery: None,
                last_received: 0,
                delivery_marks: Vec::new(),
            },
            churn: ChurnRun::default(),
            storm: StormRun::default(),
            cpu_last: crate::sysinfo::CpuTimes::now(),
        }
    }
}

//! The push driver (the `push` scenario; churn and storm with `--recover`): paced pushes
//! through the admin API, with the send timestamp stamped into the request body right
//! before it leaves.
//!
//! - [`body`]: the request bodies and the timestamp placeholders.
//! - [`schedule`]: the timetable, per-user sequence numbers, and which lane sends what.

mod body;
mod schedule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::admin::{bump, short_body, AdminClient, Lane, Resp};
use crate::cli::PushMode;
use crate::recovery::Ledger;
use crate::stats;
use body::{build_body, stamp, Job};
use schedule::{schedule, Dispatch};

/// What the push driver does.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub mode: PushMode,
    /// Pushes per second (fanout: fan-out events per second).
    pub rate: f64,
    pub duration: Duration,
    pub batch_size: u64,
    pub users: u64,
    /// `--user-prefix`: users named `<prefix>i` instead of the number i.
    pub user_prefix: Option<String>,
    pub context: u64,
    pub path: String,
    pub coalesce: bool,
    pub concurrency: u64,
    /// Pad the pushed message to at least this many bytes.
    pub message_bytes: usize,
    /// Socket.IO endpoints: push the message as this event, `["<event>","<message>"]`.
    pub event: Option<String>,
    /// Deliveries to expect per accepted push (instead of the answers' `sockets`).
    pub expect_per_push: Option<u64>,
    /// `--recover`: messages carry the user and a per-user sequence number, each user's
    /// pushes go through one lane (so they reach the server in order), and the
    /// [`PushStats::ledger`] records them.
    pub user_seq: bool,
}

/// Live counters of the push driver (read by the coordinator every tick).
pub struct PushStats {
    pub requests: AtomicU64,
    pub requests_ok: AtomicU64,
    /// Pushes in requests that were sent.
    pub pushes_sent: AtomicU64,
    /// Sum of the `pushes` counts of the 202 answers.
    pub pushes_accepted: AtomicU64,
    /// Sum of the `sockets` counts of the 202 answers: deliveries to expect (or accepted
    /// pushes x `--expect-per-push`).
    pub sockets_expected: AtomicU64,
    /// Sum of the `remote_nodes` counts of the 202 answers (cluster: other nodes the pushes
    /// were queued for).
    pub remote_nodes: AtomicU64,
    /// Requests that failed (transport error or a status other than 2xx).
    pub http_errors: AtomicU64,
    pub errors_by_kind: Mutex<BTreeMap<String, u64>>,
    pub first_error: Mutex<Option<String>>,
    /// Request round trip of the admin API (µs), drained by the coordinator.
    pub api_latency: Mutex<Histogram<u64>>,
    /// Jobs that were sent later than scheduled by more than 100 ms (driver too slow).
    pub late_jobs: AtomicU64,
    pub finished: AtomicBool,
    /// Set by the coordinator to end the pushing early (storm: once it is over).
    pub stop: AtomicBool,
    /// With `user_seq`: what was sent to every user, and what was not accepted.
    pub ledger: Mutex<Ledger>,
    /// When the driver started sending / finished (last answer received).
    pub started_at: Mutex<Option<Instant>>,
    pub finished_at: Mutex<Option<Instant>>,
}

impl PushStats {
    pub fn new() -> Arc<Self> {
        Arc::new(PushStats {
            requests: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            pushes_sent: AtomicU64::new(0),
            pushes_accepted: AtomicU64::new(0),
            sockets_expected: AtomicU64::new(0),
            remote_nodes: AtomicU64::new(0),
            http_errors: AtomicU64::new(0),
            errors_by_kind: Mutex::new(BTreeMap::new()),
            first_error: Mutex::new(None),
            api_latency: Mutex::new(stats::new_histogram()),
            late_jobs: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ledger: Mutex::new(Ledger::default()),
            started_at: Mutex::new(None),
            finished_at: Mutex::new(None),
        })
    }
}

#[derive(Deserialize)]
struct PushResp {
    pushes: Option<u64>,
    sockets: Option<u64>,
    remote_nodes: Option<u64>,
}

/// Number of pushes (targeted modes) or fan-out events the run will send.
pub fn planned_units(cfg: &PushConfig) -> u64 {
    (cfg.rate * cfg.duration.as_secs_f64()).round().max(0.0) as u64
}

/// Sends the pushes of one run, paced to `cfg.rate`, then sets `stats.finished`.
pub async fn run_push(client: Arc<AdminClient>, cfg: PushConfig, stats: Arc<PushStats>) {
    let lanes = cfg.concurrency.max(1) as usize;
    let queues = if cfg.user_seq { lanes } else { 1 };
    let cfg = Arc::new(cfg);
    let mut senders = Vec::with_capacity(queues);
    let mut set = JoinSet::new();
    for _ in 0..queues {
        let (tx, rx) = mpsc::channel::<Job>(lanes * 2);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        senders.push(tx);
        for _ in 0..lanes / queues {
            let lane = Lane::new(client.clone());
            set.spawn(push_lane(lane, rx.clone(), stats.clone(), cfg.clone()));
        }
    }
    let start = Instant::now();
    *stats.started_at.lock().unwrap() = Some(start);
    schedule(&cfg, &stats, &Dispatch::new(senders), start).await;
    while set.join_next().await.is_some() {}
    *stats.finished_at.lock().unwrap() = Some(Instant::now());
    stats.finished.store(true, Relaxed);
}

/// One lane: sends the jobs it takes from `rx` (one request in flight), counts the
/// answers and (with `user_seq`) records them in the ledger.
async fn push_lane(
    mut lane: Lane,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    stats: Arc<PushStats>,
    cfg: Arc<PushConfig>,
) {
    let path_json = serde_json::to_string(&cfg.path).expect("serializable path");
    loop {
        let job = { rx.lock().await.recv().await };
        let Some(job) = job else { break };
        let accepted = send_job(&mut lane, &job, &stats, &cfg, &path_json).await;
        if cfg.user_seq {
            let pushes = job.pushes.iter().map(|p| (p.user, p.user_seq));
            stats.ledger.lock().unwrap().record(pushes, accepted);
        }
    }
}

/// Sends one job and counts its answer; returns whether it was accepted (2xx).
async fn send_job(
    lane: &mut Lane,
    job: &Job,
    stats: &PushStats,
    cfg: &PushConfig,
    path_json: &str,
) -> bool {
    let single = cfg.batch_size <= 1 && cfg.mode != PushMode::Fanout;
    let n = job.pushes.len() as u64;
    let mut body = build_body(job, cfg, path_json, !single);
    if let Err(kind) = lane.ready().await {
        stats.requests.fetch_add(1, Relaxed);
        stats.fail(kind, "connecting to the admin API".into());
        return false;
    }
    // The timestamp is taken right before the request is sent.
    stamp(&mut body, crate::sysinfo::unix_now_ns());
    let sent_at = Instant::now();
    stats.requests.fetch_add(1, Relaxed);
    stats.pushes_sent.fetch_add(n, Relaxed);
    let path = if single { "/v1/push" } else { "/v1/push/batch" };
    let result = lane.post(path, Bytes::from(body.bytes)).await;
    let rtt = sent_at.elapsed().as_micros() as u64;
    stats::record(&mut stats.api_latency.lock().unwrap(), rtt);
    match result {
        Ok(r) if (200..300).contains(&r.status) => {
            stats.count_answer(&r, n, cfg.expect_per_push);
            true
        }
        Ok(r) => {
            stats.fail(format!("http_{}", r.status), short_body(&r.body));
            false
        }
        Err(kind) => {
            stats.fail(kind, format!("POST {path}"));
            false
        }
    }
}

impl PushStats {
    /// A request that failed: counted by kind, the first one kept with `detail`.
    fn fail(&self, kind: String, detail: String) {
        self.http_errors.fetch_add(1, Relaxed);
        bump(&self.errors_by_kind, &kind);
        self.first_error
            .lock()
            .unwrap()
            .get_or_insert(format!("{kind}: {detail}"));
    }

    /// A 2xx answer to a request of `n` pushes: accepted pushes, deliveries to expect.
    fn count_answer(&self, r: &Resp, n: u64, expect_per_push: Option<u64>) {
        let p = match serde_json::from_slice::<PushResp>(&r.body) {
            Ok(p) => p,
            Err(e) => {
                let detail = format!("{e}: {}", short_body(&r.body));
                return self.fail("bad_response".into(), detail);
            }
        };
        self.requests_ok.fetch_add(1, Relaxed);
        let accepted = p.pushes.unwrap_or(n);
        self.pushes_accepted.fetch_add(accepted, Relaxed);
        let expect = match expect_per_push {
            Some(k) => accepted * k,
            None => p.sockets.unwrap_or(0),
        };
        self.sockets_expected.fetch_add(expect, Relaxed);
        self.remote_nodes
            .fetch_add(p.remote_nodes.unwrap_or(0), Relaxed);
        if p.sockets.is_none() {
            self.fail("bad_response".into(), short_body(&r.body));
        }
    }
}

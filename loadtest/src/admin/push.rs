//! The push driver of the `push` scenario: paced pushes through the admin API, with the
//! send timestamp stamped into the request body right before it leaves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::admin::{bump, short_body, AdminClient, Lane};
use crate::cli::PushMode;
use crate::rng::mix;
use crate::stats;

/// Width of the placeholder for the send timestamp (unix ns has 19 digits until 2286).
const TS_DIGITS: usize = 19;

/// What the push driver does.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub mode: PushMode,
    /// Pushes per second (fanout: fan-out events per second).
    pub rate: f64,
    pub duration: Duration,
    pub batch_size: u64,
    pub users: u64,
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
            started_at: Mutex::new(None),
            finished_at: Mutex::new(None),
        })
    }
}

/// One request: pushes to `users`, with sequence numbers `seq0 + i` (or all
/// `seq0` when `same_seq`, i.e. one fan-out event).
struct Job {
    users: Vec<u64>,
    seq0: u64,
    same_seq: bool,
}

/// A request body with the byte offsets of the timestamp placeholders.
struct Body {
    bytes: Vec<u8>,
    ts_at: Vec<usize>,
}

/// Builds the JSON body of a job. Single pushes (`batch == false`) are the
/// object of POST /v1/push; otherwise `{"pushes":[...]}`.
fn build_body(job: &Job, cfg: &PushConfig, path_json: &str, batch: bool) -> Body {
    let n = job.users.len();
    let mut b = Vec::with_capacity(n * (110 + cfg.message_bytes) + 16);
    let mut ts_at = Vec::with_capacity(n);
    if batch {
        b.extend_from_slice(b"{\"pushes\":[");
    }
    for (i, user) in job.users.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let seq = if job.same_seq {
            job.seq0
        } else {
            job.seq0 + i as u64
        };
        let head = format!(
            "{{\"context\":{},\"user\":{user},\"path\":{path_json},\"message\":",
            cfg.context
        );
        b.extend_from_slice(head.as_bytes());
        // The message, {"seq":S,"ts":T[,"pad":"xx.."]} with T a placeholder, optionally
        // wrapped as a Socket.IO event, then as a JSON string.
        let mut msg = format!("{{\"seq\":{seq},\"ts\":{}", "0".repeat(TS_DIGITS));
        let msg_len = msg.len() + 1;
        let pad_overhead = ",\"pad\":\"\"".len();
        if cfg.message_bytes > msg_len + pad_overhead {
            msg.push_str(",\"pad\":\"");
            msg.extend(std::iter::repeat_n(
                'x',
                cfg.message_bytes - msg_len - pad_overhead,
            ));
            msg.push('"');
        }
        msg.push('}');
        if let Some(event) = &cfg.event {
            msg = serde_json::to_string(&(event, &msg)).expect("serializable");
        }
        let field = serde_json::to_string(&msg).expect("serializable");
        // Digits are never escaped: the placeholder is the first '0' after the "ts" key
        // (which follows "seq" and its digits).
        let key = field.find("seq").expect("seq key");
        let key = key + field[key..].find("ts").expect("ts key");
        let at = key + field[key..].find('0').expect("ts placeholder");
        ts_at.push(b.len() + at);
        b.extend_from_slice(field.as_bytes());
        b.extend_from_slice(b",\"coalesce\":");
        b.extend_from_slice(if cfg.coalesce { b"true" } else { b"false" });
        b.push(b'}');
    }
    if batch {
        b.extend_from_slice(b"]}");
    }
    Body { bytes: b, ts_at }
}

fn stamp(body: &mut Body, unix_ns: u64) {
    let ts = format!("{unix_ns:0width$}", width = TS_DIGITS);
    let ts = &ts.as_bytes()[ts.len() - TS_DIGITS..];
    for &at in &body.ts_at {
        body.bytes[at..at + TS_DIGITS].copy_from_slice(ts);
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
    let lanes = cfg.concurrency.max(1);
    let (tx, rx) = mpsc::channel::<Job>(lanes as usize * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let cfg = Arc::new(cfg);
    let mut set = JoinSet::new();
    for _ in 0..lanes {
        let lane = Lane::new(client.clone());
        set.spawn(push_lane(lane, rx.clone(), stats.clone(), cfg.clone()));
    }
    let start = Instant::now();
    *stats.started_at.lock().unwrap() = Some(start);
    schedule(&cfg, &stats, &tx, start).await;
    drop(tx);
    while set.join_next().await.is_some() {}
    *stats.finished_at.lock().unwrap() = Some(Instant::now());
    stats.finished.store(true, Relaxed);
}

/// One lane: sends the jobs it takes from `rx` (one request in flight) and counts the
/// answers.
async fn push_lane(
    mut lane: Lane,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    stats: Arc<PushStats>,
    cfg: Arc<PushConfig>,
) {
    let path_json = serde_json::to_string(&cfg.path).expect("serializable path");
    let single = cfg.batch_size <= 1 && cfg.mode != PushMode::Fanout;
    loop {
        let job = { rx.lock().await.recv().await };
        let Some(job) = job else { break };
        let n = job.users.len() as u64;
        let mut body = build_body(&job, &cfg, &path_json, !single);
        let fail = |kind: String, detail: String| {
            stats.http_errors.fetch_add(1, Relaxed);
            bump(&stats.errors_by_kind, &kind);
            stats
                .first_error
                .lock()
                .unwrap()
                .get_or_insert(format!("{kind}: {detail}"));
        };
        if let Err(kind) = lane.ready().await {
            stats.requests.fetch_add(1, Relaxed);
            fail(kind, "connecting to the admin API".into());
            continue;
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
                match serde_json::from_slice::<PushResp>(&r.body) {
                    Ok(p) => {
                        stats.requests_ok.fetch_add(1, Relaxed);
                        let accepted = p.pushes.unwrap_or(n);
                        stats.pushes_accepted.fetch_add(accepted, Relaxed);
                        let expect = match cfg.expect_per_push {
                            Some(k) => accepted * k,
                            None => p.sockets.unwrap_or(0),
                        };
                        stats.sockets_expected.fetch_add(expect, Relaxed);
                        stats
                            .remote_nodes
                            .fetch_add(p.remote_nodes.unwrap_or(0), Relaxed);
                        if p.sockets.is_none() {
                            fail("bad_response".into(), short_body(&r.body));
                        }
                    }
                    Err(e) => fail(
                        "bad_response".into(),
                        format!("{e}: {}", short_body(&r.body)),
                    ),
                }
            }
            Ok(r) => fail(format!("http_{}", r.status), short_body(&r.body)),
            Err(kind) => fail(kind, format!("POST {path}")),
        }
    }
}

/// Queues the run's jobs, each at its due time (`late_jobs` counts those sent more than
/// 100 ms late), until all are queued or the lanes are gone.
async fn schedule(
    cfg: &PushConfig,
    stats: &Arc<PushStats>,
    tx: &mpsc::Sender<Job>,
    start: Instant,
) {
    let units = planned_units(cfg);
    let users = cfg.users.max(1);
    let b = cfg.batch_size.max(1);
    let send = |job: Job, due: Instant| {
        let tx = tx.clone();
        let stats = stats.clone();
        async move {
            sleep_until(due).await;
            if Instant::now() > due + Duration::from_millis(100) {
                stats.late_jobs.fetch_add(1, Relaxed);
            }
            tx.send(job).await.is_ok()
        }
    };
    match cfg.mode {
        PushMode::RoundRobin | PushMode::Random => {
            let mut seq = 0u64;
            while seq < units {
                let n = b.min(units - seq);
                let due = start + Duration::from_secs_f64(seq as f64 / cfg.rate);
                let users = (seq..seq + n)
                    .map(|s| match cfg.mode {
                        PushMode::Random => mix(s ^ 0x5eed) % users + 1,
                        _ => s % users + 1,
                    })
                    .collect();
                let job = Job {
                    users,
                    seq0: seq,
                    same_seq: false,
                };
                if !send(job, due).await {
                    break;
                }
                seq += n;
            }
        }
        PushMode::Fanout => {
            'events: for event in 0..units {
                let due = start + Duration::from_secs_f64(event as f64 / cfg.rate);
                let mut first = 1u64;
                while first <= users {
                    let last = (first + b - 1).min(users);
                    let job = Job {
                        users: (first..=last).collect(),
                        seq0: event,
                        same_seq: true,
                    };
                    if !send(job, due).await {
                        break 'events;
                    }
                    first = last + 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{parse_push_message, PushMessage, PUSH_EVENT};

    fn cfg(message_bytes: usize) -> PushConfig {
        PushConfig {
            mode: PushMode::RoundRobin,
            rate: 10.0,
            duration: Duration::from_secs(1),
            batch_size: 100,
            users: 3,
            context: 7,
            path: "/ws".into(),
            coalesce: false,
            concurrency: 1,
            message_bytes,
            event: None,
            expect_per_push: None,
        }
    }

    #[derive(Deserialize)]
    struct Push {
        context: u64,
        user: u64,
        path: String,
        message: String,
        coalesce: bool,
    }
    #[derive(Deserialize)]
    struct Batch {
        pushes: Vec<Push>,
    }

    #[test]
    fn bodies_are_valid_json_with_stamped_messages() {
        for bytes in [0, 32, 64, 1000] {
            let job = Job {
                users: vec![1, 2, 3],
                seq0: 10,
                same_seq: false,
            };
            let c = cfg(bytes);
            let mut body = build_body(&job, &c, "\"/ws\"", true);
            stamp(&mut body, 1_700_000_000_123_456_789);
            let batch: Batch = serde_json::from_slice(&body.bytes).unwrap();
            assert_eq!(batch.pushes.len(), 3);
            for (i, p) in batch.pushes.iter().enumerate() {
                assert_eq!(
                    (p.context, p.user, p.path.as_str()),
                    (7, i as u64 + 1, "/ws")
                );
                assert!(!p.coalesce);
                let m = parse_push_message(&p.message).unwrap();
                assert_eq!(m.seq, 10 + i as u64);
                assert_eq!(m.ts, 1_700_000_000_123_456_789);
                assert!(p.message.len() >= bytes);
                assert!(p.message.len() <= bytes.max(60));
            }
        }
        let job = Job {
            users: vec![5],
            seq0: 4,
            same_seq: true,
        };
        let mut body = build_body(&job, &cfg(0), "\"/a\\\"b\"", false);
        stamp(&mut body, 1_000_000_000_000_000_042);
        let p: Push = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(p.path, "/a\"b");
        assert_eq!(
            parse_push_message(&p.message),
            Some(PushMessage {
                seq: 4,
                ts: 1_000_000_000_000_000_042
            })
        );
        assert_eq!(parse_push_message("hello"), None);
    }

    #[test]
    fn socketio_pushes_are_events_with_the_message_as_a_string() {
        for bytes in [0, 100] {
            let job = Job {
                users: vec![1, 2],
                seq0: 3,
                same_seq: false,
            };
            let mut c = cfg(bytes);
            c.event = Some(PUSH_EVENT.to_string());
            c.path = "/socket.io/*".into();
            let mut body = build_body(&job, &c, "\"/socket.io/*\"", true);
            stamp(&mut body, 1_700_000_000_123_456_789);
            let batch: Batch = serde_json::from_slice(&body.bytes).unwrap();
            for (i, p) in batch.pushes.iter().enumerate() {
                assert_eq!(p.path, "/socket.io/*");
                let (event, message): (String, String) = serde_json::from_str(&p.message).unwrap();
                assert_eq!(event, "lt");
                let m = parse_push_message(&message).unwrap();
                assert_eq!((m.seq, m.ts), (3 + i as u64, 1_700_000_000_123_456_789));
                assert!(message.len() >= bytes);
                // What a client receives, as the server frames it.
                let packet = format!("42{}", p.message);
                assert_eq!(
                    crate::wire::engineio::unwrap_push(packet.strip_prefix("42").unwrap())
                        .as_deref(),
                    Some(message.as_str())
                );
            }
        }
    }
}

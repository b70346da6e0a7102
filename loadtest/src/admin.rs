//! Admin API client (plain HTTP/1.1 with keep-alive over hyper): minting sessions
//! (`POST /v1/sessions`) and the push driver of the `push` scenario
//! (`POST /v1/push/batch`, or `POST /v1/push` with `--batch-size 1`).
//!
//! Both run in the coordinator, with a fixed number of "lanes": one keep-alive
//! connection each, one request in flight each, reconnected after an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::cli::{AdminTarget, PushMode};
use crate::conn::classify_io;
use crate::stats;

/// Timeout of one admin request (connect included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per session before giving up on that user.
const MINT_ATTEMPTS: u32 = 4;
/// Failures (with nothing minted) after which minting stops.
const MINT_GIVE_UP: u64 = 16;
/// Width of the placeholder for the send timestamp (unix ns has 19 digits until 2286).
const TS_DIGITS: usize = 19;

pub struct AdminClient {
    addr: SocketAddr,
    target: AdminTarget,
    auth: Option<HeaderValue>,
}

impl AdminClient {
    pub async fn new(url: &str, token: Option<&str>) -> Result<Arc<Self>> {
        let target = AdminTarget::parse(url)?;
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .with_context(|| format!("resolving admin host {}", target.host))?
            .next()
            .with_context(|| format!("admin host {} resolved to no address", target.host))?;
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("--admin-token is not a valid header value")?;
        Ok(Arc::new(AdminClient { addr, target, auth }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One keep-alive connection to the admin API (connected lazily, dropped on error).
pub struct Lane {
    client: Arc<AdminClient>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// A response: status and body.
pub struct Resp {
    pub status: u16,
    pub body: Bytes,
}

impl Lane {
    pub fn new(client: Arc<AdminClient>) -> Self {
        Lane {
            client,
            sender: None,
        }
    }

    /// Connects if needed and waits until the connection can take a request.
    /// Errors are returned as a short kind (refused, timeout, ...).
    pub async fn ready(&mut self) -> Result<(), String> {
        if let Some(s) = self.sender.as_mut() {
            if s.ready().await.is_ok() {
                return Ok(());
            }
            self.sender = None;
        }
        let fut = async {
            let stream = TcpStream::connect(self.client.addr)
                .await
                .map_err(|e| classify_io(&e).to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "http_handshake".to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(sender)
        };
        let mut sender = timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| "timeout".to_string())??;
        sender.ready().await.map_err(|_| "closed".to_string())?;
        self.sender = Some(sender);
        Ok(())
    }

    /// POSTs a JSON body to `path` (relative to the admin URL's prefix). Call
    /// [`Lane::ready`] first to keep connection setup out of the measured time.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Resp, String> {
        self.ready().await?;
        let c = &self.client;
        let mut req = Request::post(format!("{}{path}", c.target.prefix))
            .header(HOST, c.target.authority.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = &c.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| "bad_request".to_string())?;
        let sender = self.sender.as_mut().expect("ready() connected");
        let fut = async {
            let resp = sender.send_request(req).await.map_err(|e| hyper_kind(&e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| hyper_kind(&e))?
                .to_bytes();
            Ok::<_, String>(Resp { status, body })
        };
        match timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(kind)) => {
                self.sender = None;
                Err(kind)
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".to_string())
            }
        }
    }
}

fn hyper_kind(e: &hyper::Error) -> String {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "closed".to_string()
    } else if e.is_parse() {
        "bad_response".to_string()
    } else {
        "http_error".to_string()
    }
}

fn short_body(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 200 {
        let mut i = 200;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}...", &s[..i])
    } else {
        s.to_string()
    }
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, kind: &str) {
    *map.lock().unwrap().entry(kind.to_string()).or_default() += 1;
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// Credentials of one user's session, handed to the workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCred {
    pub user: u64,
    pub session: String,
    /// Value of the Cookie header (`ringwire-secret=<secret>`).
    pub cookie: String,
}

#[derive(Deserialize)]
struct SessionResp {
    session: String,
    secret: Option<String>,
    cookie: Option<String>,
}

/// Outcome of minting the sessions of users 1..=U.
pub struct MintResult {
    /// Index `user - 1`; `None` if minting failed for that user.
    pub creds: Vec<Option<SessionCred>>,
    pub minted: u64,
    pub failed: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub seconds: f64,
}

#[derive(Serialize)]
struct SessionReq {
    user: u64,
    context: u64,
    ttl_secs: u64,
}

/// Mints one session per user 1..=`users` with `concurrency` keep-alive connections.
pub async fn mint_sessions(
    client: Arc<AdminClient>,
    users: u64,
    context: u64,
    ttl_secs: u64,
    concurrency: u64,
    log: &dyn Fn(String),
) -> MintResult {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicU64::new(0));
    let creds: Arc<Mutex<Vec<Option<SessionCred>>>> =
        Arc::new(Mutex::new(vec![None; users as usize]));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let lanes = concurrency.clamp(1, users.max(1));
    let mut set = JoinSet::new();
    for _ in 0..lanes {
        let failed = failed.clone();
        let (client, next, done, creds, errors, first_error) = (
            client.clone(),
            next.clone(),
            done.clone(),
            creds.clone(),
            errors.clone(),
            first_error.clone(),
        );
        set.spawn(async move {
            let mut lane = Lane::new(client);
            loop {
                // Give up early when the API is clearly not working (nothing minted yet
                // and every lane failed), instead of retrying every user.
                let f = failed.load(Relaxed);
                if f >= lanes.max(MINT_GIVE_UP) && done.load(Relaxed) == f {
                    break;
                }
                let user = next.fetch_add(1, Relaxed);
                if user > users {
                    break;
                }
                let body = serde_json::to_vec(&SessionReq {
                    user,
                    context,
                    ttl_secs,
                })
                .expect("serializable");
                let body = Bytes::from(body);
                let mut last_err = String::new();
                let mut ok = false;
                for attempt in 0..MINT_ATTEMPTS {
                    if attempt > 0 {
                        sleep(Duration::from_millis(50 << attempt)).await;
                    }
                    match lane.post("/v1/sessions", body.clone()).await {
                        Ok(r) if (200..300).contains(&r.status) => {
                            match serde_json::from_slice::<SessionResp>(&r.body) {
                                Ok(s) => {
                                    let cookie = match (s.cookie, s.secret) {
                                        (Some(c), _) => c,
                                        (None, Some(secret)) => {
                                            format!("ringwire-secret={secret}")
                                        }
                                        (None, None) => {
                                            last_err = "bad_response: no cookie or secret".into();
                                            break;
                                        }
                                    };
                                    creds.lock().unwrap()[(user - 1) as usize] =
                                        Some(SessionCred {
                                            user,
                                            session: s.session,
                                            cookie,
                                        });
                                    ok = true;
                                }
                                Err(e) => {
                                    last_err = format!("bad_response: {e}: {}", short_body(&r.body))
                                }
                            }
                            break;
                        }
                        Ok(r) => {
                            last_err = format!("http_{}: {}", r.status, short_body(&r.body));
                            // Client errors will not get better by retrying.
                            if r.status < 500 && r.status != 429 {
                                break;
                            }
                        }
                        Err(kind) => last_err = kind,
                    }
                }
                if !ok {
                    failed.fetch_add(1, Relaxed);
                    let kind = last_err.split(':').next().unwrap_or("error").to_string();
                    bump(&errors, &kind);
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("user {user}: {last_err}"));
                }
                done.fetch_add(1, Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            _ = tick.tick() => {
                let d = done.load(Relaxed);
                log(format!(
                    "minting sessions: {d}/{users} ({:.0}/s)",
                    d as f64 / started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    let creds = std::mem::take(&mut *creds.lock().unwrap());
    let minted = creds.iter().filter(|c| c.is_some()).count() as u64;
    let errors_by_kind = std::mem::take(&mut *errors.lock().unwrap());
    let first_error = first_error.lock().unwrap().take();
    MintResult {
        creds,
        minted,
        failed: users - minted,
        errors_by_kind,
        first_error,
        seconds: started.elapsed().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------

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

/// The Socket.IO event name of the push scenario's messages (`["lt","<message>"]`).
pub const PUSH_EVENT: &str = "lt";

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

/// The message carried by every push (JSON, embedded as a string in the push):
/// `{"seq":S,"ts":<unix ns taken right before the HTTP request was sent>}`,
/// optionally with a `"pad"` field.
#[derive(Debug, Deserialize, PartialEq)]
pub struct PushMessage {
    pub seq: u64,
    pub ts: u64,
}

/// Parses a pushed message; `None` if it is not one of ours.
pub fn parse_push_message(text: &str) -> Option<PushMessage> {
    if !text.starts_with("{\"seq\":") {
        return None;
    }
    serde_json::from_str(text).ok()
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

/// splitmix64, for the `random` push mode.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
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
    let path_json = serde_json::to_string(&cfg.path).expect("serializable path");
    let single = cfg.batch_size <= 1 && cfg.mode != PushMode::Fanout;
    let mut set = JoinSet::new();
    for _ in 0..lanes {
        let (client, rx, stats, cfg, path_json) = (
            client.clone(),
            rx.clone(),
            stats.clone(),
            cfg.clone(),
            path_json.clone(),
        );
        set.spawn(async move {
            let mut lane = Lane::new(client);
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
        });
    }

    let start = Instant::now();
    *stats.started_at.lock().unwrap() = Some(start);
    let units = planned_units(&cfg);
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
    drop(tx);
    while set.join_next().await.is_some() {}
    *stats.finished_at.lock().unwrap() = Some(Instant::now());
    stats.finished.store(true, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    crate::sio::unwrap_push(packet.strip_prefix("42").unwrap()).as_deref(),
                    Some(message.as_str())
                );
            }
        }
    }
}

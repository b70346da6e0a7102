//! One WebSocket connection: connect (optionally from a chosen source IP), then
//! run the scenario until told to stop. Every failure is counted, never panicked.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, timeout_at, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, COOKIE, RETRY_AFTER};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::admin::{parse_push_message, SessionCred};
use crate::cli::{url_with_session, Protocol, Scenario, Transport};
use crate::proto::Counters;
use crate::stats;

pub type Ws = WebSocketStream<TcpStream>;

/// What the worker tells every connection to do (broadcast through a watch channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Run,
    EchoCheck,
    Stop,
}

/// Per-connection parameters shared by all connections of a worker.
pub struct ConnParams {
    /// Where to connect, before the `session` parameter (Socket.IO: `EIO` and
    /// `transport` included).
    pub url: String,
    pub protocol: Protocol,
    pub transport: Transport,
    /// Engine.IO version (Socket.IO only).
    pub eio: u8,
    pub target: SocketAddr,
    pub source_addrs: Vec<IpAddr>,
    pub connect_timeout: Duration,
    pub scenario: Scenario,
    pub message_bytes: usize,
    pub interval: Duration,
    pub echo_timeout: Duration,
    pub ws_config: WebSocketConfig,
    /// `--auth session`: the sessions by user.
    pub sessions: Option<Sessions>,
    /// How connections reconnect after a churn close or a storm drop.
    pub reconnect: ReconnectPolicy,
}

/// Reconnect behaviour (churn and storm scenarios).
#[derive(Debug, Clone, Copy)]
pub struct ReconnectPolicy {
    /// Storm: give up this long after the drop.
    pub storm_timeout: Duration,
    /// Longest single wait between two attempts.
    pub max_wait: Duration,
    /// Exponential backoff (socket.io-client): base delay and cap.
    pub delay: Duration,
    pub delay_max: Duration,
}

impl ReconnectPolicy {
    /// The wait after a failed attempt: the server's `Retry-After: S` as S + random(0..S),
    /// otherwise socket.io-client's backoff (`delay * 2^failures`, +-50 % jitter, capped at
    /// `delay_max`); never more than `max_wait`. `failures` counts the earlier failures of
    /// this reconnect, `r` is uniform in [0, 1). Returns the wait and whether it followed
    /// `Retry-After`.
    pub fn wait(&self, retry_after: Option<u64>, failures: u32, r: f64) -> (Duration, bool) {
        let (wait, honoured) = match retry_after {
            Some(s) if s > 0 => (Duration::from_secs_f64(s as f64 * (1.0 + r)), true),
            _ => {
                // socket.io-client (engine.io-client's Backoff): jitter 0.5, factor 2.
                let base = self.delay.as_secs_f64() * 2f64.powi(failures.min(30) as i32);
                let deviation = (r * 0.5 * base * 1000.0).floor() / 1000.0;
                let secs = if ((r * 10.0).floor() as u64) & 1 == 0 {
                    base - deviation
                } else {
                    base + deviation
                };
                (
                    Duration::from_secs_f64(secs.min(self.delay_max.as_secs_f64()).max(0.0)),
                    false,
                )
            }
        };
        (wait.min(self.max_wait), honoured)
    }
}

/// Why a connection is told to go away and come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Churn: close gracefully, reconnect.
    Churn = 1,
    /// Storm: drop the TCP socket abruptly (RST), reconnect at once.
    Storm = 2,
}

/// Per-connection control shared with the worker: whether the connection is open, and
/// a pending churn/storm kick.
#[derive(Default)]
pub struct Slot {
    open: AtomicBool,
    kick: AtomicU8,
    notify: Notify,
}

impl Slot {
    /// Kicks the connection if it is open and not kicked yet; it then counts as
    /// reconnecting. Returns whether it was kicked.
    ///
    /// Workers run single-threaded, so the connection task cannot change state between
    /// the check and the kick.
    pub fn kick(&self, shared: &Shared, kick: Kick) -> bool {
        if !self.open.load(Relaxed) || self.kick.load(Relaxed) != 0 {
            return false;
        }
        self.kick.store(kick as u8, Relaxed);
        shared.reconnecting.fetch_add(1, Relaxed);
        self.notify.notify_one();
        true
    }

    /// The pending kick, if any (left in place).
    pub fn pending(&self) -> Option<Kick> {
        match self.kick.load(Relaxed) {
            1 => Some(Kick::Churn),
            2 => Some(Kick::Storm),
            _ => None,
        }
    }

    fn take(&self) -> Option<Kick> {
        let k = self.pending();
        self.kick.store(0, Relaxed);
        k
    }

    /// Completes when the connection may have been kicked (check [`Slot::pending`]).
    pub async fn kicked(&self) {
        self.notify.notified().await
    }
}

/// How an established connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Stopped by us (`Phase::Stop`), closed gracefully.
    Stopped,
    /// Ended by the server or the network: the drop kind.
    Dropped(String),
    /// Closed because of a churn/storm kick: reconnect.
    Kicked,
}

/// A failed connection attempt: its kind, and the server's `Retry-After` (seconds) if it
/// refused with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub kind: String,
    pub retry_after: Option<u64>,
}

impl From<String> for ConnectError {
    fn from(kind: String) -> Self {
        ConnectError {
            kind,
            retry_after: None,
        }
    }
}

impl From<&str> for ConnectError {
    fn from(kind: &str) -> Self {
        kind.to_string().into()
    }
}

/// A `Retry-After` value in seconds (the HTTP-date form is not used for this).
pub fn parse_retry_after(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

/// Sets `SO_LINGER` to zero, so that closing the socket sends a RST at once (an abrupt
/// drop, as after a network blip, without TIME_WAIT).
pub fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket fd owned by the caller and a linger value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Prepares an abrupt drop of a WebSocket: dropping it afterwards resets the TCP connection.
pub fn abort_ws(ws: &Ws) {
    set_linger_zero(ws.get_ref().as_raw_fd());
}

/// Session credentials of a worker's users.
pub struct Sessions {
    pub users: u64,
    pub by_user: HashMap<u64, SessionCred>,
}

impl ConnParams {
    /// The URL of connection `id` (`session=` added with --auth session) and the value
    /// of its Cookie header.
    pub fn url_and_cookie(&self, id: u64) -> Result<(String, Option<&str>), String> {
        match &self.sessions {
            None => Ok((self.url.clone(), None)),
            Some(s) => {
                let Some(cred) = s.by_user.get(&s.user_of(id)) else {
                    return Err("no_session".to_string());
                };
                Ok((
                    url_with_session(&self.url, &cred.session),
                    Some(cred.cookie.as_str()),
                ))
            }
        }
    }

    /// The source address of connection `id` (round robin), if any.
    pub fn source_of(&self, id: u64) -> Option<IpAddr> {
        match self.source_addrs.len() {
            0 => None,
            n => Some(self.source_addrs[(id % n as u64) as usize]),
        }
    }
}

impl Sessions {
    pub fn new(users: u64, creds: Vec<SessionCred>) -> Self {
        Sessions {
            users: users.max(1),
            by_user: creds.into_iter().map(|c| (c.user, c)).collect(),
        }
    }

    /// The user connection `id` belongs to.
    pub fn user_of(&self, id: u64) -> u64 {
        id % self.users + 1
    }
}

/// How long a single send may block before the connection is given up.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful close may take when stopping.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for outstanding echoes when stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters shared by all connections of a worker.
pub struct Shared {
    /// Time origin for the timestamps carried in messages.
    pub epoch: Instant,
    /// `epoch` as wall clock time (µs since the Unix epoch), to line up with the coordinator.
    pub epoch_unix_us: u64,
    /// When the latest connection attempt finished (µs since `epoch`).
    pub last_attempt_done_us: AtomicU64,
    pub attempts: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub mismatches: AtomicU64,
    pub unsolicited: AtomicU64,
    pub send_errors: AtomicU64,
    pub pings: AtomicU64,
    pub check_ok: AtomicU64,
    pub check_failed: AtomicU64,
    pub push_received: AtomicU64,
    pub failed_by_kind: Mutex<BTreeMap<String, u64>>,
    pub dropped_by_kind: Mutex<BTreeMap<String, u64>>,
    /// Latency samples since the last progress event (drained every 250 ms).
    pub latency: Mutex<Histogram<u64>>,
    /// Connect latency of first attempts / reconnects, and storm time to reconnect (µs),
    /// since the last progress event.
    pub connect_latency: Mutex<Histogram<u64>>,
    pub reconnect_latency: Mutex<Histogram<u64>>,
    pub storm_latency: Mutex<Histogram<u64>>,
    pub reconnect_attempts: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_failed: AtomicU64,
    pub reconnect_failed_by_kind: Mutex<BTreeMap<String, u64>>,
    pub reconnect_retries: AtomicU64,
    pub retry_after_waits: AtomicU64,
    pub backoff_waits: AtomicU64,
    pub retry_after_max_s: AtomicU64,
    pub reconnecting: AtomicU64,
    pub reconnect_abandoned: AtomicU64,
    pub churn_kicks: AtomicU64,
    pub churn_skipped: AtomicU64,
    pub storm_dropped: AtomicU64,
    pub storm_reconnected: AtomicU64,
    pub storm_gave_up: AtomicU64,
    /// When this worker dropped its connections (storm).
    pub storm_at: Mutex<Option<Instant>>,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            epoch_unix_us: crate::sysinfo::unix_now_us(),
            last_attempt_done_us: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            unsolicited: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            check_ok: AtomicU64::new(0),
            check_failed: AtomicU64::new(0),
            push_received: AtomicU64::new(0),
            failed_by_kind: Mutex::new(BTreeMap::new()),
            dropped_by_kind: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(stats::new_histogram()),
            connect_latency: Mutex::new(stats::new_histogram()),
            reconnect_latency: Mutex::new(stats::new_histogram()),
            storm_latency: Mutex::new(stats::new_histogram()),
            reconnect_attempts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reconnect_failed: AtomicU64::new(0),
            reconnect_failed_by_kind: Mutex::new(BTreeMap::new()),
            reconnect_retries: AtomicU64::new(0),
            retry_after_waits: AtomicU64::new(0),
            backoff_waits: AtomicU64::new(0),
            retry_after_max_s: AtomicU64::new(0),
            reconnecting: AtomicU64::new(0),
            reconnect_abandoned: AtomicU64::new(0),
            churn_kicks: AtomicU64::new(0),
            churn_skipped: AtomicU64::new(0),
            storm_dropped: AtomicU64::new(0),
            storm_reconnected: AtomicU64::new(0),
            storm_gave_up: AtomicU64::new(0),
            storm_at: Mutex::new(None),
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            attempts: self.attempts.load(Relaxed),
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            failed_by_kind: self.failed_by_kind.lock().unwrap().clone(),
            open: self.open.load(Relaxed),
            peak_open: self.peak_open.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            dropped_by_kind: self.dropped_by_kind.lock().unwrap().clone(),
            sent: self.sent.load(Relaxed),
            received: self.received.load(Relaxed),
            mismatches: self.mismatches.load(Relaxed),
            unsolicited: self.unsolicited.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            pings_received: self.pings.load(Relaxed),
            echo_check_ok: self.check_ok.load(Relaxed),
            echo_check_failed: self.check_failed.load(Relaxed),
            push_received: self.push_received.load(Relaxed),
            reconnect_attempts: self.reconnect_attempts.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            reconnect_failed: self.reconnect_failed.load(Relaxed),
            reconnect_failed_by_kind: self.reconnect_failed_by_kind.lock().unwrap().clone(),
            reconnect_retries: self.reconnect_retries.load(Relaxed),
            retry_after_waits: self.retry_after_waits.load(Relaxed),
            backoff_waits: self.backoff_waits.load(Relaxed),
            retry_after_max_s: self.retry_after_max_s.load(Relaxed),
            reconnecting: self.reconnecting.load(Relaxed),
            reconnect_abandoned: self.reconnect_abandoned.load(Relaxed),
            churn_kicks: self.churn_kicks.load(Relaxed),
            churn_skipped: self.churn_skipped.load(Relaxed),
            storm_dropped: self.storm_dropped.load(Relaxed),
            storm_reconnected: self.storm_reconnected.load(Relaxed),
            storm_gave_up: self.storm_gave_up.load(Relaxed),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A connection attempt finished (established or not).
    pub fn attempt_done(&self, result: Result<(), &str>) {
        self.last_attempt_done_us.fetch_max(self.now_us(), Relaxed);
        match result {
            Ok(()) => {
                self.connected.fetch_add(1, Relaxed);
                self.opened();
            }
            Err(kind) => {
                self.failed.fetch_add(1, Relaxed);
                Shared::count_kind(&self.failed_by_kind, kind);
            }
        }
    }

    fn opened(&self) {
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
    }

    /// An established connection ended: `Some(kind)` if it was dropped (not by us).
    pub fn connection_ended(&self, drop_kind: Option<&str>) {
        self.open.fetch_sub(1, Relaxed);
        if let Some(kind) = drop_kind {
            self.dropped.fetch_add(1, Relaxed);
            Shared::count_kind(&self.dropped_by_kind, kind);
        }
    }

    /// A message that may be one of the push scenario's: records its end-to-end latency
    /// and returns true if it is one.
    pub fn record_push(&self, text: &str) -> bool {
        let Some(m) = parse_push_message(text) else {
            return false;
        };
        self.push_received.fetch_add(1, Relaxed);
        // End to end: from right before the coordinator sent the push request.
        let lat_us = crate::sysinfo::unix_now_ns().saturating_sub(m.ts) / 1000;
        stats::record(&mut self.latency.lock().unwrap(), lat_us);
        true
    }

    /// A connection left the reconnecting state (connected, gave up or stopped).
    fn reconnect_over(&self) {
        let _ = self
            .reconnecting
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    fn count_kind(map: &Mutex<BTreeMap<String, u64>>, kind: &str) {
        let mut m = map.lock().unwrap();
        match m.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                m.insert(kind.to_string(), 1);
            }
        }
    }
}

/// Classifies an I/O error into a short, stable kind name for the report.
pub fn classify_io(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => return "refused",
        Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => return "reset",
        Some(libc::ETIMEDOUT) => return "timeout",
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => return "addr_unavailable",
        Some(libc::EMFILE) | Some(libc::ENFILE) => return "fd_limit",
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => return "unreachable",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => return "no_memory",
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "eof",
        _ => "io_error",
    }
}

/// Classifies a WebSocket error (handshake or established connection).
pub fn classify_ws(e: &WsError) -> String {
    match e {
        WsError::Io(io) => classify_io(io).to_string(),
        WsError::Http(resp) => format!("http_{}", resp.status().as_u16()),
        WsError::Protocol(_) => "protocol_error".to_string(),
        WsError::Capacity(_) => "capacity_error".to_string(),
        WsError::Utf8 => "utf8_error".to_string(),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
        WsError::Url(_) => "bad_url".to_string(),
        _ => "handshake_error".to_string(),
    }
}

/// Classifies a failed WebSocket handshake, keeping the `Retry-After` of a refusal.
pub fn handshake_error(e: &WsError) -> ConnectError {
    let retry_after = match e {
        WsError::Http(resp) => resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after),
        _ => None,
    };
    ConnectError {
        kind: classify_ws(e),
        retry_after,
    }
}

/// TCP connect (bound to `source` if given) + WebSocket handshake.
pub async fn connect(p: &ConnParams, id: u64, source: Option<IpAddr>) -> Result<Ws, ConnectError> {
    // With --auth session: `?session=<id>` and the secret cookie of this connection's user.
    let (url, cookie) = p.url_and_cookie(id)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| classify_ws(&e))?;
    if let Some(cookie) = cookie {
        let cookie = HeaderValue::from_str(cookie).map_err(|_| "bad_cookie")?;
        request.headers_mut().insert(COOKIE, cookie);
    }
    let stream = tcp_connect(p, source).await?;
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(p.ws_config))
            .await
            .map_err(|e| handshake_error(&e))?;
    Ok(ws)
}

/// TCP connect to the target, bound to `source` if given.
pub async fn tcp_connect(p: &ConnParams, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let io_kind = |e: io::Error| classify_io(&e).to_string();
    let sock = if p.target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_kind)?;
    if let Some(src) = source {
        // Let the kernel pick the port at connect() time, per (src, dst) 4-tuple,
        // instead of reserving a port per source IP at bind() time.
        let one: libc::c_int = 1;
        // SAFETY: valid fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(src, 0)).map_err(io_kind)?;
    }
    let stream = sock.connect(p.target).await.map_err(io_kind)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// splitmix64: cheap deterministic per-connection jitter without an RNG dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Builds an echo-scenario payload: `e:<id>:<seq>:<t_us>:` padded with 'x' to `bytes`.
pub fn echo_payload(id: u64, seq: u64, t_us: u64, bytes: usize) -> String {
    let mut s = format!("e:{id}:{seq}:{t_us}:");
    if s.len() < bytes {
        s.extend(std::iter::repeat_n('x', bytes - s.len()));
    }
    s
}

/// Parses an echo payload; returns (id, seq, t_us) if it is well formed for `bytes`.
pub fn parse_echo_payload(s: &str, bytes: usize) -> Option<(u64, u64, u64)> {
    let rest = s.strip_prefix("e:")?;
    let mut it = rest.splitn(4, ':');
    let id = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    let pad = it.next()?;
    let header_len = s.len() - pad.len();
    let want_len = bytes.max(header_len);
    (s.len() == want_len && pad.bytes().all(|b| b == b'x')).then_some((id, seq, t))
}

fn check_payload(id: u64, t_us: u64) -> String {
    format!("chk:{id}:{t_us}")
}

enum Check {
    Idle,
    Pending { payload: String, deadline: Instant },
    Done,
}

/// Opens connection `id` and runs it until `Phase::Stop` (or the peer goes away); churn
/// and storm kicks (through `slot`) make it close and connect again.
/// `permit` limits in-flight first connects and is released once that attempt is done.
pub async fn run(
    id: u64,
    p: Arc<ConnParams>,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    permit: OwnedSemaphorePermit,
    ctrl: watch::Receiver<Phase>,
) {
    let life = Life::new(id, &p, &shared, &slot, permit);
    match (p.protocol, p.transport) {
        (Protocol::Raw, _) => run_raw(id, &p, &shared, &slot, life, ctrl).await,
        (Protocol::Socketio, Transport::Websocket) => {
            crate::sio::run_websocket(id, &p, &shared, &slot, life, ctrl).await
        }
        (Protocol::Socketio, Transport::Polling) => {
            crate::sio::run_polling(id, &p, &shared, &slot, life, ctrl).await
        }
    }
}

/// What to do after a connection attempt.
pub enum Next<T> {
    /// Connected.
    Up(T),
    /// Failed; the wait is over, try again.
    Retry,
    /// Failed for good (first attempt, gave up, or stopped).
    Quit,
}

/// A reconnect under way.
struct Reconnect {
    kick: Kick,
    /// Start of the reconnect: the churn close, or the worker's storm drop.
    since: Instant,
    /// Storm: give up at this time.
    deadline: Option<Instant>,
    /// Failed attempts so far.
    failures: u32,
}

/// The life of one simulated client across reconnects: times and counts every connection
/// attempt, and waits between reconnect attempts.
pub struct Life<'a> {
    p: &'a ConnParams,
    shared: &'a Shared,
    slot: &'a Slot,
    /// Held during the first attempt (limits in-flight first connects).
    permit: Option<OwnedSemaphorePermit>,
    reconnect: Option<Reconnect>,
    rng: u64,
}

impl<'a> Life<'a> {
    pub fn new(
        id: u64,
        p: &'a ConnParams,
        shared: &'a Shared,
        slot: &'a Slot,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Life {
            p,
            shared,
            slot,
            permit: Some(permit),
            reconnect: None,
            rng: mix(id ^ crate::sysinfo::unix_now_ns()),
        }
    }

    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng = mix(self.rng);
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn established(&self) {
        self.slot.open.store(true, Relaxed);
    }

    /// Runs one connection attempt (`attempt`: TCP connect + handshake) within the connect
    /// timeout and counts it. The first attempt of a connection is not retried. A reconnect
    /// that fails waits (`Retry-After` + jitter, or the backoff) and returns `Retry`; it
    /// gives up at the storm deadline, and stops waiting on `Phase::Stop`.
    pub async fn attempt<T>(
        &mut self,
        ctrl: &mut watch::Receiver<Phase>,
        attempt: impl std::future::Future<Output = Result<T, ConnectError>>,
    ) -> Next<T> {
        let shared = self.shared;
        let t0 = Instant::now();
        let Some((kick, since, deadline)) = self
            .reconnect
            .as_ref()
            .map(|re| (re.kick, re.since, re.deadline))
        else {
            let r = within_connect_timeout(self.p, attempt).await;
            self.permit = None;
            return match r {
                Ok(x) => {
                    stats::record(
                        &mut shared.connect_latency.lock().unwrap(),
                        t0.elapsed().as_micros() as u64,
                    );
                    shared.attempt_done(Ok(()));
                    self.established();
                    Next::Up(x)
                }
                Err(e) => {
                    shared.attempt_done(Err(&e.kind));
                    Next::Quit
                }
            };
        };
        if *ctrl.borrow() == Phase::Stop {
            return self.abandon();
        }
        let limit = deadline.map_or(t0 + self.p.connect_timeout, |d| {
            d.min(t0 + self.p.connect_timeout)
        });
        shared.reconnect_attempts.fetch_add(1, Relaxed);
        let r = tokio::select! {
            r = timeout_at(limit, attempt) => r.unwrap_or_else(|_| Err("timeout".into())),
            _ = stopped(ctrl) => return self.abandon(),
        };
        let e = match r {
            Ok(x) => {
                self.reconnect = None;
                stats::record(
                    &mut shared.reconnect_latency.lock().unwrap(),
                    t0.elapsed().as_micros() as u64,
                );
                shared.reconnects.fetch_add(1, Relaxed);
                if kick == Kick::Storm {
                    shared.storm_reconnected.fetch_add(1, Relaxed);
                    stats::record(
                        &mut shared.storm_latency.lock().unwrap(),
                        since.elapsed().as_micros() as u64,
                    );
                }
                shared.reconnect_over();
                shared.opened();
                self.established();
                return Next::Up(x);
            }
            Err(e) => e,
        };
        shared.reconnect_failed.fetch_add(1, Relaxed);
        Shared::count_kind(&shared.reconnect_failed_by_kind, &e.kind);
        if let Some(s) = e.retry_after {
            shared.retry_after_max_s.fetch_max(s, Relaxed);
        }
        let r = self.random();
        let re = self.reconnect.as_mut().expect("reconnecting");
        let (wait, honoured) = self.p.reconnect.wait(e.retry_after, re.failures, r);
        re.failures += 1;
        let resume = Instant::now() + wait;
        if re.deadline.is_some_and(|d| resume >= d) {
            shared.storm_gave_up.fetch_add(1, Relaxed);
            shared.reconnect_over();
            return Next::Quit;
        }
        if honoured {
            shared.retry_after_waits.fetch_add(1, Relaxed);
        } else {
            shared.backoff_waits.fetch_add(1, Relaxed);
        }
        tokio::select! {
            _ = sleep_until(resume) => {
                shared.reconnect_retries.fetch_add(1, Relaxed);
                Next::Retry
            }
            _ = stopped(ctrl) => self.abandon(),
        }
    }

    /// The run stops while reconnecting.
    fn abandon<T>(&mut self) -> Next<T> {
        self.reconnect = None;
        self.shared.reconnect_abandoned.fetch_add(1, Relaxed);
        self.shared.reconnect_over();
        Next::Quit
    }

    /// An established connection ended (its socket is already closed or dropped). Returns
    /// true if it is to connect again (churn or storm kick).
    pub async fn ended(&mut self, end: End) -> bool {
        let shared = self.shared;
        self.slot.open.store(false, Relaxed);
        let kick = self.slot.take();
        match (end, kick) {
            // Kicked, or dropped while a kick was pending (it was leaving anyway).
            (End::Kicked | End::Dropped(_), Some(kick)) => {
                shared.connection_ended(None);
                let since = match kick {
                    Kick::Storm => shared.storm_at.lock().unwrap().unwrap_or_else(Instant::now),
                    Kick::Churn => Instant::now(),
                };
                self.reconnect = Some(Reconnect {
                    kick,
                    since,
                    deadline: (kick == Kick::Storm).then(|| since + self.p.reconnect.storm_timeout),
                    failures: 0,
                });
                if kick == Kick::Storm {
                    // Let every other kicked connection drop its socket before reconnecting,
                    // so that the drops happen together.
                    tokio::task::yield_now().await;
                }
                true
            }
            (End::Stopped, Some(_)) => {
                shared.connection_ended(None);
                shared.reconnect_over();
                false
            }
            (End::Dropped(kind), None) => {
                shared.connection_ended(Some(&kind));
                false
            }
            (End::Stopped | End::Kicked, None) => {
                shared.connection_ended(None);
                false
            }
        }
    }
}

/// Completes when the phase is (or becomes) `Stop`, or the worker is gone.
pub async fn stopped(ctrl: &mut watch::Receiver<Phase>) {
    loop {
        if *ctrl.borrow_and_update() == Phase::Stop {
            return;
        }
        if ctrl.changed().await.is_err() {
            return;
        }
    }
}

/// A connection attempt bounded by `--connect-timeout` (a timeout counts as "timeout").
pub async fn within_connect_timeout<T>(
    p: &ConnParams,
    attempt: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    timeout(p.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// A plain WebSocket connection.
async fn run_raw(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    mut life: Life<'_>,
    mut ctrl: watch::Receiver<Phase>,
) {
    let source = p.source_of(id);
    loop {
        let mut ws = loop {
            match life.attempt(&mut ctrl, connect(p, id, source)).await {
                Next::Up(ws) => break ws,
                Next::Retry => {}
                Next::Quit => return,
            }
        };
        let end = drive(id, p, shared, slot, &mut ws, &mut ctrl).await;
        drop(ws);
        if !life.ended(end).await {
            return;
        }
    }
}

/// The scenario loop of an established connection, until it is stopped, dropped or
/// kicked (churn: graceful close; storm: abrupt drop).
async fn drive(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    ws: &mut Ws,
    ctrl: &mut watch::Receiver<Phase>,
) -> End {
    let mut ticker: Option<Interval> = match p.scenario {
        Scenario::Echo => {
            let period = p.interval.max(Duration::from_millis(1));
            let offset = Duration::from_micros(mix(id) % (period.as_micros() as u64).max(1));
            let mut t = tokio::time::interval_at(Instant::now() + offset, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(t)
        }
        Scenario::Hold | Scenario::Push | Scenario::Churn | Scenario::Storm => None,
    };
    let mut seq = 0u64;
    let mut check = Check::Idle;
    let mut server_closed = false;
    // Echoes of our scenario messages received (`seq` is the number sent).
    let mut echoed = 0u64;
    // Set when stopping (or closing for churn) while echoes are outstanding.
    let mut drain_until: Option<Instant> = None;
    // How the connection ends once it has closed: stopped, or kicked (churn).
    let mut leaving = End::Stopped;
    // If we were connected after an echo check was requested, take part in it too.
    let mut pending_phase = Some(*ctrl.borrow_and_update());

    let outcome: End = loop {
        if let Some(phase) = pending_phase.take() {
            match phase {
                Phase::Run => {}
                Phase::Stop => {
                    // Let the echoes still in flight arrive before closing.
                    if seq > echoed && !server_closed {
                        ticker = None;
                        drain_until
                            .get_or_insert(Instant::now() + p.echo_timeout.min(DRAIN_TIMEOUT));
                    } else {
                        close(ws).await;
                        break leaving;
                    }
                }
                Phase::EchoCheck => {
                    if matches!(check, Check::Idle) {
                        let payload = check_payload(id, shared.now_us());
                        let deadline = Instant::now() + p.echo_timeout;
                        match timeout(SEND_TIMEOUT, ws.send(Message::text(payload.clone()))).await {
                            Ok(Ok(())) => check = Check::Pending { payload, deadline },
                            Ok(Err(e)) => {
                                check = Check::Done;
                                shared.check_failed.fetch_add(1, Relaxed);
                                shared.send_errors.fetch_add(1, Relaxed);
                                break End::Dropped(classify_ws(&e));
                            }
                            Err(_) => {
                                check = Check::Done;
                                shared.check_failed.fetch_add(1, Relaxed);
                                shared.send_errors.fetch_add(1, Relaxed);
                                break End::Dropped("send_timeout".to_string());
                            }
                        }
                    }
                }
            }
        }
        let check_deadline = match &check {
            Check::Pending { deadline, .. } => Some(*deadline),
            _ => None,
        };
        tokio::select! {
            biased;
            changed = ctrl.changed() => {
                pending_phase = Some(if changed.is_err() { Phase::Stop } else { *ctrl.borrow_and_update() });
            }
            _ = slot.kicked(), if drain_until.is_none() => match slot.pending() {
                Some(Kick::Storm) => {
                    abort_ws(ws);
                    break End::Kicked;
                }
                Some(Kick::Churn) => {
                    leaving = End::Kicked;
                    if seq > echoed && !server_closed {
                        // Let the echoes in flight arrive first, as when stopping.
                        ticker = None;
                        drain_until = Some(Instant::now() + p.echo_timeout.min(DRAIN_TIMEOUT));
                    } else {
                        close(ws).await;
                        break End::Kicked;
                    }
                }
                None => {}
            },
            msg = ws.next() => match msg {
                None => break End::Dropped(if server_closed { "closed_by_server" } else { "eof" }.to_string()),
                Some(Err(e)) => break End::Dropped(if server_closed { "closed_by_server".to_string() } else { classify_ws(&e) }),
                Some(Ok(Message::Text(text))) => {
                    if on_text(id, p, shared, &text, &mut check) {
                        echoed += 1;
                        if drain_until.is_some() && echoed >= seq {
                            close(ws).await;
                            break leaving;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => { shared.unsolicited.fetch_add(1, Relaxed); }
                Some(Ok(Message::Ping(_))) => { shared.pings.fetch_add(1, Relaxed); }
                Some(Ok(Message::Close(_))) => server_closed = true,
                Some(Ok(_)) => {}
            },
            _ = async { sleep_until(check_deadline.unwrap()).await }, if check_deadline.is_some() => {
                check = Check::Done;
                shared.check_failed.fetch_add(1, Relaxed);
            }
            _ = async { sleep_until(drain_until.unwrap()).await }, if drain_until.is_some() => {
                close(ws).await;
                break leaving;
            }
            _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() && !server_closed => {
                let payload = echo_payload(id, seq, shared.now_us(), p.message_bytes);
                seq += 1;
                match timeout(SEND_TIMEOUT, ws.send(Message::text(payload))).await {
                    Ok(Ok(())) => { shared.sent.fetch_add(1, Relaxed); }
                    Ok(Err(e)) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        break End::Dropped(classify_ws(&e));
                    }
                    Err(_) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        break End::Dropped("send_timeout".to_string());
                    }
                }
            }
        }
    };
    // A check that was requested but never answered on this connection fails.
    let check_requested =
        *ctrl.borrow() == Phase::EchoCheck || pending_phase == Some(Phase::EchoCheck);
    match check {
        Check::Pending { .. } => {
            shared.check_failed.fetch_add(1, Relaxed);
        }
        Check::Idle if check_requested => {
            shared.check_failed.fetch_add(1, Relaxed);
        }
        _ => {}
    }
    outcome
}

pub async fn close(ws: &mut Ws) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Handles a text message; returns true if it was the echo of one of our scenario messages.
fn on_text(id: u64, p: &ConnParams, shared: &Shared, text: &str, check: &mut Check) -> bool {
    if text.starts_with("chk:") {
        if let Check::Pending { payload, .. } = check {
            if text == payload.as_str() {
                shared.check_ok.fetch_add(1, Relaxed);
            } else {
                shared.mismatches.fetch_add(1, Relaxed);
                shared.check_failed.fetch_add(1, Relaxed);
            }
            *check = Check::Done;
        } else {
            shared.mismatches.fetch_add(1, Relaxed);
        }
        return false;
    }
    if p.scenario == Scenario::Push && shared.record_push(text) {
        return false;
    }
    if text.starts_with("e:") {
        match parse_echo_payload(text, p.message_bytes) {
            Some((eid, _seq, t_us)) if eid == id => {
                shared.received.fetch_add(1, Relaxed);
                let rtt = shared.now_us().saturating_sub(t_us);
                stats::record(&mut shared.latency.lock().unwrap(), rtt);
                true
            }
            _ => {
                shared.mismatches.fetch_add(1, Relaxed);
                false
            }
        }
    } else {
        // Something the server pushed on its own (not an echo of ours).
        shared.unsolicited.fetch_add(1, Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        for bytes in [0, 8, 32, 100, 4096] {
            let s = echo_payload(7, 3, 123_456, bytes);
            assert!(s.len() >= bytes);
            assert_eq!(parse_echo_payload(&s, bytes), Some((7, 3, 123_456)));
            let mut bad = s.clone();
            bad.push('x');
            assert_eq!(parse_echo_payload(&bad, bytes), None);
        }
        assert_eq!(parse_echo_payload("e:1:2:3:xxy", 11), None);
        assert_eq!(parse_echo_payload("hello", 5), None);
    }

    fn policy(max_wait_ms: u64) -> ReconnectPolicy {
        ReconnectPolicy {
            storm_timeout: Duration::from_secs(60),
            max_wait: Duration::from_millis(max_wait_ms),
            delay: Duration::from_secs(1),
            delay_max: Duration::from_secs(5),
        }
    }

    #[test]
    fn reconnect_waits() {
        let p = policy(30_000);
        let ms = Duration::from_millis;
        // Retry-After: S -> S + random(0..S), capped by the max wait.
        assert_eq!(p.wait(Some(1), 0, 0.0), (ms(1000), true));
        assert_eq!(p.wait(Some(1), 5, 0.5), (ms(1500), true));
        assert_eq!(p.wait(Some(5), 0, 0.999).0, ms(9995));
        assert_eq!(p.wait(Some(100), 0, 0.9), (ms(30_000), true));
        // Otherwise socket.io-client's backoff: 1 s * 2^failures +-50 %, at most 5 s.
        assert_eq!(p.wait(None, 0, 0.0), (ms(1000), false));
        assert_eq!(p.wait(None, 0, 0.13), (ms(1065), false));
        assert_eq!(p.wait(Some(0), 1, 0.5), (ms(2500), false));
        for r in [0.0, 0.13, 0.25, 0.5, 0.77, 0.999] {
            let w = p.wait(None, 0, r).0;
            assert!(w >= ms(500) && w <= ms(1500), "{w:?}");
            let w = p.wait(None, 1, r).0;
            assert!(w >= ms(1000) && w <= ms(3000), "{w:?}");
            assert_eq!(p.wait(None, 40, r).0, ms(5000));
            assert!(policy(200).wait(None, 3, r).0 <= ms(200));
        }
    }

    #[tokio::test]
    async fn slots_are_kicked_once() {
        let shared = Shared::new();
        let slot = Slot::default();
        assert!(!slot.kick(&shared, Kick::Churn), "not open yet");
        slot.open.store(true, Relaxed);
        assert!(slot.kick(&shared, Kick::Storm));
        assert!(!slot.kick(&shared, Kick::Churn), "already kicked");
        assert_eq!(shared.reconnecting.load(Relaxed), 1);
        // The notification is kept until the connection looks.
        timeout(Duration::from_secs(1), slot.kicked())
            .await
            .unwrap();
        assert_eq!(slot.pending(), Some(Kick::Storm));
        assert_eq!(slot.take(), Some(Kick::Storm));
        assert_eq!(slot.pending(), None);
    }

    fn params(target: SocketAddr, max_wait_ms: u64) -> Arc<ConnParams> {
        Arc::new(ConnParams {
            url: format!("ws://{target}/ws"),
            protocol: Protocol::Raw,
            transport: Transport::Websocket,
            eio: 4,
            target,
            source_addrs: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            scenario: Scenario::Hold,
            message_bytes: 32,
            interval: Duration::from_secs(1),
            echo_timeout: Duration::from_secs(1),
            ws_config: WebSocketConfig::default(),
            sessions: None,
            reconnect: policy(max_wait_ms),
        })
    }

    /// Accepts WebSockets (echoing nothing), except that connections number
    /// `refused` (0-based) are answered `503` with `Retry-After: 1`.
    async fn server(refused: std::ops::Range<usize>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                if refused.contains(&n) {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 6\r\n\
                              Retry-After: 1\r\nConnection: close\r\n\r\nbusy\r\n",
                        )
                        .await;
                } else {
                    tokio::spawn(async move {
                        if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn refusal_keeps_retry_after() {
        let addr = server(0..1).await;
        let e = connect(&params(addr, 100), 0, None).await.err().unwrap();
        assert_eq!(
            e,
            ConnectError {
                kind: "http_503".to_string(),
                retry_after: Some(1)
            }
        );
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < give_up, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn storm_and_churn_reconnect() {
        // Connection 0 is accepted; after the storm drop, 1 and 2 are refused with 503.
        let addr = server(1..3).await;
        // Waits are capped at 20 ms so that the test is fast.
        let p = params(addr, 20);
        let shared = Arc::new(Shared::new());
        let slot = Arc::new(Slot::default());
        let (ctrl_tx, ctrl_rx) = watch::channel(Phase::Run);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let task = tokio::spawn(run(7, p, shared.clone(), slot.clone(), permit, ctrl_rx));
        until("connected", || shared.open.load(Relaxed) == 1).await;
        assert_eq!(shared.connected.load(Relaxed), 1);

        *shared.storm_at.lock().unwrap() = Some(Instant::now());
        assert!(slot.kick(&shared, Kick::Storm));
        until("storm reconnect", || {
            shared.storm_reconnected.load(Relaxed) == 1
        })
        .await;
        let c = shared.counters();
        assert_eq!(
            (
                c.reconnect_attempts,
                c.reconnect_failed,
                c.reconnect_retries
            ),
            (3, 2, 2)
        );
        assert_eq!(c.reconnect_failed_by_kind.get("http_503"), Some(&2));
        assert_eq!((c.retry_after_waits, c.retry_after_max_s), (2, 1));
        assert_eq!((c.open, c.reconnecting, c.dropped), (1, 0, 0));
        assert_eq!(c.connected, 1, "reconnects are not first connects");

        assert!(slot.kick(&shared, Kick::Churn));
        until("churn reconnect", || shared.reconnects.load(Relaxed) == 2).await;
        let c = shared.counters();
        assert_eq!((c.storm_reconnected, c.reconnect_failed, c.open), (1, 2, 1));
        assert_eq!(c.reconnecting, 0);

        ctrl_tx.send(Phase::Stop).unwrap();
        timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shared.open.load(Relaxed), 0);
        assert_eq!(shared.dropped.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn storm_gives_up_at_its_deadline() {
        // Every reconnect is refused.
        let addr = server(1..usize::MAX).await;
        let mut p = params(addr, 20);
        Arc::get_mut(&mut p).unwrap().reconnect.storm_timeout = Duration::from_millis(300);
        let shared = Arc::new(Shared::new());
        let slot = Arc::new(Slot::default());
        let (_ctrl_tx, ctrl_rx) = watch::channel(Phase::Run);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let task = tokio::spawn(run(1, p, shared.clone(), slot.clone(), permit, ctrl_rx));
        until("connected", || shared.open.load(Relaxed) == 1).await;
        *shared.storm_at.lock().unwrap() = Some(Instant::now());
        assert!(slot.kick(&shared, Kick::Storm));
        timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let c = shared.counters();
        assert_eq!(
            (c.storm_gave_up, c.storm_reconnected, c.reconnecting),
            (1, 0, 0)
        );
        assert!(c.reconnect_failed >= 2, "{}", c.reconnect_failed);
        assert_eq!(c.open, 0);
    }

    #[test]
    fn classifies_errors() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify_io(&e), "refused");
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(classify_io(&e), "addr_unavailable");
    }
}

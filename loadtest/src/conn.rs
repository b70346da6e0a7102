//! One WebSocket connection: connect (optionally from a chosen source IP), then
//! run the scenario until told to stop. Every failure is counted, never panicked.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, COOKIE};
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
                let open = self.open.fetch_add(1, Relaxed) + 1;
                self.peak_open.fetch_max(open, Relaxed);
            }
            Err(kind) => {
                self.failed.fetch_add(1, Relaxed);
                Shared::count_kind(&self.failed_by_kind, kind);
            }
        }
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

/// TCP connect (bound to `source` if given) + WebSocket handshake.
pub async fn connect(p: &ConnParams, id: u64, source: Option<IpAddr>) -> Result<Ws, String> {
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
            .map_err(|e| classify_ws(&e))?;
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

/// Opens connection `id` and runs it until `Phase::Stop` (or the peer goes away).
/// `permit` limits in-flight connects and is released once the handshake is done.
pub async fn run(
    id: u64,
    p: Arc<ConnParams>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    ctrl: watch::Receiver<Phase>,
) {
    match (p.protocol, p.transport) {
        (Protocol::Raw, _) => run_raw(id, p, shared, permit, ctrl).await,
        (Protocol::Socketio, Transport::Websocket) => {
            crate::sio::run_websocket(id, p, shared, permit, ctrl).await
        }
        (Protocol::Socketio, Transport::Polling) => {
            crate::sio::run_polling(id, p, shared, permit, ctrl).await
        }
    }
}

/// A connection attempt bounded by `--connect-timeout` (a timeout counts as "timeout").
pub async fn within_connect_timeout<T>(
    p: &ConnParams,
    attempt: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    timeout(p.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".to_string()))
}

/// A plain WebSocket connection.
async fn run_raw(
    id: u64,
    p: Arc<ConnParams>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    mut ctrl: watch::Receiver<Phase>,
) {
    let source = p.source_of(id);
    let result = within_connect_timeout(&p, connect(&p, id, source)).await;
    drop(permit);
    let mut ws = match result {
        Ok(ws) => ws,
        Err(kind) => {
            shared.attempt_done(Err(&kind));
            return;
        }
    };
    shared.attempt_done(Ok(()));

    let drop_kind = drive(id, &p, &shared, &mut ws, &mut ctrl).await;

    shared.connection_ended(drop_kind.as_deref());
}

/// The scenario loop of an established connection. Returns `Some(kind)` if the
/// connection ended on its own (dropped), `None` if it was stopped by us.
async fn drive(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    ws: &mut Ws,
    ctrl: &mut watch::Receiver<Phase>,
) -> Option<String> {
    let mut ticker: Option<Interval> = match p.scenario {
        Scenario::Echo => {
            let period = p.interval.max(Duration::from_millis(1));
            let offset = Duration::from_micros(mix(id) % (period.as_micros() as u64).max(1));
            let mut t = tokio::time::interval_at(Instant::now() + offset, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(t)
        }
        Scenario::Hold | Scenario::Push => None,
    };
    let mut seq = 0u64;
    let mut check = Check::Idle;
    let mut server_closed = false;
    // Echoes of our scenario messages received (`seq` is the number sent).
    let mut echoed = 0u64;
    // Set when stopping while echoes are outstanding.
    let mut drain_until: Option<Instant> = None;
    // If we were connected after an echo check was requested, take part in it too.
    let mut pending_phase = Some(*ctrl.borrow_and_update());

    let outcome: Option<String> = loop {
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
                        break None;
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
                                break Some(classify_ws(&e));
                            }
                            Err(_) => {
                                check = Check::Done;
                                shared.check_failed.fetch_add(1, Relaxed);
                                shared.send_errors.fetch_add(1, Relaxed);
                                break Some("send_timeout".to_string());
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
            msg = ws.next() => match msg {
                None => break Some(if server_closed { "closed_by_server" } else { "eof" }.to_string()),
                Some(Err(e)) => break Some(if server_closed { "closed_by_server".to_string() } else { classify_ws(&e) }),
                Some(Ok(Message::Text(text))) => {
                    if on_text(id, p, shared, &text, &mut check) {
                        echoed += 1;
                        if drain_until.is_some() && echoed >= seq {
                            close(ws).await;
                            break None;
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
                break None;
            }
            _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() && !server_closed => {
                let payload = echo_payload(id, seq, shared.now_us(), p.message_bytes);
                seq += 1;
                match timeout(SEND_TIMEOUT, ws.send(Message::text(payload))).await {
                    Ok(Ok(())) => { shared.sent.fetch_add(1, Relaxed); }
                    Ok(Err(e)) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        break Some(classify_ws(&e));
                    }
                    Err(_) => {
                        shared.send_errors.fetch_add(1, Relaxed);
                        break Some("send_timeout".to_string());
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

    #[test]
    fn classifies_errors() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(classify_io(&e), "refused");
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(classify_io(&e), "addr_unavailable");
    }
}

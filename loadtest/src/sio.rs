//! Socket.IO clients (Engine.IO v3 and v4) for `--protocol socketio`: over a WebSocket
//! (`transport=websocket`) and over HTTP/1.1 long-polling (`transport=polling`).
//!
//! What a client does:
//! - WebSocket: the first text frame is the open packet `0{"sid",..,"pingInterval",..}`.
//!   EIO 4: the client sends `40` and waits for `40{"sid":..}`; EIO 3: the server sends
//!   `40` by itself. Only then does the connection count as established.
//! - Polling: `GET ?EIO=..&transport=polling&session=..` answers the open packet; EIO 4:
//!   `POST ..&sid=<sid>` with `40` (answered `ok`); then `GET ..&sid=<sid>` until `40`
//!   arrives (EIO 3: it is queued at the open). After that a GET is always held by the
//!   server until it has packets (or a noop `6` after its polling timeout). Packets the
//!   client owes the server (pongs) are POSTed on the same keep-alive connection between
//!   two GETs; a second connection is opened only to POST while a GET is held (EIO 3
//!   client pings, the close packet `1` when stopping).
//! - Keepalive: EIO 4: the server pings (`2`), the client answers `3`; a client that
//!   hears no ping for pingInterval + pingTimeout drops the connection (`ping_timeout`).
//!   EIO 3: the client pings every pingInterval and expects `3` within pingTimeout.
//! - Pushes arrive as `42["lt","<message>"]`: the message is unwrapped and measured like
//!   a raw push. Other events count as unsolicited.
//! - Stopping: WebSocket: `41` (leave the namespace), then a close frame. Polling: POST
//!   the close packet `1`; the server then answers the held GET.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::PUSH_EVENT;
use crate::cli::{percent_encode, split_url, Scenario};
use crate::conn::{
    abort_ws, classify_io, classify_ws, close, parse_retry_after, set_linger_zero, tcp_connect,
    ConnParams, ConnectError, End, Kick, Life, Next, Phase, Shared, Slot, Ws, CLOSE_TIMEOUT,
    SEND_TIMEOUT,
};

/// Largest HTTP response head accepted from the server.
const MAX_HEAD: usize = 16 << 10;
/// Largest HTTP response body accepted from the server.
const MAX_BODY: usize = 16 << 20;
/// Slack on top of pingInterval + pingTimeout for a held GET.
const GET_SLACK: Duration = Duration::from_secs(5);

/// What the open packet announces.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    pub sid: String,
    pub ping_interval: u64,
    pub ping_timeout: u64,
}

/// Parses the open packet `0{...}`.
pub fn parse_open(packet: &str) -> Result<OpenInfo, String> {
    let json = packet.strip_prefix('0').ok_or("sio_no_open")?;
    serde_json::from_str(json).map_err(|_| "sio_bad_open".to_string())
}

/// The message of a push-scenario event (`["lt","<message>"]`, the data of a `42`
/// packet); `None` for any other event.
pub fn unwrap_push(event: &str) -> Option<String> {
    let (name, message): (String, String) = serde_json::from_str(event).ok()?;
    (name == PUSH_EVENT).then_some(message)
}

/// Encodes packets as a long-polling payload: EIO 4 joins them with the record separator,
/// EIO 3 prefixes each with its length in UTF-16 code units and `:`.
pub fn encode_payload(eio: u8, packets: &[&str]) -> String {
    if eio >= 4 {
        return packets.join("\x1e");
    }
    let mut out = String::new();
    for p in packets {
        let _ = write!(out, "{}:{p}", p.encode_utf16().count());
    }
    out
}

/// Decodes a long-polling payload (text packets) into its packets.
pub fn decode_payload(eio: u8, body: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "bad_payload".to_string())?;
    if eio >= 4 {
        return Ok(text.split('\x1e').map(str::to_string).collect());
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':').ok_or("bad_payload")?;
        let want: usize = len.parse().map_err(|_| "bad_payload".to_string())?;
        let (mut units, mut end) = (0usize, 0usize);
        for (i, ch) in after.char_indices() {
            if units >= want {
                break;
            }
            units += ch.len_utf16();
            end = i + ch.len_utf8();
        }
        if units != want {
            return Err("bad_payload".to_string());
        }
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    Ok(out)
}

/// Engine.IO keepalive of one client.
struct Keepalive {
    eio: u8,
    interval: Duration,
    timeout: Duration,
    /// The server is considered gone after this (EIO 4: no ping; EIO 3: no pong).
    dead_at: Option<Instant>,
    /// EIO 3: when the client's next ping is due.
    next_ping: Option<Instant>,
}

impl Keepalive {
    fn new(eio: u8, open: &OpenInfo) -> Self {
        let interval = Duration::from_millis(open.ping_interval.max(1));
        let timeout = Duration::from_millis(open.ping_timeout);
        let now = Instant::now();
        let (dead_at, next_ping) = if eio >= 4 {
            (Some(now + interval + timeout), None)
        } else {
            (None, Some(now + interval))
        };
        Keepalive {
            eio,
            interval,
            timeout,
            dead_at,
            next_ping,
        }
    }

    fn on_ping(&mut self) {
        if self.eio >= 4 {
            self.dead_at = Some(Instant::now() + self.interval + self.timeout);
        }
    }

    fn on_pong(&mut self) {
        if self.eio < 4 {
            self.dead_at = None;
        }
    }

    fn ping_sent(&mut self) {
        let now = Instant::now();
        self.next_ping = Some(now + self.interval);
        self.dead_at.get_or_insert(now + self.timeout);
    }

    /// How long a held GET may take before the connection is given up.
    fn get_timeout(&self) -> Duration {
        self.interval + self.timeout + GET_SLACK
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What to do after a packet from the server.
#[derive(Debug, PartialEq)]
enum Action {
    None,
    /// Send this packet back (a pong).
    Reply(String),
    /// The server ended the session: drop with this kind.
    End(&'static str),
}

/// Handles one Engine.IO packet from the server on an established connection.
fn on_packet(scenario: Scenario, shared: &Shared, ka: &mut Keepalive, packet: &str) -> Action {
    let Some(kind) = packet.chars().next() else {
        shared.unsolicited.fetch_add(1, Relaxed);
        return Action::None;
    };
    let data = &packet[1..];
    match kind {
        '2' => {
            shared.pings.fetch_add(1, Relaxed);
            ka.on_ping();
            Action::Reply(format!("3{data}"))
        }
        '3' => {
            shared.pings.fetch_add(1, Relaxed);
            ka.on_pong();
            Action::None
        }
        '6' => Action::None,
        '1' => Action::End("eio_close"),
        '4' => {
            if let Some(event) = data.strip_prefix('2') {
                if scenario == Scenario::Push {
                    if let Some(message) = unwrap_push(event) {
                        if shared.record_push(&message) {
                            return Action::None;
                        }
                    }
                }
            } else if data.starts_with('1') {
                return Action::End("sio_disconnect");
            } else if data.starts_with('4') {
                return Action::End("sio_connect_error");
            }
            shared.unsolicited.fetch_add(1, Relaxed);
            Action::None
        }
        _ => {
            shared.unsolicited.fetch_add(1, Relaxed);
            Action::None
        }
    }
}

/// Handles a packet that arrives before the connect is confirmed. `Ok(true)`: confirmed.
fn on_connect_packet(
    ka: &mut Keepalive,
    packet: &str,
    out: &mut Vec<String>,
) -> Result<bool, String> {
    if packet.starts_with("40") {
        return Ok(true);
    }
    if packet.starts_with("44") {
        return Err("sio_connect_error".to_string());
    }
    if packet.starts_with('1') {
        return Err("eio_close".to_string());
    }
    if let Some(data) = packet.strip_prefix('2') {
        ka.on_ping();
        out.push(format!("3{data}"));
    }
    Ok(false)
}

// ---------------------------------------------------------------------------
// WebSocket transport
// ---------------------------------------------------------------------------

/// A Socket.IO client over a WebSocket (reconnecting after churn and storm kicks).
pub async fn run_websocket(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    mut life: Life<'_>,
    mut ctrl: watch::Receiver<Phase>,
) {
    let source = p.source_of(id);
    loop {
        let (mut ws, mut ka) = loop {
            match life.attempt(&mut ctrl, ws_connect(p, id, source)).await {
                Next::Up(x) => break x,
                Next::Retry => {}
                Next::Quit => return,
            }
        };
        let end = ws_drive(p, shared, slot, &mut ws, &mut ka, &mut ctrl).await;
        drop(ws);
        if !life.ended(end).await {
            return;
        }
    }
}

/// The next text frame (WebSocket pings are answered by tungstenite).
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            None => return Err("eof".to_string()),
            Some(Err(e)) => return Err(classify_ws(&e)),
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) => return Err("closed_by_server".to_string()),
            Some(Ok(_)) => {}
        }
    }
}

async fn ws_send(ws: &mut Ws, text: String) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify_ws(&e)),
        Err(_) => Err("send_timeout".to_string()),
    }
}

/// WebSocket handshake, open packet, namespace connect.
async fn ws_connect(
    p: &ConnParams,
    id: u64,
    source: Option<IpAddr>,
) -> Result<(Ws, Keepalive), ConnectError> {
    let mut ws = crate::conn::connect(p, id, source).await?;
    let open = parse_open(&next_text(&mut ws).await?)?;
    let mut ka = Keepalive::new(p.eio, &open);
    if p.eio >= 4 {
        ws_send(&mut ws, "40".to_string()).await?;
    }
    let mut out = Vec::new();
    loop {
        let text = next_text(&mut ws).await?;
        let done = on_connect_packet(&mut ka, &text, &mut out)?;
        for reply in out.drain(..) {
            ws_send(&mut ws, reply).await?;
        }
        if done {
            return Ok((ws, ka));
        }
    }
}

/// An established Socket.IO WebSocket until stopped, dropped or kicked.
async fn ws_drive(
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    ws: &mut Ws,
    ka: &mut Keepalive,
    ctrl: &mut watch::Receiver<Phase>,
) -> End {
    let mut server_closed = false;
    let mut phase = *ctrl.borrow_and_update();
    let mut leaving = End::Stopped;
    loop {
        if phase == Phase::Stop {
            // As socket.io-client's disconnect(): leave the namespace, close the transport.
            let _ = timeout(CLOSE_TIMEOUT, ws.send(Message::text("41"))).await;
            close(ws).await;
            return leaving;
        }
        let (ping_at, dead_at) = if server_closed {
            (None, None)
        } else {
            (ka.next_ping, ka.dead_at)
        };
        tokio::select! {
            biased;
            changed = ctrl.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *ctrl.borrow_and_update() };
            }
            _ = slot.kicked() => match slot.pending() {
                Some(Kick::Storm) => {
                    abort_ws(ws);
                    return End::Kicked;
                }
                Some(Kick::Churn) => {
                    // A graceful close, as when stopping.
                    leaving = End::Kicked;
                    phase = Phase::Stop;
                }
                None => {}
            },
            msg = ws.next() => match msg {
                None => {
                    return End::Dropped(if server_closed { "closed_by_server" } else { "eof" }.to_string())
                }
                Some(Err(e)) => {
                    return End::Dropped(if server_closed { "closed_by_server".to_string() } else { classify_ws(&e) })
                }
                Some(Ok(Message::Text(text))) => match on_packet(p.scenario, shared, ka, &text) {
                    Action::None => {}
                    Action::Reply(r) => {
                        if let Err(kind) = ws_send(ws, r).await {
                            return End::Dropped(kind);
                        }
                    }
                    Action::End(kind) => {
                        close(ws).await;
                        return End::Dropped(kind.to_string());
                    }
                },
                Some(Ok(Message::Binary(_))) => { shared.unsolicited.fetch_add(1, Relaxed); }
                Some(Ok(Message::Ping(_))) => { shared.pings.fetch_add(1, Relaxed); }
                Some(Ok(Message::Close(_))) => server_closed = true,
                Some(Ok(_)) => {}
            },
            _ = sleep_opt(ping_at) => {
                if let Err(kind) = ws_send(ws, "2".to_string()).await {
                    return End::Dropped(kind);
                }
                ka.ping_sent();
            }
            _ = sleep_opt(dead_at) => {
                close(ws).await;
                return End::Dropped("ping_timeout".to_string());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Long-polling transport
// ---------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection (Content-Length bodies only).
pub struct Http {
    stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResp {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, if given.
    pub retry_after: Option<u64>,
}

/// What a response head says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub len: usize,
    pub keep_alive: bool,
    pub retry_after: Option<u64>,
}

impl Http {
    pub fn new(stream: TcpStream) -> Self {
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    async fn read_more(&mut self) -> Result<(), String> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("eof".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(classify_io(&e).to_string()),
        }
    }

    /// Sends `req`, reads the response; returns it and whether the connection stays open.
    async fn exchange(&mut self, req: &[u8]) -> Result<(HttpResp, bool), String> {
        self.stream
            .write_all(req)
            .await
            .map_err(|e| classify_io(&e).to_string())?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err("bad_response".to_string());
            }
            self.read_more().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        let len = head.len;
        if len > MAX_BODY {
            return Err("bad_response".to_string());
        }
        while self.buf.len() < head_end + len {
            self.read_more().await?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        let resp = HttpResp {
            status: head.status,
            body,
            retry_after: head.retry_after,
        };
        Ok((resp, head.keep_alive))
    }
}

/// Parses a response head: status, content length, keep-alive, `Retry-After`.
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    let bad = || "bad_response".to_string();
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().ok_or_else(bad)?.splitn(3, ' ');
    let version = status_line.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status: u16 = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut len = None;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<usize>().map_err(|_| bad())?);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = parse_retry_after(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only Content-Length bodies are supported.
            return Err("bad_response_chunked".to_string());
        }
    }
    let len = match len {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err("bad_response_no_length".to_string()),
    };
    Ok(Head {
        status,
        len,
        keep_alive,
        retry_after,
    })
}

/// One request on a connection; the connection is given back if it can be reused.
async fn exchange(mut c: Http, req: Vec<u8>) -> (Option<Http>, Result<HttpResp, String>) {
    match c.exchange(&req).await {
        Ok((resp, keep_alive)) => (keep_alive.then_some(c), Ok(resp)),
        Err(kind) => (None, Err(kind)),
    }
}

type HeldGet = BoxFuture<'static, Result<(Option<Http>, Result<HttpResp, String>), ()>>;

/// The long-polling requests of one client.
struct Poller<'a> {
    p: &'a ConnParams,
    source: Option<IpAddr>,
    host: String,
    /// Request target of the handshake: `/socket.io/?EIO=4&transport=polling&session=S`.
    path: String,
    cookie: Option<String>,
    sid: String,
}

impl Poller<'_> {
    fn request(&self, method: &str, body: Option<&str>) -> Vec<u8> {
        let mut r = String::with_capacity(256 + body.map_or(0, str::len));
        let _ = write!(r, "{method} {}", self.path);
        if !self.sid.is_empty() {
            let _ = write!(r, "&sid={}", percent_encode(&self.sid));
        }
        let _ = write!(r, " HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n", self.host);
        if let Some(c) = &self.cookie {
            let _ = write!(r, "Cookie: {c}\r\n");
        }
        if let Some(b) = body {
            let _ = write!(
                r,
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            );
        } else {
            r.push_str("\r\n");
        }
        r.into_bytes()
    }

    fn get(&self) -> Vec<u8> {
        self.request("GET", None)
    }

    fn post(&self, packets: &[&str]) -> Vec<u8> {
        self.request("POST", Some(&encode_payload(self.p.eio, packets)))
    }

    async fn connect(&self) -> Result<Http, String> {
        Ok(Http::new(tcp_connect(self.p, self.source).await?))
    }

    /// A request on the connection in `slot` (opened if needed, kept if reusable);
    /// returns the body of a 200 answer. A reused connection that turns out to be closed
    /// (the server ends idle keep-alive connections) is replaced once, as HTTP clients do.
    async fn send(
        &self,
        slot: &mut Option<Http>,
        req: Vec<u8>,
        limit: Duration,
    ) -> Result<Vec<u8>, ConnectError> {
        let deadline = Instant::now() + limit;
        let (c, reused) = match slot.take() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let (mut c, mut r) = timeout_at(deadline, exchange(c, req.clone()))
            .await
            .map_err(|_| "timeout".to_string())?;
        if reused && matches!(r.as_ref().map_err(String::as_str), Err("eof" | "reset")) {
            let fresh = timeout_at(deadline, self.connect())
                .await
                .map_err(|_| "timeout".to_string())??;
            (c, r) = timeout_at(deadline, exchange(fresh, req))
                .await
                .map_err(|_| "timeout".to_string())?;
        }
        *slot = c;
        let resp = r?;
        if resp.status != 200 {
            return Err(ConnectError {
                kind: format!("http_{}", resp.status),
                retry_after: resp.retry_after,
            });
        }
        Ok(resp.body)
    }

    /// POSTs `packets` on `slot`.
    async fn post_on(&self, slot: &mut Option<Http>, packets: &[&str]) -> Result<(), String> {
        self.send(slot, self.post(packets), SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| e.kind)
    }
}

/// A Socket.IO client over HTTP long-polling (reconnecting after churn and storm kicks
/// with a new Engine.IO handshake, same ringwire session).
pub async fn run_polling(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    mut life: Life<'_>,
    mut ctrl: watch::Receiver<Phase>,
) {
    let (url, cookie) = match p.url_and_cookie(id) {
        Ok(x) => x,
        Err(kind) => {
            // Counted as a failed first attempt.
            let failed = async { Err::<(), _>(ConnectError::from(kind)) };
            let _ = life.attempt(&mut ctrl, failed).await;
            return;
        }
    };
    let (host, path) = split_url(&url);
    let mut poller = Poller {
        p,
        source: p.source_of(id),
        host,
        path,
        cookie: cookie.map(str::to_string),
        sid: String::new(),
    };
    loop {
        let mut main: Option<Http> = None;
        let (mut ka, pending) = loop {
            poller.sid.clear();
            match life
                .attempt(&mut ctrl, poll_connect(&mut poller, &mut main))
                .await
            {
                Next::Up(x) => break x,
                Next::Retry => main = None,
                Next::Quit => return,
            }
        };
        let end = poll_drive(&poller, shared, slot, main, &mut ka, pending, &mut ctrl).await;
        if !life.ended(end).await {
            return;
        }
    }
}

/// Handshake, namespace connect; returns the keepalive and packets received after the
/// connect confirmation.
async fn poll_connect(
    poller: &mut Poller<'_>,
    main: &mut Option<Http>,
) -> Result<(Keepalive, Vec<String>), ConnectError> {
    let eio = poller.p.eio;
    // The connect timeout bounds every request here.
    let limit = poller.p.connect_timeout;
    let body = poller.send(main, poller.get(), limit).await?;
    let mut pending: VecDeque<String> = decode_payload(eio, &body)?.into();
    let open = parse_open(&pending.pop_front().unwrap_or_default())?;
    poller.sid = open.sid.clone();
    let mut ka = Keepalive::new(eio, &open);
    if eio >= 4 {
        poller.send(main, poller.post(&["40"]), limit).await?;
    }
    let mut out = Vec::new();
    loop {
        while let Some(packet) = pending.pop_front() {
            let done = on_connect_packet(&mut ka, &packet, &mut out)?;
            if !out.is_empty() {
                let refs: Vec<&str> = out.iter().map(String::as_str).collect();
                poller.send(main, poller.post(&refs), limit).await?;
                out.clear();
            }
            if done {
                return Ok((ka, pending.into()));
            }
        }
        let body = poller.send(main, poller.get(), limit).await?;
        pending.extend(decode_payload(eio, &body)?);
    }
}

/// An established polling client until stopped, dropped or kicked.
async fn poll_drive(
    poller: &Poller<'_>,
    shared: &Shared,
    slot: &Slot,
    mut main: Option<Http>,
    ka: &mut Keepalive,
    pending: Vec<String>,
    ctrl: &mut watch::Receiver<Phase>,
) -> End {
    let p = poller.p;
    // Packets owed to the server, POSTed before the next GET.
    let mut out: Vec<String> = Vec::new();
    for packet in pending {
        match on_packet(p.scenario, shared, ka, &packet) {
            Action::None => {}
            Action::Reply(r) => out.push(r),
            Action::End(kind) => return End::Dropped(kind.to_string()),
        }
    }
    // The connection for POSTs while a GET is held (opened when first needed).
    let mut side: Option<Http> = None;
    let mut get: Option<HeldGet> = None;
    // The socket of the held GET (owned by its future), to reset it on a storm drop.
    let mut get_fd: Option<RawFd> = None;
    let mut phase = *ctrl.borrow_and_update();
    let mut leaving = End::Stopped;
    loop {
        if phase == Phase::Stop {
            // Close the session. With a GET held, the close packet goes on the second
            // connection and the server answers the held GET (with `1`).
            let slot = if get.is_some() { &mut side } else { &mut main };
            let _ = timeout(CLOSE_TIMEOUT, poller.post_on(slot, &["1"])).await;
            if let Some(held) = get.take() {
                let _ = timeout(CLOSE_TIMEOUT, held).await;
            }
            return leaving;
        }
        if get.is_none() {
            if !out.is_empty() {
                let refs: Vec<&str> = out.iter().map(String::as_str).collect();
                if let Err(kind) = poller.post_on(&mut main, &refs).await {
                    return End::Dropped(kind);
                }
                out.clear();
            }
            let c = match main.take() {
                Some(c) => c,
                None => match poller.connect().await {
                    Ok(c) => c,
                    Err(kind) => return End::Dropped(kind),
                },
            };
            get_fd = Some(c.stream.as_raw_fd());
            let req = poller.get();
            get = Some(
                timeout(ka.get_timeout(), exchange(c, req))
                    .map(|r| r.map_err(|_| ()))
                    .boxed(),
            );
        }
        let held = get.as_mut().expect("a GET in flight");
        tokio::select! {
            biased;
            changed = ctrl.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *ctrl.borrow_and_update() };
            }
            _ = slot.kicked() => match slot.pending() {
                Some(Kick::Storm) => {
                    // Reset every socket of this client; the server learns nothing else.
                    for c in [&main, &side].into_iter().flatten() {
                        set_linger_zero(c.stream.as_raw_fd());
                    }
                    if let Some(fd) = get_fd {
                        // Still owned by the held GET's future, dropped on return.
                        set_linger_zero(fd);
                    }
                    return End::Kicked;
                }
                Some(Kick::Churn) => {
                    // A graceful close (the close packet), as when stopping.
                    leaving = End::Kicked;
                    phase = Phase::Stop;
                }
                None => {}
            },
            r = held => {
                get = None;
                get_fd = None;
                let (c, resp) = match r {
                    Ok(x) => x,
                    Err(()) => return End::Dropped("timeout".to_string()),
                };
                main = c;
                let body = match resp {
                    Ok(HttpResp { status: 200, body, .. }) => body,
                    Ok(HttpResp { status, .. }) => return End::Dropped(format!("http_{status}")),
                    Err(kind) => return End::Dropped(kind),
                };
                let packets = match decode_payload(p.eio, &body) {
                    Ok(v) => v,
                    Err(kind) => return End::Dropped(kind),
                };
                for packet in packets {
                    match on_packet(p.scenario, shared, ka, &packet) {
                        Action::None => {}
                        Action::Reply(r) => out.push(r),
                        Action::End(kind) => return End::Dropped(kind.to_string()),
                    }
                }
            }
            _ = sleep_opt(ka.next_ping) => {
                // EIO 3: the client pings; the GET is held, so on the second connection.
                ka.ping_sent();
                let dead_at = ka.dead_at.unwrap_or_else(|| Instant::now() + SEND_TIMEOUT);
                match timeout_at(dead_at, poller.post_on(&mut side, &["2"])).await {
                    Ok(Ok(())) => {}
                    Ok(Err(kind)) => return End::Dropped(kind),
                    Err(_) => return End::Dropped("ping_timeout".to_string()),
                }
            }
            _ = sleep_opt(ka.dead_at) => return End::Dropped("ping_timeout".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_roundtrip() {
        let packets = ["40", "42[\"lt\",\"é😀\"]", "2", ""];
        for eio in [3, 4] {
            let enc = encode_payload(eio, &packets);
            assert_eq!(decode_payload(eio, enc.as_bytes()).unwrap(), packets);
        }
        assert_eq!(encode_payload(4, &["40", "2"]), "40\x1e2");
        // EIO 3 lengths are in UTF-16 code units.
        assert_eq!(encode_payload(3, &["4😀"]), "3:4😀");
        assert_eq!(
            decode_payload(3, "2:404:2abc".as_bytes()).unwrap(),
            ["40", "2abc"]
        );
        assert!(decode_payload(3, b"5:40").is_err());
        assert!(decode_payload(3, b"x:40").is_err());
        assert_eq!(decode_payload(4, b"6").unwrap(), ["6"]);
    }

    #[test]
    fn open_and_events() {
        let o = parse_open(
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(
            (o.sid.as_str(), o.ping_interval, o.ping_timeout),
            ("abc", 25000, 20000)
        );
        assert!(parse_open("40").is_err());
        assert_eq!(
            unwrap_push(r#"["lt","{\"seq\":1,\"ts\":2}"]"#).as_deref(),
            Some(r#"{"seq":1,"ts":2}"#)
        );
        assert_eq!(unwrap_push(r#"["other","x"]"#), None);
        assert_eq!(unwrap_push(r#"["lt",1]"#), None);
    }

    #[test]
    fn packets() {
        let shared = Shared::new();
        let open = OpenInfo {
            sid: "s".into(),
            ping_interval: 1000,
            ping_timeout: 500,
        };
        let mut ka = Keepalive::new(4, &open);
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "2"),
            Action::Reply("3".into())
        );
        let ts = crate::sysinfo::unix_now_ns();
        let push = format!("42[\"lt\",\"{{\\\"seq\\\":7,\\\"ts\\\":{ts}}}\"]");
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, &push),
            Action::None
        );
        assert_eq!(shared.push_received.load(Relaxed), 1);
        assert_eq!(
            on_packet(Scenario::Hold, &shared, &mut ka, &push),
            Action::None
        );
        assert_eq!(shared.unsolicited.load(Relaxed), 1);
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "41"),
            Action::End("sio_disconnect")
        );
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "1"),
            Action::End("eio_close")
        );
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "6"),
            Action::None
        );
        let mut out = Vec::new();
        assert!(on_connect_packet(&mut ka, "40{\"sid\":\"x\"}", &mut out).unwrap());
        assert!(!on_connect_packet(&mut ka, "2", &mut out).unwrap());
        assert_eq!(out, ["3"]);
        assert!(on_connect_packet(&mut ka, "44{\"message\":\"no\"}", &mut out).is_err());
    }

    #[test]
    fn heads() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n";
        let head = |status, len, keep_alive, retry_after| Head {
            status,
            len,
            keep_alive,
            retry_after,
        };
        assert_eq!(parse_head(h).unwrap(), head(200, 12, true, None));
        let h = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(400, 3, false, None));
        let h = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(200, 0, false, None));
        let h = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(503, 12, false, Some(1)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }
}

//! A Socket.IO client over HTTP long-polling (`transport=polling`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use crate::cli::{percent_encode, split_url};
use crate::client::control::{End, Kick, Phase, Slot};
use crate::client::life::Driver;
use crate::client::params::{ConnParams, CLOSE_TIMEOUT, SEND_TIMEOUT};
use crate::client::shared::Shared;
use crate::client::socketio::{on_connect_packet, on_packet, sleep_opt, Action, Keepalive};
use crate::wire::engineio::{decode_payload, encode_payload, parse_open};
use crate::wire::errors::ConnectError;
use crate::wire::http1::{exchange, Http, HttpResp};
use crate::wire::net::{set_linger_zero, tcp_connect};

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
        Ok(Http::new(tcp_connect(self.p.target, self.source).await?))
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
pub struct SioPolling<'a> {
    poller: Poller<'a>,
    /// Why the client cannot connect at all (`no_session`).
    setup_error: Option<String>,
    shared: &'a Shared,
    slot: &'a Slot,
}

impl<'a> SioPolling<'a> {
    pub fn new(id: u64, p: &'a ConnParams, shared: &'a Shared, slot: &'a Slot) -> Self {
        let (url, cookie, setup_error) = match p.url_and_cookie(id) {
            Ok((url, cookie)) => (url, cookie.map(str::to_string), None),
            Err(kind) => (String::new(), None, Some(kind)),
        };
        let (host, path) = split_url(&url);
        SioPolling {
            poller: Poller {
                p,
                source: p.source_of(id),
                host,
                path,
                cookie,
                sid: String::new(),
            },
            setup_error,
            shared,
            slot,
        }
    }
}

impl Driver for SioPolling<'_> {
    /// The keepalive, packets received after the connect confirmation, and the
    /// keep-alive connection to go on with.
    type Conn = (Keepalive, Vec<String>, Option<Http>);

    async fn connect(&mut self) -> Result<Self::Conn, ConnectError> {
        if let Some(kind) = &self.setup_error {
            return Err(kind.clone().into());
        }
        self.poller.sid.clear();
        let mut main: Option<Http> = None;
        let (ka, pending) = poll_connect(&mut self.poller, &mut main).await?;
        Ok((ka, pending, main))
    }

    async fn drive(
        &mut self,
        (mut ka, pending, main): Self::Conn,
        ctrl: &mut watch::Receiver<Phase>,
    ) -> End {
        poll_drive(
            &self.poller,
            self.shared,
            self.slot,
            main,
            &mut ka,
            pending,
            ctrl,
        )
        .await
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
    if let Err(end) = on_packets(p, shared, ka, pending, &mut out) {
        return end;
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
            match start_get(poller, &mut main, &mut out, ka).await {
                Ok((held, fd)) => (get, get_fd) = (Some(held), Some(fd)),
                Err(kind) => return End::Dropped(kind),
            }
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
                if let Err(end) = on_packets(p, shared, ka, packets, &mut out) {
                    return end;
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

/// Handles packets from the server; replies (pongs) are queued in `out`. `Err`: the
/// server ended the session.
fn on_packets(
    p: &ConnParams,
    shared: &Shared,
    ka: &mut Keepalive,
    packets: Vec<String>,
    out: &mut Vec<String>,
) -> Result<(), End> {
    for packet in packets {
        match on_packet(p.scenario, shared, ka, &packet) {
            Action::None => {}
            Action::Reply(r) => out.push(r),
            Action::End(kind) => return Err(End::Dropped(kind.to_string())),
        }
    }
    Ok(())
}

/// POSTs the packets owed (on the main connection), then sends the next GET on it (a new
/// connection if there is none); returns the held GET and its socket.
async fn start_get(
    poller: &Poller<'_>,
    main: &mut Option<Http>,
    out: &mut Vec<String>,
    ka: &Keepalive,
) -> Result<(HeldGet, RawFd), String> {
    if !out.is_empty() {
        let refs: Vec<&str> = out.iter().map(String::as_str).collect();
        poller.post_on(main, &refs).await?;
        out.clear();
    }
    let c = match main.take() {
        Some(c) => c,
        None => poller.connect().await?,
    };
    let fd = c.stream.as_raw_fd();
    let req = poller.get();
    let held = timeout(ka.get_timeout(), exchange(c, req))
        .map(|r| r.map_err(|_| ()))
        .boxed();
    Ok((held, fd))
}

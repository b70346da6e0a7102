//! The admin listener's accept loop and connections: what `axum::serve` does not bound.
//!
//! - **Request head**: a connection's first request head must be complete within
//!   `admin.header_read_timeout_ms` of the accept; a later one within that time of its first
//!   byte.
//! - **Idle keep-alive**: a connection with no request in progress and no byte of a new one is
//!   closed after `admin.idle_timeout_ms`.
//! - **Request**: from a complete head to the end of its handling (body upload included),
//!   `admin.request_timeout_ms`; the connection is closed beyond.
//! - **Connection cap**: at most `admin.max_connections` at once. A connection accepted at the
//!   cap takes the place of the one that has waited longest without a request in progress,
//!   preferring connections that never completed a request, then those that never made an
//!   authorized one (idle or half-sent floods go first, even ones that asked `/healthz`; the
//!   application's pooled keep-alive connections, which carry the token, last). Connections
//!   handling a request are never closed for a newcomer: when all are busy, the newcomer is
//!   answered 503 and closed at once.
//! - **Descriptor reserve**: a few descriptors (`/dev/null`) are held open. When `accept`
//!   fails with EMFILE/ENFILE, one is released so the waiting connection can be accepted and
//!   served (health checks keep answering, the backlog never hangs); a reload releases them
//!   while it reads its files. They are re-opened as soon as descriptors are free again.
//!
//! Times are checked by one watchdog per connection (a `select!` next to the hyper
//! connection); the phase it measures is updated by the connection's reads and by the
//! service wrapper around each request.
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::fs::File;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::AdminState;
use crate::config::AdminConfig;

/// Descriptors held in reserve for accepts at EMFILE and for reloads.
const RESERVE_DESCRIPTORS: usize = 4;
/// How long a connection accepted at the cap waits for the one it replaces to close.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// Pause before retrying an accept that failed with no reserve left to release.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const BUSY_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\nadmin connection limit reached (busy)\n";

/// Counters for `/metrics`.
#[derive(Default)]
pub struct ListenerStats {
    open: AtomicU64,
    accepted: AtomicU64,
    header_timeout: AtomicU64,
    idle_timeout: AtomicU64,
    request_timeout: AtomicU64,
    evicted: AtomicU64,
    refused_busy: AtomicU64,
    descriptors_exhausted: AtomicU64,
}

impl ListenerStats {
    pub fn metrics_text(&self, max_connections: usize) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        format!(
            "# HELP ringwire_admin_connections Open admin API connections\n\
             # TYPE ringwire_admin_connections gauge\n\
             ringwire_admin_connections {}\n\
             # HELP ringwire_admin_connections_max admin.max_connections\n\
             # TYPE ringwire_admin_connections_max gauge\n\
             ringwire_admin_connections_max {max_connections}\n\
             # HELP ringwire_admin_connections_accepted_total Admin API connections accepted\n\
             # TYPE ringwire_admin_connections_accepted_total counter\n\
             ringwire_admin_connections_accepted_total {}\n\
             # HELP ringwire_admin_connections_closed_total Admin API connections closed by the server, by reason\n\
             # TYPE ringwire_admin_connections_closed_total counter\n\
             ringwire_admin_connections_closed_total{{reason=\"header_timeout\"}} {}\n\
             ringwire_admin_connections_closed_total{{reason=\"idle_timeout\"}} {}\n\
             ringwire_admin_connections_closed_total{{reason=\"request_timeout\"}} {}\n\
             ringwire_admin_connections_closed_total{{reason=\"evicted\"}} {}\n\
             ringwire_admin_connections_closed_total{{reason=\"refused_busy\"}} {}\n\
             # HELP ringwire_admin_accept_descriptors_exhausted_total Admin accepts that failed with EMFILE/ENFILE\n\
             # TYPE ringwire_admin_accept_descriptors_exhausted_total counter\n\
             ringwire_admin_accept_descriptors_exhausted_total {}\n",
            g(&self.open),
            g(&self.accepted),
            g(&self.header_timeout),
            g(&self.idle_timeout),
            g(&self.request_timeout),
            g(&self.evicted),
            g(&self.refused_busy),
            g(&self.descriptors_exhausted),
        )
    }
}

/// Descriptors kept open so that an accept at EMFILE, or a reload, can have one.
pub struct FdReserve {
    files: Mutex<Vec<File>>,
}

impl Default for FdReserve {
    fn default() -> Self {
        let r = FdReserve {
            files: Mutex::new(Vec::with_capacity(RESERVE_DESCRIPTORS)),
        };
        r.refill();
        r
    }
}

impl FdReserve {
    /// Re-open what was released (as far as descriptors allow).
    pub fn refill(&self) {
        let mut files = self.files.lock().expect("reserve lock");
        while files.len() < RESERVE_DESCRIPTORS {
            match File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(_) => break,
            }
        }
    }

    /// Close one reserved descriptor; false when none is left.
    fn release_one(&self) -> bool {
        self.files.lock().expect("reserve lock").pop().is_some()
    }

    /// Close every reserved descriptor until the guard is dropped (then they are re-opened):
    /// a reload reads its configuration and certificate files with them.
    pub fn release_all(&self) -> ReserveReleased<'_> {
        self.files.lock().expect("reserve lock").clear();
        ReserveReleased(self)
    }
}

pub struct ReserveReleased<'a>(&'a FdReserve);

impl Drop for ReserveReleased<'_> {
    fn drop(&mut self) {
        self.0.refill();
    }
}

/// Timeouts in force for a connection (read from the configuration at its accept).
#[derive(Clone, Copy)]
struct Bounds {
    header: Duration,
    idle: Duration,
    request: Duration,
}

impl Bounds {
    fn of(c: &AdminConfig) -> Bounds {
        Bounds {
            header: Duration::from_millis(c.header_read_timeout_ms),
            idle: Duration::from_millis(c.idle_timeout_ms),
            request: Duration::from_millis(c.request_timeout_ms),
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head, since the accept or the head's first byte.
    Head(Instant),
    /// Between requests, since the last response was produced.
    Idle(Instant),
    /// Requests in progress (a count: hyper serves one at a time, but a pipelined head can
    /// reach the service before the previous response's guard is dropped).
    Busy(Instant, u32),
}

#[derive(Clone, Copy)]
enum Reason {
    Header,
    Idle,
    Request,
}

struct Conn {
    phase: Mutex<Phase>,
    /// At least one request was answered on this connection.
    served: AtomicBool,
    /// A request on this connection passed the token check (see [`Trusted`]).
    trusted: Arc<AtomicBool>,
    /// Chosen to make room for a newcomer (not chosen twice).
    evicting: AtomicBool,
    changed: Notify,
    kill: Notify,
}

impl Conn {
    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        {
            let mut p = self.phase.lock().expect("phase lock");
            *p = f(*p);
        }
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_read(&self) {
        let idle = matches!(*self.phase.lock().expect("phase lock"), Phase::Idle(_));
        if idle {
            self.set(|p| match p {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    fn begin(self: &Arc<Self>) -> BusyGuard {
        self.set(|p| match p {
            Phase::Busy(since, n) => Phase::Busy(since, n + 1),
            _ => Phase::Busy(Instant::now(), 1),
        });
        BusyGuard(self.clone())
    }

    fn deadline(&self, b: &Bounds) -> (Instant, Reason) {
        match *self.phase.lock().expect("phase lock") {
            Phase::Head(since) => (since + b.header, Reason::Header),
            Phase::Idle(since) => (since + b.idle, Reason::Idle),
            Phase::Busy(since, _) => (since + b.request, Reason::Request),
        }
    }

    /// Eviction order: never-served first, then never-authorized, then the longest wait.
    /// None = busy.
    fn eviction_rank(&self) -> Option<(bool, bool, Instant)> {
        match *self.phase.lock().expect("phase lock") {
            Phase::Busy(..) => None,
            Phase::Head(since) | Phase::Idle(since) => {
                Some((self.served.load(Relaxed), self.trusted.load(Relaxed), since))
            }
        }
    }
}

/// In each request's extensions: the token check marks the connection as the application's
/// (kept longest when the cap is reached).
#[derive(Clone)]
pub struct Trusted(Arc<AtomicBool>);

impl Trusted {
    pub fn set(&self) {
        self.0.store(true, Relaxed);
    }
}

/// Marks a request in progress until dropped (its response produced, or the request dropped).
struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.served.store(true, Relaxed);
        self.0.set(|p| match p {
            Phase::Busy(since, n) if n > 1 => Phase::Busy(since, n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// The TCP stream, reporting to its [`Conn`] when bytes arrive.
struct TrackedStream {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections, for eviction at the cap.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    /// Tell the best candidate to close; false when every connection is busy.
    fn evict_one(&self) -> bool {
        let conns = self.conns.lock().expect("registry lock");
        let victim = conns
            .values()
            .filter(|c| !c.evicting.load(Relaxed))
            .filter_map(|c| c.eviction_rank().map(|rank| (rank, c)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c.clone());
        match victim {
            Some(c) => {
                c.evicting.store(true, Relaxed);
                c.kill.notify_one();
                true
            }
            None => false,
        }
    }
}

fn descriptors_exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Accept and serve until the task is aborted.
pub(super) async fn run(listener: TcpListener, app: Router, state: AdminState) {
    let max = state.max_connections();
    let permits = Arc::new(Semaphore::new(max));
    let registry = Arc::new(Registry::default());
    let stats = state.listener_stats.clone();
    let reserve = state.fd_reserve.clone();
    let mut next_id = 0u64;
    loop {
        reserve.refill();
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if descriptors_exhausted(&e) => {
                stats.descriptors_exhausted.fetch_add(1, Relaxed);
                if reserve.release_one() {
                    tracing::warn!("admin accept: {e}; using a reserved descriptor");
                } else {
                    tracing::warn!("admin accept: {e}; no reserved descriptor left");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
            Err(e) => {
                // ECONNABORTED and the like: that connection is gone, the next one may not be.
                tracing::debug!("admin accept: {e}");
                continue;
            }
        };
        stats.accepted.fetch_add(1, Relaxed);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let room = if registry.evict_one() {
                    tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match room {
                    Some(p) => p,
                    None => {
                        stats.refused_busy.fetch_add(1, Relaxed);
                        let _ = stream.try_write(BUSY_503);
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let bounds = Bounds::of(&state.config.lock().expect("config lock").admin);
        let conn = Arc::new(Conn {
            phase: Mutex::new(Phase::Head(Instant::now())),
            served: AtomicBool::new(false),
            trusted: Arc::new(AtomicBool::new(false)),
            evicting: AtomicBool::new(false),
            changed: Notify::new(),
            kill: Notify::new(),
        });
        next_id += 1;
        let id = next_id;
        registry
            .conns
            .lock()
            .expect("registry lock")
            .insert(id, conn.clone());
        stats.open.fetch_add(1, Relaxed);
        let (app, registry, stats) = (app.clone(), registry.clone(), stats.clone());
        tokio::spawn(async move {
            serve_connection(stream, app, conn, bounds, &stats).await;
            registry.conns.lock().expect("registry lock").remove(&id);
            stats.open.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    conn: Arc<Conn>,
    bounds: Bounds,
    stats: &ListenerStats,
) {
    let io = TokioIo::new(TrackedStream {
        inner: stream,
        conn: conn.clone(),
    });
    let tower = TowerToHyperService::new(app);
    let busy = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = busy.begin();
        req.extensions_mut().insert(Trusted(busy.trusted.clone()));
        let response = hyper::service::Service::call(&tower, req);
        async move {
            let r = response.await;
            drop(guard);
            r
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(http);
    loop {
        let (deadline, _) = conn.deadline(&bounds);
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("admin connection: {e}");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let (deadline, reason) = conn.deadline(&bounds);
                if deadline <= Instant::now() {
                    let counter = match reason {
                        Reason::Header => &stats.header_timeout,
                        Reason::Idle => &stats.idle_timeout,
                        Reason::Request => &stats.request_timeout,
                    };
                    counter.fetch_add(1, Relaxed);
                    return;
                }
            }
            _ = conn.changed.notified() => {}
            _ = conn.kill.notified() => {
                stats.evicted.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}

/// The soft and hard RLIMIT_NOFILE of this process, from `/proc/self/limits`.
pub fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let parse = |f: Option<&str>| match f? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(fields.next())?, parse(fields.next())?))
}

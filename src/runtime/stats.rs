//! Per-core counters: written by the owning core only (relaxed), summed at scrape time.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// HTTP statuses an upgrade can be refused with, in metric order.
pub const REFUSAL_STATUSES: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 501, 503, 0,
];

/// WebSocket close codes counted by `ringwire_websocket_closes_total`, in metric order; 1005:
/// a close frame without a code; 0: any other code.
pub const CLOSE_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1011, 1013, 4001, 4002, 0,
];

/// A fixed array of counters (`Default` for any length; std stops at 32).
pub struct Counters<const N: usize>(pub [AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> std::ops::Deref for Counters<N> {
    type Target = [AtomicU64; N];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[derive(Default)]
pub struct ShardStats {
    /// Open sockets per endpoint (index = endpoint in the config).
    pub endpoint_sockets: Box<[AtomicU64]>,
    /// Open WebSockets owned by this core (gauge).
    pub sockets: AtomicU64,
    /// Connections in the handshake phase (gauge).
    pub handshakes: AtomicU64,
    pub accepted: AtomicU64,
    /// Connections that took a slot here (accepted into the table), and connections that
    /// finally closed here (a connection moved to another core closes there). The node's
    /// open connections are the sum of the first over every core minus the sum of the second
    /// ([`super::Shared::open_connections`]): each core writes only its own counters.
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub upgrades: AtomicU64,
    /// Refusals by status (index in REFUSAL_STATUSES; last = other).
    pub refused: [AtomicU64; REFUSAL_STATUSES.len()],
    /// Refusals by reason (index = `Refusal::index`, labels in `refusal::LABELS`).
    pub refused_by_reason: Counters<{ crate::service::refusal::LABELS.len() }>,
    /// Pushes handled by this core (owner of the user) and frames queued for them.
    pub pushes: AtomicU64,
    pub push_frames: AtomicU64,
    /// Sockets closed because their session was terminated or expired.
    pub closed_session_ended: AtomicU64,
    pub handoffs_out: AtomicU64,
    pub handoffs_in: AtomicU64,
    pub handoffs_failed: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Bytes received on WebSockets, and written to sockets.
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub closed_slow_consumer: AtomicU64,
    pub closed_idle: AtomicU64,
    pub accept_table_full: AtomicU64,
    pub recv_no_buffers: AtomicU64,
    pub pings_sent: AtomicU64,
    /// Long-polling Engine.IO sessions owned by this core (gauge).
    pub polling_sessions: AtomicU64,
    /// Long-polling requests served (GET and POST).
    pub polling_requests: AtomicU64,
    /// Packets dropped because a polling session's buffer was full.
    pub sio_dropped_packets: AtomicU64,
    /// Engine.IO transports upgraded from polling to WebSocket.
    pub sio_upgrades: AtomicU64,
    /// Pushes for other nodes: entered a queue, merged into an equal waiting one, dropped
    /// (queue full or the node went away).
    pub remote_queued: AtomicU64,
    pub remote_merged: AtomicU64,
    pub remote_dropped: AtomicU64,
    /// Pushes received from other nodes, handled by this core.
    pub remote_received: AtomicU64,
    /// Presence directory entries held by this core (gauge), and updates that did not fit.
    pub presence_entries: AtomicU64,
    pub presence_overflow: AtomicU64,
    /// `[tls]`: connections closed for a TLS error (bad record, failed handshake).
    pub tls_errors: AtomicU64,
    /// `[history]` (copied from the core's store): pushes recorded, dropped for the byte
    /// bound, dropped for size or ttl; bytes and streams held (gauges).
    pub history_appended: AtomicU64,
    pub history_evicted: AtomicU64,
    pub history_expired: AtomicU64,
    pub history_bytes: AtomicU64,
    pub history_streams: AtomicU64,
    /// Messages replayed to resuming clients.
    pub history_replayed: AtomicU64,
    /// Pushes that reached a socket before their user's previous one (pushes made on
    /// different nodes): the gap was asked of the store first (`shard::order`).
    pub history_gaps: AtomicU64,
    /// History sockets brought up to date after another node's pushes for their user may
    /// have been lost on a failed cluster link (`shard::catchup`).
    pub history_catchups: AtomicU64,
    /// Resumes by outcome (index in `runtime::history::RESUME_OUTCOMES`).
    pub resumes: [AtomicU64; 4],
    /// Gauges of the core's descriptor table, stored at every tick: slots in use and
    /// the table's size (the headroom the dashboard shows).
    pub slots_in_use: AtomicU64,
    pub slots_capacity: AtomicU64,
    /// Gauge, stored at every tick: the provided receive buffers the kernel may take now
    /// (`runtime::bufring`: a window that widens when a receive finds none).
    pub recv_window: AtomicU64,
    /// WebSocket closes by code (index in `CLOSE_CODES`): started by the server (its close
    /// frame, protocol errors included) and by the client (its close frame).
    pub closes_by_server: Counters<{ CLOSE_CODES.len() }>,
    pub closes_by_client: Counters<{ CLOSE_CODES.len() }>,
    /// Latency histograms (`engine.latency_histograms`).
    pub hist: super::histogram::CoreHistograms,
}

impl ShardStats {
    pub fn new(endpoints: usize) -> ShardStats {
        ShardStats {
            endpoint_sockets: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Relaxed);
    }
    pub fn refused_for(&self, r: &crate::service::refusal::Refusal) {
        self.refused(r.status());
        Self::inc(&self.refused_by_reason[r.index()]);
    }
    pub fn refused(&self, status: u16) {
        let i = REFUSAL_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REFUSAL_STATUSES.len() - 1);
        Self::inc(&self.refused[i]);
    }
    /// A WebSocket close with `code` (`None`: a close frame without one), started by the
    /// client or by the server.
    pub fn closed(&self, by_client: bool, code: Option<u16>) {
        let code = code.unwrap_or(1005);
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len() - 1);
        let set = if by_client {
            &self.closes_by_client
        } else {
            &self.closes_by_server
        };
        Self::inc(&set[i]);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

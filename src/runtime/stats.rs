//! Per-core counters: written by the owning core only (relaxed), summed at scrape time.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// HTTP statuses an upgrade can be refused with, in metric order.
pub const REFUSAL_STATUSES: [u16; 11] = [400, 401, 403, 404, 405, 408, 426, 429, 431, 503, 0];

#[derive(Default)]
pub struct ShardStats {
    /// Open WebSockets owned by this core (gauge).
    pub sockets: AtomicU64,
    /// Connections in the handshake phase (gauge).
    pub handshakes: AtomicU64,
    pub accepted: AtomicU64,
    pub upgrades: AtomicU64,
    /// Refusals by status (index in REFUSAL_STATUSES; last = other).
    pub refused: [AtomicU64; 11],
    pub handoffs_out: AtomicU64,
    pub handoffs_in: AtomicU64,
    pub handoffs_failed: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub closed_slow_consumer: AtomicU64,
    pub closed_idle: AtomicU64,
    pub accept_table_full: AtomicU64,
    pub recv_no_buffers: AtomicU64,
    pub pings_sent: AtomicU64,
}

impl ShardStats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Relaxed);
    }
    pub fn refused(&self, status: u16) {
        let i = REFUSAL_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REFUSAL_STATUSES.len() - 1);
        Self::inc(&self.refused[i]);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

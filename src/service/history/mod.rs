//! Per-user push history for recovery across reconnects: positions, what a resume gets,
//! the stores (`memory`: one per core, no lock) and how positions travel on the wire
//! (`envelope`: the raw endpoints' JSON envelope, the resume parameters of an upgrade).
//!
//! Every push accepted for a user gets a [`Position`]: the store's epoch (a store that
//! forgot everything, e.g. a restarted node's memory store, has a new one, so that a
//! position of before is never mistaken for one of now) and an offset that strictly
//! increases per user stream. A resume is answered honestly: the held messages after the
//! client's position, and whether that is everything ([`Recovery::complete`]).
pub mod envelope;
mod memory;

pub use memory::{MemoryHistory, ENTRY_OVERHEAD, IDLE_OVERHEAD, STREAM_OVERHEAD};

use crate::service::path_filter::PathFilter;
use std::sync::Arc;

/// Where a push sits in its user's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: u64,
    pub offset: u64,
}

/// A held message a resume gets: its offset, its text and the path filter it was pushed
/// with (`None`: every path, the common `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub offset: u64,
    pub text: Arc<str>,
    pub filter: Option<PathFilter>,
}

impl Missed {
    /// Would live delivery have sent it to a socket on `path`? A replay gives a socket only
    /// these, exactly what it would have had live.
    pub fn reaches(&self, path: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(path))
    }
}

/// What a resume from a position gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The held messages after the position, in order (for every path: the socket's own
    /// path picks what it is sent, [`Missed::reaches`]).
    pub messages: Vec<Missed>,
    /// Nothing after the position was dropped: the client has everything once it has these.
    pub complete: bool,
}

/// Counters of one store (summed over cores at scrape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub appended: u64,
    /// Dropped before their time to keep the store under `max_bytes`.
    pub evicted: u64,
    /// Dropped for `size` or `ttl`.
    pub expired: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages kept per stream (at least 1).
    pub size: usize,
    pub ttl_ms: u64,
    /// Bytes held by the whole store (texts and path filters plus [`ENTRY_OVERHEAD`] each,
    /// plus [`STREAM_OVERHEAD`] per stream).
    pub max_bytes: usize,
    /// Users whose position is remembered once all their messages are gone (so that a
    /// client idle for longer than the ttl still resumes completely when nothing was
    /// pushed); the oldest are forgotten first.
    pub max_idle: usize,
}

impl HistoryLimits {
    /// The bounds of `[history]` for one core.
    pub fn from_config(c: &crate::config::HistoryConfig) -> HistoryLimits {
        HistoryLimits {
            size: c.size,
            ttl_ms: c.ttl_secs.saturating_mul(1000),
            max_bytes: c.max_bytes_per_core,
            max_idle: c.max_idle_users_per_core,
        }
    }
}

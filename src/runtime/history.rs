//! The core's push history (`[history]`): the `memory` store of the users this core owns
//! (absent with the `nats` store, whose thread answers instead), which endpoints speak it,
//! the envelope of the push being delivered, and what a connecting client is replayed.
//! Owned by the shard; no lock, no I/O.
//!
//! With the memory store, a user's sockets and its stream live on the same core, so a
//! resume is atomic with respect to pushes: the replay and the marker are queued in the same
//! loop turn that registers the socket, so a push handled after it is live (and was not in
//! the replay), and a push handled before it is in the replay. With the nats store the
//! answer comes later: live pushes of the socket wait in `resume::PendingResumes` meanwhile,
//! and those the replay already holds are dropped by offset, so the seam is exact as well.
use super::resume::PendingResumes;
use super::stats::ShardStats;
use crate::config::Config;
use crate::config::HistoryStore;
use crate::service::history::envelope::{self, Marker};
use crate::service::history::{HistoryLimits, MemoryHistory, Position, Recovery};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why a resume was answered as it was (metric label order).
pub const RESUME_OUTCOMES: [&str; 4] = ["recovered", "epoch_changed", "dropped", "unavailable"];

/// What a connecting client of a history endpoint is sent before its live pushes.
pub struct Replay {
    pub messages: Vec<(u64, Arc<str>)>,
    pub marker: Marker,
}

pub struct CoreHistory {
    /// The memory store; `None` with the nats store (asked through `Shared::history_bus`).
    store: Option<MemoryHistory>,
    /// Endpoints (by index) whose clients get positions and may resume.
    on: Vec<bool>,
    /// A memory store in a cluster cannot vouch for pushes other nodes did not forward
    /// here: every resume is answered `recovered: false` (see `Config::warnings`).
    clustered: bool,
    /// The envelope of the last push framed, its position and endpoint (each endpoint's
    /// transcoder may make its own payload).
    envelope: Vec<u8>,
    envelope_at: Option<(Position, u8)>,
    /// Sockets waiting for the nats store's answer, and their held pushes.
    pub pending: PendingResumes,
}

impl CoreHistory {
    /// The history of one core, if any endpoint keeps history. `epoch`: fresh per start.
    pub fn new(config: &Config, epoch: u64) -> Option<CoreHistory> {
        if !config.history_on() {
            return None;
        }
        Some(CoreHistory {
            store: (config.history.store == HistoryStore::Memory)
                .then(|| MemoryHistory::new(epoch, HistoryLimits::from_config(&config.history))),
            on: (0..config.endpoints.len())
                .map(|i| config.endpoint_history(i))
                .collect(),
            clustered: config.cluster.is_some(),
            envelope: Vec::new(),
            envelope_at: None,
            pending: PendingResumes::default(),
        })
    }

    /// Does endpoint `endpoint` speak history (envelopes, resumes)?
    pub fn on(&self, endpoint: u8) -> bool {
        self.on.get(endpoint as usize).copied().unwrap_or(false)
    }

    /// Does this core keep the history itself (memory store)?
    pub fn local(&self) -> bool {
        self.store.is_some()
    }

    /// Record a push in the memory store; its position (`None`: the nats store, where the
    /// push was recorded before it reached the core, or not at all).
    pub fn append(
        &mut self,
        context: u32,
        user: u32,
        text: &Arc<str>,
        now_ms: u64,
    ) -> Option<Position> {
        let store = self.store.as_mut()?;
        Some(store.append(context, user, text.clone(), now_ms))
    }

    /// The raw envelope of the push at `at` as `endpoint` sends it (framed once, reused
    /// for every socket of that endpoint).
    pub fn envelope(&mut self, at: Option<Position>, endpoint: u8, payload: &str) -> &[u8] {
        let key = at.map(|at| (at, endpoint));
        if key.is_none() || self.envelope_at != key {
            envelope::push(&mut self.envelope, at, payload);
            self.envelope_at = key;
        }
        &self.envelope
    }

    /// A client of (context, user) connects, resuming from `from` if it gave a position:
    /// what it is replayed and told (memory store; `None` with the nats store: ask the bus).
    pub fn connect(
        &mut self,
        context: u32,
        user: u32,
        from: Option<Position>,
        now_ms: u64,
        stats: &ShardStats,
    ) -> Option<Replay> {
        let store = self.store.as_mut()?;
        store.touch(context, user);
        let current = store.current();
        let recovery = from.map(|from| store.since(context, user, from, now_ms));
        Some(answer(from, Ok((current, recovery)), self.clustered, stats))
    }

    /// Drop what outlived the ttl (from the core's timer) and publish the gauges.
    pub fn expire(&mut self, now_ms: u64, stats: &ShardStats) {
        if let Some(store) = &mut self.store {
            store.expire(now_ms);
        }
        self.publish(stats);
    }

    /// Copy the store's counters and sizes into the core's stats (after appends).
    pub fn publish(&self, stats: &ShardStats) {
        let Some(store) = &self.store else {
            return;
        };
        let s = store.stats();
        stats.history_appended.store(s.appended, Relaxed);
        stats.history_evicted.store(s.evicted, Relaxed);
        stats.history_expired.store(s.expired, Relaxed);
        stats.history_bytes.store(store.bytes() as u64, Relaxed);
        stats.history_streams.store(store.streams() as u64, Relaxed);
    }
}

/// What a connecting client is replayed and told, given the store's answer: its current
/// position and, for a resume, what was missed (or why the store could not answer).
/// Counts the outcome of a resume.
pub fn answer(
    from: Option<Position>,
    store: Result<(Position, Option<Recovery>), String>,
    clustered: bool,
    stats: &ShardStats,
) -> Replay {
    let answered = store.is_ok();
    let (current, recovery) = store.unwrap_or_else(|_| {
        // The store cannot say: keep the client where it was (a resume from there is judged
        // again next time), told that nothing is vouched for.
        let nowhere = Position {
            epoch: 0,
            offset: 0,
        };
        (from.unwrap_or(nowhere), None)
    });
    let fresh = |at| Replay {
        messages: Vec::new(),
        marker: Marker {
            resumed: false,
            recovered: false,
            at,
            replayed: 0,
        },
    };
    let Some(from) = from else {
        return fresh(current);
    };
    let r = recovery.unwrap_or(Recovery {
        messages: Vec::new(),
        complete: false,
    });
    let outcome = if !answered {
        3
    } else if from.epoch != current.epoch {
        1
    } else if !r.complete {
        2
    } else if clustered {
        3
    } else {
        0
    };
    ShardStats::inc(&stats.resumes[outcome]);
    ShardStats::add(&stats.history_replayed, r.messages.len() as u64);
    Replay {
        marker: Marker {
            resumed: true,
            recovered: outcome == 0,
            // After the replay the client has everything of its user up to `current` that
            // is still held (what was lost is acknowledged by the marker).
            at: r.messages.last().map_or(current, |&(offset, _)| Position {
                epoch: current.epoch,
                offset,
            }),
            replayed: r.messages.len(),
        },
        messages: r.messages,
    }
}

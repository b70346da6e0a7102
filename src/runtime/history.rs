//! The core's push history (`[history]`, `memory` store): the streams of the users this
//! core owns, which endpoints speak it, the envelope of the push being delivered, and what
//! a connecting client is replayed. Owned by the shard; no lock, no I/O.
//!
//! Because a user's sockets and its stream live on the same core, a resume is atomic with
//! respect to pushes: the replay and the marker are queued in the same loop turn that
//! registers the socket, so a push handled after it is live (and was not in the replay),
//! and a push handled before it is in the replay. No push is lost or doubled at the seam.
use super::stats::ShardStats;
use crate::config::Config;
use crate::service::history::envelope::{self, Marker};
use crate::service::history::{HistoryLimits, MemoryHistory, Position};
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
    store: MemoryHistory,
    /// Endpoints (by index) whose clients get positions and may resume.
    on: Vec<bool>,
    /// A memory store in a cluster cannot vouch for pushes other nodes did not forward
    /// here: every resume is answered `recovered: false` (see `Config::warnings`).
    clustered: bool,
    /// The envelope of the last push framed, its position and endpoint (each endpoint's
    /// transcoder may make its own payload).
    envelope: Vec<u8>,
    envelope_at: Option<(Position, u8)>,
}

impl CoreHistory {
    /// The history of one core, if any endpoint keeps history. `epoch`: fresh per start.
    pub fn new(config: &Config, epoch: u64) -> Option<CoreHistory> {
        if !config.history_on() {
            return None;
        }
        Some(CoreHistory {
            store: MemoryHistory::new(epoch, HistoryLimits::from_config(&config.history)),
            on: (0..config.endpoints.len())
                .map(|i| config.endpoint_history(i))
                .collect(),
            clustered: config.cluster.is_some(),
            envelope: Vec::new(),
            envelope_at: None,
        })
    }

    /// Does endpoint `endpoint` speak history (envelopes, resumes)?
    pub fn on(&self, endpoint: u8) -> bool {
        self.on.get(endpoint as usize).copied().unwrap_or(false)
    }

    /// Record a push; its position.
    pub fn append(&mut self, context: u32, user: u32, text: &Arc<str>, now_ms: u64) -> Position {
        self.store.append(context, user, text.clone(), now_ms)
    }

    /// The raw envelope of the push at `at` as `endpoint` sends it (framed once, reused
    /// for every socket of that endpoint).
    pub fn envelope(&mut self, at: Position, endpoint: u8, payload: &str) -> &[u8] {
        if self.envelope_at != Some((at, endpoint)) {
            envelope::push(&mut self.envelope, at, payload);
            self.envelope_at = Some((at, endpoint));
        }
        &self.envelope
    }

    /// A client of (context, user) connects, resuming from `from` if it gave a position:
    /// what it is replayed and told. Counts the outcome.
    pub fn connect(
        &mut self,
        context: u32,
        user: u32,
        from: Option<Position>,
        now_ms: u64,
        stats: &ShardStats,
    ) -> Replay {
        self.store.touch(context, user);
        let current = self.store.current();
        let Some(from) = from else {
            return Replay {
                messages: Vec::new(),
                marker: Marker {
                    resumed: false,
                    recovered: false,
                    at: current,
                    replayed: 0,
                },
            };
        };
        let r = self.store.since(context, user, from, now_ms);
        let outcome = if from.epoch != current.epoch {
            1
        } else if !r.complete {
            2
        } else if self.clustered {
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
                // After the replay the client has everything of its user up to `current`
                // that is still held (what was lost is acknowledged by the marker).
                at: r.messages.last().map_or(current, |&(offset, _)| Position {
                    epoch: current.epoch,
                    offset,
                }),
                replayed: r.messages.len(),
            },
            messages: r.messages,
        }
    }

    /// Drop what outlived the ttl (from the core's timer) and publish the gauges.
    pub fn expire(&mut self, now_ms: u64, stats: &ShardStats) {
        self.store.expire(now_ms);
        self.publish(stats);
    }

    /// Copy the store's counters and sizes into the core's stats (after appends).
    pub fn publish(&self, stats: &ShardStats) {
        let s = self.store.stats();
        stats.history_appended.store(s.appended, Relaxed);
        stats.history_evicted.store(s.evicted, Relaxed);
        stats.history_expired.store(s.expired, Relaxed);
        stats
            .history_bytes
            .store(self.store.bytes() as u64, Relaxed);
        stats
            .history_streams
            .store(self.store.streams() as u64, Relaxed);
    }
}

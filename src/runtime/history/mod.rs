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
use crate::service::engineio::recovery::{Parked, ParkedSessions, Pid};
use crate::service::history::envelope::{self, Marker};
use crate::service::history::{HistoryLimits, MemoryHistory, Missed, Position, Recovery};
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why a resume was answered as it was (metric label order).
pub const RESUME_OUTCOMES: [&str; 4] = ["recovered", "epoch_changed", "dropped", "unavailable"];
const RECOVERED: usize = 0;
const EPOCH_CHANGED: usize = 1;
const DROPPED: usize = 2;
const UNAVAILABLE: usize = 3;

/// What a Socket.IO CONNECT on a history endpoint gets (see [`CoreHistory::restore`]).
pub struct Restore {
    /// The claimed pid if restored, else a new one.
    pub pid: Pid,
    /// Where the namespace's session starts (restored: where the restored one started).
    pub start: Position,
    /// Restored: the parked record (socket id, attributes).
    pub parked: Option<Parked>,
    /// Restored: what it missed, in order, for every path ([`Restore::for_path`]).
    pub missed: Vec<Missed>,
}

impl Restore {
    /// A new private session starting at `current` (a pid of its epoch), nothing restored.
    pub fn starting(current: Position, tag: u64) -> Restore {
        Restore {
            pid: Pid {
                epoch: current.epoch,
                tag,
            },
            start: current,
            parked: None,
            missed: Vec::new(),
        }
    }

    /// A new private session (epoch 0: no history), nothing restored.
    pub fn fresh(tag: u64) -> Restore {
        Restore {
            pid: Pid { epoch: 0, tag },
            start: Position {
                epoch: 0,
                offset: 0,
            },
            parked: None,
            missed: Vec::new(),
        }
    }

    /// Keep what a socket on `path` would have had live (the pushes whose filter matches
    /// it); returns how many are left.
    pub fn for_path(&mut self, path: &str) -> usize {
        self.missed.retain(|m| m.reaches(path));
        self.missed.len()
    }
}

/// What a connecting client of a history endpoint is sent before its live pushes.
pub struct Replay {
    /// In order, for every path until [`Replay::for_path`].
    pub messages: Vec<Missed>,
    pub marker: Marker,
}

impl Replay {
    /// Keep what a socket on `path` would have had live (the pushes whose filter matches
    /// it), and say so in the marker; returns how many are left. The marker's position
    /// stays: the client has everything up to it that concerns it.
    pub fn for_path(&mut self, path: &str) -> usize {
        self.messages.retain(|m| m.reaches(path));
        self.marker.replayed = self.messages.len();
        self.marker.replayed
    }
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
    /// Socket.IO namespaces that ended abnormally, by private session id, until restored
    /// or the ttl (bounded: see [`parked_bytes`]).
    parked: ParkedSessions,
}

/// The bytes a core's parked Socket.IO sessions may take: a quarter of what its history
/// may hold (`history.max_bytes_per_core`: 64 MiB of the default 256 MiB, about 160,000
/// parked namespaces without attributes), at least 1 MiB.
pub fn parked_bytes(config: &Config) -> usize {
    (config.history.max_bytes_per_core / 4).max(1 << 20)
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
            parked: ParkedSessions::new(
                config.history.ttl_secs.saturating_mul(1000),
                parked_bytes(config),
            ),
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

    /// The memory store's current position (`None` with the nats store).
    pub fn current(&self) -> Option<Position> {
        self.store.as_ref().map(MemoryHistory::current)
    }

    /// Record a push (sent with path filter `filter`) in the memory store; its position
    /// (`None`: the nats store, where the push was recorded before it reached the core, or
    /// not at all).
    pub fn append(
        &mut self,
        context: u32,
        user: &UserId,
        text: &Arc<str>,
        filter: &PathFilter,
        now_ms: u64,
    ) -> Option<Position> {
        let store = self.store.as_mut()?;
        let filter = filter.clone().narrowing();
        Some(store.append(context, user, text.clone(), filter, now_ms))
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
        user: &UserId,
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
        self.parked.expire(now_ms);
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
/// position and, for a resume, what was missed (or why the store could not answer), for
/// every path ([`Replay::for_path`] picks the socket's). Counts the outcome of a resume.
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
    Replay {
        marker: Marker {
            resumed: true,
            recovered: outcome == 0,
            // After the replay the client has everything of its user up to `current` that
            // is still held (what was lost is acknowledged by the marker), or up to the last
            // message held, whether its filter lets it through to this socket or not.
            at: r.messages.last().map_or(current, |m| Position {
                epoch: current.epoch,
                offset: m.offset,
            }),
            replayed: r.messages.len(),
        },
        messages: r.messages,
    }
}

mod socketio;

#[cfg(test)]
mod tests {
    use super::*;

    /// The user of these tests.
    fn u7() -> UserId {
        UserId::from(7)
    }
    use crate::service::engineio::recovery::offset_string;
    use crate::service::engineio::recovery::{Claim, ParkNamespace};

    const EPOCH: u64 = 0xe;
    const NOW: u64 = 1_000;

    fn history(extra: &str) -> CoreHistory {
        let toml = format!("[history]\nenabled = true\nsize = 3\nttl_secs = 10\n{extra}");
        let config = Config::from_toml(&toml).expect("config");
        CoreHistory::new(&config, EPOCH).expect("history on")
    }

    fn push(h: &mut CoreHistory, user: u32, text: &str) -> Position {
        h.append(1, &user.into(), &Arc::from(text), &PathFilter::any(), NOW)
            .expect("memory store")
    }

    /// The claim of a socket.io client (no offset: it had no event yet).
    fn claim(pid: Pid, offset: Option<Position>) -> Claim {
        let offset = offset.map_or(String::new(), |o| {
            format!(",\"offset\":\"{}\"", offset_string(o))
        });
        let text = format!("{{\"pid\":\"{}\"{offset}}}", pid.encode());
        Claim::parse(&text).expect("a claim")
    }

    /// A fresh connect of `nsp` for user 7, parked at once (pushes: `pushes`).
    fn connect_and_park(h: &mut CoreHistory, nsp: &str, tag: u64, pushes: bool) -> Restore {
        let stats = ShardStats::default();
        let r = h.restore(1, &u7(), nsp, None, tag, NOW, &stats);
        let ns = ParkNamespace {
            pid: r.pid,
            nsp: nsp.into(),
            sid: "old-sid".into(),
            start: r.start,
            pushes,
        };
        h.park(1, &u7(), &[("room".into(), "blue".into())], vec![ns], NOW);
        r
    }

    fn texts(r: &Restore) -> Vec<&str> {
        r.missed.iter().map(|m| &*m.text).collect()
    }

    fn outcomes(stats: &ShardStats) -> Vec<u64> {
        stats.resumes.iter().map(|c| c.load(Relaxed)).collect()
    }

    #[test]
    fn a_fresh_connect_gets_a_new_pid_of_this_epoch_starting_now() {
        let mut h = history("");
        let at = push(&mut h, 7, "[\"a\"]");
        let stats = ShardStats::default();
        let r = h.restore(1, &u7(), "/", None, 42, NOW, &stats);
        assert_eq!(
            r.pid,
            Pid {
                epoch: EPOCH,
                tag: 42
            }
        );
        assert_eq!(r.start, at);
        assert!(r.parked.is_none() && r.missed.is_empty());
        assert_eq!(outcomes(&stats), [0, 0, 0, 0], "not a resume");
    }

    #[test]
    fn a_parked_session_is_restored_once_with_what_it_missed_after_its_offset() {
        let mut h = history("");
        let first = connect_and_park(&mut h, "/", 1, true);
        let a = push(&mut h, 7, "[\"a\"]");
        push(&mut h, 8, "[\"other user\"]");
        push(&mut h, 7, "[\"b\"]");
        let stats = ShardStats::default();
        // The client had nothing since its start: everything after it.
        let c = claim(first.pid, None);
        let r = h.restore(1, &u7(), "/", Some(&c), 99, NOW, &stats);
        assert_eq!(r.pid, first.pid, "the same pid: restored");
        assert_eq!(r.start, first.start);
        assert_eq!(texts(&r), ["[\"a\"]", "[\"b\"]"]);
        let parked = r.parked.expect("its record");
        assert_eq!((&*parked.ns.sid, &*parked.attrs[0].1), ("old-sid", "blue"));
        assert_eq!(outcomes(&stats), [1, 0, 0, 0]);
        // Taken: the same claim again restores nothing (a new pid).
        let r = h.restore(1, &u7(), "/", Some(&c), 100, NOW, &stats);
        assert_eq!((r.pid.tag, r.parked.is_none()), (100, true));
        assert_eq!(outcomes(&stats), [1, 0, 1, 0]);

        // With the offset of the last event it handled: only what came after it.
        let second = connect_and_park(&mut h, "/", 2, true);
        push(&mut h, 7, "[\"c\"]");
        let c = claim(second.pid, Some(a));
        let r = h.restore(1, &u7(), "/", Some(&c), 101, NOW, &stats);
        assert_eq!(r.pid, second.pid);
        assert_eq!(
            texts(&r),
            ["[\"c\"]"],
            "never before the session's own start"
        );
    }

    #[test]
    fn a_socket_is_replayed_only_what_its_path_would_have_had_live() {
        let mut h = history("");
        let first = connect_and_park(&mut h, "/", 1, true);
        let mut last = first.start;
        for (text, filter) in [("[\"all\"]", "*"), ("[\"a\"]", "/a*"), ("[\"b\"]", "/b*")] {
            last = h
                .append(1, &u7(), &Arc::from(text), &PathFilter::new(filter), NOW)
                .expect("memory store");
        }
        let stats = ShardStats::default();
        // Socket.IO: restored, then what the socket's path gets.
        let c = claim(first.pid, None);
        let mut r = h.restore(1, &u7(), "/", Some(&c), 9, NOW, &stats);
        assert_eq!(r.pid, first.pid, "restored");
        assert_eq!(r.for_path("/a/1"), 2);
        assert_eq!(texts(&r), ["[\"all\"]", "[\"a\"]"]);
        // Raw: the marker says how many were replayed, and is at the last push held.
        let mut replay = h
            .connect(1, &u7(), Some(first.start), NOW, &stats)
            .expect("memory");
        assert_eq!(replay.for_path("/a/1"), 2);
        assert_eq!(replay.messages[1].text.as_ref(), "[\"a\"]");
        let m = replay.marker;
        assert_eq!((m.recovered, m.replayed, m.at), (true, 2, last));
        let mut replay = h
            .connect(1, &u7(), Some(first.start), NOW, &stats)
            .expect("memory");
        assert_eq!(replay.for_path("/c"), 1, "only the push to every path");
        assert_eq!(replay.marker.at, last);
    }

    #[test]
    fn what_cannot_be_proven_complete_is_not_restored_nor_replayed() {
        let mut h = history("");
        let stats = ShardStats::default();
        // More than `size` pushes while away.
        let p = connect_and_park(&mut h, "/", 1, true);
        for i in 0..4 {
            push(&mut h, 7, &format!("[\"m{i}\"]"));
        }
        let r = h.restore(1, &u7(), "/", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert!(r.parked.is_none() && r.missed.is_empty() && r.pid.tag == 9);
        assert_eq!(outcomes(&stats), [0, 0, 1, 0]);
        // Another user's pid, or another namespace: not restored, and the record stays.
        let p = connect_and_park(&mut h, "/", 2, true);
        let r = h.restore(1, &8.into(), "/", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert!(r.parked.is_none());
        let r = h.restore(1, &u7(), "/chat", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert!(r.parked.is_none());
        // A malformed offset fails the restore and drops the record.
        let junk = Claim::parse(&format!(
            "{{\"pid\":\"{}\",\"offset\":\"x\"}}",
            p.pid.encode()
        ));
        let r = h.restore(1, &u7(), "/", junk.as_ref(), 9, NOW, &stats);
        assert!(r.parked.is_none());
        let r = h.restore(1, &u7(), "/", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert!(r.parked.is_none(), "dropped by the failed restore");
        // A pid of another start (the node restarted).
        let old = Pid { epoch: 1, tag: 5 };
        h.restore(1, &u7(), "/", Some(&claim(old, None)), 9, NOW, &stats);
        assert_eq!(outcomes(&stats)[1], 1, "epoch_changed");
        // A malformed pid.
        let junk = Claim::parse("{\"pid\":\"garbage\"}");
        let r = h.restore(1, &u7(), "/", junk.as_ref(), 9, NOW, &stats);
        assert_eq!((r.pid.epoch, r.parked.is_none()), (EPOCH, true));
    }

    #[test]
    fn parked_records_last_the_history_ttl() {
        let mut h = history("");
        let p = connect_and_park(&mut h, "/", 1, true);
        let stats = ShardStats::default();
        h.expire(NOW + 10_000, &stats);
        let r = h.restore(
            1,
            &u7(),
            "/",
            Some(&claim(p.pid, None)),
            9,
            NOW + 10_000,
            &stats,
        );
        assert!(r.parked.is_none());
        assert_eq!(outcomes(&stats), [0, 0, 1, 0]);
    }

    #[test]
    fn a_namespace_no_push_went_to_missed_nothing() {
        let mut h = history("");
        let p = connect_and_park(&mut h, "/chat", 1, false);
        for i in 0..10 {
            push(&mut h, 7, &format!("[\"m{i}\"]"));
        }
        let stats = ShardStats::default();
        let r = h.restore(1, &u7(), "/chat", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert_eq!(r.pid, p.pid, "restored although the stream overflowed");
        assert!(r.missed.is_empty());
    }

    #[test]
    fn the_nats_store_s_answer_restores_only_a_complete_record_of_its_epoch() {
        let mut config = Config::from_toml("[history]\nenabled = true\n").expect("config");
        config.history.store = HistoryStore::Nats;
        let mut h = CoreHistory::new(&config, EPOCH).expect("history on");
        let stats = ShardStats::default();
        let now = Position {
            epoch: 40,
            offset: 90,
        };
        let pid = Pid { epoch: 40, tag: 4 };
        let record = Parked {
            context: 1,
            user: 7.into(),
            ns: ParkNamespace {
                pid,
                nsp: "/".into(),
                sid: "old".into(),
                start: Position {
                    epoch: 40,
                    offset: 10,
                },
                pushes: true,
            },
            attrs: vec![],
        };
        let missed = |complete| Recovery {
            messages: [95, 97]
                .into_iter()
                .map(|offset| Missed {
                    offset,
                    text: "m".into(),
                    filter: None,
                })
                .collect(),
            complete,
        };
        let found = |complete| Ok((now, Some((record.clone(), missed(complete)))));
        // A fresh connect starts at the store's position, with a pid of its epoch.
        let (r, through) = h.restore_answered(None, 5, Ok((now, None)), false, &stats);
        assert_eq!(
            (r.pid, r.start, through),
            (Pid { epoch: 40, tag: 5 }, now, now)
        );
        // Restored: the same pid, the record's start, what it missed; in order up to 97.
        let c = claim(pid, None);
        let (r, through) = h.restore_answered(Some(&c), 6, found(true), false, &stats);
        assert_eq!((r.pid, r.start.offset, r.missed.len()), (pid, 10, 2));
        assert_eq!(
            (r.parked.map(|p| p.ns.sid), through.offset),
            (Some("old".into()), 97)
        );
        // Not restored: history incomplete, pushes held were dropped, no record, another
        // epoch, the store failing.
        let (r, _) = h.restore_answered(Some(&c), 7, found(false), false, &stats);
        assert!(r.parked.is_none() && r.missed.is_empty() && r.pid.tag == 7);
        let (r, _) = h.restore_answered(Some(&c), 8, found(true), true, &stats);
        assert!(r.parked.is_none() && r.missed.is_empty());
        let (r, _) = h.restore_answered(Some(&c), 9, Ok((now, None)), false, &stats);
        assert!(r.parked.is_none());
        let old = claim(Pid { epoch: 39, tag: 4 }, None);
        let (r, _) = h.restore_answered(Some(&old), 10, Ok((now, None)), false, &stats);
        assert_eq!(r.pid, Pid { epoch: 40, tag: 10 });
        let (r, _) = h.restore_answered(Some(&c), 11, Err("down".into()), false, &stats);
        assert_eq!((r.pid.epoch, r.parked.is_none()), (0, true));
        assert_eq!(outcomes(&stats), [1, 1, 3, 1]);
    }

    #[test]
    fn the_nats_store_restores_nothing_on_the_core() {
        let mut config = Config::from_toml("[history]\nenabled = true\n").expect("config");
        config.history.store = HistoryStore::Nats;
        let mut h = CoreHistory::new(&config, EPOCH).expect("history on");
        assert!(!h.restores());
        let stats = ShardStats::default();
        let r = h.restore(1, &u7(), "/", None, 5, NOW, &stats);
        assert_eq!((r.pid.tag, r.parked.is_none()), (5, true));
        let c = claim(Pid { epoch: 3, tag: 4 }, None);
        let r = h.restore(1, &u7(), "/", Some(&c), 6, NOW, &stats);
        assert_eq!((r.pid.tag, r.parked.is_none()), (6, true));
        assert_eq!(outcomes(&stats), [0, 0, 0, 1]);
        h.park(1, &u7(), &[], vec![], NOW);
        assert!(!h.is_parked(c.pid.unwrap()));
    }

    #[test]
    fn a_memory_store_in_a_cluster_restores_nothing() {
        let mut h = history("");
        h.clustered = true;
        let p = connect_and_park(&mut h, "/", 1, true);
        let stats = ShardStats::default();
        let r = h.restore(1, &u7(), "/", Some(&claim(p.pid, None)), 9, NOW, &stats);
        assert!(r.parked.is_none());
        assert_eq!(outcomes(&stats), [0, 0, 0, 1]);
    }
}

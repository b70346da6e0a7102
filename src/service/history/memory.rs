//! The `memory` history store: one per core, holding the streams of the users that core
//! owns, with no lock. Offsets come from one counter per store, so they are unique in it
//! and strictly increasing per stream, but not dense per stream; what was dropped is
//! tracked explicitly instead.
//!
//! Bounds: at most `size` messages per stream, none older than `ttl_ms`, and at most
//! `max_bytes` for the whole store (oldest dropped first, store-wide, counted). A user whose
//! messages are all gone keeps an idle record (the last offset it had, [`IDLE_OVERHEAD`]
//! bytes, at most `max_idle` of them, oldest forgotten first) so that a resume after a quiet
//! spell longer than the ttl is still complete. A position of another epoch, or one older
//! than what was dropped for its user, is never completed silently.
//!
//! Sans-IO: the time is passed in (`now_ms`); nothing here blocks or reads a clock.
use super::{HistoryLimits, HistoryStats, Missed, Position, Recovery};
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Bytes counted per held message on top of its text: the entry, its slot in the append
/// order, the Arc header and the queues' growth slack. Measured at 84 B with
/// `examples/history_memory.rs` (100,000 users x 100 messages of 200 B, nothing dropped:
/// 284 B of resident memory each), and at about 111 B in a running server whose store is
/// full and dropping its oldest (`benches/compare/history_rss.py`: 311 B resident per held
/// 200-byte push, the queues' slack and the allocator's churn included); counted at that so
/// that `max_bytes` bounds what is resident; plus 16 B since the entry holds its push's path
/// filter (an `Option<Box<str>>`; the pattern's own bytes, if any, are counted apart); plus
/// 24 B since its slot in the append order names its user with a `UserId` (24 B, was 4).
pub const ENTRY_OVERHEAD: usize = 152;

/// Bytes counted per stream held (its record, its slot in the map of streams with the map's
/// slack, its queue's first allocation), on top of its messages. Measured at about 170 B
/// (`examples/history_memory.rs 100000 1 50`: 316 B resident per one-message stream of 50 B);
/// plus 24 B for its key's `UserId` (a string user's heap bytes, if any, are counted apart).
pub const STREAM_OVERHEAD: usize = 216;

/// Bytes per idle user record (map entry with its slack, slot in the idle order); bounded
/// by count (`max_idle`), not by `max_bytes`.
/// At worst: the map's entry (key and offset) at half load, plus two slots in the idle order
/// (stale ones are compacted past twice the live records): 2 x 16 + 2 x 16 = 64 with `u32`
/// users, 2 x 40 + 2 x 40 = 160 now that a key holds a 24-byte `UserId`.
pub const IDLE_OVERHEAD: usize = 160;

type Key = (u32, UserId);

/// What a stream costs besides its messages: a string user's heap bytes are shared by the
/// stream's key and its messages' slots in the append order.
fn stream_cost(key: &Key) -> usize {
    STREAM_OVERHEAD + key.1.heap_bytes()
}

struct Entry {
    offset: u64,
    at_ms: u64,
    text: Arc<str>,
    /// The push's path filter; `None` for `*`.
    filter: Option<PathFilter>,
}

struct Stream {
    entries: VecDeque<Entry>,
    /// The highest offset that may have been dropped from this stream (0: none).
    dropped_through: u64,
    /// The last offset given to this stream.
    last: u64,
}

pub struct MemoryHistory {
    epoch: u64,
    limits: HistoryLimits,
    /// The last offset given out by this store (offsets start at 1).
    last_offset: u64,
    streams: HashMap<Key, Stream>,
    /// Every held message in append order (its stream and offset): the front is the oldest,
    /// store-wide. Entries already dropped from their stream are skipped when reached.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    /// Users with no message held: the highest offset that may have been dropped for them.
    idle: HashMap<Key, u64>,
    /// Idle records in the order they were made (stale ones skipped when reached).
    idle_order: VecDeque<(Key, u64)>,
    /// The highest offset of an idle record forgotten: a user with no record here may have
    /// lost anything up to it.
    forgotten_through: u64,
    stats: HistoryStats,
}

fn cost(text: &str, filter: Option<&PathFilter>) -> usize {
    text.len() + filter.map_or(0, |f| f.as_str().len()) + ENTRY_OVERHEAD
}

impl Entry {
    fn cost(&self) -> usize {
        cost(&self.text, self.filter.as_ref())
    }
}

impl MemoryHistory {
    /// A store with epoch `epoch` (the caller picks a fresh one per start).
    pub fn new(epoch: u64, limits: HistoryLimits) -> MemoryHistory {
        MemoryHistory {
            epoch,
            limits: HistoryLimits {
                size: limits.size.max(1),
                ..limits
            },
            last_offset: 0,
            streams: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            idle: HashMap::new(),
            idle_order: VecDeque::new(),
            forgotten_through: 0,
            stats: HistoryStats::default(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes held (texts plus overhead per message and per stream; idle records apart).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    /// Streams held (users with at least one message).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Users remembered with no message held.
    pub fn idle_users(&self) -> usize {
        self.idle.len()
    }

    /// Record a push for (context, user), sent with path filter `filter` (`None`: every
    /// path), at `now_ms`; returns its position.
    pub fn append(
        &mut self,
        context: u32,
        user: &UserId,
        text: Arc<str>,
        filter: Option<PathFilter>,
        now_ms: u64,
    ) -> Position {
        self.last_offset += 1;
        let offset = self.last_offset;
        let key = (context, user.clone());
        let filter = filter.and_then(PathFilter::narrowing);
        self.bytes += cost(&text, filter.as_ref());
        if !self.streams.contains_key(&key) {
            self.bytes += stream_cost(&key);
            // What this user may have lost before: its idle record, or (none) anything
            // up to what was forgotten.
            let dropped_through = self.idle.remove(&key).unwrap_or(self.forgotten_through);
            self.streams.insert(
                key.clone(),
                Stream {
                    entries: VecDeque::new(),
                    dropped_through,
                    last: 0,
                },
            );
        }
        let stream = self.streams.get_mut(&key).expect("inserted above");
        stream.last = offset;
        stream.entries.push_back(Entry {
            offset,
            at_ms: now_ms,
            text,
            filter,
        });
        self.order.push_back((key, offset));
        self.stats.appended += 1;
        while stream.entries.len() > self.limits.size {
            if let Some(e) = stream.entries.pop_front() {
                stream.dropped_through = e.offset;
                self.bytes -= e.cost();
                self.stats.expired += 1;
            }
        }
        self.expire(now_ms);
        while self.bytes > self.limits.max_bytes {
            if !self.drop_oldest(true) {
                break;
            }
        }
        Position {
            epoch: self.epoch,
            offset,
        }
    }

    /// Drop what is older than the ttl at `now_ms` (also done on every append; call it
    /// from a timer so that an idle store releases its memory).
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((key, offset)) = self.order.front() {
            let offset = *offset;
            let live = self
                .streams
                .get(key)
                .and_then(|s| s.entries.front())
                .filter(|e| e.offset == offset);
            match live {
                None => {
                    // Already dropped from its stream (size limit): skip.
                    self.order.pop_front();
                }
                Some(e) if now_ms.saturating_sub(e.at_ms) >= self.limits.ttl_ms => {
                    self.drop_oldest(false);
                }
                Some(_) => break,
            }
        }
    }

    /// Drop the oldest held message store-wide. Returns false if nothing is held.
    fn drop_oldest(&mut self, evicted: bool) -> bool {
        while let Some((key, offset)) = self.order.pop_front() {
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            if stream.entries.front().is_none_or(|e| e.offset != offset) {
                continue;
            }
            if let Some(e) = stream.entries.pop_front() {
                stream.dropped_through = e.offset;
                self.bytes -= e.cost();
            }
            if evicted {
                self.stats.evicted += 1;
            } else {
                self.stats.expired += 1;
            }
            if stream.entries.is_empty() {
                let last = stream.last;
                self.streams.remove(&key);
                self.bytes -= stream_cost(&key);
                self.remember_idle(key, last);
            }
            return true;
        }
        false
    }

    /// Keep an idle record for `key` (everything up to `through` may be gone), within
    /// `max_idle`: beyond, the oldest record is forgotten into `forgotten_through`.
    fn remember_idle(&mut self, key: Key, through: u64) {
        self.idle.insert(key.clone(), through);
        self.idle_order.push_back((key, through));
        while self.idle.len() > self.limits.max_idle {
            let Some((k, v)) = self.idle_order.pop_front() else {
                break;
            };
            if self.idle.get(&k) == Some(&v) {
                self.idle.remove(&k);
                self.forgotten_through = self.forgotten_through.max(v);
            }
        }
        // Records replaced or turned back into streams leave stale entries: compact when
        // they outnumber the live ones.
        if self.idle_order.len() > 2 * self.idle.len() + 64 {
            let idle = &self.idle;
            self.idle_order.retain(|(k, v)| idle.get(k) == Some(v));
        }
    }

    /// A client of (context, user) connected: make sure the user has a record here, so
    /// that a later resume from [`MemoryHistory::current`] is judged on this user alone.
    pub fn touch(&mut self, context: u32, user: &UserId) {
        let key = (context, user.clone());
        if !self.streams.contains_key(&key) && !self.idle.contains_key(&key) {
            self.remember_idle(key, self.forgotten_through);
        }
    }

    /// What a client of (context, user) that has everything up to `from` gets on resume.
    pub fn since(&mut self, context: u32, user: &UserId, from: Position, now_ms: u64) -> Recovery {
        self.expire(now_ms);
        if from.epoch != self.epoch || from.offset > self.last_offset {
            // Another epoch (a restart), or a position this store never gave out.
            return Recovery {
                messages: Vec::new(),
                complete: false,
            };
        }
        let key = (context, user.clone());
        let Some(stream) = self.streams.get(&key) else {
            let dropped = self.idle.get(&key).copied();
            return Recovery {
                messages: Vec::new(),
                complete: from.offset >= dropped.unwrap_or(self.forgotten_through),
            };
        };
        let messages: Vec<Missed> = stream
            .entries
            .iter()
            .filter(|e| e.offset > from.offset)
            .map(|e| Missed {
                offset: e.offset,
                text: e.text.clone(),
                filter: e.filter.clone(),
            })
            .collect();
        Recovery {
            messages,
            complete: stream.dropped_through <= from.offset,
        }
    }

    /// The position a client starts from: every later push has a greater offset.
    pub fn current(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize, ttl_ms: u64, max_bytes: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl_ms,
            max_bytes,
            max_idle: 1_000,
        }
    }

    fn texts(r: &Recovery) -> Vec<&str> {
        r.messages.iter().map(|m| &*m.text).collect()
    }

    #[test]
    fn offsets_increase_per_stream_and_a_resume_gets_what_was_missed_in_order() {
        let mut h = MemoryHistory::new(7, limits(100, 60_000, 1 << 20));
        let a1 = h.append(1, &1.into(), "a1".into(), None, 0);
        let b1 = h.append(1, &2.into(), "b1".into(), None, 1);
        let a2 = h.append(1, &1.into(), "a2".into(), None, 2);
        let a3 = h.append(1, &1.into(), "a3".into(), None, 3);
        assert_eq!(a1.epoch, 7);
        assert!(a1.offset < a2.offset && a2.offset < a3.offset);
        assert_ne!(b1.offset, a1.offset);
        let r = h.since(1, &1.into(), a1, 10);
        assert_eq!(texts(&r), ["a2", "a3"]);
        assert!(r.complete);
        let r = h.since(1, &1.into(), a3, 10);
        assert!(r.messages.is_empty() && r.complete, "up to date");
        assert_eq!(h.current(), a3);
        assert!(
            h.since(5, &5.into(), h.current(), 10).complete,
            "a new client of anyone"
        );
        let r = h.since(
            1,
            &2.into(),
            Position {
                epoch: 7,
                offset: 0,
            },
            10,
        );
        assert_eq!(texts(&r), ["b1"]);
        assert!(r.complete);
    }

    #[test]
    fn another_epoch_or_an_unknown_position_is_never_completed() {
        let mut h = MemoryHistory::new(2, limits(100, 60_000, 1 << 20));
        let p = h.append(1, &1.into(), "x".into(), None, 0);
        let r = h.since(
            1,
            &1.into(),
            Position {
                epoch: 1,
                offset: 0,
            },
            1,
        );
        assert_eq!(
            r,
            Recovery {
                messages: vec![],
                complete: false
            },
            "a restart"
        );
        let future = Position {
            epoch: 2,
            offset: p.offset + 5,
        };
        assert!(!h.since(1, &1.into(), future, 1).complete);
    }

    #[test]
    fn the_size_limit_drops_the_oldest_and_a_resume_from_before_is_incomplete() {
        let mut h = MemoryHistory::new(1, limits(2, 60_000, 1 << 20));
        let p1 = h.append(1, &1.into(), "1".into(), None, 0);
        let p2 = h.append(1, &1.into(), "2".into(), None, 0);
        h.append(1, &1.into(), "3".into(), None, 0);
        h.append(1, &1.into(), "4".into(), None, 0);
        let r = h.since(1, &1.into(), p1, 0);
        assert_eq!(texts(&r), ["3", "4"], "what is held is still given");
        assert!(!r.complete, "message 2 is gone");
        let r = h.since(1, &1.into(), p2, 0);
        assert_eq!(texts(&r), ["3", "4"]);
        assert!(r.complete, "nothing after 2 was dropped");
        assert_eq!(h.stats().expired, 2);
        assert_eq!(h.bytes(), 2 * (1 + ENTRY_OVERHEAD) + STREAM_OVERHEAD);
    }

    #[test]
    fn a_push_keeps_its_path_filter_counted_and_a_resume_returns_it() {
        let mut h = MemoryHistory::new(1, limits(100, 60_000, 1 << 20));
        let p0 = h.current();
        h.append(1, &1.into(), "all".into(), None, 0);
        h.append(1, &1.into(), "a".into(), Some(PathFilter::new("/a*")), 0);
        h.append(1, &1.into(), "b".into(), Some(PathFilter::new("/b*")), 0);
        h.append(1, &1.into(), "star".into(), Some(PathFilter::any()), 0);
        let r = h.since(1, &1.into(), p0, 0);
        let filters: Vec<_> = r.messages.iter().map(|m| m.filter.clone()).collect();
        assert_eq!(
            filters,
            [
                None,
                Some(PathFilter::new("/a*")),
                Some(PathFilter::new("/b*")),
                None
            ],
            "`*` is kept as None"
        );
        let to_a: Vec<_> = r.messages.iter().filter(|m| m.reaches("/a/1")).collect();
        assert_eq!(
            to_a.iter().map(|m| &*m.text).collect::<Vec<_>>(),
            ["all", "a", "star"]
        );
        assert!(r.complete);
        let texts = 3 + 1 + 1 + 4;
        let patterns = 3 + 3;
        assert_eq!(
            h.bytes(),
            texts + patterns + 4 * ENTRY_OVERHEAD + STREAM_OVERHEAD
        );
    }

    #[test]
    fn the_ttl_forgets_old_messages_and_whole_streams_honestly() {
        let mut h = MemoryHistory::new(1, limits(10, 1_000, 1 << 20));
        let p0 = Position {
            epoch: 1,
            offset: 0,
        };
        let a = h.append(1, &1.into(), "old".into(), None, 0);
        h.append(1, &2.into(), "other".into(), None, 500);
        h.expire(1_000);
        assert_eq!(h.streams(), 1, "user 1's only message expired");
        let r = h.since(1, &1.into(), p0, 1_000);
        assert_eq!(
            r,
            Recovery {
                messages: vec![],
                complete: false
            }
        );
        let r = h.since(1, &1.into(), a, 1_000);
        assert!(r.complete, "the client had it");
        // A user who never had a push here is complete from the forgotten watermark on.
        assert!(h.since(9, &9.into(), a, 1_000).complete);
        h.expire(1_500);
        assert_eq!((h.streams(), h.bytes()), (0, 0));
        assert_eq!(h.stats().expired, 2);
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_store_wide_and_counts() {
        let per = 10 + ENTRY_OVERHEAD + STREAM_OVERHEAD;
        let mut h = MemoryHistory::new(1, limits(100, 60_000, 3 * per));
        let first = h.append(1, &1.into(), "0123456789".into(), None, 0);
        for u in 2..=4 {
            h.append(1, &u.into(), "0123456789".into(), None, u as u64);
        }
        assert!(h.bytes() <= 3 * per);
        assert_eq!(h.stats().evicted, 1);
        assert_eq!(h.streams(), 3, "user 1's stream went first");
        let r = h.since(
            1,
            &1.into(),
            Position {
                epoch: 1,
                offset: 0,
            },
            10,
        );
        assert!(!r.complete, "its message was evicted");
        assert!(h.since(1, &1.into(), first, 10).complete);
        for i in 0..1_000u32 {
            h.append(2, &i.into(), format!("{i:0>10}").into(), None, 20);
            assert!(h.bytes() <= 3 * per);
        }
    }

    #[test]
    fn a_user_forgotten_and_pushed_again_still_owes_what_was_dropped() {
        let mut h = MemoryHistory::new(1, limits(10, 1_000, 1 << 20));
        let before = h.append(1, &1.into(), "a".into(), None, 0);
        let gone = h.append(1, &1.into(), "b".into(), None, 0);
        h.expire(1_000);
        let after = h.append(1, &1.into(), "c".into(), None, 1_000);
        let r = h.since(1, &1.into(), before, 1_000);
        assert_eq!(texts(&r), ["c"]);
        assert!(!r.complete, "b was dropped with the old stream");
        let r = h.since(1, &1.into(), gone, 1_000);
        assert!(r.complete && texts(&r) == ["c"]);
        assert!(h.since(1, &1.into(), after, 1_000).complete);
    }

    #[test]
    fn an_idle_client_resumes_completely_after_the_ttl_and_others_expiring() {
        let mut h = MemoryHistory::new(1, limits(10, 1_000, 1 << 20));
        h.append(1, &2.into(), "other".into(), None, 0);
        h.touch(1, &1.into());
        let start = h.current();
        h.append(1, &3.into(), "another".into(), None, 10);
        h.expire(5_000);
        assert_eq!(h.streams(), 0);
        let r = h.since(1, &1.into(), start, 5_000);
        assert!(
            r.complete && r.messages.is_empty(),
            "nothing was pushed to user 1"
        );
    }

    #[test]
    fn forgetting_idle_users_beyond_the_bound_makes_their_resumes_incomplete() {
        let mut h = MemoryHistory::new(
            1,
            HistoryLimits {
                max_idle: 2,
                ..limits(10, 1_000, 1 << 20)
            },
        );
        let p1 = h.append(1, &1.into(), "1".into(), None, 0);
        h.append(1, &2.into(), "2".into(), None, 0);
        h.append(1, &3.into(), "3".into(), None, 0);
        h.expire(1_000);
        assert_eq!(h.idle_users(), 2, "user 1's record was forgotten first");
        let p0 = Position {
            epoch: 1,
            offset: 0,
        };
        assert!(!h.since(1, &1.into(), p0, 1_000).complete);
        assert!(
            h.since(1, &1.into(), p1, 1_000).complete,
            "it had its one push"
        );
        assert!(!h.since(1, &2.into(), p0, 1_000).complete);
        for u in 10..1_000 {
            h.append(2, &u.into(), "x".into(), None, 2_000);
            h.expire(3_000);
        }
        assert!(h.idle_order.len() <= 2 * h.idle.len() + 64 + 1);
    }
}

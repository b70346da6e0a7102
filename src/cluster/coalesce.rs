//! Remote coalescing, sans-IO: one core's queue of pushes bound for one other node.
//!
//! A push waits up to `delay` for an equal one (same context, user, filter and text). An equal
//! push arriving meanwhile is merged into it and the wait starts again, but no push waits
//! longer than `max_delay` after the first. The owner checks [`Coalescer::take_due`] every
//! `remote.timer_ms`, so a push leaves between its due time and one timer period later.
//! Pushes that must not wait (`coalesce: false`, `delay_ms = 0`) take an equal waiting push
//! with them ([`Coalescer::take_equal`]), so it is not delivered twice.
//!
//! The queue is bounded in messages and bytes; beyond either, a push is dropped (the caller
//! counts it). Time is passed in (milliseconds of any monotonic clock).
use super::wire::{push_wire_len, RemotePush};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// The `[remote]` settings a queue needs (reloadable: passed on every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Waiting for an equal push (or its due time).
    Queued,
    /// An equal push was waiting: this one is merged into it.
    Merged,
    /// The queue is full.
    Dropped,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    first: u64,
    due: u64,
    /// Arrival order, kept when due pushes leave together.
    seq: u64,
}

#[derive(Default)]
pub struct Coalescer {
    waiting: HashMap<RemotePush, Waiting>,
    bytes: usize,
    seq: u64,
    /// No push is due before this (skips the scan on most timer checks).
    earliest: u64,
}

impl Coalescer {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queue `push`, or merge it into an equal waiting one.
    pub fn offer(&mut self, push: RemotePush, now: u64, s: &Settings) -> Offer {
        // One hash of the push (its text may be large): the entry serves the merge and the insert.
        let waiting = self.waiting.len();
        let slot = match self.waiting.entry(push) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                w.due = (now + s.delay_ms).min(w.first + s.max_delay_ms);
                self.earliest = self.earliest.min(w.due);
                return Offer::Merged;
            }
            Entry::Vacant(v) => v,
        };
        let len = push_wire_len(slot.key());
        if waiting >= s.max_messages || self.bytes + len > s.max_bytes {
            return Offer::Dropped;
        }
        let due = now + s.delay_ms.min(s.max_delay_ms);
        self.seq += 1;
        self.earliest = if waiting == 0 {
            due
        } else {
            self.earliest.min(due)
        };
        self.bytes += len;
        slot.insert(Waiting {
            first: now,
            due,
            seq: self.seq,
        });
        Offer::Queued
    }

    /// Remove a waiting push equal to `push` (it leaves now, with `push`); true if there was one.
    pub fn take_equal(&mut self, push: &RemotePush) -> bool {
        // Nothing waiting (the common case with coalescing off): no need to hash the text.
        if self.waiting.is_empty() {
            return false;
        }
        if self.waiting.remove(push).is_some() {
            self.bytes -= push_wire_len(push);
            true
        } else {
            false
        }
    }

    /// Move every push due at `now` to `out`, in arrival order.
    pub fn take_due(&mut self, now: u64, out: &mut Vec<RemotePush>) {
        if self.waiting.is_empty() || now < self.earliest {
            return;
        }
        let mut due = Vec::new();
        let mut earliest = u64::MAX;
        self.waiting.retain(|p, w| {
            if w.due <= now {
                due.push((w.seq, p.clone()));
                false
            } else {
                earliest = earliest.min(w.due);
                true
            }
        });
        self.earliest = earliest;
        due.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, p) in due {
            self.bytes -= push_wire_len(&p);
            out.push(p);
        }
    }

    /// Empty the queue (the node went away); returns how many pushes were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const S: Settings = Settings {
        delay_ms: 1000,
        max_delay_ms: 3000,
        max_messages: 3,
        max_bytes: 1 << 20,
    };

    fn push(user: u32, text: &str) -> RemotePush {
        RemotePush {
            context: 1,
            user,
            filter: "*".into(),
            text: Arc::from(text),
            at: None,
            prev: None,
        }
    }

    fn due(c: &mut Coalescer, now: u64) -> Vec<RemotePush> {
        let mut out = Vec::new();
        c.take_due(now, &mut out);
        out
    }

    #[test]
    fn equal_pushes_merge_and_leave_after_the_delay() {
        let mut c = Coalescer::default();
        assert_eq!(c.offer(push(1, "a"), 0, &S), Offer::Queued);
        assert_eq!(c.offer(push(1, "a"), 300, &S), Offer::Merged);
        assert!(due(&mut c, 999).is_empty());
        // The merge at 300 moved the due time to 1300.
        assert!(due(&mut c, 1299).is_empty());
        assert_eq!(due(&mut c, 1300), vec![push(1, "a")]);
        assert!(c.is_empty());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn merging_never_delays_past_max_delay() {
        let mut c = Coalescer::default();
        c.offer(push(1, "a"), 0, &S);
        for t in (200..3000).step_by(200) {
            assert_eq!(c.offer(push(1, "a"), t, &S), Offer::Merged);
            assert!(due(&mut c, t).is_empty(), "left at {t}");
        }
        assert_eq!(due(&mut c, 3000), vec![push(1, "a")]);
    }

    #[test]
    fn different_pushes_are_not_merged_and_keep_their_order() {
        let mut c = Coalescer::default();
        c.offer(push(1, "b"), 0, &S);
        c.offer(push(1, "a"), 1, &S);
        c.offer(push(2, "b"), 2, &S);
        assert_eq!(
            due(&mut c, 2000),
            vec![push(1, "b"), push(1, "a"), push(2, "b")]
        );
    }

    #[test]
    fn bounded_in_messages_and_bytes() {
        let mut c = Coalescer::default();
        for u in 0..3 {
            assert_eq!(c.offer(push(u, "x"), 0, &S), Offer::Queued);
        }
        assert_eq!(c.offer(push(9, "x"), 0, &S), Offer::Dropped);
        // Merging into a waiting push still works when full.
        assert_eq!(c.offer(push(0, "x"), 0, &S), Offer::Merged);
        let tight = Settings { max_bytes: 40, ..S };
        let mut c = Coalescer::default();
        assert_eq!(c.offer(push(1, "0123456789"), 0, &tight), Offer::Queued);
        assert_eq!(c.offer(push(2, "0123456789"), 0, &tight), Offer::Dropped);
        assert_eq!(c.clear(), 1);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn an_immediate_push_takes_its_waiting_twin() {
        let mut c = Coalescer::default();
        c.offer(push(1, "a"), 0, &S);
        assert!(c.take_equal(&push(1, "a")));
        assert!(!c.take_equal(&push(1, "a")));
        assert!(due(&mut c, 5000).is_empty());
    }
}

//! Remote coalescing, sans-IO: one core's queue of pushes bound for one other node. Equal
//! pushes (same context, user, filter and text) are duplicates the client need not get twice.
//!
//! Two modes (`remote.mode`, [`CoalesceMode`]):
//! - `edges` (leading and trailing edge): a push with no equal one in the queue leaves at once
//!   (the caller's batch of this loop turn) and opens a window of `delay` (at most
//!   `max_delay`). Equal pushes arriving in the window are held as one push that leaves when
//!   the window ends, and that send opens the next window; a window that ends with nothing
//!   held closes, so the next equal push leaves at once again. Equal pushes thus leave at
//!   most once per window, and none is held longer than the window.
//! - `wait`: a push waits up to `delay` for an equal one. An equal push arriving meanwhile is
//!   merged into it and the wait starts again, but no push waits longer than `max_delay` after
//!   the first.
//!
//! The owner calls [`Coalescer::take_due`] on a timer, so a held push leaves between its due
//! time and one check period later (`edges`: every core tick; `wait`: every
//! `remote.timer_ms`). Pushes that must not wait (`coalesce: false`, `delay_ms = 0`) take an
//! equal held push with them ([`Coalescer::take_equal`]), so it is not delivered twice.
//!
//! The queue is bounded in entries and bytes (an open window counts, as it keeps the push to
//! compare with); beyond either, a push is dropped (the caller counts it). Time is passed in
//! (milliseconds of any monotonic clock).
use super::wire::{push_wire_len, RemotePush};
pub use crate::config::CoalesceMode;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// The `[remote]` settings a queue needs (reloadable: passed on every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub mode: CoalesceMode,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken: held for an equal push or its due time, or (`edges`, leading edge) put in the
    /// caller's batch to leave now.
    Queued,
    /// An equal push was held: this one is merged into it.
    Merged,
    /// The queue is full.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `wait`: the push waits for `due`; the entry goes when it leaves.
    Waiting,
    /// `edges`: an equal push left at `first`; the window ends at `due`, nothing held.
    Window,
    /// `edges`: an equal push is held for the end of the window at `due`.
    Trailing,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// `wait`: when the first push arrived. `edges`: when the window opened (the last send).
    first: u64,
    due: u64,
    /// Arrival order, kept when due pushes leave together.
    seq: u64,
    state: State,
}

#[derive(Default)]
pub struct Coalescer {
    waiting: HashMap<RemotePush, Waiting>,
    bytes: usize,
    seq: u64,
    /// No entry is due before this (skips the scan on most timer checks).
    earliest: u64,
}

impl Coalescer {
    /// Entries: pushes held and (`edges`) open windows.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queue `push`, or merge it into an equal held one. In `edges` mode a push with nothing
    /// equal in the queue is appended to `out` (it leaves now) and opens a window.
    pub fn offer(
        &mut self,
        push: RemotePush,
        now: u64,
        s: &Settings,
        out: &mut Vec<RemotePush>,
    ) -> Offer {
        if s.mode == CoalesceMode::Edges && push.at.is_some() {
            // Never equal to another push (`RemotePush::at`): no window to keep for it.
            if self.waiting.len() + out.len() >= s.max_messages {
                return Offer::Dropped;
            }
            out.push(push);
            return Offer::Queued;
        }
        // One hash of the push (its text may be large): the entry serves the merge and the insert.
        let waiting = self.waiting.len();
        let slot = match self.waiting.entry(push) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                // The entry's state, not the mode: a reload changes what new entries do.
                match w.state {
                    State::Waiting => {
                        w.due = (now + s.delay_ms).min(w.first + s.max_delay_ms);
                        self.earliest = self.earliest.min(w.due);
                    }
                    State::Trailing => {}
                    State::Window => {
                        self.seq += 1;
                        w.seq = self.seq;
                        w.state = State::Trailing;
                        return Offer::Queued;
                    }
                }
                return Offer::Merged;
            }
            Entry::Vacant(v) => v,
        };
        let len = push_wire_len(slot.key());
        if waiting >= s.max_messages || self.bytes + len > s.max_bytes {
            return Offer::Dropped;
        }
        let due = now + s.delay_ms.min(s.max_delay_ms);
        let state = match s.mode {
            CoalesceMode::Wait => State::Waiting,
            CoalesceMode::Edges => {
                out.push(slot.key().clone());
                State::Window
            }
        };
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
            state,
        });
        Offer::Queued
    }

    /// Remove a held push equal to `push` (it leaves now, with `push`); true if there was one.
    /// An open window with nothing held stays.
    pub fn take_equal(&mut self, push: &RemotePush) -> bool {
        // Nothing waiting (the common case with coalescing off): no need to hash the text.
        if self.waiting.is_empty() {
            return false;
        }
        match self.waiting.get(push) {
            Some(w) if w.state != State::Window => {
                self.waiting.remove(push);
                self.bytes -= push_wire_len(push);
                true
            }
            _ => false,
        }
    }

    /// Move every push due at `now` to `out`, in arrival order; close the windows that are
    /// over, and open the next one after each trailing push that leaves.
    pub fn take_due(&mut self, now: u64, out: &mut Vec<RemotePush>) {
        if self.waiting.is_empty() || now < self.earliest {
            return;
        }
        let mut due = Vec::new();
        let mut earliest = u64::MAX;
        let bytes = &mut self.bytes;
        self.waiting.retain(|p, w| {
            if w.due > now {
                earliest = earliest.min(w.due);
                return true;
            }
            if w.state != State::Window {
                due.push((w.seq, p.clone()));
            }
            if w.state == State::Trailing {
                // The window restarts from this send, with the same length.
                w.due = now + (w.due - w.first);
                w.first = now;
                w.state = State::Window;
                earliest = earliest.min(w.due);
                return true;
            }
            *bytes -= push_wire_len(p);
            false
        });
        self.earliest = earliest;
        due.sort_unstable_by_key(|(seq, _)| *seq);
        out.extend(due.into_iter().map(|(_, p)| p));
    }

    /// Empty the queue (the node went away); returns how many held pushes were dropped,
    /// each shown to `dropped` first.
    pub fn clear(&mut self, mut dropped: impl FnMut(&RemotePush)) -> usize {
        let mut n = 0;
        for (p, w) in &self.waiting {
            if w.state != State::Window {
                dropped(p);
                n += 1;
            }
        }
        self.waiting.clear();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// `wait` mode, as before `edges` existed.
    const S: Settings = Settings {
        mode: CoalesceMode::Wait,
        delay_ms: 1000,
        max_delay_ms: 3000,
        max_messages: 3,
        max_bytes: 1 << 20,
    };
    const E: Settings = Settings {
        mode: CoalesceMode::Edges,
        ..S
    };

    fn push(user: u32, text: &str) -> RemotePush {
        RemotePush {
            context: 1,
            user: user.into(),
            filter: "*".into(),
            text: Arc::from(text),
            at: None,
            prev: None,
        }
    }

    /// Offer a push; what it returned and what left at once.
    fn offer(c: &mut Coalescer, p: RemotePush, now: u64, s: &Settings) -> (Offer, Vec<RemotePush>) {
        let mut out = Vec::new();
        let offer = c.offer(p, now, s, &mut out);
        (offer, out)
    }

    /// Offer in `wait` mode, where nothing leaves at once.
    fn wait(c: &mut Coalescer, p: RemotePush, now: u64, s: &Settings) -> Offer {
        let (offer, out) = offer(c, p, now, s);
        assert!(out.is_empty(), "wait mode sent {out:?} at once");
        offer
    }

    fn due(c: &mut Coalescer, now: u64) -> Vec<RemotePush> {
        let mut out = Vec::new();
        c.take_due(now, &mut out);
        out
    }

    #[test]
    fn equal_pushes_merge_and_leave_after_the_delay() {
        let mut c = Coalescer::default();
        assert_eq!(wait(&mut c, push(1, "a"), 0, &S), Offer::Queued);
        assert_eq!(wait(&mut c, push(1, "a"), 300, &S), Offer::Merged);
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
        wait(&mut c, push(1, "a"), 0, &S);
        for t in (200..3000).step_by(200) {
            assert_eq!(wait(&mut c, push(1, "a"), t, &S), Offer::Merged);
            assert!(due(&mut c, t).is_empty(), "left at {t}");
        }
        assert_eq!(due(&mut c, 3000), vec![push(1, "a")]);
    }

    #[test]
    fn different_pushes_are_not_merged_and_keep_their_order() {
        let mut c = Coalescer::default();
        wait(&mut c, push(1, "b"), 0, &S);
        wait(&mut c, push(1, "a"), 1, &S);
        wait(&mut c, push(2, "b"), 2, &S);
        assert_eq!(
            due(&mut c, 2000),
            vec![push(1, "b"), push(1, "a"), push(2, "b")]
        );
    }

    #[test]
    fn bounded_in_messages_and_bytes() {
        let mut c = Coalescer::default();
        for u in 0..3 {
            assert_eq!(wait(&mut c, push(u, "x"), 0, &S), Offer::Queued);
        }
        assert_eq!(wait(&mut c, push(9, "x"), 0, &S), Offer::Dropped);
        // Merging into a waiting push still works when full.
        assert_eq!(wait(&mut c, push(0, "x"), 0, &S), Offer::Merged);
        let tight = Settings { max_bytes: 40, ..S };
        let mut c = Coalescer::default();
        assert_eq!(
            wait(&mut c, push(1, "0123456789"), 0, &tight),
            Offer::Queued
        );
        assert_eq!(
            wait(&mut c, push(2, "0123456789"), 0, &tight),
            Offer::Dropped
        );
        assert_eq!(c.clear(|_| {}), 1);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn an_immediate_push_takes_its_waiting_twin() {
        let mut c = Coalescer::default();
        wait(&mut c, push(1, "a"), 0, &S);
        assert!(c.take_equal(&push(1, "a")));
        assert!(!c.take_equal(&push(1, "a")));
        assert!(due(&mut c, 5000).is_empty());
    }

    #[test]
    fn edges_the_first_push_leaves_at_once() {
        let mut c = Coalescer::default();
        assert_eq!(
            offer(&mut c, push(1, "a"), 100, &E),
            (Offer::Queued, vec![push(1, "a")])
        );
        // A different push is a first too.
        assert_eq!(
            offer(&mut c, push(2, "a"), 150, &E),
            (Offer::Queued, vec![push(2, "a")])
        );
        // Nothing held: the windows end without a send and close.
        assert!(due(&mut c, 1150).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.bytes, 0);
        // After the window an equal push is a first again.
        assert_eq!(
            offer(&mut c, push(1, "a"), 1200, &E),
            (Offer::Queued, vec![push(1, "a")])
        );
    }

    #[test]
    fn edges_five_equal_pushes_in_200_ms_leave_twice_the_second_at_the_window_end() {
        let mut c = Coalescer::default();
        let mut sent = Vec::new();
        let mut offers = Vec::new();
        for t in [0, 50, 100, 150, 200] {
            let (o, out) = offer(&mut c, push(1, "a"), t, &E);
            offers.push(o);
            sent.extend(out.into_iter().map(|p| (t, p)));
            for p in due(&mut c, t) {
                sent.push((t, p));
            }
        }
        use Offer::*;
        assert_eq!(offers, [Queued, Queued, Merged, Merged, Merged]);
        assert_eq!(
            sent,
            vec![(0, push(1, "a"))],
            "only the leading edge so far"
        );
        // Checked every 10 ms: the trailing push leaves exactly when the window (0..1000) ends.
        for t in (210..1000).step_by(10) {
            assert!(due(&mut c, t).is_empty(), "left at {t}");
        }
        assert_eq!(due(&mut c, 1000), vec![push(1, "a")]);
        // That send opened the next window: nothing more to send, and it closes at 2000.
        assert!(due(&mut c, 1999).is_empty());
        assert_eq!(c.len(), 1);
        assert!(due(&mut c, 2000).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn edges_a_steady_stream_leaves_once_per_window() {
        // Equal pushes every 100 ms for 5 s: the leading one, then one per window of 1000 ms,
        // each held push leaving at most delay (<= max_delay) after it arrived.
        let mut c = Coalescer::default();
        let mut sends = Vec::new();
        let mut held_since = None;
        for t in (0..5000).step_by(100) {
            for _ in due(&mut c, t) {
                assert!(t - held_since.take().unwrap() <= E.delay_ms.min(E.max_delay_ms));
                sends.push(t);
            }
            let (o, out) = offer(&mut c, push(1, "a"), t, &E);
            if !out.is_empty() {
                sends.push(t);
            } else if o == Offer::Queued {
                held_since = Some(t);
            }
        }
        assert_eq!(sends, [0, 1000, 2000, 3000, 4000]);
        // The last window's held push leaves at its end.
        assert_eq!(due(&mut c, 5000), vec![push(1, "a")]);
    }

    #[test]
    fn edges_the_window_is_at_most_max_delay() {
        let s = Settings {
            delay_ms: 5000,
            max_delay_ms: 1500,
            ..E
        };
        let mut c = Coalescer::default();
        assert_eq!(offer(&mut c, push(1, "a"), 0, &s).1.len(), 1);
        assert_eq!(offer(&mut c, push(1, "a"), 10, &s), (Offer::Queued, vec![]));
        assert!(due(&mut c, 1499).is_empty());
        assert_eq!(due(&mut c, 1500), vec![push(1, "a")]);
    }

    #[test]
    fn edges_bounds_immediate_twins_and_a_lost_node() {
        let mut c = Coalescer::default();
        for u in 0..3 {
            assert_eq!(offer(&mut c, push(u, "x"), 0, &E).0, Offer::Queued);
        }
        // Open windows count toward the bound: a fourth kind is dropped, not sent.
        assert_eq!(offer(&mut c, push(9, "x"), 0, &E), (Offer::Dropped, vec![]));
        // An equal push is still held (the window exists), then merged.
        assert_eq!(offer(&mut c, push(0, "x"), 1, &E), (Offer::Queued, vec![]));
        assert_eq!(offer(&mut c, push(0, "x"), 2, &E), (Offer::Merged, vec![]));
        // An immediate push takes the held twin, but not a window with nothing held.
        assert!(!c.take_equal(&push(1, "x")));
        assert!(c.take_equal(&push(0, "x")));
        assert_eq!(c.len(), 2);
        offer(&mut c, push(1, "x"), 3, &E);
        // A lost node drops what is held (user 1's), not the windows.
        assert_eq!(c.clear(|_| {}), 1);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn edges_a_push_with_a_history_position_leaves_with_no_window() {
        let mut c = Coalescer::default();
        let mut p = push(1, "a");
        p.at = Some(crate::service::history::Position {
            epoch: 1,
            offset: 7,
        });
        assert_eq!(offer(&mut c, p.clone(), 0, &E), (Offer::Queued, vec![p]));
        assert!(c.is_empty());
    }

    #[test]
    fn a_mode_change_leaves_entries_as_they_were_made() {
        let mut c = Coalescer::default();
        wait(&mut c, push(1, "a"), 0, &S);
        // Now edges: the waiting push is merged into, not sent.
        assert_eq!(offer(&mut c, push(1, "a"), 10, &E), (Offer::Merged, vec![]));
        assert_eq!(offer(&mut c, push(2, "a"), 10, &E).1.len(), 1);
        // Back to wait: user 2's window holds an equal push for its end.
        assert_eq!(wait(&mut c, push(2, "a"), 20, &S), Offer::Queued);
        assert_eq!(due(&mut c, 1010), vec![push(1, "a"), push(2, "a")]);
    }
}

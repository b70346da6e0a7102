//! Resumes answered later. With the `nats` history store, the store runs on a thread of its
//! own ([`HistoryBus`], implemented above the engine); a core asks it what a connecting
//! client missed and goes on. Until the answer comes back (as `Command::Resumed`), the live
//! pushes of that socket are held here, not sent: after the answer the socket gets the
//! replay, the marker, then the held pushes the replay does not already contain (by
//! offset). A core never waits; every question is answered (the store's calls are bounded
//! by a timeout), and a socket closed meanwhile is recognised by its generation.
use crate::service::engineio::recovery::{Parked, Pid};
use crate::service::history::{Position, Recovery};
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Pushes held per waiting socket; beyond, the oldest are dropped and the client is told
/// `recovered: false` (a store that slow is failing anyway).
pub const MAX_HELD: usize = 1024;

/// What the store answers for a connecting client: its current position and, for a resume,
/// what was missed; or why it could not answer.
pub type StoreAnswer = Result<(Position, Option<Recovery>), String>;

/// What the store answers for an append: the push's position and its user's previous offset
/// (`PushJob::prev`), or why it was not recorded.
pub type AppendAnswer = Result<(Position, u64), String>;

/// What the store answers for a Socket.IO CONNECT: its current position and, for a claim
/// of a session parked there by that user and namespace, the record (taken: it restores
/// once) and what the session missed since; or why it could not answer.
pub type RestoreAnswer = Result<(Position, Option<(Parked, Recovery)>), String>;

/// A history store on another thread. Calls return at once; `done` runs on the store's
/// thread when the answer is there (it must only queue work, e.g. a command to a core).
pub trait HistoryBus: Send + Sync {
    /// Record a push for (context, user), sent with path filter `filter` (`None`: every
    /// path); `done` gets its position and the offset of the user's previous message
    /// (`PushJob::prev`), or why not.
    fn append(
        &self,
        context: u32,
        user: &UserId,
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: Box<dyn FnOnce(AppendAnswer) + Send>,
    );

    /// A client of (context, user) connects, resuming from `from` if it gave a position.
    fn connect(
        &self,
        context: u32,
        user: &UserId,
        from: Option<Position>,
        done: Box<dyn FnOnce(StoreAnswer) + Send>,
    );

    /// Keep a parked Socket.IO session (connection state recovery) where any node can
    /// restore it, for the history ttl.
    fn park(&self, record: Parked);

    /// A Socket.IO client of (context, user) joins namespace `nsp`, claiming the private
    /// session `pid` (with the offset of the last event it got) or not.
    fn restore(
        &self,
        context: u32,
        user: &UserId,
        nsp: &str,
        claim: Option<(Pid, Option<Position>)>,
        done: Box<dyn FnOnce(RestoreAnswer) + Send>,
    );

    /// The store's own counters for `/metrics`: (event, count), e.g. appends that failed.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// A live push held for a waiting socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its position (`None`: the store did not record it).
    pub at: Option<Position>,
    /// Its user's previous offset (`PushJob::prev`).
    pub prev: Option<u64>,
    pub text: Arc<str>,
}

impl Held {
    pub fn new(at: Option<Position>, prev: Option<u64>, text: &Arc<str>) -> Held {
        Held {
            at,
            prev,
            text: text.clone(),
        }
    }
}

/// One socket waiting for its store's answer.
pub struct Waiting {
    pub gen: u32,
    pub from: Option<Position>,
    /// Live pushes that arrived meanwhile, in order.
    pub held: VecDeque<Held>,
    /// Some were dropped ([`MAX_HELD`]).
    pub overflowed: bool,
}

/// The sockets of one core that wait for their store's answer, by slot.
#[derive(Default)]
pub struct PendingResumes {
    waiting: HashMap<u32, Waiting>,
}

impl PendingResumes {
    /// Socket `slot` (generation `gen`) asked the store; hold its pushes from now on.
    pub fn begin(&mut self, slot: u32, gen: u32, from: Option<Position>) {
        self.waiting.insert(
            slot,
            Waiting {
                gen,
                from,
                held: VecDeque::new(),
                overflowed: false,
            },
        );
    }

    /// Is `slot` waiting? (Then its pushes go to [`PendingResumes::hold`].)
    pub fn is_waiting(&self, slot: u32, gen: u32) -> bool {
        self.waiting.get(&slot).is_some_and(|w| w.gen == gen)
    }

    /// Hold a live push for a waiting socket.
    pub fn hold(&mut self, slot: u32, push: Held) {
        let Some(w) = self.waiting.get_mut(&slot) else {
            return;
        };
        if w.held.len() >= MAX_HELD {
            w.held.pop_front();
            w.overflowed = true;
        }
        w.held.push_back(push);
    }

    /// The answer for `slot` came: what waited, if the socket is still the one that asked.
    pub fn finish(&mut self, slot: u32, gen: u32) -> Option<Waiting> {
        if !self.is_waiting(slot, gen) {
            return None;
        }
        self.waiting.remove(&slot)
    }

    /// Sockets waiting (a gauge; each is bounded by the store's timeout).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The held pushes a socket still needs after a replay that brought it to `through`: those
/// of another epoch or past it, and those the store did not record.
pub fn after(held: VecDeque<Held>, through: Position) -> impl Iterator<Item = Held> {
    held.into_iter().filter(move |h| {
        h.at.is_none_or(|at| at.epoch != through.epoch || at.offset > through.offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64) -> Option<Position> {
        Some(Position { epoch: 1, offset })
    }

    #[test]
    fn pushes_held_while_waiting_are_kept_past_the_replay_only() {
        let mut p = PendingResumes::default();
        p.begin(3, 7, pos(1));
        assert!(p.is_waiting(3, 7) && !p.is_waiting(3, 8) && !p.is_waiting(4, 7));
        for (o, t) in [(2, "a"), (3, "b"), (4, "c")] {
            p.hold(3, Held::new(pos(o), None, &Arc::from(t)));
        }
        p.hold(3, Held::new(None, None, &Arc::from("unrecorded")));
        assert!(p.finish(3, 8).is_none(), "another socket in the same slot");
        let w = p.finish(3, 7).unwrap();
        assert!(!w.overflowed && p.is_empty());
        let through = Position {
            epoch: 1,
            offset: 3,
        };
        let left: Vec<_> = after(w.held, through).map(|h| h.text).collect();
        assert_eq!(left, [Arc::from("c"), Arc::from("unrecorded")]);
    }

    #[test]
    fn holding_is_bounded() {
        let mut p = PendingResumes::default();
        p.begin(0, 0, None);
        for i in 0..MAX_HELD as u64 + 5 {
            p.hold(0, Held::new(pos(i), None, &Arc::from("x")));
        }
        let w = p.finish(0, 0).unwrap();
        assert!(w.overflowed && w.held.len() == MAX_HELD);
        assert_eq!(w.held.front().unwrap().at, pos(5));
    }
}

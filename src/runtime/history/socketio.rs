//! Socket.IO connection state recovery on the core's history: what a CONNECT restores
//! (memory store: judged here at once; nats store: judged from the store's answer), and
//! the sessions parked for it.
use super::{CoreHistory, Restore, ShardStats, DROPPED, EPOCH_CHANGED, RECOVERED, UNAVAILABLE};
use crate::runtime::resume::RestoreAnswer;
use crate::service::engineio::recovery::{resume_from, Claim, ParkNamespace, Parked, Pid};
use crate::service::history::{MemoryHistory, Missed, Position};
use crate::service::user_id::UserId;

impl CoreHistory {
    /// A Socket.IO client of (context, user) connects namespace `nsp`, claiming a private
    /// session (`claim`) or not: the pid to answer with (`tag`: fresh randomness for a new
    /// one), and, if its session is restored, its parked record and what it missed. Counts
    /// the outcome of a claim. A restore needs the parked record of that pid, user and
    /// namespace, and (for the namespace pushes went to) the history to hold everything
    /// after the client's offset; otherwise nothing is restored nor replayed (as socket.io
    /// does), and the record is dropped. What it missed is for every path: the caller keeps
    /// what the socket's path gets ([`Restore::for_path`]). With the nats store (no store on
    /// the core) nothing is restored: every claim is `unavailable`.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &mut self,
        context: u32,
        user: &UserId,
        nsp: &str,
        claim: Option<&Claim>,
        tag: u64,
        now_ms: u64,
        stats: &ShardStats,
    ) -> Restore {
        let Some(store) = self.store.as_mut() else {
            if claim.is_some() {
                ShardStats::inc(&stats.resumes[UNAVAILABLE]);
            }
            return Restore::fresh(tag);
        };
        store.touch(context, user);
        let current = store.current();
        let fresh = Restore::starting(current, tag);
        let Some(claim) = claim else {
            return fresh;
        };
        let parked = claim
            .pid
            .and_then(|pid| self.parked.take(pid, context, user, nsp, now_ms));
        let (outcome, missed) = judge(
            store,
            self.clustered,
            (context, user),
            claim,
            parked.as_ref(),
            now_ms,
        );
        ShardStats::inc(&stats.resumes[outcome]);
        match (claim.pid, parked) {
            (Some(pid), Some(p)) if outcome == RECOVERED => Restore {
                pid,
                start: p.ns.start,
                parked: Some(p),
                missed,
            },
            _ => fresh,
        }
    }

    /// [`CoreHistory::restore`] with the nats store, once it answered (`answer`; see
    /// `HistoryBus::restore`): the same rules, judged from what the store found. Counts the
    /// outcome of a claim.
    /// `overflowed`: pushes held meanwhile were dropped (nothing is restored then). Also
    /// returns how far the client is once it has what it is sent (held pushes up to there
    /// are not sent again).
    pub fn restore_answered(
        &mut self,
        claim: Option<&Claim>,
        tag: u64,
        answer: RestoreAnswer,
        overflowed: bool,
        stats: &ShardStats,
    ) -> (Restore, Position) {
        let Ok((current, found)) = answer else {
            if claim.is_some() {
                ShardStats::inc(&stats.resumes[UNAVAILABLE]);
            }
            let r = Restore::fresh(tag);
            let start = r.start;
            return (r, start);
        };
        let fresh = Restore::starting(current, tag);
        let Some(claim) = claim else {
            return (fresh, current);
        };
        let outcome = match (claim.pid, &found) {
            (None, _) => DROPPED,
            (Some(pid), _) if pid.epoch != current.epoch => EPOCH_CHANGED,
            (Some(_), Some((_, r))) if r.complete && !claim.bad_offset && !overflowed => RECOVERED,
            _ => DROPPED,
        };
        ShardStats::inc(&stats.resumes[outcome]);
        match (claim.pid, found) {
            (Some(pid), Some((p, r))) if outcome == RECOVERED => {
                let last = r.messages.last().map_or(0, |m| m.offset);
                let through = Position {
                    epoch: current.epoch,
                    offset: current.offset.max(last),
                };
                let r = Restore {
                    pid,
                    start: p.ns.start,
                    parked: Some(p),
                    missed: r.messages,
                };
                (r, through)
            }
            _ => (fresh, current),
        }
    }

    /// Is a session parked under `pid`?
    pub fn is_parked(&self, pid: Pid) -> bool {
        self.parked.contains(pid)
    }

    /// Can a Socket.IO session be restored here (the memory store)?
    pub fn restores(&self) -> bool {
        self.store.is_some()
    }

    /// Park the namespaces of a Socket.IO session of (context, user) that ended abnormally,
    /// with the socket's attributes, at `now_ms`.
    pub fn park(
        &mut self,
        context: u32,
        user: &UserId,
        attrs: &[(Box<str>, Box<str>)],
        namespaces: Vec<ParkNamespace>,
        now_ms: u64,
    ) {
        if !self.restores() {
            return;
        }
        for ns in namespaces {
            let p = Parked {
                context,
                user: user.clone(),
                ns,
                attrs: attrs.to_vec(),
            };
            self.parked.park(p, now_ms);
        }
    }
}

/// Whether a claim restores its session (the outcome), and what it missed: the memory
/// `store`, a `clustered` node, the claiming (context, user), the claimed session's record.
fn judge(
    store: &mut MemoryHistory,
    clustered: bool,
    (context, user): (u32, &UserId),
    claim: &Claim,
    parked: Option<&Parked>,
    now_ms: u64,
) -> (usize, Vec<Missed>) {
    let nothing = Vec::new();
    let Some(pid) = claim.pid else {
        return (DROPPED, nothing);
    };
    if pid.epoch != store.epoch() {
        return (EPOCH_CHANGED, nothing);
    }
    let Some(p) = parked.filter(|_| !claim.bad_offset) else {
        return (DROPPED, nothing);
    };
    if clustered {
        return (UNAVAILABLE, nothing);
    }
    if !p.ns.pushes {
        // No push went to that namespace: it missed nothing.
        return (RECOVERED, nothing);
    }
    let from = resume_from(claim.offset, p.ns.start);
    let r = store.since(context, user, from, now_ms);
    if r.complete {
        (RECOVERED, r.messages)
    } else {
        (DROPPED, nothing)
    }
}

//! Socket.IO connection state recovery on history endpoints (Socket.IO v4): a CONNECT
//! answered with what its claim restores, and sessions parked when they end abnormally.
//! With the memory store the answer is given in the same step as the CONNECT (no push may
//! come in between); with the nats store the store's thread is asked (its answer comes back
//! as `Command::SioResumed`), the session's pushes are held meanwhile
//! (`resume::PendingResumes`), and those the restore already replays are dropped by offset.
//! Parked records then live in the stream, so that another node can restore them.
use super::Shard;
use crate::runtime::conn::Sio;
use crate::runtime::history::Restore;
use crate::runtime::resume::RestoreAnswer;
use crate::runtime::stats::ShardStats;
use crate::runtime::{sys, Command, MAX_ATTRIBUTES};
use crate::service::engineio::recovery::{Claim, ParkNamespace, Parked, Pid};
use crate::service::engineio::Resumed;
use crate::service::history::Position;
use crate::service::user_id::UserId;

impl Shard {
    /// Does the Socket.IO session in `slot` get connection state recovery: a history
    /// endpoint, a user to keep history for.
    pub(in crate::runtime) fn sio_recovery_wanted(&self, slot: u32) -> bool {
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return false;
        };
        meta.auth.is_some() && self.history.as_deref().is_some_and(|h| h.on(endpoint))
    }

    /// `Action::Resume`: what the claim restores, handed to the session in this same step
    /// (memory store), so that a push is either in what it missed or live, never both,
    /// never neither; or asked of the nats store, the session's pushes held meanwhile.
    pub(in crate::runtime) fn sio_resume(
        &mut self,
        session: u32,
        nsp: &str,
        claim: Option<&Claim>,
    ) {
        let tag = self.next_random();
        let socket = self.conns[session as usize].socket();
        let user = socket.and_then(|(e, m)| Some((e, m.auth.clone()?)));
        if let (Some(pid), Some((_, a))) = (claim.and_then(|c| c.pid), &user) {
            self.sio_take_over(session, a.context, &a.user, nsp, pid);
        }
        if let Some((_, a)) = &user {
            if self.sio_ask_store(session, (a.context, &a.user), nsp, claim, tag) {
                return;
            }
        }
        let stats = &self.shared.stats[self.id];
        let (r, endpoint) = match (user, self.history.as_deref_mut()) {
            (Some((endpoint, a)), Some(h)) => {
                let now = sys::monotonic_ms();
                let r = h.restore(a.context, &a.user, nsp, claim, tag, now, stats);
                (r, endpoint)
            }
            // (Recovery is only on with both; still, a CONNECT is always answered.)
            _ => (Restore::fresh(tag), 0),
        };
        let resumed = self.resumed(session, endpoint, r);
        self.with_session(session, |s, _, cfg, out| s.resumed(nsp, resumed, cfg, out));
    }

    /// With the nats store: ask it what the CONNECT restores and hold the session's pushes
    /// until it answers. False if it was not asked: the memory store, no store thread, or
    /// another namespace of the session already waiting (that one is answered without
    /// recovery: the store is asked for one namespace at a time).
    fn sio_ask_store(
        &mut self,
        session: u32,
        (context, user): (u32, &UserId),
        nsp: &str,
        claim: Option<&Claim>,
        tag: u64,
    ) -> bool {
        let Some(h) = self.history.as_deref_mut().filter(|h| !h.local()) else {
            return false;
        };
        let Some(bus) = self.shared.history_bus.clone() else {
            return false;
        };
        let gen = self.conns[session as usize].gen;
        if h.pending.is_waiting(session, gen) {
            return false;
        }
        h.pending.begin(session, gen, None);
        let (shared, core) = (self.shared.clone(), self.id);
        let (name, claimed) = (Box::<str>::from(nsp), claim.cloned());
        let done = move |answer| {
            shared.send(
                core,
                Command::SioResumed {
                    slot: session,
                    gen,
                    nsp: name,
                    claim: claimed,
                    tag,
                    answer,
                },
            )
        };
        let asked = claim.and_then(|c| Some((c.pid?, c.offset)));
        bus.restore(context, user, nsp, asked, Box::new(done));
        true
    }

    /// The nats store answered the CONNECT of `nsp` on the session in `slot`: the answer,
    /// what it missed, then the pushes held meanwhile that the restore does not replay.
    pub(in crate::runtime) fn on_sio_resumed(
        &mut self,
        slot: u32,
        gen: u32,
        nsp: &str,
        claim: Option<Claim>,
        tag: u64,
        answer: RestoreAnswer,
    ) {
        let Some((endpoint, waiting)) = self.finish_waiting(slot, gen) else {
            return;
        };
        let Some(h) = self.history.as_deref_mut() else {
            return;
        };
        let stats = &self.shared.stats[self.id];
        let (r, through) =
            h.restore_answered(claim.as_ref(), tag, answer, waiting.overflowed, stats);
        let resumed = self.resumed(slot, endpoint, r);
        self.with_session(slot, |s, _, cfg, out| s.resumed(nsp, resumed, cfg, out));
        self.release_held(slot, endpoint, waiting.held, through);
    }

    /// A claim of a pid whose session is still open on this core (its client found the
    /// connection dead before the server did): that session ends now as if its transport
    /// was lost, so that its namespaces are parked and the claim restores them.
    fn sio_take_over(&mut self, session: u32, context: u32, user: &UserId, nsp: &str, pid: Pid) {
        if self
            .history
            .as_deref()
            .is_none_or(|h| h.restores() && h.is_parked(pid))
        {
            return;
        }
        let holds = |slot: u32| match self.sio(slot) {
            Some(Sio::Session { session: s, .. }) => s.holds_pid(nsp, pid),
            _ => false,
        };
        let sockets = self.users.sockets(context, user).iter().copied();
        let Some(old) = sockets.filter(|&slot| slot != session).find(|&s| holds(s)) else {
            return;
        };
        self.with_session(old, |s, _, _, out| s.drop_transport(out));
    }

    /// The session's side of a restore: the missed pushes its path would have had live, as
    /// the endpoint sends them, the restored socket id; the restored attributes go back on
    /// the socket.
    fn resumed(&mut self, session: u32, endpoint: u8, mut r: Restore) -> Resumed {
        if let Some((_, meta)) = self.conns[session as usize].socket() {
            let replayed = r.for_path(&meta.path);
            let stats = &self.shared.stats[self.id];
            ShardStats::add(&stats.history_replayed, replayed as u64);
        }
        let epoch = r.start.epoch;
        let mut missed = Vec::with_capacity(r.missed.len());
        if let Some(t) = &self.shared.transcoders[endpoint as usize] {
            for m in &r.missed {
                if let Some(data) = t.outbound(&m.text) {
                    let at = Position {
                        epoch,
                        offset: m.offset,
                    };
                    missed.push((at, data.into_owned()));
                }
            }
        }
        let sid = r.parked.map(|p| {
            self.restore_attributes(session, p.attrs);
            p.ns.sid
        });
        Resumed {
            pid: r.pid,
            start: r.start,
            sid,
            missed,
        }
    }

    /// Attributes of a restored session back on its socket (those not set since, within
    /// the limit).
    fn restore_attributes(&mut self, slot: u32, attrs: Vec<(Box<str>, Box<str>)>) {
        let Some(meta) = self.conns[slot as usize].socket_mut() else {
            return;
        };
        if attrs.is_empty() {
            return;
        }
        let kept = meta.attrs_mut();
        for (k, v) in attrs {
            if kept.len() < MAX_ATTRIBUTES && !kept.iter().any(|(key, _)| *key == k) {
                kept.push((k, v));
            }
        }
    }

    /// `Action::Park`: the session ended abnormally; keep its namespaces (with the user
    /// and the socket's attributes) for a restore.
    pub(in crate::runtime) fn sio_park(&mut self, session: u32, namespaces: Vec<ParkNamespace>) {
        let Some((_, meta)) = self.conns[session as usize].socket() else {
            return;
        };
        let (Some(auth), Some(h)) = (&meta.auth, self.history.as_deref_mut()) else {
            return;
        };
        if h.restores() {
            let now = sys::monotonic_ms();
            h.park(auth.context, &auth.user, meta.attrs(), namespaces, now);
            return;
        }
        // The nats store: parked in the stream, where any node finds it.
        let Some(bus) = &self.shared.history_bus else {
            return;
        };
        for ns in namespaces {
            bus.park(Parked {
                context: auth.context,
                user: auth.user.clone(),
                ns,
                attrs: meta.attrs().to_vec(),
            });
        }
    }
}

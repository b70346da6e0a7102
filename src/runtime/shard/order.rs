//! Pushes to one socket in the order of its user's history (nats store). Pushes made on
//! different nodes reach a socket by different ways (straight from this node's admin API,
//! or from another node's through its `[remote]` queue and the link), so they may arrive out of
//! order; a client that got a later push before an earlier one would resume past the
//! earlier one and never get it. Each push recorded by the nats store carries the offset of
//! its user's previous message (`PushJob::prev`), and each history socket what it was sent
//! last (`SocketMeta::delivered`, set once the store answered its connect): a push whose
//! previous one was not sent yet waits while the store is asked for the gap (as a resume
//! does, `resume::PendingResumes`); a push already sent that way is not sent again.
use super::Shard;
use crate::config::EndpointKind;
use crate::runtime::resume::{self, Held, StoreAnswer, Waiting};
use crate::runtime::stats::ShardStats;
use crate::runtime::Command;
use crate::service::history::envelope::Marker;
use crate::service::history::Position;
use std::collections::VecDeque;
use std::sync::Arc;

impl Shard {
    /// One push to one socket of its user (its path matched): held while the socket waits
    /// for its store, in history order (module docs). Returns whether it was sent or held.
    pub(in crate::runtime) fn push_one(
        &mut self,
        slot: u32,
        endpoint: u8,
        at: Option<Position>,
        prev: Option<u64>,
        text: &Arc<str>,
        key: Option<u64>,
    ) -> bool {
        if let Some(h) = self.history.as_deref_mut().filter(|h| h.on(endpoint)) {
            let gen = self.conns[slot as usize].gen;
            if !h.pending.is_empty() && h.pending.is_waiting(slot, gen) {
                h.pending.hold(slot, Held::new(at, prev, text));
                return true;
            }
            if let (Some(at), Some(prev)) = (at, prev) {
                let Some(meta) = self.conns[slot as usize].socket_mut() else {
                    return false;
                };
                match meta.delivered() {
                    Some(d) if d.epoch == at.epoch && at.offset <= d.offset => {
                        // Sent already, with the gap it was in.
                        return false;
                    }
                    Some(d) if d.epoch == at.epoch && prev > d.offset => {
                        ShardStats::inc(&self.shared.stats[self.id].history_gaps);
                        self.fill_gap(slot, d, Some(Held::new(Some(at), Some(prev), text)));
                        return true;
                    }
                    Some(d) if d.epoch == at.epoch => meta.set_delivered(Some(at)),
                    _ => {}
                }
            }
        }
        self.send_push(slot, endpoint, at, text, key)
    }

    /// One push as the socket's endpoint sends it (an event, or a raw frame or envelope).
    fn send_push(
        &mut self,
        slot: u32,
        endpoint: u8,
        at: Option<Position>,
        text: &Arc<str>,
        key: Option<u64>,
    ) -> bool {
        if self.endpoint_kinds[endpoint as usize] == EndpointKind::Socketio {
            self.sio_push(slot, endpoint, text, at)
        } else {
            self.push_raw(slot, endpoint, at, text, key)
        }
    }

    /// The store answered socket `slot` (generation `gen`): what waited for it, and the
    /// socket's endpoint; `None` if the socket closed meanwhile (or its slot was reused).
    pub(in crate::runtime) fn finish_waiting(
        &mut self,
        slot: u32,
        gen: u32,
    ) -> Option<(u8, Waiting)> {
        let waiting = self.history.as_deref_mut()?.pending.finish(slot, gen)?;
        let (endpoint, _) = self.conns[slot as usize].socket()?;
        Some((endpoint, waiting))
    }

    /// After a replay that brought socket `slot` up to `through` (epoch 0: the store could
    /// not say): the pushes held meanwhile that it does not contain, in history order.
    pub(in crate::runtime) fn release_held(
        &mut self,
        slot: u32,
        endpoint: u8,
        held: VecDeque<Held>,
        through: Position,
    ) {
        if through.epoch != 0 {
            self.sent_in_order(slot, through);
        }
        for held in resume::after(held, through) {
            self.push_one(slot, endpoint, held.at, held.prev, &held.text, None);
        }
    }

    /// `first` came before its user's previous push (or, `None`, pushes may have been lost
    /// on the way from another node: `shard::catchup`): hold it (and what follows) and ask
    /// the store what the socket missed after `delivered`.
    pub(in crate::runtime) fn fill_gap(
        &mut self,
        slot: u32,
        delivered: Position,
        first: Option<Held>,
    ) {
        let (Some(h), Some(bus)) = (self.history.as_deref_mut(), self.shared.history_bus.clone())
        else {
            return;
        };
        let c = &self.conns[slot as usize];
        let Some(auth) = c.socket().and_then(|(_, meta)| meta.auth.clone()) else {
            return;
        };
        let gen = c.gen;
        h.pending.begin(slot, gen, Some(delivered));
        if let Some(first) = first {
            h.pending.hold(slot, first);
        }
        let (shared, core) = (self.shared.clone(), self.id);
        let done = move |answer| shared.send(core, Command::GapFilled { slot, gen, answer });
        bus.connect(auth.context, &auth.user, Some(delivered), Box::new(done));
    }

    /// The store answered what socket `slot` missed after what it was sent: those, then
    /// what was held meanwhile (each in order again). If the store no longer holds all of
    /// it, the client is told so (the recovery marker with `recovered: false`, at the last
    /// push held, as a resume would be) after what is held. If the store cannot say, the
    /// client is told so too, the held pushes go as they are and this socket is no longer
    /// kept in order (nothing better can be done for it; its client's next resume is
    /// judged by the store).
    pub(in crate::runtime) fn on_gap_filled(&mut self, slot: u32, gen: u32, answer: StoreAnswer) {
        let Some((endpoint, waiting)) = self.finish_waiting(slot, gen) else {
            return;
        };
        let Some((_, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        let path: Box<str> = (*meta.path).into();
        let Some(from) = waiting.from else {
            return;
        };
        let (missed, lost_at) = match answer {
            Ok((current, Some(r))) => {
                let at = r.messages.last().map_or(current, |m| Position {
                    epoch: from.epoch,
                    offset: m.offset,
                });
                (
                    r.messages,
                    (!r.complete || waiting.overflowed).then_some(at),
                )
            }
            _ => {
                if let Some(meta) = self.conns[slot as usize].socket_mut() {
                    meta.set_delivered(None);
                }
                (Vec::new(), Some(from))
            }
        };
        let mut replayed = 0;
        for m in missed {
            let at = Position {
                epoch: from.epoch,
                offset: m.offset,
            };
            // Sent, or not for this socket (its path filter): had, in order, either way.
            self.sent_in_order(slot, at);
            if !m.reaches(&path) {
                continue;
            }
            replayed += 1;
            self.send_push(slot, endpoint, Some(at), &m.text, None);
        }
        if let Some(at) = lost_at {
            let marker = Marker {
                resumed: true,
                recovered: false,
                at,
                replayed,
            };
            self.send_marker(slot, endpoint, marker);
            if self.conns[slot as usize]
                .socket()
                .is_some_and(|(_, m)| m.delivered().is_some())
            {
                self.sent_in_order(slot, at);
            }
        }
        for held in waiting.held {
            self.push_one(slot, endpoint, held.at, held.prev, &held.text, None);
        }
    }

    /// A push of the socket's user that is not for it (its path filter): the socket has
    /// everything up to it all the same, if it had everything before it (so that the next
    /// push does not look like a gap).
    pub(in crate::runtime) fn passed_in_order(&mut self, slot: u32, at: Position, prev: u64) {
        let gen = self.conns[slot as usize].gen;
        if self
            .history
            .as_deref()
            .is_some_and(|h| h.pending.is_waiting(slot, gen))
        {
            return;
        }
        let Some(meta) = self.conns[slot as usize].socket_mut() else {
            return;
        };
        if let Some(d) = meta.delivered() {
            if d.epoch == at.epoch && prev <= d.offset && d.offset < at.offset {
                meta.set_delivered(Some(at));
            }
        }
    }

    /// Socket `slot` was sent (or has) everything of its user up to `at`.
    pub(in crate::runtime) fn sent_in_order(&mut self, slot: u32, at: Position) {
        if let Some(meta) = self.conns[slot as usize].socket_mut() {
            if meta
                .delivered()
                .is_none_or(|d| d.epoch != at.epoch || d.offset < at.offset)
            {
                meta.set_delivered(Some(at));
            }
        }
    }
}

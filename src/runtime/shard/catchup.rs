//! Catching up after a cluster link failure. Another node's pushes for some users may have
//! been lost on the way here (written to a link that failed, or not sent while it was
//! down); when the link is back, that node names those users (`wire::Frame::Missed`, see
//! `cluster::missed`). Each history socket of theirs is brought up to date without
//! reconnecting: with the nats store, from the store, after what it was sent last, as a gap
//! is filled (`shard::order`: the pushes in order, then what arrived meanwhile, or the
//! recovery marker with `recovered: false` if the store no longer holds them); with the
//! memory store, which never saw the lost pushes, it is told `recovered: false` at once.
//! Sockets without history get nothing (the loss is counted on the sending node).
//!
//! Bounded: one store read per socket named, through the store's bounded queue; a read it
//! refuses (a catch-up of "every user" on a node with more history sockets than the queue
//! holds) is answered at once as failed, and that socket is told `recovered: false`.
use super::Shard;
use crate::runtime::conn::flag;
use crate::runtime::stats::ShardStats;
use crate::service::history::envelope::Marker;
use crate::service::history::Position;
use crate::service::user_id::UserId;

impl Shard {
    /// Pushes for `users` (`None`: every user of this core) may have been lost on the way
    /// from another node.
    pub(in crate::runtime) fn catch_up(&mut self, users: Option<Vec<(u32, UserId)>>) {
        if self.history.is_none() {
            return;
        }
        let users = users.unwrap_or_else(|| self.users.keys().collect());
        let mut slots = Vec::new();
        for (context, user) in users {
            slots.clear();
            slots.extend_from_slice(self.users.sockets(context, &user));
            for &slot in &slots {
                self.catch_up_socket(slot);
            }
        }
    }

    fn catch_up_socket(&mut self, slot: u32) {
        let c = &self.conns[slot as usize];
        if c.has(flag::CLOSE_AFTER_FLUSH) {
            return;
        }
        let Some((endpoint, meta)) = c.socket() else {
            return;
        };
        let (gen, delivered) = (c.gen, meta.delivered());
        let Some(h) = self.history.as_deref().filter(|h| h.on(endpoint)) else {
            return;
        };
        if h.pending.is_waiting(slot, gen) {
            // The store's answer to its resume or to a gap is on its way.
            return;
        }
        let current = h.current();
        ShardStats::inc(&self.shared.stats[self.id].history_catchups);
        match (current, delivered) {
            (None, Some(d)) => self.fill_gap(slot, d, None),
            // The memory store never recorded the lost pushes; a nats-store socket that
            // is not kept in order (its store failed) cannot be told what it missed.
            (current, _) => {
                let marker = Marker {
                    resumed: true,
                    recovered: false,
                    at: current.unwrap_or(Position {
                        epoch: 0,
                        offset: 0,
                    }),
                    replayed: 0,
                };
                self.send_marker(slot, endpoint, marker);
            }
        }
    }
}

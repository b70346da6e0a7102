//! What a link's pushes became, per peer, sans-IO: how many were written to the peer, how
//! many it confirmed, and how many are therefore lost when a link fails.
//!
//! The receiver counts the pushes it received from the sender's current run (`instance`,
//! a random number each process draws at start and sends in its hello) and confirms the count
//! with `Ack` frames: after every chunk it reads, and first thing on every new link. The
//! sender counts what it wrote to the receiver's current run. When a link fails, what was
//! written and not yet confirmed is *unconfirmed*: the first `Ack` of the next link settles
//! it (the receiver stopped reading the old link before it answered), so the pushes the
//! partition swallowed are counted lost exactly, not one more or less. If the peer comes
//! back as a new run, or is forgotten, everything unconfirmed is lost.
//!
//! It also keeps the users of the pushes written and not confirmed ([`Unconfirmed`]): those
//! settled as lost, and those the link thread could not write when the link failed, are
//! the users the peer is told about once the next link with the same run is settled
//! ([`Ledger::take_missed`]), so that it brings their history sockets up to date.
use super::missed::{MissedUsers, Unconfirmed};
use crate::service::user_id::UserId;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// The peer's run the counts below are about (0 = none yet).
    instance: u64,
    /// Pushes written to that run, all links together.
    written: u64,
    /// The latest count it confirmed.
    acked: u64,
    /// After a link failed: `written` at that moment, until the next link's first `Ack`.
    pending: Option<u64>,
    /// The next `Ack` is a new link's first.
    first_ack: bool,
    /// Of `written`, settled as lost (never to be confirmed).
    settled: u64,
    /// Pushes received from that run.
    received: u64,
    /// Pushes written and never received (settled).
    lost: u64,
    /// The users of written pushes not confirmed yet, by index in `written`.
    unconfirmed: Unconfirmed,
    /// Users who may have missed pushes, for the peer's run (`instance`).
    missed: MissedUsers,
    /// The current link is with the run the previous one was with (its sockets are still
    /// open: telling it what they missed makes sense).
    continued: bool,
}

impl Ledger {
    /// A new link with the peer's run `instance` is up: returns the count to confirm to it
    /// first thing.
    pub fn link_up(&mut self, instance: u64) -> u64 {
        self.continued = instance == self.instance && instance != 0;
        if instance != self.instance {
            // A new run: nothing it had not confirmed will ever be.
            self.lost += self.unconfirmed();
            *self = Ledger {
                instance,
                lost: self.lost,
                ..Ledger::default()
            };
        }
        self.first_ack = true;
        self.received
    }

    /// Pushes for these (context, user) were written, in this order.
    pub fn wrote(&mut self, users: impl IntoIterator<Item = (u32, UserId)>) {
        for (context, user) in users {
            self.written += 1;
            self.unconfirmed.wrote(self.written, context, user);
        }
    }

    /// Pushes received from the peer; returns the count to confirm.
    pub fn received(&mut self, pushes: u64) -> u64 {
        self.received += pushes;
        self.received
    }

    /// The peer confirmed `count` pushes received from this run.
    pub fn ack(&mut self, count: u64) {
        let count = count.min(self.written);
        if std::mem::take(&mut self.first_ack) {
            if let Some(at_failure) = self.pending.take() {
                // Push indices: what the peer counts plus what was settled before.
                let through = count.max(self.acked) + self.settled;
                let gone = at_failure.saturating_sub(through);
                self.unconfirmed
                    .lost(through, through + gone, &mut self.missed);
                self.settled += gone;
                self.lost += gone;
            }
        }
        self.acked = self.acked.max(count);
        self.unconfirmed.confirmed(self.acked + self.settled);
    }

    /// The current link failed.
    pub fn link_down(&mut self) {
        self.pending = Some(self.written);
        self.first_ack = false;
    }

    /// The peer is gone for good: what it had not confirmed is lost.
    pub fn forget(&mut self) {
        self.lost += self.unconfirmed();
        *self = Ledger {
            lost: self.lost,
            ..Ledger::default()
        };
    }

    /// Written and not confirmed yet (settled as lost or received by the next link).
    pub fn unconfirmed(&self) -> u64 {
        self.written.saturating_sub(self.acked + self.settled)
    }

    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The current link is with the run the previous one was with.
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// Users who may have missed pushes of this run (e.g. those the link thread could not
    /// write when the link failed).
    pub fn missed(&mut self) -> &mut MissedUsers {
        &mut self.missed
    }

    /// What to tell the peer its sockets missed: once the current link (with the same run)
    /// settled what the failed one left unconfirmed.
    pub fn take_missed(&mut self) -> Option<(bool, Vec<(u32, UserId)>)> {
        if !self.missed_ready() {
            return None;
        }
        self.missed.take()
    }

    /// [`Ledger::take_missed`] has something to give.
    pub fn missed_ready(&self) -> bool {
        self.continued && self.pending.is_none() && !self.first_ack && !self.missed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pushes written, user by user 0, 1, 2, ...
    fn wrote(l: &mut Ledger, n: u32) {
        l.wrote((0..n).map(|u| (1, u.into())));
    }

    #[test]
    fn a_failed_link_s_unconfirmed_pushes_are_settled_by_the_next_link() {
        let mut l = Ledger::default();
        assert_eq!(l.link_up(7), 0);
        wrote(&mut l, 100);
        l.ack(90);
        l.link_down();
        assert_eq!(l.unconfirmed(), 10);
        assert_eq!(
            l.lost(),
            0,
            "not known yet: the acks may have been what was lost"
        );
        l.link_up(7);
        wrote(&mut l, 5); // the new link's pushes, written before its first ack arrives
        l.ack(96); // the peer received 96 of the first 100
        assert_eq!(l.lost(), 4);
        l.ack(101);
        assert_eq!((l.unconfirmed(), l.lost()), (0, 4));
        l.link_down();
        l.link_up(7);
        l.ack(101);
        assert_eq!(l.lost(), 4, "settled once");
    }

    #[test]
    fn every_confirmed_push_settles_nothing_as_lost() {
        let mut l = Ledger::default();
        l.link_up(7);
        wrote(&mut l, 50);
        l.link_down();
        l.link_up(7);
        l.ack(50);
        assert_eq!((l.lost(), l.unconfirmed()), (0, 0));
    }

    #[test]
    fn a_new_run_or_forgetting_loses_what_was_unconfirmed() {
        let mut l = Ledger::default();
        l.link_up(7);
        wrote(&mut l, 20);
        l.ack(15);
        assert_eq!(l.received(3), 3);
        l.link_down();
        assert_eq!(l.link_up(8), 0, "the new run has received nothing of ours");
        assert_eq!(l.lost(), 5);
        wrote(&mut l, 4);
        l.forget();
        assert_eq!((l.lost(), l.unconfirmed()), (9, 0));
    }

    #[test]
    fn failures_before_a_link_settles_accumulate() {
        let mut l = Ledger::default();
        l.link_up(1);
        wrote(&mut l, 10);
        l.link_down();
        l.link_up(1);
        wrote(&mut l, 10);
        l.link_down(); // no ack on that link at all
        l.link_up(1);
        l.ack(12);
        assert_eq!(l.lost(), 8);
        wrote(&mut l, 1);
        l.link_down();
        l.link_up(2);
        assert_eq!(l.lost(), 9);
    }

    #[test]
    fn the_users_of_lost_pushes_are_told_to_the_same_run_once_settled() {
        let mut l = Ledger::default();
        l.link_up(7);
        assert!(!l.continued(), "a first link");
        l.wrote([
            (1, 10.into()),
            (1, 11.into()),
            (1, 12.into()),
            (1, 13.into()),
        ]);
        l.ack(2); // 10 and 11 arrived
        l.link_down();
        l.missed().add(1, &20.into()); // left in a queue when the link failed
        assert_eq!(l.take_missed(), None, "not settled yet");
        l.link_up(7);
        assert!(l.continued());
        l.wrote([(1, 30.into())]);
        assert_eq!(l.take_missed(), None, "the first ack settles");
        l.ack(3); // 12 arrived, 13 did not
        let (all, mut users) = l.take_missed().expect("settled");
        users.sort();
        assert_eq!((all, users), (false, vec![(1, 13.into()), (1, 20.into())]));
        assert_eq!((l.lost(), l.unconfirmed()), (1, 1));
        l.ack(4); // 30 arrived
        assert_eq!(l.unconfirmed(), 0);
        assert!(l.unconfirmed.is_empty());
        // A new run: its sockets are new, nothing to tell.
        l.wrote([(1, 40.into())]);
        l.link_down();
        l.missed().add(1, &41.into());
        l.link_up(8);
        l.ack(0);
        assert!(!l.continued() && l.take_missed().is_none());
    }
}

//! Who may have missed pushes bound for a peer, sans-IO and bounded: when the link is back,
//! the peer is told these users (`wire::Frame::Missed`) and brings their history sockets up
//! to date (or tells them `recovered: false`).
//!
//! Two places know of such pushes: a core (pushes routed while the peer was unreachable, and
//! those waiting in its queue when the link failed: [`MissedUsers`] per (core, node)), and
//! the link thread (pushes written and never confirmed: [`Unconfirmed`], settled by the
//! ledger exactly as it counts them lost; and those left in the outbound queues).
use crate::service::user_id::UserId;
use std::collections::{HashSet, VecDeque};

/// Users remembered per set; beyond, the set says "everyone" instead.
pub const MAX_MISSED_USERS: usize = 100_000;
/// Unconfirmed pushes whose users are remembered per peer; beyond, the oldest are forgotten
/// (and if those turn out lost, the peer is told "everyone").
pub const MAX_UNCONFIRMED: usize = 65_536;

/// A bounded set of (context, user), or everyone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MissedUsers {
    users: HashSet<(u32, UserId)>,
    all: bool,
}

impl MissedUsers {
    pub fn add(&mut self, context: u32, user: &UserId) {
        if self.all {
            return;
        }
        let key = (context, user.clone());
        if self.users.len() >= MAX_MISSED_USERS && !self.users.contains(&key) {
            self.add_all();
            return;
        }
        self.users.insert(key);
    }

    /// Everyone may have missed something (the set's memory is given back).
    pub fn add_all(&mut self) {
        self.all = true;
        self.users = HashSet::new();
    }

    /// Add what another set (or a frame) says.
    pub fn merge(&mut self, all: bool, users: impl IntoIterator<Item = (u32, UserId)>) {
        if all {
            self.add_all();
        }
        for (c, u) in users {
            self.add(c, &u);
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.users.is_empty()
    }

    /// Take everything: (everyone, users), `None` if empty.
    pub fn take(&mut self) -> Option<(bool, Vec<(u32, UserId)>)> {
        if self.is_empty() {
            return None;
        }
        let all = std::mem::take(&mut self.all);
        let users = std::mem::take(&mut self.users);
        Some((
            all,
            if all {
                Vec::new()
            } else {
                users.into_iter().collect()
            },
        ))
    }
}

/// The users of pushes written to a peer and not confirmed yet, by push index (the ledger's
/// count of pushes written, 1 for the first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    ring: VecDeque<(u64, u32, UserId)>,
    /// Entries up to this index were forgotten for room: their users are unknown.
    forgotten_through: u64,
}

impl Unconfirmed {
    /// Push number `index` for (context, user) was written.
    pub fn wrote(&mut self, index: u64, context: u32, user: UserId) {
        if self.ring.len() >= MAX_UNCONFIRMED {
            if let Some((i, _, _)) = self.ring.pop_front() {
                self.forgotten_through = i;
            }
        }
        self.ring.push_back((index, context, user));
    }

    /// Every push up to index `through` was received or settled.
    pub fn confirmed(&mut self, through: u64) {
        while self.ring.front().is_some_and(|&(i, _, _)| i <= through) {
            self.ring.pop_front();
        }
        if self.ring.is_empty() && self.ring.capacity() > 1024 {
            self.ring = VecDeque::new();
        }
    }

    /// Pushes `after + 1 ..= through` were lost: their users go to `missed`.
    pub fn lost(&mut self, after: u64, through: u64, missed: &mut MissedUsers) {
        if through <= after {
            return;
        }
        if self.forgotten_through > after {
            missed.add_all();
        }
        for (i, c, u) in &self.ring {
            if *i > through {
                break;
            }
            if *i > after {
                missed.add(*c, u);
            }
        }
        self.confirmed(through);
    }

    /// Entries held (a gauge for tests).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_bounded_by_everyone() {
        let mut m = MissedUsers::default();
        assert!(m.take().is_none());
        m.add(1, &2.into());
        m.add(1, &2.into());
        m.add(1, &3.into());
        let (all, mut users) = m.take().unwrap();
        users.sort();
        assert_eq!((all, users), (false, vec![(1, 2.into()), (1, 3.into())]));
        assert!(m.is_empty());
        for u in 0..MAX_MISSED_USERS as u32 {
            m.add(1, &u.into());
        }
        assert!(!m.all);
        m.add(1, &0.into());
        assert!(!m.all, "a user already in it");
        m.add(2, &0.into());
        assert!(m.all && m.users.is_empty());
        assert_eq!(m.take(), Some((true, Vec::new())));
        // String users are users like any other.
        let alice = UserId::parse("alice").unwrap();
        m.add(1, &alice);
        m.add(1, &UserId::parse("alice").unwrap());
        assert_eq!(m.take(), Some((false, vec![(1, alice)])));
        m.merge(true, [(1, 1.into())]);
        assert_eq!(m.take(), Some((true, Vec::new())));
    }

    #[test]
    fn lost_pushes_name_their_users_and_confirmed_ones_are_forgotten() {
        let mut u = Unconfirmed::default();
        for i in 1..=10 {
            u.wrote(i, 1, (i as u32 % 4).into());
        }
        u.confirmed(6);
        assert_eq!(u.len(), 4);
        let mut m = MissedUsers::default();
        u.lost(7, 9, &mut m); // 8 and 9 lost: users 0 and 1
        let (_, mut users) = m.take().unwrap();
        users.sort();
        assert_eq!(users, vec![(1, 0.into()), (1, 1.into())]);
        assert_eq!(u.len(), 1, "10 is still unconfirmed");
        u.lost(10, 10, &mut m);
        assert!(m.is_empty());
    }

    #[test]
    fn forgotten_entries_that_are_lost_mean_everyone() {
        let mut u = Unconfirmed::default();
        for i in 1..=MAX_UNCONFIRMED as u64 + 3 {
            u.wrote(i, 1, 1.into());
        }
        assert_eq!(u.len(), MAX_UNCONFIRMED);
        let mut m = MissedUsers::default();
        u.lost(4, 5, &mut m);
        assert_eq!(
            m.take(),
            Some((false, vec![(1, 1.into())])),
            "4 and 5 are known"
        );
        u.lost(2, 5, &mut m);
        assert_eq!(m.take(), Some((true, vec![])), "3 was forgotten");
    }
}

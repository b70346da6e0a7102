//! The user index of one core: which sockets (slots) each (context, user) has here (only
//! the core that owns the user's key has any), and the sessions terminated on this node
//! (refused at upgrade until they would have expired anyway).
use crate::service::session::SessionId;
use crate::service::user_id::UserId;
use std::collections::HashMap;

#[derive(Default)]
pub struct UserIndex {
    sockets: HashMap<(u32, UserId), Vec<u32>>,
    revoked: HashMap<SessionId, u64>,
}

impl UserIndex {
    /// Socket `slot` of (context, user) opened.
    pub fn add(&mut self, context: u32, user: &UserId, slot: u32) {
        self.sockets
            .entry((context, user.clone()))
            .or_default()
            .push(slot);
    }

    /// Socket `slot` of (context, user) closed.
    pub fn remove(&mut self, context: u32, user: &UserId, slot: u32) {
        let key = (context, user.clone());
        if let Some(slots) = self.sockets.get_mut(&key) {
            slots.retain(|&s| s != slot);
            if slots.is_empty() {
                self.sockets.remove(&key);
            }
        }
    }

    /// The user's sockets here.
    pub fn sockets(&self, context: u32, user: &UserId) -> &[u32] {
        self.sockets
            .get(&(context, user.clone()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn count(&self, context: u32, user: &UserId) -> usize {
        self.sockets(context, user).len()
    }

    /// Lend the user's socket list out (delivery walks it while it writes to the sockets,
    /// which never changes the index); give it back with [`UserIndex::put_back`].
    pub fn lend(&mut self, context: u32, user: &UserId) -> Option<Vec<u32>> {
        self.sockets
            .get_mut(&(context, user.clone()))
            .map(std::mem::take)
    }

    pub fn put_back(&mut self, context: u32, user: &UserId, slots: Vec<u32>) {
        match self.sockets.get_mut(&(context, user.clone())) {
            Some(v) => *v = slots,
            None => {
                self.sockets.insert((context, user.clone()), slots);
            }
        }
    }

    /// Every user with sockets here.
    pub fn keys(&self) -> impl Iterator<Item = &(u32, UserId)> + '_ {
        self.sockets.keys()
    }

    /// Session `id` was terminated; it would have expired at `expires_at` (unix seconds).
    pub fn revoke(&mut self, id: SessionId, expires_at: u64) {
        self.revoked.insert(id, expires_at);
    }

    /// Terminated sessions, for the upgrade decision.
    pub fn revoked(&self) -> &HashMap<SessionId, u64> {
        &self.revoked
    }

    /// Revocations are kept until the session would have expired anyway.
    pub fn forget_expired(&mut self, now_unix: u64) {
        self.revoked.retain(|_, &mut exp| exp > now_unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_indexed_by_user_and_an_empty_user_is_forgotten() {
        let mut u = UserIndex::default();
        u.add(1, &7.into(), 10);
        u.add(1, &7.into(), 11);
        u.add(2, &7.into(), 12);
        assert_eq!(u.sockets(1, &7.into()), &[10, 11]);
        assert_eq!(u.count(2, &7.into()), 1);
        assert_eq!(u.count(1, &8.into()), 0);
        u.remove(1, &7.into(), 10);
        assert_eq!(u.sockets(1, &7.into()), &[11]);
        u.remove(1, &7.into(), 11);
        u.remove(1, &7.into(), 11);
        assert_eq!(u.keys().count(), 1, "(1, 7) has no socket left");
    }

    #[test]
    fn a_lent_list_comes_back_unchanged() {
        let mut u = UserIndex::default();
        u.add(1, &1.into(), 3);
        let slots = u.lend(1, &1.into()).unwrap();
        assert_eq!(slots, vec![3]);
        assert!(u.lend(5, &5.into()).is_none());
        u.put_back(1, &1.into(), slots);
        assert_eq!(u.sockets(1, &1.into()), &[3]);
    }

    #[test]
    fn revocations_last_until_the_session_would_have_expired() {
        let mut u = UserIndex::default();
        let a = SessionId([1; std::mem::size_of::<SessionId>()]);
        let b = SessionId([2; std::mem::size_of::<SessionId>()]);
        u.revoke(a, 100);
        u.revoke(b, 200);
        u.forget_expired(150);
        assert!(!u.revoked().contains_key(&a));
        assert!(u.revoked().contains_key(&b));
    }
}

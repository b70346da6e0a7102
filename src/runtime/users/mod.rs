//! The user index of one core: which sockets (slots) each (context, user) has here (only
//! the core that owns the user's key has any), and the sessions terminated on this node
//! (refused at upgrade until they would have expired anyway).
use crate::service::session::SessionId;
use crate::service::user_id::UserId;
use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;

pub mod slots;
use slots::{Lent, SlotList, Spill};

/// One (context, user) with sockets here: 40 bytes (a `Vec` key and value were 56, and the
/// list's heap block 32 more).
struct Entry {
    user: UserId,
    context: u32,
    slots: SlotList,
}

impl Entry {
    fn is(&self, context: u32, user: &UserId) -> bool {
        self.context == context && self.user == *user
    }
}

pub struct UserIndex {
    /// Looked up by hash and a borrowed (context, user): no key is built nor cloned.
    sockets: HashTable<Entry>,
    hasher: SeedableRandomState,
    spill: Spill,
    revoked: HashMap<SessionId, u64>,
}

/// 64 random bits from the OS.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS random source");
    u64::from_ne_bytes(b)
}

impl Default for UserIndex {
    /// User ids come from outside (the application's sessions and tokens, which may carry
    /// ids that clients chose), so a weak hash with a known seed would let someone pick ids
    /// that all land in one probe sequence and make every push and connect of the core walk
    /// them (HashDoS). foldhash is fast (a push looks its user up: std's SipHash was most of
    /// the lookup) but its own `RandomState` is seeded from addresses and the time only, so
    /// it is seeded here from the OS: 64 bits per process, 64 more per index (per core).
    fn default() -> UserIndex {
        static SEED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SEED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        UserIndex {
            sockets: HashTable::new(),
            hasher: SeedableRandomState::with_seed(random_u64(), shared),
            spill: Spill::default(),
            revoked: HashMap::new(),
        }
    }
}

impl UserIndex {
    fn hash(&self, context: u32, user: &UserId) -> u64 {
        self.hasher.hash_one((context, user))
    }

    fn find(&self, context: u32, user: &UserId) -> Option<&Entry> {
        self.sockets
            .find(self.hash(context, user), |e| e.is(context, user))
    }

    /// Socket `slot` of (context, user) opened.
    pub fn add(&mut self, context: u32, user: &UserId, slot: u32) {
        let hash = self.hash(context, user);
        if let Some(e) = self.sockets.find_mut(hash, |e| e.is(context, user)) {
            e.slots.push(slot, &mut self.spill);
            return;
        }
        let hasher = &self.hasher;
        self.sockets.insert_unique(
            hash,
            Entry {
                user: user.clone(),
                context,
                slots: SlotList::one(slot),
            },
            |e| hasher.hash_one((e.context, &e.user)),
        );
    }

    /// Socket `slot` of (context, user) closed.
    pub fn remove(&mut self, context: u32, user: &UserId, slot: u32) {
        let hash = self.hash(context, user);
        if let Ok(mut found) = self.sockets.find_entry(hash, |e| e.is(context, user)) {
            if found.get_mut().slots.remove(slot, &mut self.spill) {
                found.remove();
            }
        }
    }

    /// The user's sockets here.
    pub fn sockets(&self, context: u32, user: &UserId) -> &[u32] {
        self.find(context, user)
            .map_or(&[], |e| e.slots.as_slice(&self.spill))
    }

    pub fn count(&self, context: u32, user: &UserId) -> usize {
        self.sockets(context, user).len()
    }

    /// Lend the user's socket list out, to walk it while writing to the sockets (a copy:
    /// what the index does meanwhile does not change it); give it back with
    /// [`UserIndex::put_back`], which keeps a spilled list's buffer for the next.
    pub fn lend(&mut self, context: u32, user: &UserId) -> Option<Lent> {
        let hash = self.hash(context, user);
        let e = self.sockets.find(hash, |e| e.is(context, user))?;
        Some(e.slots.lend(&mut self.spill))
    }

    pub fn put_back(&mut self, slots: Lent) {
        self.spill.put_back(slots);
    }

    /// Every user with sockets here.
    pub fn keys(&self) -> impl Iterator<Item = (u32, UserId)> + '_ {
        self.sockets.iter().map(|e| (e.context, e.user.clone()))
    }

    /// Users here, and those among them whose list is in the spill (more than
    /// [`slots::INLINE`] sockets).
    #[cfg(test)]
    fn user_counts(&self) -> (usize, usize) {
        (self.sockets.len(), self.spill.counts().1)
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
        assert_eq!(*slots, [3]);
        assert!(u.lend(5, &5.into()).is_none());
        u.put_back(slots);
        assert_eq!(u.sockets(1, &1.into()), &[3]);
    }

    #[test]
    fn an_entry_is_40_bytes_and_lists_spill_and_come_back() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let mut u = UserIndex::default();
        let long = UserId::parse("a-user-id-longer-than-twenty-two-bytes").unwrap();
        for slot in 0..6 {
            u.add(3, &long, slot);
        }
        u.add(3, &"short".parse().unwrap(), 9);
        assert_eq!(u.sockets(3, &long), &[0, 1, 2, 3, 4, 5]);
        assert_eq!(u.user_counts(), (2, 1));
        let lent = u.lend(3, &long).unwrap();
        u.remove(3, &long, 4);
        assert_eq!(
            *lent,
            [0, 1, 2, 3, 4, 5],
            "the lent copy is the list as it was"
        );
        u.put_back(lent);
        assert_eq!(u.sockets(3, &long), &[0, 1, 2, 3, 5]);
        for slot in [0, 5, 2] {
            u.remove(3, &long, slot);
        }
        assert_eq!(u.sockets(3, &long), &[1, 3]);
        assert_eq!(u.user_counts(), (2, 0), "back inline");
        u.remove(3, &long, 1);
        u.remove(3, &long, 3);
        assert_eq!(u.count(3, &long), 0);
        assert_eq!(
            u.keys().collect::<Vec<_>>(),
            vec![(3, "short".parse().unwrap())]
        );
    }

    #[test]
    fn each_index_hashes_with_its_own_random_seed() {
        let (a, b) = (UserIndex::default(), UserIndex::default());
        let user = UserId::from(42);
        assert_eq!(a.hash(1, &user), a.hash(1, &user));
        assert_ne!(a.hash(1, &user), b.hash(1, &user), "2^-64 by chance");
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

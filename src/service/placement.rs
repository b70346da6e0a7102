//! Where a user's sockets live: the sharding key of a user (or of an echo socket's `key`)
//! and the core that owns a key. The same on every core and every node, so a push for a user
//! goes to exactly one core of each node that holds the user.
use crate::service::user_id::UserId;

/// The sharding key of a user: FNV-1a of the context's and the user's big-endian bytes for
/// a numeric user; of the context's bytes, a marker byte 0xff and the string's bytes for a
/// string user (`UserId::stable_bytes`). Stable: every node agrees.
pub fn user_key(context: u32, user: &UserId) -> u64 {
    if let Some(n) = user.as_num() {
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&context.to_be_bytes());
        k[4..].copy_from_slice(&n.to_be_bytes());
        return hash_bytes(&k);
    }
    let mut h = fold(FNV_OFFSET, &context.to_be_bytes());
    user.stable_bytes(|b| h = fold(h, b));
    h
}

/// Stable 64-bit hash (FNV-1a) of a sharding key: the same on every core and every node.
pub fn hash_key(key: &str) -> u64 {
    hash_bytes(key.as_bytes())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn hash_bytes(key: &[u8]) -> u64 {
    fold(FNV_OFFSET, key)
}

fn fold(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The core that owns a key.
pub fn owner_core(shard_key: u64, cores: usize) -> usize {
    // Fold the high bits in so that keys differing only there still spread.
    ((shard_key ^ (shard_key >> 32)) % cores as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_keys() {
        let mut counts = [0usize; 2];
        for i in 0..1000 {
            counts[owner_core(user_key(1, &i.into()), 2)] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }

    #[test]
    fn numeric_users_keep_their_placement() {
        // The keys of before string ids (FNV-1a of context and user, big-endian): nodes of
        // the same cluster, and sockets open across an upgrade, agree.
        assert_eq!(user_key(1, &42.into()), 0x9c19_3b07_aacb_0ff4);
        assert_eq!(owner_core(user_key(1, &42.into()), 6), 5);
        assert_eq!(
            user_key(1, &UserId::parse("42").unwrap()),
            user_key(1, &42.into())
        );
        for (context, user) in [(0u32, 0u32), (1, 42), (7, u32::MAX)] {
            let mut k = [0u8; 8];
            k[..4].copy_from_slice(&context.to_be_bytes());
            k[4..].copy_from_slice(&user.to_be_bytes());
            assert_eq!(user_key(context, &user.into()), hash_bytes(&k));
        }
    }

    #[test]
    fn string_users_spread_and_are_stable() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(user_key(1, &alice), user_key(1, &alice.clone()));
        assert_ne!(user_key(1, &alice), user_key(2, &alice));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let u = UserId::parse(&format!("user-{i}")).unwrap();
            counts[owner_core(user_key(1, &u), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}

//! Where a user's sockets live: the sharding key of a user (or of an echo socket's `key`)
//! and the core that owns a key. The same on every core and every node, so a push for a user
//! goes to exactly one core of each node that holds the user.

/// The sharding key of a user.
pub fn user_key(context: u32, user: u32) -> u64 {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&context.to_be_bytes());
    k[4..].copy_from_slice(&user.to_be_bytes());
    hash_bytes(&k)
}

/// Stable 64-bit hash (FNV-1a) of a sharding key: the same on every core and every node.
pub fn hash_key(key: &str) -> u64 {
    hash_bytes(key.as_bytes())
}

fn hash_bytes(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
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
            counts[owner_core(user_key(1, i), 2)] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }
}

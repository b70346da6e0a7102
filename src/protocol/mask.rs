//! Client → server payload unmasking (RFC 6455 5.3).
//!
//! Masking is a XOR with a repeating 4-byte key. [`apply_mask`] processes
//! 8 bytes at a time (32 per loop iteration) with the key widened to a u64;
//! unaligned loads/stores through `from_ne_bytes`/`to_ne_bytes` compile to
//! plain moves on x86_64 and aarch64, so no `unsafe` and no alignment
//! prologue are needed. `offset` lets a frame be unmasked in pieces as it
//! arrives: pass the number of payload bytes already unmasked.

/// XORs `buf` with `mask`, starting at key byte `offset % 4`.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let m = rotate_mask(mask, offset);
    // Two copies of the (rotated) key: the same byte sequence on either
    // endianness, so native-endian loads/stores line up with it.
    let mut m8 = [0u8; 8];
    m8[..4].copy_from_slice(&m);
    m8[4..].copy_from_slice(&m);
    let m64 = u64::from_ne_bytes(m8);

    let mut chunks = buf.chunks_exact_mut(32);
    for c in &mut chunks {
        for w in c.chunks_exact_mut(8) {
            xor_word(w, m64);
        }
    }
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        xor_word(w, m64);
    }
    // Whole words consumed a multiple of 4 key bytes: phase is still 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

#[inline(always)]
fn xor_word(w: &mut [u8], m64: u64) {
    let mut b = [0u8; 8];
    b.copy_from_slice(w);
    let v = u64::from_ne_bytes(b) ^ m64;
    w.copy_from_slice(&v.to_ne_bytes());
}

/// The key as seen from payload byte `offset`: `rotate_mask(m, k)[0] ==
/// m[k % 4]`. (A u32 rotate: `<[u8]>::rotate_left` is surprisingly slow
/// for a 4-byte array.)
#[inline(always)]
pub fn rotate_mask(mask: [u8; 4], offset: usize) -> [u8; 4] {
    u32::from_le_bytes(mask)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes()
}

/// Reference implementation of [`apply_mask`]: one byte at a time.
pub fn apply_mask_naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(i + offset) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_equals_naive() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let backing: Vec<u8> = (0..400u32).map(|i| (i * 31 + 7) as u8).collect();
        for misalign in 0..8 {
            for len in 0..=300 {
                for offset in 0..4 {
                    let mut a = backing.clone();
                    let mut b = backing.clone();
                    apply_mask(&mut a[misalign..misalign + len], mask, offset);
                    apply_mask_naive(&mut b[misalign..misalign + len], mask, offset);
                    assert_eq!(a, b, "len {len} offset {offset} misalign {misalign}");
                }
            }
        }
    }

    #[test]
    fn rotate() {
        let m = [1, 2, 3, 4];
        assert_eq!(rotate_mask(m, 0), [1, 2, 3, 4]);
        assert_eq!(rotate_mask(m, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_mask(m, 6), [3, 4, 1, 2]);
        assert_eq!(rotate_mask(m, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn streaming_in_pieces() {
        let mask = [1, 2, 3, 4];
        let orig: Vec<u8> = (0..100u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..100 {
            let mut v = orig.clone();
            let (a, b) = v.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(v, whole);
        }
        // Involution.
        apply_mask(&mut whole, mask, 0);
        assert_eq!(whole, orig);
    }
}

//! Incremental, fail-fast UTF-8 validation for Text messages that arrive
//! in pieces (fragments, partial reads, inflated chunks).
//!
//! Each chunk goes through [`validate`] (the `simdutf8` crate: SIMD, detected at run time;
//! its `compat` errors are std's). An incomplete sequence at the end of a chunk (at most
//! 3 bytes) is carried over; std only reports "incomplete" (`error_len() ==
//! None`) for a tail that is a valid *prefix* of some code point, so e.g.
//! `F4 90` or `ED A0` fails immediately, before the message ends — as
//! Autobahn's 6.4.x cases require.

use simdutf8::compat::{from_utf8 as compat_from_utf8, Utf8Error};

/// Whether `bytes` is UTF-8 (a whole message: the fast path of a frame in one read).
#[inline]
pub fn is_utf8(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

/// `std::str::from_utf8`'s answer, with `simdutf8`'s speed: where the valid prefix ends
/// and whether the rest is invalid or only incomplete.
#[inline]
pub fn validate(bytes: &[u8]) -> Result<(), Utf8Error> {
    compat_from_utf8(bytes).map(|_| ())
}

/// Streaming UTF-8 validator; 4 bytes, `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 3],
    pending_len: u8,
}

/// Length of the sequence introduced by lead byte `b` (only called on
/// leads std accepted as a prefix, so 2..=4).
fn seq_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 3],
            pending_len: 0,
        }
    }

    /// Validates the next chunk. `Err` as soon as any invalid sequence
    /// (or invalid prefix) is seen.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ()> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = seq_len(self.pending[0]);
            let take = (need - have).min(chunk.len());
            let mut tmp = [0u8; 4];
            tmp[..have].copy_from_slice(&self.pending[..have]);
            tmp[have..have + take].copy_from_slice(&chunk[..take]);
            let total = have + take;
            match validate(&tmp[..total]) {
                Ok(()) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 && total < need => {
                    self.pending[..total].copy_from_slice(&tmp[..total]);
                    self.pending_len = total as u8;
                    return Ok(());
                }
                Err(_) => return Err(()),
            }
            chunk = &chunk[take..];
        }
        match validate(chunk) {
            Ok(()) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                // std guarantees tail.len() <= 3 and that it is a valid prefix.
                if tail.len() > 3 {
                    return Err(());
                }
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// End of message: `Err` if a sequence is left incomplete. Resets.
    #[allow(clippy::result_unit_err)]
    pub fn finish(&mut self) -> Result<(), ()> {
        let incomplete = self.pending_len != 0;
        self.reset();
        if incomplete {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Forgets any pending bytes.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// True if no incomplete sequence is pending.
    pub fn is_clean(&self) -> bool {
        self.pending_len == 0
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary, and
/// whether anything was cut.
pub fn truncate_utf8(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str;

    #[test]
    fn long_chunks_report_where_they_break() {
        // Past simdutf8's 64-byte blocks: the error position and the carry-over hold.
        let mut long = "é".repeat(100).into_bytes();
        check_all_splits(&long);
        long.push(0xE2);
        let mut v = Utf8Validator::new();
        assert!(v.feed(&long).is_ok(), "an incomplete tail is carried");
        assert!(v.feed(&[0x82, 0xAC]).is_ok());
        assert!(v.finish().is_ok());
        long[150] = 0xFF;
        check_all_splits(&long);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("abc", 3), ("abc", false));
        assert_eq!(truncate_utf8("abcd", 3), ("abc", true));
        assert_eq!(truncate_utf8("aé", 2), ("a", true));
        assert_eq!(truncate_utf8("€", 0), ("", true));
    }

    fn check_all_splits(bytes: &[u8]) {
        let expect = str::from_utf8(bytes).is_ok();
        // simdutf8's errors are std's (the carry-over relies on them).
        let (ours, std) = (validate(bytes), str::from_utf8(bytes));
        assert_eq!(ours.is_ok(), std.is_ok(), "{bytes:x?}");
        if let (Err(a), Err(b)) = (ours, std) {
            assert_eq!(
                (a.valid_up_to(), a.error_len()),
                (b.valid_up_to(), b.error_len())
            );
        }
        assert_eq!(is_utf8(bytes), expect);
        // Whole, every 2-way split, byte by byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(bytes).and_then(|_| v.finish()).is_ok(), expect);
        for s in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let r = v
                .feed(&bytes[..s])
                .and_then(|_| v.feed(&bytes[s..]))
                .and_then(|_| v.finish());
            assert_eq!(r.is_ok(), expect, "{bytes:x?} split {s}");
        }
        let mut v = Utf8Validator::new();
        let mut r = Ok(());
        for b in bytes {
            r = r.and_then(|_| v.feed(std::slice::from_ref(b)));
        }
        assert_eq!(r.and_then(|_| v.finish()).is_ok(), expect);
    }

    #[test]
    fn valid_and_invalid_samples() {
        let samples: &[&[u8]] = &[
            b"",
            b"hello",
            "κόσμε".as_bytes(),
            "𝄞 music ∮ E⋅da = Q".as_bytes(),
            &[0xF4, 0x8F, 0xBF, 0xBF],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xED, 0xA0, 0x80],
            &[0xC0, 0xAF],
            &[0xE0, 0x80, 0xAF],
            &[0xCE, 0xBA, 0xE1],
            &[0xFF],
            &[0x80],
            &[0xF0, 0x9F, 0x98],
            b"abc\xE2\x82\xACdef",
        ];
        for s in samples {
            check_all_splits(s);
        }
    }

    #[test]
    fn fail_fast_on_invalid_prefix() {
        // 0xF4 0x90 can never become valid: reject before the rest arrives.
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[b'a', 0xF4]).is_ok());
        assert!(v.feed(&[0x90]).is_err());
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xF4, 0x90]).is_err());
        // Surrogate prefix.
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xED]).is_ok());
        assert!(v.feed(&[0xA0]).is_err());
        // Incomplete at the end.
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xE2, 0x82]).is_ok());
        assert!(v.finish().is_err());
        assert!(v.is_clean());
    }

    #[test]
    fn exhaustive_short_sequences() {
        // All 1- and 2-byte inputs, plus 3-byte inputs with a multi-byte lead.
        for a in 0..=255u8 {
            check_all_splits(&[a]);
            for b in 0..=255u8 {
                check_all_splits(&[a, b]);
            }
        }
        for a in 0xE0..=0xF4u8 {
            for b in (0x70..=0xC0u8).step_by(3) {
                for c in [0x80u8, 0xBF, 0x41] {
                    check_all_splits(&[a, b, c]);
                    check_all_splits(&[a, b, c, 0x80]);
                }
            }
        }
    }
}

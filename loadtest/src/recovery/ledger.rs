//! The push ledger: what the push driver sent to every user, by per-user sequence
//! number. Built by the coordinator's push driver, handed to the workers once pushing is
//! over, so that every connection knows what it should have received.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per user: how many per-user sequence numbers were issued in requests that were sent,
/// and which of them were in requests that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Index `user - 1`: sequence numbers `0..issued` went out in requests.
    pub issued: Vec<u64>,
    /// Sequence numbers whose request failed (error status, transport error, timeout),
    /// ascending per user. A timed out request may still have been delivered.
    pub unaccepted: BTreeMap<u64, Vec<u64>>,
}

/// What one user's connections should have received: `0..issued` but `unaccepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    pub issued: u64,
    /// Ascending.
    pub unaccepted: &'a [u64],
}

impl Ledger {
    /// Records the pushes (user, per-user sequence number) of one request.
    pub fn record(&mut self, pushes: impl IntoIterator<Item = (u64, u64)>, accepted: bool) {
        for (user, seq) in pushes {
            let Some(i) = user.checked_sub(1).map(|i| i as usize) else {
                continue;
            };
            if self.issued.len() <= i {
                self.issued.resize(i + 1, 0);
            }
            self.issued[i] = self.issued[i].max(seq + 1);
            if !accepted {
                let seqs = self.unaccepted.entry(user).or_default();
                if let Err(at) = seqs.binary_search(&seq) {
                    seqs.insert(at, seq);
                }
            }
        }
    }

    /// What `user`'s connections should have received.
    pub fn expected(&self, user: u64) -> Expected<'_> {
        let issued = user
            .checked_sub(1)
            .and_then(|i| self.issued.get(i as usize))
            .copied()
            .unwrap_or(0);
        let unaccepted = self.unaccepted.get(&user).map_or(&[][..], |v| v.as_slice());
        Expected { issued, unaccepted }
    }
}

impl Expected<'_> {
    /// Pushes to expect in total.
    pub fn count(&self) -> u64 {
        self.issued - self.unaccepted_in(0, self.issued)
    }

    /// Unaccepted sequence numbers in `from..to`.
    pub fn unaccepted_in(&self, from: u64, to: u64) -> u64 {
        let lo = self.unaccepted.partition_point(|&s| s < from);
        let hi = self.unaccepted.partition_point(|&s| s < to);
        hi.saturating_sub(lo) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_what_was_sent_and_accepted() {
        let mut l = Ledger::default();
        l.record([(1, 0), (2, 0), (1, 1)], true);
        l.record([(1, 2), (3, 0)], false);
        l.record([(1, 3)], true);
        let e = l.expected(1);
        assert_eq!((e.issued, e.unaccepted), (4, &[2][..]));
        assert_eq!(e.count(), 3);
        assert_eq!((e.unaccepted_in(0, 2), e.unaccepted_in(2, 3)), (0, 1));
        assert_eq!(l.expected(3).count(), 0);
        assert_eq!(l.expected(2).count(), 1);
        assert_eq!(l.expected(9).count(), 0);
        assert_eq!(l.expected(0).count(), 0);
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), l);
    }
}

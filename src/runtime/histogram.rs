//! Latency histograms in fixed log-spaced buckets: bucket `i` counts durations up to
//! 2^(10+i) ns (1.024 µs, 2.048 µs, ... 8.6 s), the last one everything longer. A core's
//! histograms are written by that core only, with a plain load and store (no locked
//! read-modify-write: nothing else writes them), and read by the scrape, which sums the
//! cores. `record` costs a `leading_zeros` and two stores.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Finite buckets (2^10 .. 2^33 ns); one more holds what is longer (`+Inf`).
pub const BUCKETS: usize = 24;
const FIRST_BIT: u32 = 10;

/// The upper bound of finite bucket `i`, in seconds (the `le` label).
pub fn bound_secs(i: usize) -> f64 {
    (1u64 << (FIRST_BIT as usize + i)) as f64 / 1e9
}

/// The bucket of a duration of `ns` nanoseconds: the first whose bound is at least `ns`.
pub fn bucket_of(ns: u64) -> usize {
    if ns <= 1 << FIRST_BIT {
        return 0;
    }
    // ns - 1 < 2^bits, so ns <= 2^bits.
    let bits = 64 - (ns - 1).leading_zeros();
    ((bits - FIRST_BIT) as usize).min(BUCKETS)
}

/// Counts per bucket (not cumulative) and the sum of the durations, in nanoseconds.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// What a scrape reads: counts per bucket (not cumulative) and the sum in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: [u64; BUCKETS + 1],
    pub sum_ns: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            counts: [0; BUCKETS + 1],
            sum_ns: 0,
        }
    }
}

impl Snapshot {
    pub fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Histogram {
    /// `n` events that each took `ns` nanoseconds. Single writer only (the owning core).
    #[inline]
    pub fn record(&self, ns: u64, n: u64) {
        bump(&self.counts[bucket_of(ns)], n);
        bump(&self.sum_ns, ns.wrapping_mul(n));
    }

    /// One event of `ns` nanoseconds, from any thread (the control plane's handlers).
    pub fn record_shared(&self, ns: u64) {
        self.counts[bucket_of(ns)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_ns: self.sum_ns.load(Relaxed),
        }
    }
}

/// A core's latency histograms.
#[derive(Default)]
pub struct CoreHistograms {
    /// A push, from the wake-up of the loop turn that took it from the core's inbox to the end
    /// of that turn, which submitted the sends of its frames (one event per push that reached
    /// at least one socket).
    pub push: Histogram,
    /// A connection accepted to its `101 Switching Protocols` written (upgrades only).
    pub handshake: Histogram,
    /// The work of one loop turn: from the wake-up out of `io_uring_enter` to the next wait.
    pub loop_turn: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1024), 0);
        assert_eq!(bucket_of(1025), 1);
        assert_eq!(bucket_of(2048), 1);
        assert_eq!(bucket_of(2049), 2);
        assert_eq!(bucket_of(1_000_000), 10); // 1 ms <= 1.048576 ms
        assert_eq!(bucket_of(1 << 33), BUCKETS - 1);
        assert_eq!(bucket_of((1 << 33) + 1), BUCKETS);
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        for i in 0..BUCKETS {
            let ns = (bound_secs(i) * 1e9) as u64;
            assert_eq!(bucket_of(ns), i);
            assert_eq!(bucket_of(ns + 1), i + 1);
        }
    }

    #[test]
    fn record_and_sum() {
        let h = Histogram::default();
        h.record(500, 3);
        h.record(1_000_000, 1);
        h.record_shared(20_000_000_000);
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.counts[0], 3);
        assert_eq!(s.counts[10], 1);
        assert_eq!(s.counts[BUCKETS], 1);
        assert_eq!(s.sum_ns, 1500 + 1_000_000 + 20_000_000_000);
        let mut total = Snapshot::default();
        total.add(&s);
        total.add(&s);
        assert_eq!(total.count(), 10);
    }
}

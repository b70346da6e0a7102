//! Latency histograms (microseconds) and their summaries.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: 10 minutes in µs (larger values are clamped).
const MAX_US: u64 = 600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Records one latency sample, clamped into the trackable range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// Drains `h` into (value, count) pairs (bounded by the number of buckets) and resets it.
pub fn drain_pairs(h: &mut Histogram<u64>) -> Vec<(u64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let pairs = h
        .iter_recorded()
        .map(|v| {
            (
                h.median_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect();
    h.reset();
    pairs
}

/// Adds (value, count) pairs into `h`.
pub fn merge_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, c) in pairs {
        let _ = h.record_n(v.clamp(1, MAX_US), c);
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_and_merge_roundtrip() {
        let mut a = new_histogram();
        for v in 1..=10_000u64 {
            record(&mut a, v);
        }
        let before = LatencySummary::of(&a).unwrap();
        let pairs = drain_pairs(&mut a);
        assert!(a.is_empty());
        let mut b = new_histogram();
        merge_pairs(&mut b, &pairs);
        let after = LatencySummary::of(&b).unwrap();
        assert_eq!(before.count, after.count);
        let close = |x: u64, y: u64| (x as f64 - y as f64).abs() <= x as f64 * 0.002 + 1.0;
        assert!(close(before.p50_us, after.p50_us));
        assert!(close(before.p99_us, after.p99_us));
        assert!(close(before.max_us, after.max_us));
    }
}

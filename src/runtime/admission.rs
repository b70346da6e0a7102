//! Upgrade-rate admission: a token bucket per core (the node's rate split over its cores).

pub struct TokenBucket {
    /// Tokens per second; 0 = unlimited.
    rate: u32,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn per_core(node_rate: u32, cores: usize) -> TokenBucket {
        let rate = if node_rate == 0 {
            0
        } else {
            node_rate.div_ceil(cores as u32).max(1)
        };
        TokenBucket {
            rate,
            tokens: rate as f64,
            last_ms: 0,
        }
    }

    /// Take one token at time `now_ms` (monotonic); false = over the rate.
    pub fn take(&mut self, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms;
        // One second of burst.
        self.tokens =
            (self.tokens + elapsed as f64 * self.rate as f64 / 1000.0).min(self.rate as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate_with_one_second_burst() {
        let mut b = TokenBucket::per_core(20, 2);
        let mut t = 1_000_000;
        let first: usize = (0..50).filter(|_| b.take(t)).count();
        assert_eq!(first, 10);
        t += 500;
        let later: usize = (0..50).filter(|_| b.take(t)).count();
        assert_eq!(later, 5);
        let mut open = TokenBucket::per_core(0, 2);
        assert!((0..10_000).all(|_| open.take(t)));
    }
}

//! Upgrade-rate admission: a token bucket per core (the node's rate split over its cores),
//! which also tells each refused client when to come back.

/// The longest `Retry-After` a rate refusal asks for, in seconds. A storm larger than the rate
/// admits in this time gets this value, and the clients that come back early are refused again
/// and told again.
pub const MAX_RETRY_AFTER_SECS: u32 = 60;

pub struct TokenBucket {
    /// Tokens per second; 0 = unlimited.
    rate: u32,
    tokens: f64,
    last_ms: u64,
    /// The end of the time already promised to refused clients (monotonic ms): each refusal
    /// is told to come back after the slots promised before it.
    promised_until_ms: f64,
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
            promised_until_ms: 0.0,
        }
    }

    /// Take one token at time `now_ms` (monotonic). Over the rate, the answer is the
    /// `Retry-After` to send, in seconds (1 to [`MAX_RETRY_AFTER_SECS`]).
    ///
    /// A constant `Retry-After: 1` sends every refused client of a reconnect storm back at
    /// once, so a storm of N clients against a rate R costs about N/R rounds of N attempts
    /// each. Here each refusal is promised the next free slot (1/R s) after those promised
    /// before it, so the k-th refused client of a burst waits about k/R seconds and the
    /// attempts arrive at about the rate that can be admitted.
    pub fn take(&mut self, now_ms: u64) -> Result<(), u32> {
        if self.rate == 0 {
            return Ok(());
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms;
        // One second of burst.
        self.tokens =
            (self.tokens + elapsed as f64 * self.rate as f64 / 1000.0).min(self.rate as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let now = now_ms as f64;
        let horizon = now + MAX_RETRY_AFTER_SECS as f64 * 1000.0;
        self.promised_until_ms =
            (self.promised_until_ms.max(now) + 1000.0 / self.rate as f64).min(horizon);
        let secs = ((self.promised_until_ms - now) / 1000.0).ceil() as u32;
        Err(secs.clamp(1, MAX_RETRY_AFTER_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate_with_one_second_burst() {
        let mut b = TokenBucket::per_core(20, 2);
        let mut t = 1_000_000;
        let first: usize = (0..50).filter(|_| b.take(t).is_ok()).count();
        assert_eq!(first, 10);
        t += 500;
        let later: usize = (0..50).filter(|_| b.take(t).is_ok()).count();
        assert_eq!(later, 5);
        let mut open = TokenBucket::per_core(0, 2);
        assert!((0..10_000).all(|_| open.take(t).is_ok()));
    }

    #[test]
    fn refusals_are_spread_over_the_time_the_rate_needs() {
        // 10 per second on this core; a burst of 1,010: 10 admitted, 1,000 refused.
        let mut b = TokenBucket::per_core(10, 1);
        let t = 5_000_000;
        let answers: Vec<_> = (0..1010).map(|_| b.take(t)).collect();
        assert!(answers[..10].iter().all(|a| a.is_ok()));
        let waits: Vec<u32> = answers[10..].iter().map(|a| a.unwrap_err()).collect();
        // The k-th refusal (from 1) waits ceil(k / 10) s, capped at 60 s.
        for (k, w) in waits.iter().enumerate() {
            let expect = ((k as u32 + 1).div_ceil(10)).clamp(1, MAX_RETRY_AFTER_SECS);
            assert_eq!(*w, expect, "refusal {k}");
        }
        assert_eq!(*waits.last().unwrap(), MAX_RETRY_AFTER_SECS);
        // Once the promised time has passed, a refusal is told 1 s again.
        let later = t + 61_000;
        assert!((0..10).all(|_| b.take(later).is_ok()));
        assert_eq!(b.take(later), Err(1));
    }
}

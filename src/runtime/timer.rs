//! A hashed timing wheel: one io_uring multishot timeout ticks it, so a million connection
//! deadlines cost no syscall each. Entries are (slot, generation); a connection keeps one
//! `armed` tick and stale entries are skipped when they fire (lazy deletion).

/// Tick length. Handshake timeouts and keepalive need no finer resolution.
pub const TICK_MS: u64 = 100;
const WHEEL_SLOTS: usize = 1024; // 102.4 s horizon; later deadlines are re-armed on expiry

pub struct TimerWheel {
    slots: Vec<Vec<(u32, u32)>>,
    now: u64,
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            now: 0,
        }
    }
}

impl TimerWheel {
    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedule (slot, gen) at tick `at` (clamped to the horizon); returns the tick actually
    /// armed, which the connection stores to recognise its live entry.
    pub fn insert(&mut self, at: u64, slot: u32, gen: u32) -> u64 {
        let at = at.clamp(self.now + 1, self.now + WHEEL_SLOTS as u64 - 1);
        self.slots[(at % WHEEL_SLOTS as u64) as usize].push((slot, gen));
        at
    }

    /// Advance to tick `to`, passing every entry that is due to `fire(slot, gen, tick)`.
    pub fn advance(&mut self, to: u64, mut fire: impl FnMut(&mut TimerWheel, u32, u32, u64)) {
        // After a long stall, visit each wheel slot at most once.
        let from = self.now.max(to.saturating_sub(WHEEL_SLOTS as u64 - 1));
        let mut batch = Vec::new();
        for tick in from + 1..=to {
            self.now = tick;
            std::mem::swap(
                &mut batch,
                &mut self.slots[(tick % WHEEL_SLOTS as u64) as usize],
            );
            for (slot, gen) in batch.drain(..) {
                fire(self, slot, gen, tick);
            }
            // Give the (now empty) allocation back to the wheel slot.
            std::mem::swap(
                &mut batch,
                &mut self.slots[(tick % WHEEL_SLOTS as u64) as usize],
            );
            if !batch.is_empty() {
                // `fire` inserted into this very slot (only possible for far deadlines); keep them.
                let slot_vec = &mut self.slots[(tick % WHEEL_SLOTS as u64) as usize];
                slot_vec.append(&mut batch);
            }
        }
        self.now = self.now.max(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_once() {
        let mut w = TimerWheel::default();
        let a = w.insert(5, 1, 0);
        let b = w.insert(3, 2, 0);
        assert_eq!((a, b), (5, 3));
        let mut fired = Vec::new();
        w.advance(4, |_, s, _, t| fired.push((s, t)));
        assert_eq!(fired, vec![(2, 3)]);
        w.advance(10, |_, s, _, t| fired.push((s, t)));
        assert_eq!(fired, vec![(2, 3), (1, 5)]);
        w.advance(2000, |_, s, _, t| fired.push((s, t)));
        assert_eq!(fired.len(), 2);
    }

    #[test]
    fn far_deadline_is_clamped_then_rearmed() {
        let mut w = TimerWheel::default();
        let armed = w.insert(5000, 7, 1);
        assert_eq!(armed, WHEEL_SLOTS as u64 - 1);
        let mut hits = 0;
        w.advance(armed, |w, s, g, _| {
            hits += 1;
            w.insert(5000, s, g);
        });
        assert_eq!(hits, 1);
        let mut hits2 = 0;
        w.advance(5000, |_, _, _, t| {
            hits2 += 1;
            assert!(t <= 5000);
        });
        assert_eq!(hits2, 1);
    }
}

//! A hashed timing wheel: one io_uring multishot timeout ticks it, so a million connection
//! deadlines cost no syscall each. Entries are (slot, generation); a connection keeps one
//! `armed` tick and stale entries are skipped when they fire (lazy deletion). An entry is
//! 12 bytes: ticks are kept in 32 bits (100 ms ticks: 13 years from the core's start).

/// Tick length. Handshake timeouts and keepalive need no finer resolution.
pub const TICK_MS: u64 = 100;
const WHEEL_SLOTS: usize = 1024; // 102.4 s horizon; later deadlines are re-armed on expiry

/// A wheel entry: (slot, generation, armed tick in 32 bits).
pub type Entry = (u32, u32, u32);

pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
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
        self.slots[(at % WHEEL_SLOTS as u64) as usize].push((slot, gen, at as u32));
        at
    }

    /// Advance to tick `to`, passing every entry that is due to `fire(slot, gen, armed_tick)`.
    /// After a stall longer than the horizon, every bucket is visited once and each entry is
    /// fired with the tick it was armed for (so its owner still recognises it).
    pub fn advance(&mut self, to: u64, mut fire: impl FnMut(&mut TimerWheel, u32, u32, u64)) {
        if to <= self.now {
            return;
        }
        let from = self.now.max(to.saturating_sub(WHEEL_SLOTS as u64));
        let mut batch: Vec<Entry> = Vec::new();
        for tick in from + 1..=to {
            let bucket = (tick % WHEEL_SLOTS as u64) as usize;
            std::mem::swap(&mut batch, &mut self.slots[bucket]);
            // Entries armed for a later lap stay; the rest are due (armed tick <= to).
            let mut keep = Vec::new();
            for (slot, gen, at) in batch.drain(..) {
                if at as u64 > to {
                    keep.push((slot, gen, at));
                } else {
                    self.now = tick;
                    fire(self, slot, gen, at as u64);
                }
            }
            self.slots[bucket].append(&mut keep);
        }
        self.now = to;
    }
}

/// The core's clock and deadlines: ticks since the core started, and the wheel of
/// connection deadlines. Every deadline a connection has lives here as its one live entry
/// (`Conn::timer_at`); the wheel itself never looks at connections.
pub struct Timers {
    wheel: TimerWheel,
    /// Monotonic milliseconds at tick 0.
    start_ms: u64,
}

impl Timers {
    pub fn new(start_ms: u64) -> Timers {
        Timers {
            wheel: TimerWheel::default(),
            start_ms,
        }
    }

    /// The current tick (what the wheel has advanced to).
    pub fn now(&self) -> u64 {
        self.wheel.now()
    }

    /// A duration in ticks, rounded up, at least one.
    pub fn ticks(ms: u64) -> u64 {
        ms.div_ceil(TICK_MS).max(1)
    }

    /// The tick a monotonic clock reading falls in.
    pub fn tick_of(&self, monotonic_ms: u64) -> u64 {
        monotonic_ms.saturating_sub(self.start_ms) / TICK_MS
    }

    /// Arm the deadline of connection (slot, gen) at tick `at`; returns the tick armed,
    /// which the connection keeps (`Conn::timer_at`) to recognise its live entry.
    pub fn schedule(&mut self, slot: u32, gen: u32, at: u64) -> u64 {
        self.wheel.insert(at, slot, gen)
    }

    /// Advance to tick `to`; returns the entries due, as (slot, gen, armed tick).
    pub fn advance(&mut self, to: u64, due: &mut Vec<(u32, u32, u64)>) {
        self.wheel
            .advance(to, |_, slot, gen, tick| due.push((slot, gen, tick)));
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
    fn a_stall_longer_than_the_horizon_loses_no_timer() {
        let mut w = TimerWheel::default();
        let armed: Vec<u64> = (1..1024).map(|t| w.insert(t, t as u32, 0)).collect();
        let mut fired = Vec::new();
        w.advance(5_000, |_, s, _, t| fired.push((s, t)));
        assert_eq!(fired.len(), armed.len());
        assert!(
            fired.iter().all(|&(s, t)| t == s as u64),
            "fired with the armed tick"
        );
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

    #[test]
    fn timers_count_ticks_from_their_start_and_hand_out_due_entries() {
        let mut t = Timers::new(10_000);
        assert_eq!(t.tick_of(10_000 + 250), 2);
        assert_eq!(
            t.tick_of(5),
            0,
            "a clock reading before the start is tick 0"
        );
        assert_eq!(Timers::ticks(1), 1);
        assert_eq!(Timers::ticks(2_000), 20);
        let armed = t.schedule(4, 9, 3);
        assert_eq!(armed, 3);
        let mut due = Vec::new();
        t.advance(2, &mut due);
        assert!(due.is_empty());
        t.advance(3, &mut due);
        assert_eq!(due, vec![(4, 9, 3)]);
        assert_eq!(t.now(), 3);
    }
}

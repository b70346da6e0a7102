//! Graceful drain (SIGTERM): stop accepting, then close the sockets with 1001 spread evenly
//! over `server.drain_secs`, so that the clients' reconnects (to other nodes, behind a
//! balancer) arrive as a ramp instead of a storm; stop once everything is closed, or at
//! `server.drain_deadline_secs` whatever is left.
//!
//! Call order: [`Drain::start`] once with the sockets to close, then [`Drain::due`] every
//! tick; [`Drain::is_over`] says when the core may stop. Times are core ticks.

#[derive(Default)]
pub struct Drain {
    /// Set when this core starts draining: the tick by which it ends, drained or not.
    deadline: Option<u64>,
    /// Sockets (WebSockets and polling sessions) to close, as (slot, gen).
    pending: Vec<(u32, u32)>,
    total: usize,
    start: u64,
    window: u64,
}

impl Drain {
    /// Has the drain started?
    pub fn started(&self) -> bool {
        self.deadline.is_some()
    }

    /// Start at tick `now`: close `pending` over `window` ticks, stop by `deadline`.
    pub fn start(&mut self, pending: Vec<(u32, u32)>, now: u64, window: u64, deadline: u64) {
        *self = Drain {
            deadline: Some(deadline),
            total: pending.len(),
            pending,
            start: now,
            window,
        };
    }

    /// The sockets due to close by tick `now` (all of them once the window has passed),
    /// appended to `out`.
    pub fn due(&mut self, now: u64, out: &mut Vec<(u32, u32)>) {
        let elapsed = now.saturating_sub(self.start);
        let due_total = if self.window == 0 || elapsed >= self.window {
            self.total
        } else {
            (self.total as u64 * elapsed).div_ceil(self.window) as usize
        };
        let closed = self.total - self.pending.len();
        for _ in closed..due_total {
            let Some(s) = self.pending.pop() else { break };
            out.push(s);
        }
    }

    /// The core may stop: every socket is closed (`slots_in_use == 0`) or the deadline passed.
    pub fn is_over(&self, now: u64, slots_in_use: usize) -> bool {
        self.deadline
            .is_some_and(|d| (slots_in_use == 0 && self.pending.is_empty()) || now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_close_as_a_ramp_over_the_window() {
        let mut d = Drain::default();
        assert!(!d.started());
        assert!(!d.is_over(1_000, 0), "not draining");
        let sockets: Vec<(u32, u32)> = (0..10).map(|s| (s, 1)).collect();
        d.start(sockets, 100, 10, 300);
        assert!(d.started());
        let mut out = Vec::new();
        d.due(100, &mut out);
        assert!(out.is_empty());
        d.due(101, &mut out);
        assert_eq!(out.len(), 1);
        d.due(105, &mut out);
        assert_eq!(out.len(), 5);
        d.due(110, &mut out);
        assert_eq!(out.len(), 10);
        d.due(200, &mut out);
        assert_eq!(out.len(), 10, "each socket once");
        assert!(!d.is_over(150, 3), "descriptors still closing");
        assert!(d.is_over(150, 0));
    }

    #[test]
    fn no_window_closes_everything_at_once_and_the_deadline_ends_it() {
        let mut d = Drain::default();
        d.start(vec![(1, 1), (2, 1)], 0, 0, 50);
        let mut out = Vec::new();
        d.due(0, &mut out);
        assert_eq!(out.len(), 2);
        assert!(!d.is_over(49, 2));
        assert!(
            d.is_over(50, 2),
            "the deadline stops the core whatever is left"
        );
    }
}

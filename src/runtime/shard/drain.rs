//! The core's part of a graceful drain: stop accepting, end requests in progress, and close
//! the sockets the drain plan says are due on each tick.
use super::Shard;
use crate::protocol::close::CloseReason;
use crate::runtime::conn::ConnState;
use crate::runtime::timer::Timers;

impl Shard {
    pub(in crate::runtime) fn start_shutdown(&mut self) {
        if self.drain.started() {
            return;
        }
        let (drain_secs, deadline_secs) = {
            let server = &self.policy.config.server;
            (server.drain_secs, server.drain_deadline_secs)
        };
        let now = self.timers.now();
        let window = if drain_secs == 0 {
            0
        } else {
            Timers::ticks(drain_secs * 1000)
        };
        let stop = self.accept.stop(self.id);
        self.ring.push(stop);
        let mut pending = Vec::new();
        for slot in 0..self.conns.len() as u32 {
            let c = &self.conns[slot as usize];
            match c.state {
                ConnState::Open { .. } | ConnState::Polling { .. } if c.socket().is_some() => {
                    pending.push((slot, c.gen))
                }
                // Requests in progress and idle keep-alive connections end now.
                ConnState::Handshake { .. } => {
                    self.begin_close(slot);
                    self.maybe_release(slot);
                }
                _ => {}
            }
        }
        tracing::info!(
            core = self.id,
            sockets = pending.len(),
            window_secs = drain_secs,
            "draining"
        );
        let deadline = now + Timers::ticks(deadline_secs * 1000);
        self.drain.start(pending, now, window, deadline);
        self.drain_tick(now);
    }

    /// Close the share of sockets due by `now` (all of them once the window has passed).
    pub(in crate::runtime) fn drain_tick(&mut self, now: u64) {
        let mut due = Vec::new();
        self.drain.due(now, &mut due);
        for (slot, gen) in due {
            if self.conns[slot as usize].gen != gen {
                continue;
            }
            self.shut_down_socket(slot, CloseReason::ShuttingDown);
            self.maybe_release(slot);
        }
    }
}

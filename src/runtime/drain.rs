//! Graceful drain (SIGTERM): stop accepting, then close the sockets with 1001 spread evenly
//! over `server.drain_secs`, so that the clients' reconnects (to other nodes, behind a
//! balancer) arrive as a ramp instead of a storm; stop once everything is closed, or at
//! `server.drain_deadline_secs` whatever is left.
use super::conn::ConnState;
use super::shard::Shard;
use super::token::{self, Op};
use crate::protocol::close::CloseReason;
use io_uring::{opcode, types};
use std::os::fd::AsRawFd;

#[derive(Default)]
pub struct Drain {
    /// Sockets (WebSockets and polling sessions) to close, as (slot, gen).
    pending: Vec<(u32, u32)>,
    total: usize,
    start: u64,
    window: u64,
}

impl Shard {
    pub(super) fn start_shutdown(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        let (drain_secs, deadline_secs) = {
            let server = &self.policy.config.server;
            (server.drain_secs, server.drain_deadline_secs)
        };
        let now = self.wheel.now();
        self.stop_deadline = Some(now + self.ticks(deadline_secs * 1000));
        let window = if drain_secs == 0 {
            0
        } else {
            self.ticks(drain_secs * 1000)
        };
        // Stop listening: the kernel refuses new connections at once (a balancer moves them
        // to another node) and the pending accept ends.
        let listener = socket2::SockRef::from(&self.listener);
        if let Err(e) = listener.shutdown(std::net::Shutdown::Both) {
            tracing::debug!(core = self.id, "listener shutdown: {e}");
        }
        let cancel = opcode::AsyncCancel2::new(
            types::CancelBuilder::fd(types::Fd(self.listener.as_raw_fd())).all(),
        )
        .build()
        .user_data(token::plain(Op::CancelAccept));
        self.push(cancel);
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
        self.drain = Drain {
            total: pending.len(),
            pending,
            start: now,
            window,
        };
        self.drain_tick(now);
    }

    /// Close the share of sockets due by `now` (all of them once the window has passed).
    pub(super) fn drain_tick(&mut self, now: u64) {
        let d = &self.drain;
        let elapsed = now.saturating_sub(d.start);
        let due_total = if d.window == 0 || elapsed >= d.window {
            d.total
        } else {
            (d.total as u64 * elapsed).div_ceil(d.window) as usize
        };
        let closed = d.total - d.pending.len();
        for _ in closed..due_total {
            let Some((slot, gen)) = self.drain.pending.pop() else {
                break;
            };
            if self.conns[slot as usize].gen != gen {
                continue;
            }
            self.end_socket(slot, CloseReason::ShuttingDown);
            self.maybe_release(slot);
        }
    }

    /// Every socket closed and every descriptor released.
    pub(super) fn drained(&self) -> bool {
        self.in_use == 0 && self.drain.pending.is_empty()
    }
}

//! The core's tick: drain progress, revocations, cluster timers, and connection deadlines
//! (handshake, keepalive ping, idle, session expiry, linger).
use super::Shard;
use crate::protocol::close::CloseReason;
use crate::protocol::frame::OpCode;
use crate::protocol::WsConnection;
use crate::runtime::conn::{flag, ConnState};
use crate::runtime::stats::ShardStats;
use crate::runtime::sys;
use crate::runtime::timer::Timers;
use crate::runtime::timer::TICK_MS;
use crate::service::refusal::Refusal;
use crate::service::session::unix_now;
use io_uring::cqueue;
use std::sync::atomic::Ordering::Relaxed;

impl Shard {
    pub(in crate::runtime) fn on_tick(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.ring.arm_tick();
        }
        let to = self.timers.tick_of(sys::monotonic_ms());
        self.ring.buffers_tick();
        if self.drain.started() {
            self.drain_tick(to);
        }
        if to / 600 != self.timers.now() / 600 {
            self.forget_expired_revocations();
        }
        if to / 10 != self.timers.now() / 10 {
            self.expire_history();
            self.outbox.pool.trim();
        }
        self.remote_tick();
        let stats = &self.shared.stats[self.id];
        stats
            .slots_in_use
            .store(self.conns.in_use() as u64, Relaxed);
        stats
            .slots_capacity
            .store(self.conns.table_slots() as u64, Relaxed);
        stats
            .recv_window
            .store(self.ring.buffers_window() as u64, Relaxed);
        self.refusal_log_tick();
        let mut due = Vec::new();
        self.timers.advance(to, &mut due);
        for (slot, gen, tick) in due {
            let Some(c) = self.conns.get(slot as usize) else {
                continue;
            };
            if c.gen != gen || c.timer_at as u64 != tick || c.is_free() {
                continue;
            }
            self.on_timer(slot);
            self.maybe_release(slot);
        }
        self.arm_accept();
    }

    fn on_timer(&mut self, slot: u32) {
        let now = self.timers.now();
        let ping_ticks = Timers::ticks(self.limits.ping_interval_secs * 1000);
        let c = &mut self.conns[slot as usize];
        match &c.state {
            // An idle keep-alive connection between two requests is just closed.
            ConnState::Handshake { reused: true, .. } => self.begin_close(slot),
            ConnState::Handshake { head, .. } => {
                // The log names what little of the request came (a slow client's path).
                super::refusals::note_partial(&mut self.refusals, head);
                self.refuse_request(slot, Refusal::HandshakeTimeout)
            }
            ConnState::Polling { .. } => self.poll_session_timer(slot),
            ConnState::PollWait { .. } => self.poll_wait_timeout(slot),
            ConnState::Open { .. } if c.has(flag::LINGER) || c.has(flag::CLOSE_AFTER_FLUSH) => {
                self.begin_close(slot)
            }
            ConnState::Open { meta, .. } => {
                if meta
                    .auth
                    .as_ref()
                    .is_some_and(|a| unix_now() >= a.expires_at)
                {
                    ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
                    self.end_session(slot, CloseReason::SessionExpired);
                    return;
                }
                if now >= c.ping_at as u64 {
                    let idle_ticks = self.limits.idle_timeout_secs * 1000 / TICK_MS;
                    if now.saturating_sub(c.last_rx as u64) >= idle_ticks {
                        ShardStats::inc(&self.shared.stats[self.id].closed_idle);
                        self.close_with(slot, CloseReason::IdleTimeout);
                        return;
                    }
                    ShardStats::inc(&self.shared.stats[self.id].pings_sent);
                    c.ping_at = (now + ping_ticks) as u32;
                    if !self.sio_ping(slot) {
                        let c = &mut self.conns[slot as usize];
                        WsConnection::encode_control(&mut c.out, OpCode::Ping, b"");
                        self.mark_dirty(slot);
                    }
                }
                self.schedule_open(slot);
            }
            ConnState::Responding => self.begin_close(slot),
            _ => {}
        }
    }

    /// An open socket's next deadline: its next ping or its session's expiry.
    pub(in crate::runtime) fn schedule_open(&mut self, slot: u32) {
        let now = self.timers.now();
        let c = &self.conns[slot as usize];
        let ConnState::Open { meta, .. } = &c.state else {
            return;
        };
        let mut at = c.ping_at as u64;
        if let Some(a) = &meta.auth {
            let secs = a.expires_at.saturating_sub(unix_now());
            at = at.min(now + secs * 1000 / TICK_MS);
        }
        self.schedule(slot, at.max(now + 1));
    }
}

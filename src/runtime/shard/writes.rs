//! Writes and closes: the end-of-turn flush of every dirty socket, sends, and the one way a
//! server-initiated close goes (queue the last bytes, flush, linger, close the descriptor).
use super::{Shard, LINGER_MS};
use crate::protocol::close::CloseReason;
use crate::protocol::WsConnection;
use crate::runtime::conn::{flag, ConnState};
use crate::runtime::outbox::{Outbox, Sent, Write};
use crate::runtime::stats::ShardStats;
use crate::runtime::timer::Timers;

impl Shard {
    /// A socket whose queue exceeds the outbound limit: drop what is queued, try a 1013 close,
    /// and give it the linger time to go away.
    pub(in crate::runtime) fn close_slow_consumer(&mut self, slot: u32) {
        ShardStats::inc(&self.stats().closed_slow_consumer);
        let c = &mut self.conns[slot as usize];
        Outbox::drop_queue(c);
        let why = CloseReason::SlowConsumer;
        self.shared.stats[self.id].closed(false, Some(why.code()));
        WsConnection::encode_close(&mut c.out, why.code(), why.reason());
        self.close_after_flush(slot);
    }

    /// Every close the server starts ends here: what `out` holds (a close frame, an HTTP
    /// answer) is written, then the connection closes; the linger timer bounds the wait for
    /// a peer that does not read.
    pub(in crate::runtime) fn close_after_flush(&mut self, slot: u32) {
        self.conns[slot as usize].flags |= flag::CLOSE_AFTER_FLUSH;
        self.flush_within_linger(slot);
    }

    /// Write what `out` holds at the end of this turn, and give it the linger time.
    pub(in crate::runtime) fn flush_within_linger(&mut self, slot: u32) {
        self.mark_dirty(slot);
        let at = self.timers.now() + Timers::ticks(LINGER_MS);
        self.schedule(slot, at);
    }

    pub(in crate::runtime) fn mark_dirty(&mut self, slot: u32) {
        self.outbox.mark(&mut self.conns[slot as usize], slot);
    }

    /// End of a loop turn: one send per socket with queued bytes.
    pub(in crate::runtime) fn flush_dirty(&mut self) {
        // Flushing a polling session answers a held request on another connection, which
        // becomes dirty in turn: repeat until nothing new is dirty.
        let mut dirty = self.outbox.take_dirty();
        loop {
            for &slot in &dirty {
                self.flush(slot);
                self.maybe_release(slot);
            }
            if !self.outbox.give_back(&mut dirty) {
                break;
            }
        }
    }

    /// One send per dirty socket (or its polling answer, or its linger once all is written).
    fn flush(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if matches!(c.state, ConnState::Polling { .. }) {
            c.flags &= !flag::DIRTY;
            self.poll_flush(slot);
            return;
        }
        match self.outbox.next_write(c) {
            Write::Send => self.ring.send(c, slot),
            Write::Linger => self.start_linger(slot),
            Write::Nothing => {}
        }
    }

    pub(in crate::runtime) fn on_send(&mut self, slot: u32, res: i32) {
        let c = &mut self.conns[slot as usize];
        let sent = self.outbox.on_sent(c, res);
        if res > 0 {
            ShardStats::add(&self.shared.stats[self.id].sent_bytes, res as u64);
        }
        match sent {
            Sent::Failed => self.begin_close(slot),
            Sent::Partial => self.ring.send(c, slot),
            Sent::Again => self.mark_dirty(slot),
            Sent::KeepAliveNext => self.keep_alive_next(slot),
            Sent::Done => {}
        }
    }

    /// Our close frame or refusal is written: shut our side and wait briefly for the peer's EOF,
    /// so that it reads everything we sent (closing with unread input would send RST).
    pub(in crate::runtime) fn start_linger(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.flags |= flag::LINGER;
        self.ring.shutdown_write(c, slot);
        let at = self.timers.now() + Timers::ticks(LINGER_MS);
        self.schedule(slot, at);
        self.arm_recv(slot);
    }

    /// Close now: cancel what is in flight, then release the descriptor.
    pub(in crate::runtime) fn begin_close(&mut self, slot: u32) {
        match self.conns[slot as usize].state {
            ConnState::Closing | ConnState::Free => return,
            ConnState::Open { .. } => {
                if self.conns[slot as usize].socket().is_some() {
                    ShardStats::dec(&self.shared.stats[self.id].sockets);
                }
                self.sio_transport_closed(slot);
                self.unregister(slot);
            }
            // A virtual slot: no descriptor to close.
            ConnState::Polling { .. } => {
                self.close_poll_session(slot);
                return;
            }
            ConnState::PollWait { .. } => self.poll_wait_closed(slot),
            ConnState::Handshake { .. } => ShardStats::dec(&self.shared.stats[self.id].handshakes),
            ConnState::Moving { .. } => return, // finished by the MSG_RING completion
            ConnState::Responding => {}
        }
        let c = &mut self.conns[slot as usize];
        c.state = ConnState::Closing;
        c.out = Vec::new();
        self.ring.cancel_all(c, slot);
    }

    /// Once a closing slot has nothing in flight, close the descriptor; once that completes,
    /// free the slot.
    pub(in crate::runtime) fn maybe_release(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.state, ConnState::Closing) || c.inflight > 0 || c.has(flag::CLOSE_SUBMITTED)
        {
            return;
        }
        self.ring.close(c, slot);
    }

    pub(in crate::runtime) fn on_closed(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.inflight -= 1;
        if !c.has(flag::MOVED) {
            ShardStats::inc(&self.shared.stats[self.id].connections_closed);
        }
        self.conns.release(slot);
        self.arm_accept();
    }
}

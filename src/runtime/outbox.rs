//! What the core writes: the sockets with bytes queued this turn (written once each at the end
//! of the turn, corked), each socket's send buffer between its queue (`Conn::out`) and the
//! kernel (`Conn::sending`), and the sockets whose receive found no free buffer (re-armed at
//! the end of the turn). No I/O here: the shard submits what [`Outbox::next_write`] says.
use super::conn::{flag, Conn, ConnState};
use std::collections::VecDeque;

/// Output capacity kept by an idle socket; larger buffers are released after a flush.
pub const KEEP_CAPACITY: usize = 4096;

/// Send buffers larger than this are freed after their send rather than pooled.
pub const POOL_BUFFER_MAX: usize = 64 * 1024;
/// Capacity the core's pool of send buffers holds at most (a burst of turns of many sockets
/// at once; the rest is freed).
pub const POOL_BYTES_MAX: usize = 4 << 20;

#[derive(Default)]
pub struct Outbox {
    dirty: Vec<u32>,
    /// Sockets whose receive found every provided buffer taken: (slot, gen, in handshake).
    starved: VecDeque<(u32, u32, bool)>,
    /// Send buffers between a completed send and the next write of some socket.
    pub pool: BufPool,
}

/// The core's send buffers: a buffer whose send completed comes back here, empty with its
/// capacity, and the next socket that writes takes it, so a socket's turn is neither grown
/// by reallocation nor freed every time. An idle socket holds no buffer: `out` and
/// `sending` are empty with no capacity between its writes. Bounded by [`POOL_BYTES_MAX`];
/// buffers not taken between two trims are freed.
#[derive(Default)]
pub struct BufPool {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
    /// The fewest buffers the pool held since the last trim: that many were not needed.
    low: usize,
}

impl BufPool {
    /// An empty buffer (with capacity when one is pooled).
    #[inline]
    pub fn take(&mut self) -> Vec<u8> {
        match self.bufs.pop() {
            Some(b) => {
                self.bytes -= b.capacity();
                self.low = self.low.min(self.bufs.len());
                b
            }
            None => Vec::new(),
        }
    }

    /// A buffer back (its contents are dropped); freed when large or the pool is full.
    #[inline]
    pub fn give(&mut self, mut b: Vec<u8>) {
        let cap = b.capacity();
        if cap == 0 || cap > POOL_BUFFER_MAX || self.bytes + cap > POOL_BYTES_MAX {
            return;
        }
        b.clear();
        self.bytes += cap;
        self.bufs.push(b);
    }

    /// Free the buffers no socket took since the last trim (from the core's tick).
    pub fn trim(&mut self) {
        let idle = self.low.min(self.bufs.len());
        for b in self.bufs.drain(..idle) {
            self.bytes -= b.capacity();
        }
        self.low = self.bufs.len();
    }

    /// Capacity held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Make `out` ready for `additional` more bytes: a pooled buffer when it has none, then
    /// one reservation for the whole batch (a turn's echoes, a push).
    #[inline]
    pub fn prepare(&mut self, out: &mut Vec<u8>, additional: usize) {
        if out.capacity() == 0 {
            *out = self.take();
        }
        out.reserve(additional);
    }
}

/// What to do with a dirty socket at the end of the turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// Nothing to write (or a send is still in flight: it comes back dirty).
    Nothing,
    /// Send what `sending` holds from `sent` on.
    Send,
    /// Everything is written and the connection closes after its flush: shut the write side
    /// and linger for the peer's EOF.
    Linger,
}

/// What a completed send leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The send failed: the peer is gone.
    Failed,
    /// Part of the buffer is left: send the rest.
    Partial,
    /// More was queued meanwhile, or a close waits for the flush: write again.
    Again,
    /// A keep-alive HTTP answer is written: read the next request.
    KeepAliveNext,
    /// Nothing left to do.
    Done,
}

impl Outbox {
    /// The socket has bytes to write this turn.
    pub fn mark(&mut self, c: &mut Conn, slot: u32) {
        if !c.has(flag::DIRTY) {
            c.flags |= flag::DIRTY;
            self.dirty.push(slot);
        }
    }

    /// The sockets marked so far (the list is left empty); give the vector back with
    /// [`Outbox::give_back`] to keep its capacity.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.dirty)
    }

    /// Swap the flushed list back in; anything marked during the flush stays listed.
    /// Returns whether there is something new to flush.
    pub fn give_back(&mut self, flushed: &mut Vec<u32>) -> bool {
        flushed.clear();
        std::mem::swap(flushed, &mut self.dirty);
        // `flushed` now holds what was marked during the flush.
        !flushed.is_empty()
    }

    /// A receive found no free buffer: retry at the end of the turn.
    pub fn starve(&mut self, slot: u32, gen: u32, handshake: bool) {
        self.starved.push_back((slot, gen, handshake));
    }

    /// The oldest starved receive, at most `budget` of them a turn (the caller counts).
    pub fn next_starved(&mut self) -> Option<(u32, u32, bool)> {
        self.starved.pop_front()
    }

    pub fn starved(&self) -> usize {
        self.starved.len()
    }

    /// A dirty socket at the end of the turn: move its queue to the send buffer (sealed by
    /// TLS first, if it has TLS) and say what to submit.
    pub fn next_write(&mut self, c: &mut Conn) -> Write {
        c.flags &= !flag::DIRTY;
        if c.is_free() || c.has(flag::SEND_INFLIGHT) || c.has(flag::CLOSE_SUBMITTED) {
            return Write::Nothing;
        }
        if matches!(c.state, ConnState::Closing) {
            return Write::Nothing;
        }
        let ready = if c.tls.is_some() {
            if c.sending.capacity() == 0 {
                c.sending = self.pool.take();
            }
            let ready = c.seal();
            // The plaintext went into the TLS session: its buffer goes back (and the send
            // buffer too when there is nothing to send).
            self.pool.give(std::mem::take(&mut c.out));
            if !ready {
                self.pool.give(std::mem::take(&mut c.sending));
            }
            ready
        } else if !c.out.is_empty() {
            std::mem::swap(&mut c.out, &mut c.sending);
            c.sent = 0;
            true
        } else {
            false
        };
        if ready {
            Write::Send
        } else if c.has(flag::CLOSE_AFTER_FLUSH) && !c.has(flag::LINGER) {
            Write::Linger
        } else {
            Write::Nothing
        }
    }

    /// A send completed with `res` (bytes taken, or -errno).
    pub fn on_sent(&mut self, c: &mut Conn, res: i32) -> Sent {
        c.inflight -= 1;
        c.flags &= !flag::SEND_INFLIGHT;
        if res < 0 {
            self.pool.give(std::mem::take(&mut c.sending));
            c.sent = 0;
            c.out.clear();
            return Sent::Failed;
        }
        c.sent += res as u32;
        if (c.sent as usize) < c.sending.len() && !matches!(c.state, ConnState::Closing) {
            return Sent::Partial;
        }
        // An idle socket holds no write buffer: it goes back to the core's pool.
        self.pool.give(std::mem::take(&mut c.sending));
        c.sent = 0;
        if !c.out.is_empty() || c.has(flag::CLOSE_AFTER_FLUSH) {
            Sent::Again
        } else if c.has(flag::KEEP_ALIVE) && matches!(c.state, ConnState::Responding) {
            Sent::KeepAliveNext
        } else {
            Sent::Done
        }
    }

    /// A slow consumer's queue is dropped (its close frame goes next).
    pub fn drop_queue(c: &mut Conn) {
        c.out.clear();
        c.out.shrink_to(KEEP_CAPACITY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let mut c = Conn::free();
        c.state = ConnState::Responding;
        c
    }

    #[test]
    fn a_socket_is_listed_once_per_turn() {
        let mut o = Outbox::default();
        let mut c = conn();
        o.mark(&mut c, 7);
        o.mark(&mut c, 7);
        let mut list = o.take_dirty();
        assert_eq!(list, vec![7]);
        assert_eq!(o.next_write(&mut c), Write::Nothing, "nothing queued");
        o.mark(&mut c, 7);
        assert!(o.give_back(&mut list), "marked again during the flush");
        assert_eq!(list, vec![7]);
        assert!(o.take_dirty().is_empty());
    }

    #[test]
    fn queued_bytes_go_out_in_one_send_and_partial_sends_continue() {
        let mut o = Outbox::default();
        let mut c = conn();
        c.out.extend_from_slice(b"hello world");
        assert_eq!(o.next_write(&mut c), Write::Send);
        assert!(c.out.is_empty());
        assert_eq!(c.sending, b"hello world");
        // What the io part does when it submits.
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        c.out.extend_from_slice(b"!");
        assert_eq!(
            o.next_write(&mut c),
            Write::Nothing,
            "one send in flight at a time"
        );
        assert_eq!(o.on_sent(&mut c, 5), Sent::Partial);
        assert_eq!(&c.sending[c.sent as usize..], b" world");
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        assert_eq!(o.on_sent(&mut c, 6), Sent::Again, "'!' was queued");
        assert_eq!(c.sending.capacity(), 0, "the send buffer is released");
        assert!(o.pool.bytes() >= 11, "into the core's pool");
        // The next write takes it back instead of allocating.
        let mut out = Vec::new();
        o.pool.prepare(&mut out, 8);
        assert!(out.capacity() >= 11 && out.is_empty());
        assert_eq!(o.pool.bytes(), 0);
        assert_eq!(c.queued_bytes(), 1);
    }

    #[test]
    fn a_close_after_flush_lingers_once_everything_is_written() {
        let mut o = Outbox::default();
        let mut c = conn();
        c.flags |= flag::CLOSE_AFTER_FLUSH;
        c.out.extend_from_slice(b"close frame");
        assert_eq!(o.next_write(&mut c), Write::Send);
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        assert_eq!(o.on_sent(&mut c, 11), Sent::Again);
        assert_eq!(o.next_write(&mut c), Write::Linger);
        c.flags |= flag::LINGER;
        assert_eq!(o.next_write(&mut c), Write::Nothing);
    }

    #[test]
    fn a_failed_send_drops_everything_and_keep_alive_reads_the_next_request() {
        let mut o = Outbox::default();
        let mut c = conn();
        c.out.extend_from_slice(b"x");
        o.next_write(&mut c);
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        c.out.extend_from_slice(b"y");
        assert_eq!(o.on_sent(&mut c, -libc::EPIPE), Sent::Failed);
        assert_eq!(c.queued_bytes(), 0);

        let mut c = conn();
        c.flags |= flag::KEEP_ALIVE;
        c.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        o.next_write(&mut c);
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        assert_eq!(o.on_sent(&mut c, 19), Sent::KeepAliveNext);
    }

    #[test]
    fn the_pool_is_bounded_and_trims_what_no_socket_took() {
        let mut p = BufPool::default();
        p.give(Vec::with_capacity(POOL_BUFFER_MAX + 1));
        assert_eq!(p.bytes(), 0, "a large buffer is freed");
        p.give(Vec::new());
        assert_eq!(p.bytes(), 0);
        for _ in 0..(POOL_BYTES_MAX / 8192 + 10) {
            p.give(Vec::with_capacity(8192));
        }
        assert!(p.bytes() <= POOL_BYTES_MAX);
        let full = p.bytes();
        p.trim();
        assert_eq!(p.bytes(), full, "the first trim only sets the watermark");
        let a = p.take();
        let b = p.take();
        p.give(a);
        p.give(b);
        // Two buffers were out at once: two are kept.
        p.trim();
        assert_eq!(p.bytes(), 2 * 8192);
        p.trim();
        assert_eq!(p.bytes(), 0, "nobody took them since");
    }

    #[test]
    fn starved_receives_come_back_oldest_first() {
        let mut o = Outbox::default();
        o.starve(1, 1, true);
        o.starve(2, 1, false);
        assert_eq!(o.starved(), 2);
        assert_eq!(o.next_starved(), Some((1, 1, true)));
        assert_eq!(o.next_starved(), Some((2, 1, false)));
        assert_eq!(o.next_starved(), None);
    }
}

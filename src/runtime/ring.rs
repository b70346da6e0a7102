//! The core's ring: submissions and completions, the provided receive buffers, the eventfd
//! wake-up and the periodic tick. Every operation on a connection is submitted here, and
//! its in-flight accounting (`Conn::inflight`, `RECV_ARMED`, `SEND_INFLIGHT`) is kept here,
//! so a slot is never released while the kernel may still use it.
//!
//! Call order per loop turn: submissions ([`Ring::push`] and the typed helpers) during the
//! turn, then [`Ring::submit_and_wait`], then [`Ring::completions`] hands out what finished.
use super::bufring::BufRing;
use super::conn::{flag, Conn};
use super::timer::TICK_MS;
use super::token::{self, Op};
use crate::config::EngineConfig;
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// The provided-buffer group of receives.
const BGID: u16 = 0;

/// Build a ring with a sparse fixed-file table of `slots` entries.
///
/// The ring is created disabled (it is built on the main thread so that every core knows every
/// ring fd before any starts) and enabled by its core thread in [`Ring::new`]: it is then
/// single-issuer with deferred task work (completions run only when that thread waits).
/// Kernels without those flags get a plain ring.
pub fn build_ring(cfg: &EngineConfig, slots: u32) -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_cqsize(cfg.ring_entries * 4)
        .setup_submit_all()
        .setup_r_disabled()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(cfg.ring_entries);
    let ring = match tuned {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cfg.ring_entries * 4)
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_r_disabled()
            .build(cfg.ring_entries)?,
        Err(e) => return Err(e),
    };
    ring.submitter().register_files_sparse(slots)?;
    Ok(ring)
}

pub struct Ring {
    // Field order matters: the ring is dropped before the buffer memory it uses.
    ring: IoUring,
    bufs: BufRing,
    /// The eventfd the control plane writes, and the 8 bytes its read lands in.
    wake: OwnedFd,
    wake_buf: Box<u64>,
    tick_spec: Box<types::Timespec>,
    /// Completions of the current turn: (user_data, result, flags).
    cqes: Vec<(u64, i32, u32)>,
    core: usize,
}

impl Ring {
    /// Enable a ring built by [`build_ring`] on the thread that will drive it and register
    /// its receive buffers.
    pub fn new(ring: IoUring, wake: OwnedFd, cfg: &EngineConfig, core: usize) -> io::Result<Ring> {
        ring.submitter().register_enable_rings()?;
        let bufs = BufRing::new(
            &ring.submitter(),
            cfg.recv_buffers,
            cfg.recv_buffer_bytes,
            BGID,
        )?;
        Ok(Ring {
            ring,
            bufs,
            wake,
            wake_buf: Box::new(0),
            tick_spec: Box::new(types::Timespec::new().nsec((TICK_MS * 1_000_000) as u32)),
            cqes: Vec::with_capacity(1024),
            core,
        })
    }

    /// Queue a submission; if the queue is full, submit what is queued first.
    pub fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built by the runtime points only at memory that outlives the
            // operation: Box fields of `Ring`, a connection's `sending` buffer (not touched while
            // SEND_INFLIGHT), a static refusal, or the buffer ring (registered for the ring's
            // lifetime).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::error!(core = self.core, "io_uring submit failed: {e}");
            }
        }
    }

    /// Submit what is queued and wait for at least one completion.
    pub fn submit_and_wait(&mut self) -> io::Result<usize> {
        self.ring.submit_and_wait(1)
    }

    /// Take this turn's completions (the caller gives the vector back with
    /// [`Ring::recycle_completions`] so that it keeps its capacity).
    pub fn completions(&mut self) -> Vec<(u64, i32, u32)> {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        cqes
    }

    pub fn recycle_completions(&mut self, mut cqes: Vec<(u64, i32, u32)>) {
        cqes.clear();
        self.cqes = cqes;
    }

    /// The bytes of a completed receive in provided buffer `bid`.
    pub fn buffer(&mut self, bid: u16, len: usize) -> &mut [u8] {
        self.bufs.get(bid, len)
    }

    /// A receive buffer is ours again (back to the kernel, or on the free stack).
    pub fn recycle(&mut self, bid: u16) {
        self.bufs.recycle(bid)
    }

    /// Receives found no provided buffer this turn: widen the window of buffers the kernel
    /// may take.
    pub fn buffers_ran_dry(&mut self) {
        self.bufs.ran_dry()
    }

    /// One tick passed (the buffers' window narrows after a quiet while).
    pub fn buffers_tick(&mut self) {
        self.bufs.tick()
    }

    /// How many receive buffers the kernel may take now.
    pub fn buffers_window(&self) -> u16 {
        self.bufs.window()
    }

    /// The core's periodic tick (multishot; re-armed when the kernel ends it).
    pub fn arm_tick(&mut self) {
        let tick = opcode::Timeout::new(&*self.tick_spec as *const _)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(token::plain(Op::Tick));
        self.push(tick);
    }

    /// Read the eventfd the control plane rings.
    pub fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            &mut *self.wake_buf as *mut u64 as *mut u8,
            8,
        )
        .build()
        .user_data(token::plain(Op::Wake));
        self.push(e);
    }

    /// A single-shot receive of request bytes into a provided buffer (also armed on a held
    /// polling GET, to notice the client going away).
    pub fn recv_request(&mut self, c: &mut Conn, slot: u32) {
        if c.has(flag::RECV_ARMED) {
            return;
        }
        c.flags |= flag::RECV_ARMED;
        c.inflight += 1;
        let e = opcode::Recv::new(
            types::Fixed(slot),
            std::ptr::null_mut(),
            self.bufs.buf_size(),
        )
        .buf_group(BGID)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(token::conn(Op::RecvHandshake, slot, c.gen));
        self.push(e);
    }

    /// A multishot receive of frames into provided buffers.
    pub fn recv_frames(&mut self, c: &mut Conn, slot: u32) {
        if c.has(flag::RECV_ARMED) {
            return;
        }
        c.inflight += 1;
        c.flags |= flag::RECV_ARMED;
        let e = opcode::RecvMulti::new(types::Fixed(slot), BGID)
            .build()
            .user_data(token::conn(Op::Recv, slot, c.gen));
        self.push(e);
    }

    /// Send what `c.sending` holds past `c.sent`.
    pub fn send(&mut self, c: &mut Conn, slot: u32) {
        let rest = &c.sending[c.sent as usize..];
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        let e = opcode::Send::new(types::Fixed(slot), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token::conn(Op::Send, slot, c.gen));
        self.push(e);
    }

    /// Install connection `slot`'s direct descriptor as a plain (close-on-exec) one, whose
    /// number the completion carries: the refusal log reads the peer address from it.
    pub fn install_fd(&mut self, c: &mut Conn, slot: u32) {
        c.inflight += 1;
        let e = opcode::FixedFdInstall::new(types::Fixed(slot), 0)
            .build()
            .user_data(token::conn(Op::PeerFd, slot, c.gen));
        self.push(e);
    }

    /// shutdown(SHUT_WR): our side is done, the peer reads to the end.
    pub fn shutdown_write(&mut self, c: &mut Conn, slot: u32) {
        c.inflight += 1;
        let e = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
            .build()
            .user_data(token::conn(Op::Shutdown, slot, c.gen));
        self.push(e);
    }

    /// Cancel the receive and the send in flight by their user_data, which the kernel finds
    /// in a hash. Cancelling by descriptor walks every request in flight on the ring: with
    /// 17,000 sockets per core, the 4,096 cancels of one submission took seconds in a
    /// reconnect storm, the loop stalled and handshakes waiting behind it timed out (408).
    /// A shutdown or MSG_RING in flight completes by itself.
    pub fn cancel_all(&mut self, c: &mut Conn, slot: u32) {
        let (gen, recv, send) = (c.gen, c.has(flag::RECV_ARMED), c.has(flag::SEND_INFLIGHT));
        // Which receive is armed depends on the state it was armed in: try both (the other
        // answers ENOENT).
        let targets = [
            (recv, Op::Recv),
            (recv, Op::RecvHandshake),
            (send, Op::Send),
        ];
        for (armed, op) in targets {
            if armed {
                c.inflight += 1;
                let cancel = opcode::AsyncCancel::new(token::conn(op, slot, gen))
                    .build()
                    .user_data(token::conn(Op::Cancel, slot, gen));
                self.push(cancel);
            }
        }
    }

    /// Close the direct descriptor (the connection's last operation).
    pub fn close(&mut self, c: &mut Conn, slot: u32) {
        c.flags |= flag::CLOSE_SUBMITTED;
        c.inflight += 1;
        let e = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(token::conn(Op::Close, slot, c.gen));
        self.push(e);
    }

    /// Close a plain descriptor (the overflow path's refused connection).
    pub fn close_plain(&mut self, fd: i32) {
        let close = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(token::plain(Op::OverflowClose));
        self.push(close);
    }

    /// Move connection `slot` to the ring `target` (MSG_RING with IORING_MSG_SEND_FD); the
    /// owner's completion carries `record`.
    pub fn send_fd(&mut self, c: &mut Conn, slot: u32, target: i32, record: usize) {
        c.inflight += 1;
        let e = opcode::MsgRingSendFd::new(
            types::Fd(target),
            types::Fixed(slot),
            types::DestinationSlot::auto_target(),
            token::pointer(Op::HandoffIn, record),
        )
        .build()
        .user_data(token::conn(Op::HandoffSent, slot, c.gen));
        self.push(e);
    }
}

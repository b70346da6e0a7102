//! Accepting connections into the fixed-file table without ever dropping one.
//!
//! A direct accept that finds the table full fails with ENFILE *after* the kernel took the
//! connection off the backlog, and the kernel then drops it. So the table must never be hit:
//! - far from full: multishot accept (one SQE for any number of connections);
//! - closer than one listen backlog (a multishot accept may drain a whole backlog in one go):
//!   one single-shot direct accept at a time, so we see every slot taken;
//! - one slot left: accept on plain fds (not in the table) only to answer 503 and close.
use super::token::{self, Op};
use io_uring::{opcode, squeue, types};
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Multishot,
    Single,
    Overflow,
}

/// The core's listener and the accept request armed on it.
///
/// Call order: [`AcceptState::arm`] after every change of free slots (it says what to
/// submit, if anything); [`AcceptState::ended`] when an accept completion says it is no
/// longer armed; [`AcceptState::stop`] once, when the node drains.
pub struct AcceptState {
    listener: OwnedFd,
    /// The accept request in flight, if any.
    armed: Option<Mode>,
    /// A cancel of the multishot accept is in flight.
    cancelling: bool,
    /// Free slots needed to keep a multishot accept armed.
    burst_margin: usize,
}

impl AcceptState {
    pub fn new(listener: OwnedFd, backlog: u32) -> AcceptState {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(4096);
        AcceptState {
            listener,
            armed: None,
            cancelling: false,
            burst_margin: backlog.min(somaxconn) as usize + 16,
        }
    }

    /// How to accept with `free` descriptor slots left in the table.
    fn wanted(&self, free: usize) -> Mode {
        if free > self.burst_margin {
            Mode::Multishot
        } else if free > 1 {
            Mode::Single
        } else {
            Mode::Overflow
        }
    }

    /// Make the armed accept match how full the table is: the submission to make, if any
    /// (a cancel of an accept of the wrong kind, or a new accept).
    pub fn arm(&mut self, free: usize) -> Option<squeue::Entry> {
        let want = self.wanted(free);
        match self.armed {
            Some(Mode::Multishot) if want != Mode::Multishot && !self.cancelling => {
                self.cancelling = true;
                Some(
                    opcode::AsyncCancel::new(token::plain(Op::Accept))
                        .build()
                        .user_data(token::plain(Op::CancelAccept)),
                )
            }
            Some(Mode::Overflow) if want != Mode::Overflow && !self.cancelling => {
                self.cancelling = true;
                Some(
                    opcode::AsyncCancel::new(token::plain(Op::AcceptOverflow))
                        .build()
                        .user_data(token::plain(Op::CancelAccept)),
                )
            }
            Some(_) => None,
            None => {
                let fd = types::Fd(self.listener.as_raw_fd());
                let e = match want {
                    Mode::Multishot => opcode::AcceptMulti::new(fd)
                        .allocate_file_index(true)
                        .build()
                        .user_data(token::plain(Op::Accept)),
                    Mode::Single => {
                        opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                            .file_index(Some(types::DestinationSlot::auto_target()))
                            .build()
                            .user_data(token::plain(Op::Accept))
                    }
                    Mode::Overflow => {
                        opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                            .flags(libc::SOCK_CLOEXEC)
                            .build()
                            .user_data(token::plain(Op::AcceptOverflow))
                    }
                };
                self.armed = Some(want);
                Some(e)
            }
        }
    }

    /// The armed accept (or its cancel) has ended.
    pub fn ended(&mut self) {
        self.armed = None;
        self.cancelling = false;
    }

    /// Stop listening: the kernel refuses new connections at once (a balancer moves them to
    /// another node) and the pending accept ends. Returns the cancel to submit.
    pub fn stop(&mut self, core: usize) -> squeue::Entry {
        let listener = socket2::SockRef::from(&self.listener);
        if let Err(e) = listener.shutdown(std::net::Shutdown::Both) {
            tracing::debug!(core, "listener shutdown: {e}");
        }
        opcode::AsyncCancel2::new(
            types::CancelBuilder::fd(types::Fd(self.listener.as_raw_fd())).all(),
        )
        .build()
        .user_data(token::plain(Op::CancelAccept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(backlog: u32) -> AcceptState {
        let fd = std::fs::File::open("/dev/null").unwrap();
        AcceptState::new(fd.into(), backlog)
    }

    #[test]
    fn the_accept_follows_how_full_the_table_is() {
        let mut a = state(100);
        let margin = a.burst_margin;
        assert_eq!(a.wanted(margin + 1), Mode::Multishot);
        assert_eq!(a.wanted(margin), Mode::Single);
        assert_eq!(a.wanted(2), Mode::Single);
        assert_eq!(a.wanted(1), Mode::Overflow);
        // Armed multishot; the table fills: one cancel, then nothing until it ends.
        assert!(a.arm(margin + 10).is_some());
        assert_eq!(a.armed, Some(Mode::Multishot));
        assert!(a.arm(margin + 10).is_none(), "already armed as wanted");
        assert!(a.arm(5).is_some(), "the multishot accept is cancelled");
        assert!(a.arm(5).is_none(), "one cancel at a time");
        a.ended();
        assert!(a.arm(5).is_some());
        assert_eq!(a.armed, Some(Mode::Single));
    }
}

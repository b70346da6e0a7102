//! Accepting connections into the fixed-file table without ever dropping one.
//!
//! A direct accept that finds the table full fails with ENFILE *after* the kernel took the
//! connection off the backlog, and the kernel then drops it. So the table must never be hit:
//! - far from full: multishot accept (one SQE for any number of connections);
//! - closer than one listen backlog (a multishot accept may drain a whole backlog in one go):
//!   one single-shot direct accept at a time, so we see every slot taken;
//! - one slot left: accept on plain fds (not in the table) only to answer 503 and close.
use super::shard::Shard;
use super::stats::ShardStats;
use super::token::{self, Op};
use io_uring::{cqueue, opcode, types};
use std::io;
use std::os::fd::AsRawFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Multishot,
    Single,
    Overflow,
}

pub struct AcceptState {
    /// The accept request in flight, if any.
    armed: Option<Mode>,
    /// A cancel of the multishot accept is in flight.
    cancelling: bool,
    table_slots: usize,
    /// Free slots needed to keep a multishot accept armed.
    burst_margin: usize,
}

impl AcceptState {
    pub fn new(table_slots: usize, backlog: u32) -> AcceptState {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(4096);
        AcceptState {
            armed: None,
            cancelling: false,
            table_slots,
            burst_margin: backlog.min(somaxconn) as usize + 16,
        }
    }
}

impl Shard {
    fn wanted_accept_mode(&self) -> Mode {
        let free = self.accept.table_slots.saturating_sub(self.in_use);
        if free > self.accept.burst_margin {
            Mode::Multishot
        } else if free > 1 {
            Mode::Single
        } else {
            Mode::Overflow
        }
    }

    /// Make the armed accept match how full the table is (called after every slot change).
    pub(super) fn arm_accept(&mut self) {
        if self.stopping() {
            return;
        }
        let want = self.wanted_accept_mode();
        match self.accept.armed {
            Some(Mode::Multishot) if want != Mode::Multishot && !self.accept.cancelling => {
                self.accept.cancelling = true;
                let e = opcode::AsyncCancel::new(token::plain(Op::Accept))
                    .build()
                    .user_data(token::plain(Op::CancelAccept));
                self.push(e);
            }
            Some(Mode::Overflow) if want != Mode::Overflow && !self.accept.cancelling => {
                self.accept.cancelling = true;
                let e = opcode::AsyncCancel::new(token::plain(Op::AcceptOverflow))
                    .build()
                    .user_data(token::plain(Op::CancelAccept));
                self.push(e);
            }
            Some(_) => {}
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
                self.push(e);
                self.accept.armed = Some(want);
            }
        }
    }

    pub(super) fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept.armed = None;
            self.accept.cancelling = false;
        }
        if res >= 0 {
            self.on_new_conn(res as u32);
        } else if res == -libc::ENFILE {
            // Only reachable when another core's handoff took the last slot concurrently.
            ShardStats::inc(&self.shared.stats[self.id].accept_table_full);
        } else if res != -libc::ECANCELED {
            // Transient (ENOMEM, aborted connection...): the next tick re-arms, so a persistent
            // error cannot spin the loop.
            tracing::debug!(
                core = self.id,
                "accept failed: {}",
                io::Error::from_raw_os_error(-res)
            );
            return;
        }
        self.arm_accept();
    }

    pub(super) fn on_accept_overflow(&mut self, res: i32) {
        self.accept.armed = None;
        self.accept.cancelling = false;
        if res >= 0 {
            let stats = &self.shared.stats[self.id];
            ShardStats::inc(&stats.accepted);
            ShardStats::inc(&stats.accept_table_full);
            stats.refused(503);
            static FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nRetry-After: 5\r\nConnection: close\r\n\r\nserver full\n";
            let e = opcode::Send::new(types::Fd(res), FULL.as_ptr(), FULL.len() as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                .build()
                .user_data(token::conn(Op::OverflowSend, res as u32, 0));
            self.push(e);
        } else if res != -libc::ECANCELED {
            tracing::debug!(
                core = self.id,
                "overflow accept failed: {}",
                io::Error::from_raw_os_error(-res)
            );
            return;
        }
        self.arm_accept();
    }
}

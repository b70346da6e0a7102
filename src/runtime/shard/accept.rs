//! Accept completions: a new connection takes its slot; the accept part says what to arm.
use super::Shard;
use crate::runtime::stats::ShardStats;
use crate::runtime::token::{self, Op};
use io_uring::{cqueue, opcode, types};
use std::io;

impl Shard {
    /// Make the armed accept match how full the table is (called after every slot change).
    pub(in crate::runtime) fn arm_accept(&mut self) {
        if self.stopping() {
            return;
        }
        if let Some(e) = self.accept.arm(self.conns.free_in_table()) {
            self.ring.push(e);
        }
    }

    pub(in crate::runtime) fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept.ended();
        }
        if res >= 0 {
            self.on_new_conn(res as u32);
        } else if res == -libc::ENFILE {
            // Only reachable when another core's handoff took the last slot concurrently.
            ShardStats::inc(&self.stats().accept_table_full);
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

    /// A plain-fd accept while the table is full: answer 503 and close.
    pub(in crate::runtime) fn on_accept_overflow(&mut self, res: i32) {
        self.accept.ended();
        if res >= 0 {
            let stats = self.stats();
            ShardStats::inc(&stats.accepted);
            ShardStats::inc(&stats.accept_table_full);
            stats.refused(503);
            self.log_overflow(res);
            static FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nRetry-After: 5\r\nConnection: close\r\n\r\nserver full\n";
            let e = opcode::Send::new(types::Fd(res), FULL.as_ptr(), FULL.len() as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                .build()
                .user_data(token::conn(Op::OverflowSend, res as u32, 0));
            self.ring.push(e);
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

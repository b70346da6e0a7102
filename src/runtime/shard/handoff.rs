//! Moving an upgraded connection to the core that owns its key, with MSG_RING.
//!
//! The source core sends its direct descriptor to the owner's ring (IORING_MSG_SEND_FD, the
//! kernel allocates the target slot) with the boxed [`UpgradePlan`] as the target completion's
//! user_data. On success the owner opens the socket (writes the 101) and the source closes
//! only its own table entry; on failure (owner's table full) the source answers 503.
//! Long-polling requests move the same way ([`Handoff::Poll`]), answered by the owner.
use super::Shard;
use crate::runtime::conn::{flag, ConnState, Handoff, HandoffRecord};
use crate::runtime::stats::ShardStats;
use crate::service::refusal::Refusal;

impl Shard {
    pub(in crate::runtime) fn handoff(&mut self, slot: u32, owner: usize, plan: Handoff) {
        let c = &mut self.conns[slot as usize];
        let record = Box::into_raw(Box::new(HandoffRecord {
            what: plan,
            tls: c.tls.take(),
        })) as usize;
        c.state = ConnState::Moving { record };
        self.ring
            .send_fd(c, slot, self.shared.ring_fds[owner], record);
    }

    pub(in crate::runtime) fn on_handoff_sent(&mut self, slot: u32, res: i32) {
        let c = &mut self.conns[slot as usize];
        c.inflight -= 1;
        let ConnState::Moving { record } = c.state else {
            return;
        };
        let stats = &self.shared.stats[self.id];
        if res >= 0 {
            // The owner core holds the socket (and the record) now; release our slot only.
            ShardStats::inc(&stats.handoffs_out);
            c.state = ConnState::Closing;
            c.flags |= flag::MOVED;
        } else {
            ShardStats::inc(&stats.handoffs_failed);
            // SAFETY: the MSG_RING failed, so no completion carrying `record` was posted to the
            // target; ownership of the box is still ours and it is reclaimed exactly once.
            let record = unsafe { Box::from_raw(record as *mut HandoffRecord) };
            // The refusal below is written through the connection's TLS session.
            c.tls = record.tls;
            tracing::debug!(
                core = self.id,
                "handoff failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            c.state = ConnState::Responding;
            self.refuse(slot, Refusal::ServerFull);
        }
    }

    pub(in crate::runtime) fn on_handoff_in(&mut self, record: usize, res: i32) {
        // SAFETY: `record` is the pointer a source core leaked with Box::into_raw into the
        // MSG_RING user_data; this completion is posted once, on success only.
        let record = unsafe { Box::from_raw(record as *mut HandoffRecord) };
        if res < 0 {
            return;
        }
        let slot = res as u32;
        ShardStats::inc(&self.shared.stats[self.id].handoffs_in);
        self.conns
            .take(slot, ConnState::Responding, self.timers.now());
        let HandoffRecord { what: plan, tls } = *record;
        self.conns[slot as usize].tls = tls;
        self.arm_accept();
        if self.refuse_unless_admitted(slot) {
            return;
        }
        match plan {
            Handoff::Upgrade(plan) => self.open_socket(slot, plan),
            Handoff::Poll(plan) => self.serve_poll(slot, plan),
        }
    }
}

//! Push history on the core: a connecting client of a history endpoint is replayed what it
//! missed and told how its resume went, before any live push (see `runtime::history` for
//! why the seam is exact); the store's ttl is applied from the core's tick.
use super::Shard;
use crate::runtime::sys;
use crate::service::history::envelope;
use crate::service::history::Position;

impl Shard {
    /// A socket of a raw history endpoint just opened (registered, nothing queued after its
    /// 101 yet): queue the replay after `from`, then the recovery marker.
    pub(in crate::runtime) fn replay_history(
        &mut self,
        slot: u32,
        endpoint: u8,
        from: Option<Position>,
    ) {
        let Some(h) = self.history.as_deref_mut().filter(|h| h.on(endpoint)) else {
            return;
        };
        let c = &self.conns[slot as usize];
        let Some(auth) = c.socket().and_then(|(_, meta)| meta.auth) else {
            return;
        };
        if self.endpoint_kinds[endpoint as usize] != crate::config::EndpointKind::Raw {
            return;
        }
        let stats = &self.shared.stats[self.id];
        let replay = h.connect(auth.context, auth.user, from, sys::monotonic_ms(), stats);
        let mut frame = Vec::new();
        for (offset, text) in &replay.messages {
            let at = Position {
                epoch: replay.marker.at.epoch,
                offset: *offset,
            };
            let Some(t) = &self.shared.transcoders[endpoint as usize] else {
                return;
            };
            let Some(payload) = t.outbound(text) else {
                continue;
            };
            envelope::push(&mut frame, at, &payload);
            if !self.ws_send_utf8(slot, &frame) {
                return;
            }
        }
        envelope::marker(&mut frame, replay.marker);
        self.ws_send_utf8(slot, &frame);
    }

    /// Apply the history ttl (about once a second, from the tick).
    pub(in crate::runtime) fn expire_history(&mut self) {
        if let Some(h) = self.history.as_deref_mut() {
            h.expire(sys::monotonic_ms(), &self.shared.stats[self.id]);
        }
    }
}

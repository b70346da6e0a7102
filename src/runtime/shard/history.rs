//! Push history on the core: a connecting client of a history endpoint is replayed what it
//! missed and told how its resume went, before any live push (see `runtime::history` for
//! why the seam is exact); with the nats store the question goes to the store's thread and
//! the answer comes back as a command (`runtime::resume`); the store's ttl is applied from
//! the core's tick.
use super::Shard;
use crate::config::EndpointKind;
use crate::runtime::history::{self, Replay};
use crate::runtime::resume::StoreAnswer;
use crate::runtime::stats::ShardStats;
use crate::runtime::{sys, Command};
use crate::service::engineio::recovery::v3_resume;
use crate::service::history::envelope::{self, Marker};
use crate::service::history::Position;

impl Shard {
    /// A socket of a raw history endpoint just opened (registered, nothing queued after its
    /// 101 yet): queue the replay after `from`, then the recovery marker; or ask the store
    /// off the core and hold the socket's pushes until it answers.
    pub(in crate::runtime) fn replay_history(
        &mut self,
        slot: u32,
        endpoint: u8,
        from: Option<Position>,
    ) {
        if self.endpoint_kinds[endpoint as usize] != EndpointKind::Raw {
            return;
        }
        self.start_replay(slot, endpoint, from);
    }

    /// An Engine.IO v3 session of a Socket.IO history endpoint just opened (its open packet
    /// and default namespace queued): if its client opted in (`recovery::v3_resume`), its
    /// events carry offsets from now on and it is replayed what it missed, as events, then
    /// told how it went (a `ringwire:recovery` event with the raw endpoints' marker).
    pub(in crate::runtime) fn sio_v3_recovery(&mut self, slot: u32) {
        if !self.sio_recovery_wanted(slot) {
            return;
        }
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        let Some(from) = v3_resume(&meta.query()) else {
            return;
        };
        let v3 = self.with_session(slot, |s, _, _, _| {
            s.enable_offsets();
            s.offsets()
        });
        if v3 == Some(true) {
            self.start_replay(slot, endpoint, from);
        }
    }

    /// Replay after `from` and the marker on socket `slot`, now (memory store) or once the
    /// store off the core answered (its pushes held meanwhile).
    fn start_replay(&mut self, slot: u32, endpoint: u8, from: Option<Position>) {
        let Some(h) = self.history.as_deref_mut().filter(|h| h.on(endpoint)) else {
            return;
        };
        let c = &self.conns[slot as usize];
        let Some(auth) = c.socket().and_then(|(_, meta)| meta.auth.clone()) else {
            return;
        };
        let stats = &self.shared.stats[self.id];
        let now = sys::monotonic_ms();
        if let Some(replay) = h.connect(auth.context, &auth.user, from, now, stats) {
            self.send_replay(slot, endpoint, replay);
            return;
        }
        let Some(bus) = self.shared.history_bus.clone() else {
            return;
        };
        let gen = c.gen;
        h.pending.begin(slot, gen, from);
        let (shared, core) = (self.shared.clone(), self.id);
        let done = move |answer| shared.send(core, Command::Resumed { slot, gen, answer });
        bus.connect(auth.context, &auth.user, from, Box::new(done));
    }

    /// The store off the core answered socket `slot`: its replay, the marker, then the
    /// pushes held meanwhile that the replay does not contain.
    pub(in crate::runtime) fn on_resumed(&mut self, slot: u32, gen: u32, answer: StoreAnswer) {
        let Some((endpoint, waiting)) = self.finish_waiting(slot, gen) else {
            return;
        };
        let stats = &self.shared.stats[self.id];
        let mut replay = history::answer(waiting.from, answer, false, stats);
        if waiting.overflowed && replay.marker.recovered {
            // Held pushes were dropped: not everything will arrive.
            replay.marker.recovered = false;
        }
        let through = replay.marker.at;
        self.send_replay(slot, endpoint, replay);
        self.release_held(slot, endpoint, waiting.held, through);
    }

    /// Queue a replay (what the socket's path would have had live) and its marker: raw
    /// envelopes, or (Engine.IO v3) events and a `ringwire:recovery` event.
    fn send_replay(&mut self, slot: u32, endpoint: u8, mut replay: Replay) {
        let Some((_, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        let replayed = replay.for_path(&meta.path);
        ShardStats::add(
            &self.shared.stats[self.id].history_replayed,
            replayed as u64,
        );
        let epoch = replay.marker.at.epoch;
        if self.endpoint_kinds[endpoint as usize] == EndpointKind::Socketio {
            for m in &replay.messages {
                let at = Position {
                    epoch,
                    offset: m.offset,
                };
                self.sio_push(slot, endpoint, &m.text, Some(at));
            }
            self.send_marker(slot, endpoint, replay.marker);
            return;
        }
        let mut frame = Vec::new();
        for m in &replay.messages {
            let at = Position {
                epoch,
                offset: m.offset,
            };
            if !self.send_envelope(slot, endpoint, Some(at), &m.text, &mut frame) {
                return;
            }
        }
        self.send_marker(slot, endpoint, replay.marker);
    }

    /// The recovery marker on socket `slot`: a raw frame, or (Engine.IO v3 sessions that
    /// opted in) a `ringwire:recovery` event. Socket.IO v4 clients have no such event (their
    /// recovery is socket.io's own), so they are sent nothing.
    pub(in crate::runtime) fn send_marker(&mut self, slot: u32, endpoint: u8, marker: Marker) {
        let mut text = Vec::new();
        envelope::marker(&mut text, marker);
        if self.endpoint_kinds[endpoint as usize] == EndpointKind::Socketio {
            let data = format!("[\"ringwire:recovery\",{}]", String::from_utf8_lossy(&text));
            self.with_session(slot, |s, _, cfg, out| {
                if s.offsets() {
                    s.push(&data, None, cfg, out);
                }
            });
            return;
        }
        self.ws_send_utf8(slot, &text);
    }

    /// One push in its envelope on a raw socket; false if the socket is closing.
    fn send_envelope(
        &mut self,
        slot: u32,
        endpoint: u8,
        at: Option<Position>,
        text: &str,
        frame: &mut Vec<u8>,
    ) -> bool {
        let Some(t) = &self.shared.transcoders[endpoint as usize] else {
            return false;
        };
        let Some(payload) = t.outbound(text) else {
            return true;
        };
        envelope::push(frame, at, &payload);
        self.ws_send_utf8(slot, frame)
    }

    /// Apply the history ttl (about once a second, from the tick).
    pub(in crate::runtime) fn expire_history(&mut self) {
        if let Some(h) = self.history.as_deref_mut() {
            h.expire(sys::monotonic_ms(), &self.shared.stats[self.id]);
        }
    }
}

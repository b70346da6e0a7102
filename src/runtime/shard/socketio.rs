//! Socket.IO sessions on the engine: the driver of `service::engineio::Session`. It hands
//! each session what its transports received (WebSocket frames here, polling requests in
//! `polling`), the time, pushes and session ends, and carries out the actions it returns:
//! frames into `out`, HTTP answers, timers, counters, listeners.
//!
//! Where a session lives: on the core owning its user, like every socket of that user.
//! - Over a WebSocket opened directly (`transport=websocket`), the session is that socket
//!   (`ConnState::Open` with `Sio::Session` in its metadata).
//! - Over long-polling, the session is a virtual slot (`ConnState::Polling`) above the
//!   descriptor table; each polling request is authenticated on whichever core accepted it
//!   and moved to the owner like an upgrade, so the session state is never shared.
//! - An upgrade opens a WebSocket whose packets belong to the polling session
//!   (`Sio::Transport`); once the client sends the upgrade packet, everything for the
//!   session goes through it. The session keeps its identity (socket id, attributes,
//!   namespaces).
//!
//! Transports are `Link`s (slot and generation); a session's time is the wheel's tick times
//! its length, in ms.
//!
//! A sid names the session's slot and generation plus a random tag, so it is found without
//! any table; it is only honoured with the session (user login) it was created for.
use super::Shard;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::EioVersion;
use crate::protocol::MessageKind;
use crate::runtime::conn::{ConnState, Link, Sio};
use crate::runtime::stats::ShardStats;
use crate::runtime::timer::TICK_MS;
use crate::service::engineio;
use crate::service::engineio::{Action, Actions, Session, Settings, Stat};
use crate::service::history::Position;
use crate::service::plan::PollPlan;
use crate::service::session::SessionId;
use std::sync::Arc;

impl Shard {
    /// A new sid for the session in (slot, gen).
    pub(in crate::runtime) fn new_sid(&mut self, slot: u32, gen: u32) -> Box<str> {
        let tag = self.next_random();
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&slot.to_le_bytes());
        raw[4..8].copy_from_slice(&gen.to_le_bytes());
        raw[8..].copy_from_slice(&tag.to_le_bytes());
        engineio::encode_id(raw).into_boxed_str()
    }

    /// xorshift64*: unpredictable enough for tags that are checked together with the
    /// session's secret cookie (sids, private session ids).
    pub(in crate::runtime) fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The live polling session a sid names, if it belongs to `session`.
    pub(in crate::runtime) fn find_sid(&self, sid: &str, session: SessionId) -> Option<u32> {
        let raw = engineio::decode_id(sid)?;
        let slot = u32::from_le_bytes(raw[..4].try_into().ok()?);
        let gen = u32::from_le_bytes(raw[4..8].try_into().ok()?);
        let c = self.conns.get(slot as usize)?;
        if c.gen != gen {
            return None;
        }
        let ConnState::Polling { meta, .. } = &c.state else {
            return None;
        };
        let Some(Sio::Session { session: s, .. }) = meta.sio.as_deref() else {
            return None;
        };
        (*s.sid() == *sid && meta.auth.as_ref().is_some_and(|a| a.session == session))
            .then_some(slot)
    }

    /// The handle of the connection in `slot` as it is now.
    pub(in crate::runtime) fn link(&self, slot: u32) -> Link {
        Link {
            slot,
            gen: self.conns[slot as usize].gen,
        }
    }

    /// Is the connection `l` names still there?
    fn is_live(&self, l: Link) -> bool {
        self.conns
            .get(l.slot as usize)
            .is_some_and(|c| c.gen == l.gen)
    }

    /// Sessions' time: the wheel's, in ms.
    pub(in crate::runtime) fn sio_now(&self) -> u64 {
        self.timers.now() * TICK_MS
    }

    pub(in crate::runtime) fn sio_settings(&self) -> Settings {
        Settings::new(&self.limits, &self.policy.config.socketio)
    }

    /// The Socket.IO state of `slot` (a WebSocket or a polling session).
    pub(in crate::runtime) fn sio(&self, slot: u32) -> Option<&Sio> {
        match &self.conns.get(slot as usize)?.state {
            ConnState::Open { meta, .. } | ConnState::Polling { meta, .. } => meta.sio.as_deref(),
            _ => None,
        }
    }

    /// The session in `slot` (its own WebSocket, or a polling session).
    pub(in crate::runtime) fn session_mut(&mut self, slot: u32) -> Option<&mut Session<Link>> {
        match &mut self.conns.get_mut(slot as usize)?.state {
            ConnState::Open { meta, .. } | ConnState::Polling { meta, .. } => {
                match meta.sio.as_deref_mut()? {
                    Sio::Session { session, .. } => Some(session),
                    Sio::Transport { .. } => None,
                }
            }
            _ => None,
        }
    }

    /// Call the session in `slot` with the time, the settings and an action buffer, then
    /// carry out its actions. None if there is no session there.
    pub(in crate::runtime) fn with_session<R>(
        &mut self,
        slot: u32,
        f: impl FnOnce(&mut Session<Link>, u64, &Settings, &mut Actions<Link>) -> R,
    ) -> Option<R> {
        let (now, cfg) = (self.sio_now(), self.sio_settings());
        let mut out = Actions::new();
        let r = f(self.session_mut(slot)?, now, &cfg, &mut out);
        self.sio_actions(slot, &mut out, None);
        Some(r)
    }

    /// The state of a new direct `socketio` WebSocket in `slot`.
    pub(in crate::runtime) fn new_ws_session(&mut self, eio: EioVersion, slot: u32) -> Box<Sio> {
        let link = self.link(slot);
        let sid = self.new_sid(slot, link.gen);
        Box::new(Sio::Session {
            session: Session::websocket(eio, sid, link),
            retired: false,
        })
    }

    /// The WebSocket in `slot` asks to upgrade the polling session `v`: its state if the
    /// session takes it.
    pub(in crate::runtime) fn sio_attach(
        &mut self,
        v: u32,
        slot: u32,
        eio: EioVersion,
    ) -> Option<Box<Sio>> {
        let ws = self.link(slot);
        let of = self.link(v);
        let s = self.session_mut(v)?;
        s.attach_websocket(ws, eio)
            .then(|| Box::new(Sio::Transport { of }))
    }

    /// Carry out the actions of the session in `session` (`current`: the polling request
    /// being served, answered or held by them). False if a frame could not be queued (its
    /// WebSocket is gone, closing, or went over its outbound limit).
    pub(in crate::runtime) fn sio_actions(
        &mut self,
        session: u32,
        out: &mut Actions<Link>,
        mut current: Option<(Link, Box<PollPlan>)>,
    ) -> bool {
        let mut sent = true;
        while let Some(a) = out.pop() {
            match a {
                Action::Send { to, packet } => {
                    sent &= self.is_live(to) && self.ws_send_text(to.slot, &packet);
                }
                Action::SendAll { to, packets } if self.is_live(to) => {
                    for p in &packets {
                        self.ws_send_text(to.slot, p);
                    }
                }
                Action::Close { to, last, why } if self.is_live(to) => {
                    self.ws_send_final(to.slot, &last);
                    self.close_with(to.slot, why);
                }
                Action::Answer { request, packets } => {
                    let packets = packets.iter().map(|p| &**p);
                    match &current {
                        Some((r, plan)) if *r == request => {
                            self.poll_answer(request.slot, plan, packets)
                        }
                        _ => self.answer_held(request.slot, request.gen, packets),
                    }
                }
                Action::Hold { request, until } => {
                    if let Some((r, plan)) = current.take_if(|(r, _)| *r == request) {
                        self.poll_hold(session, r.slot, plan, until);
                    }
                }
                Action::FlushLater => self.mark_dirty(session),
                Action::Event { data } => self.sio_event(session, &data),
                Action::Schedule { at } => self.schedule_poll_session(session, at),
                Action::Count(stat) => self.sio_count(stat),
                Action::Resume { nsp, claim } => self.sio_resume(session, &nsp, claim.as_ref()),
                Action::Park(namespaces) => self.sio_park(session, namespaces),
                Action::Retire => self.retire_poll_session(session),
                Action::Free => self.free_poll_session(session),
                Action::SendAll { .. } | Action::Close { .. } => {}
            }
        }
        sent
    }

    fn sio_count(&self, stat: Stat) {
        let stats = &self.shared.stats[self.id];
        ShardStats::inc(match stat {
            Stat::DroppedPacket => &stats.sio_dropped_packets,
            Stat::Upgrade => &stats.sio_upgrades,
            Stat::ProtocolError => &stats.protocol_errors,
            Stat::PingSent => &stats.pings_sent,
            Stat::ClosedIdle => &stats.closed_idle,
        });
    }

    /// A text or binary frame on a `socketio` WebSocket.
    pub(in crate::runtime) fn sio_ws_frame(&mut self, slot: u32, binary: bool, payload: &[u8]) {
        // A WebSocket upgrading a polling session speaks for that session.
        let (session, via) = match self.sio(slot) {
            Some(Sio::Session { .. }) => (slot, None),
            Some(&Sio::Transport { of }) if self.is_live(of) => (of.slot, Some(self.link(slot))),
            _ => return,
        };
        self.with_session(session, |s, _, cfg, out| {
            s.frame(via, binary, payload, cfg, out)
        });
    }

    /// A client event: to the listeners through the endpoint's transcoder.
    fn sio_event(&mut self, session: u32, data: &str) {
        ShardStats::inc(&self.shared.stats[self.id].messages_in);
        let endpoint = match &self.conns[session as usize].state {
            ConnState::Open { endpoint, .. } | ConnState::Polling { endpoint, .. } => *endpoint,
            _ => return,
        };
        if let Some(t) = self.shared.transcoders[endpoint as usize].clone() {
            if let Some(text) = t.inbound(data) {
                self.notify(session, |l, info| l.on_message(info, &text));
            }
        }
    }

    /// A push for a Socket.IO socket (see `Session::push`; `at`: its position in the
    /// user's history; see `push_one` for when it is held or sent later). Returns whether it
    /// was sent.
    pub(in crate::runtime) fn sio_push(
        &mut self,
        slot: u32,
        endpoint: u8,
        text: &Arc<str>,
        at: Option<Position>,
    ) -> bool {
        let Some(t) = &self.shared.transcoders[endpoint as usize] else {
            return false;
        };
        let Some(data) = t.outbound(text) else {
            return false;
        };
        let (cfg, mut out) = (self.sio_settings(), Actions::new());
        let Some(s) = self.session_mut(slot) else {
            return false;
        };
        let queued = s.push(&data, at, &cfg, &mut out);
        self.sio_actions(slot, &mut out, None) && queued
    }

    /// One text frame on an open WebSocket (closed as a slow consumer over its limit).
    pub(in crate::runtime) fn ws_send_text(&mut self, slot: u32, text: &str) -> bool {
        self.ws_send_utf8(slot, text.as_bytes())
    }

    /// [`Shard::ws_send_text`] of bytes the caller knows to be UTF-8 (a JSON it wrote).
    pub(in crate::runtime) fn ws_send_utf8(&mut self, slot: u32, text: &[u8]) -> bool {
        let max_out = self.limits.max_outbound_bytes;
        let c = &mut self.conns[slot as usize];
        if c.has(crate::runtime::conn::flag::CLOSE_AFTER_FLUSH) {
            return false;
        }
        let before = c.queued_bytes();
        let ConnState::Open { ws, .. } = &mut c.state else {
            return false;
        };
        ws.encode_message(&mut self.zlib, &mut c.out, MessageKind::Text, text);
        if c.over_outbound_limit(before, max_out) {
            self.close_slow_consumer(slot);
            false
        } else {
            self.mark_dirty(slot);
            true
        }
    }

    /// The session (login) of socket `slot` ended (`why`: terminated or expired): see
    /// `Session::end`. A plain WebSocket just gets its close frame.
    pub(in crate::runtime) fn end_session(&mut self, slot: u32, why: CloseReason) {
        // An upgrade WebSocket speaks for its polling session.
        let slot = match self.sio(slot) {
            Some(&Sio::Transport { of }) if self.is_live(of) => of.slot,
            Some(Sio::Transport { .. }) => {
                self.close_with(slot, why);
                return;
            }
            _ => slot,
        };
        if self
            .with_session(slot, |s, now, cfg, out| s.end(now, why, cfg, out))
            .is_none()
        {
            self.close_with(slot, why);
        }
    }

    /// The last text frames of a WebSocket before its close frame (not subject to the
    /// outbound limit: a few bytes that must not turn the close into a slow-consumer one).
    pub(in crate::runtime) fn ws_send_final(&mut self, slot: u32, packets: &[Box<str>]) {
        let c = &mut self.conns[slot as usize];
        if packets.is_empty() || c.has(crate::runtime::conn::flag::CLOSE_AFTER_FLUSH) {
            return;
        }
        let ConnState::Open { ws, .. } = &mut c.state else {
            return;
        };
        for p in packets {
            ws.encode_message(&mut self.zlib, &mut c.out, MessageKind::Text, p.as_bytes());
        }
        self.mark_dirty(slot);
    }

    /// End a socket whatever it is, for a drain: an open WebSocket gets a close frame, a
    /// polling session its close packet (after an upgrade in progress, see
    /// `Session::shut_down`). The client is not told why: it reconnects.
    pub(in crate::runtime) fn shut_down_socket(&mut self, slot: u32, why: CloseReason) {
        if matches!(self.conns[slot as usize].state, ConnState::Polling { .. }) {
            let shut = self.with_session(slot, |s, now, cfg, out| s.shut_down(now, why, cfg, out));
            if shut.is_none() {
                self.free_poll_session(slot);
            }
        } else if self
            .with_session(slot, |s, _, _, out| s.close(why, out))
            .is_none()
        {
            // A plain WebSocket (nothing else than an open WebSocket takes a close frame).
            self.close_with(slot, why);
        }
    }

    /// After the 101 of a direct `socketio` WebSocket: the open packet (and, for v3, the
    /// default namespace's connect).
    pub(in crate::runtime) fn sio_greet(&mut self, slot: u32) {
        let recovery = self.sio_recovery_wanted(slot);
        self.with_session(slot, |s, _, cfg, out| {
            if recovery {
                s.enable_recovery();
            }
            s.greet(cfg, out)
        });
        self.sio_v3_recovery(slot);
    }

    /// The keepalive of a `socketio` WebSocket (see `Session::ping`). Returns false when a
    /// WebSocket ping should be sent instead.
    pub(in crate::runtime) fn sio_ping(&mut self, slot: u32) -> bool {
        self.with_session(slot, |s, _, _, out| s.ping(out))
            .unwrap_or(false)
    }

    /// A WebSocket with Socket.IO state is closing: if it carried a polling session, that
    /// session falls back to polling (probe not finished) or ends (upgraded); a session on
    /// its own WebSocket ends with it (and may park its namespaces).
    pub(in crate::runtime) fn sio_transport_closed(&mut self, slot: u32) {
        let of = match self.sio(slot) {
            Some(&Sio::Transport { of }) => of,
            Some(Sio::Session { .. }) => {
                self.with_session(slot, |s, _, _, out| s.transport_closed(out));
                return;
            }
            None => return,
        };
        if !self.is_live(of) {
            return;
        }
        let ws = self.link(slot);
        self.with_session(of.slot, |s, _, _, out| s.websocket_closed(ws, out));
    }
}

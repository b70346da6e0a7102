//! Socket.IO sessions on the engine: Engine.IO packets from WebSocket frames or polling
//! bodies, namespaces, events, acks, pings, and the polling-to-WebSocket upgrade.
//!
//! Where a session lives: on the core owning its user, like every socket of that user.
//! - Over a WebSocket opened directly (`transport=websocket`), the session is that socket
//!   (`ConnState::Open` with `meta.sio`).
//! - Over long-polling, the session is a virtual slot (`ConnState::Polling`) above the
//!   descriptor table; each polling request is authenticated on whichever core accepted it
//!   and moved to the owner like an upgrade, so the session state is never shared.
//! - An upgrade opens a WebSocket whose packets belong to the polling session (its
//!   `transport_of`); once the client sends the upgrade packet, everything for the session
//!   goes through it. The session keeps its identity (socket id, attributes, namespaces).
//!
//! A sid names the session's slot and generation plus a random tag, so it is found without
//! any table; it is only honoured with the session (user login) it was created for.
use super::conn::{ConnState, PartialBinary, SioState};
use super::shard::Shard;
use super::stats::ShardStats;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::{self, EioVersion, Packet, PacketType};
use crate::protocol::socketio::{self, SioType};
use crate::protocol::MessageKind;
use crate::service::session::SessionId;
use base64::Engine as _;

/// Namespaces one client may join.
const MAX_NAMESPACES: usize = 32;

impl Shard {
    /// A new sid for the session in (slot, gen).
    pub(super) fn new_sid(&mut self, slot: u32, gen: u32) -> Box<str> {
        // xorshift64*: unpredictable enough for a tag that is checked together with the
        // session's secret cookie.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let tag = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&slot.to_le_bytes());
        raw[4..8].copy_from_slice(&gen.to_le_bytes());
        raw[8..].copy_from_slice(&tag.to_le_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw)
            .into_boxed_str()
    }

    /// The live polling session a sid names, if it belongs to `session`.
    pub(super) fn find_sid(&self, sid: &str, session: SessionId) -> Option<u32> {
        let mut raw = [0u8; 16];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(sid, &mut raw)
            .ok()?;
        if n != 16 {
            return None;
        }
        let slot = u32::from_le_bytes(raw[..4].try_into().ok()?);
        let gen = u32::from_le_bytes(raw[4..8].try_into().ok()?);
        let c = self.conns.get(slot as usize)?;
        if c.gen != gen {
            return None;
        }
        let ConnState::Polling { meta, .. } = &c.state else {
            return None;
        };
        let sio = meta.sio.as_ref()?;
        (*sio.sid == *sid && meta.auth.is_some_and(|a| a.session == session)).then_some(slot)
    }

    pub(super) fn new_sio_state(&mut self, eio: EioVersion, slot: u32) -> Box<SioState> {
        let gen = self.conns[slot as usize].gen;
        let sid = self.new_sid(slot, gen);
        Box::new(SioState {
            eio,
            sid,
            namespaces: Vec::new(),
            transport_of: None,
            ws: None,
            queue: Default::default(),
            waiting: None,
            last_seen: self.wheel.now(),
            ping_at: self.wheel.now() + self.ticks(self.limits.ping_interval_secs * 1000),
            partial: None,
            ending: None,
        })
    }

    /// The open packet for a session.
    pub(super) fn open_packet(&self, eio: EioVersion, sid: &str, upgrades: bool) -> String {
        let sio = &self.policy.config.socketio;
        engineio::open_packet(
            eio,
            sid,
            upgrades,
            self.limits.ping_interval_secs * 1000,
            sio.ping_timeout_ms,
            sio.max_http_body_bytes,
        )
    }

    /// The state of the session in `slot` (a WebSocket or a polling session).
    pub(super) fn sio_state(&mut self, slot: u32) -> Option<&mut SioState> {
        match &mut self.conns.get_mut(slot as usize)?.state {
            ConnState::Open { meta, .. } | ConnState::Polling { meta, .. } => {
                meta.sio.as_deref_mut()
            }
            _ => None,
        }
    }

    /// A text or binary frame on a `socketio` WebSocket.
    pub(super) fn sio_ws_frame(&mut self, slot: u32, binary: bool, payload: &[u8]) {
        let Some(sio) = self.sio_state(slot) else {
            return;
        };
        let (eio, transport_of) = (sio.eio, sio.transport_of);
        // A WebSocket upgrading a polling session speaks for that session.
        let (session, via) = match transport_of {
            Some((v, vgen)) if self.conns.get(v as usize).is_some_and(|c| c.gen == vgen) => {
                (v, Some(slot))
            }
            Some(_) => return,
            None => (slot, None),
        };
        if binary {
            match engineio::decode_binary_frame(eio, payload) {
                Ok(data) => self.sio_packet(session, via, Packet::Binary(data)),
                Err(_) => self.sio_protocol_error(session),
            }
            return;
        }
        // Validated UTF-8 by the protocol core.
        let text = std::str::from_utf8(payload).unwrap_or("");
        match engineio::decode_text(text) {
            Ok(p) => self.sio_packet(session, via, p),
            Err(_) => self.sio_protocol_error(session),
        }
    }

    /// One Engine.IO packet from the client of `session`, received on the WebSocket `via`
    /// when that is an upgrade transport (None: on the session's own WebSocket, or polling).
    pub(super) fn sio_packet(&mut self, session: u32, via: Option<u32>, p: Packet<'_>) {
        let ending = self.sio_state(session).and_then(|s| s.ending);
        let upgrading = via.is_some() && matches!(p, Packet::Text(PacketType::Ping, "probe"));
        if ending.is_some()
            && !upgrading
            && !matches!(p, Packet::Text(PacketType::Upgrade | PacketType::Close, _))
        {
            // An ended session only hands over its last packets (see `end_poll_session`).
            return;
        }
        match p {
            Packet::Text(PacketType::Ping, data) => {
                if let (Some(w), "probe") = (via, data) {
                    // Upgrade probe: answer on the new transport, and release the held poll so
                    // that the client can pause polling.
                    self.ws_send_text(w, "3probe");
                    self.poll_release_or_noop(session);
                } else {
                    let pong = format!("3{data}");
                    self.sio_send(session, &pong);
                }
            }
            Packet::Text(PacketType::Upgrade, _) => {
                let Some(w) = via else { return };
                let wgen = self.conns[w as usize].gen;
                let Some(sio) = self.sio_state(session) else {
                    return;
                };
                if sio.ws != Some((w, wgen, false)) {
                    return;
                }
                sio.ws = Some((w, wgen, true));
                let queued = sio.queue.take();
                ShardStats::inc(&self.shared.stats[self.id].sio_upgrades);
                self.poll_release(session);
                // Noops were for the polling transport only.
                for p in queued.iter().filter(|p| p.as_ref() != "6") {
                    self.ws_send_text(w, p);
                }
                if let Some(e) = ending {
                    // Those were the ended session's last packets.
                    self.close_poll_session_with(session, Vec::new(), e.why);
                }
            }
            Packet::Text(PacketType::Message, text) => self.sio_message(session, text),
            Packet::Binary(data) => self.sio_attachment(session, data),
            Packet::Text(PacketType::Close, _) => self.end_socket(session, CloseReason::Normal),
            Packet::Text(PacketType::Pong | PacketType::Noop | PacketType::Open, _) => {}
        }
    }

    /// A Socket.IO packet (the data of an Engine.IO message).
    fn sio_message(&mut self, session: u32, text: &str) {
        let Ok(p) = socketio::parse(text) else {
            self.sio_protocol_error(session);
            return;
        };
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        let joined = sio.joined(p.nsp);
        match p.kind {
            SioType::Connect => {
                if !sio.namespaces.iter().any(|n| **n == *p.nsp) {
                    if sio.namespaces.len() >= MAX_NAMESPACES {
                        let mut out = String::new();
                        socketio::encode(
                            &mut out,
                            SioType::ConnectError,
                            p.nsp,
                            None,
                            "{\"message\":\"too many namespaces\"}",
                        );
                        self.sio_send(session, &out);
                        return;
                    }
                    sio.namespaces.push(p.nsp.into());
                }
                let mut out = String::new();
                match sio.eio {
                    EioVersion::V4 => {
                        let data = format!("{{\"sid\":\"{}\"}}", sio.sid);
                        socketio::encode(&mut out, SioType::Connect, p.nsp, None, &data);
                    }
                    EioVersion::V3 => socketio::encode(&mut out, SioType::Connect, p.nsp, None, ""),
                }
                self.sio_send(session, &out);
            }
            SioType::Disconnect => sio.namespaces.retain(|n| **n != *p.nsp),
            SioType::Event if joined => {
                let (nsp, id, data) = (p.nsp.to_string(), p.id, p.data.to_string());
                self.sio_event(session, &nsp, id, &data);
            }
            SioType::BinaryEvent if joined => {
                sio.partial = Some(Box::new(PartialBinary {
                    ack: false,
                    nsp: p.nsp.into(),
                    id: p.id,
                    data: p.data.to_string(),
                    wanted: p.attachments,
                    got: Vec::new(),
                }));
                if p.attachments == 0 {
                    self.sio_attachments_done(session);
                }
            }
            SioType::BinaryAck => {
                // Acks of server-sent events: the server never asks for any; skip attachments.
                sio.partial = Some(Box::new(PartialBinary {
                    ack: true,
                    nsp: p.nsp.into(),
                    id: p.id,
                    data: String::new(),
                    wanted: p.attachments,
                    got: Vec::new(),
                }));
            }
            // Events for namespaces the client did not join, acks (the server asks for none)
            // and connect errors (server to client only) are ignored.
            _ => {}
        }
    }

    /// A client event: to the listeners, then the ack the client asked for (empty: it
    /// confirms the server took the event).
    fn sio_event(&mut self, session: u32, nsp: &str, id: Option<u64>, data: &str) {
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
        if let Some(id) = id {
            let mut out = String::new();
            socketio::encode(&mut out, SioType::Ack, nsp, Some(id), "[]");
            self.sio_send(session, &out);
        }
    }

    /// A binary message: the next attachment of a binary event.
    fn sio_attachment(&mut self, session: u32, data: Vec<u8>) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        let Some(partial) = sio.partial.as_mut() else {
            return;
        };
        partial.got.push(data);
        if partial.got.len() >= partial.wanted {
            self.sio_attachments_done(session);
        }
    }

    fn sio_attachments_done(&mut self, session: u32) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        let Some(p) = sio.partial.take() else { return };
        if !p.ack {
            let text = socketio::fill_placeholders(&p.data, &p.got);
            self.sio_event(session, &p.nsp, p.id, &text);
        }
    }

    /// A push for a Socket.IO socket: an event on the default namespace if the client joined
    /// it, else on the first namespace it joined. Returns whether it was sent.
    pub(super) fn sio_push(&mut self, slot: u32, endpoint: u8, text: &str) -> bool {
        let Some(t) = &self.shared.transcoders[endpoint as usize] else {
            return false;
        };
        let Some(data) = t.outbound(text) else {
            return false;
        };
        let Some(sio) = self.sio_state(slot) else {
            return false;
        };
        let Some(nsp) = sio.push_namespace() else {
            return false;
        };
        let mut out = String::with_capacity(data.len() + 8);
        socketio::encode(&mut out, SioType::Event, nsp, None, &data);
        self.sio_send(slot, &out)
    }

    /// Send one Engine.IO packet (type digit included) to a session, over whichever transport
    /// it has now. Returns false if it could not be queued.
    pub(super) fn sio_send(&mut self, session: u32, packet: &str) -> bool {
        let c = &mut self.conns[session as usize];
        match &mut c.state {
            ConnState::Open { .. } => self.ws_send_text(session, packet),
            ConnState::Polling { meta, .. } => {
                let Some(sio) = meta.sio.as_mut() else {
                    return false;
                };
                if let Some((w, wgen, true)) = sio.ws {
                    if self.conns.get(w as usize).is_some_and(|c| c.gen == wgen) {
                        return self.ws_send_text(w, packet);
                    }
                    return false;
                }
                let limits = &self.policy.config.socketio;
                if sio.queue.len() >= limits.max_buffered_packets
                    || sio.queue.bytes() + packet.len() > self.limits.max_outbound_bytes
                {
                    ShardStats::inc(&self.shared.stats[self.id].sio_dropped_packets);
                    return false;
                }
                sio.queue.push(packet.into());
                self.mark_dirty(session);
                true
            }
            _ => false,
        }
    }

    /// One text frame on an open WebSocket (closed as a slow consumer over its limit).
    pub(super) fn ws_send_text(&mut self, slot: u32, text: &str) -> bool {
        let max_out = self.limits.max_outbound_bytes;
        let c = &mut self.conns[slot as usize];
        if c.has(super::conn::flag::CLOSE_AFTER_FLUSH) {
            return false;
        }
        let before = c.queued_bytes();
        let ConnState::Open { ws, .. } = &mut c.state else {
            return false;
        };
        ws.encode_message(
            &mut self.zlib,
            &mut c.out,
            MessageKind::Text,
            text.as_bytes(),
        );
        if c.over_outbound_limit(before, max_out) {
            self.close_slow_consumer(slot);
            false
        } else {
            self.mark_dirty(slot);
            true
        }
    }

    /// A malformed packet: the session is closed (as socket.io servers do).
    fn sio_protocol_error(&mut self, session: u32) {
        ShardStats::inc(&self.shared.stats[self.id].protocol_errors);
        self.end_socket(session, CloseReason::MalformedSocketIo);
    }

    /// The session (login) of socket `slot` ended (`why`: terminated or expired). A
    /// Socket.IO client is told first, as socket.io's `socket.disconnect(true)` does: a
    /// DISCONNECT for every namespace it joined, so that it reports `io server disconnect`
    /// and does not reconnect (it would only be refused). Then the socket ends: a WebSocket
    /// with the close frame, a polling session with its close packet.
    pub(super) fn end_session(&mut self, slot: u32, why: CloseReason) {
        // An upgrade WebSocket speaks for its polling session.
        let slot = match self.sio_state(slot).and_then(|s| s.transport_of) {
            Some((v, vgen)) if self.conns.get(v as usize).is_some_and(|c| c.gen == vgen) => v,
            Some(_) => {
                self.close_with(slot, why);
                return;
            }
            None => slot,
        };
        match &self.conns[slot as usize].state {
            ConnState::Open { meta, .. } => {
                let farewell = meta
                    .sio
                    .as_ref()
                    .map(|s| s.disconnect_packets())
                    .unwrap_or_default();
                self.ws_send_final(slot, &farewell);
                self.close_with(slot, why);
            }
            ConnState::Polling { .. } => self.end_poll_session(slot, why),
            _ => {}
        }
    }

    /// The last text frames of a WebSocket before its close frame (not subject to the
    /// outbound limit: a few bytes that must not turn the close into a slow-consumer one).
    pub(super) fn ws_send_final(&mut self, slot: u32, packets: &[Box<str>]) {
        let c = &mut self.conns[slot as usize];
        if packets.is_empty() || c.has(super::conn::flag::CLOSE_AFTER_FLUSH) {
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

    /// End a socket whatever it is: an open WebSocket gets a close frame, a polling session
    /// its close packet. The client is not told why: it reconnects (drain, idle, protocol
    /// errors, its own close packet).
    pub(super) fn end_socket(&mut self, slot: u32, why: CloseReason) {
        match self.conns[slot as usize].state {
            ConnState::Open { .. } => self.close_with(slot, why),
            ConnState::Polling { .. } => self.close_poll_session(slot),
            _ => {}
        }
    }

    /// After the 101 of a direct `socketio` WebSocket: the open packet (and, for v3, the
    /// default namespace's connect).
    pub(super) fn sio_greet(&mut self, slot: u32) {
        let Some(sio) = self.sio_state(slot) else {
            return;
        };
        if sio.transport_of.is_some() {
            return;
        }
        let (eio, sid) = (sio.eio, sio.sid.clone());
        let open = self.open_packet(eio, &sid, false);
        self.ws_send_text(slot, &open);
        if eio == EioVersion::V3 {
            self.ws_send_text(slot, "40");
        }
    }

    /// The keepalive of a `socketio` WebSocket: Engine.IO v4 pings from the server (a text
    /// `2`); v3 clients ping themselves, so they (and upgrade transports) get protocol pings.
    /// Returns false when a WebSocket ping should be sent instead.
    pub(super) fn sio_ping(&mut self, slot: u32) -> bool {
        match self.sio_state(slot) {
            Some(s) if s.eio == EioVersion::V4 && s.transport_of.is_none() => {
                self.ws_send_text(slot, "2");
                true
            }
            _ => false,
        }
    }

    /// A WebSocket with Socket.IO state is closing: if it carried a polling session, that
    /// session falls back to polling (probe not finished) or ends (upgraded).
    pub(super) fn sio_transport_closed(&mut self, slot: u32) {
        let Some(sio) = self.sio_state(slot) else {
            return;
        };
        let Some((v, vgen)) = sio.transport_of else {
            return;
        };
        let wgen = self.conns[slot as usize].gen;
        if self.conns.get(v as usize).is_none_or(|c| c.gen != vgen) {
            return;
        }
        let Some(vs) = self.sio_state(v) else { return };
        match vs.ws {
            Some((w, g, true)) if w == slot && g == wgen => self.close_poll_session(v),
            Some((w, g, false)) if w == slot && g == wgen => vs.ws = None,
            _ => {}
        }
    }
}

impl SioState {
    /// Has the client joined `nsp`? Socket.IO v2 (Engine.IO v3) clients are in the default
    /// namespace from the start, without asking.
    pub fn joined(&self, nsp: &str) -> bool {
        (nsp == "/" && self.eio == EioVersion::V3) || self.namespaces.iter().any(|n| **n == *nsp)
    }

    /// The Socket.IO DISCONNECT packets (`41`, `41/chat,`: the same in both protocol
    /// versions) for every namespace the client is in.
    pub fn disconnect_packets(&self) -> Vec<Box<str>> {
        let mut out = Vec::with_capacity(self.namespaces.len() + 1);
        let implicit_root =
            self.eio == EioVersion::V3 && !self.namespaces.iter().any(|n| &**n == "/");
        let nsps = implicit_root
            .then_some("/")
            .into_iter()
            .chain(self.namespaces.iter().map(|n| &**n));
        for nsp in nsps {
            let mut p = String::with_capacity(nsp.len() + 3);
            socketio::encode(&mut p, SioType::Disconnect, nsp, None, "");
            out.push(p.into_boxed_str());
        }
        out
    }

    /// Where a push goes: the default namespace if the client is in it (always, for v2
    /// clients: their protocol joins it implicitly), else the first namespace it joined.
    pub fn push_namespace(&self) -> Option<&str> {
        if self.joined("/") {
            Some("/")
        } else {
            self.namespaces.first().map(|n| &**n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(eio: EioVersion, namespaces: &[&str]) -> SioState {
        SioState {
            eio,
            sid: "s".into(),
            namespaces: namespaces.iter().map(|&n| n.into()).collect(),
            transport_of: None,
            ws: None,
            queue: Default::default(),
            waiting: None,
            last_seen: 0,
            ping_at: 0,
            partial: None,
            ending: None,
        }
    }

    #[test]
    fn disconnect_packets_name_every_joined_namespace() {
        let got = |s: SioState| {
            s.disconnect_packets()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(got(state(EioVersion::V4, &["/"])), ["41"]);
        assert_eq!(
            got(state(EioVersion::V4, &["/chat", "/"])),
            ["41/chat,", "41"]
        );
        assert_eq!(got(state(EioVersion::V4, &[])), Vec::<String>::new());
        // Socket.IO 2 clients are in "/" without asking.
        assert_eq!(got(state(EioVersion::V3, &[])), ["41"]);
        assert_eq!(got(state(EioVersion::V3, &["/chat"])), ["41", "41/chat,"]);
        assert_eq!(
            got(state(EioVersion::V3, &["/", "/chat"])),
            ["41", "41/chat,"]
        );
    }
}

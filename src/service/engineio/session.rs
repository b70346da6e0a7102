//! The session's state, and what its driver calls: transports, polling requests, timers,
//! pushes, the end.
use super::actions::{Action, Actions, Stat};
use super::packets::PartialBinary;
use super::queue::PacketQueue;
use super::recovery::Pid;
use super::Settings;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::{self, BodyFormat, EioVersion, Packet, PacketType};
use crate::service::history::Position;
use std::borrow::Cow;

/// One Engine.IO / Socket.IO session. See the [module](super) for the call order.
pub struct Session<T> {
    pub(super) eio: EioVersion,
    pub(super) sid: Box<str>,
    /// Namespaces the client joined ("/" is the default one).
    pub(super) namespaces: Vec<Namespace>,
    /// A binary event or ack waiting for its attachments.
    pub(super) partial: Option<Box<PartialBinary>>,
    pub(super) transport: Transport<T>,
    /// Connection state recovery is on (an Engine.IO v4 session of a history endpoint):
    /// private session ids, offsets on pushed events, restores (see `recovery`).
    pub(super) recovery: bool,
    /// Engine.IO v3 clients that opted in to recovery (`recovery::v3_resume`): pushed
    /// events carry their offset as last argument, as with `recovery`.
    pub(super) offsets: bool,
    /// If the session ends now, its client may come back for it (its namespaces are parked,
    /// as socket.io persists sessions that end with "transport close", "ping timeout"...).
    /// False once its login ended, the node drains, or the client sent garbage.
    pub(super) parkable: bool,
}

/// A namespace the client joined.
pub(super) struct Namespace {
    pub(super) name: Box<str>,
    /// Its private session (recovery only).
    pub(super) private: Option<Box<PrivateSession>>,
}

/// What a namespace's session is under recovery: its private id, where it started, and the
/// socket id it was given if a restore gave back an earlier one (else the session's sid).
pub(super) struct PrivateSession {
    pub(super) pid: Pid,
    pub(super) start: Position,
    pub(super) sid: Option<Box<str>>,
}

/// How the session reaches its client.
pub(super) enum Transport<T> {
    /// Its own WebSocket (`transport=websocket` from the start).
    WebSocket(T),
    /// Long-polling, possibly upgrading (boxed: most sessions are WebSockets).
    Polling(Box<Polling<T>>),
    /// Closed: nothing comes out of it any more.
    Closed,
}

/// A long-polling session's state.
pub(super) struct Polling<T> {
    /// Packets waiting for the next GET (bounded).
    pub(super) queue: PacketQueue,
    /// The GET waiting for packets (held until the polling timeout).
    pub(super) held: Option<T>,
    pub(super) ws: Upgrade<T>,
    /// When the client last sent a request (ms).
    pub(super) last_seen: u64,
    /// Engine.IO v4: when the next server ping is due (ms).
    pub(super) ping_at: u64,
    /// The login ended: waiting for the client to take its last packets.
    pub(super) ending: Option<Ending>,
}

/// The WebSocket of a polling session, named after what the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upgrade<T> {
    /// No WebSocket: everything goes through GETs.
    None,
    /// The WebSocket `T` may probe; waiting for its upgrade packet (GETs still answered).
    AwaitingUpgradePacket(T),
    /// Upgraded: everything goes through WebSocket `T`; no more polling.
    Upgraded(T),
}

/// A session whose login ended (terminated or expired): its last packets (Socket.IO
/// disconnects, then the close packet) wait for the next GETs until `until` (ms), then it
/// is freed. Its WebSocket is closed with `why`.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub until: u64,
    pub why: CloseReason,
}

/// Why a polling request is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Another protocol version, polling after the upgrade finished, a malformed body, or
    /// a session that does not poll.
    Refused,
}

/// A packet decoded from a POST body, owned (the body is decoded whole before handling).
enum Owned {
    Text(PacketType, String),
    Binary(Vec<u8>),
}

impl<T: Copy + Eq> Session<T> {
    /// A session on its own WebSocket `ws`; call [`Session::greet`] once its 101 is written.
    pub fn websocket(eio: EioVersion, sid: Box<str>, ws: T) -> Self {
        Session {
            eio,
            sid,
            namespaces: Vec::new(),
            partial: None,
            transport: Transport::WebSocket(ws),
            recovery: false,
            offsets: false,
            parkable: true,
        }
    }

    /// A long-polling session opened by the GET `handshake` at `now` (ms): that GET is
    /// answered with the open packet (v3: the default namespace's connect follows on the
    /// next GET, as socket.io 2 does), and the first deadline is scheduled.
    pub fn polling(
        eio: EioVersion,
        sid: Box<str>,
        now: u64,
        handshake: T,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) -> Self {
        let mut queue = PacketQueue::default();
        if eio == EioVersion::V3 {
            queue.push("40".into());
        }
        let s = Session {
            eio,
            sid,
            namespaces: Vec::new(),
            partial: None,
            recovery: false,
            offsets: false,
            parkable: true,
            transport: Transport::Polling(Box::new(Polling {
                queue,
                held: None,
                ws: Upgrade::None,
                last_seen: now,
                ping_at: now + cfg.ping_interval_ms,
                ending: None,
            })),
        };
        s.schedule(cfg, out);
        let open = s.open_packet(true, cfg).into_boxed_str();
        out.push(Action::Answer {
            request: handshake,
            packets: vec![open],
        });
        s
    }

    fn open_packet(&self, upgrades: bool, cfg: &Settings) -> String {
        engineio::open_packet(
            self.eio,
            &self.sid,
            upgrades,
            cfg.ping_interval_ms,
            cfg.ping_timeout_ms,
            cfg.max_http_body_bytes,
        )
    }

    /// After the 101 of a session's own WebSocket: the open packet (v3: and the default
    /// namespace's connect).
    pub fn greet(&self, cfg: &Settings, out: &mut Actions<T>) {
        let Transport::WebSocket(ws) = self.transport else {
            return;
        };
        let open = self.open_packet(false, cfg);
        out.push(Action::Send {
            to: ws,
            packet: Cow::Owned(open),
        });
        if self.eio == EioVersion::V3 {
            out.push(Action::Send {
                to: ws,
                packet: Cow::Borrowed("40"),
            });
        }
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    pub fn eio(&self) -> EioVersion {
        self.eio
    }

    fn polling_state(&self) -> Option<&Polling<T>> {
        match &self.transport {
            Transport::Polling(p) => Some(p),
            _ => None,
        }
    }

    /// A polling session (upgraded or not).
    pub fn is_polling(&self) -> bool {
        self.polling_state().is_some()
    }

    /// The login ended; the session only waits to hand its client its last packets.
    pub fn is_ending(&self) -> bool {
        self.ending_state().is_some()
    }

    pub(super) fn ending_state(&self) -> Option<Ending> {
        self.polling_state().and_then(|p| p.ending)
    }

    /// Is `request` the GET this session holds?
    pub fn holds(&self, request: T) -> bool {
        self.polling_state()
            .is_some_and(|p| p.held == Some(request))
    }

    /// Is WebSocket `ws` the one this polling session upgrades (or upgraded) to?
    pub fn is_websocket_of(&self, ws: T) -> bool {
        self.polling_state().is_some_and(
            |p| matches!(p.ws, Upgrade::AwaitingUpgradePacket(w) | Upgrade::Upgraded(w) if w == ws),
        )
    }

    // ----- transports -----

    /// A WebSocket `ws` (protocol `eio`) opened to upgrade this polling session: its packets
    /// belong to the session from now on (pass it as `via`). False (refuse it) if the
    /// session does not poll, already has a WebSocket, or speaks another version.
    pub fn attach_websocket(&mut self, ws: T, eio: EioVersion) -> bool {
        let same = eio == self.eio;
        match &mut self.transport {
            Transport::Polling(p) if same && p.ws == Upgrade::None => {
                p.ws = Upgrade::AwaitingUpgradePacket(ws);
                true
            }
            _ => false,
        }
    }

    /// WebSocket `ws` of this polling session is closing: a probe not finished falls back
    /// to polling; an upgraded session ends with it.
    pub fn websocket_closed(&mut self, ws: T, out: &mut Actions<T>) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        match p.ws {
            Upgrade::Upgraded(w) if w == ws => {
                self.close_session(Vec::new(), CloseReason::Normal, out)
            }
            Upgrade::AwaitingUpgradePacket(w) if w == ws => p.ws = Upgrade::None,
            _ => {}
        }
    }

    // ----- polling requests -----

    /// Checks every polling request passes; the client is alive at `now`.
    fn accept_request(&mut self, now: u64, eio: EioVersion) -> Result<(), BadRequest> {
        let same = eio == self.eio;
        match &mut self.transport {
            Transport::Polling(p) if same && !matches!(p.ws, Upgrade::Upgraded(_)) => {
                p.last_seen = now;
                Ok(())
            }
            _ => Err(BadRequest::Refused),
        }
    }

    /// A GET (`request`, protocol `eio`) at `now` (ms): a GET held before is answered (its
    /// client went away or retried), then this one is answered at once with what is queued,
    /// or held ([`Action::Hold`]).
    pub fn get(
        &mut self,
        now: u64,
        request: T,
        eio: EioVersion,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) -> Result<(), BadRequest> {
        self.accept_request(now, eio)?;
        self.release_held(out);
        let Transport::Polling(p) = &mut self.transport else {
            // The held GET took the ended session's close packet.
            return Ok(());
        };
        if !p.queue.is_empty() {
            let queued = p.queue.take();
            let closing = has_close(&queued);
            out.push(Action::Answer {
                request,
                packets: queued,
            });
            self.ending_step(closing, out);
            return Ok(());
        }
        p.held = Some(request);
        out.push(Action::Hold {
            request,
            until: now + cfg.polling_timeout_ms,
        });
        Ok(())
    }

    /// A POST (protocol `eio`, body `format`) at `now` (ms): its packets, in order. The
    /// driver answers `ok` when this returns Ok, 400 else (nothing of a malformed body is
    /// handled).
    pub fn post(
        &mut self,
        now: u64,
        eio: EioVersion,
        format: BodyFormat,
        body: &[u8],
        cfg: &Settings,
        out: &mut Actions<T>,
    ) -> Result<(), BadRequest> {
        self.accept_request(now, eio)?;
        let mut packets = Vec::new();
        engineio::decode_payload(eio, format, body, &mut |p| {
            packets.push(match p {
                Packet::Text(t, d) => Owned::Text(t, d.to_string()),
                Packet::Binary(b) => Owned::Binary(b),
            })
        })
        .map_err(|_| BadRequest::Refused)?;
        for p in packets {
            // A packet may end the session (close packet, protocol error).
            if !self.is_polling() {
                break;
            }
            match p {
                Owned::Text(t, d) => self.packet(None, Packet::Text(t, &d), cfg, out),
                Owned::Binary(b) => self.packet(None, Packet::Binary(b), cfg, out),
            }
        }
        Ok(())
    }

    /// Answer the held GET (if any) now, with what is queued or a noop: its polling timeout
    /// came, or a newer request supersedes it.
    pub fn release_held(&mut self, out: &mut Actions<T>) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        let Some(request) = p.held.take() else {
            return;
        };
        let mut queued = p.queue.take();
        if queued.is_empty() {
            queued.push("6".into());
        }
        let closing = has_close(&queued);
        out.push(Action::Answer {
            request,
            packets: queued,
        });
        self.ending_step(closing, out);
    }

    /// The connection holding GET `request` went away: nothing is answered into it (what
    /// is queued waits for the next GET).
    pub fn held_closed(&mut self, request: T) {
        if let Transport::Polling(p) = &mut self.transport {
            if p.held == Some(request) {
                p.held = None;
            }
        }
    }

    /// After [`Action::FlushLater`]: answer the held GET with what was queued.
    pub fn flush(&mut self, out: &mut Actions<T>) {
        match &self.transport {
            Transport::Polling(p) if !p.queue.is_empty() && p.held.is_some() => {
                self.release_held(out)
            }
            _ => {}
        }
    }

    /// Release the held GET with a noop; with none held, make the next GET return at once
    /// (the client is pausing polling for an upgrade and waits for its last poll to end).
    pub(super) fn release_or_noop_held(&mut self, out: &mut Actions<T>) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        if p.held.is_none() {
            if p.queue.is_empty() {
                p.queue.push("6".into());
            }
            return;
        }
        self.release_held(out);
    }

    /// An ended session's packets were answered (`closing`: with its close packet): after
    /// its DISCONNECTs, its close packet waits for the next GET; after the close packet, the
    /// session is gone.
    fn ending_step(&mut self, closing: bool, out: &mut Actions<T>) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        let Some(e) = p.ending else { return };
        if closing {
            self.close_session(Vec::new(), e.why, out);
        } else if !p.queue.iter().any(|q| q == "1") {
            p.queue.push("1".into());
        }
    }

    // ----- from the server -----

    /// Send one Engine.IO packet (type digit included) over whichever transport the session
    /// has now. False if it was dropped (a polling queue over its bounds: counted; with
    /// recovery, the session is dropped too, see [`Session::drop_transport`]).
    pub fn send(
        &mut self,
        packet: Cow<'static, str>,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) -> bool {
        let p = match &mut self.transport {
            Transport::WebSocket(ws) => {
                out.push(Action::Send { to: *ws, packet });
                return true;
            }
            Transport::Polling(p) => p,
            Transport::Closed => return false,
        };
        if let Upgrade::Upgraded(ws) = p.ws {
            out.push(Action::Send { to: ws, packet });
            return true;
        }
        if p.queue.len() < cfg.max_buffered_packets
            && p.queue.bytes() + packet.len() <= cfg.max_outbound_bytes
        {
            p.queue.push(packet.into_owned().into_boxed_str());
            out.push(Action::FlushLater);
            return true;
        }
        out.push(Action::Count(Stat::DroppedPacket));
        if self.recovery || self.offsets {
            // Not a silent gap: the client reconnects and recovers from its last event.
            self.drop_transport(out);
        }
        false
    }

    /// The WebSocket keepalive of a session's own WebSocket is due: Engine.IO v4 pings from
    /// the server (a text `2`); v3 clients ping themselves. False: send a WebSocket ping.
    pub fn ping(&mut self, out: &mut Actions<T>) -> bool {
        match self.transport {
            Transport::WebSocket(ws) if self.eio == EioVersion::V4 => {
                out.push(Action::Send {
                    to: ws,
                    packet: Cow::Borrowed("2"),
                });
                true
            }
            _ => false,
        }
    }

    /// A polling session's deadline ([`Action::Schedule`]) came at `now` (ms): the end of an
    /// ended session's window, a silent client, a v4 ping.
    pub fn handle_timeout(&mut self, now: u64, cfg: &Settings, out: &mut Actions<T>) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        if let Some(e) = p.ending {
            // Ended, and its client did not come for its last packets.
            if now >= e.until {
                self.close_session(Vec::new(), e.why, out);
            } else {
                self.schedule(cfg, out);
            }
            return;
        }
        let upgraded = matches!(p.ws, Upgrade::Upgraded(_));
        if !upgraded && p.held.is_none() && now >= p.last_seen + cfg.dead_after_ms() {
            out.push(Action::Count(Stat::ClosedIdle));
            self.close_session(Vec::new(), CloseReason::Normal, out);
            return;
        }
        if upgraded || p.held.is_some() {
            // Alive through its WebSocket or its held request.
            p.last_seen = now;
        }
        if self.eio == EioVersion::V4 && now >= p.ping_at {
            p.ping_at = now + cfg.ping_interval_ms;
            out.push(Action::Count(Stat::PingSent));
            self.send(Cow::Borrowed("2"), cfg, out);
        }
        self.schedule(cfg, out);
    }

    /// A polling session's next deadline: its v4 ping, its liveness, or the end of its
    /// ending window.
    fn schedule(&self, cfg: &Settings, out: &mut Actions<T>) {
        let Some(p) = self.polling_state() else {
            return;
        };
        let at = match p.ending {
            Some(e) => e.until,
            None if self.eio == EioVersion::V4 => {
                (p.last_seen + cfg.dead_after_ms()).min(p.ping_at)
            }
            None => p.last_seen + cfg.dead_after_ms(),
        };
        out.push(Action::Schedule { at });
    }

    // ----- the end -----

    /// The login of the session ended at `now` (`why`: terminated or expired). The client
    /// is told first, as socket.io's `socket.disconnect(true)` does: a DISCONNECT for every
    /// namespace it joined, so that it reports `io server disconnect` and does not reconnect
    /// (it would only be refused). Then the session ends: a WebSocket with its close frame
    /// `why`; a polling session, not upgraded, hands its DISCONNECTs to its held GET or the
    /// next one (or to the WebSocket it is upgrading to), and its close packet: Engine.IO v4
    /// with the GET after that (as socket.io does: socket.io-client 4 handles a DISCONNECT a
    /// tick after the payload that carried it, after a close packet in the same payload,
    /// and would reconnect on "transport close"), v3 in the same answer. Meanwhile, for a
    /// ping timeout at most, the session is no socket ([`Action::Retire`]) and takes nothing
    /// from its client but its close packet (or an upgrade).
    pub fn end(&mut self, now: u64, why: CloseReason, cfg: &Settings, out: &mut Actions<T>) {
        self.parkable = false;
        let farewell = self.disconnect_packets();
        let p = match &mut self.transport {
            Transport::WebSocket(ws) => {
                out.push(Action::Close {
                    to: *ws,
                    last: farewell,
                    why,
                });
                return;
            }
            Transport::Polling(p) if p.ending.is_none() => p,
            _ => return,
        };
        if matches!(p.ws, Upgrade::Upgraded(_)) {
            self.close_session(farewell, why, out);
            return;
        }
        for f in farewell {
            p.queue.push(f);
        }
        // socket.io-client 2 handles a payload's packets in order: the close packet may come
        // with the DISCONNECTs. (With no namespace joined, it is all there is.)
        let close_packet_now = self.eio == EioVersion::V3 || p.queue.is_empty();
        self.hand_over_last(close_packet_now, now, why, cfg, out);
    }

    /// Retire a polling session and let its client take what is queued (and the close
    /// packet: now, or after the rest with `ending_step`) with its next GETs, or over the
    /// WebSocket it is upgrading to, until the ending window is over.
    fn hand_over_last(
        &mut self,
        close_packet_now: bool,
        now: u64,
        why: CloseReason,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) {
        let Transport::Polling(p) = &mut self.transport else {
            return;
        };
        out.push(Action::Retire);
        if close_packet_now {
            p.queue.push("1".into());
        }
        p.ending = Some(Ending {
            until: now + cfg.ping_timeout_ms.max(1),
            why,
        });
        self.release_held(out);
        self.schedule(cfg, out);
    }

    /// The node drains: end the session so that the client reconnects elsewhere. A polling
    /// session whose probe was answered first lets the client finish its upgrade (bounded
    /// by the ping timeout): socket.io-client pauses polling after the probe answer and
    /// sends the upgrade packet once paused; closing the probe WebSocket in between leaves
    /// it paused on a transport that never resumes, until its heartbeat timeout. Its close
    /// packet then goes over the upgraded WebSocket, which closes with `why`. Otherwise as
    /// [`Session::close`].
    pub fn shut_down(&mut self, now: u64, why: CloseReason, cfg: &Settings, out: &mut Actions<T>) {
        // The node goes away, and its parked records with it.
        self.parkable = false;
        if let Transport::Polling(p) = &mut self.transport {
            if p.ending.is_some() {
                // Already handing over its last packets (and bounded by their window).
                return;
            }
            if matches!(p.ws, Upgrade::AwaitingUpgradePacket(_)) {
                self.hand_over_last(true, now, why, cfg, out);
                return;
            }
        }
        self.close(why, out);
    }

    /// End the session without telling the client why (it reconnects: a drain, its own
    /// close packet, a protocol error): its own WebSocket with the close frame `why`; a
    /// polling session with its close packet to a held GET, and a normal close of its
    /// WebSocket.
    pub fn close(&mut self, why: CloseReason, out: &mut Actions<T>) {
        if why == CloseReason::ShuttingDown {
            // The node goes away, and its parked records with it.
            self.parkable = false;
        }
        match self.transport {
            Transport::WebSocket(ws) => out.push(Action::Close {
                to: ws,
                last: Vec::new(),
                why,
            }),
            Transport::Polling(_) => self.close_session(Vec::new(), CloseReason::Normal, out),
            Transport::Closed => {}
        }
    }

    /// Close a polling session: its namespaces parked if it may be recovered, its WebSocket
    /// (`farewell` before the close frame `why` if upgraded), what is queued then `farewell`
    /// and the close packet to a held GET; retire it (unless it ended before) and free it.
    pub(super) fn close_session(
        &mut self,
        mut farewell: Vec<Box<str>>,
        why: CloseReason,
        out: &mut Actions<T>,
    ) {
        if !self.is_polling() {
            return;
        }
        self.park(out);
        let Transport::Polling(p) = std::mem::replace(&mut self.transport, Transport::Closed)
        else {
            return;
        };
        let Polling {
            mut queue,
            held,
            ws,
            ending,
            ..
        } = *p;
        match ws {
            Upgrade::Upgraded(to) => {
                // (An upgraded session holds no GET: the upgrade answered it.)
                let last = match held {
                    Some(_) => farewell.clone(),
                    None => std::mem::take(&mut farewell),
                };
                out.push(Action::Close { to, last, why });
            }
            Upgrade::AwaitingUpgradePacket(to) => out.push(Action::Close {
                to,
                last: Vec::new(),
                why,
            }),
            Upgrade::None => {}
        }
        if let Some(request) = held {
            let mut packets = queue.take();
            packets.extend(farewell);
            packets.push("1".into());
            out.push(Action::Answer { request, packets });
        }
        if ending.is_none() {
            out.push(Action::Retire);
        }
        out.push(Action::Free);
    }

    /// A malformed packet: the session is closed (as socket.io servers do).
    pub(super) fn protocol_error(&mut self, out: &mut Actions<T>) {
        self.parkable = false;
        out.push(Action::Count(Stat::ProtocolError));
        self.close(CloseReason::MalformedSocketIo, out);
    }
}

fn has_close(packets: &[Box<str>]) -> bool {
    packets.iter().any(|p| &**p == "1")
}

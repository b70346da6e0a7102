//! What the client sends: Engine.IO packets (pings, the upgrade, messages, close) and the
//! Socket.IO packets in messages (namespaces, events, acks, binary attachments).
use super::actions::{Action, Actions};
use super::recovery::{Claim, Pid};
use super::restore::connect_answer;
use super::session::{Namespace, Session, Transport, Upgrade};
use super::{Settings, MAX_NAMESPACES};
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::{self, EioVersion, Packet, PacketType};
use crate::protocol::socketio::{self, SioType};
use crate::service::history::Position;
use std::borrow::Cow;

/// A binary Socket.IO packet whose attachments are still arriving.
pub struct PartialBinary {
    pub ack: bool,
    pub nsp: Box<str>,
    pub id: Option<u64>,
    pub data: String,
    pub wanted: usize,
    pub got: Vec<Vec<u8>>,
}

impl<T: Copy + Eq> Session<T> {
    /// A WebSocket frame (text, or `binary`) for this session: on its own WebSocket (`via`
    /// None) or on the WebSocket `via` it is upgrading to. Text is valid UTF-8 (checked by
    /// the WebSocket layer); a malformed packet closes the session.
    pub fn frame(
        &mut self,
        via: Option<T>,
        binary: bool,
        payload: &[u8],
        cfg: &Settings,
        out: &mut Actions<T>,
    ) {
        if binary {
            match engineio::decode_binary_frame(self.eio, payload) {
                Ok(data) => self.packet(via, Packet::Binary(data), cfg, out),
                Err(_) => self.protocol_error(out),
            }
            return;
        }
        let text = std::str::from_utf8(payload).unwrap_or("");
        match engineio::decode_text(text) {
            Ok(p) => self.packet(via, p, cfg, out),
            Err(_) => self.protocol_error(out),
        }
    }

    /// One Engine.IO packet from the client: from a POST or the session's own WebSocket
    /// (`via` None), or from the WebSocket `via` it is upgrading to.
    pub fn packet(&mut self, via: Option<T>, p: Packet<'_>, cfg: &Settings, out: &mut Actions<T>) {
        let ending = self.ending_state();
        let upgrading = via.is_some() && matches!(p, Packet::Text(PacketType::Ping, "probe"));
        if ending.is_some()
            && !upgrading
            && !matches!(p, Packet::Text(PacketType::Upgrade | PacketType::Close, _))
        {
            // An ended session only hands over its last packets (see `end`).
            return;
        }
        match p {
            Packet::Text(PacketType::Ping, data) => {
                if let (Some(w), "probe") = (via, data) {
                    // Upgrade probe: answer on the new transport, and release the held poll
                    // so that the client can pause polling.
                    out.push(Action::Send {
                        to: w,
                        packet: Cow::Borrowed("3probe"),
                    });
                    self.release_or_noop_held(out);
                } else {
                    self.send(Cow::Owned(format!("3{data}")), cfg, out);
                }
            }
            Packet::Text(PacketType::Upgrade, _) => self.upgrade(via, ending.map(|e| e.why), out),
            Packet::Text(PacketType::Message, text) => self.message(text, cfg, out),
            Packet::Binary(data) => self.attachment(data, cfg, out),
            Packet::Text(PacketType::Close, _) => self.close(CloseReason::Normal, out),
            Packet::Text(PacketType::Pong | PacketType::Noop | PacketType::Open, _) => {}
        }
    }

    /// The upgrade packet on WebSocket `via`: everything goes through it from now on (the
    /// held GET gets a noop, the queue goes to the WebSocket, noops left out). An ended
    /// session (`ending`) closes once those last packets are out.
    fn upgrade(&mut self, via: Option<T>, ending: Option<CloseReason>, out: &mut Actions<T>) {
        let (Some(w), Transport::Polling(p)) = (via, &mut self.transport) else {
            return;
        };
        if p.ws != Upgrade::AwaitingUpgradePacket(w) {
            return;
        }
        p.ws = Upgrade::Upgraded(w);
        let mut queued = p.queue.take();
        out.push(Action::Count(super::Stat::Upgrade));
        self.release_held(out);
        // Noops were for the polling transport only.
        queued.retain(|p| &**p != "6");
        out.push(Action::SendAll {
            to: w,
            packets: queued,
        });
        if let Some(why) = ending {
            // Those were the ended session's last packets.
            self.close_session(Vec::new(), why, out);
        }
    }

    /// A Socket.IO packet (the data of an Engine.IO message).
    fn message(&mut self, text: &str, cfg: &Settings, out: &mut Actions<T>) {
        let Ok(p) = socketio::parse(text) else {
            self.protocol_error(out);
            return;
        };
        let joined = self.joined(p.nsp);
        match p.kind {
            SioType::Connect => self.connect(p.nsp, p.data, cfg, out),
            SioType::Disconnect => self.namespaces.retain(|n| *n.name != *p.nsp),
            SioType::Event if joined => self.event(p.nsp, p.id, p.data.to_string(), cfg, out),
            SioType::BinaryEvent if joined => {
                self.partial = Some(Box::new(PartialBinary {
                    ack: false,
                    nsp: p.nsp.into(),
                    id: p.id,
                    data: p.data.to_string(),
                    wanted: p.attachments,
                    got: Vec::new(),
                }));
                if p.attachments == 0 {
                    self.attachments_done(cfg, out);
                }
            }
            SioType::BinaryAck => {
                // Acks of server-sent events: the server never asks for any; skip attachments.
                self.partial = Some(Box::new(PartialBinary {
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

    /// CONNECT to `nsp` (`data`: its auth payload): joined (at most [`MAX_NAMESPACES`]) and
    /// confirmed; with recovery, the driver is asked first what it restores
    /// ([`Action::Resume`], answered by [`Session::resumed`]).
    fn connect(&mut self, nsp: &str, data: &str, cfg: &Settings, out: &mut Actions<T>) {
        let mut packet = String::new();
        if !self.namespaces.iter().any(|n| *n.name == *nsp) {
            if self.namespaces.len() >= MAX_NAMESPACES {
                let error = "{\"message\":\"too many namespaces\"}";
                socketio::encode(&mut packet, SioType::ConnectError, nsp, None, error);
                self.send(Cow::Owned(packet), cfg, out);
                return;
            }
            if self.recovery {
                out.push(Action::Resume {
                    nsp: nsp.into(),
                    claim: Claim::parse(data),
                });
                return;
            }
            self.namespaces.push(Namespace {
                name: nsp.into(),
                private: None,
            });
        }
        match self.eio {
            EioVersion::V4 => {
                let sid = self.socket_id(nsp);
                let pid = self.pid_of(nsp).map(Pid::encode);
                connect_answer(&mut packet, nsp, sid, pid.as_deref());
            }
            EioVersion::V3 => socketio::encode(&mut packet, SioType::Connect, nsp, None, ""),
        }
        self.send(Cow::Owned(packet), cfg, out);
    }

    /// A client event: to the listeners, then the ack the client asked for (empty: it
    /// confirms the server took the event).
    fn event(
        &mut self,
        nsp: &str,
        id: Option<u64>,
        data: String,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) {
        out.push(Action::Event { data });
        if let Some(id) = id {
            let mut ack = String::new();
            socketio::encode(&mut ack, SioType::Ack, nsp, Some(id), "[]");
            self.send(Cow::Owned(ack), cfg, out);
        }
    }

    /// A binary message: the next attachment of a binary event.
    fn attachment(&mut self, data: Vec<u8>, cfg: &Settings, out: &mut Actions<T>) {
        let Some(partial) = self.partial.as_mut() else {
            return;
        };
        partial.got.push(data);
        if partial.got.len() >= partial.wanted {
            self.attachments_done(cfg, out);
        }
    }

    fn attachments_done(&mut self, cfg: &Settings, out: &mut Actions<T>) {
        let Some(p) = self.partial.take() else { return };
        if !p.ack {
            let text = socketio::fill_placeholders(&p.data, &p.got);
            self.event(&p.nsp, p.id, text, cfg, out);
        }
    }

    /// A push: an event on the default namespace if the client joined it, else on the first
    /// namespace it joined (none joined: false, nothing sent). `data` is the event's JSON
    /// array; `at`, its position in the user's history (with recovery, its offset is added
    /// as the event's last argument). False too if it was dropped.
    pub fn push(
        &mut self,
        data: &str,
        at: Option<Position>,
        cfg: &Settings,
        out: &mut Actions<T>,
    ) -> bool {
        let Some(nsp) = self.push_namespace() else {
            return false;
        };
        let packet = self.event_packet(nsp, data, at);
        self.send(Cow::Owned(packet), cfg, out)
    }

    /// Has the client joined `nsp`? Socket.IO v2 (Engine.IO v3) clients are in the default
    /// namespace from the start, without asking.
    pub fn joined(&self, nsp: &str) -> bool {
        (nsp == "/" && self.eio == EioVersion::V3)
            || self.namespaces.iter().any(|n| *n.name == *nsp)
    }

    /// The Socket.IO DISCONNECT packets (`41`, `41/chat,`: the same in both protocol
    /// versions) for every namespace the client is in.
    pub fn disconnect_packets(&self) -> Vec<Box<str>> {
        let implicit_root =
            self.eio == EioVersion::V3 && !self.namespaces.iter().any(|n| &*n.name == "/");
        let nsps = implicit_root
            .then_some("/")
            .into_iter()
            .chain(self.namespaces.iter().map(|n| &*n.name));
        let mut out = Vec::with_capacity(self.namespaces.len() + 1);
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
            self.namespaces.first().map(|n| &*n.name)
        }
    }
}

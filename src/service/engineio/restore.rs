//! Connection state recovery, the session's side (see `recovery` for the wire): the private
//! session of each namespace, the offset on pushed events, the answer to a restore, and
//! what is parked when the session ends abnormally.
use super::actions::{Action, Actions};
use super::recovery::{offset_string, ParkNamespace, Pid};
use super::session::{Namespace, PrivateSession, Session, Transport};
use super::{Settings, MAX_NAMESPACES};
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::EioVersion;
use crate::protocol::socketio::{self, SioType};
use crate::service::history::Position;
use std::borrow::Cow;

/// How the driver answers an [`Action::Resume`]: the namespace's private session, restored
/// or new, and what a restored one missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The claimed pid if its session was restored (that is what tells the client it was),
    /// a new one otherwise.
    pub pid: Pid,
    /// Where the namespace's session started (restored: the restored session's start).
    pub start: Position,
    /// Restored: the socket id the restored session had.
    pub sid: Option<Box<str>>,
    /// Restored: the events it missed (their JSON arrays), with their positions, in order.
    pub missed: Vec<(Position, String)>,
}

impl<T: Copy + Eq> Session<T> {
    /// Turn connection state recovery on (an Engine.IO v4 session of a history endpoint;
    /// Engine.IO v3 clients have no recovery protocol: nothing changes for them).
    pub fn enable_recovery(&mut self) {
        self.recovery = self.eio == EioVersion::V4;
    }

    pub fn recovery(&self) -> bool {
        self.recovery
    }

    /// An Engine.IO v3 session of a history endpoint whose client opted in
    /// (`recovery::v3_resume`): its pushed events carry their offset as last argument.
    pub fn enable_offsets(&mut self) {
        self.offsets = self.eio == EioVersion::V3;
    }

    pub fn offsets(&self) -> bool {
        self.offsets
    }

    /// The answer to [`Action::Resume`] for `nsp`, in the same step (no push may reach the
    /// session in between): joined, its CONNECT answered with the socket id and pid of `r`,
    /// then the missed events, before anything else is sent to the namespace.
    pub fn resumed(&mut self, nsp: &str, r: Resumed, cfg: &Settings, out: &mut Actions<T>) {
        let private = Box::new(PrivateSession {
            pid: r.pid,
            start: r.start,
            sid: r.sid,
        });
        let joined = self.namespaces.iter().position(|n| *n.name == *nsp);
        match joined {
            Some(i) => self.namespaces[i].private = Some(private),
            None if self.namespaces.len() >= MAX_NAMESPACES => {
                let mut packet = String::new();
                let error = "{\"message\":\"too many namespaces\"}";
                socketio::encode(&mut packet, SioType::ConnectError, nsp, None, error);
                self.send(Cow::Owned(packet), cfg, out);
                return;
            }
            None => self.namespaces.push(Namespace {
                name: nsp.into(),
                private: Some(private),
            }),
        }
        let mut packet = String::new();
        connect_answer(&mut packet, nsp, self.socket_id(nsp), Some(&r.pid.encode()));
        if !self.send(Cow::Owned(packet), cfg, out) {
            return;
        }
        for (at, data) in &r.missed {
            let packet = self.event_packet(nsp, data, Some(*at));
            if !self.send(Cow::Owned(packet), cfg, out) {
                // A polling queue full: the session was dropped; the client resumes from
                // the last event it got.
                return;
            }
        }
    }

    /// The session's own WebSocket closed (its client went away, a timeout, a slow
    /// consumer...): park its namespaces if it may be recovered. Polling sessions park
    /// when they close.
    pub fn transport_closed(&mut self, out: &mut Actions<T>) {
        if matches!(self.transport, Transport::WebSocket(_)) {
            self.park(out);
        }
    }

    /// Does namespace `nsp` have private session `pid` here?
    pub fn holds_pid(&self, nsp: &str, pid: Pid) -> bool {
        self.pid_of(nsp) == Some(pid)
    }

    /// End the session as if its transport was lost, so that its client recovers what it
    /// missed instead of missing it silently: its namespaces parked, the transport (if
    /// still there) closed normally. For a newer connection claiming this session (its
    /// client found this one dead before the server did), and for a polling queue full.
    pub fn drop_transport(&mut self, out: &mut Actions<T>) {
        self.park(out);
        self.close(CloseReason::Normal, out);
    }

    /// The session ends abnormally: [`Action::Park`] its namespaces that have a private
    /// session (once).
    pub(super) fn park(&mut self, out: &mut Actions<T>) {
        if !(self.recovery && self.parkable) {
            return;
        }
        self.parkable = false;
        let pushes_to = self.push_namespace();
        let parked: Vec<ParkNamespace> = self
            .namespaces
            .iter()
            .filter_map(|n| {
                let p = n.private.as_deref()?;
                Some(ParkNamespace {
                    pid: p.pid,
                    nsp: n.name.clone(),
                    sid: p.sid.clone().unwrap_or_else(|| self.sid.clone()),
                    start: p.start,
                    pushes: pushes_to == Some(&*n.name),
                })
            })
            .collect();
        if !parked.is_empty() {
            out.push(Action::Park(parked));
        }
    }

    /// The socket id of namespace `nsp`: a restored one, or the session's sid.
    pub(super) fn socket_id(&self, nsp: &str) -> &str {
        self.private(nsp)
            .and_then(|p| p.sid.as_deref())
            .unwrap_or(&self.sid)
    }

    pub(super) fn pid_of(&self, nsp: &str) -> Option<Pid> {
        self.private(nsp).map(|p| p.pid)
    }

    fn private(&self, nsp: &str) -> Option<&PrivateSession> {
        self.namespaces
            .iter()
            .find(|n| *n.name == *nsp)
            .and_then(|n| n.private.as_deref())
    }

    /// The event packet of a push to `nsp`: with recovery and a position, its offset is
    /// the last argument (`42["news",{"n":1},"<epoch>-<offset>"]`).
    pub(super) fn event_packet(&self, nsp: &str, data: &str, at: Option<Position>) -> String {
        let mut packet = String::with_capacity(data.len() + 48);
        let body = data.trim();
        let open = body.strip_suffix(']').map(str::trim_end);
        match (at, open) {
            (Some(at), Some(open)) if (self.recovery || self.offsets) && !open.ends_with('[') => {
                socketio::encode(&mut packet, SioType::Event, nsp, None, open);
                packet.push_str(",\"");
                packet.push_str(&offset_string(at));
                packet.push_str("\"]");
            }
            _ => socketio::encode(&mut packet, SioType::Event, nsp, None, data),
        }
        packet
    }
}

/// A v4 CONNECT answer: `{"sid":"..."}`, and `"pid"` with recovery. Both are ours (URL-safe
/// base64), nothing to escape.
pub(super) fn connect_answer(out: &mut String, nsp: &str, sid: &str, pid: Option<&str>) {
    let data = match pid {
        Some(pid) => format!("{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}"),
        None => format!("{{\"sid\":\"{sid}\"}}"),
    };
    socketio::encode(out, SioType::Connect, nsp, None, &data);
}

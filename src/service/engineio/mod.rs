//! Engine.IO / Socket.IO sessions, sans-IO: given what the client sent and the time, a
//! [`Session`] decides what goes out and returns it as [`Action`]s; its driver (the core
//! owning the session, `runtime::socketio` and `runtime::polling`) carries them out. No
//! I/O, no clock: time is passed in as `now`, milliseconds on any monotonic clock the
//! driver likes (the engine's wheel ticks times their length).
//!
//! # Transports
//! A session reaches its client over its own WebSocket (`transport=websocket`), or over
//! HTTP long-polling, possibly upgraded to a WebSocket later. Transports are handles of the
//! driver's choosing (`T: Copy + Eq`: the engine uses a connection's slot and generation):
//! the session's own WebSocket, the WebSocket upgrading a polling session, the HTTP
//! connection carrying a GET. The session never checks that a handle is still alive; the
//! driver skips actions for transports that are gone.
//!
//! # Call order
//! 1. Make it: [`Session::websocket`] then, once the 101 is written, [`Session::greet`]; or
//!    [`Session::polling`] with the handshake GET (it answers it). The sid is the driver's.
//!    On a history endpoint, [`Session::enable_recovery`] before anything reaches it.
//! 2. Feed it, in the order things happen:
//!    - WebSocket frames: [`Session::frame`] (`via`: the upgrading WebSocket, if it came
//!      on one), after [`Session::attach_websocket`] accepted that WebSocket; when a
//!      WebSocket of the session closes, [`Session::websocket_closed`];
//!    - polling requests: [`Session::get`], [`Session::post`] (refused: answer 400);
//!      a held GET's connection going away: [`Session::held_closed`];
//!    - from the server: [`Session::push`] (or [`Session::send`]), [`Session::end`] (the
//!      login ended), [`Session::close`] (drain, error); keepalive of its own WebSocket:
//!      [`Session::ping`];
//!    - time: at [`Action::Schedule`]'s time [`Session::handle_timeout`]; at a
//!      [`Action::Hold`]'s time [`Session::release_held`];
//!    - after [`Action::FlushLater`], once the turn's input is handled: [`Session::flush`].
//!    - recovery: an [`Action::Resume`] is answered with [`Session::resumed`] before
//!      anything else is handed to the session; when its own WebSocket closes,
//!      [`Session::transport_closed`] (it may [`Action::Park`] its namespaces).
//! 3. After every call, drain the [`Actions`] passed in, in order. After [`Action::Free`]
//!    the session is over: drop it.
//!
//! # States
//! A polling session waits for GETs (one held at a time, answered at once when packets
//! are queued); with an upgrade WebSocket attached it waits for that WebSocket's upgrade
//! packet (`AwaitingUpgradePacket`: the probe is answered on it and the held GET released
//! with a noop), then everything goes through the WebSocket (`Upgraded`). A session whose
//! login ended waits, a ping timeout at most, for its client to take its last packets
//! ([`Ending`]).
//!
//! # Recovery
//! Socket.IO v4 connection state recovery (see [`recovery`] for the wire): each namespace
//! of a session with recovery has a private session id; pushed events carry their offset;
//! a CONNECT claiming a pid asks the driver what it restores ([`Action::Resume`]); a session
//! that ends abnormally (transport closed or lost, ping timeout, the client's Engine.IO
//! close packet; not a DISCONNECT, the end of its login, a drain or a protocol error) asks
//! for its namespaces to be parked ([`Action::Park`]).
mod actions;
mod packets;
mod queue;
pub mod recovery;
mod restore;
mod session;
#[cfg(test)]
mod tests;

pub use actions::{Action, Actions, Stat};
pub use packets::PartialBinary;
pub use queue::PacketQueue;
pub use restore::Resumed;
pub use session::{BadRequest, Ending, Session};

use crate::config::{Limits, SocketIoConfig};
use base64::Engine as _;

/// Namespaces one client may join.
pub const MAX_NAMESPACES: usize = 32;

/// The limits and timings of sessions (from `[limits]` and `[socketio]`; read at each call,
/// so that a reload applies to sessions already open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `limits.ping_interval_secs`, in ms: v4 server pings; announced in the open packet.
    pub ping_interval_ms: u64,
    /// `socketio.ping_timeout_ms`: announced; bounds an ended session's last window.
    pub ping_timeout_ms: u64,
    /// `socketio.polling_timeout_ms`: how long a GET is held.
    pub polling_timeout_ms: u64,
    /// `socketio.max_buffered_packets`: packets a polling session queues at most.
    pub max_buffered_packets: usize,
    /// `limits.max_outbound_bytes`: bytes a polling session queues at most.
    pub max_outbound_bytes: usize,
    /// `socketio.max_http_body_bytes`: announced in the v4 open packet (`maxPayload`).
    pub max_http_body_bytes: usize,
}

impl Settings {
    pub fn new(limits: &Limits, sio: &SocketIoConfig) -> Settings {
        Settings {
            ping_interval_ms: limits.ping_interval_secs * 1000,
            ping_timeout_ms: sio.ping_timeout_ms,
            polling_timeout_ms: sio.polling_timeout_ms,
            max_buffered_packets: sio.max_buffered_packets,
            max_outbound_bytes: limits.max_outbound_bytes,
            max_http_body_bytes: sio.max_http_body_bytes,
        }
    }

    /// A polling client silent this long is gone: a ping interval plus the ping timeout.
    pub fn dead_after_ms(&self) -> u64 {
        self.ping_interval_ms + self.ping_timeout_ms
    }
}

/// 16 bytes as the 22 URL-safe base64 characters of an id (sids, private session ids).
pub fn encode_id(raw: [u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The 16 bytes of an id made by [`encode_id`]; None for anything else.
pub fn decode_id(id: &str) -> Option<[u8; 16]> {
    let mut raw = [0u8; 16];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(id, &mut raw)
        .ok()?;
    (n == 16 && id.len() == 22).then_some(raw)
}

//! Per-connection state, kept in a slab indexed by the connection's direct-descriptor slot.
use crate::protocol::engineio::EioVersion;
use crate::protocol::WsConnection;
pub use crate::service::session::{SessionError, SocketAuth};

/// What the connection is doing.
pub enum ConnState {
    /// Slot unused.
    Free,
    /// Reading an HTTP request (an upgrade, or a long-polling request with its body). The
    /// buffer is used only when the request arrives in several reads. `reused`: an idle
    /// keep-alive connection between two polling requests that has received no byte of the
    /// next one yet (its timeout closes it silently); the first byte clears it and starts
    /// the handshake deadline a new connection gets.
    Handshake { head: Vec<u8>, reused: bool },
    /// Being moved to the core that owns it; the record is owned by the in-flight MSG_RING.
    Moving { record: usize },
    /// An open WebSocket.
    Open {
        ws: WsConnection,
        endpoint: u8,
        meta: Box<SocketMeta>,
    },
    /// A long-polling Engine.IO session: a virtual slot above the descriptor table (no socket
    /// of its own). Its requests arrive on HTTP connections; its state is in `meta.sio`.
    Polling { endpoint: u8, meta: Box<SocketMeta> },
    /// An HTTP connection holding a long-polling GET of session `session` until there is
    /// something to send (or the polling timeout).
    PollWait {
        session: u32,
        session_gen: u32,
        /// The held request (how to answer it).
        plan: Box<PollPlan>,
    },
    /// Answering a plain HTTP request; closed once the answer is flushed, or, with
    /// `flag::KEEP_ALIVE`, back to reading the next request.
    Responding,
    /// Our direct descriptor is being released; waiting for in-flight operations to end.
    Closing,
}

pub mod flag {
    pub const SEND_INFLIGHT: u8 = 1;
    pub const RECV_ARMED: u8 = 2;
    pub const DIRTY: u8 = 4;
    /// Close once everything queued is written (close frame or HTTP refusal queued).
    pub const CLOSE_AFTER_FLUSH: u8 = 8;
    /// Write side shut down; waiting for the peer's EOF (or the linger timer) before closing.
    pub const LINGER: u8 = 16;
    /// The final `Close` of the direct descriptor is submitted.
    pub const CLOSE_SUBMITTED: u8 = 32;
    /// Closed by a handoff: our slot is released, the socket lives on at another core.
    pub const MOVED: u8 = 64;
    /// An HTTP answer on a keep-alive connection: read the next request once it is written.
    pub const KEEP_ALIVE: u8 = 128;
}

pub struct Conn {
    pub gen: u32,
    pub flags: u8,
    /// Operations in flight that reference this slot (recv, send, MSG_RING, close).
    pub inflight: u8,
    /// The tick of this connection's live timer entry.
    pub timer_at: u64,
    /// Tick of the last received bytes (keepalive; 32 bits of 100 ms ticks: 13 years).
    pub last_rx: u32,
    /// Tick of the next keepalive ping.
    pub ping_at: u64,
    pub state: ConnState,
    /// Bytes queued during this loop turn (corked; flushed once per turn).
    pub out: Vec<u8>,
    /// Bytes handed to the kernel by the in-flight send (never touched while in flight).
    pub sending: Vec<u8>,
    /// Bytes of `sending` the kernel has taken (a send buffer stays far below 4 GiB).
    pub sent: u32,
    /// `[tls]`: the connection's TLS state (travels with it to the owning core).
    pub tls: Option<Box<rustls::ServerConnection>>,
}

impl Conn {
    pub fn free() -> Conn {
        Conn {
            gen: 0,
            flags: 0,
            inflight: 0,
            timer_at: 0,
            last_rx: 0,
            ping_at: 0,
            state: ConnState::Free,
            out: Vec::new(),
            sending: Vec::new(),
            tls: None,
            sent: 0,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Bytes queued but not yet acknowledged by the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.out.len() + self.sending.len() - self.sent as usize
    }

    /// A slow consumer: bytes were already waiting when more arrived and the total is over
    /// `limit`. A single message is always accepted into an empty queue (its size is bounded
    /// by the message limits), so memory per socket stays under `limit` + one message.
    pub fn over_outbound_limit(&self, queued_before: usize, limit: usize) -> bool {
        queued_before > 0 && self.queued_bytes() > limit
    }

    pub fn is_free(&self) -> bool {
        matches!(self.state, ConnState::Free)
    }

    /// The socket this slot is, as the service sees it: an open WebSocket or a long-polling
    /// session (endpoint index and metadata). A WebSocket that is only the transport of a
    /// polling session is not a socket of its own, nor is a polling session that ended and
    /// only waits to hand its client the last packets.
    pub fn socket(&self) -> Option<(u8, &SocketMeta)> {
        match &self.state {
            ConnState::Open { endpoint, meta, .. } | ConnState::Polling { endpoint, meta } => {
                if meta.sio.as_ref().is_some_and(|s| s.is_not_a_socket()) {
                    return None;
                }
                Some((*endpoint, meta))
            }
            _ => None,
        }
    }

    pub fn socket_mut(&mut self) -> Option<&mut SocketMeta> {
        match &mut self.state {
            ConnState::Open { meta, .. } | ConnState::Polling { meta, .. } => {
                if meta.sio.as_ref().is_some_and(|s| s.is_not_a_socket()) {
                    return None;
                }
                Some(meta)
            }
            _ => None,
        }
    }
}

pub use crate::service::plan::{PollMethod, PollPlan, UpgradePlan};

/// What crosses cores through MSG_RING with a connection.
pub enum Handoff {
    Upgrade(Box<UpgradePlan>),
    Poll(Box<PollPlan>),
}

/// What travels with a connection moved to another core (the MSG_RING's user_data).
pub struct HandoffRecord {
    pub what: Handoff,
    pub tls: Option<Box<rustls::ServerConnection>>,
}

/// Engine.IO / Socket.IO state of a `socketio` socket (boxed in its metadata).
pub struct SioState {
    pub eio: EioVersion,
    pub sid: Box<str>,
    /// Namespaces the client joined ("/" is the default one).
    pub namespaces: Vec<Box<str>>,
    /// A WebSocket opened to upgrade the long-polling session (slot, gen): its packets belong
    /// to that session. Such a WebSocket is not a socket of its own.
    pub transport_of: Option<(u32, u32)>,
    /// A polling session's WebSocket (slot, gen, upgrade finished).
    pub ws: Option<(u32, u32, bool)>,
    /// Polling: packets waiting for the next GET (bounded).
    pub queue: PacketQueue,
    /// Polling: the HTTP connection holding a GET (slot, gen).
    pub waiting: Option<(u32, u32)>,
    /// Polling: tick of the client's last request.
    pub last_seen: u64,
    /// Polling v4: tick of the next server ping.
    pub ping_at: u64,
    /// A binary event or ack waiting for its attachments.
    pub partial: Option<Box<PartialBinary>>,
    /// Polling: the session ended (terminated or expired); its last packets (Socket.IO
    /// disconnects, then the close packet) wait in `queue` for the next GETs until `until`,
    /// then it is freed. Its WebSocket is closed with `code`.
    pub ending: Option<Ending>,
}

#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub until: u64,
    pub why: crate::protocol::close::CloseReason,
}

impl SioState {
    /// Not a socket of the service: a WebSocket that only carries a polling session, or a
    /// polling session that ended.
    pub fn is_not_a_socket(&self) -> bool {
        self.transport_of.is_some() || self.ending.is_some()
    }
}

/// Packets of a polling session waiting for the next GET, with their total size kept (the
/// byte limit is checked on every push).
#[derive(Default)]
pub struct PacketQueue {
    packets: Vec<Box<str>>,
    bytes: usize,
}

impl PacketQueue {
    pub fn push(&mut self, packet: Box<str>) {
        self.bytes += packet.len();
        self.packets.push(packet);
    }
    pub fn len(&self) -> usize {
        self.packets.len()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.packets.iter().map(|p| &**p)
    }
    /// Everything queued, in order; the queue is left empty.
    pub fn take(&mut self) -> Vec<Box<str>> {
        self.bytes = 0;
        std::mem::take(&mut self.packets)
    }
}

/// A binary Socket.IO packet whose attachments are still arriving.
pub struct PartialBinary {
    pub ack: bool,
    pub nsp: Box<str>,
    pub id: Option<u64>,
    pub data: String,
    pub wanted: usize,
    pub got: Vec<Vec<u8>>,
}

/// What a registered socket knows (boxed: sockets of `auth = "none"` endpoints have none).
pub struct SocketMeta {
    pub auth: Option<SocketAuth>,
    pub path: Box<str>,
    /// The URL query of its upgrade request (raw).
    pub query: Box<str>,
    /// A small per-socket attribute store (listeners and transcoders use it).
    pub attrs: Vec<(Box<str>, Box<str>)>,
    /// Engine.IO / Socket.IO state (`socketio` endpoints only).
    pub sio: Option<Box<SioState>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection memory is a design goal (< 1 KiB per idle connection, user space).
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 192, "Conn is {size} bytes");
    }
}

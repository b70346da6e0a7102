//! Per-connection state, kept in a slab indexed by the connection's direct-descriptor slot.
pub use super::meta::SocketMeta;
use crate::protocol::WsConnection;
use crate::service::engineio::Session;
use crate::service::plan::{PollPlan, UpgradePlan};
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
    /// `since_ns`: when the connection was accepted, or the first byte of a reused one's
    /// request came (monotonic ns; 0: not timed, `engine.latency_histograms` off).
    Handshake {
        head: Vec<u8>,
        reused: bool,
        since_ns: u64,
    },
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
    /// The tick of this connection's live timer entry (32 bits of 100 ms ticks, as `last_rx`).
    pub timer_at: u32,
    /// Tick of the last received bytes (keepalive; 32 bits of 100 ms ticks: 13 years).
    pub last_rx: u32,
    /// Tick of the next keepalive ping (32 bits, as `last_rx`).
    pub ping_at: u32,
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

/// A connection as an Engine.IO session knows it (a transport handle): slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub slot: u32,
    pub gen: u32,
}

/// Engine.IO / Socket.IO state of a `socketio` slot (boxed in its metadata).
pub enum Sio {
    /// A session: on this slot's WebSocket, or long-polling (a virtual slot). `retired`: the
    /// session carried out `Action::Retire` (its login ended, it only hands its client its
    /// last packets): no socket of the service any more.
    Session {
        session: Session<Link>,
        retired: bool,
    },
    /// A WebSocket opened to upgrade the long-polling session `of`: its packets belong to
    /// that session. Such a WebSocket is not a socket of its own.
    Transport { of: Link },
}

impl Sio {
    /// Not a socket of the service: a WebSocket that only carries a polling session, or a
    /// polling session that ended.
    pub fn is_not_a_socket(&self) -> bool {
        match self {
            Sio::Session { retired, .. } => *retired,
            Sio::Transport { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection memory is a design goal (<= 512 B per idle authenticated connection,
    /// user space: README, "Memory per connection").
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 176, "Conn is {size} bytes");
    }
}

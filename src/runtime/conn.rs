//! Per-connection state, kept in a slab indexed by the connection's direct-descriptor slot.
use crate::protocol::deflate::DeflateParams;
use crate::protocol::WsConnection;
pub use crate::service::session::SocketAuth;

/// What the connection is doing.
pub enum ConnState {
    /// Slot unused.
    Free,
    /// Reading the HTTP upgrade request. The buffer is used only when the request head arrives
    /// in several reads.
    Handshake { head: Vec<u8> },
    /// Being moved to the core that owns it; the record is owned by the in-flight MSG_RING.
    Moving { record: usize },
    /// An open WebSocket.
    Open {
        ws: WsConnection,
        endpoint: u8,
        meta: Box<SocketMeta>,
    },
    /// Answering a plain HTTP request (a refusal); closed once the answer is flushed.
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
}

pub struct Conn {
    pub gen: u32,
    pub flags: u8,
    /// Operations in flight that reference this slot (recv, send, MSG_RING, close).
    pub inflight: u8,
    /// The tick of this connection's live timer entry.
    pub timer_at: u64,
    /// Tick of the last received bytes (keepalive).
    pub last_rx: u64,
    /// Tick of the next keepalive ping.
    pub ping_at: u64,
    pub state: ConnState,
    /// Bytes queued during this loop turn (corked; flushed once per turn).
    pub out: Vec<u8>,
    /// Bytes handed to the kernel by the in-flight send (never touched while in flight).
    pub sending: Vec<u8>,
    pub sent: usize,
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
            sent: 0,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Bytes queued but not yet acknowledged by the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.out.len() + self.sending.len() - self.sent
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
}

/// Everything a core needs to open a WebSocket whose upgrade was accepted (possibly by another
/// core): moved by pointer through MSG_RING.
pub struct UpgradePlan {
    pub endpoint: u8,
    /// Key that picks the owning core; `None` = stay on the accepting core.
    pub shard_key: Option<u64>,
    /// `Sec-WebSocket-Key` of the request.
    pub ws_key: String,
    /// Negotiated permessage-deflate and the exact response header value.
    pub deflate: Option<(DeflateParams, String)>,
    /// Bytes the client sent after the request head (early frames).
    pub leftover: Vec<u8>,
    /// The verified session (`None` on `auth = "none"` endpoints).
    pub auth: Option<SocketAuth>,
    pub path: Box<str>,
    pub query: Box<str>,
}

/// What a registered socket knows (boxed: sockets of `auth = "none"` endpoints have none).
pub struct SocketMeta {
    pub auth: Option<SocketAuth>,
    pub path: Box<str>,
    /// The URL query of its upgrade request (raw).
    pub query: Box<str>,
    /// A small per-socket attribute store (listeners and transcoders use it).
    pub attrs: Vec<(Box<str>, Box<str>)>,
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

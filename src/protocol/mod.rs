//! The sans-IO WebSocket protocol core.
//!
//! Everything in here is a pure function over buffers: bytes in, events and
//! bytes out. There is no I/O, no clock and no global state, so the runtime
//! (io_uring, thread-per-core) can drive it however it likes, and it can be
//! unit-tested, benchmarked and fuzzed in isolation.
//!
//! - [`handshake`]: HTTP/1.1 request-head parsing (httparse, zero copy),
//!   RFC 6455 upgrade validation, `101`/error response writers.
//! - [`frame`]: RFC 6455 frame header parse/encode.
//! - [`mask`]: client-to-server payload unmasking (word at a time).
//! - [`utf8`]: incremental fail-fast UTF-8 validation for text messages.
//! - [`deflate`]: RFC 7692 permessage-deflate negotiation and bounded
//!   streaming (de)compression.
//! - [`connection`]: the per-connection frame/message state machine
//!   ([`WsConnection`]) the engine reads received bytes with and polls for events and for
//!   the frames it owes the peer.
//! - [`engineio`], [`socketio`]: Engine.IO v3/v4 packets and long-polling payloads, and
//!   the Socket.IO packets they carry.
//! - [`error`]: the single error type ([`ProtocolError`]) with its close code,
//!   HTTP status and human reason.
//!
//! No function here panics or allocates without bound on network input:
//! every buffer is capped by [`WsLimits`] or
//! [`handshake::HandshakeLimits`]. Unsafe code is forbidden here: it lives only in the
//! engine (`runtime`), each block with a `// SAFETY:` note.
#![forbid(unsafe_code)]

pub mod close;
pub mod connection;
pub mod deflate;
pub mod engineio;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod socketio;
pub mod utf8;

pub use connection::{Event, FrameOnce, MessageKind, Reader, Sender, WsConnection, WsLimits};
pub use error::ProtocolError;

//! The protocol level, at the bottom of the crate: what goes over the wire and how its
//! failures are named. Nothing here knows about workers, the coordinator or a run's state.
//!
//! - [`errors`]: failure kinds of connection attempts and established connections.
//! - [`net`]: TCP connect from a chosen source address, abrupt (RST) drops.
//! - [`messages`]: the scenario messages (echo payloads, pushed messages).
//! - [`history`]: the envelopes and the recovery marker of a raw endpoint with history.
//! - [`engineio`]: Engine.IO / Socket.IO packets and long-polling payloads.
//! - [`http1`]: the minimal HTTP/1.1 client of the long-polling transport.
//! - [`frame`]: RFC 6455 client frames (masked out, parsed in); [`handshake`]: the
//!   WebSocket opening handshake (request head, answer check, `--header` arguments).

pub mod engineio;
pub mod errors;
pub mod frame;
pub mod handshake;
pub mod history;
pub mod http1;
pub mod messages;
pub mod net;

//! The `nats` history store: per-user push history kept in NATS JetStream, so that a client
//! that reconnects to another node recovers what it missed (PRODUCT.md, "Delivery guarantees
//! and recovery"; the one-node store is `service::history::MemoryHistory`).
//!
//! - [`history`]: [`NatsHistory`], the store itself (async, tokio): `append`, `since`,
//!   `current`, its settings, its one error type and its counters. The rule that decides
//!   whether a resume is complete is documented there and is a pure function
//!   ([`history::is_complete`]).
//! - [`thread`]: [`spawn`] runs a store on a thread of its own (`ringwire-nats`, tokio
//!   current-thread runtime) and returns a [`BusHandle`]; other threads submit requests
//!   through a [`BusSender`] without blocking and get the answer in a callback that runs on
//!   the NATS thread.
//!
//! Imports `service` (positions, recoveries); `config` is allowed too, nothing above. Not
//! wired into the engine yet.
#![forbid(unsafe_code)]

mod counters;
pub mod history;
mod rule;
mod settings;
pub mod thread;

pub use history::{reconnect_delay, HistoryError, NatsHistory, NatsSettings, NatsStats};
pub use thread::{spawn, BusHandle, BusSender, RuntimeThread};

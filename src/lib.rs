//! ringwire: a WebSocket push server for Linux, thread-per-core on io_uring.
//!
//! Module map (each folder is one layer of the architecture):
//! - [`protocol`]: the sans-IO protocol core (HTTP upgrade, RFC 6455 framing,
//!   permessage-deflate). Pure functions over buffers; no runtime, no clock.
//! - [`config`]: the TOML configuration and the documented [`config::Limits`].
//! - [`runtime`]: the data plane: one pinned thread and one io_uring per core.
//! - [`doctor`]: host checks for a target connection count (`ringwire doctor`).
//!
//! Unsafe code lives in the engine ([`runtime`]: io_uring submissions, MSG_RING records) and
//! in [`doctor`]'s `getrlimit` probe, each block with a `// SAFETY:` note;
//! `protocol`, `config`, `service`, `cluster` and `admin` forbid it.
pub mod admin;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod service;

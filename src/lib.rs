//! ringwire: a WebSocket push server for Linux, thread-per-core on io_uring.
//!
//! Module map (each folder is one room of the architecture, bottom to top; see
//! ARCHITECTURE.md):
//! - [`protocol`]: the sans-IO protocol core (HTTP requests, RFC 6455 framing,
//!   permessage-deflate, Engine.IO/Socket.IO, close reasons). Pure functions over buffers.
//! - [`config`]: the TOML configuration, every key documented, validation and reload.
//! - [`service`]: sessions, path filters, placement, the cascade, listeners, the webhook.
//! - [`bus`]: the `nats` history store (NATS JetStream) and the thread that runs it.
//! - [`cluster`]: what nodes tell each other (wire codec, presence directory, coalescer) and
//!   the lock-free queues between the cores and the link.
//! - [`runtime`]: the data plane: one pinned thread and one io_uring per core.
//! - [`facade`]: the one `Service` through which the admin API, the cluster link and an
//!   embedding application reach the cores.
//! - [`link`]: the cluster link (QUIC thread, mutual TLS, certificates).
//! - [`ingress`]: pushes published on NATS (`[nats] ingress`), on a thread of their own.
//! - [`admin`]: the admin HTTP API, metrics, dashboard.
//! - [`server`], [`doctor`]: start-up and lifecycle; host checks (`ringwire doctor`).
//!
//! Unsafe code lives in the engine ([`runtime`]: io_uring submissions, MSG_RING records) and
//! in [`doctor`]'s `getrlimit` probe, each block with a `// SAFETY:` note;
//! `protocol`, `config`, `service`, `bus`, `cluster`, `facade`, `link`, `ingress` and `admin`
//! forbid it.
pub mod admin;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod facade;
mod history_bus;
pub mod ingress;
pub mod link;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod service;
pub mod systemd;

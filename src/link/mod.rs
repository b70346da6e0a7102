//! The cluster link: nodes (a static list, or found in a NATS bucket by `discovery`) linked over QUIC (quinn) with mutual TLS,
//! on a thread and tokio runtime of its own, above the engine.
//!
//! Each pair of nodes keeps one connection (dialled by the smaller id, with backoff); QUIC
//! keepalives every second and a 3 s idle timeout notice a dead or partitioned peer; a
//! restarted node rejoins by itself. Each direction is one unidirectional stream of
//! [`crate::cluster::wire`] frames. What the cores queue for a node ([`crate::cluster`]'s
//! lock-free queues) is written in one QUIC write; what arrives goes to the owning cores
//! through their inboxes.
#![forbid(unsafe_code)]
pub mod certs;
mod discovery;
mod members;
mod quic;
mod tls;

pub use members::Phase;
pub use quic::Cluster;

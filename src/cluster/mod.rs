//! The cluster as the cores see it: what nodes tell each other and the queues between the
//! cores and the link thread. Everything here is sans-IO or lock-free; the link itself (the
//! QUIC thread, mutual TLS, certificates) is the room above the engine, `link`.
//!
//! - **Wire** ([`wire`]): the frames each direction of a link carries (hello, presence, push,
//!   revoke), encoded and decoded without I/O.
//! - **Presence** ([`directory`]): every core tells the other nodes, per user it owns, how many
//!   sockets it holds per path (absolute counts, re-sent in full when a link comes up); the
//!   receiving node keeps them on the core that owns that user there.
//! - **Remote pushes** ([`coalesce`]): a core delivers a push to its local sockets, then queues
//!   it for each node the directory names, per destination node, in a coalescing queue. Due
//!   pushes go to the link thread through a lock-free queue per (core, node) ([`Outbound`]); the
//!   link thread writes everything queued for a node in one QUIC write.
//! - **Data plane ↔ link:** cores never lock. They push batches into bounded
//!   `crossbeam` `ArrayQueue`s and ring a doorbell (`try_send` on a one-slot channel); the link
//!   thread sends the cores commands through their own lock-free inboxes.
#![forbid(unsafe_code)]
pub mod coalesce;
pub mod directory;
pub mod wire;

use crate::config::ClusterConfig;
use crate::service::session::Revocation;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc;
use wire::{RemotePush, UserPresence};

/// Batches a core hands to the link thread for one node.
pub enum Outbound {
    Presence(Vec<UserPresence>),
    Push(Vec<RemotePush>),
}

/// Batches queued per (core, node) before the core gives up (drops pushes, retries presence).
const OUTBOX_BATCHES: usize = 4096;

/// A peer as the rest of the node sees it (lock-free).
pub struct PeerState {
    pub id: String,
    pub addr: SocketAddr,
    /// Epoch of the current link (0 = down).
    pub(crate) current: AtomicU64,
    /// Links established since start (a flapping link shows here).
    pub connects: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Pushes written to the link.
    pub messages_sent: AtomicU64,
    /// QUIC writes (each carries everything queued for the node at that moment).
    pub writes: AtomicU64,
    /// Pushes discarded by the link thread because the link was down.
    pub dropped: AtomicU64,
    /// Pushes received from this peer.
    pub received: AtomicU64,
    /// Per core: batches bound for this peer.
    pub(crate) queues: Vec<ArrayQueue<Outbound>>,
    doorbell: mpsc::Sender<()>,
}

impl PeerState {
    pub fn up(&self) -> bool {
        self.current.load(Relaxed) != 0
    }
}

/// What the cores, the admin API and the link thread share about the cluster.
pub struct ClusterState {
    pub node_id: String,
    pub peers: Vec<PeerState>,
    /// Terminated sessions to tell every peer about.
    pub(crate) revocations: SegQueue<Revocation>,
    control_bell: mpsc::Sender<()>,
}

/// The link thread's ends of the doorbells.
pub struct Bells {
    pub(crate) peers: Vec<mpsc::Receiver<()>>,
    pub(crate) control: mpsc::Receiver<()>,
}

impl ClusterState {
    pub fn new(cfg: &ClusterConfig, cores: usize) -> (Arc<ClusterState>, Bells) {
        let mut bells = Vec::new();
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                let (tx, rx) = mpsc::channel(1);
                bells.push(rx);
                PeerState {
                    id: p.id.clone(),
                    addr: p.addr,
                    current: AtomicU64::new(0),
                    connects: AtomicU64::new(0),
                    bytes_sent: AtomicU64::new(0),
                    bytes_received: AtomicU64::new(0),
                    messages_sent: AtomicU64::new(0),
                    writes: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    received: AtomicU64::new(0),
                    queues: (0..cores)
                        .map(|_| ArrayQueue::new(OUTBOX_BATCHES))
                        .collect(),
                    doorbell: tx,
                }
            })
            .collect();
        let (control_bell, control) = mpsc::channel(1);
        let state = Arc::new(ClusterState {
            node_id: cfg.node_id.clone(),
            peers,
            revocations: SegQueue::new(),
            control_bell,
        });
        (
            state,
            Bells {
                peers: bells,
                control,
            },
        )
    }

    /// Hand a batch for `node` to the link thread (lock-free); gives it back if the queue is
    /// full. The caller rings the doorbell once it has queued everything.
    pub fn enqueue(&self, core: usize, node: usize, batch: Outbound) -> Result<(), Outbound> {
        self.peers[node].queues[core].push(batch)
    }

    /// Wake the link thread for `node` (a no-op if a wake-up is already pending).
    pub fn ring(&self, node: usize) {
        let _ = self.peers[node].doorbell.try_send(());
    }

    /// Tell every peer that a session was terminated (and every peer that connects later,
    /// until the session would have expired).
    pub fn revoke(&self, r: Revocation) {
        self.revocations.push(r);
        let _ = self.control_bell.try_send(());
    }

    /// `[{"node", "addr", "state": "up"|"down", "connects", ...}]` for stats and the dashboard.
    pub fn links_json(&self) -> serde_json::Value {
        self.peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "node": p.id,
                    "addr": p.addr.to_string(),
                    "state": if p.up() { "up" } else { "down" },
                    "connects": p.connects.load(Relaxed),
                    "bytes_sent": p.bytes_sent.load(Relaxed),
                    "bytes_received": p.bytes_received.load(Relaxed),
                    "messages_sent": p.messages_sent.load(Relaxed),
                    "writes": p.writes.load(Relaxed),
                    "dropped": p.dropped.load(Relaxed),
                    "received": p.received.load(Relaxed),
                })
            })
            .collect()
    }

    /// Link-side totals: (sent, dropped, received).
    pub fn link_totals(&self) -> (u64, u64, u64) {
        self.peers.iter().fold((0, 0, 0), |(s, d, r), p| {
            (
                s + p.messages_sent.load(Relaxed),
                d + p.dropped.load(Relaxed),
                r + p.received.load(Relaxed),
            )
        })
    }
}

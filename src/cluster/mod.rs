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
//! - **Catch-up** ([`missed`]): the users of pushes a failed link swallowed, or that were
//!   not sent while it was down, are told to the peer when the link is back, so that it
//!   brings their history sockets up to date.
//! - **Data plane ↔ link:** cores never lock. They push batches into bounded
//!   `crossbeam` `SegQueue`s (bounded by the core, which alone pushes) and ring a doorbell (`try_send` on a one-slot channel); the link
//!   thread sends the cores commands through their own lock-free inboxes.
#![forbid(unsafe_code)]
pub mod coalesce;
pub mod directory;
pub mod ledger;
pub mod missed;
pub mod nodeset;
pub mod wire;

use crate::config::ClusterConfig;
use crate::service::session::Revocation;
use crossbeam_queue::SegQueue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, watch};
use wire::{RemotePush, UserPresence};

pub use nodeset::NodeSet;

/// Nodes a cluster may have (this one included): the size of the peer table and of
/// [`NodeSet`].
pub const MAX_NODES: usize = crate::config::MAX_CLUSTER_NODES;

/// Batches a core hands to the link thread for one node.
pub enum Outbound {
    Presence(Vec<UserPresence>),
    Push(Vec<RemotePush>),
    /// Users of pushes this core could not send while the node's link was down: its sockets
    /// of them may have missed those (sent as `wire::Frame::Missed`).
    Missed {
        all: bool,
        users: Vec<(u32, crate::service::user_id::UserId)>,
    },
}

/// Batches queued per (core, node) before the core gives up (drops pushes, retries presence).
/// The queues allocate as they fill (blocks of 31 batches), so 1,024 idle peers cost nothing.
const OUTBOX_BATCHES: usize = 4096;

/// Who a peer slot holds (read by the link thread and the admin API, never by a core).
#[derive(Debug, Clone)]
struct PeerInfo {
    /// Empty while the slot is free.
    id: Arc<str>,
    addr: SocketAddr,
    /// Bumped whenever the slot is given to a node or freed: a dialler of an older
    /// generation stops.
    generation: u64,
}

/// A peer as the rest of the node sees it (lock-free for the cores).
pub struct PeerState {
    info: Mutex<PeerInfo>,
    /// The slot holds a node (what the cores check: no lock on their side).
    assigned: AtomicBool,
    /// Epoch of the current link (0 = down).
    pub(crate) current: AtomicU64,
    /// It announced that it is leaving (drain): nothing is routed to it until its next link.
    pub(crate) leaving: AtomicBool,
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
    /// Pushes written to it and what became of them (link thread).
    pub(crate) ledger: Mutex<ledger::Ledger>,
    /// Pushes for it that were never written: per core (routed while its link was down,
    /// or waiting in the core's queue when it went down), and last the link thread's (in
    /// the outbound queues when the link failed). Each written by one thread.
    pub(crate) unsent_lost: Vec<AtomicU64>,
    /// Per core: batches bound for this peer.
    pub(crate) queues: Vec<SegQueue<Outbound>>,
    doorbell: mpsc::Sender<()>,
    /// The link thread's end of the doorbell (the current link's writer holds it).
    pub(crate) bell: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// The current link's epoch, watched by the links it supersedes.
    pub(crate) epoch: watch::Sender<u64>,
    /// Frames for the link's next write (revocations, leave notices).
    pub(crate) control_out: Mutex<Vec<u8>>,
}

impl PeerState {
    fn new(cores: usize, id: Arc<str>, addr: SocketAddr) -> PeerState {
        let (doorbell, bell) = mpsc::channel(1);
        PeerState {
            info: Mutex::new(PeerInfo {
                id,
                addr,
                generation: 1,
            }),
            assigned: AtomicBool::new(true),
            current: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ledger: Mutex::new(ledger::Ledger::default()),
            unsent_lost: (0..=cores).map(|_| AtomicU64::new(0)).collect(),
            queues: (0..cores).map(|_| SegQueue::new()).collect(),
            doorbell,
            bell: tokio::sync::Mutex::new(bell),
            epoch: watch::channel(0).0,
            control_out: Mutex::new(Vec::new()),
        }
    }

    fn info(&self) -> std::sync::MutexGuard<'_, PeerInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn up(&self) -> bool {
        self.current.load(Relaxed) != 0
    }

    /// Its node id ("" while the slot is free).
    pub fn id(&self) -> Arc<str> {
        self.info().id.clone()
    }

    /// Where its link listens (QUIC).
    pub fn addr(&self) -> SocketAddr {
        self.info().addr
    }

    /// Which node the slot holds: a dialler started for another generation stops.
    pub fn generation(&self) -> u64 {
        self.info().generation
    }

    /// "up", "leaving" or "down".
    pub fn state_name(&self) -> &'static str {
        match (self.up(), self.leaving.load(Relaxed)) {
            (true, false) => "up",
            (true, true) => "leaving",
            (false, _) => "down",
        }
    }

    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, ledger::Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes for this peer that it never received: written and not confirmed when a link
    /// failed (settled), or never written because its link was down.
    pub fn lost(&self) -> u64 {
        self.ledger().lost()
            + self
                .unsent_lost
                .iter()
                .map(|c| c.load(Relaxed))
                .sum::<u64>()
    }

    /// Count pushes of core `core` (or the link thread: `cores`) that never reached it.
    pub fn count_unsent(&self, core: usize, pushes: u64) {
        if let Some(c) = self.unsent_lost.get(core) {
            c.fetch_add(pushes, Relaxed);
        }
    }

    fn reset_counters(&self) {
        *self.ledger() = ledger::Ledger::default();
        for c in &self.unsent_lost {
            c.store(0, Relaxed);
        }
        for c in [
            &self.connects,
            &self.bytes_sent,
            &self.bytes_received,
            &self.messages_sent,
            &self.writes,
            &self.dropped,
            &self.received,
        ] {
            c.store(0, Relaxed);
        }
        self.leaving.store(false, Relaxed);
    }
}

/// What the cores, the admin API and the link thread share about the cluster.
pub struct ClusterState {
    pub node_id: String,
    /// Peer slots; a slot's index is the node number the cores know it by. Slots are given
    /// out as peers are learnt (the config's peer list, or discovery) and freed when a
    /// discovered node is forgotten.
    slots: Box<[OnceLock<Box<PeerState>>]>,
    /// Serialises giving out and freeing slots (link thread and start-up only).
    assigning: Mutex<()>,
    cores: usize,
    /// Terminated sessions to tell every peer about.
    pub(crate) revocations: SegQueue<Revocation>,
    control_bell: mpsc::Sender<()>,
    /// NATS discovery's connection: 0 = not used (static), 1 = connected, 2 = not connected.
    pub discovery_nats: AtomicU8,
    /// This process's run, told to peers in the hello (see [`ledger`]).
    pub instance: u64,
}

/// The link thread's end of the control doorbell (revocations to send).
pub struct Bells {
    pub(crate) control: mpsc::Receiver<()>,
}

impl ClusterState {
    /// The peer table with the configured (static) peers in the first slots.
    pub fn new(cfg: &ClusterConfig, cores: usize) -> (Arc<ClusterState>, Bells) {
        let (control_bell, control) = mpsc::channel(1);
        let state = Arc::new(ClusterState {
            node_id: cfg.node_id.clone(),
            slots: (0..MAX_NODES - 1).map(|_| OnceLock::new()).collect(),
            assigning: Mutex::new(()),
            cores,
            revocations: SegQueue::new(),
            control_bell,
            discovery_nats: AtomicU8::new(match cfg.discovery {
                crate::config::Discovery::Static => 0,
                crate::config::Discovery::Nats => 2,
            }),
            instance: {
                let mut b = [0u8; 8];
                let _ = getrandom::getrandom(&mut b);
                u64::from_le_bytes(b) | 1
            },
        });
        for p in &cfg.peers {
            state.assign(&p.id, p.addr);
        }
        (state, Bells { control })
    }

    /// Cores of this node (one outbound queue each per peer).
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Peers by link state: (up, leaving, down).
    pub fn member_counts(&self) -> (usize, usize, usize) {
        self.peers()
            .fold((0, 0, 0), |(u, l, d), (_, p)| match p.state_name() {
                "up" => (u + 1, l, d),
                "leaving" => (u, l + 1, d),
                _ => (u, l, d + 1),
            })
    }

    /// The peer in slot `node`, if the slot holds one.
    pub fn peer(&self, node: u16) -> Option<&PeerState> {
        let p = self.slots.get(node as usize)?.get()?;
        p.assigned.load(Relaxed).then_some(&**p)
    }

    /// Every peer known, with its slot.
    pub fn peers(&self) -> impl Iterator<Item = (u16, &PeerState)> {
        self.slots
            .iter()
            .enumerate()
            .map_while(|(i, s)| s.get().map(|p| (i as u16, &**p)))
            .filter(|(_, p)| p.assigned.load(Relaxed))
    }

    /// The slot of node `id`.
    pub fn find(&self, id: &str) -> Option<u16> {
        self.peers()
            .find(|(_, p)| &*p.info().id == id)
            .map(|(i, _)| i)
    }

    /// The slot of node `id`, given one if it has none (its address updated if it has);
    /// `None` when every slot is taken or `id` is this node.
    pub fn assign(&self, id: &str, addr: SocketAddr) -> Option<u16> {
        if id.is_empty() || id == self.node_id {
            return None;
        }
        let _g = self.assigning.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.find(id) {
            self.slots[i as usize].get()?.info().addr = addr;
            return Some(i);
        }
        for (i, s) in self.slots.iter().enumerate() {
            match s.get() {
                None => {
                    let _ = s.set(Box::new(PeerState::new(self.cores, id.into(), addr)));
                    return Some(i as u16);
                }
                Some(p) if !p.assigned.load(Relaxed) => {
                    p.reset_counters();
                    let mut info = p.info();
                    info.id = id.into();
                    info.addr = addr;
                    info.generation += 1;
                    p.assigned.store(true, Relaxed);
                    return Some(i as u16);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Free slot `node` (a discovered node that left for good). The caller has told the
    /// cores (`PeerDown`) and its link is down.
    pub fn release(&self, node: u16) {
        let _g = self.assigning.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.slots.get(node as usize).and_then(|s| s.get()) {
            p.assigned.store(false, Relaxed);
            let mut info = p.info();
            info.id = "".into();
            info.generation += 1;
        }
    }

    /// Hand a batch for `node` to the link thread (lock-free); gives it back if the queue is
    /// full. The caller rings the doorbell once it has queued everything.
    pub fn enqueue(&self, core: usize, node: u16, batch: Outbound) -> Result<(), Outbound> {
        let Some(q) = self.peer(node).and_then(|p| p.queues.get(core)) else {
            return Err(batch);
        };
        // Only this core pushes to its queue, so the bound holds without a race.
        if q.len() >= OUTBOX_BATCHES {
            return Err(batch);
        }
        q.push(batch);
        Ok(())
    }

    /// The next batch core `core` queued for `node` (the link thread's side).
    pub fn take(&self, node: u16, core: usize) -> Option<Outbound> {
        self.peer(node)?.queues.get(core)?.pop()
    }

    /// Wake the link thread for `node` (a no-op if a wake-up is already pending).
    pub fn ring(&self, node: u16) {
        if let Some(p) = self.peer(node) {
            let _ = p.doorbell.try_send(());
        }
    }

    /// Tell every peer that a session was terminated (and every peer that connects later,
    /// until the session would have expired).
    pub fn revoke(&self, r: Revocation) {
        self.revocations.push(r);
        let _ = self.control_bell.try_send(());
    }

    /// `[{"node", "addr", "state": "up"|"leaving"|"down", "connects", ...}]` for stats and the dashboard.
    pub fn links_json(&self) -> serde_json::Value {
        self.peers()
            .map(|(_, p)| {
                serde_json::json!({
                    "node": &*p.id(),
                    "addr": p.addr().to_string(),
                    "state": p.state_name(),
                    "connects": p.connects.load(Relaxed),
                    "bytes_sent": p.bytes_sent.load(Relaxed),
                    "bytes_received": p.bytes_received.load(Relaxed),
                    "messages_sent": p.messages_sent.load(Relaxed),
                    "writes": p.writes.load(Relaxed),
                    "dropped": p.dropped.load(Relaxed),
                    "received": p.received.load(Relaxed),
                    "lost": p.lost(),
                    "unconfirmed": p.ledger().unconfirmed(),
                })
            })
            .collect()
    }

    /// `{"mode": "static"|"nats", "nats": "connected"|"disconnected"|null, "members":
    /// {"up", "leaving", "down"}}` for stats and the dashboard.
    pub fn discovery_json(&self) -> serde_json::Value {
        let (up, leaving, down) = self.member_counts();
        let nats = match self.discovery_nats.load(Relaxed) {
            0 => serde_json::Value::Null,
            1 => "connected".into(),
            _ => "disconnected".into(),
        };
        serde_json::json!({
            "mode": if self.discovery_nats.load(Relaxed) == 0 { "static" } else { "nats" },
            "nats": nats,
            "members": {"up": up, "leaving": leaving, "down": down},
        })
    }

    /// Prometheus text: members by link state, each link's state and losses, and the
    /// discovery's NATS connection.
    pub fn membership_metrics(&self) -> String {
        let (up, leaving, down) = self.member_counts();
        let mut t = String::from(
            "# HELP ringwire_cluster_members Other nodes known, by the state of their link\n\
             # TYPE ringwire_cluster_members gauge\n",
        );
        for (state, n) in [("up", up), ("leaving", leaving), ("down", down)] {
            t.push_str(&format!(
                "ringwire_cluster_members{{state=\"{state}\"}} {n}\n"
            ));
        }
        let peers: Vec<_> = self.peers().map(|(_, p)| p).collect();
        let per_peer = |name: &str, kind: &str, help: &str, value: &dyn Fn(&PeerState) -> u64| {
            let mut t = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for p in &peers {
                t.push_str(&format!("{name}{{peer=\"{}\"}} {}\n", p.id(), value(p)));
            }
            t
        };
        t.push_str(&per_peer(
            "ringwire_cluster_link_up",
            "gauge",
            "Cluster link to a peer is up (1) or down (0)",
            &|p| u64::from(p.up()),
        ));
        t.push_str(&per_peer(
            "ringwire_cluster_lost_total",
            "counter",
            "Pushes for a peer it never received: written and not confirmed when its link failed, or not written because its link was down",
            &|p| p.lost(),
        ));
        t.push_str(&per_peer(
            "ringwire_cluster_unconfirmed",
            "gauge",
            "Pushes written to a peer and not confirmed yet (settled when its link is back)",
            &|p| p.ledger().unconfirmed(),
        ));
        let nats = self.discovery_nats.load(Relaxed);
        if nats != 0 {
            t.push_str(&format!(
                "# HELP ringwire_cluster_discovery_nats_connected Discovery is connected to NATS (1) or not (0)\n\
                 # TYPE ringwire_cluster_discovery_nats_connected gauge\n\
                 ringwire_cluster_discovery_nats_connected {}\n",
                u8::from(nats == 1)
            ));
        }
        t
    }

    /// Link-side totals: (sent, dropped, received).
    pub fn link_totals(&self) -> (u64, u64, u64) {
        self.peers().fold((0, 0, 0), |(s, d, r), (_, p)| {
            (
                s + p.messages_sent.load(Relaxed),
                d + p.dropped.load(Relaxed),
                r + p.received.load(Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(peers: &[&str]) -> Arc<ClusterState> {
        let cfg: ClusterConfig = toml::from_str(&format!(
            "node_id = \"m\"\nlisten = \"127.0.0.1:7001\"\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\npeers = [{}]",
            peers
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{{ id = \"{p}\", addr = \"127.0.0.1:{}\" }}", 8000 + i))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .unwrap();
        ClusterState::new(&cfg, 2).0
    }

    #[test]
    fn slots_are_given_found_freed_and_reused() {
        let s = state(&["a", "b"]);
        assert_eq!(s.find("a"), Some(0));
        assert_eq!(s.find("b"), Some(1));
        assert_eq!(
            s.assign("m", "127.0.0.1:1".parse().unwrap()),
            None,
            "not itself"
        );
        let c = s.assign("c", "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(c, 2);
        let generation = s.peer(c).unwrap().generation();
        // Known: same slot, address updated.
        assert_eq!(s.assign("c", "127.0.0.1:10".parse().unwrap()), Some(c));
        assert_eq!(s.peer(c).unwrap().addr().port(), 10);
        s.peer(c).unwrap().messages_sent.store(5, Relaxed);
        s.release(c);
        assert!(s.peer(c).is_none() && s.find("c").is_none());
        assert_eq!(s.peers().count(), 2);
        let d = s.assign("d", "127.0.0.1:11".parse().unwrap()).unwrap();
        assert_eq!(d, c, "a freed slot is reused");
        let p = s.peer(d).unwrap();
        assert!(p.generation() > generation, "a dialler of c stops");
        assert_eq!(p.messages_sent.load(Relaxed), 0, "counters are d's own");
        assert_eq!(&*p.id(), "d");
    }

    #[test]
    fn the_table_holds_max_nodes_minus_this_one_and_queues_are_bounded() {
        let s = state(&[]);
        for i in 0..MAX_NODES - 1 {
            assert_eq!(
                s.assign(&format!("n{i}"), "127.0.0.1:1".parse().unwrap()),
                Some(i as u16)
            );
        }
        assert_eq!(s.assign("one-more", "127.0.0.1:1".parse().unwrap()), None);
        let last = (MAX_NODES - 2) as u16;
        for _ in 0..OUTBOX_BATCHES {
            assert!(s.enqueue(1, last, Outbound::Push(Vec::new())).is_ok());
        }
        assert!(s.enqueue(1, last, Outbound::Push(Vec::new())).is_err());
        assert!(s.enqueue(0, last, Outbound::Push(Vec::new())).is_ok());
        assert!(s
            .enqueue(0, MAX_NODES as u16, Outbound::Push(Vec::new()))
            .is_err());
    }
}

//! Who the link thread links to: the peer slots it fills (the config's peers, or nodes
//! discovery names), a dialler per peer this node dials, and leaving.
//!
//! Each pair of nodes keeps one connection, dialled by the smaller id. A slot's dialler runs
//! for the slot's generation: when the slot is freed or given to another node, it stops.
//!
//! Leaving (drain): the node tells every linked peer (`Leaving`); each peer marks it leaving,
//! has its cores drop the node's presence and stop routing to it, waits until every core has
//! done so (a barrier through their inboxes) and answers `LeaveAck`. The draining node closes
//! its sockets once every peer answered or `cluster.leave_wait_ms` passed.
use crate::cluster::wire;
use crate::cluster::{ClusterState, NodeSet};
use crate::config::Discovery;
use crate::facade::Service;
use crate::service::session::{Revocation, SessionId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// This node's phase, as discovery publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Started; linking to the members it found.
    Joining,
    /// Linked to the members it found (or gave them a second).
    Serving,
    /// Draining: route nothing more to it.
    Leaving,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Joining => "joining",
            Phase::Serving => "serving",
            Phase::Leaving => "leaving",
        }
    }
}

pub(super) struct Link {
    pub state: Arc<ClusterState>,
    /// The cores, reached as the admin API reaches them.
    pub service: Service,
    pub endpoint: quinn::Endpoint,
    pub discovery: Discovery,
    pub next_epoch: AtomicU64,
    pub revoked: Mutex<HashMap<SessionId, Revocation>>,
    /// Slot → the generation its running dialler serves.
    dialling: Mutex<HashMap<u16, u64>>,
    pub phase: watch::Sender<Phase>,
    /// Peers that confirmed this node's leave.
    pub leave_acks: watch::Sender<NodeSet>,
}

impl Link {
    pub fn new(
        state: Arc<ClusterState>,
        service: Service,
        endpoint: quinn::Endpoint,
        discovery: Discovery,
    ) -> Link {
        Link {
            state,
            service,
            endpoint,
            discovery,
            next_epoch: AtomicU64::new(1),
            revoked: Mutex::new(HashMap::new()),
            dialling: Mutex::new(HashMap::new()),
            phase: watch::channel(Phase::Joining).0,
            leave_acks: watch::channel(NodeSet::EMPTY).0,
        }
    }

    /// Node `id` listens at `addr`: give it a slot (or update its address) and dial it if
    /// this node is the one that dials. `None` when the table is full.
    pub fn learn(self: &Arc<Self>, id: &str, addr: SocketAddr) -> Option<u16> {
        let known = self.state.find(id).is_some();
        let Some(i) = self.state.assign(id, addr) else {
            if id != self.state.node_id {
                tracing::error!(peer = %id, "cluster: no free peer slot (at most {} nodes)", crate::cluster::MAX_NODES);
            }
            return None;
        };
        if !known {
            tracing::info!(peer = %id, %addr, "cluster: new member");
        }
        if self.state.node_id.as_str() < id {
            let generation = self.state.peer(i).map_or(0, |p| p.generation());
            let mut dialling = self.dialling.lock().unwrap_or_else(|e| e.into_inner());
            if dialling.get(&i) != Some(&generation) {
                dialling.insert(i, generation);
                tokio::spawn(super::quic::dial(self.clone(), i, generation));
            }
        }
        Some(i)
    }

    /// Free the slot of a discovered node that left for good (its link is down).
    pub fn forget(&self, i: u16) {
        let Some(p) = self.state.peer(i) else { return };
        if p.up() {
            return;
        }
        tracing::info!(peer = %p.id(), "cluster: member forgotten");
        p.ledger().forget();
        // Its presence, kept while it might come back, goes.
        self.service.peer_down(i);
        self.state.release(i);
    }

    /// Peer `i` announced that it leaves: route nothing more to it, and confirm once every
    /// core has stopped.
    pub fn peer_leaving(self: &Arc<Self>, i: u16) {
        let Some(p) = self.state.peer(i) else { return };
        if p.leaving.swap(true, Relaxed) {
            return;
        }
        tracing::info!(peer = %p.id(), "cluster: peer is leaving; no longer routing to it");
        self.service.peer_down(i);
        if !p.up() {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            link.service.barrier().await;
            if let Some(p) = link.state.peer(i) {
                wire::encode_leave_ack(&mut p.control_out.lock().expect("control lock"));
                link.state.ring(i);
            }
        });
    }

    /// This node drains: tell the peers, wait (at most `wait`) until each confirmed.
    /// Returns (confirmed, asked).
    pub async fn leave(&self, wait: Duration) -> (usize, usize) {
        self.phase.send_replace(Phase::Leaving);
        let asked: NodeSet = self
            .state
            .peers()
            .filter(|(_, p)| p.up())
            .map(|(i, _)| i)
            .collect();
        for i in asked.iter() {
            if let Some(p) = self.state.peer(i) {
                wire::encode_leaving(&mut p.control_out.lock().expect("control lock"));
                self.state.ring(i);
            }
        }
        let mut acks = self.leave_acks.subscribe();
        let _ = tokio::time::timeout(wait, acks.wait_for(|a| a.and(&asked) == asked)).await;
        let confirmed = self.leave_acks.borrow().and(&asked).len();
        (confirmed, asked.len())
    }
}

//! The cluster link: nodes of a static membership connected over QUIC (quinn) with mutual
//! TLS, on a thread of their own with their own tokio runtime.
//!
//! This first increment maintains the links and their liveness: each pair of nodes keeps one
//! connection (dialled by the node with the smaller id, with backoff), QUIC keepalives every
//! second and a 3 s idle timeout notice a dead or partitioned peer, and a restarted node
//! rejoins by itself. Presence, remote pushes and coalescing build on these links.
pub mod certs;
mod tls;

use crate::config::ClusterConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What the rest of the node sees of the cluster (lock-free).
pub struct ClusterState {
    pub node_id: String,
    pub peers: Vec<PeerState>,
}

pub struct PeerState {
    pub id: String,
    pub addr: SocketAddr,
    /// Live QUIC connections with this peer (up = at least one).
    live: AtomicUsize,
    /// Connections established since start (a flapping link shows here).
    pub connects: AtomicU64,
}

impl PeerState {
    pub fn up(&self) -> bool {
        self.live.load(Relaxed) > 0
    }
}

impl ClusterState {
    /// `[{"node": id, "state": "up"|"down", "connects": n}]` for stats and the dashboard.
    pub fn links_json(&self) -> serde_json::Value {
        self.peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "node": p.id,
                    "addr": p.addr.to_string(),
                    "state": if p.up() { "up" } else { "down" },
                    "connects": p.connects.load(Relaxed),
                })
            })
            .collect()
    }
}

/// The running link thread.
pub struct Cluster {
    pub state: Arc<ClusterState>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    /// Bind the QUIC endpoint and start linking to the peers. Errors (certificates, bind)
    /// are returned before anything runs.
    pub fn start(cfg: &ClusterConfig) -> Result<Cluster, String> {
        let files = tls::TlsFiles {
            ca: &cfg.ca,
            cert: &cfg.cert,
            key: &cfg.key,
        };
        let server = tls::server_config(&files)?;
        let client = tls::client_config(&files)?;
        let state = Arc::new(ClusterState {
            node_id: cfg.node_id.clone(),
            peers: cfg
                .peers
                .iter()
                .map(|p| PeerState {
                    id: p.id.clone(),
                    addr: p.addr,
                    live: AtomicUsize::new(0),
                    connects: AtomicU64::new(0),
                })
                .collect(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let listen = cfg.listen;
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("ringwire-cluster".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cluster runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut endpoint = match quinn::Endpoint::server(server, listen) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cluster.listen {listen}: {e}")));
                            return;
                        }
                    };
                    endpoint.set_default_client_config(client);
                    let _ = ready_tx.send(Ok(()));
                    run(endpoint, st, stop_rx).await;
                });
            })
            .map_err(|e| format!("cannot spawn the cluster thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("cluster thread ended before binding".into()),
        }
        tracing::info!(
            node = %cfg.node_id,
            listen = %cfg.listen,
            peers = cfg.peers.len(),
            "cluster link listening"
        );
        Ok(Cluster {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Close every link (peers see it at once) and end the thread.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    endpoint: quinn::Endpoint,
    state: Arc<ClusterState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let accept = {
        let endpoint = endpoint.clone();
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(accepted(incoming, state.clone()));
            }
        })
    };
    for (i, peer) in state.peers.iter().enumerate() {
        // One connection per pair: the smaller id dials.
        if state.node_id < peer.id {
            tokio::spawn(dial(endpoint.clone(), state.clone(), i));
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    accept.abort();
}

/// Keep a connection to peer `i`, redialling with backoff (0.1 s doubling to 2 s).
async fn dial(endpoint: quinn::Endpoint, state: Arc<ClusterState>, i: usize) {
    let peer = &state.peers[i];
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = match endpoint.connect(peer.addr, &peer.id) {
            Ok(c) => c.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                if let Err(e) = hello(&conn, &state.node_id).await {
                    tracing::debug!(peer = %peer.id, "hello failed: {e}");
                    continue;
                }
                hold(&conn, peer).await;
            }
            Err(e) => {
                tracing::debug!(peer = %peer.id, "dial failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// An incoming connection: the peer names itself in its first stream; unknown ids are
/// closed. (Its certificate was already checked against the cluster CA.)
async fn accepted(incoming: quinn::Incoming, state: Arc<ClusterState>) {
    let Ok(conn) = incoming.await else { return };
    let id = match tokio::time::timeout(Duration::from_secs(3), read_hello(&conn)).await {
        Ok(Ok(id)) => id,
        _ => {
            conn.close(1u32.into(), b"no hello");
            return;
        }
    };
    let Some(peer) = state.peers.iter().find(|p| p.id == id) else {
        tracing::warn!(peer = %id, "a node that is not a configured peer connected; closing");
        conn.close(2u32.into(), b"unknown node");
        return;
    };
    hold(&conn, peer).await;
}

/// Mark the peer up while the connection lives.
async fn hold(conn: &quinn::Connection, peer: &PeerState) {
    if peer.live.fetch_add(1, Relaxed) == 0 {
        tracing::info!(peer = %peer.id, "cluster link up");
    }
    peer.connects.fetch_add(1, Relaxed);
    let reason = conn.closed().await;
    if peer.live.fetch_sub(1, Relaxed) == 1 {
        tracing::warn!(peer = %peer.id, "cluster link down: {reason}");
    }
}

async fn hello(conn: &quinn::Connection, id: &str) -> Result<(), String> {
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    s.write_all(id.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.finish().map_err(|e| e.to_string())?;
    Ok(())
}

async fn read_hello(conn: &quinn::Connection) -> Result<String, String> {
    let mut s = conn.accept_uni().await.map_err(|e| e.to_string())?;
    let bytes = s.read_to_end(256).await.map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

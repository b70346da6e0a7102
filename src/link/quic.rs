//! The link thread: QUIC connections to the peers, one unidirectional stream per direction,
//! frames in and out, and the commands that keep the cores' view of each peer current.
//!
//! A link has an epoch. The newest link with a peer is its current one; only the current link
//! marks the peer up or down, and a link that is superseded (the peer restarted and dialled
//! again before the old connection timed out) stops. When a link becomes current, every core
//! forgets what that peer held (`PeerUp`) and queues its whole presence for it; the peer does
//! the same, so the directories re-sync after any outage.
use super::tls;
use crate::cluster::wire::{self, Frame};
use crate::cluster::{Bells, ClusterState, Outbound};
use crate::config::ClusterConfig;
use crate::facade::{PushJob, Service};
use crate::service::path_filter::PathFilter;
use crate::service::session::{unix_now, Revocation, SessionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Revocations remembered for peers that connect later (each until its session's expiry).
const MAX_REVOCATIONS: usize = 1_000_000;

/// The running link thread.
pub struct Cluster {
    pub state: Arc<ClusterState>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Link {
    state: Arc<ClusterState>,
    /// The cores, reached as the admin API reaches them.
    service: Service,
    /// Per peer: the doorbell the current link's writer waits on.
    bells: Vec<tokio::sync::Mutex<mpsc::Receiver<()>>>,
    /// Per peer: the current link's epoch, watched by the links it supersedes.
    epochs: Vec<watch::Sender<u64>>,
    next_epoch: AtomicU64,
    /// Per peer: frames for its next write (revocations).
    control_out: Vec<Mutex<Vec<u8>>>,
    revoked: Mutex<HashMap<SessionId, Revocation>>,
}

impl Cluster {
    /// Bind the QUIC endpoint and start linking to the peers. Errors (certificates, bind)
    /// are returned before anything runs.
    pub fn start(
        cfg: &ClusterConfig,
        state: Arc<ClusterState>,
        bells: Bells,
        service: Service,
    ) -> Result<Cluster, String> {
        let files = tls::TlsFiles {
            ca: &cfg.ca,
            cert: &cfg.cert,
            key: &cfg.key,
        };
        let server = tls::server_config(&files)?;
        let client = tls::client_config(&files)?;
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let listen = cfg.listen;
        let peers = state.peers.len();
        let link = Arc::new(Link {
            state: state.clone(),
            service,
            bells: bells
                .peers
                .into_iter()
                .map(tokio::sync::Mutex::new)
                .collect(),
            epochs: (0..peers).map(|_| watch::channel(0).0).collect(),
            next_epoch: AtomicU64::new(1),
            control_out: (0..peers).map(|_| Mutex::new(Vec::new())).collect(),
            revoked: Mutex::new(HashMap::new()),
        });
        let control = bells.control;
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
                    run(endpoint, link, control, stop_rx).await;
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
    link: Arc<Link>,
    control: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let accept = {
        let endpoint = endpoint.clone();
        let link = link.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(accepted(incoming, link.clone()));
            }
        })
    };
    tokio::spawn(revocations(link.clone(), control));
    for (i, peer) in link.state.peers.iter().enumerate() {
        // One connection per pair: the smaller id dials.
        if link.state.node_id < peer.id {
            tokio::spawn(dial(endpoint.clone(), link.clone(), i));
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    accept.abort();
}

/// Keep a link to peer `i`, redialling with backoff (0.1 s doubling to 2 s).
async fn dial(endpoint: quinn::Endpoint, link: Arc<Link>, i: usize) {
    let peer = &link.state.peers[i];
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = match endpoint.connect(peer.addr, &peer.id) {
            Ok(c) => c.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                let hello = async {
                    let send = open_with_hello(&conn, &link.state.node_id).await?;
                    let (recv, id) = read_hello(&conn).await?;
                    if id != peer.id {
                        return Err(format!("peer at {} says it is {id:?}", peer.addr));
                    }
                    Ok((send, recv))
                };
                match tokio::time::timeout(Duration::from_secs(3), hello).await {
                    Ok(Ok((send, recv))) => serve(&link, i, conn, send, recv).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer.id, "hello failed: {e}");
                        conn.close(1u32.into(), b"bad hello");
                    }
                    Err(_) => conn.close(1u32.into(), b"no hello"),
                }
            }
            Err(e) => {
                tracing::debug!(peer = %peer.id, "dial failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// An incoming connection: the peer names itself in its stream's first frame; unknown ids
/// are closed. (Its certificate was already checked against the cluster CA.)
async fn accepted(incoming: quinn::Incoming, link: Arc<Link>) {
    let Ok(conn) = incoming.await else { return };
    let hello = async {
        let (recv, id) = read_hello(&conn).await?;
        let Some(i) = link.state.peers.iter().position(|p| p.id == id) else {
            return Err(id);
        };
        let send = open_with_hello(&conn, &link.state.node_id).await?;
        Ok((i, send, recv))
    };
    match tokio::time::timeout(Duration::from_secs(3), hello).await {
        Ok(Ok((i, send, recv))) => serve(&link, i, conn, send, recv).await,
        Ok(Err(id)) => {
            tracing::warn!(peer = %id, "a node that is not a configured peer connected; closing");
            conn.close(2u32.into(), b"unknown node");
        }
        Err(_) => conn.close(1u32.into(), b"no hello"),
    }
}

async fn open_with_hello(conn: &quinn::Connection, id: &str) -> Result<quinn::SendStream, String> {
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    wire::encode_hello(&mut hello, id);
    s.write_all(&hello).await.map_err(|e| e.to_string())?;
    Ok(s)
}

/// The peer's stream and the id its hello names.
async fn read_hello(conn: &quinn::Connection) -> Result<(quinn::RecvStream, String), String> {
    let mut s = conn.accept_uni().await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1024 {
        return Err("hello too large".into());
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    match wire::decode_frame(&body) {
        Ok(Frame::Hello { version, node }) if version == wire::VERSION => Ok((s, node)),
        Ok(Frame::Hello { version, .. }) => Err(format!("link protocol version {version}")),
        Ok(_) => Err("first frame is not a hello".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Run an established link with peer `i` until it closes or a newer link supersedes it.
async fn serve(
    link: &Arc<Link>,
    i: usize,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let peer = &link.state.peers[i];
    let epoch = link.next_epoch.fetch_add(1, Relaxed);
    let was = peer.current.swap(epoch, Relaxed);
    link.epochs[i].send_replace(epoch);
    peer.connects.fetch_add(1, Relaxed);
    if was == 0 {
        tracing::info!(peer = %peer.id, "cluster link up");
    }
    // Cores forget the peer's old presence and queue theirs for it, before any frame of this
    // link is read (the commands are ordered in each core's inbox).
    link.service.peer_up(i as u8);
    let reader = read_frames(link, i, epoch, recv);
    let writer = write_batches(link, i, epoch, &conn, send);
    tokio::select! {
        r = reader => if let Err(e) = r {
            tracing::warn!(peer = %peer.id, "closing the link: {e}");
            conn.close(3u32.into(), e.as_bytes());
        },
        _ = writer => {},
    }
    let reason = conn.close_reason();
    if peer
        .current
        .compare_exchange(epoch, 0, Relaxed, Relaxed)
        .is_ok()
    {
        match reason {
            Some(r) => tracing::warn!(peer = %peer.id, "cluster link down: {r}"),
            None => tracing::warn!(peer = %peer.id, "cluster link down"),
        }
        link.service.peer_down(i as u8);
        // What the cores queued before they hear of it is dropped (counted), not kept.
        let mut dropped = 0;
        for q in &peer.queues {
            while let Some(b) = q.pop() {
                if let Outbound::Push(v) = b {
                    dropped += v.len() as u64;
                }
            }
        }
        peer.dropped.fetch_add(dropped, Relaxed);
    }
    conn.close(0u32.into(), b"superseded");
}

/// A newer link with the same peer exists.
async fn superseded(link: &Link, i: usize, epoch: u64) {
    let mut rx = link.epochs[i].subscribe();
    let _ = rx.wait_for(|&e| e != epoch).await;
}

async fn write_batches(
    link: &Link,
    i: usize,
    epoch: u64,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
) {
    let peer = &link.state.peers[i];
    let gone = superseded(link, i, epoch);
    tokio::pin!(gone);
    let mut bell = tokio::select! {
        b = link.bells[i].lock() => b,
        _ = &mut gone => return,
        _ = conn.closed() => return,
    };
    // Everything revoked so far, for a peer that may have missed it.
    let mut buf = Vec::new();
    {
        let now = unix_now();
        let mut revoked = link.revoked.lock().expect("revocations lock");
        revoked.retain(|_, r| r.expires_at > now);
        for r in revoked.values() {
            wire::encode_revoke(&mut buf, r);
        }
    }
    loop {
        buf.append(&mut link.control_out[i].lock().expect("control lock"));
        let mut pushes = 0u64;
        for q in &peer.queues {
            while let Some(batch) = q.pop() {
                match batch {
                    Outbound::Presence(v) => wire::encode_presence(&mut buf, &v),
                    Outbound::Push(v) => {
                        pushes += v.len() as u64;
                        wire::encode_pushes(&mut buf, &v);
                    }
                }
            }
        }
        if !buf.is_empty() {
            // Everything due for this node, from every core, in one write.
            if let Err(e) = send.write_all(&buf).await {
                tracing::debug!(peer = %peer.id, "link write failed: {e}");
                peer.dropped.fetch_add(pushes, Relaxed);
                return;
            }
            peer.writes.fetch_add(1, Relaxed);
            peer.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
            peer.messages_sent.fetch_add(pushes, Relaxed);
            buf.clear();
            if buf.capacity() > wire::SOFT_FRAME * 4 {
                buf = Vec::new();
            }
        }
        tokio::select! {
            _ = bell.recv() => {},
            _ = &mut gone => return,
            _ = conn.closed() => return,
        }
    }
}

async fn read_frames(
    link: &Link,
    i: usize,
    epoch: u64,
    mut recv: quinn::RecvStream,
) -> Result<(), String> {
    let peer = &link.state.peers[i];
    let mut decoder = wire::Decoder::default();
    let gone = superseded(link, i, epoch);
    tokio::pin!(gone);
    loop {
        let chunk = tokio::select! {
            c = recv.read_chunk(64 * 1024, true) => c,
            _ = &mut gone => return Ok(()),
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(_) => return Ok(()), // the connection closed; `serve` logs why
        };
        peer.bytes_received
            .fetch_add(chunk.bytes.len() as u64, Relaxed);
        decoder.feed(&chunk.bytes);
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            match frame {
                Frame::Presence(entries) => {
                    link.service.remote_presence(i as u8, entries);
                }
                Frame::Push(pushes) => {
                    peer.received.fetch_add(pushes.len() as u64, Relaxed);
                    let jobs = pushes.into_iter().map(|p| PushJob {
                        context: p.context,
                        user: p.user,
                        filter: PathFilter::new(&p.filter),
                        text: p.text,
                        coalesce: false,
                        at: p.at,
                        prev: p.prev,
                    });
                    link.service.deliver_from_peer(jobs);
                }
                Frame::Revoke(r) => {
                    remember(link, &r);
                    link.service.revoke_from_peer(r);
                }
                Frame::Hello { .. } => return Err("a second hello".into()),
            }
        }
    }
}

fn remember(link: &Link, r: &Revocation) {
    let mut revoked = link.revoked.lock().expect("revocations lock");
    if revoked.len() >= MAX_REVOCATIONS {
        let now = unix_now();
        revoked.retain(|_, r| r.expires_at > now);
    }
    if revoked.len() < MAX_REVOCATIONS {
        revoked.insert(r.id, *r);
    }
}

/// Sessions terminated on this node: to every peer now (and to later links, by the replay).
async fn revocations(link: Arc<Link>, mut control: mpsc::Receiver<()>) {
    while control.recv().await.is_some() {
        while let Some(r) = link.state.revocations.pop() {
            remember(&link, &r);
            for (i, out) in link.control_out.iter().enumerate() {
                if link.state.peers[i].up() {
                    wire::encode_revoke(&mut out.lock().expect("control lock"), &r);
                    link.state.ring(i);
                }
            }
        }
    }
}

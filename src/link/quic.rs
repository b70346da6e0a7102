//! The link thread: QUIC connections to the peers, one unidirectional stream per direction,
//! frames in and out, and the commands that keep the cores' view of each peer current.
//!
//! A link has an epoch. The newest link with a peer is its current one; only the current link
//! marks the peer up or down, and a link that is superseded (the peer restarted and dialled
//! again before the old connection timed out) stops. When a link becomes current, every core
//! forgets what that peer held (`PeerUp`) and queues its whole presence for it; the peer does
//! the same, so the directories re-sync after any outage.
use super::members::{Link, Phase};
use super::tls;
use crate::cluster::wire::{self, Frame};
use crate::cluster::{Bells, ClusterState, Outbound};
use crate::config::{ClusterConfig, Discovery, NatsConfig};
use crate::facade::{PushJob, Service};
use crate::service::path_filter::PathFilter;
use crate::service::session::{unix_now, Revocation};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Revocations remembered for peers that connect later (each until its session's expiry).
const MAX_REVOCATIONS: usize = 1_000_000;

/// The running link thread.
pub struct Cluster {
    pub state: Arc<ClusterState>,
    link: Arc<Link>,
    leave_wait: Duration,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    /// Bind the QUIC endpoint and start linking to the peers. Errors (certificates, bind)
    /// are returned before anything runs.
    pub fn start(
        cfg: &ClusterConfig,
        nats: &NatsConfig,
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
        let discovery = cfg.discovery;
        let members = super::discovery::Settings::new(cfg, nats);
        let control = bells.control;
        let thread_state = state.clone();
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
                    let link = Arc::new(Link::new(thread_state, service, endpoint, discovery));
                    let _ = ready_tx.send(Ok(link.clone()));
                    run(link, members, control, stop_rx).await;
                });
            })
            .map_err(|e| format!("cannot spawn the cluster thread: {e}"))?;
        let link = match ready_rx.recv() {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("cluster thread ended before binding".into()),
        };
        tracing::info!(
            node = %cfg.node_id,
            listen = %cfg.listen,
            discovery = ?cfg.discovery,
            peers = cfg.peers.len(),
            "cluster link listening"
        );
        Ok(Cluster {
            state,
            link,
            leave_wait: Duration::from_millis(cfg.leave_wait_ms),
            stop,
            thread: Some(thread),
        })
    }

    /// The node drains: tell every peer to stop routing to it, and wait until they confirm
    /// (at most `cluster.leave_wait_ms`). Call before the sockets are closed.
    pub async fn leave(&self) {
        let link = self.link.clone();
        let wait = self.leave_wait;
        let started = std::time::Instant::now();
        let (confirmed, asked) = link.leave(wait).await;
        let took = started.elapsed().as_millis();
        if confirmed == asked {
            tracing::info!(
                peers = asked,
                ms = took as u64,
                "cluster: left; every linked peer stopped routing here"
            );
        } else {
            tracing::warn!(
                confirmed,
                asked,
                ms = took as u64,
                "cluster: left; not every linked peer confirmed in time"
            );
        }
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
    link: Arc<Link>,
    members: super::discovery::Settings,
    control: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let accept = {
        let link = link.clone();
        tokio::spawn(async move {
            while let Some(incoming) = link.endpoint.accept().await {
                tokio::spawn(accepted(incoming, link.clone()));
            }
        })
    };
    tokio::spawn(revocations(link.clone(), control));
    let configured: Vec<_> = link
        .state
        .peers()
        .map(|(_, p)| (p.id(), p.addr()))
        .collect();
    for (id, addr) in configured {
        link.learn(&id, addr);
    }
    let discovery = match link.discovery {
        Discovery::Static => {
            link.phase.send_replace(Phase::Serving);
            None
        }
        Discovery::Nats => Some(tokio::spawn(super::discovery::run(
            link.clone(),
            members,
            stop.clone(),
        ))),
    };
    let _ = stop.wait_for(|s| *s).await;
    if let Some(d) = discovery {
        // It takes this node out of the bucket on its way out.
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    link.endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), link.endpoint.wait_idle()).await;
    accept.abort();
}

/// Keep a link to peer `i`, redialling with backoff (0.1 s doubling to 2 s), while the slot
/// holds the node of `generation`.
pub(super) async fn dial(link: Arc<Link>, i: u16, generation: u64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(peer) = link.state.peer(i).filter(|p| p.generation() == generation) else {
            return;
        };
        let (id, addr) = (peer.id(), peer.addr());
        let attempt = match link.endpoint.connect(addr, &id) {
            Ok(c) => c.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                let hello = async {
                    let send = open_with_hello(&conn, &link.state).await?;
                    let (recv, said, instance) = read_hello(&conn).await?;
                    if said != *id {
                        return Err(format!("peer at {addr} says it is {said:?}"));
                    }
                    Ok((send, recv, instance))
                };
                match tokio::time::timeout(Duration::from_secs(3), hello).await {
                    Ok(Ok((send, recv, instance))) => {
                        serve(&link, i, conn, send, recv, instance).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %id, "hello failed: {e}");
                        conn.close(1u32.into(), b"bad hello");
                        tokio::time::sleep(backoff).await;
                    }
                    Err(_) => conn.close(1u32.into(), b"no hello"),
                }
            }
            Err(e) => {
                tracing::debug!(peer = %id, "dial failed: {e}");
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
        let (recv, id, instance) = read_hello(&conn).await.map_err(|_| String::new())?;
        let i = match link.discovery {
            Discovery::Static => link.state.find(&id),
            // Its certificate is the cluster's: a member discovery has not shown yet.
            Discovery::Nats => link.learn(&id, conn.remote_address()),
        };
        let Some(i) = i else { return Err(id) };
        let send = open_with_hello(&conn, &link.state)
            .await
            .map_err(|_| String::new())?;
        Ok((i, send, recv, instance))
    };
    match tokio::time::timeout(Duration::from_secs(3), hello).await {
        Ok(Ok((i, send, recv, instance))) => serve(&link, i, conn, send, recv, instance).await,
        Ok(Err(id)) if id.is_empty() => conn.close(1u32.into(), b"bad hello"),
        Ok(Err(id)) => {
            tracing::warn!(peer = %id, "a node that is not a configured peer connected; closing");
            conn.close(2u32.into(), b"unknown node");
        }
        Err(_) => conn.close(1u32.into(), b"no hello"),
    }
}

async fn open_with_hello(
    conn: &quinn::Connection,
    me: &ClusterState,
) -> Result<quinn::SendStream, String> {
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    wire::encode_hello(&mut hello, &me.node_id, me.instance);
    s.write_all(&hello).await.map_err(|e| e.to_string())?;
    Ok(s)
}

/// The peer's stream, and the id and run its hello names.
async fn read_hello(conn: &quinn::Connection) -> Result<(quinn::RecvStream, String, u64), String> {
    let mut s = conn.accept_uni().await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1024 {
        return Err("hello too large".into());
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let (node, instance) = wire::accept_hello(wire::decode_frame(&body))?;
    Ok((s, node, instance))
}

/// Run an established link with peer `i` until it closes or a newer link supersedes it.
async fn serve(
    link: &Arc<Link>,
    i: u16,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    instance: u64,
) {
    let Some(peer) = link.state.peer(i) else {
        conn.close(2u32.into(), b"unknown node");
        return;
    };
    let epoch = link.next_epoch.fetch_add(1, Relaxed);
    let was = peer.current.swap(epoch, Relaxed);
    peer.epoch.send_replace(epoch);
    peer.connects.fetch_add(1, Relaxed);
    // A new link is a new run of the node: whatever it said about leaving was the old one.
    peer.leaving.store(false, Relaxed);
    link.leave_acks.send_modify(|a| a.remove(i));
    // First thing on the link: what arrived of the peer's pushes, which settles what a failed
    // link left unconfirmed on its side.
    let (received, continued) = {
        let mut ledger = peer.ledger();
        let received = ledger.link_up(instance);
        (received, ledger.continued())
    };
    wire::encode_ack(
        &mut peer.control_out.lock().expect("control lock"),
        received,
    );
    if was == 0 {
        tracing::info!(peer = %peer.id(), "cluster link up");
    }
    // Cores forget the peer's old presence (a continued run's once it had time to re-send
    // it) and queue theirs for it, before any frame of this link is read (the commands are
    // ordered in each core's inbox).
    link.service.peer_up(i, continued);
    if *link.phase.borrow() == Phase::Leaving {
        // This node drains: the newcomer must not route here either.
        wire::encode_leaving(&mut peer.control_out.lock().expect("control lock"));
    }
    let reader = read_frames(link, i, epoch, recv);
    let writer = write_batches(link, i, epoch, &conn, send);
    tokio::select! {
        r = reader => if let Err(e) = r {
            tracing::warn!(peer = %peer.id(), "closing the link: {e}");
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
            Some(r) => tracing::warn!(peer = %peer.id(), "cluster link down: {r}"),
            None => tracing::warn!(peer = %peer.id(), "cluster link down"),
        }
        peer.ledger().link_down();
        // Its presence stays known (pushes for its users count as lost, not silently
        // dropped) until the link is back and re-syncs it, or the node is forgotten.
        link.service.peer_unreachable(i);
        // What the cores queued before they hear of it is dropped (counted), not kept.
        let dropped = drain_queues(peer);
        peer.dropped.fetch_add(dropped, Relaxed);
        peer.count_unsent(link.state.cores(), dropped);
    }
    conn.close(0u32.into(), b"superseded");
}

/// Empty the cores' queues for a peer whose link failed; returns how many pushes were in
/// them. Their users (and the users the cores had queued to tell it about) are told to the
/// peer's run when a link with it is back (`Ledger::take_missed`).
fn drain_queues(peer: &crate::cluster::PeerState) -> u64 {
    let mut dropped = 0;
    let mut ledger = peer.ledger();
    for q in &peer.queues {
        while let Some(b) = q.pop() {
            match b {
                Outbound::Push(v) => {
                    dropped += v.len() as u64;
                    for p in &v {
                        ledger.missed().add(p.context, &p.user);
                    }
                }
                // About the run the failed link was with, if it continued an earlier one.
                Outbound::Missed { all, users } if ledger.continued() => {
                    ledger.missed().merge(all, users)
                }
                Outbound::Missed { .. } | Outbound::Presence(_) => {}
            }
        }
    }
    dropped
}

/// A newer link with the same peer exists.
async fn superseded(peer: &crate::cluster::PeerState, epoch: u64) {
    let mut rx = peer.epoch.subscribe();
    let _ = rx.wait_for(|&e| e != epoch).await;
}

async fn write_batches(
    link: &Link,
    i: u16,
    epoch: u64,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
) {
    let Some(peer) = link.state.peer(i) else {
        return;
    };
    let gone = superseded(peer, epoch);
    tokio::pin!(gone);
    let mut bell = tokio::select! {
        b = peer.bell.lock() => b,
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
        buf.append(&mut peer.control_out.lock().expect("control lock"));
        let mut pushes = 0u64;
        for q in &peer.queues {
            while let Some(batch) = q.pop() {
                match batch {
                    Outbound::Presence(v) => wire::encode_presence(&mut buf, &v),
                    Outbound::Push(v) => {
                        pushes += v.len() as u64;
                        // Counted before the write ends: the peer's acks settle what arrived.
                        peer.ledger()
                            .wrote(v.iter().map(|p| (p.context, p.user.clone())));
                        wire::encode_pushes(&mut buf, &v);
                    }
                    // Told with the link's own once it settled (one frame, mostly). A new
                    // run of the peer has none of the sockets that missed them.
                    Outbound::Missed { all, users } => {
                        let mut ledger = peer.ledger();
                        if ledger.continued() {
                            ledger.missed().merge(all, users);
                        }
                    }
                }
            }
        }
        let missed = peer.ledger().take_missed();
        if let Some((all, users)) = &missed {
            wire::encode_missed(&mut buf, *all, users);
        }
        if !buf.is_empty() {
            // Everything due for this node, from every core, in one write.
            if let Err(e) = send.write_all(&buf).await {
                tracing::debug!(peer = %peer.id(), "link write failed: {e}");
                peer.dropped.fetch_add(pushes, Relaxed);
                if let Some((all, users)) = missed {
                    // Told again on the next link.
                    peer.ledger().missed().merge(all, users);
                }
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
    link: &Arc<Link>,
    i: u16,
    epoch: u64,
    mut recv: quinn::RecvStream,
) -> Result<(), String> {
    let Some(peer) = link.state.peer(i) else {
        return Ok(());
    };
    let mut decoder = wire::Decoder::default();
    let gone = superseded(peer, epoch);
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
        let mut pushes_in = 0;
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            match frame {
                // A leaving node is routed nothing: what it still says of its sockets is
                // not kept.
                Frame::Presence(_) if peer.leaving.load(Relaxed) => {}
                Frame::Presence(entries) => {
                    link.service.remote_presence(i, entries);
                }
                Frame::Push(pushes) => {
                    peer.received.fetch_add(pushes.len() as u64, Relaxed);
                    pushes_in += pushes.len() as u64;
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
                Frame::Leaving => link.peer_leaving(i),
                Frame::LeaveAck => link.leave_acks.send_modify(|a| a.insert(i)),
                Frame::Ack(count) => {
                    let settled = {
                        let mut ledger = peer.ledger();
                        ledger.ack(count);
                        ledger.missed_ready()
                    };
                    // The writer tells the peer which users' pushes were lost.
                    if settled {
                        link.state.ring(i);
                    }
                }
                Frame::Missed { all, users } => link.service.catch_up(all, users),
                Frame::Hello { .. } => return Err("a second hello".into()),
            }
        }
        if pushes_in > 0 {
            let received = peer.ledger().received(pushes_in);
            wire::encode_ack(
                &mut peer.control_out.lock().expect("control lock"),
                received,
            );
            link.state.ring(i);
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
        revoked.insert(r.id, r.clone());
    }
}

/// Sessions terminated on this node: to every peer now (and to later links, by the replay).
async fn revocations(link: Arc<Link>, mut control: mpsc::Receiver<()>) {
    while control.recv().await.is_some() {
        while let Some(r) = link.state.revocations.pop() {
            remember(&link, &r);
            for (i, p) in link.state.peers() {
                if p.up() {
                    wire::encode_revoke(&mut p.control_out.lock().expect("control lock"), &r);
                    link.state.ring(i);
                }
            }
        }
    }
}

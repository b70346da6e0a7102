//! One simulated client, as run by a worker: connect (optionally from a chosen source
//! IP), run the scenario until told to stop, and reconnect after churn and storm kicks.
//! Every failure is counted, never panicked.
//!
//! There is one reconnect loop, [`run`], for every protocol: a protocol is a [`Driver`]
//! (one connection attempt, and the scenario loop of an established connection), and
//! [`Life`] times, counts and paces the attempts.
//!
//! - [`control`]: the worker's phase and kicks ([`Slot`]), and how a connection ended.
//! - [`params`], [`shared`]: what all connections of a worker share (parameters, counters).
//! - [`life`]: attempts, reconnect waits (`Retry-After`, backoff), giving up.
//! - [`ws`]: WebSocket setup; [`raw`]: the raw client; [`socketio`]: the Socket.IO clients.
//! - [`recover`]: `--recover` on the raw client: resume parameters, history envelopes.

pub mod control;
pub mod life;
pub mod params;
pub mod raw;
pub mod recover;
pub mod shared;
pub mod socketio;
pub mod tls;
pub mod ws;

use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit};

pub use control::{Kick, Phase, Slot};
pub use params::{ConnParams, ReconnectPolicy, Sessions};
pub use shared::Shared;

use crate::cli::{Protocol, Transport};
use life::Life;
use raw::Raw;
use socketio::polling::SioPolling;
use socketio::websocket::SioWebsocket;

/// Opens connection `id` and runs it until `Phase::Stop` (or the peer goes away); churn
/// and storm kicks (through `slot`) make it close and connect again.
/// `permit` limits in-flight first connects and is released once that attempt is done.
pub async fn run(
    id: u64,
    p: Arc<ConnParams>,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    permit: OwnedSemaphorePermit,
    ctrl: watch::Receiver<Phase>,
) {
    let life = Life::new(id, &p, &shared, &slot, permit);
    let (p, shared, slot) = (&*p, &*shared, &*slot);
    let source = p.source_of(id);
    match (p.protocol, p.transport) {
        (Protocol::Raw, _) => {
            let raw = Raw {
                id,
                p,
                shared,
                slot,
                source,
            };
            life::reconnect_loop(raw, life, ctrl).await
        }
        (Protocol::Socketio, Transport::Websocket) => {
            let sio = SioWebsocket {
                id,
                p,
                shared,
                slot,
                source,
            };
            life::reconnect_loop(sio, life, ctrl).await
        }
        (Protocol::Socketio, Transport::Polling) => {
            let sio = SioPolling::new(id, p, shared, slot);
            life::reconnect_loop(sio, life, ctrl).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio::time::{timeout, Instant};

    use super::*;
    use crate::cli::Scenario;
    use crate::wire::errors::ConnectError;

    fn policy(max_wait_ms: u64) -> ReconnectPolicy {
        ReconnectPolicy {
            storm_timeout: Duration::from_secs(60),
            max_wait: Duration::from_millis(max_wait_ms),
            delay: Duration::from_secs(1),
            delay_max: Duration::from_secs(5),
        }
    }

    fn params(target: SocketAddr, max_wait_ms: u64) -> Arc<ConnParams> {
        Arc::new(ConnParams {
            url: format!("ws://{target}/ws"),
            protocol: Protocol::Raw,
            transport: Transport::Websocket,
            eio: 4,
            target,
            source_addrs: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            scenario: Scenario::Hold,
            message_bytes: 32,
            interval: Duration::from_secs(1),
            echo_timeout: Duration::from_secs(1),
            tls: None,
            origin: None,
            headers: Vec::new(),
            max_message_bytes: 1 << 20,
            sessions: None,
            reconnect: policy(max_wait_ms),
            recover: false,
        })
    }

    /// Accepts WebSockets (echoing nothing), except that connections number
    /// `refused` (0-based) are answered `503` with `Retry-After: 1`.
    async fn server(refused: std::ops::Range<usize>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                if refused.contains(&n) {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 6\r\n\
                              Retry-After: 1\r\nConnection: close\r\n\r\nbusy\r\n",
                        )
                        .await;
                } else {
                    tokio::spawn(async move {
                        if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn refusal_keeps_retry_after() {
        let addr = server(0..1).await;
        let e = ws::connect(&params(addr, 100), 0, None, None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            e,
            ConnectError {
                kind: "http_503".to_string(),
                retry_after: Some(1)
            }
        );
    }

    /// Runs client `id` in a task; the phase is sent through the returned sender.
    async fn start(
        id: u64,
        p: Arc<ConnParams>,
        shared: &Arc<Shared>,
        slot: &Arc<Slot>,
    ) -> (watch::Sender<Phase>, tokio::task::JoinHandle<()>) {
        let (ctrl_tx, ctrl_rx) = watch::channel(Phase::Run);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let task = tokio::spawn(run(id, p, shared.clone(), slot.clone(), permit, ctrl_rx));
        (ctrl_tx, task)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < give_up, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn storm_and_churn_reconnect() {
        // Connection 0 is accepted; after the storm drop, 1 and 2 are refused with 503.
        let addr = server(1..3).await;
        // Waits are capped at 20 ms so that the test is fast.
        let p = params(addr, 20);
        let shared = Arc::new(Shared::new());
        let slot = Arc::new(Slot::default());
        let (ctrl_tx, task) = start(7, p, &shared, &slot).await;
        until("connected", || shared.open.load(Relaxed) == 1).await;
        assert_eq!(shared.connected.load(Relaxed), 1);

        *shared.storm_at.lock().unwrap() = Some(Instant::now());
        assert!(slot.kick(&shared, Kick::Storm));
        until("storm reconnect", || {
            shared.storm_reconnected.load(Relaxed) == 1
        })
        .await;
        let c = shared.counters();
        assert_eq!(
            (
                c.reconnect_attempts,
                c.reconnect_failed,
                c.reconnect_retries
            ),
            (3, 2, 2)
        );
        assert_eq!(c.reconnect_failed_by_kind.get("http_503"), Some(&2));
        assert_eq!((c.retry_after_waits, c.retry_after_max_s), (2, 1));
        assert_eq!((c.open, c.reconnecting, c.dropped), (1, 0, 0));
        assert_eq!(c.connected, 1, "reconnects are not first connects");

        assert!(slot.kick(&shared, Kick::Churn));
        until("churn reconnect", || shared.reconnects.load(Relaxed) == 2).await;
        let c = shared.counters();
        assert_eq!((c.storm_reconnected, c.reconnect_failed, c.open), (1, 2, 1));
        assert_eq!(c.reconnecting, 0);

        ctrl_tx.send(Phase::Stop).unwrap();
        timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shared.open.load(Relaxed), 0);
        assert_eq!(shared.dropped.load(Relaxed), 0);
    }

    /// A history endpoint: the first connection gets a fresh marker and one push, then
    /// drops (no close frame); the next ones get a marker `recovered: true`. Returns the
    /// address and the request URIs.
    // The handshake callback's signature is tungstenite's (its error is a whole response).
    #[allow(clippy::result_large_err)]
    async fn history_server() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::{handshake::server, Message};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let uris = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = uris.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let record = move |req: &server::Request, resp| {
                    seen.lock().unwrap().push(req.uri().to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, record).await else {
                    continue;
                };
                let marker = |resumed: bool, offset: u64| {
                    let m = serde_json::json!({"type": "recovery", "resumed": resumed,
                        "recovered": resumed, "epoch": "00000000000000aa", "offset": offset,
                        "replayed": 0});
                    Message::text(m.to_string())
                };
                if n == 0 {
                    let push = serde_json::json!({"type": "push", "epoch": "00000000000000aa",
                        "offset": 5, "data": r#"{"seq":0,"ts":1,"user":1,"user_seq":0}"#});
                    let _ = ws.send(marker(false, 0)).await;
                    let _ = ws.send(Message::text(push.to_string())).await;
                    // Dropped here: the TCP connection ends without a close frame.
                } else {
                    let _ = ws.send(marker(true, 5)).await;
                    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
                }
            }
        });
        (addr, uris)
    }

    #[tokio::test]
    async fn recover_resumes_after_a_drop() {
        let (addr, uris) = history_server().await;
        let mut p = params(addr, 20);
        Arc::get_mut(&mut p).unwrap().recover = true;
        let shared = Arc::new(Shared::new());
        let slot = Arc::new(Slot::tracking(1));
        let (ctrl_tx, task) = start(0, p, &shared, &slot).await;
        until("resumed", || {
            slot.stream().unwrap().counts(None).resumes_recovered == 1
        })
        .await;
        let uris = uris.lock().unwrap().clone();
        assert_eq!(uris, ["/ws", "/ws?epoch=00000000000000aa&since=5"]);
        let c = slot.stream().unwrap().counts(None);
        assert_eq!(
            (c.markers, c.resumes_attempted, c.protocol_errors),
            (2, 1, 0)
        );
        let counters = shared.counters();
        assert_eq!((counters.dropped, counters.reconnects), (1, 1));
        assert_eq!((counters.push_received, counters.reconnecting), (1, 0));
        ctrl_tx.send(Phase::Stop).unwrap();
        timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn storm_gives_up_at_its_deadline() {
        // Every reconnect is refused.
        let addr = server(1..usize::MAX).await;
        let mut p = params(addr, 20);
        Arc::get_mut(&mut p).unwrap().reconnect.storm_timeout = Duration::from_millis(300);
        let shared = Arc::new(Shared::new());
        let slot = Arc::new(Slot::default());
        let (_ctrl_tx, task) = start(1, p, &shared, &slot).await;
        until("connected", || shared.open.load(Relaxed) == 1).await;
        *shared.storm_at.lock().unwrap() = Some(Instant::now());
        assert!(slot.kick(&shared, Kick::Storm));
        timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let c = shared.counters();
        assert_eq!(
            (c.storm_gave_up, c.storm_reconnected, c.reconnecting),
            (1, 0, 0)
        );
        assert!(c.reconnect_failed >= 2, "{}", c.reconnect_failed);
        assert_eq!(c.open, 0);
    }
}

//! A Socket.IO client over a WebSocket (`transport=websocket`).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use crate::wire::frame::Incoming as Message;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::client::control::{End, Kick, Phase, Slot};
use crate::client::life::Driver;
use crate::client::params::{ConnParams, CLOSE_TIMEOUT};
use crate::client::shared::Shared;
use crate::client::socketio::{on_connect_packet, on_packet, sleep_opt, Action, Keepalive};
use crate::client::ws::{abort_ws, close, connect, send_text, Ws};
use crate::wire::engineio::parse_open;
use crate::wire::errors::ConnectError;

/// A Socket.IO client over a WebSocket (reconnecting after churn and storm kicks).
pub struct SioWebsocket<'a> {
    pub id: u64,
    pub p: &'a ConnParams,
    pub shared: &'a Shared,
    pub slot: &'a Slot,
    pub source: Option<IpAddr>,
}

impl Driver for SioWebsocket<'_> {
    type Conn = (Ws, Keepalive);

    async fn connect(&mut self) -> Result<(Ws, Keepalive), ConnectError> {
        ws_connect(self.p, self.id, self.source).await
    }

    async fn drive(
        &mut self,
        (mut ws, mut ka): (Ws, Keepalive),
        ctrl: &mut watch::Receiver<Phase>,
    ) -> End {
        ws_drive(self.p, self.shared, self.slot, &mut ws, &mut ka, ctrl).await
    }
}

/// The next text frame (WebSocket pings are answered by tungstenite).
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            None => return Err("eof".to_string()),
            Some(Err(e)) => return Err(e),
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) => return Err("closed_by_server".to_string()),
            Some(Ok(_)) => {}
        }
    }
}

/// WebSocket handshake, open packet, namespace connect.
async fn ws_connect(
    p: &ConnParams,
    id: u64,
    source: Option<IpAddr>,
) -> Result<(Ws, Keepalive), ConnectError> {
    let mut ws = connect(p, id, source, None).await?;
    let open = parse_open(&next_text(&mut ws).await?)?;
    let mut ka = Keepalive::new(p.eio, &open);
    if p.eio >= 4 {
        send_text(&mut ws, "40".to_string()).await?;
    }
    let mut out = Vec::new();
    loop {
        let text = next_text(&mut ws).await?;
        let done = on_connect_packet(&mut ka, &text, &mut out)?;
        for reply in out.drain(..) {
            send_text(&mut ws, reply).await?;
        }
        if done {
            return Ok((ws, ka));
        }
    }
}

/// An established Socket.IO WebSocket until stopped, dropped or kicked.
async fn ws_drive(
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    ws: &mut Ws,
    ka: &mut Keepalive,
    ctrl: &mut watch::Receiver<Phase>,
) -> End {
    let mut server_closed = false;
    let mut phase = *ctrl.borrow_and_update();
    let mut leaving = End::Stopped;
    loop {
        if phase == Phase::Stop {
            // As socket.io-client's disconnect(): leave the namespace, close the transport.
            let _ = Box::pin(timeout(CLOSE_TIMEOUT, ws.send_text("41"))).await;
            close(ws).await;
            return leaving;
        }
        let (ping_at, dead_at) = if server_closed {
            (None, None)
        } else {
            (ka.next_ping, ka.dead_at)
        };
        tokio::select! {
            biased;
            changed = ctrl.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *ctrl.borrow_and_update() };
            }
            _ = slot.kicked() => match slot.pending() {
                Some(Kick::Storm) => {
                    abort_ws(ws);
                    return End::Kicked;
                }
                Some(Kick::Churn) => {
                    // A graceful close, as when stopping.
                    leaving = End::Kicked;
                    phase = Phase::Stop;
                }
                None => {}
            },
            msg = ws.next() => match msg {
                None => {
                    return End::Dropped(if server_closed { "closed_by_server" } else { "eof" }.to_string())
                }
                Some(Err(e)) => {
                    return End::Dropped(if server_closed { "closed_by_server".to_string() } else { e })
                }
                Some(Ok(Message::Text(text))) => match on_packet(p.scenario, shared, ka, &text) {
                    Action::None => {}
                    Action::Reply(r) => {
                        if let Err(kind) = send_text(ws, r).await {
                            return End::Dropped(kind);
                        }
                    }
                    Action::End(kind) => {
                        close(ws).await;
                        return End::Dropped(kind.to_string());
                    }
                },
                Some(Ok(Message::Binary(_))) => { shared.unsolicited.fetch_add(1, Relaxed); }
                Some(Ok(Message::Ping(_))) => { shared.pings.fetch_add(1, Relaxed); }
                Some(Ok(Message::Close(_))) => server_closed = true,
                Some(Ok(_)) => {}
            },
            _ = sleep_opt(ping_at) => {
                if let Err(kind) = send_text(ws, "2".to_string()).await {
                    return End::Dropped(kind);
                }
                ka.ping_sent();
            }
            _ = sleep_opt(dead_at) => {
                close(ws).await;
                return End::Dropped("ping_timeout".to_string());
            }
        }
    }
}

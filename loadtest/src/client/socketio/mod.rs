//! Socket.IO clients (Engine.IO v3 and v4) for `--protocol socketio`: over a WebSocket
//! ([`websocket`]) and over HTTP/1.1 long-polling ([`polling`]). This module holds what
//! both transports share: the keepalive and the handling of incoming packets.
//!
//! What a client does:
//! - WebSocket: the first text frame is the open packet `0{"sid",..,"pingInterval",..}`.
//!   EIO 4: the client sends `40` and waits for `40{"sid":..}`; EIO 3: the server sends
//!   `40` by itself. Only then does the connection count as established.
//! - Polling: `GET ?EIO=..&transport=polling&session=..` answers the open packet; EIO 4:
//!   `POST ..&sid=<sid>` with `40` (answered `ok`); then `GET ..&sid=<sid>` until `40`
//!   arrives (EIO 3: it is queued at the open). After that a GET is always held by the
//!   server until it has packets (or a noop `6` after its polling timeout). Packets the
//!   client owes the server (pongs) are POSTed on the same keep-alive connection between
//!   two GETs; a second connection is opened only to POST while a GET is held (EIO 3
//!   client pings, the close packet `1` when stopping).
//! - Keepalive: EIO 4: the server pings (`2`), the client answers `3`; a client that
//!   hears no ping for pingInterval + pingTimeout drops the connection (`ping_timeout`).
//!   EIO 3: the client pings every pingInterval and expects `3` within pingTimeout.
//! - Pushes arrive as `42["lt","<message>"]`: the message is unwrapped and measured like
//!   a raw push. Other events count as unsolicited.
//! - Stopping: WebSocket: `41` (leave the namespace), then a close frame. Polling: POST
//!   the close packet `1`; the server then answers the held GET.

pub mod polling;
pub mod websocket;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::cli::Scenario;
use crate::client::shared::Shared;
use crate::wire::engineio::{unwrap_push, OpenInfo};

/// Slack on top of pingInterval + pingTimeout for a held GET.
const GET_SLACK: Duration = Duration::from_secs(5);

/// Engine.IO keepalive of one client.
pub struct Keepalive {
    eio: u8,
    interval: Duration,
    timeout: Duration,
    /// The server is considered gone after this (EIO 4: no ping; EIO 3: no pong).
    dead_at: Option<Instant>,
    /// EIO 3: when the client's next ping is due.
    next_ping: Option<Instant>,
}

impl Keepalive {
    fn new(eio: u8, open: &OpenInfo) -> Self {
        let interval = Duration::from_millis(open.ping_interval.max(1));
        let timeout = Duration::from_millis(open.ping_timeout);
        let now = Instant::now();
        let (dead_at, next_ping) = if eio >= 4 {
            (Some(now + interval + timeout), None)
        } else {
            (None, Some(now + interval))
        };
        Keepalive {
            eio,
            interval,
            timeout,
            dead_at,
            next_ping,
        }
    }

    fn on_ping(&mut self) {
        if self.eio >= 4 {
            self.dead_at = Some(Instant::now() + self.interval + self.timeout);
        }
    }

    fn on_pong(&mut self) {
        if self.eio < 4 {
            self.dead_at = None;
        }
    }

    fn ping_sent(&mut self) {
        let now = Instant::now();
        self.next_ping = Some(now + self.interval);
        self.dead_at.get_or_insert(now + self.timeout);
    }

    /// How long a held GET may take before the connection is given up.
    fn get_timeout(&self) -> Duration {
        self.interval + self.timeout + GET_SLACK
    }
}

/// Sleeps until `at`, or forever.
pub async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What to do after a packet from the server.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    /// Send this packet back (a pong).
    Reply(String),
    /// The server ended the session: drop with this kind.
    End(&'static str),
}

/// Handles one Engine.IO packet from the server on an established connection.
pub fn on_packet(scenario: Scenario, shared: &Shared, ka: &mut Keepalive, packet: &str) -> Action {
    let Some(kind) = packet.chars().next() else {
        shared.unsolicited.fetch_add(1, Relaxed);
        return Action::None;
    };
    let data = &packet[1..];
    match kind {
        '2' => {
            shared.pings.fetch_add(1, Relaxed);
            ka.on_ping();
            Action::Reply(format!("3{data}"))
        }
        '3' => {
            shared.pings.fetch_add(1, Relaxed);
            ka.on_pong();
            Action::None
        }
        '6' => Action::None,
        '1' => Action::End("eio_close"),
        '4' => {
            if let Some(event) = data.strip_prefix('2') {
                if scenario == Scenario::Push {
                    if let Some(message) = unwrap_push(event) {
                        if shared.record_push(&message) {
                            return Action::None;
                        }
                    }
                }
            } else if data.starts_with('1') {
                return Action::End("sio_disconnect");
            } else if data.starts_with('4') {
                return Action::End("sio_connect_error");
            }
            shared.unsolicited.fetch_add(1, Relaxed);
            Action::None
        }
        _ => {
            shared.unsolicited.fetch_add(1, Relaxed);
            Action::None
        }
    }
}

/// Handles a packet that arrives before the connect is confirmed. `Ok(true)`: confirmed.
pub fn on_connect_packet(
    ka: &mut Keepalive,
    packet: &str,
    out: &mut Vec<String>,
) -> Result<bool, String> {
    if packet.starts_with("40") {
        return Ok(true);
    }
    if packet.starts_with("44") {
        return Err("sio_connect_error".to_string());
    }
    if packet.starts_with('1') {
        return Err("eio_close".to_string());
    }
    if let Some(data) = packet.strip_prefix('2') {
        ka.on_ping();
        out.push(format!("3{data}"));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        let shared = Shared::new();
        let open = OpenInfo {
            sid: "s".into(),
            ping_interval: 1000,
            ping_timeout: 500,
        };
        let mut ka = Keepalive::new(4, &open);
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "2"),
            Action::Reply("3".into())
        );
        let ts = crate::sysinfo::unix_now_ns();
        let push = format!("42[\"lt\",\"{{\\\"seq\\\":7,\\\"ts\\\":{ts}}}\"]");
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, &push),
            Action::None
        );
        assert_eq!(shared.push_received.load(Relaxed), 1);
        assert_eq!(
            on_packet(Scenario::Hold, &shared, &mut ka, &push),
            Action::None
        );
        assert_eq!(shared.unsolicited.load(Relaxed), 1);
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "41"),
            Action::End("sio_disconnect")
        );
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "1"),
            Action::End("eio_close")
        );
        assert_eq!(
            on_packet(Scenario::Push, &shared, &mut ka, "6"),
            Action::None
        );
        let mut out = Vec::new();
        assert!(on_connect_packet(&mut ka, "40{\"sid\":\"x\"}", &mut out).unwrap());
        assert!(!on_connect_packet(&mut ka, "2", &mut out).unwrap());
        assert_eq!(out, ["3"]);
        assert!(on_connect_packet(&mut ka, "44{\"message\":\"no\"}", &mut out).is_err());
    }
}

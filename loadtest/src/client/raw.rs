//! The raw WebSocket client: every scenario message is one text frame.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::wire::frame::Incoming as Message;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant, Interval, MissedTickBehavior};

use crate::cli::Scenario;
use crate::client::control::{End, Kick, Phase, Slot};
use crate::client::life::Driver;
use crate::client::params::ConnParams;
use crate::client::recover;
use crate::client::shared::Shared;
use crate::client::ws::{abort_ws, close, connect, send_text, Ws};
use crate::rng::mix;
use crate::stats;
use crate::wire::errors::ConnectError;
use crate::wire::messages::{check_payload, echo_payload, parse_echo_payload};

/// How long to wait for outstanding echoes when stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

enum Check {
    Idle,
    Pending { payload: String, deadline: Instant },
    Done,
}

/// A plain WebSocket client.
pub struct Raw<'a> {
    pub id: u64,
    pub p: &'a ConnParams,
    pub shared: &'a Shared,
    pub slot: &'a Slot,
    pub source: Option<IpAddr>,
}

impl Driver for Raw<'_> {
    type Conn = Ws;

    async fn connect(&mut self) -> Result<Ws, ConnectError> {
        let resume = recover::resume_position(self.slot);
        let ws = connect(self.p, self.id, self.source, resume.as_ref()).await?;
        recover::connected(self.slot);
        Ok(ws)
    }

    async fn drive(&mut self, mut ws: Ws, ctrl: &mut watch::Receiver<Phase>) -> End {
        drive(self.id, self.p, self.shared, self.slot, &mut ws, ctrl).await
    }
}

/// The scenario loop of an established connection, until it is stopped, dropped or
/// kicked (churn: graceful close; storm: abrupt drop).
async fn drive(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    ws: &mut Ws,
    ctrl: &mut watch::Receiver<Phase>,
) -> End {
    let mut ticker = echo_ticker(id, p);
    let mut seq = 0u64;
    let mut check = Check::Idle;
    let mut server_closed = false;
    // Echoes of our scenario messages received (`seq` is the number sent).
    let mut echoed = 0u64;
    // Set when stopping (or closing for churn) while echoes are outstanding.
    let mut drain_until: Option<Instant> = None;
    // How the connection ends once it has closed: stopped, or kicked (churn).
    let mut leaving = End::Stopped;
    // If we were connected after an echo check was requested, take part in it too.
    let mut pending_phase = Some(*ctrl.borrow_and_update());

    let outcome: End = loop {
        if let Some(phase) = pending_phase.take() {
            match phase {
                Phase::Run => {}
                Phase::Stop => {
                    // Let the echoes still in flight arrive before closing.
                    if seq > echoed && !server_closed {
                        ticker = None;
                        drain_until
                            .get_or_insert(Instant::now() + p.echo_timeout.min(DRAIN_TIMEOUT));
                    } else {
                        close(ws).await;
                        break leaving;
                    }
                }
                Phase::EchoCheck if matches!(check, Check::Idle) => {
                    match start_check(id, p, shared, ws).await {
                        Ok(pending) => check = pending,
                        Err(kind) => {
                            check = Check::Done;
                            break End::Dropped(kind);
                        }
                    }
                }
                Phase::EchoCheck => {}
            }
        }
        let check_deadline = match &check {
            Check::Pending { deadline, .. } => Some(*deadline),
            _ => None,
        };
        tokio::select! {
            biased;
            changed = ctrl.changed() => {
                pending_phase = Some(if changed.is_err() { Phase::Stop } else { *ctrl.borrow_and_update() });
            }
            _ = slot.kicked(), if drain_until.is_none() => match slot.pending() {
                Some(Kick::Storm) => {
                    abort_ws(ws);
                    break End::Kicked;
                }
                Some(Kick::Churn) => {
                    leaving = End::Kicked;
                    if seq > echoed && !server_closed {
                        // Let the echoes in flight arrive first, as when stopping.
                        ticker = None;
                        drain_until = Some(Instant::now() + p.echo_timeout.min(DRAIN_TIMEOUT));
                    } else {
                        close(ws).await;
                        break End::Kicked;
                    }
                }
                None => {}
            },
            msg = ws.next() => match msg {
                None => break End::Dropped(if server_closed { "closed_by_server" } else { "eof" }.to_string()),
                Some(Err(e)) => break End::Dropped(if server_closed { "closed_by_server".to_string() } else { e }),
                Some(Ok(Message::Text(text))) => {
                    if on_text(id, p, shared, slot, &text, &mut check) {
                        echoed += 1;
                        if drain_until.is_some() && echoed >= seq {
                            close(ws).await;
                            break leaving;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => { shared.unsolicited.fetch_add(1, Relaxed); }
                Some(Ok(Message::Ping(_))) => { shared.pings.fetch_add(1, Relaxed); }
                Some(Ok(Message::Close(_))) => server_closed = true,
                Some(Ok(_)) => {}
            },
            _ = async { sleep_until(check_deadline.unwrap()).await }, if check_deadline.is_some() => {
                check = Check::Done;
                shared.check_failed.fetch_add(1, Relaxed);
            }
            _ = async { sleep_until(drain_until.unwrap()).await }, if drain_until.is_some() => {
                close(ws).await;
                break leaving;
            }
            _ = async { ticker.as_mut().unwrap().tick().await }, if ticker.is_some() && !server_closed => {
                seq += 1;
                if let Err(kind) = send_echo(id, seq - 1, p, shared, ws).await {
                    break End::Dropped(kind);
                }
            }
        }
    };
    // A check that was requested but never answered on this connection fails.
    let check_requested =
        *ctrl.borrow() == Phase::EchoCheck || pending_phase == Some(Phase::EchoCheck);
    if matches!(check, Check::Pending { .. }) || (check_requested && matches!(check, Check::Idle)) {
        shared.check_failed.fetch_add(1, Relaxed);
    }
    outcome
}

/// Echo scenario: sends message `seq` (counted as sent, or as a send error).
async fn send_echo(
    id: u64,
    seq: u64,
    p: &ConnParams,
    shared: &Shared,
    ws: &mut Ws,
) -> Result<(), String> {
    let payload = echo_payload(id, seq, shared.now_us(), p.message_bytes);
    match send_text(ws, payload).await {
        Ok(()) => {
            shared.sent.fetch_add(1, Relaxed);
            Ok(())
        }
        Err(kind) => {
            shared.send_errors.fetch_add(1, Relaxed);
            Err(kind)
        }
    }
}

/// Echo scenario: the send timer of connection `id` (a per-connection phase offset).
fn echo_ticker(id: u64, p: &ConnParams) -> Option<Interval> {
    match p.scenario {
        Scenario::Echo => {
            let period = p.interval.max(Duration::from_millis(1));
            let offset = Duration::from_micros(mix(id) % (period.as_micros() as u64).max(1));
            let mut t = tokio::time::interval_at(Instant::now() + offset, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(t)
        }
        Scenario::Hold | Scenario::Push | Scenario::Churn | Scenario::Storm => None,
    }
}

/// Echo check: sends this connection's check message. A failed send counts as a failed
/// check and a send error; it drops the connection (the kind is returned).
async fn start_check(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    ws: &mut Ws,
) -> Result<Check, String> {
    let payload = check_payload(id, shared.now_us());
    let deadline = Instant::now() + p.echo_timeout;
    match send_text(ws, payload.clone()).await {
        Ok(()) => Ok(Check::Pending { payload, deadline }),
        Err(kind) => {
            shared.check_failed.fetch_add(1, Relaxed);
            shared.send_errors.fetch_add(1, Relaxed);
            Err(kind)
        }
    }
}

/// Handles a text message; returns true if it was the echo of one of our scenario messages.
fn on_text(
    id: u64,
    p: &ConnParams,
    shared: &Shared,
    slot: &Slot,
    text: &str,
    check: &mut Check,
) -> bool {
    if text.starts_with("chk:") {
        if let Check::Pending { payload, .. } = check {
            if text == payload.as_str() {
                shared.check_ok.fetch_add(1, Relaxed);
            } else {
                shared.mismatches.fetch_add(1, Relaxed);
                shared.check_failed.fetch_add(1, Relaxed);
            }
            *check = Check::Done;
        } else {
            shared.mismatches.fetch_add(1, Relaxed);
        }
        return false;
    }
    if p.recover && recover::on_text(slot, shared, text) {
        return false;
    }
    if p.scenario == Scenario::Push && shared.record_push(text) {
        return false;
    }
    if text.starts_with("e:") {
        match parse_echo_payload(text, p.message_bytes) {
            Some((eid, _seq, t_us)) if eid == id => {
                shared.received.fetch_add(1, Relaxed);
                let rtt = shared.now_us().saturating_sub(t_us);
                stats::record(&mut shared.latency.lock().unwrap(), rtt);
                true
            }
            _ => {
                shared.mismatches.fetch_add(1, Relaxed);
                false
            }
        }
    } else {
        // Something the server pushed on its own (not an echo of ours).
        shared.unsolicited.fetch_add(1, Relaxed);
        false
    }
}

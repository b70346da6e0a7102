//! The session on a virtual clock: every test is milliseconds of test time, no sockets, no
//! threads. Handles are plain numbers: `WS` a WebSocket, `GET1`, `GET2`... polling GETs.
use super::*;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::{BodyFormat, EioVersion};
use std::borrow::Cow;

mod ending;
mod recovery;

type A = Action<u32>;

const WS: u32 = 1;
const WS2: u32 = 2;
const GET1: u32 = 11;
const GET2: u32 = 12;
const GET3: u32 = 13;
const GET4: u32 = 14;

const INTERVAL: u64 = 25_000;
const TIMEOUT: u64 = 20_000;
const POLL: u64 = 30_000;

fn cfg() -> Settings {
    Settings {
        ping_interval_ms: INTERVAL,
        ping_timeout_ms: TIMEOUT,
        polling_timeout_ms: POLL,
        max_buffered_packets: 1_000,
        max_outbound_bytes: 1 << 20,
        max_http_body_bytes: 1_000_000,
    }
}

/// The session under test with its clock and what it asked for so far.
struct Harness {
    s: Session<u32>,
    now: u64,
    cfg: Settings,
}

fn drain(out: Actions<u32>) -> Vec<A> {
    out.collect()
}

fn send(to: u32, packet: &str) -> A {
    Action::Send {
        to,
        packet: Cow::Owned(packet.to_string()),
    }
}

fn close(to: u32, last: &[&str], why: CloseReason) -> A {
    Action::Close {
        to,
        last: boxed(last),
        why,
    }
}

fn answer(request: u32, packets: &[&str]) -> A {
    Action::Answer {
        request,
        packets: boxed(packets),
    }
}

fn boxed(packets: &[&str]) -> Vec<Box<str>> {
    packets.iter().map(|&p| p.into()).collect()
}

impl Harness {
    /// A v4/v3 polling session opened at t=0 by GET1 (its answer checked and dropped).
    fn polling(eio: EioVersion) -> Harness {
        Self::polling_with(eio, cfg())
    }

    fn polling_with(eio: EioVersion, cfg: Settings) -> Harness {
        let mut out = Actions::new();
        let s = Session::polling(eio, "sid".into(), 0, GET1, &cfg, &mut out);
        let got = drain(out);
        let first_deadline = match eio {
            EioVersion::V4 => INTERVAL,
            EioVersion::V3 => INTERVAL + TIMEOUT,
        };
        assert_eq!(got[0], Action::Schedule { at: first_deadline });
        let Action::Answer { request, packets } = &got[1] else {
            panic!("{got:?}");
        };
        assert_eq!((*request, packets.len()), (GET1, 1));
        assert!(packets[0].starts_with("0{\"sid\":\"sid\",\"upgrades\":[\"websocket\"]"));
        assert_eq!(got.len(), 2);
        Harness { s, now: 0, cfg }
    }

    /// A session on its own WebSocket `WS`, greeted.
    fn websocket(eio: EioVersion) -> (Harness, Vec<A>) {
        let s = Session::websocket(eio, "sid".into(), WS);
        let mut h = Harness {
            s,
            now: 0,
            cfg: cfg(),
        };
        let greeting = h.call(|s, _, cfg, out| s.greet(cfg, out));
        (h, greeting)
    }

    fn at(&mut self, now: u64) -> &mut Self {
        assert!(now >= self.now, "time goes forward");
        self.now = now;
        self
    }

    fn call(
        &mut self,
        f: impl FnOnce(&mut Session<u32>, u64, &Settings, &mut Actions<u32>),
    ) -> Vec<A> {
        let mut out = Actions::new();
        f(&mut self.s, self.now, &self.cfg, &mut out);
        drain(out)
    }

    fn get(&mut self, request: u32) -> Vec<A> {
        let eio = self.s.eio();
        self.call(|s, now, cfg, out| s.get(now, request, eio, cfg, out).unwrap())
    }

    fn post(&mut self, body: &str) -> Vec<A> {
        let eio = self.s.eio();
        self.call(|s, now, cfg, out| {
            s.post(now, eio, BodyFormat::Text, body.as_bytes(), cfg, out)
                .unwrap()
        })
    }

    fn text(&mut self, via: Option<u32>, text: &str) -> Vec<A> {
        self.call(|s, _, cfg, out| s.frame(via, false, text.as_bytes(), cfg, out))
    }

    fn push(&mut self, data: &str) -> (bool, Vec<A>) {
        let mut sent = false;
        let got = self.call(|s, _, cfg, out| sent = s.push(data, None, cfg, out));
        (sent, got)
    }

    fn flush(&mut self) -> Vec<A> {
        self.call(|s, _, _, out| s.flush(out))
    }

    fn timeout(&mut self) -> Vec<A> {
        self.call(|s, now, cfg, out| s.handle_timeout(now, cfg, out))
    }

    fn end(&mut self, why: CloseReason) -> Vec<A> {
        self.call(|s, now, cfg, out| s.end(now, why, cfg, out))
    }
}

#[test]
fn polling_hold_push_probe_upgrade_ping_then_transport_closed() {
    let mut h = Harness::polling(EioVersion::V4);
    // The client joins "/" with a POST; the CONNECT answer waits for the next GET.
    h.at(5);
    assert_eq!(h.post("40"), [Action::FlushLater]);
    assert_eq!(h.flush(), []);
    h.at(10);
    assert_eq!(h.get(GET2), [answer(GET2, &["40{\"sid\":\"sid\"}"])]);
    // Nothing queued: the next GET is held for the polling timeout.
    h.at(20);
    assert_eq!(
        h.get(GET3),
        [Action::Hold {
            request: GET3,
            until: 20 + POLL
        }]
    );
    assert!(h.s.holds(GET3));
    // A push answers it at the end of the turn.
    h.at(100);
    let (sent, got) = h.push("[\"news\",1]");
    assert!(sent);
    assert_eq!(got, [Action::FlushLater]);
    assert_eq!(h.flush(), [answer(GET3, &["42[\"news\",1]"])]);
    assert!(!h.s.holds(GET3));
    // Held again; the client opens a WebSocket and probes it.
    h.at(110);
    assert_eq!(h.get(GET4).len(), 1);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    assert!(
        !h.s.attach_websocket(WS2, EioVersion::V4),
        "one WebSocket at a time"
    );
    h.at(120);
    assert_eq!(
        h.text(Some(WS), "2probe"),
        [send(WS, "3probe"), answer(GET4, &["6"])]
    );
    // Until the upgrade packet, pushes still queue for polling.
    h.at(130);
    assert_eq!(h.push("[\"a\"]").1, [Action::FlushLater]);
    assert_eq!(h.flush(), [], "no GET held");
    // The upgrade packet: the queue goes to the WebSocket.
    h.at(140);
    assert_eq!(
        h.text(Some(WS), "5"),
        [
            Action::Count(Stat::Upgrade),
            Action::SendAll {
                to: WS,
                packets: boxed(&["42[\"a\"]"])
            }
        ]
    );
    // No more polling; everything goes through the WebSocket.
    let eio = h.s.eio();
    let refused = h.call(|s, now, cfg, out| {
        assert_eq!(s.get(now, GET1, eio, cfg, out), Err(BadRequest::Refused));
    });
    assert_eq!(refused, []);
    assert_eq!(h.push("[\"b\"]").1, [send(WS, "42[\"b\"]")]);
    // v4 heartbeat: the server pings through the WebSocket.
    h.at(INTERVAL);
    assert_eq!(
        h.timeout(),
        [
            Action::Count(Stat::PingSent),
            send(WS, "2"),
            Action::Schedule { at: 2 * INTERVAL }
        ]
    );
    // The WebSocket dies (its idle timeout): the session ends with it.
    h.at(INTERVAL + 5);
    let got = h.call(|s, _, _, out| s.websocket_closed(WS, out));
    assert_eq!(
        got,
        [
            close(WS, &[], CloseReason::Normal),
            Action::Retire,
            Action::Free
        ]
    );
    assert!(!h.s.is_polling());
}

#[test]
fn polling_heartbeat_then_silent_client_times_out() {
    let mut h = Harness::polling(EioVersion::V4);
    h.at(1_000);
    assert_eq!(h.get(GET2).len(), 1);
    // The ping goes to the held GET; the client is alive through it.
    h.at(INTERVAL);
    assert_eq!(
        h.timeout(),
        [
            Action::Count(Stat::PingSent),
            Action::FlushLater,
            Action::Schedule { at: 2 * INTERVAL }
        ]
    );
    assert_eq!(h.flush(), [answer(GET2, &["2"])]);
    // The client never comes back: at its last sign of life plus interval plus timeout, it
    // is gone.
    h.at(2 * INTERVAL);
    assert_eq!(
        h.timeout(),
        [
            Action::Count(Stat::PingSent),
            Action::FlushLater,
            Action::Schedule {
                at: INTERVAL + INTERVAL + TIMEOUT
            }
        ]
    );
    h.at(INTERVAL + INTERVAL + TIMEOUT - 1);
    assert_eq!(
        h.timeout().last(),
        Some(&Action::Schedule {
            at: 2 * INTERVAL + TIMEOUT
        })
    );
    h.at(2 * INTERVAL + TIMEOUT);
    assert_eq!(
        h.timeout(),
        [
            Action::Count(Stat::ClosedIdle),
            Action::Retire,
            Action::Free
        ]
    );
}

#[test]
fn held_get_superseded_or_timed_out_gets_a_noop() {
    let mut h = Harness::polling(EioVersion::V4);
    h.post("40");
    h.get(GET4);
    h.at(10);
    h.get(GET2);
    h.at(20);
    assert_eq!(
        h.get(GET3),
        [
            answer(GET2, &["6"]),
            Action::Hold {
                request: GET3,
                until: 20 + POLL
            }
        ]
    );
    h.at(20 + POLL);
    assert_eq!(
        h.call(|s, _, _, out| s.release_held(out)),
        [answer(GET3, &["6"])]
    );
    // A held GET whose connection went away is forgotten: the push waits for the next GET.
    h.get(GET4);
    h.s.held_closed(GET4);
    h.push("[\"x\"]");
    assert_eq!(h.flush(), []);
    assert_eq!(h.get(GET1), [answer(GET1, &["42[\"x\"]"])]);
}

#[test]
fn probe_without_a_held_get_makes_the_next_get_return_at_once() {
    let mut h = Harness::polling(EioVersion::V4);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    assert_eq!(h.text(Some(WS), "2probe"), [send(WS, "3probe")]);
    assert_eq!(h.get(GET2), [answer(GET2, &["6"])]);
}

#[test]
fn transport_closed_mid_probe_falls_back_to_polling() {
    let mut h = Harness::polling(EioVersion::V4);
    h.post("40");
    h.get(GET2);
    assert!(!h.s.attach_websocket(WS, EioVersion::V3), "another version");
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    h.text(Some(WS), "2probe");
    assert_eq!(h.call(|s, _, _, out| s.websocket_closed(WS, out)), []);
    assert!(!h.s.is_websocket_of(WS));
    // Still polling (the probe's noop first): a push reaches the next GET; an upgrade
    // packet from the dead WebSocket is ignored; another WebSocket may try again.
    h.at(50);
    assert_eq!(h.get(GET3), [answer(GET3, &["6"])]);
    assert_eq!(h.get(GET4).len(), 1);
    h.push("[\"p\"]");
    assert_eq!(h.flush(), [answer(GET4, &["42[\"p\"]"])]);
    assert_eq!(h.text(Some(WS), "5"), []);
    assert!(h.s.attach_websocket(WS2, EioVersion::V4));
}

#[test]
fn v3_polling_joins_the_default_namespace_implicitly_and_pings_itself() {
    let mut h = Harness::polling(EioVersion::V3);
    // socket.io 2: the default namespace's connect follows on the next GET.
    h.at(10);
    assert_eq!(h.get(GET2), [answer(GET2, &["40"])]);
    assert!(h.s.joined("/"));
    assert_eq!(h.s.push_namespace(), Some("/"));
    // The client pings (v3 payload: length-prefixed); the pong waits for a GET.
    h.at(20);
    assert_eq!(h.post("1:2"), [Action::FlushLater]);
    assert_eq!(h.get(GET3), [answer(GET3, &["3"])]);
    // No server pings in v3: its first deadline is its liveness.
    h.at(INTERVAL);
    assert_eq!(
        h.timeout(),
        [Action::Schedule {
            at: 20 + INTERVAL + TIMEOUT
        }]
    );
}

#[test]
fn websocket_greeting_and_pings() {
    let (mut h, greeting) = Harness::websocket(EioVersion::V3);
    assert_eq!(greeting.len(), 2);
    assert!(
        matches!(&greeting[0], Action::Send { to: WS, packet } if packet.starts_with("0{\"sid\":\"sid\",\"upgrades\":[]"))
    );
    assert_eq!(greeting[1], send(WS, "40"));
    // v3: the client pings, the server answers; the keepalive is a WebSocket ping.
    assert_eq!(h.text(None, "2"), [send(WS, "3")]);
    assert_eq!(h.call(|s, _, _, out| assert!(!s.ping(out))), []);
    let (mut h, greeting) = Harness::websocket(EioVersion::V4);
    assert_eq!(greeting.len(), 1);
    let mut pinged = false;
    assert_eq!(h.call(|s, _, _, out| pinged = s.ping(out)), [send(WS, "2")]);
    assert!(pinged);
    assert_eq!(h.text(None, "3"), [], "pong");
    // v4 pushes need a namespace joined.
    assert_eq!(h.push("[\"n\"]"), (false, vec![]));
    assert_eq!(
        h.text(None, "40/chat,"),
        [send(WS, "40/chat,{\"sid\":\"sid\"}")]
    );
    assert_eq!(h.push("[\"n\"]"), (true, vec![send(WS, "42/chat,[\"n\"]")]));
}

#[test]
fn namespaces_are_limited() {
    let (mut h, _) = Harness::websocket(EioVersion::V4);
    for i in 0..MAX_NAMESPACES {
        let got = h.text(None, &format!("40/n{i},"));
        assert_eq!(got, [send(WS, &format!("40/n{i},{{\"sid\":\"sid\"}}"))]);
    }
    // Joining again is confirmed; one more is refused.
    assert_eq!(h.text(None, "40/n0,").len(), 1);
    assert_eq!(
        h.text(None, "40/extra,"),
        [send(WS, "44/extra,{\"message\":\"too many namespaces\"}")]
    );
    assert!(!h.s.joined("/extra"));
    // Leaving makes room.
    assert_eq!(h.text(None, "41/n0,"), []);
    assert_eq!(h.text(None, "40/extra,").len(), 1);
    assert!(h.s.joined("/extra"));
}

#[test]
fn events_acks_and_binary_attachments() {
    let (mut h, _) = Harness::websocket(EioVersion::V4);
    // Not joined: ignored.
    assert_eq!(h.text(None, "42[\"e\",1]"), []);
    h.text(None, "40");
    assert_eq!(
        h.text(None, "427[\"e\",1]"),
        [
            Action::Event {
                data: "[\"e\",1]".into()
            },
            send(WS, "437[]")
        ]
    );
    // A binary event with two attachments: handed over once both arrived.
    let head = "452-9[\"up\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
    assert_eq!(h.text(None, head), []);
    assert_eq!(
        h.call(|s, _, cfg, out| s.frame(None, true, b"\x01\x02", cfg, out)),
        []
    );
    let got = h.call(|s, _, cfg, out| s.frame(None, true, b"\x03", cfg, out));
    assert_eq!(
        got,
        [
            Action::Event {
                data: "[\"up\",{\"_binary\":\"AQI=\"},{\"_binary\":\"Aw==\"}]".into()
            },
            send(WS, "439[]")
        ]
    );
    // A binary ack's attachments are skipped.
    assert_eq!(h.text(None, "461-3[{\"_placeholder\":true,\"num\":0}]"), []);
    assert_eq!(
        h.call(|s, _, cfg, out| s.frame(None, true, b"\x00", cfg, out)),
        []
    );
}

#[test]
fn malformed_packets_close_the_session() {
    let (mut h, _) = Harness::websocket(EioVersion::V4);
    assert_eq!(
        h.text(None, "9"),
        [
            Action::Count(Stat::ProtocolError),
            close(WS, &[], CloseReason::MalformedSocketIo)
        ]
    );
    // v3 binary frames carry a type byte.
    let (mut h, _) = Harness::websocket(EioVersion::V3);
    let got = h.call(|s, _, cfg, out| s.frame(None, true, b"\x07x", cfg, out));
    assert_eq!(got[0], Action::Count(Stat::ProtocolError));
    // A polling session: closed with its close packet to the held GET.
    let mut h = Harness::polling(EioVersion::V4);
    h.get(GET2);
    assert_eq!(
        h.post("4{"),
        [
            Action::Count(Stat::ProtocolError),
            answer(GET2, &["1"]),
            Action::Retire,
            Action::Free
        ]
    );
    let eio = h.s.eio();
    h.call(|s, now, cfg, out| assert!(s.post(now, eio, BodyFormat::Text, b"x", cfg, out).is_err()));
}

#[test]
fn buffering_is_bounded_and_drops_are_counted() {
    let mut cfg = cfg();
    cfg.max_buffered_packets = 2;
    let mut h = Harness::polling_with(EioVersion::V4, cfg);
    h.post("40");
    assert_eq!(h.push("[\"1\"]"), (true, vec![Action::FlushLater]));
    assert_eq!(
        h.push("[\"2\"]"),
        (false, vec![Action::Count(Stat::DroppedPacket)])
    );
    h.get(GET2);
    // Bytes too: one packet over max_outbound_bytes is dropped.
    let mut cfg = self::cfg();
    cfg.max_outbound_bytes = 4096;
    let mut h = Harness::polling_with(EioVersion::V4, cfg);
    h.post("40");
    h.get(GET2);
    let big = format!("[\"{}\"]", "x".repeat(4096));
    assert_eq!(
        h.push(&big),
        (false, vec![Action::Count(Stat::DroppedPacket)])
    );
    assert!(h.push("[\"small\"]").0);
}

#[test]
fn disconnect_packets_name_every_joined_namespace() {
    let got = |eio, namespaces: &[&str]| {
        let (mut h, _) = Harness::websocket(eio);
        for n in namespaces {
            h.text(None, &format!("40{n},"));
        }
        let packets = h.s.disconnect_packets();
        packets.iter().map(|p| p.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(got(EioVersion::V4, &[""]), ["41"]);
    assert_eq!(got(EioVersion::V4, &["/chat", ""]), ["41/chat,", "41"]);
    assert_eq!(got(EioVersion::V4, &[]), Vec::<String>::new());
    // Socket.IO 2 clients are in "/" without asking.
    assert_eq!(got(EioVersion::V3, &[]), ["41"]);
    assert_eq!(got(EioVersion::V3, &["/chat"]), ["41", "41/chat,"]);
    assert_eq!(got(EioVersion::V3, &["", "/chat"]), ["41", "41/chat,"]);
}

#[test]
fn actions_keep_their_order_past_the_inline_room() {
    let mut out = Actions::<u32>::new();
    for at in 0..20 {
        out.push(Action::Schedule { at });
        if at == 3 {
            assert_eq!(out.pop(), Some(Action::Schedule { at: 0 }));
        }
    }
    let ats: Vec<u64> = out
        .map(|a| match a {
            Action::Schedule { at } => at,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ats, (1..20).collect::<Vec<_>>());
}

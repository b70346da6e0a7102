//! Connection state recovery on the virtual clock: private session ids in CONNECT answers,
//! offsets on pushes, the answer to a restore, what is parked and when.
use super::*;
use crate::service::engineio::recovery::{offset_string, Claim, ParkNamespace, Pid};
use crate::service::history::Position;

const EPOCH: u64 = 0xe;

fn at(offset: u64) -> Position {
    Position {
        epoch: EPOCH,
        offset,
    }
}

fn pid(tag: u64) -> Pid {
    Pid { epoch: EPOCH, tag }
}

fn fresh(tag: u64, start: u64) -> Resumed {
    Resumed {
        pid: pid(tag),
        start: at(start),
        sid: None,
        missed: Vec::new(),
    }
}

fn resume(nsp: &str, claim: Option<Claim>) -> A {
    Action::Resume {
        nsp: nsp.into(),
        claim,
    }
}

fn connected(nsp: &str, sid: &str, tag: u64) -> String {
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    format!(
        "40{prefix}{{\"sid\":\"{sid}\",\"pid\":\"{}\"}}",
        pid(tag).encode()
    )
}

impl Harness {
    /// A v4 session on its own WebSocket with recovery, greeted.
    fn recovering() -> Harness {
        let (mut h, _) = Harness::websocket(EioVersion::V4);
        h.s.enable_recovery();
        h
    }

    fn resumed(&mut self, nsp: &str, r: Resumed) -> Vec<A> {
        self.call(|s, _, cfg, out| s.resumed(nsp, r, cfg, out))
    }

    fn push_at(&mut self, data: &str, offset: u64) -> Vec<A> {
        self.call(|s, _, cfg, out| {
            s.push(data, Some(at(offset)), cfg, out);
        })
    }
}

#[test]
fn a_connect_asks_the_driver_then_is_answered_with_a_pid_and_pushes_carry_offsets() {
    let mut h = Harness::recovering();
    assert!(h.s.recovery());
    // Nothing joined until the driver answered.
    assert_eq!(h.text(None, "40"), [resume("/", None)]);
    assert!(!h.s.joined("/"));
    assert_eq!(h.push_at("[\"news\",1]", 5), []);
    assert_eq!(
        h.resumed("/", fresh(1, 5)),
        [send(WS, &connected("/", "sid", 1))]
    );
    assert!(h.s.joined("/"));
    // Every push carries its offset as its last argument (none without a position).
    let off = offset_string(at(6));
    assert_eq!(off, "000000000000000e-6");
    assert_eq!(
        h.push_at("[\"news\",{\"n\":1}]", 6),
        [send(WS, &format!("42[\"news\",{{\"n\":1}},\"{off}\"]"))]
    );
    assert_eq!(
        h.push_at(" [\"bare\"] \n", 6)[0],
        send(WS, &format!("42[\"bare\",\"{off}\"]"))
    );
    assert_eq!(h.push("[\"news\",2]").1, [send(WS, "42[\"news\",2]")]);
    // Not an array with something in it (another transcoder's output): as it is.
    assert_eq!(h.push_at("[]", 7), [send(WS, "42[]")]);
    assert_eq!(h.push_at("\"x\"", 7), [send(WS, "42\"x\"")]);
    // A second namespace asks too; its claim is parsed for the driver.
    let p = pid(3).encode();
    let got = h.text(
        None,
        &format!("40/chat,{{\"pid\":\"{p}\",\"offset\":\"{off}\"}}"),
    );
    let claim = Claim::parse(&format!("{{\"pid\":\"{p}\",\"offset\":\"{off}\"}}"));
    assert_eq!(got, [resume("/chat", claim)]);
}

#[test]
fn a_restore_answers_the_same_pid_and_socket_id_then_what_was_missed_in_order() {
    let mut h = Harness::recovering();
    h.text(None, "40{\"pid\":\"x\"}");
    let r = Resumed {
        pid: pid(7),
        start: at(2),
        sid: Some("old-sid".into()),
        missed: vec![(at(3), "[\"a\"]".into()), (at(9), "[\"b\",{}]".into())],
    };
    assert_eq!(
        h.resumed("/", r),
        [
            send(WS, &connected("/", "old-sid", 7)),
            send(WS, "42[\"a\",\"000000000000000e-3\"]"),
            send(WS, "42[\"b\",{},\"000000000000000e-9\"]"),
        ]
    );
    // A CONNECT again (already joined) is answered with its private session as it is.
    assert_eq!(
        h.text(None, "40"),
        [send(WS, &connected("/", "old-sid", 7))]
    );
}

#[test]
fn a_polling_restore_goes_out_with_the_next_get() {
    let mut h = Harness::polling(EioVersion::V4);
    h.s.enable_recovery();
    h.at(5);
    assert_eq!(h.post("40"), [resume("/", None)]);
    let r = Resumed {
        missed: vec![(at(4), "[\"a\"]".into())],
        ..fresh(1, 3)
    };
    assert_eq!(h.resumed("/", r), [Action::FlushLater, Action::FlushLater]);
    assert_eq!(
        h.get(GET2),
        [answer(
            GET2,
            &[
                &connected("/", "sid", 1),
                "42[\"a\",\"000000000000000e-4\"]"
            ]
        )]
    );
}

#[test]
fn namespaces_over_the_limit_are_refused_when_answered() {
    let mut h = Harness::recovering();
    for i in 0..MAX_NAMESPACES {
        let nsp = format!("/n{i}");
        assert_eq!(h.text(None, &format!("40{nsp},")), [resume(&nsp, None)]);
        h.resumed(&nsp, fresh(i as u64, 0));
    }
    assert_eq!(
        h.text(None, "40/extra,"),
        [send(WS, "44/extra,{\"message\":\"too many namespaces\"}")]
    );
    // (Several CONNECTs in one payload ask before any is answered.)
    assert_eq!(
        h.resumed("/late", fresh(99, 0)),
        [send(WS, "44/late,{\"message\":\"too many namespaces\"}")]
    );
}

#[test]
fn a_lost_websocket_parks_its_namespaces_once() {
    let mut h = Harness::recovering();
    h.text(None, "40/chat,");
    h.resumed("/chat", fresh(1, 3));
    h.text(None, "40");
    let restored = Resumed {
        sid: Some("old".into()),
        ..fresh(2, 4)
    };
    h.resumed("/", restored);
    h.text(None, "40/left,");
    h.resumed("/left", fresh(3, 5));
    assert_eq!(h.text(None, "41/left,"), [], "a DISCONNECT: not parked");
    assert_eq!(
        h.call(|s, _, _, out| s.transport_closed(out)),
        [Action::Park(vec![
            ParkNamespace {
                pid: pid(1),
                nsp: "/chat".into(),
                sid: "sid".into(),
                start: at(3),
                pushes: false,
            },
            ParkNamespace {
                pid: pid(2),
                nsp: "/".into(),
                sid: "old".into(),
                start: at(4),
                pushes: true,
            },
        ])]
    );
    assert_eq!(h.call(|s, _, _, out| s.transport_closed(out)), []);
}

#[test]
fn ends_the_client_does_not_come_back_from_park_nothing() {
    let joined = || {
        let mut h = Harness::recovering();
        h.text(None, "40");
        h.resumed("/", fresh(1, 0));
        h
    };
    let closed = |h: &mut Harness| h.call(|s, _, _, out| s.transport_closed(out));
    // The login ended.
    let mut h = joined();
    h.end(CloseReason::SessionTerminated);
    assert_eq!(closed(&mut h), []);
    // The node drains.
    let mut h = joined();
    h.call(|s, now, cfg, out| s.shut_down(now, CloseReason::ShuttingDown, cfg, out));
    assert_eq!(closed(&mut h), []);
    // Garbage from the client.
    let mut h = joined();
    h.text(None, "9");
    assert_eq!(closed(&mut h), []);
    // Its Engine.IO close packet is a transport close: parked.
    let mut h = joined();
    h.text(None, "1");
    assert_eq!(closed(&mut h).len(), 1);
    // Nothing joined, nothing parked.
    let mut h = Harness::recovering();
    assert_eq!(closed(&mut h), []);
}

#[test]
fn a_polling_session_parks_when_it_closes_or_goes_silent() {
    let parked = |got: &[A]| {
        got.iter()
            .position(|a| matches!(a, Action::Park(_)))
            .expect("parked")
    };
    // The client's close packet: parked before the session is retired and freed.
    let mut h = Harness::polling(EioVersion::V4);
    h.s.enable_recovery();
    h.post("40");
    h.resumed("/", fresh(1, 0));
    h.get(GET2);
    let got = h.post("1");
    let free = got.iter().position(|a| *a == Action::Free).expect("freed");
    assert!(parked(&got) < free, "{got:?}");
    // Silent for a ping interval and timeout.
    let mut h = Harness::polling(EioVersion::V4);
    h.s.enable_recovery();
    h.post("40");
    h.resumed("/", fresh(1, 0));
    h.get(GET2);
    h.at(INTERVAL + TIMEOUT);
    let got = h.timeout();
    assert!(parked(&got) < got.len() - 1, "{got:?}");
    // Its login ended: its last packets handed over, nothing parked.
    let mut h = Harness::polling(EioVersion::V4);
    h.s.enable_recovery();
    h.post("40");
    h.resumed("/", fresh(1, 0));
    h.get(GET2);
    h.end(CloseReason::SessionTerminated);
    h.at(1_000);
    let mut got = h.get(GET3);
    got.extend(h.get(GET4));
    assert!(got.contains(&Action::Free), "{got:?}");
    assert!(!got.iter().any(|a| matches!(a, Action::Park(_))));
}

#[test]
fn engine_io_v3_has_no_recovery() {
    let (mut h, _) = Harness::websocket(EioVersion::V3);
    h.s.enable_recovery();
    assert!(!h.s.recovery());
    assert_eq!(h.text(None, "40/chat,"), [send(WS, "40/chat,")]);
    assert_eq!(h.push_at("[\"news\",1]", 5), [send(WS, "42[\"news\",1]")]);
    assert_eq!(h.call(|s, _, _, out| s.transport_closed(out)), []);
}

#[test]
fn a_dropped_transport_parks_then_closes() {
    let mut h = Harness::recovering();
    h.text(None, "40");
    h.resumed("/", fresh(1, 0));
    assert!(h.s.holds_pid("/", pid(1)));
    assert!(!h.s.holds_pid("/chat", pid(1)) && !h.s.holds_pid("/", pid(2)));
    let got = h.call(|s, _, _, out| s.drop_transport(out));
    assert!(matches!(got[0], Action::Park(_)), "{got:?}");
    assert_eq!(got[1..], [close(WS, &[], CloseReason::Normal)]);
    assert_eq!(
        h.call(|s, _, _, out| s.transport_closed(out)),
        [],
        "parked once"
    );
    // A polling one is freed.
    let mut h = Harness::polling(EioVersion::V4);
    h.s.enable_recovery();
    h.post("40");
    h.resumed("/", fresh(1, 0));
    let got = h.call(|s, _, _, out| s.drop_transport(out));
    assert!(matches!(got[0], Action::Park(_)), "{got:?}");
    assert_eq!(got.last(), Some(&Action::Free));
}

#[test]
fn a_full_polling_queue_drops_the_session_rather_than_a_packet() {
    let small = Settings {
        max_buffered_packets: 3,
        ..cfg()
    };
    let parked_then_freed = |got: &[A]| {
        let park = got.iter().position(|a| matches!(a, Action::Park(_)));
        let free = got.iter().position(|a| *a == Action::Free);
        assert!(
            matches!((park, free), (Some(p), Some(f)) if p < f),
            "{got:?}"
        );
    };
    // Live pushes: the one that does not fit ends the session (parked), none is skipped.
    let mut h = Harness::polling_with(EioVersion::V4, small);
    h.s.enable_recovery();
    h.post("40");
    h.resumed("/", fresh(1, 0));
    h.push_at("[\"a\"]", 1);
    h.push_at("[\"b\"]", 2);
    let got = h.push_at("[\"c\"]", 3);
    assert_eq!(got[0], Action::Count(Stat::DroppedPacket));
    parked_then_freed(&got);
    // A replay that does not fit: the CONNECT answer and what fits, then the same.
    let mut h = Harness::polling_with(EioVersion::V4, small);
    h.s.enable_recovery();
    h.post("40");
    h.get(GET2);
    let missed = (1..10).map(|o| (at(o), format!("[\"m{o}\"]"))).collect();
    let r = Resumed {
        missed,
        ..fresh(1, 0)
    };
    let got = h.resumed("/", r);
    parked_then_freed(&got);
    let Some(Action::Answer { packets, .. }) =
        got.iter().find(|a| matches!(a, Action::Answer { .. }))
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        packets.len(),
        4,
        "CONNECT, two events, the close packet: {packets:?}"
    );
    assert_eq!(&*packets[3], "1");
}

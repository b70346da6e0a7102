//! The end of a session: its login ended, the client closed, the server closed, the node drains.
use super::*;

#[test]
fn session_end_hands_disconnects_then_the_close_packet() {
    // v4: DISCONNECTs to the held GET, the close packet with the next one.
    let mut h = Harness::polling(EioVersion::V4);
    h.post("40");
    h.post("40/chat,");
    h.get(GET2);
    h.at(1_000);
    h.get(GET3);
    assert_eq!(
        h.end(CloseReason::SessionTerminated),
        [
            Action::Retire,
            answer(GET3, &["41", "41/chat,"]),
            Action::Schedule {
                at: 1_000 + TIMEOUT
            }
        ]
    );
    assert!(h.s.is_ending());
    // Ended: a push is not for it any more, the client's packets are dropped, a second end
    // changes nothing.
    assert_eq!(h.post("2"), []);
    assert_eq!(h.end(CloseReason::SessionExpired), []);
    h.at(1_100);
    assert_eq!(h.get(GET4), [answer(GET4, &["1"]), Action::Free]);

    // v3: all in one answer.
    let mut h = Harness::polling(EioVersion::V3);
    h.get(GET2);
    h.get(GET3);
    assert_eq!(
        h.end(CloseReason::SessionTerminated),
        [Action::Retire, answer(GET3, &["41", "1"]), Action::Free]
    );

    // The client does not come: the session goes at the end of the window.
    let mut h = Harness::polling(EioVersion::V4);
    h.end(CloseReason::SessionExpired);
    h.at(TIMEOUT - 1);
    assert_eq!(h.timeout(), [Action::Schedule { at: TIMEOUT }]);
    h.at(TIMEOUT);
    assert_eq!(h.timeout(), [Action::Free]);
}

#[test]
fn session_end_on_websockets() {
    // Its own WebSocket: farewell, then the close frame with the reason.
    let (mut h, _) = Harness::websocket(EioVersion::V4);
    h.text(None, "40");
    assert_eq!(
        h.end(CloseReason::SessionTerminated),
        [close(WS, &["41"], CloseReason::SessionTerminated)]
    );
    // Upgraded polling session: the same through its WebSocket, and the session is over.
    let mut h = Harness::polling(EioVersion::V3);
    assert!(h.s.attach_websocket(WS, EioVersion::V3));
    h.text(Some(WS), "2probe");
    h.text(Some(WS), "5");
    assert_eq!(
        h.end(CloseReason::SessionExpired),
        [
            close(WS, &["41"], CloseReason::SessionExpired),
            Action::Retire,
            Action::Free
        ]
    );
    // Ended while probing: the upgrade packet takes the last packets, then the close.
    let mut h = Harness::polling(EioVersion::V4);
    h.post("40");
    h.get(GET2);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    h.end(CloseReason::SessionTerminated);
    assert_eq!(h.text(Some(WS), "2probe"), [send(WS, "3probe")]);
    assert_eq!(
        h.text(Some(WS), "5"),
        [
            Action::Count(Stat::Upgrade),
            Action::SendAll {
                to: WS,
                packets: boxed(&["41"])
            },
            close(WS, &[], CloseReason::SessionTerminated),
            Action::Free
        ]
    );
}

#[test]
fn client_close_and_server_close() {
    let mut h = Harness::polling(EioVersion::V4);
    h.get(GET2);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    // A drain closes a polling session (its probing WebSocket normally).
    assert_eq!(
        h.call(|s, _, _, out| s.close(CloseReason::ShuttingDown, out)),
        [
            close(WS, &[], CloseReason::Normal),
            answer(GET2, &["1"]),
            Action::Retire,
            Action::Free
        ]
    );
    // The client's close packet ends a POST: what follows is not read.
    let mut h = Harness::polling(EioVersion::V4);
    assert_eq!(h.post("1\u{1e}40"), [Action::Retire, Action::Free]);
    let (mut h, _) = Harness::websocket(EioVersion::V4);
    assert_eq!(h.text(None, "1"), [close(WS, &[], CloseReason::Normal)]);
}

#[test]
fn a_drain_between_the_probe_answer_and_the_upgrade_packet_lets_the_upgrade_finish() {
    let mut h = Harness::polling(EioVersion::V4);
    h.post("40");
    h.get(GET2);
    h.get(GET3);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    // The probe is answered and the held GET released: the client pauses polling and will
    // send its upgrade packet once paused.
    assert_eq!(
        h.text(Some(WS), "2probe"),
        [send(WS, "3probe"), answer(GET3, &["6"])]
    );
    h.at(100);
    let shut = |h: &mut Harness| {
        h.call(|s, now, cfg, out| s.shut_down(now, CloseReason::ShuttingDown, cfg, out))
    };
    // The drain does not close the probe WebSocket under the client's feet.
    assert_eq!(
        shut(&mut h),
        [Action::Retire, Action::Schedule { at: 100 + TIMEOUT }]
    );
    assert!(h.s.is_ending());
    assert_eq!(shut(&mut h), [], "a second drain changes nothing");
    // The upgrade packet takes the close packet, then the WebSocket closes with 1001.
    h.at(150);
    assert_eq!(
        h.text(Some(WS), "5"),
        [
            Action::Count(Stat::Upgrade),
            Action::SendAll {
                to: WS,
                packets: boxed(&["1"])
            },
            close(WS, &[], CloseReason::ShuttingDown),
            Action::Free
        ]
    );

    // A client that never finishes its upgrade: the session goes at the end of the window.
    let mut h = Harness::polling(EioVersion::V4);
    assert!(h.s.attach_websocket(WS, EioVersion::V4));
    h.text(Some(WS), "2probe");
    shut(&mut h);
    h.at(TIMEOUT);
    assert_eq!(
        h.timeout(),
        [close(WS, &[], CloseReason::ShuttingDown), Action::Free]
    );

    // No upgrade in progress: closed at once, as before.
    let mut h = Harness::polling(EioVersion::V4);
    h.get(GET2);
    assert_eq!(
        shut(&mut h),
        [answer(GET2, &["1"]), Action::Retire, Action::Free]
    );
}

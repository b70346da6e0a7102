//! What the connection writes: messages and control frames it encodes, and the replies it
//! owes (Pong, close echo, the close of a protocol error) in their order on the wire.
use super::*;

/// Decodes server frames (unmasked) with our parser + a client inflater.
pub(super) fn decode_server(
    wire: &[u8],
    inflater: &mut flate2::Decompress,
) -> Vec<(bool, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        let h = parse_header(&wire[pos..]).unwrap().unwrap();
        assert!(h.mask.is_none());
        let p = &wire[pos + h.header_len..pos + h.header_len + h.payload_len as usize];
        pos += h.header_len + h.payload_len as usize;
        let payload = if h.rsv1 {
            let mut z = p.to_vec();
            z.extend_from_slice(&deflate::SYNC_TRAILER);
            let mut o = Vec::with_capacity(1 << 20);
            inflater
                .decompress_vec(&z, &mut o, flate2::FlushDecompress::Sync)
                .unwrap();
            o
        } else {
            p.to_vec()
        };
        out.push((h.rsv1, h.opcode.as_u8(), payload));
    }
    out
}

#[test]
fn encode_messages_plain_and_compressed() {
    let mut plain = WsConnection::new(limits(), None);
    let mut out = Vec::new();
    let mut zlib = SharedDeflate::new();
    plain.encode_message(&mut zlib, &mut out, MessageKind::Text, b"hi");
    plain.encode_message(&mut zlib, &mut out, MessageKind::Binary, &[1; 300]);
    let mut inf = flate2::Decompress::new_with_window_bits(false, 15);
    assert_eq!(
        decode_server(&out, &mut inf),
        vec![(false, 1, b"hi".to_vec()), (false, 2, vec![1; 300])]
    );

    for no_ctx in [false, true] {
        for bits in [8u8, 9, 12, 15] {
            let params = DeflateParams {
                server_no_context_takeover: no_ctx,
                server_max_window_bits: bits,
                ..DeflateParams::default()
            };
            let mut conn = WsConnection::new(limits(), Some(params));
            let mut out = Vec::new();
            let mut rng = Rng(7);
            let random: Vec<u8> = (0..70_000).map(|_| rng.next() as u8).collect();
            let msgs: Vec<Vec<u8>> = vec![
                b"tiny".to_vec(),
                br#"{"user":42,"event":"push","body":"hello hello hello hello hello"}"#.to_vec(),
                vec![b'z'; 100_000],
                random.clone(),
                random[..126].to_vec(),
                random[..65535].to_vec(),
                br#"{"user":42,"event":"push","body":"hello hello hello hello hello"}"#.to_vec(),
            ];
            for m in &msgs {
                conn.encode_message(&mut zlib, &mut out, MessageKind::Binary, m);
            }
            let mut inf = flate2::Decompress::new_with_window_bits(false, bits.max(9));
            let got = decode_server(&out, &mut inf);
            assert_eq!(got.len(), msgs.len());
            for (g, m) in got.iter().zip(&msgs) {
                assert_eq!(&g.2, m);
                assert_eq!(g.0, m.len() >= 64);
            }
        }
    }
}

#[test]
fn encode_control_and_close() {
    let mut out = Vec::new();
    WsConnection::encode_control(&mut out, OpCode::Ping, &[7; 200]);
    assert_eq!(out.len(), 2 + 125);
    assert_eq!(&out[..2], &[0x89, 125]);
    let mut out = Vec::new();
    let reason = "é".repeat(100); // 200 bytes
    WsConnection::encode_close(&mut out, 1001, &reason);
    let h = parse_header(&out).unwrap().unwrap();
    assert_eq!(h.opcode, OpCode::Close);
    assert_eq!(h.payload_len, 2 + 122);
    let p = &out[h.header_len..];
    assert_eq!(parse_close(p).unwrap(), (Some(1001), &reason[..122]));
    let mut out = Vec::new();
    WsConnection::encode_close(&mut out, 1005, "ignored");
    assert_eq!(out, vec![0x88, 0]);
}

#[test]
fn random_streams_match_across_splits() {
    // Random mixes of fragmented/unfragmented, control, text/binary frames.
    let mut rng = Rng(42);
    for round in 0..12 {
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        for _ in 0..(1 + rng.below(8)) {
            let len = [0, 1, 5, 125, 126, 1000, 3000][rng.below(7)];
            let payload: Vec<u8> = (0..len).map(|i| b'a' + ((i + round) % 26) as u8).collect();
            let frags = 1 + rng.below(3);
            let text = rng.below(2) == 0;
            let mut start = 0;
            for f in 0..frags {
                let end = if f + 1 == frags {
                    len
                } else {
                    start + rng.below(len - start + 1)
                };
                let op = if f == 0 {
                    if text {
                        1
                    } else {
                        2
                    }
                } else {
                    0
                };
                let fin = if f + 1 == frags { FIN } else { 0 };
                let mask = [rng.next() as u8, 1, 2, rng.next() as u8];
                wire.extend(cframe(fin | op, &payload[start..end], mask));
                if rng.below(3) == 0 {
                    wire.extend(cframe(FIN | 9, &payload[..len.min(10)], mask));
                    expect.push(Ev::Ping(payload[..len.min(10)].to_vec()));
                }
                start = end;
            }
            let kind = if text {
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            expect.push(Ev::Msg(kind, payload));
        }
        let (evs, r) = check_splits(limits(), None, &wire);
        r.unwrap();
        // Compare multisets per kind in order (pings interleave).
        let msgs = |v: &Vec<Ev>| {
            v.iter()
                .filter(|e| matches!(e, Ev::Msg(..)))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(msgs(&evs), msgs(&expect));
        assert_eq!(evs.len(), expect.len());
    }
}

/// The server frames in `out` (uncompressed): (opcode, payload).
fn frames(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut inf = flate2::Decompress::new_with_window_bits(false, 15);
    decode_server(out, &mut inf)
        .into_iter()
        .map(|(_, op, p)| (op, p))
        .collect()
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[test]
fn pong_and_close_echo_are_queued() {
    let mut wire = cframe(FIN | 9, b"p1", M);
    wire.extend(cframe(FIN | 1, b"hi", M));
    wire.extend(cframe(FIN | 9, &[b'x'; 125], M));
    wire.extend(cframe(FIN | 8, b"\x03\xe9going", M));
    wire.extend(cframe(FIN | 9, b"after close", M));
    let (evs, r, out) = check_splits_out(limits(), None, &wire);
    r.unwrap();
    assert_eq!(
        evs,
        vec![
            Ev::Ping(b"p1".to_vec()),
            Ev::Msg(MessageKind::Text, b"hi".to_vec()),
            Ev::Ping(vec![b'x'; 125]),
            Ev::Close(Some(1001), "going".into()),
        ]
    );
    // Each Ping its Pong, then the echo of the client's code (without its reason).
    assert_eq!(
        frames(&out),
        vec![
            (0xA, b"p1".to_vec()),
            (0xA, vec![b'x'; 125]),
            (0x8, close_payload(1001, "")),
        ]
    );
    // A Close without a code is answered with 1000.
    let (evs, r, out) = check_splits_out(limits(), None, &cframe(FIN | 8, b"", M));
    r.unwrap();
    assert_eq!(evs, vec![Ev::Close(None, String::new())]);
    assert_eq!(frames(&out), vec![(0x8, close_payload(1000, ""))]);
}

#[test]
fn protocol_errors_queue_their_close() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![FIN | 1, 2, b'h', b'i'], ProtocolError::UnmaskedFrame),
        (cframe(FIN | 1, &[0xff], M), ProtocolError::InvalidUtf8),
        (cframe(FIN | 8, &[3], M), ProtocolError::InvalidClosePayload),
        (
            cframe(FIN | 8, &[0x03, 0xed], M),
            ProtocolError::InvalidCloseCode,
        ),
        (cframe(FIN | 2, &[0; 200], M), ProtocolError::FrameTooBig),
    ];
    let l = WsLimits {
        max_frame_bytes: 150,
        max_message_bytes: 150,
    };
    for (wire, err) in cases {
        let mut conn = WsConnection::new(l, None);
        let (evs, r, out) = feed_split_out(&mut conn, &wire, &[]);
        assert_eq!((evs, r), (vec![], Err(err)));
        let why = CloseReason::from(err);
        assert_eq!(
            frames(&out),
            vec![(0x8, close_payload(why.code(), why.reason()))],
            "{err:?}"
        );
        assert!([1002, 1007, 1009].contains(&why.code()));
        // Nothing more is read, nothing more is owed.
        let (evs, r, out) = feed_split_out(&mut conn, &cframe(FIN | 9, b"late", M), &[]);
        assert_eq!((evs, r, out), (vec![], Ok(()), vec![]));
        assert_eq!(conn.buf.capacity(), 0);
    }
}

/// The runtime's echo: each message is answered from its borrowed payload, the owed frames
/// drained after each event, so the wire keeps the order of the events; the close of an
/// error comes after the replies to the messages before it.
#[test]
fn replies_keep_event_order() {
    let text = "fragmented ".repeat(20).into_bytes();
    let mut wire = cframe(FIN | 1, b"one", M);
    wire.extend(cframe(FIN | 9, b"ping1", M));
    wire.extend(cframe(1, &text[..100], M));
    wire.extend(cframe(FIN | 9, b"ping2", M));
    wire.extend(cframe(FIN, &text[100..], M));
    wire.extend(cframe(FIN | 2, &[7; 300], M));
    wire.extend(cframe(FIN | 1, &[0xC0, 0x80], M)); // overlong: invalid UTF-8
    wire.extend(cframe(FIN | 1, b"never read", M));
    let echo = |cuts: &[usize]| {
        let mut conn = WsConnection::new(limits(), None);
        let mut zlib = SharedDeflate::new();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for mut piece in pieces(&wire, cuts) {
            let mut rx = conn.read(&mut piece, &mut zlib);
            while let Some(next) = rx.next_event_with_sender() {
                match next {
                    Ok((Event::Message(kind, p), mut tx)) => tx.encode_message(&mut out, kind, p),
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
                rx.poll_transmit(&mut out);
            }
        }
        (frames(&out), errors)
    };
    let (got, errors) = echo(&[]);
    assert_eq!(errors, vec![ProtocolError::InvalidUtf8]);
    let why = CloseReason::from(ProtocolError::InvalidUtf8);
    assert_eq!(
        got,
        vec![
            (0x1, b"one".to_vec()),
            (0xA, b"ping1".to_vec()),
            (0xA, b"ping2".to_vec()),
            (0x1, text.clone()),
            (0x2, vec![7; 300]),
            (0x8, close_payload(why.code(), why.reason())),
        ]
    );
    let mut rng = Rng(3);
    for _ in 0..200 {
        let cuts = random_cuts(&mut rng, wire.len());
        assert_eq!(echo(&cuts), (got.clone(), errors.clone()), "cuts {cuts:?}");
    }
}

/// A caller that drains only at the end: the buffered message is intact, only the latest
/// Ping is answered (RFC 6455 5.5.3), and its Pong precedes the close.
#[test]
fn undrained_pong_gives_way_and_precedes_the_close() {
    let text = "κόσμε ".repeat(40).into_bytes();
    let mut wire = cframe(1, &text[..99], M);
    wire.extend(cframe(FIN | 9, b"first", M));
    wire.extend(cframe(0, &text[99..150], M));
    wire.extend(cframe(FIN | 9, b"second", M));
    wire.extend(cframe(FIN, &text[150..], M));
    wire.extend(cframe(FIN | 8, b"\x03\xe8", M));
    for cuts in [vec![], vec![3, 120, 130, 200], (1..wire.len()).collect()] {
        let mut conn = WsConnection::new(limits(), None);
        let mut zlib = SharedDeflate::new();
        let mut evs = Vec::new();
        for mut piece in pieces(&wire, &cuts) {
            let mut rx = conn.read(&mut piece, &mut zlib);
            while let Some(e) = rx.next_event() {
                evs.push(own(e.unwrap()));
            }
        }
        assert_eq!(
            evs,
            vec![
                Ev::Ping(b"first".to_vec()),
                Ev::Ping(b"second".to_vec()),
                Ev::Msg(MessageKind::Text, text.clone()),
                Ev::Close(Some(1000), String::new()),
            ],
            "cuts {cuts:?}"
        );
        let mut out = Vec::new();
        assert!(conn.poll_transmit(&mut out));
        assert_eq!(
            frames(&out),
            vec![(0xA, b"second".to_vec()), (0x8, close_payload(1000, ""))]
        );
        assert_eq!(conn.buf.capacity(), 0);
    }
}

/// A reader dropped after any event, and a new one made on the rest of the chunk, sees the
/// same events (the runtime does this to hand a Socket.IO packet to its handler).
#[test]
fn reader_can_stop_and_resume() {
    let mut wire = cframe(FIN | 1, b"a", M);
    wire.extend(cframe(2, &[1; 10], M));
    wire.extend(cframe(FIN | 9, b"p", M));
    wire.extend(cframe(FIN, &[2; 10], M));
    wire.extend(cframe(FIN | 1, b"b", M));
    let (expect, r, expect_out) =
        feed_split_out(&mut WsConnection::new(limits(), None), &wire, &[]);
    r.unwrap();
    let mut conn = WsConnection::new(limits(), None);
    let mut zlib = SharedDeflate::new();
    let mut data = wire.clone();
    let (mut pos, mut evs, mut out) = (0, Vec::new(), Vec::new());
    loop {
        let mut rx = conn.read(&mut data[pos..], &mut zlib);
        let Some(e) = rx.next_event() else { break };
        evs.push(own(e.unwrap()));
        rx.poll_transmit(&mut out);
        pos += rx.consumed();
    }
    assert_eq!((evs, out), (expect, expect_out));
    assert_eq!(pos, wire.len());
}

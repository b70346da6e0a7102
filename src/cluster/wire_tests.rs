use super::*;

fn roundtrip(bytes: &[u8]) -> Vec<Frame> {
    // Fed one byte at a time: frames must not depend on read boundaries.
    let mut d = Decoder::default();
    let mut out = Vec::new();
    for b in bytes {
        d.feed(std::slice::from_ref(b));
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
    }
    out
}

#[test]
fn frames_round_trip() {
    let mut out = Vec::new();
    encode_hello(&mut out, "node-a", 99);
    let presence = vec![
        UserPresence {
            context: 1,
            user: 42.into(),
            paths: vec![("/ws".into(), 2), ("/socket.io/".into(), 1)],
        },
        UserPresence {
            context: 1,
            user: 43.into(),
            paths: vec![],
        },
        UserPresence {
            context: 1,
            user: UserId::parse("6f1c1d2e-8d3b-4b0c-9a59-2b8f7d1e0a44").unwrap(),
            paths: vec![("/ws".into(), 1)],
        },
    ];
    encode_presence(&mut out, &presence);
    let pushes = vec![
        RemotePush {
            context: 7,
            user: UserId::parse(&"u".repeat(128)).unwrap(),
            filter: "*".into(),
            text: Arc::from("for a string user"),
            at: None,
            prev: None,
        },
        RemotePush {
            context: 7,
            user: 9.into(),
            filter: "/socket.io/*".into(),
            text: Arc::from("[\"ev\",{\"ü\":1}]"),
            at: None,
            prev: None,
        },
        RemotePush {
            context: 7,
            user: 10.into(),
            filter: "*".into(),
            text: Arc::from("positioned"),
            at: Some(Position {
                epoch: u64::MAX,
                offset: 42,
            }),
            prev: None,
        },
        RemotePush {
            context: 7,
            user: 10.into(),
            filter: "*".into(),
            text: Arc::from("positioned, with the user's previous offset"),
            at: Some(Position {
                epoch: 3,
                offset: 43,
            }),
            prev: Some(40),
        },
    ];
    encode_pushes(&mut out, &pushes);
    let rev = Revocation {
        id: SessionId([5; SESSION_ID_LEN]),
        context: 1,
        user: 2.into(),
        expires_at: 1_800_000_000,
    };
    encode_revoke(&mut out, &rev);
    let rev_alice = Revocation {
        user: UserId::parse("alice").unwrap(),
        ..rev.clone()
    };
    encode_revoke(&mut out, &rev_alice);
    encode_leaving(&mut out);
    encode_leave_ack(&mut out);
    encode_ack(&mut out, 1234);
    let alice = UserId::parse("alice").unwrap();
    let long = UserId::parse(&"ü".repeat(64)).unwrap();
    let missed = vec![(1, 2.into()), (3, alice.clone()), (4, long.clone())];
    encode_missed(&mut out, false, &missed);
    encode_missed(&mut out, true, &[(1, 2.into())]);
    assert_eq!(
        roundtrip(&out),
        vec![
            Frame::Hello {
                version: VERSION,
                node: "node-a".into(),
                instance: 99,
            },
            Frame::Presence(presence),
            Frame::Push(pushes),
            Frame::Revoke(rev),
            Frame::Revoke(rev_alice),
            Frame::Leaving,
            Frame::LeaveAck,
            Frame::Ack(1234),
            Frame::Missed {
                all: false,
                users: missed,
            },
            Frame::Missed {
                all: true,
                users: vec![],
            },
        ]
    );
    let users: Vec<(u32, UserId)> = (0..MISSED_PER_FRAME as u32 + 1)
        .map(|u| (1, u.into()))
        .collect();
    let mut out = Vec::new();
    encode_missed(&mut out, false, &users);
    assert!(out.len() < SOFT_FRAME + 1024);
    let frames = roundtrip(&out);
    assert_eq!(frames.len(), 2, "cut into frames");
    let back: Vec<(u32, UserId)> = frames
        .into_iter()
        .flat_map(|f| match f {
            Frame::Missed { all: false, users } => users,
            _ => panic!("not a missed frame"),
        })
        .collect();
    assert_eq!(back, users);
}

#[test]
fn large_batches_are_split_into_frames() {
    let text: Arc<str> = Arc::from("x".repeat(100_000));
    let pushes: Vec<RemotePush> = (0..50)
        .map(|u| RemotePush {
            context: 1,
            user: u.into(),
            filter: "*".into(),
            text: text.clone(),
            at: None,
            prev: None,
        })
        .collect();
    let mut out = Vec::new();
    encode_pushes(&mut out, &pushes);
    let frames = roundtrip(&out);
    assert!(frames.len() > 1, "one frame of {} bytes", out.len());
    let back: Vec<RemotePush> = frames
        .into_iter()
        .flat_map(|f| match f {
            Frame::Push(v) => v,
            _ => panic!("not a push frame"),
        })
        .collect();
    assert_eq!(back, pushes);
}

#[test]
fn a_hello_of_another_version_is_refused() {
    let hello = |version: u8| {
        let mut out = Vec::new();
        encode_hello(&mut out, "node-b", 7);
        out[5] = version;
        accept_hello(decode_frame(&out[4..]))
    };
    assert_eq!(hello(VERSION), Ok(("node-b".to_string(), 7)));
    assert_eq!(hello(4), Err("link protocol version 4".to_string()));
    assert_eq!(hello(6), Err("link protocol version 6".to_string()));
    let mut ack = Vec::new();
    encode_ack(&mut ack, 1);
    assert_eq!(
        accept_hello(decode_frame(&ack[4..])),
        Err("first frame is not a hello".to_string())
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert_eq!(decode_frame(&[9]), Err(WireError::UnknownType(9)));
    assert_eq!(decode_frame(&[]), Err(WireError::Truncated));
    // A forged count far beyond the bytes present.
    assert_eq!(
        decode_frame(&[3, 0xff, 0xff, 0xff, 0xff]),
        Err(WireError::Truncated)
    );
    assert_eq!(
        decode_frame(&[1, 1, 0, 2, 0xff, 0xfe]),
        Err(WireError::BadUtf8)
    );
    assert_eq!(
        decode_frame(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::TrailingBytes)
    );
    assert_eq!(decode_frame(&[1, 1, 0, 0, 0]), Err(WireError::Truncated));
    assert_eq!(decode_frame(&[7, 0, 0]), Err(WireError::Truncated));
    assert_eq!(
        decode_frame(&[8, 2, 0, 0, 0, 0]),
        Err(WireError::BadFlag(2))
    );
    assert_eq!(
        decode_frame(&[8, 0, 0, 0, 0, 1, 0, 0, 0, 1]),
        Err(WireError::Truncated)
    );
    // Users: an unknown tag, a string that is not a user id, a number as a string.
    let missed = |user: &[u8]| {
        let mut f = vec![8, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        f.extend_from_slice(user);
        decode_frame(&f)
    };
    assert!(missed(&[0, 0, 0, 0, 7]).is_ok());
    assert!(missed(&[1, 3, b'b', b'o', b'b']).is_ok());
    assert_eq!(missed(&[2, 0, 0, 0, 7]), Err(WireError::BadUser));
    assert_eq!(missed(&[1, 0, 0]), Err(WireError::BadUser)); // an empty string
    assert_eq!(missed(&[1, 2, b'a', 0]), Err(WireError::BadUser));
    assert_eq!(missed(&[1, 2, 0xff, 0xfe]), Err(WireError::BadUser));
    assert_eq!(missed(&[1, 2, b'4', b'2']), Err(WireError::BadUser));
    assert_eq!(missed(&[1, 5, b'a']), Err(WireError::Truncated));
    let mut d = Decoder::default();
    d.feed(&(MAX_FRAME as u32 + 1).to_be_bytes());
    assert_eq!(d.next_frame(), Err(WireError::FrameTooLarge));
}

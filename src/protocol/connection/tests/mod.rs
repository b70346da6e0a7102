//! Unit tests for [`super::WsConnection`] (kept out of connection.rs for size).

use super::*;
use crate::protocol::deflate;
use crate::protocol::deflate::SharedDeflate;
use flate2::{Compress, Compression, FlushCompress};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(e: Event<'_>) -> Ev {
    match e {
        Event::Message(k, p) => Ev::Msg(k, p.to_vec()),
        Event::Ping(p) => Ev::Ping(p.to_vec()),
        Event::Pong(p) => Ev::Pong(p.to_vec()),
        Event::Close { code, reason } => Ev::Close(code, reason.to_string()),
    }
}

/// A masked client frame with full control over the header bits.
fn cframe(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = vec![b0];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    let start = v.len();
    v.extend_from_slice(payload);
    crate::protocol::mask::apply_mask_naive(&mut v[start..], mask, 0);
    v
}

const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// Reads one chunk as the runtime does: every event, and after each the frames the
/// connection owes, drained into `out`.
fn read_chunk(
    conn: &mut WsConnection,
    zlib: &mut SharedDeflate,
    piece: &mut [u8],
    evs: &mut Vec<Ev>,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut rx = conn.read(piece, zlib);
    let mut result = Ok(());
    while let Some(next) = rx.next_event() {
        match next {
            Ok(e) => evs.push(own(e)),
            Err(e) => {
                assert!(result.is_ok(), "one error only");
                result = Err(e);
            }
        }
        rx.poll_transmit(out);
    }
    // A read consumes its chunk, unless it closes.
    assert!(rx.is_closing() || rx.consumed() == rx.data.len());
    result
}

/// `data` cut at `cuts` (ascending), as owned pieces to read.
fn pieces<'d>(data: &'d [u8], cuts: &'d [usize]) -> impl Iterator<Item = Vec<u8>> + 'd {
    let ends = cuts.iter().copied().chain(std::iter::once(data.len()));
    let starts = std::iter::once(0).chain(cuts.iter().copied());
    starts.zip(ends).map(|(a, b)| data[a..b].to_vec())
}

type Outcome = (Vec<Ev>, Result<(), ProtocolError>);

fn feed_all(conn: &mut WsConnection, data: &[u8]) -> Outcome {
    feed_split(conn, data, &[])
}

/// Feeds `data` in pieces cut at `cuts`; stops at the first error.
fn feed_split(conn: &mut WsConnection, data: &[u8], cuts: &[usize]) -> Outcome {
    let (evs, r, _) = feed_split_out(conn, data, cuts);
    (evs, r)
}

/// [`feed_split`], also returning the frames the connection owed.
fn feed_split_out(
    conn: &mut WsConnection,
    data: &[u8],
    cuts: &[usize],
) -> (Vec<Ev>, Result<(), ProtocolError>, Vec<u8>) {
    let mut evs = Vec::new();
    let mut out = Vec::new();
    let mut zlib = SharedDeflate::new();
    for mut piece in pieces(data, cuts) {
        if let Err(e) = read_chunk(conn, &mut zlib, &mut piece, &mut evs, &mut out) {
            assert!(conn.is_closing());
            return (evs, Err(e), out);
        }
    }
    (evs, Ok(()), out)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let k = rng.below(8);
    let mut cuts: Vec<usize> = (0..k).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Runs `data` whole, byte by byte and in 200 random splits, asserting the
/// same events, result and owed frames every time; returns them.
fn check_splits_out(
    limits: WsLimits,
    deflate: Option<DeflateParams>,
    data: &[u8],
) -> (Vec<Ev>, Result<(), ProtocolError>, Vec<u8>) {
    let whole = feed_split_out(&mut WsConnection::new(limits, deflate), data, &[]);
    let bytewise: Vec<usize> = (1..data.len()).collect();
    assert_eq!(
        feed_split_out(&mut WsConnection::new(limits, deflate), data, &bytewise),
        whole,
        "byte by byte"
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ data.len() as u64);
    for _ in 0..200 {
        let cuts = random_cuts(&mut rng, data.len());
        assert_eq!(
            feed_split_out(&mut WsConnection::new(limits, deflate), data, &cuts),
            whole,
            "cuts {cuts:?}"
        );
    }
    whole
}

/// [`check_splits_out`] without the owed frames.
fn check_splits(limits: WsLimits, deflate: Option<DeflateParams>, data: &[u8]) -> Outcome {
    let (evs, r, _) = check_splits_out(limits, deflate, data);
    (evs, r)
}

fn limits() -> WsLimits {
    WsLimits::default()
}

#[test]
fn connection_is_small() {
    // The runtime's `Conn` (<= 192 bytes) holds it: 88 leaves no room to grow.
    let size = std::mem::size_of::<WsConnection>();
    assert!(size <= 88, "WsConnection is {size} bytes");
}

#[test]
fn single_frames_zero_copy() {
    let mut wire = cframe(FIN | 1, b"hello", M);
    wire.extend(cframe(FIN | 2, &[1, 2, 3], M));
    wire.extend(cframe(FIN | 9, b"ping", M));
    wire.extend(cframe(FIN | 0xA, b"", M));
    let mut conn = WsConnection::new(limits(), None);
    let mut d = wire.clone();
    let base = d.as_ptr() as usize;
    let mut evs = Vec::new();
    let mut ptrs = Vec::new();
    let mut zlib = SharedDeflate::new();
    let mut rx = conn.read(&mut d, &mut zlib);
    while let Some(e) = rx.next_event() {
        let e = e.unwrap();
        if let Event::Message(_, p) | Event::Ping(p) = e {
            ptrs.push(p.as_ptr() as usize);
        }
        evs.push(own(e));
    }
    drop(rx);
    assert_eq!(
        evs,
        vec![
            Ev::Msg(MessageKind::Text, b"hello".to_vec()),
            Ev::Msg(MessageKind::Binary, vec![1, 2, 3]),
            Ev::Ping(b"ping".to_vec()),
            Ev::Pong(vec![]),
        ]
    );
    // Payloads are slices of the input buffer.
    assert!(ptrs.iter().all(|&p| p >= base && p < base + wire.len()));
    // The Pong is owed (kept in the buffer until drained, which frees it).
    let mut out = Vec::new();
    assert!(conn.has_pending_transmit());
    assert!(conn.poll_transmit(&mut out));
    assert_eq!(out, [0x8A, 4, b'p', b'i', b'n', b'g']);
    assert!(!conn.has_pending_transmit() && !conn.poll_transmit(&mut out));
    assert_eq!(conn.buf.capacity(), 0);
    assert_eq!(check_splits(limits(), None, &wire).0, evs);
}

#[test]
fn fragmented_with_interleaved_control() {
    let text = "Hello, κόσμε! 𝄞".as_bytes();
    let mut wire = cframe(1, &text[..9], M);
    wire.extend(cframe(FIN | 9, b"p1", M));
    wire.extend(cframe(0, &text[9..14], [1, 2, 3, 4]));
    wire.extend(cframe(0, b"", M));
    wire.extend(cframe(FIN | 0xA, b"p2", M));
    wire.extend(cframe(FIN, &text[14..], [9, 8, 7, 6]));
    wire.extend(cframe(FIN | 2, &vec![7u8; 70_000], M));
    wire.extend(cframe(FIN | 8, b"\x03\xe8bye", M));
    wire.extend(cframe(FIN | 1, b"ignored after close", M));
    let (evs, r) = check_splits(limits(), None, &wire);
    r.unwrap();
    assert_eq!(
        evs,
        vec![
            Ev::Ping(b"p1".to_vec()),
            Ev::Pong(b"p2".to_vec()),
            Ev::Msg(MessageKind::Text, text.to_vec()),
            Ev::Msg(MessageKind::Binary, vec![7u8; 70_000]),
            Ev::Close(Some(1000), "bye".into()),
        ]
    );
}

#[test]
fn tungstenite_client_frames() {
    use tungstenite::protocol::frame::{coding, Frame};
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for (i, len) in [0usize, 1, 125, 126, 65535, 65536, 200_000]
        .into_iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..len).map(|j| b'a' + (j % 26) as u8).collect();
        let op = if i % 2 == 0 {
            coding::Data::Text
        } else {
            coding::Data::Binary
        };
        let mut f = Frame::message(payload.clone(), coding::OpCode::Data(op), true);
        f.header_mut().mask = Some([0xA1, 0x5B, 0x07, 0xE9]);
        f.format(&mut wire).unwrap();
        let kind = if i % 2 == 0 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        expect.push(Ev::Msg(kind, payload));
    }
    let mut f = Frame::ping(b"tung".to_vec());
    f.header_mut().mask = Some([0xA1, 0x5B, 0x07, 0xE9]);
    f.format(&mut wire).unwrap();
    expect.push(Ev::Ping(b"tung".to_vec()));
    let (evs, r) = check_splits(limits(), None, &wire);
    r.unwrap();
    assert_eq!(evs, expect);
}

fn err_of(data: &[u8], deflate: Option<DeflateParams>, l: WsLimits) -> ProtocolError {
    let (_, r) = check_splits(l, deflate, data);
    r.unwrap_err()
}

#[test]
fn protocol_violations() {
    use ProtocolError::*;
    let l = limits();
    let unmasked = [FIN | 1, 2, b'h', b'i'];
    assert_eq!(err_of(&unmasked, None, l), UnmaskedFrame);
    assert_eq!(
        err_of(&cframe(FIN, b"x", M), None, l),
        UnexpectedContinuation
    );
    let mut w = cframe(1, b"a", M);
    w.extend(cframe(FIN | 1, b"b", M));
    assert_eq!(err_of(&w, None, l), ExpectedContinuation);
    assert_eq!(
        err_of(&cframe(FIN | RSV1 | 1, b"x", M), None, l),
        ReservedBits
    );
    assert_eq!(
        err_of(&cframe(FIN | 0x20 | 1, b"x", M), None, l),
        ReservedBits
    );
    assert_eq!(
        err_of(
            &cframe(FIN | RSV1 | 9, b"x", M),
            Some(DeflateParams::default()),
            l
        ),
        ReservedBits
    );
    let mut w = cframe(RSV1 | 1, b"", M);
    w.extend(cframe(FIN | RSV1, b"", M));
    assert_eq!(err_of(&w, Some(DeflateParams::default()), l), ReservedBits);
    assert_eq!(err_of(&cframe(FIN | 3, b"", M), None, l), ReservedOpcode);
    assert_eq!(err_of(&cframe(9, b"", M), None, l), FragmentedControl);
    assert_eq!(
        err_of(&cframe(FIN | 9, &[0; 126], M), None, l),
        ControlFrameTooLong
    );
    assert_eq!(
        err_of(&cframe(FIN | 1, &[0xce, 0xba, 0xff], M), None, l),
        InvalidUtf8
    );
    // Close payloads.
    assert_eq!(
        err_of(&cframe(FIN | 8, &[3], M), None, l),
        InvalidClosePayload
    );
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert_eq!(
            err_of(&cframe(FIN | 8, &code.to_be_bytes(), M), None, l),
            InvalidCloseCode,
            "{code}"
        );
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let (evs, r) = check_splits(l, None, &cframe(FIN | 8, &code.to_be_bytes(), M));
        r.unwrap();
        assert_eq!(evs, vec![Ev::Close(Some(code), String::new())]);
    }
    assert_eq!(
        err_of(&cframe(FIN | 8, b"\x03\xe8\xff", M), None, l),
        InvalidUtf8
    );
    let (evs, _) = check_splits(l, None, &cframe(FIN | 8, b"", M));
    assert_eq!(evs, vec![Ev::Close(None, String::new())]);
}

#[test]
fn utf8_fails_fast_in_fragments() {
    // First fragment already contains an invalid sequence: error before the
    // message (or even the frame) is complete.
    let mut conn = WsConnection::new(limits(), None);
    let w = cframe(1, &[b'a', 0xF4, 0x90, 0x80, 0x80, b'b'], M);
    let (_, r) = feed_all(&mut conn, &w[..w.len() - 1]);
    assert_eq!(r, Err(ProtocolError::InvalidUtf8));
    assert!(conn.is_closing());
    // Further input is ignored.
    assert_eq!(
        feed_all(&mut conn, &cframe(FIN | 1, b"x", M)),
        (vec![], Ok(()))
    );
    // Split code point across fragments is fine.
    let mut w = cframe(1, &[0xE2, 0x82], M);
    w.extend(cframe(FIN, &[0xAC], M));
    let (evs, r) = check_splits(limits(), None, &w);
    r.unwrap();
    assert_eq!(
        evs,
        vec![Ev::Msg(MessageKind::Text, "€".as_bytes().to_vec())]
    );
    // Incomplete at message end.
    let w = cframe(FIN | 1, &[0xE2, 0x82], M);
    assert_eq!(err_of(&w, None, limits()), ProtocolError::InvalidUtf8);
}

#[test]
fn size_limits() {
    let l = WsLimits {
        max_frame_bytes: 100,
        max_message_bytes: 150,
    };
    assert_eq!(
        err_of(&cframe(FIN | 2, &[0; 101], M), None, l),
        ProtocolError::FrameTooBig
    );
    let mut w = cframe(2, &[0; 100], M);
    w.extend(cframe(FIN, &[0; 51], M));
    assert_eq!(err_of(&w, None, l), ProtocolError::MessageTooBig);
    let mut w = cframe(2, &[0; 100], M);
    w.extend(cframe(FIN, &[0; 50], M));
    assert_eq!(
        check_splits(l, None, &w).0,
        vec![Ev::Msg(MessageKind::Binary, vec![0; 150])]
    );
    // A huge announced length fails at the header, before any payload.
    let mut conn = WsConnection::new(limits(), None);
    let mut hdr = vec![0x82, 0xFF];
    hdr.extend_from_slice(&(1u64 << 40).to_be_bytes());
    hdr.extend_from_slice(&M);
    assert_eq!(feed_all(&mut conn, &hdr).1, Err(ProtocolError::FrameTooBig));
}

#[test]
fn buffer_is_released_after_big_message() {
    let mut conn = WsConnection::new(limits(), None);
    let w = cframe(FIN | 2, &[5; 10_000], M);
    feed_split(&mut conn, &w, &[100]).1.unwrap();
    assert_eq!(conn.buf.capacity(), 0);
    let w = cframe(FIN | 2, &[5; 300], M);
    feed_split(&mut conn, &w, &[100]).1.unwrap();
    assert!(conn.buf.capacity() <= RETAIN_CAPACITY && conn.buf.is_empty());
}

/// Client-side permessage-deflate: compress with sync flush, strip trailer.
fn compress_msg(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
    let base = c.total_in();
    let mut out = Vec::with_capacity(msg.len() + 64);
    loop {
        let done = (c.total_in() - base) as usize;
        c.compress_vec(&msg[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (c.total_in() - base) as usize == msg.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn deflate_messages_fragmented_and_context_takeover() {
    let params = DeflateParams::default();
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
    let msgs: Vec<Vec<u8>> = vec![
        "the quick brown fox jumps over the lazy dog "
            .repeat(50)
            .into_bytes(),
        "the quick brown fox jumps over the lazy dog, again "
            .repeat(20)
            .into_bytes(),
        "κόσμε 𝄞 ".repeat(100).into_bytes(),
    ];
    let mut wire = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let z = compress_msg(&mut c, m);
        if i == 1 {
            // Fragment: RSV1 only on the first frame, ping in between.
            let third = z.len() / 3;
            wire.extend(cframe(RSV1 | 1, &z[..third], M));
            wire.extend(cframe(FIN | 9, b"mid", M));
            wire.extend(cframe(0, &z[third..2 * third], M));
            wire.extend(cframe(FIN, &z[2 * third..], M));
        } else {
            wire.extend(cframe(FIN | RSV1 | 1, &z, M));
        }
    }
    // An uncompressed message in between is fine.
    wire.extend(cframe(FIN | 2, b"raw", M));
    let (evs, r) = check_splits(limits(), Some(params), &wire);
    r.unwrap();
    assert_eq!(
        evs,
        vec![
            Ev::Msg(MessageKind::Text, msgs[0].clone()),
            Ev::Ping(b"mid".to_vec()),
            Ev::Msg(MessageKind::Text, msgs[1].clone()),
            Ev::Msg(MessageKind::Text, msgs[2].clone()),
            Ev::Msg(MessageKind::Binary, b"raw".to_vec()),
        ]
    );
}

#[test]
fn deflate_invalid_utf8_and_garbage() {
    let params = Some(DeflateParams::default());
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
    let mut bad = b"valid prefix ".repeat(10);
    bad.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
    let z = compress_msg(&mut c, &bad);
    assert_eq!(
        err_of(&cframe(FIN | RSV1 | 1, &z, M), params, limits()),
        ProtocolError::InvalidUtf8
    );
    assert_eq!(
        err_of(&cframe(FIN | RSV1 | 2, &[0xFF; 20], M), params, limits()),
        ProtocolError::InvalidCompressedData
    );
}

#[test]
fn decompression_bomb_is_bounded() {
    let params = Some(DeflateParams::default());
    let mut c = Compress::new_with_window_bits(Compression::best(), false, 15);
    let zeros = vec![0u8; 4 << 20];
    let z = compress_msg(&mut c, &zeros);
    assert!(z.len() < 16 << 10, "{}", z.len());
    let l = WsLimits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
    };
    let mut conn = WsConnection::new(l, params);
    let mut zlib = SharedDeflate::new();
    // Feed in 4 KiB reads and watch the buffer never exceed the limit.
    let w = cframe(FIN | RSV1 | 2, &z, M);
    let mut result = Ok(());
    let mut max_cap = 0;
    for piece in w.chunks(4096) {
        let mut p = piece.to_vec();
        let mut evs = Vec::new();
        let mut out = Vec::new();
        result = read_chunk(&mut conn, &mut zlib, &mut p, &mut evs, &mut out);
        assert!(evs.is_empty(), "no event expected");
        max_cap = max_cap.max(conn.buf.capacity());
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ProtocolError::MessageTooBig));
    assert!(max_cap <= (1 << 20) + 1 + 125, "buffer grew to {max_cap}");
}

#[test]
fn no_context_takeover_resets_inflater() {
    let params = Some(DeflateParams {
        client_no_context_takeover: true,
        ..DeflateParams::default()
    });
    let msg = "repeat me please ".repeat(30).into_bytes();
    let mut wire = Vec::new();
    for _ in 0..3 {
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
        wire.extend(cframe(FIN | RSV1 | 1, &compress_msg(&mut c, &msg), M));
    }
    let (evs, r) = check_splits(limits(), params, &wire);
    r.unwrap();
    assert_eq!(evs, vec![Ev::Msg(MessageKind::Text, msg.clone()); 3]);
}

/// The default (shared, no context takeover both ways): after a received
/// compressed message and a compressed reply the connection holds no zlib
/// state; a compressed message split across reads holds an inflater
/// only until its last frame.
#[test]
fn idle_connection_holds_no_zlib_state() {
    let params = Some(DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateParams::default()
    });
    let mut zlib = SharedDeflate::new();
    let mut conn = WsConnection::new(limits(), params);
    let msg = br#"{"event":"push","body":"hello hello hello hello hello"}"#.repeat(40);
    let mut out = Vec::new();
    conn.encode_message(&mut zlib, &mut out, MessageKind::Text, &msg);
    assert!(!conn.holds_zlib_state());
    let mut inf = flate2::Decompress::new_with_window_bits(false, 15);
    assert_eq!(decode_server(&out, &mut inf), vec![(true, 1, msg.clone())]);
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
    let w = cframe(FIN | RSV1 | 1, &compress_msg(&mut c, &msg), M);
    let (first, rest) = w.split_at(w.len() / 2);
    let mut evs = Vec::new();
    let mut owed = Vec::new();
    read_chunk(
        &mut conn,
        &mut zlib,
        &mut first.to_vec(),
        &mut evs,
        &mut owed,
    )
    .unwrap();
    assert!(evs.is_empty() && conn.holds_zlib_state());
    read_chunk(
        &mut conn,
        &mut zlib,
        &mut rest.to_vec(),
        &mut evs,
        &mut owed,
    )
    .unwrap();
    assert!(owed.is_empty());
    assert_eq!(evs, vec![Ev::Msg(MessageKind::Text, msg.clone())]);
    assert!(!conn.holds_zlib_state());
    // Per-socket context takeover keeps both.
    let mut conn = WsConnection::new(limits(), Some(DeflateParams::default()));
    conn.encode_message(&mut zlib, &mut out, MessageKind::Text, &msg);
    assert!(conn.holds_zlib_state());
}

mod output;
use output::decode_server;

//! Protocol-core micro benchmarks.
//!
//! `cargo bench --bench protocol -- --quick` runs everything in well under
//! a minute (the groups also use short warm-up/measurement times).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringwire::protocol::deflate::SharedDeflate;
use ringwire::protocol::handshake::{accept_key, parse_request, validate_upgrade, HandshakeLimits};
use ringwire::protocol::mask::{apply_mask, apply_mask_naive};
use ringwire::protocol::{Event, MessageKind, WsConnection, WsLimits};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask_naive(&mut out[start..], MASK, 0);
}

fn quick<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_millis(400));
    g.sample_size(10);
    g
}

fn unmask(c: &mut Criterion) {
    let mut g = quick(c, "unmask");
    for size in [64usize, 1024, 64 * 1024] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), MASK, 1))
        });
        g.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(|| apply_mask_naive(black_box(&mut buf), MASK, 1))
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = quick(c, "frame_decode");
    // 1000 small text frames (32 B payload) in one read.
    let mut small = Vec::new();
    for i in 0..1000u32 {
        masked_frame(
            &mut small,
            1,
            format!("{{\"seq\":{i:08},\"ok\":true,\"x\":1}}").as_bytes(),
        );
    }
    let mut big = Vec::new();
    masked_frame(&mut big, 2, &vec![0xa5; 64 * 1024]);
    for (name, wire) in [("1000x32B_text", &small), ("64KiB_binary", &big)] {
        let mut scratch = wire.clone();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                scratch.copy_from_slice(wire);
                let mut conn = WsConnection::new(WsLimits::default(), None);
                let mut zlib = SharedDeflate::new();
                let mut n = 0usize;
                let mut rx = conn.read(&mut scratch, &mut zlib);
                while let Some(e) = rx.next_event() {
                    if let Event::Message(_, p) = e.unwrap() {
                        n += p.len();
                    }
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = quick(c, "frame_encode");
    let mut conn = WsConnection::new(WsLimits::default(), None);
    let mut zlib = SharedDeflate::new();
    let mut out = Vec::with_capacity(128 * 1024);
    for size in [32usize, 1024, 64 * 1024] {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("plain", size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                conn.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&payload));
                black_box(out.len())
            })
        });
    }
    let json = br#"{"type":"notification","user":123456,"title":"New message","body":"You have a new message from Alice: hey, are we still on for lunch tomorrow?"}"#;
    let mut zconn = WsConnection::new(
        WsLimits::default(),
        Some(ringwire::protocol::deflate::DeflateParams::default()),
    );
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("deflate_json_150B", |b| {
        b.iter(|| {
            out.clear();
            zconn.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(json));
            black_box(out.len())
        })
    });
    g.finish();
}

const CHROME: &[u8] = b"GET /ws?token=abcdef HTTP/1.1\r\n\
Host: push.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn handshake(c: &mut Criterion) {
    let mut g = quick(c, "handshake");
    let limits = HandshakeLimits::default();
    g.bench_function("parse_request+validate_upgrade", |b| {
        b.iter(|| {
            let req = parse_request(black_box(CHROME), &limits).unwrap().unwrap();
            let up = validate_upgrade(&req).unwrap();
            black_box(up.key.len())
        })
    });
    g.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box("dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
}

/// The Socket.IO codec on the push path (event packet + frame) vs a raw frame of the same
/// text, and decoding a polling POST of 10 packets in each Engine.IO version.
fn socketio(c: &mut Criterion) {
    use ringwire::protocol::engineio::{decode_payload, encode_payload, BodyFormat, EioVersion};
    use ringwire::protocol::socketio::{self, SioType};
    let mut g = quick(c, "socketio");
    let text =
        r#"["notification",{"user":123456,"title":"New message","body":"hey, lunch tomorrow?"}]"#;
    let mut conn = WsConnection::new(WsLimits::default(), None);
    let mut zlib = SharedDeflate::new();
    let mut out = Vec::with_capacity(4096);
    let mut packet = String::with_capacity(256);
    g.bench_function("push_frame_raw", |b| {
        b.iter(|| {
            out.clear();
            conn.encode_message(
                &mut zlib,
                &mut out,
                MessageKind::Text,
                black_box(text.as_bytes()),
            );
            black_box(out.len())
        })
    });
    g.bench_function("push_frame_socketio", |b| {
        b.iter(|| {
            out.clear();
            packet.clear();
            if socketio::looks_like_event(black_box(text)) {
                socketio::encode(&mut packet, SioType::Event, "/", None, text);
            }
            conn.encode_message(&mut zlib, &mut out, MessageKind::Text, packet.as_bytes());
            black_box(out.len())
        })
    });
    let packets: Vec<String> = (0..10)
        .map(|i| format!(r#"42["ev",{{"i":{i},"s":"héllo"}}]"#))
        .collect();
    for (name, version) in [
        ("decode_post_v3", EioVersion::V3),
        ("decode_post_v4", EioVersion::V4),
    ] {
        let mut body = String::new();
        encode_payload(version, packets.iter().map(String::as_str), &mut body);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                decode_payload(
                    version,
                    BodyFormat::Text,
                    black_box(body.as_bytes()),
                    &mut |p| {
                        if let ringwire::protocol::engineio::Packet::Text(_, d) = p {
                            n += socketio::parse(d).map_or(0, |s| s.data.len());
                        }
                    },
                )
                .unwrap();
                black_box(n)
            })
        });
    }
    g.finish();
}

/// The echo endpoint's receive path as the runtime drives it: decode a pipelined read and
/// queue every echo (and the owed replies) into the socket's output buffer, each echo
/// encoded straight from the received bytes.
fn echo_path(c: &mut Criterion) {
    let mut g = quick(c, "echo_path");
    for (name, count, size) in [
        ("1000x32B_text", 1000usize, 32usize),
        ("64x512B_binary", 64, 512),
    ] {
        let mut wire = Vec::new();
        for i in 0..count {
            let mut p = vec![b'a' + (i % 26) as u8; size];
            p[0] = b'{';
            masked_frame(&mut wire, if size == 32 { 1 } else { 2 }, &p);
        }
        let mut data = wire.clone();
        let mut conn = WsConnection::new(WsLimits::default(), None);
        let mut zlib = SharedDeflate::new();
        let mut out = Vec::with_capacity(wire.len() + 1024);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                data.copy_from_slice(&wire);
                out.clear();
                let mut rx = conn.read(&mut data, &mut zlib);
                while let Some(next) = rx.next_event_with_sender() {
                    if let (Event::Message(kind, p), mut tx) = next.unwrap() {
                        tx.encode_message(&mut out, kind, p);
                    }
                    rx.poll_transmit(&mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// Sixteen pipelined 512 B masked text frames in one read.
fn pipelined_16x512() -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..16usize {
        let mut p = vec![b'a' + (i % 26) as u8; 512];
        p[0] = b'{';
        masked_frame(&mut wire, 1, &p);
    }
    wire
}

/// One echo turn of the runtime for one socket: decode, unmask and validate 16 pipelined
/// 512 B text frames, encode every echo into the socket's `out`, then the send bookkeeping
/// (`out` becomes the send buffer, the send completes). `fresh_vec` is the bookkeeping
/// before issue 18 (a new `out` grown by reallocation every turn, freed after the send);
/// `16x512B_text` is what the runtime does now (see `echo_turn_runtime`).
fn echo_turn(c: &mut Criterion) {
    let mut g = quick(c, "echo_turn");
    let wire = pipelined_16x512();
    let mut data = wire.clone();
    let mut conn = WsConnection::new(WsLimits::default(), None);
    let mut zlib = SharedDeflate::new();
    g.throughput(Throughput::Elements(16));
    let mut turn = |data: &mut Vec<u8>, out: &mut Vec<u8>| {
        data.copy_from_slice(&wire);
        let mut rx = conn.read(data, &mut zlib);
        while let Some(next) = rx.next_event_with_sender() {
            if let (Event::Message(kind, p), mut tx) = next.unwrap() {
                tx.encode_message(out, kind, p);
            }
            rx.poll_transmit(out);
        }
    };
    g.bench_function("16x512B_text_fresh_vec", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            turn(&mut data, &mut out);
            let sending = std::mem::take(&mut out);
            black_box(&sending);
            drop(sending);
        })
    });
    echo_turn_runtime(&mut g, &mut data, &mut turn);
    g.finish();
}

/// The runtime's bookkeeping of an echo turn.
fn echo_turn_runtime(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    data: &mut Vec<u8>,
    turn: &mut impl FnMut(&mut Vec<u8>, &mut Vec<u8>),
) {
    let mut pool = ringwire::runtime::BufPool::default();
    g.bench_function("16x512B_text", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            pool.prepare(&mut out, data.len());
            turn(data, &mut out);
            let sending = std::mem::take(&mut out);
            black_box(&sending);
            pool.give(sending);
        })
    });
}

/// The framing part of a core's deliver path: a batch of pushes to 1,000 users with three
/// uncompressed raw sockets each, every socket's output appended to and drained once per
/// batch. Identical texts (one broadcast text in the batch) or distinct ones.
fn fanout(c: &mut Criterion) {
    let mut g = quick(c, "fanout");
    const USERS: usize = 1000;
    const PER_USER: usize = 3;
    const BATCH: usize = 8;
    let mut conns: Vec<WsConnection> = (0..USERS * PER_USER)
        .map(|_| WsConnection::new(WsLimits::default(), None))
        .collect();
    let mut outs: Vec<Vec<u8>> = (0..USERS * PER_USER)
        .map(|_| Vec::with_capacity(4096))
        .collect();
    let mut zlib = SharedDeflate::new();
    let base = r#"{"type":"notification","title":"New message","body":"You have a new message from Alice: hey, are we still on for lunch tomorrow?","n":"#;
    let identical: Vec<std::sync::Arc<str>> = (0..BATCH)
        .map(|_| std::sync::Arc::from(format!("{base}0}}")))
        .collect();
    let distinct: Vec<std::sync::Arc<str>> = (0..BATCH)
        .map(|i| std::sync::Arc::from(format!("{base}{i}}}")))
        .collect();
    g.throughput(Throughput::Elements((USERS * PER_USER * BATCH) as u64));
    for (name, texts) in [
        ("1000x3_identical", &identical),
        ("1000x3_distinct", &distinct),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for out in outs.iter_mut() {
                    out.clear();
                }
                fanout_batch(texts, &mut conns, &mut outs, &mut zlib, PER_USER);
                black_box(outs[0].len())
            })
        });
    }
    // Compressing sockets (no context takeover, the default): framed (and compressed) once
    // per job, against each socket encoding it (the shared compressor's memo still compares
    // the text every time).
    let params = ringwire::protocol::deflate::DeflateParams {
        server_no_context_takeover: true,
        ..Default::default()
    };
    let mut zconns: Vec<WsConnection> = (0..USERS * PER_USER)
        .map(|_| WsConnection::new(WsLimits::default(), Some(params)))
        .collect();
    for (name, once) in [
        ("1000x3_deflate_per_socket", false),
        ("1000x3_deflate_once", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for out in outs.iter_mut() {
                    out.clear();
                }
                if once {
                    fanout_batch(&distinct, &mut zconns, &mut outs, &mut zlib, PER_USER);
                } else {
                    for text in &distinct {
                        for (ws, out) in zconns.iter_mut().zip(outs.iter_mut()) {
                            ws.encode_message(&mut zlib, out, MessageKind::Text, text.as_bytes());
                        }
                    }
                }
                black_box(outs[0].len())
            })
        });
    }
    g.finish();
}

/// Each text to every user's sockets, the user loop inside the text loop (as `deliver`
/// walks a batch: job by job).
fn fanout_batch(
    texts: &[std::sync::Arc<str>],
    conns: &mut [WsConnection],
    outs: &mut [Vec<u8>],
    zlib: &mut SharedDeflate,
    per_user: usize,
) {
    let mut once = ringwire::protocol::FrameOnce::default();
    let mut key = 0u64;
    let mut last: Option<&std::sync::Arc<str>> = None;
    for text in texts {
        // As `deliver` names a job: the previous name while the text is the same.
        if last.is_none_or(|l| **l != **text) {
            key += 1;
            last = Some(text);
        }
        for user in conns.chunks_mut(per_user).zip(outs.chunks_mut(per_user)) {
            for (ws, out) in user.0.iter_mut().zip(user.1.iter_mut()) {
                once.encode(key, ws, zlib, out, MessageKind::Text, text.as_bytes());
            }
        }
    }
    once.forget();
}

/// Whole-message UTF-8 validation: std against `simdutf8` (what the protocol core uses).
fn utf8(c: &mut Criterion) {
    use ringwire::protocol::utf8::{is_utf8, Utf8Validator};
    let mut g = quick(c, "utf8");
    let ascii = br#"{"type":"notification","body":"hello world"}"#.repeat(12);
    let mixed = "{\"t\":\"héllo wörld — 𝄞 κόσμε\"}".repeat(16).into_bytes();
    for (name, bytes) in [("ascii_512B", &ascii[..512]), ("mixed", &mixed[..])] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
        g.bench_function(BenchmarkId::new("simdutf8", name), |b| {
            b.iter(|| is_utf8(black_box(bytes)))
        });
        g.bench_function(BenchmarkId::new("incremental_4_pieces", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                let q = bytes.len() / 4;
                for piece in black_box(bytes).chunks(q) {
                    v.feed(piece).unwrap();
                }
                v.finish().is_ok()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches, unmask, decode, echo_path, echo_turn, fanout, utf8, encode, handshake, socketio
);
criterion_main!(benches);

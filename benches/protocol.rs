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

criterion_group!(benches, unmask, decode, echo_path, encode, handshake, socketio);
criterion_main!(benches);

//! permessage-deflate: per-connection context vs shared per-core compression of a 2 KB
//! JSON-ish push, side by side in one run.
//!
//! `cargo bench --bench deflate -- --warm-up-time 1 --measurement-time 3`
//!
//! Before the timings it prints, for each mode, the heap an idle connection keeps after one
//! compressed push (resident set growth over 200 connections), and the compressed size of a
//! push (first, and a second similar one). Timed groups:
//! - `push_2KB/per_connection_context`: steady state of the old default (context takeover,
//!   each socket owns a compressor; its first push allocated it).
//! - `push_2KB/per_connection_context_200_sockets`: the same, round robin over 200 sockets
//!   (their 64 MB of compressors do not stay in cache, as in a server).
//! - `push_2KB/per_connection_first_push`: a socket's first push in that mode (allocation and
//!   initialisation of its ~270 KB compressor; in a push server most sockets get few pushes).
//! - `push_2KB/shared_per_core`: the new default (server_no_context_takeover, one compressor
//!   per core, reset after every message).
//! - `push_2KB/zlib_reset_only`: the reset alone.
//! - `push_2KB/fanout_3_sockets/*`: one push to a user's three sockets (one iteration).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringwire::protocol::deflate::{DeflateParams, SharedDeflate};
use ringwire::protocol::{Event, MessageKind, WsConnection, WsLimits};

/// This process's resident set (bytes), from /proc/self/status.
fn rss() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// About 2 KB of JSON, different per `n` (a notification feed page).
fn push(n: u32) -> Vec<u8> {
    let mut s = format!("{{\"type\":\"feed\",\"user\":{n},\"items\":[");
    for i in 0..16u32 {
        let kind = ["message", "like", "follow", "mention"][(i % 4) as usize];
        let text = &"the quick brown fox jumps over the lazy dog"[..20 + (i * 3 % 23) as usize];
        s.push_str(&format!(
            "{}{{\"id\":{},\"kind\":\"{kind}\",\"from\":\"user-{}\",\"text\":\"event {i} for user {n}: {text}\",\"ts\":{}}}",
            if i == 0 { "" } else { "," },
            n * 100 + i,
            (n * 7 + i * 13) % 997,
            1_790_000_000 + i * 37 + n,
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A masked, compressed client text frame carrying `msg` (no context takeover).
fn client_frame(msg: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
    let mut z = Vec::with_capacity(msg.len() + 64);
    c.compress_vec(msg, &mut z, FlushCompress::Sync)
        .expect("compress");
    z.truncate(z.len() - 4);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | 0x40 | 1, 0x80 | 126];
    f.extend_from_slice(&(z.len() as u16).to_be_bytes());
    f.extend_from_slice(&mask);
    f.extend(z.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn params(shared: bool) -> Option<DeflateParams> {
    Some(DeflateParams {
        server_no_context_takeover: shared,
        client_no_context_takeover: shared,
        ..DeflateParams::default()
    })
}

/// Memory an idle connection keeps after one compressed push (RSS growth over `N`
/// connections), and the wire size of a first and a second similar push.
fn memory_report() {
    const N: usize = 200;
    let msgs: Vec<Vec<u8>> = (0..64).map(push).collect();
    for (name, shared) in [("per_connection_context", false), ("shared_per_core", true)] {
        let mut zlib = SharedDeflate::new();
        let mut out = Vec::with_capacity(4096);
        let base = rss();
        let mut conns: Vec<WsConnection> = (0..N)
            .map(|_| WsConnection::new(WsLimits::default(), params(shared)))
            .collect();
        let connected = rss();
        let mut wire = [0usize; 2];
        for (round, w) in wire.iter_mut().enumerate() {
            for (i, c) in conns.iter_mut().enumerate() {
                out.clear();
                let m = &msgs[(i + round) % msgs.len()];
                c.encode_message(&mut zlib, &mut out, MessageKind::Text, m);
                *w += out.len();
            }
        }
        let pushed = rss();
        // Then one compressed message from each client (a browser sending a 2 KB message).
        let frame = client_frame(&msgs[0]);
        for c in conns.iter_mut() {
            let mut f = frame.clone();
            let mut got = 0usize;
            let mut rx = c.read(&mut f, &mut zlib);
            while let Some(e) = rx.next_event() {
                if let Event::Message(_, p) = e.expect("valid frame") {
                    got = p.len();
                }
            }
            assert_eq!(got, msgs[0].len());
        }
        let received = rss();
        println!(
            "deflate memory {name}: {N} connections, RSS +{} B/connection connected, +{} B/connection \
             after two compressed {} B pushes each (per-core compressor included), +{} B after \
             also receiving one compressed message each; wire {} B first push, {} B second",
            (connected - base) / N as i64,
            (pushed - base) / N as i64,
            msgs[0].len(),
            (received - base) / N as i64,
            wire[0] / N,
            wire[1] / N,
        );
        drop(conns);
    }
}

fn push_2kb(c: &mut Criterion) {
    memory_report();
    let msgs: Vec<Vec<u8>> = (0..64).map(push).collect();
    let mut g = c.benchmark_group("push_2KB");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(8192);
    let mut i = 0usize;

    let mut zlib = SharedDeflate::new();
    let mut conn = WsConnection::new(WsLimits::default(), params(false));
    g.bench_function("per_connection_context", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % msgs.len();
            conn.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&msgs[i]));
            black_box(out.len())
        })
    });
    g.bench_function("per_connection_first_push", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % msgs.len();
            let mut conn = WsConnection::new(WsLimits::default(), params(false));
            conn.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&msgs[i]));
            black_box(out.len())
        })
    });
    // The same steady state spread over 200 sockets (64 MB of compressors): a push server
    // rarely pushes to the socket it just pushed to, so the per-socket state is cold.
    let mut many: Vec<WsConnection> = (0..200)
        .map(|_| WsConnection::new(WsLimits::default(), params(false)))
        .collect();
    for (k, c) in many.iter_mut().enumerate() {
        out.clear();
        c.encode_message(
            &mut zlib,
            &mut out,
            MessageKind::Text,
            &msgs[k % msgs.len()],
        );
    }
    let mut k = 0usize;
    g.bench_function("per_connection_context_200_sockets", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % msgs.len();
            k = (k + 1) % many.len();
            many[k].encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&msgs[i]));
            black_box(out.len())
        })
    });
    drop(many);
    let mut conn = WsConnection::new(WsLimits::default(), params(true));
    g.bench_function("shared_per_core", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % msgs.len();
            conn.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&msgs[i]));
            black_box(out.len())
        })
    });
    // One push to a user with three tabs on this core: three per-socket compressions, or one
    // shared compression and two copies (SharedDeflate remembers the last message).
    for (name, shared) in [
        ("fanout_3_sockets/per_connection_context", false),
        ("fanout_3_sockets/shared_per_core", true),
    ] {
        let mut tabs: Vec<WsConnection> = (0..3)
            .map(|_| WsConnection::new(WsLimits::default(), params(shared)))
            .collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % msgs.len();
                let mut n = 0;
                for t in tabs.iter_mut() {
                    out.clear();
                    t.encode_message(&mut zlib, &mut out, MessageKind::Text, black_box(&msgs[i]));
                    n += out.len();
                }
                black_box(n)
            })
        });
    }
    // What the shared mode pays per message on top of compressing without a dictionary:
    // zlib-rs clears its 64 Ki-entry hash head (128 KB) on every reset.
    let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::new(3), false, 15);
    g.bench_function("zlib_reset_only", |b| b.iter(|| c.reset()));
    g.finish();
}

criterion_group!(benches, push_2kb);
criterion_main!(benches);

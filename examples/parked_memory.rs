//! Memory per parked Socket.IO namespace (connection state recovery): N records with A
//! attributes each (a 4-byte key and a 20-byte value), then the growth of the process's
//! resident memory (hash table and allocator slack included) per record, beside the bytes
//! counted against the bound (`PARKED_OVERHEAD`, `ATTRIBUTE_OVERHEAD`). Run:
//!
//!   cargo run --release --example parked_memory [N] [A]
//!
//! (defaults 230000 0: just past a growth of the hash table, the worst case per record).
use ringwire::service::engineio::recovery::{ParkNamespace, Parked, ParkedSessions, Pid};
use ringwire::service::history::Position;

mod common;
use common::rss;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn record(i: usize, attrs: usize) -> Parked {
    let attrs = (0..attrs)
        .map(|k| (format!("k{k:03}").into(), "v".repeat(20).into()))
        .collect();
    let tag = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let ns = ParkNamespace {
        pid: Pid { epoch: 1, tag },
        nsp: "/".into(),
        sid: "AAAAAAEAAACMDl4ecCOyAA".into(),
        start: Position {
            epoch: 1,
            offset: i as u64,
        },
        pushes: true,
    };
    Parked {
        context: 1,
        user: (i as u32).into(),
        ns,
        attrs,
    }
}

fn main() {
    let (n, attrs) = (arg(1, 230_000).max(1), arg(2, 0));
    let mut parked = ParkedSessions::new(u64::MAX, usize::MAX);
    let before = rss();
    for i in 0..n {
        parked.park(record(i, attrs), i as u64);
    }
    let resident = (rss() - before).max(0.0) as usize / n;
    let counted = parked.bytes() / n;
    println!("{n} parked, {attrs} attributes each: {resident} B resident, {counted} B counted");
}

//! Memory per stored message of the `memory` history store (issue 13): USERS users x SIZE
//! pushes of BYTES bytes each, then the growth of the process's resident memory (allocator
//! slack included) divided by the messages held. Run:
//!
//!   cargo run --release --example history_memory [USERS] [SIZE] [BYTES]
//!
//! (defaults 100000 100 200). The texts are distinct allocations, as pushes are.
use ringwire::service::history::{HistoryLimits, MemoryHistory};

mod common;
use common::rss;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (users, size, bytes) = (arg(1, 100_000), arg(2, 100), arg(3, 200));
    let text = "x".repeat(bytes);
    let before = rss();
    let limits = HistoryLimits {
        size,
        ttl_ms: u64::MAX,
        max_bytes: usize::MAX,
        max_idle: usize::MAX,
    };
    let mut h = MemoryHistory::new(1, limits);
    for round in 0..size {
        for u in 0..users as u32 {
            h.append(1, &u.into(), text.as_str().into(), None, round as u64);
        }
    }
    let held = rss() - before;
    let messages = (users * size) as f64;
    println!(
        "{users} users x {size} messages of {bytes} B: {:.1} MiB more resident, {:.1} B per message \
         ({:.1} B beyond the text); the store counts {:.1} B per message",
        held / (1 << 20) as f64,
        held / messages,
        held / messages - bytes as f64,
        h.bytes() as f64 / messages,
    );
}

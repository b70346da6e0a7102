//! Memory per (user, node) pair of the presence directory (`cluster::directory::Directory`)
//! with up to 1,024 nodes, and the cost of `nodes_for`. Each case fills one directory the way
//! links coming up one after another fill it (each user's entries grow one node at a time,
//! interleaved with everyone else's), then reports the growth of the process's resident
//! memory (hash table and allocator slack included) per pair and per entry, and times
//! `nodes_for` over random users (indicative only: one thread, no other load). Run:
//!
//!   cargo run --release --example directory_memory
//!
//! runs every case below, each in a child process of its own so that no case inherits the
//! heap of another, with one path and then two paths per pair. One case alone:
//!
//!   cargo run --release --example directory_memory USERS NODES_PER_USER [PATHS]
use ringwire::cluster::directory::Directory;
use ringwire::cluster::wire::UserPresence;
use ringwire::service::path_filter::PathFilter;
use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

mod common;
use common::rss;

/// (users, other nodes each is on); this node is slot 0, the others 1..=1023.
const CASES: [(usize, usize); 4] = [(100_000, 1), (100_000, 3), (10_000, 64), (1_000, 1_023)];
const OTHER_NODES: usize = 1_023;
const PATHS: [&str; 2] = ["/ws", "/socket.io/"];

fn arg(i: usize) -> Option<usize> {
    std::env::args().nth(i).and_then(|a| a.parse().ok())
}

/// A well-mixed 64-bit value of `x` (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `round`th of the `per_user` distinct nodes `user` is on: consecutive slots from a
/// random start, so every node holds about as many users as any other.
fn node(user: usize, round: usize) -> u16 {
    (1 + (mix(user as u64) as usize + round) % OTHER_NODES) as u16
}

fn one_case(users: usize, per_user: usize, paths: usize) {
    let per_user = per_user.clamp(1, OTHER_NODES);
    let paths = paths.clamp(1, PATHS.len());
    let mut d = Directory::new(usize::MAX);
    let before = rss();
    let started = Instant::now();
    // Round r: every user's r-th node re-syncs it, so each user's entries grow one node at a
    // time, interleaved with everyone else's, as when the links come up one after another.
    for round in 0..per_user {
        for user in 0..users {
            let p = UserPresence {
                context: 1,
                user: (user as u32).into(),
                paths: PATHS[..paths].iter().map(|&p| (p.into(), 1)).collect(),
            };
            d.apply(node(user, round), &p);
        }
    }
    let build = started.elapsed().as_secs_f64();
    let grown = rss() - before;
    let pairs = (users * per_user) as f64;
    assert_eq!(d.len(), users * per_user * paths);

    // nodes_for over random users, with the filter of every path and with one of them.
    let calls = (20_000_000 / (per_user * paths)).clamp(20_000, 2_000_000);
    let time = |filter: &PathFilter| {
        let started = Instant::now();
        for i in 0..calls {
            let user = (mix(i as u64 ^ 0x5555) % users as u64) as u32;
            black_box(d.nodes_for(1, black_box(&user.into()), filter));
        }
        started.elapsed().as_secs_f64() * 1e9 / calls as f64
    };
    let (any, narrow) = (time(&PathFilter::any()), time(&PathFilter::new("/ws")));
    assert_eq!(
        d.nodes_for(1, &0.into(), &PathFilter::new("/ws")).len(),
        per_user
    );
    println!(
        "| {users} | {per_user} | {paths} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
        grown / (1 << 20) as f64,
        grown / pairs,
        grown / pairs / paths as f64,
        any,
        narrow,
        build * 1e9 / (pairs),
    );
}

fn main() {
    if let (Some(users), Some(per_user)) = (arg(1), arg(2)) {
        return one_case(users.max(1), per_user, arg(3).unwrap_or(1));
    }
    println!(
        "| users | nodes each | paths | MiB resident | B per (user, node) | B per entry \
         | nodes_for `*` ns | nodes_for `/ws` ns | apply ns per pair |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("own path");
    for paths in 1..=PATHS.len() {
        for (users, per_user) in CASES {
            let out = Command::new(&exe)
                .args([users, per_user, paths].map(|a| a.to_string()))
                .output()
                .expect("run a case");
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

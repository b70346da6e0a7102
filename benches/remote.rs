//! The cost of routing a push to other nodes on its owning core: the presence lookup
//! (`nodes_for`), the queueing (`route`) and the hand-off of the turn's batches to the link
//! thread (`flush`), for users on one other node, and the lookup alone for the usual push
//! whose user has no socket elsewhere.
//!
//! `cargo bench --bench remote` (about 20 s).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringwire::cluster::coalesce::Settings;
use ringwire::cluster::wire::UserPresence;
use ringwire::cluster::ClusterState;
use ringwire::config::ClusterConfig;
use ringwire::runtime::remote::RemoteState;
use ringwire::runtime::stats::ShardStats;
use ringwire::runtime::PushJob;
use ringwire::service::path_filter::PathFilter;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const USERS: u32 = 10_000;
const TURN: u32 = 64;

fn setup() -> (Arc<ClusterState>, RemoteState) {
    let cfg: ClusterConfig = toml::from_str(
        "node_id = \"a\"\nlisten = \"127.0.0.1:7001\"\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n\
         peers = [{ id = \"b\", addr = \"127.0.0.1:7002\" }, { id = \"c\", addr = \"127.0.0.1:7003\" }]",
    )
    .unwrap();
    let cluster = ClusterState::new(&cfg, 1).0;
    let mut r = RemoteState::new(cluster.clone(), 0, 10_000_000);
    r.peer_up(0, std::iter::empty(), false);
    r.peer_up(1, std::iter::empty(), false);
    let presence: Vec<UserPresence> = (0..USERS)
        .map(|user| UserPresence {
            context: 1,
            user: user.into(),
            paths: vec![("/ws".into(), 1)],
        })
        .collect();
    r.apply_presence(1, &presence);
    (cluster, r)
}

fn job(user: u32, text: &Arc<str>) -> PushJob {
    PushJob {
        context: 1,
        user: user.into(),
        filter: PathFilter::new("*"),
        text: text.clone(),
        coalesce: false,
        at: None,
        prev: None,
    }
}

fn bench(c: &mut Criterion) {
    let settings = Settings {
        mode: ringwire::config::CoalesceMode::Edges,
        delay_ms: 1000,
        max_delay_ms: 3000,
        max_messages: 100_000,
        max_bytes: 64 << 20,
    };
    let stats = ShardStats::new(1);
    let text: Arc<str> = Arc::from("x".repeat(100));
    let mut g = c.benchmark_group("remote");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(TURN as u64));

    let (cluster, mut r) = setup();
    let mut next = 0u32;
    g.bench_function("route a turn of pushes to a user on another node", |b| {
        b.iter(|| {
            for _ in 0..TURN {
                let j = job(next % USERS, &text);
                next = next.wrapping_add(7);
                let nodes = r.nodes_for(&j);
                black_box(r.route(&j, nodes, 0, &settings, &stats));
            }
            r.flush(0, 0, &stats, |context, user| UserPresence {
                context,
                user: user.clone(),
                paths: Vec::new(),
            });
            while cluster.take(1, 0).is_some() {}
        })
    });

    let (_cluster, r) = setup();
    g.bench_function(
        "look up a turn of pushes whose users are on no other node",
        |b| {
            b.iter(|| {
                for _ in 0..TURN {
                    let j = job(USERS + (next % USERS), &text);
                    next = next.wrapping_add(7);
                    black_box(r.nodes_for(&j));
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

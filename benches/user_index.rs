//! The per-core user index (`runtime::users::UserIndex`) at 20,000 users: the lookup of a
//! push (`deliver` lends the user's socket list out and puts it back), the read-only lookup
//! (`sockets`, counts and presence), a socket opening and closing for a user that has one
//! already, and a user's first socket opening and its last closing (insert and remove).
//! Numeric ids and 36-character string ids (UUIDs: on the heap, compared by bytes).
//!
//! `cargo bench --bench user_index` (about 40 s).
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use ringwire::runtime::users::UserIndex;
use ringwire::service::user_id::UserId;
use std::hint::black_box;
use std::time::Duration;

const USERS: u32 = 20_000;
/// Users visited per iteration, in a scattered order (a stride prime to `USERS`).
const BATCH: u32 = 1_000;
const STRIDE: u32 = 7_919;

fn ids(kind: &str) -> Vec<UserId> {
    (0..USERS)
        .map(|i| match kind {
            "num" => UserId::from(i),
            _ => UserId::parse(&format!(
                "{i:08x}-5e3a-4c1b-9f2d-{:012x}",
                i * 2_654_435_761
            ))
            .unwrap(),
        })
        .collect()
}

/// One socket per user, slot = user number.
fn index(users: &[UserId]) -> UserIndex {
    let mut u = UserIndex::default();
    for (i, user) in users.iter().enumerate() {
        u.add(1, user, i as u32);
    }
    u
}

/// What `deliver` does per push: lend the list, walk it, put it back.
fn deliver(u: &mut UserIndex, user: &UserId) -> u64 {
    let Some(slots) = u.lend(1, user) else {
        return 0;
    };
    let sum = slots.iter().map(|&s| u64::from(s)).sum();
    u.put_back(slots);
    sum
}

/// Bench `op` on `BATCH` users of the index, in `visit`'s order.
fn per_user(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    kind: &str,
    visit: &mut impl FnMut() -> usize,
    mut op: impl FnMut(usize) -> u64,
) {
    g.bench_function(BenchmarkId::new(name, kind), |b| {
        b.iter(|| {
            let mut sum = 0;
            for _ in 0..BATCH {
                sum += op(visit());
            }
            black_box(sum)
        })
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("user_index");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for kind in ["num", "uuid"] {
        let users = ids(kind);
        let mut u = index(&users);
        let mut next = 0u32;
        let mut visit = move || {
            next = (next + STRIDE) % USERS;
            next as usize
        };
        let name = "push lookup (lend, walk, put back)";
        per_user(&mut g, name, kind, &mut visit, |i| {
            deliver(&mut u, &users[i])
        });
        let name = "read lookup (sockets)";
        per_user(&mut g, name, kind, &mut visit, |i| {
            u.sockets(1, &users[i]).len() as u64
        });
        let name = "second socket opens and closes";
        per_user(&mut g, name, kind, &mut visit, |i| {
            u.add(1, &users[i], USERS + i as u32);
            u.remove(1, &users[i], USERS + i as u32);
            0
        });
        let name = "only socket closes and opens";
        per_user(&mut g, name, kind, &mut visit, |i| {
            u.remove(1, &users[i], i as u32);
            u.add(1, &users[i], i as u32);
            0
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

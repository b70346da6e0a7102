//! Latency of the `nats` history store against a running nats-server, one call at a time
//! (what one resume or one append waits). Run:
//!
//!   nats-server -a 127.0.0.1 -p 14222 -js -sd /tmp/ringwire-nats-latency &
//!   cargo run --release --example nats_history_latency -- nats://127.0.0.1:14222 1000
//!
//! (defaults nats://127.0.0.1:4222 1000). It uses a stream of its own,
//! `RINGWIRE_LATENCY`, deleted at the end.
use ringwire::bus::{NatsHistory, NatsSettings};
use ringwire::service::history::Position;
use std::time::{Duration, Instant};

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() - 1) * p / 100].as_secs_f64() * 1e6;
    println!(
        "{what:<44} n={:<5} p50 {:>7.0} us  p99 {:>7.0} us  max {:>7.0} us",
        samples.len(),
        at(50),
        at(99),
        at(100)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let settings = NatsSettings {
        stream: "RINGWIRE_LATENCY".into(),
        subject_prefix: "ringwire.latency".into(),
        size: 100,
        ..Default::default()
    };
    let h = match NatsHistory::connect(&url, settings).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let text = "x".repeat(200);
    let mut one_user = Vec::with_capacity(n);
    let mut positions: Vec<Position> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let p = h.append(1, b"one", &text, None).await.expect("append");
        one_user.push(t.elapsed());
        positions.push(p);
    }
    report("append, one user (its last offset cached)", one_user);

    let mut new_users = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("user{i}");
        let t = Instant::now();
        h.append(1, user.as_bytes(), &text, None)
            .await
            .expect("append");
        new_users.push(t.elapsed());
    }
    report("append, a user's first (one more read)", new_users);

    let last = positions[n - 1];
    let behind = positions[n.saturating_sub(11)];
    let (mut up_to_date, mut ten_behind, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let r = h.since(1, b"one", last, 100).await.expect("since");
        up_to_date.push(t.elapsed());
        assert!(r.complete && r.messages.is_empty());
        let t = Instant::now();
        let r = h.since(1, b"one", behind, 100).await.expect("since");
        ten_behind.push(t.elapsed());
        assert!(r.complete && r.messages.len() == 10);
        let user = format!("nobody{i}");
        let t = Instant::now();
        let p = h.current(1, user.as_bytes()).await.expect("current");
        let r = h.since(1, user.as_bytes(), p, 100).await.expect("since");
        fresh.push(t.elapsed());
        assert!(r.complete);
    }
    report("since, up to date (0 messages)", up_to_date);
    report("since, 10 messages behind", ten_behind);
    report("current + since of a user with nothing", fresh);
    println!("{:?}", h.stats());

    let client = async_nats::connect(&url).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream("RINGWIRE_LATENCY").await;
}

//! The cost of the latency histograms (`engine.latency_histograms`): the same push load on
//! embedded engines side by side in one run, some recording and some not.
//!
//! Each engine has one core and 64 sockets (16 users x 4, tungstenite clients on threads that
//! read everything). What is measured is the CPU time of the core thread (its CPU-time clock,
//! exact to the ns even while it runs), not the wall time, so the clients' own work stays out
//! of it. Two loads: batches of 16 pushes handed over back to back (Criterion runs this one on
//! an engine of each kind), and single pushes each read by its clients before the next (every
//! push a wake-up of its own: the recording's worst case). For each, four engines (on, off,
//! off, on) run alternating rounds; printed: the medians, the median of the rounds' ratios
//! on/off, and the cost counted (loop turns a push from the histogram x one turn's recording
//! timed alone), which stays meaningful when the host is too loaded for the A/B to resolve 2%.
//!
//! `cargo bench --bench push -- --warm-up-time 1 --measurement-time 3`
use criterion::{criterion_group, criterion_main, Criterion};
use ringwire::config::Config;
use ringwire::facade::{Service, UserId};
use ringwire::runtime::{Engine, PushJob};
use ringwire::service::path_filter::PathFilter;
use ringwire::service::session::{unix_now, SessionKey};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;

const USERS: u32 = 16;
const SOCKETS_PER_USER: u32 = 4;

struct Rig {
    engine: Option<Engine>,
    service: Service,
    rt: tokio::runtime::Runtime,
    /// The core thread's id (for its schedstat).
    tid: String,
    received: Arc<AtomicU64>,
    sent: u64,
    text: Arc<str>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn core_threads() -> HashSet<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            (comm.trim() == "ringwire-core0").then_some(tid)
        })
        .collect()
}

/// CPU time of thread `tid` so far, in ns: its CPU-time clock (the kernel's
/// MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)), which counts the slice it is running in.
fn cpu_ns(tid: &str) -> u64 {
    let tid: i32 = tid.parse().unwrap();
    let clock = (!tid << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; an invalid clock id only returns an error.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "thread CPU clock of {tid}");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Rig {
    fn start(histograms: bool) -> Rig {
        let port = free_port();
        let config = Config::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ncores = 1\n\
             [engine]\nlatency_histograms = {histograms}\n\
             [[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n"
        ))
        .unwrap();
        let key = SessionKey::random();
        let before = core_threads();
        let engine = Engine::start(config, key.clone(), vec![], None, None).unwrap();
        let tid = loop {
            let now: Vec<_> = core_threads().difference(&before).cloned().collect();
            if let [tid] = &now[..] {
                break tid.clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let service = Service::new(engine.shared.clone(), key.clone());
        let received = Arc::new(AtomicU64::new(0));
        for user in 0..USERS {
            let user = UserId::from(user);
            let (id, secret) = key.mint(1, &user, unix_now() + 3600);
            for _ in 0..SOCKETS_PER_USER {
                let mut req = format!("ws://127.0.0.1:{port}/ws?session={}", id.to_text(&user))
                    .into_client_request()
                    .unwrap();
                req.headers_mut().insert(
                    "Cookie",
                    format!("ringwire-secret={secret}").parse().unwrap(),
                );
                let (mut ws, _) = tungstenite::connect(req).expect("upgrade");
                let received = received.clone();
                std::thread::spawn(move || {
                    while let Ok(m) = ws.read() {
                        if m.is_text() {
                            received.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(service.send(1, &0.into(), "*", "hi")).sockets,
            4
        );
        let rig = Rig {
            engine: Some(engine),
            service,
            rt,
            tid,
            received,
            sent: SOCKETS_PER_USER as u64,
            text: Arc::from("a push of a typical size: {\"type\":\"update\",\"id\":123456}"),
        };
        while rig
            .rt
            .block_on(rig.service.count(1, &(USERS - 1).into(), "*"))
            != 4
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.drain();
        rig
    }

    fn jobs(&self) -> Vec<PushJob> {
        (0..USERS)
            .map(|user| PushJob {
                context: 1,
                user: user.into(),
                filter: PathFilter::any(),
                text: self.text.clone(),
                coalesce: false,
                at: None,
                prev: None,
            })
            .collect()
    }

    /// Wait until the clients have read everything pushed so far.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received.load(Relaxed) < self.sent {
            assert!(Instant::now() < deadline, "clients did not get every push");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `iters` batches of 16 pushes handed over back to back (a busy core takes several in one
    /// loop turn); the core thread's CPU time they took.
    fn run(&mut self, iters: u64) -> Duration {
        let start = cpu_ns(&self.tid);
        for _ in 0..iters {
            let counts = self.rt.block_on(self.service.send_batch(self.jobs()));
            debug_assert_eq!(counts.sockets, u64::from(USERS * SOCKETS_PER_USER));
            self.sent += counts.sockets;
        }
        self.drain();
        Duration::from_nanos(cpu_ns(&self.tid) - start)
    }

    /// `iters` single pushes (one user, 4 sockets), each read by its clients before the next:
    /// every push is a wake-up of its own, the case where the recording weighs most.
    fn run_single(&mut self, iters: u64) -> Duration {
        let start = cpu_ns(&self.tid);
        for i in 0..iters {
            let user = (i % u64::from(USERS)) as u32;
            let jobs = vec![self.jobs().swap_remove(user as usize)];
            self.sent += self.rt.block_on(self.service.send_batch(jobs)).sockets;
            while self.received.load(Relaxed) < self.sent {
                std::thread::yield_now();
            }
        }
        Duration::from_nanos(cpu_ns(&self.tid) - start)
    }

    /// Loop turns the core recorded so far (histograms on only).
    fn turns(&self) -> u64 {
        let shared = &self.engine.as_ref().unwrap().shared;
        shared.stats[0].hist.loop_turn.snapshot().count()
    }
}

type Rigs = [(bool, Mutex<Rig>)];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `rounds` rounds of `n` units of work on every engine in turn (on, off, off, on: a slow
/// drift of the host's load weighs on both variants alike); prints the medians, the median of
/// the rounds' ratios on/off, and the recording's cost counted (loop turns a unit, from the
/// histogram, times the cost of one turn's recording timed alone).
fn compare(rigs: &Rigs, what: &str, rounds: usize, n: u64, work: fn(&mut Rig, u64) -> Duration) {
    let turns0: u64 = rigs
        .iter()
        .filter(|r| r.0)
        .map(|r| r.1.lock().unwrap().turns())
        .sum();
    let mut per_rig: Vec<Vec<f64>> = vec![Vec::new(); rigs.len()];
    for _ in 0..rounds {
        for (i, (_, rig)) in rigs.iter().enumerate() {
            let d = work(&mut rig.lock().unwrap(), n);
            per_rig[i].push(d.as_nanos() as f64 / n as f64);
        }
    }
    let turns: u64 = rigs
        .iter()
        .filter(|r| r.0)
        .map(|r| r.1.lock().unwrap().turns())
        .sum::<u64>()
        - turns0;
    let pooled = |on: bool| {
        median(
            rigs.iter()
                .zip(&per_rig)
                .filter(|((o, _), _)| *o == on)
                .flat_map(|(_, v)| v.iter().copied())
                .collect(),
        )
    };
    let (on, off) = (pooled(true), pooled(false));
    let ratio = median(
        (0..rounds)
            .map(|r| {
                let sum = |want: bool| -> f64 {
                    rigs.iter()
                        .zip(&per_rig)
                        .filter(|((o, _), _)| *o == want)
                        .map(|(_, v)| v[r])
                        .sum()
                };
                sum(true) / sum(false)
            })
            .collect(),
    );
    let per_turn = recording_ns();
    let turns_per_unit = turns as f64 / (2 * rounds as u64 * n) as f64;
    let counted = per_turn * turns_per_unit;
    println!("{what}: core CPU a unit, median of {rounds} rounds of {n} on two engines each:");
    for ((o, _), v) in rigs.iter().zip(&per_rig) {
        println!(
            "  engine histograms={o}: median {:.0} ns",
            median(v.clone())
        );
    }
    println!(
        "  measured: on {on:.0} ns, off {off:.0} ns; median of the rounds' ratios on/off {ratio:.4} ({:+.2}%)",
        (ratio - 1.0) * 100.0
    );
    println!(
        "  counted: {turns_per_unit:.2} loop turns a unit x {per_turn:.1} ns a turn = {counted:.0} ns = {:.2}% of {off:.0} ns",
        counted / off * 100.0
    );
}

/// One loop turn's recording, timed alone: two clock reads, the loop-turn and push records.
fn recording_ns() -> f64 {
    let h = ringwire::runtime::histogram::Histogram::default();
    const N: u64 = 2_000_000;
    let t0 = Instant::now();
    for _ in 0..N {
        let a = ringwire::runtime::clock::now_ns();
        let b = std::hint::black_box(ringwire::runtime::clock::now_ns());
        h.record(b.saturating_sub(a), 1);
        h.record(b.saturating_sub(a), 16);
    }
    t0.elapsed().as_nanos() as f64 / N as f64
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            e.shutdown();
            e.join();
        }
    }
}

fn bench(c: &mut Criterion) {
    let rigs: Vec<_> = [true, false, false, true]
        .into_iter()
        .map(|on| (on, Mutex::new(Rig::start(on))))
        .collect();
    let mut g = c.benchmark_group("push_16x4");
    for (on, rig) in &rigs[..2] {
        let name = if *on {
            "histograms_on"
        } else {
            "histograms_off"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| rig.lock().unwrap().run(iters))
        });
    }
    g.finish();
    compare(&rigs, "batches of 16 pushes (64 frames)", 40, 200, Rig::run);
    compare(
        &rigs,
        "single pushes (4 frames), each its own wake-up",
        30,
        200,
        Rig::run_single,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The cost of the latency histograms (`engine.latency_histograms`): the same push load on
//! two embedded engines side by side in one run, one recording and one not.
//!
//! Each engine has one core and 64 sockets (16 users x 4, tungstenite clients on threads that
//! read everything). One iteration is a batch of 16 pushes (one per user: 64 frames) handed to
//! the core and answered; what is measured is the CPU time of the core thread (its CPU-time
//! clock, exact to the ns even while it runs), not the wall time, so the clients' own work and
//! the scheduler's noise stay out of it. After Criterion's two runs, four engines (on, off,
//! off, on: so that neither variant owes its number to one engine) run alternating rounds and
//! the medians per variant and their ratio are printed.
//!
//! `cargo bench --bench push` (`-- --quick` for a short run).
use criterion::{criterion_group, criterion_main, Criterion};
use ringwire::config::Config;
use ringwire::facade::Service;
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
            let (id, secret) = key.mint(1, user, unix_now() + 3600);
            for _ in 0..SOCKETS_PER_USER {
                let mut req = format!("ws://127.0.0.1:{port}/ws?session={}", id.to_text())
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
        assert_eq!(rt.block_on(service.send(1, 0, "*", "hi")).sockets, 4);
        let rig = Rig {
            engine: Some(engine),
            service,
            rt,
            tid,
            received,
            sent: SOCKETS_PER_USER as u64,
            text: Arc::from("a push of a typical size: {\"type\":\"update\",\"id\":123456}"),
        };
        while rig.rt.block_on(rig.service.count(1, USERS - 1, "*")) != 4 {
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.drain();
        rig
    }

    fn jobs(&self) -> Vec<PushJob> {
        (0..USERS)
            .map(|user| PushJob {
                context: 1,
                user,
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

    /// `iters` batches; the core thread's CPU time they took.
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
    // Alternating rounds, the same work on every engine: core CPU ns per batch.
    const ROUNDS: usize = 40;
    const BATCHES: u64 = 250;
    let mut per_rig: Vec<Vec<f64>> = vec![Vec::new(); rigs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, rig)) in rigs.iter().enumerate() {
            let d = rig.lock().unwrap().run(BATCHES);
            per_rig[i].push(d.as_nanos() as f64 / BATCHES as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let pooled = |on: bool| {
        let v: Vec<f64> = rigs
            .iter()
            .zip(&per_rig)
            .filter(|((o, _), _)| *o == on)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        median(v)
    };
    for ((on, _), v) in rigs.iter().zip(&per_rig) {
        println!("engine histograms={on}: median {:.0} ns", median(v.clone()));
    }
    let (on, off) = (pooled(true), pooled(false));
    println!(
        "core CPU per batch of 16 pushes (64 frames), median of {ROUNDS} alternating rounds of \
         {BATCHES} on two engines each: histograms on {on:.0} ns, off {off:.0} ns, ratio on/off \
         {:.4} ({:+.2}%)",
        on / off,
        (on / off - 1.0) * 100.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

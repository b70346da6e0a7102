//! The `nats` history store against a real nats-server (JetStream, file storage in a
//! temporary directory, a free port on 127.0.0.1), started and killed by each test.
//!
//! Needs `nats-server` (Debian's package; `tests/run.sh` installs it). Without it every test
//! here passes after printing a loud SKIPPED line.
use ringwire::bus::{self, HistoryError, NatsHistory, NatsSettings};
use ringwire::service::history::{Position, Recovery};
use ringwire::service::path_filter::PathFilter;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Nats {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Nats {
    /// A nats-server with JetStream on a free port, or None (with a loud message) if
    /// nats-server is not installed.
    fn start(name: &str) -> Option<Nats> {
        Nats::start_on(name, free_port())
    }

    fn start_on(name: &str, port: u16) -> Option<Nats> {
        let Some(bin) = nats_server() else {
            eprintln!(
                "\n*** SKIPPED {name}: nats-server is not installed (apt-get install nats-server; \
                 tests/run.sh does it) ***\n"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "ringwire-nats-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut nats = Nats {
            bin,
            dir,
            port,
            child: None,
        };
        nats.run();
        Some(nats)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {} within 10 s (log: {})",
                self.port,
                self.dir.join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(size: u64, ttl_secs: u64) -> NatsSettings {
    NatsSettings {
        size,
        ttl: Duration::from_secs(ttl_secs),
        ..Default::default()
    }
}

/// Connects, retrying while JetStream starts (bounded).
async fn connect(url: &str, s: NatsSettings) -> NatsHistory {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match NatsHistory::connect(url, s.clone()).await {
            Ok(h) => return h,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}

/// A nats-server and a store connected to it, or None (skipped, loudly).
async fn store(name: &str, s: NatsSettings) -> Option<(Nats, NatsHistory)> {
    let nats = Nats::start(name)?;
    let h = connect(&nats.url(), s).await;
    Some((nats, h))
}

/// Resumes (context 1) and checks the texts and the verdict; returns the recovery.
async fn resume(
    h: &NatsHistory,
    user: &[u8],
    from: Position,
    want: &[&str],
    complete: bool,
) -> Recovery {
    let r = h.since(1, user, from, 1_000).await.expect("since");
    assert_eq!(texts(&r), want, "from {from:?}");
    assert_eq!(r.complete, complete, "from {from:?}: {r:?}");
    r
}

fn texts(r: &Recovery) -> Vec<&str> {
    r.messages.iter().map(|m| &*m.text).collect()
}

fn offsets(r: &Recovery) -> Vec<u64> {
    r.messages.iter().map(|m| m.offset).collect()
}

#[tokio::test]
async fn offsets_increase_per_user_and_a_resume_gets_exactly_what_was_missed() {
    let Some((_nats, h)) = store("basic", settings(100, 60)).await else {
        return;
    };
    let epoch = h.epoch();
    let p0 = h.current(1, b"alice").await.expect("current");
    assert_eq!(p0.epoch, epoch);
    let a1 = h.append(1, b"alice", "a1", None).await.expect("append");
    let b1 = h.append(1, b"bob", "b1", None).await.expect("append");
    let a2 = h.append(1, b"alice", "a2", None).await.expect("append");
    let a3 = h.append(1, b"alice", "a3", None).await.expect("append");
    for p in [a1, b1, a2, a3] {
        assert_eq!(p.epoch, epoch, "one epoch");
    }
    assert!(p0.offset < a1.offset && a1.offset < a2.offset && a2.offset < a3.offset);
    assert_ne!(b1.offset, a1.offset);

    let r = resume(&h, b"alice", a1, &["a2", "a3"], true).await;
    assert_eq!(offsets(&r), [a2.offset, a3.offset]);
    resume(&h, b"alice", a3, &[], true).await;
    resume(&h, b"alice", p0, &["a1", "a2", "a3"], true).await;
    resume(&h, b"bob", p0, &["b1"], true).await;
    let r = h.since(2, b"alice", p0, 100).await.expect("since");
    assert!(
        r.messages.is_empty() && r.complete,
        "another context is another user"
    );

    let r = h.since(1, b"alice", p0, 2).await.expect("since");
    assert_eq!(texts(&r), ["a1", "a2"], "the limit");
    assert!(!r.complete, "a3 is not in it");
    let future = Position {
        epoch,
        offset: a3.offset + 10,
    };
    let r = h.since(1, b"alice", future, 100).await.expect("since");
    assert!(!r.complete, "a position never given out");

    let s = h.stats();
    assert_eq!((s.appends_ok, s.appends_failed), (4, 0));
    assert_eq!(
        (s.resumes_complete, s.resumes_incomplete, s.resumes_failed),
        (5, 2, 0)
    );
}

#[tokio::test]
async fn the_size_limit_keeps_the_newest_and_a_resume_from_before_is_incomplete() {
    let Some((_nats, h)) = store("size", settings(3, 60)).await else {
        return;
    };
    let p0 = h.current(1, b"u").await.expect("current");
    let mut p = Vec::new();
    for i in 1..=5 {
        p.push(
            h.append(1, b"u", &format!("m{i}"), None)
                .await
                .expect("append"),
        );
    }
    resume(&h, b"u", p0, &["m3", "m4", "m5"], false).await;
    // m1 and m2 were dropped; what is held is still given.
    resume(&h, b"u", p[0], &["m3", "m4", "m5"], false).await;
    // Nothing after m2 was dropped.
    resume(&h, b"u", p[1], &["m3", "m4", "m5"], true).await;
    resume(&h, b"u", p[2], &["m4", "m5"], true).await;
}

#[tokio::test]
async fn the_max_age_drops_messages_and_a_resume_across_them_is_incomplete() {
    let Some((_nats, h)) = store("ttl", settings(100, 1)).await else {
        return;
    };
    let p0 = h.current(1, b"u").await.expect("current");
    let x = h.append(1, b"u", "x", None).await.expect("append");
    resume(&h, b"u", p0, &["x"], true).await;
    // Wait until the server expired it (1 s max age; bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = h.since(1, b"u", p0, 100).await.expect("since");
        if r.messages.is_empty() {
            assert!(!r.complete, "x expired unseen");
            break;
        }
        assert!(Instant::now() < deadline, "x did not expire within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client had x: nothing was missed.
    resume(&h, b"u", x, &[], true).await;
    // The user holds nothing now: the next append starts a new chain.
    let y = h.append(1, b"u", "y", None).await.expect("append");
    assert!(y.offset > x.offset && y.epoch == x.epoch);
    resume(&h, b"u", x, &["y"], true).await;
    resume(&h, b"u", p0, &["y"], false).await;
}

#[tokio::test]
async fn a_fresh_position_resumed_later_without_pushes_is_complete() {
    let Some((_nats, h)) = store("fresh", settings(2, 60)).await else {
        return;
    };
    // A user who never had a push.
    let fresh = h.current(1, b"carol").await.expect("current");
    for i in 0..10 {
        h.append(1, format!("other{i}").as_bytes(), "x", None)
            .await
            .expect("append");
    }
    resume(&h, b"carol", fresh, &[], true).await;
    // A user with history: a new client of theirs, then others push.
    let c1 = h.append(1, b"carol", "c1", None).await.expect("append");
    let fresh = h.current(1, b"carol").await.expect("current");
    assert!(fresh.offset >= c1.offset);
    for i in 0..10 {
        h.append(1, b"dave", &format!("d{i}"), None)
            .await
            .expect("append");
    }
    resume(&h, b"carol", fresh, &[], true).await;
    resume(&h, b"carol", c1, &[], true).await;
    // And a push after the fresh position is given, complete.
    let c2 = h.append(1, b"carol", "c2", None).await.expect("append");
    let r = resume(&h, b"carol", fresh, &["c2"], true).await;
    assert_eq!(offsets(&r), [c2.offset]);
}

#[tokio::test]
async fn positions_of_a_deleted_stream_are_never_completed() {
    let Some(nats) = Nats::start("epoch") else {
        return;
    };
    let s = settings(100, 60);
    let h = connect(&nats.url(), s.clone()).await;
    let p0 = h.current(1, b"u").await.expect("current");
    let a = h.append(1, b"u", "a", None).await.expect("append");
    // An operator deletes the stream; the store makes it again on its next call.
    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    js.delete_stream(&s.stream).await.expect("delete stream");
    for from in [p0, a] {
        resume(&h, b"u", from, &[], false).await;
    }
    assert_ne!(h.epoch(), a.epoch, "a new stream, a new epoch");
    let b = h
        .append(1, b"u", "b", None)
        .await
        .expect("append after recreation");
    assert_eq!(b.epoch, h.epoch());
    resume(&h, b"u", a, &[], false).await;
    // Another node sees the same epoch.
    let other = connect(&nats.url(), s).await;
    assert_eq!(other.epoch(), b.epoch);
    let start = Position {
        epoch: b.epoch,
        offset: 0,
    };
    resume(&other, b"u", start, &["b"], true).await;
}

#[tokio::test]
async fn the_stream_limits_follow_the_settings_and_keep_the_epoch() {
    let Some((nats, h)) = store("limits", settings(3, 60)).await else {
        return;
    };
    let epoch = h.epoch();
    let h = connect(&nats.url(), settings(5, 120)).await;
    assert_eq!(h.epoch(), epoch, "updating limits keeps the epoch");
    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(&h.settings().stream)
        .await
        .expect("the stream");
    let config = &stream.cached_info().config;
    assert_eq!(config.max_messages_per_subject, 5);
    assert_eq!(config.max_age, Duration::from_secs(120));
    assert_eq!(config.subjects, ["ringwire.history.>"]);
}

#[tokio::test]
async fn nats_down_fails_fast_and_the_store_recovers_when_it_is_back() {
    let Some(mut nats) = Nats::start("down") else {
        return;
    };
    let s = NatsSettings {
        timeout: Duration::from_secs(1),
        ..settings(100, 60)
    };
    let h = connect(&nats.url(), s).await;
    let p0 = h.current(1, b"u").await.expect("current");
    let a = h.append(1, b"u", "before", None).await.expect("append");

    nats.kill();
    let bound = Duration::from_millis(1_500);
    let t = Instant::now();
    let e = h.append(1, b"u", "lost", None).await.expect_err("down");
    assert!(t.elapsed() < bound, "append took {:?}", t.elapsed());
    eprintln!("append while down: {e}");
    let t = Instant::now();
    let e = h.since(1, b"u", p0, 100).await.expect_err("down");
    assert!(t.elapsed() < bound, "since took {:?}", t.elapsed());
    eprintln!("since while down: {e}");
    let t = Instant::now();
    let e = h.current(1, b"u").await.expect_err("down");
    assert!(t.elapsed() < bound, "current took {:?}", t.elapsed());
    assert!(
        matches!(
            e,
            HistoryError::Unreachable { .. } | HistoryError::Timeout { .. }
        ),
        "{e:?}"
    );
    let s = h.stats();
    assert_eq!((s.appends_failed, s.resumes_failed), (1, 1));

    // Same port, same store: the client reconnects by itself.
    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let b = loop {
        match h.append(1, b"u", "after", None).await {
            Ok(p) => break p,
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect within 15 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(b.epoch, a.epoch, "the stream survived the restart");
    // "lost" was never recorded: a client that had `a` (or `p0`) missed it, and is told so
    // (the outage is marked in the stream), with what is held still given.
    resume(&h, b"u", a, &["after"], false).await;
    resume(&h, b"u", p0, &["before", "after"], false).await;
    // From after the outage's marker, nothing is missing.
    resume(&h, b"u", b, &[], true).await;
    // Another client of the store (another node) sees the marker too.
    let other = connect(&nats.url(), settings(100, 60)).await;
    let r = other.since(1, b"u", a, 100).await.expect("since");
    assert!(!r.complete, "another node must see the outage");
}

#[tokio::test]
async fn two_nodes_appending_to_one_user_agree_on_one_order() {
    let Some(nats) = Nats::start("nodes") else {
        return;
    };
    let s = settings(1_000, 60);
    let one = connect(&nats.url(), s.clone()).await;
    let two = connect(&nats.url(), s).await;
    assert_eq!(one.epoch(), two.epoch());
    let p0 = one.current(1, b"u").await.expect("current");
    // Strictly alternating: each node's cache of the user's last offset is stale every time.
    let mut expected = Vec::new();
    for i in 0..10 {
        let (h, name) = if i % 2 == 0 {
            (&one, "one")
        } else {
            (&two, "two")
        };
        let text = format!("{name}-{i}");
        let p = h.append(1, b"u", &text, None).await.expect("append");
        expected.push((p.offset, text));
    }
    // Concurrently: both nodes race for the same user.
    let run = |h: &'static NatsHistory, name: &'static str| async move {
        let mut mine = Vec::new();
        for i in 0..25 {
            let text = format!("{name}-c{i}");
            let p = h.append(1, b"u", &text, None).await.expect("append");
            mine.push((p.offset, text));
        }
        mine
    };
    let one: &'static NatsHistory = Box::leak(Box::new(one));
    let two: &'static NatsHistory = Box::leak(Box::new(two));
    let (m1, m2) = tokio::join!(run(one, "one"), run(two, "two"));
    for mine in [&m1, &m2] {
        assert!(
            mine.windows(2).all(|w| w[0].0 < w[1].0),
            "one node's appends in its order"
        );
    }
    expected.extend(m1);
    expected.extend(m2);
    expected.sort();
    for h in [one, two] {
        let r = h.since(1, b"u", p0, 1_000).await.expect("since");
        let got: Vec<(u64, String)> = r
            .messages
            .iter()
            .map(|m| (m.offset, m.text.to_string()))
            .collect();
        assert_eq!(got, expected, "one order seen from both nodes");
        assert!(r.complete, "the prev chain is intact");
    }
    let last = Position {
        epoch: one.epoch(),
        offset: expected.last().map(|e| e.0).unwrap_or_default(),
    };
    let r = two.since(1, b"u", last, 10).await.expect("since");
    assert!(r.messages.is_empty() && r.complete);
}

#[tokio::test]
async fn a_push_comes_back_with_its_path_filter() {
    let Some((_nats, h)) = store("filter", settings(100, 60)).await else {
        return;
    };
    let p0 = h.current(1, b"u").await.expect("current");
    let odd = PathFilter::new("/é b%\r\n*");
    let sent = [
        ("all", None),
        ("a", Some(PathFilter::new("/a*"))),
        ("star", Some(PathFilter::any())),
        ("odd", Some(odd.clone())),
    ];
    for (text, filter) in &sent {
        h.append(1, b"u", text, filter.as_ref())
            .await
            .expect("append");
    }
    let r = resume(&h, b"u", p0, &["all", "a", "star", "odd"], true).await;
    let filters: Vec<_> = r.messages.iter().map(|m| m.filter.clone()).collect();
    assert_eq!(
        filters,
        [None, Some(PathFilter::new("/a*")), None, Some(odd)],
        "`*` comes back as every path"
    );
    let to_b: Vec<_> = r.messages.iter().filter(|m| m.reaches("/b")).collect();
    assert_eq!(to_b.len(), 2, "all and star");
}

fn wait<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an answer within 10 s")
}

#[test]
fn the_nats_thread_answers_in_callbacks_in_submission_order() {
    let Some(nats) = Nats::start("bus") else {
        return;
    };
    let bus = bus::spawn(&nats.url(), settings(100, 60)).expect("spawn");
    let tx = bus.sender();
    let (cur_tx, cur_rx) = mpsc::channel();
    tx.current(1, b"u", move |r| {
        let _ = cur_tx.send(r);
    })
    .expect("submit");
    let p0 = wait(&cur_rx).expect("current");
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..50 {
        let done_tx = done_tx.clone();
        tx.append(1, b"u", format!("m{i}").into(), None, move |r| {
            let thread = std::thread::current().name().map(str::to_string);
            let _ = done_tx.send((i, r, thread));
        })
        .expect("submit");
    }
    let mut got: Vec<(u32, Position)> = (0..50)
        .map(|_| {
            let (i, r, thread) = wait(&done_rx);
            assert_eq!(thread.as_deref(), Some("ringwire-nats"));
            (i, r.expect("append"))
        })
        .collect();
    got.sort_by_key(|(i, _)| *i);
    assert!(
        got.windows(2).all(|w| w[0].1.offset < w[1].1.offset),
        "stored in submission order"
    );
    let (since_tx, since_rx) = mpsc::channel();
    tx.since(1, b"u", p0, 100, move |r| {
        let _ = since_tx.send(r);
    })
    .expect("submit");
    let r = wait(&since_rx).expect("since");
    let want: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&r), want);
    assert!(r.complete);
    let s = bus.stats();
    assert_eq!((s.appends_ok, s.resumes_complete), (50, 1));
    bus.shutdown();
    let e = tx
        .append(1, b"u", "late".into(), None, |_| {})
        .expect_err("stopped");
    assert_eq!(e, HistoryError::Stopped);
}

#[test]
fn the_nats_thread_starts_without_nats_and_connects_when_it_comes() {
    if nats_server().is_none() {
        let _ = Nats::start("bus-late");
        return;
    }
    let port = free_port();
    let s = NatsSettings {
        timeout: Duration::from_millis(500),
        ..settings(100, 60)
    };
    let bus = bus::spawn(&format!("nats://127.0.0.1:{port}"), s).expect("spawn");
    let tx = bus.sender();
    let (done_tx, done_rx) = mpsc::channel();
    let t = Instant::now();
    let submit = |text: &str| {
        let done_tx = done_tx.clone();
        tx.append(1, b"u", text.into(), None, move |r| {
            let _ = done_tx.send(r);
        })
        .expect("submit");
    };
    submit("early");
    let e = wait(&done_rx).expect_err("no NATS yet");
    assert!(matches!(e, HistoryError::Unreachable { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    eprintln!("append before NATS: {e}");

    let Some(_nats) = Nats::start_on("bus-late", port) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        submit("later");
        match wait(&done_rx) {
            Ok(p) => {
                assert!(p.offset >= 1);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "not connected within 15 s: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert!(bus.stats().appends_failed >= 1);
}

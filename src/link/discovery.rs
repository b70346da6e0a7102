//! Membership on NATS (`[cluster] discovery = "nats"`): every node registers itself in a
//! JetStream key-value bucket (key = node id, a JSON [`Member`]), refreshes its entry every
//! third of `member_ttl_ms` (the bucket's max age), and watches the bucket: a new member is
//! linked within the watch's latency (milliseconds), a member that says `leaving` is routed
//! nothing more, and a member whose entry is gone (deleted on a clean stop, or expired
//! after a crash) is forgotten once its link is down.
//!
//! The data plane never waits on NATS: the QUIC links and the presence they carry go on
//! while NATS is away; only membership changes wait. The client reconnects by itself; each
//! time the watch is made again, it starts with every current entry, so the cluster
//! converges. A member is forgotten for a missing refresh only after the watch has run for
//! a whole ttl, so an outage never makes a node forget its peers.
use super::members::{Link, Phase};
use crate::config::{ClusterConfig, NatsConfig};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What discovery needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    url: String,
    bucket: String,
    ttl: Duration,
    timeout: Duration,
    me: Member,
}

impl Settings {
    pub fn new(cfg: &ClusterConfig, nats: &NatsConfig) -> Settings {
        Settings {
            url: nats.url.clone(),
            bucket: cfg.members_bucket.clone(),
            ttl: Duration::from_millis(cfg.member_ttl_ms),
            timeout: Duration::from_millis(nats.timeout_ms),
            me: Member {
                node: cfg.node_id.clone(),
                addr: cfg.advertised(),
                name: cfg.node_id.clone(),
                cores: 0,
                state: "joining".into(),
                version: crate::cluster::wire::VERSION,
            },
        }
    }
}

/// A member's entry in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id (also the key).
    pub node: String,
    /// Where its QUIC link listens.
    pub addr: SocketAddr,
    /// The name its certificate carries (what a dialler verifies).
    pub name: String,
    pub cores: usize,
    /// `joining`, `serving` or `leaving`.
    pub state: String,
    /// Its link protocol version.
    pub version: u8,
}

impl Member {
    /// An entry as read from the bucket: `None` (and why) if it cannot be used.
    pub fn parse(key: &str, value: &[u8]) -> Result<Member, String> {
        let m: Member = serde_json::from_slice(value).map_err(|e| format!("not a member: {e}"))?;
        if m.node != key {
            return Err(format!("key {key:?} holds node {:?}", m.node));
        }
        if !matches!(m.state.as_str(), "joining" | "serving" | "leaving") {
            return Err(format!("unknown state {:?}", m.state));
        }
        if m.addr.ip().is_unspecified() || m.addr.port() == 0 {
            return Err(format!("cannot dial {}", m.addr));
        }
        Ok(m)
    }
}

/// Register, refresh and watch until `stop`; then take this node out of the bucket.
pub async fn run(link: Arc<Link>, mut settings: Settings, mut stop: watch::Receiver<bool>) {
    settings.me.cores = link.state.cores();
    let state = link.state.clone();
    let url = settings.url.clone();
    let options = async_nats::ConnectOptions::new()
        .name("ringwire-discovery")
        .connection_timeout(settings.timeout)
        .request_timeout(Some(settings.timeout))
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .event_callback(move |event| {
            let (url, state) = (url.clone(), state.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        state.discovery_nats.store(1, Relaxed);
                        tracing::info!(%url, "cluster discovery: nats connected")
                    }
                    async_nats::Event::Disconnected => {
                        state.discovery_nats.store(2, Relaxed);
                        tracing::warn!(
                            %url,
                            "cluster discovery: nats disconnected; links go on, membership \
                             changes wait"
                        )
                    }
                    other => tracing::debug!(%url, event = %other, "cluster discovery"),
                }
            }
        });
    let client = match options.connect(&settings.url).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %settings.url, "cluster discovery: {e}");
            return;
        }
    };
    let js = jetstream::context::ContextBuilder::new()
        .timeout(settings.timeout)
        .build(client.clone());
    let mut store = None;
    let mut failing = false;
    loop {
        let session = session(&link, &js, &settings, &mut store);
        tokio::select! {
            r = session => {
                if let Err(e) = r {
                    if !failing {
                        tracing::warn!(url = %settings.url, "cluster discovery: {e}; retrying");
                    }
                    failing = true;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some(kv) = store {
        let gone = tokio::time::timeout(settings.timeout, kv.delete(&settings.me.node)).await;
        if !matches!(gone, Ok(Ok(()))) {
            tracing::debug!("cluster discovery: could not remove this node's entry");
        }
    }
}

/// The bucket (made if absent). Its stream is made here as the KV conventions want it
/// (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value per key, rollups, direct gets): the
/// client's own `create_key_value` asks for account details nats-server 2.9 answers in a
/// shape it does not read.
async fn bucket(js: &jetstream::Context, s: &Settings) -> Result<kv::Store, String> {
    if let Ok(kv) = js.get_key_value(&s.bucket).await {
        return Ok(kv);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{}", s.bucket),
        description: Some("ringwire cluster members".into()),
        subjects: vec![format!("$KV.{}.>", s.bucket)],
        max_messages_per_subject: 1,
        max_age: s.ttl,
        storage: jetstream::stream::StorageType::Memory,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(e) = js.create_stream(config).await {
        // Another node may have made it meanwhile.
        tracing::debug!("cluster discovery: creating the bucket: {e}");
    }
    js.get_key_value(&s.bucket)
        .await
        .map_err(|e| format!("bucket {}: {e}", s.bucket))
}

async fn publish(kv: &kv::Store, me: &Member, phase: Phase) -> Result<(), String> {
    let mut entry = me.clone();
    entry.state = phase.name().into();
    let body = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    kv.put(&me.node, body.into())
        .await
        .map(|_| ())
        .map_err(|e| format!("register: {e}"))
}

/// One run of register + watch, until an error.
async fn session(
    link: &Arc<Link>,
    js: &jetstream::Context,
    s: &Settings,
    store: &mut Option<kv::Store>,
) -> Result<(), String> {
    let kv = bucket(js, s).await?;
    *store = Some(kv.clone());
    let mut phase = link.phase.subscribe();
    let now = *phase.borrow_and_update();
    publish(&kv, &s.me, now).await?;
    let mut watch = kv
        .watch_all()
        .await
        .map_err(|e| format!("watch {}: {e}", s.bucket))?;
    tracing::info!(bucket = %s.bucket, "cluster discovery: registered, watching the members");
    let since = Instant::now();
    // Node id → (last entry seen, when, its state said leaving).
    let mut seen: HashMap<String, (Instant, bool)> = HashMap::new();
    let mut refresh = tokio::time::interval(s.ttl / 3);
    refresh.tick().await;
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    let mut joined = false;
    loop {
        tokio::select! {
            entry = watch.next() => {
                let entry = match entry {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => return Err(format!("watch: {e}")),
                    None => return Err("watch ended".into()),
                };
                on_entry(link, &s.me.node, &entry, &mut seen);
                if !joined && entry.delta == 0 {
                    joined = true;
                    tokio::spawn(serving_soon(link.clone()));
                }
            }
            _ = refresh.tick() => {
                let p = *phase.borrow();
                publish(&kv, &s.me, p).await?;
            }
            Ok(()) = phase.changed() => {
                let p = *phase.borrow_and_update();
                publish(&kv, &s.me, p).await?;
            }
            _ = sweep.tick() => {
                forget_gone(link, &mut seen, since, s.ttl);
                if !joined && since.elapsed() > Duration::from_secs(1) {
                    // An empty bucket sends nothing to mark the end of the snapshot.
                    joined = true;
                    tokio::spawn(serving_soon(link.clone()));
                }
            }
        }
    }
}

fn on_entry(
    link: &Arc<Link>,
    me: &str,
    entry: &kv::Entry,
    seen: &mut HashMap<String, (Instant, bool)>,
) {
    if entry.key == me {
        return;
    }
    match entry.operation {
        kv::Operation::Put => match Member::parse(&entry.key, &entry.value) {
            Ok(m) => {
                let leaving = m.state == "leaving";
                seen.insert(m.node.clone(), (Instant::now(), leaving));
                if leaving {
                    if let Some(i) = link.state.find(&m.node) {
                        link.peer_leaving(i);
                    }
                } else {
                    link.learn(&m.node, m.addr);
                }
            }
            Err(e) => tracing::warn!(key = %entry.key, "cluster discovery: entry ignored: {e}"),
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            // Gone for good (a clean stop): forgotten as soon as its link is down.
            seen.insert(entry.key.clone(), (Instant::now(), true));
            if let Some(i) = link.state.find(&entry.key) {
                link.peer_leaving(i);
            }
        }
    }
}

/// Forget members that left (and whose link is down), and members whose entry has not been
/// refreshed for a ttl while the watch ran all that time.
fn forget_gone(
    link: &Link,
    seen: &mut HashMap<String, (Instant, bool)>,
    since: Instant,
    ttl: Duration,
) {
    let watched_a_ttl = since.elapsed() > ttl;
    seen.retain(|node, (at, leaving)| {
        let stale = watched_a_ttl && at.elapsed() > ttl;
        if !(*leaving || stale) {
            return true;
        }
        match link.state.find(node) {
            Some(i) if link.state.peer(i).is_some_and(|p| p.up()) => true,
            Some(i) => {
                link.forget(i);
                false
            }
            None => false,
        }
    });
}

/// `serving` once linked to every member found (or after a second).
async fn serving_soon(link: Arc<Link>) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let (_, _, down) = link.state.member_counts();
        if down == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    link.phase.send_if_modified(|p| {
        let change = *p == Phase::Joining;
        if change {
            *p = Phase::Serving;
        }
        change
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_before_use() {
        let good = br#"{"node":"b","addr":"127.0.0.2:7001","name":"b","cores":2,"state":"serving","version":4}"#;
        let m = Member::parse("b", good).unwrap();
        assert_eq!(m.addr, "127.0.0.2:7001".parse().unwrap());
        assert!(Member::parse("c", good).unwrap_err().contains("holds node"));
        assert!(Member::parse("b", b"{").is_err());
        let bad_state =
            br#"{"node":"b","addr":"127.0.0.2:7001","name":"b","cores":2,"state":"x","version":4}"#;
        assert!(Member::parse("b", bad_state).unwrap_err().contains("state"));
        let any = br#"{"node":"b","addr":"0.0.0.0:7001","name":"b","cores":2,"state":"serving","version":4}"#;
        assert!(Member::parse("b", any).unwrap_err().contains("dial"));
    }
}

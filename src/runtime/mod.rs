//! The data plane: one pinned thread and one io_uring per core ("shard").
//!
//! - Each shard has its own SO_REUSEPORT listener and accepts with multishot accept straight
//!   into its ring's fixed-file table (direct descriptors: not counted against RLIMIT_NOFILE).
//! - Reads use a provided buffer ring: idle sockets hold no read buffer.
//! - Writes are corked per loop turn: frames queue in the socket's buffer and one send per
//!   socket goes out at the end of the turn.
//! - After the upgrade a socket moves to the core that owns its key with MSG_RING
//!   (IORING_MSG_SEND_FD); the upgrade record travels as the message's user_data.
//! - Deadlines (handshake, keepalive, linger) live in a timing wheel ticked by one multishot
//!   timeout per ring.
//! - The control plane talks to a shard through a lock-free queue plus an eventfd wake-up.
mod accept;
mod admission;
mod bufring;
pub mod clock;
mod conn;
mod drain;
pub mod histogram;
pub mod history;
pub mod lifecycle;
mod meta;
mod outbox;
mod refusal_log;
/// The core's pool of send buffers (public for the benches).
pub use outbox::BufPool;
/// Public for `benches/remote.rs`; not an API.
#[doc(hidden)]
pub mod remote;
pub mod resume;
mod ring;
mod shard;
mod slots;
pub mod stats;
mod sys;
pub use sys::{monotonic_ns, proc_units};
mod timer;
pub mod tls;
mod token;
pub mod users;

use crate::cluster::ClusterState;
use crate::config::Config;
use crate::config::EndpointKind;
use crate::service::listener::{Listener, RawTranscoder, SocketIoTranscoder, Transcoder};
use crate::service::path_filter::PathFilter;
use crate::service::placement;
use crate::service::session::SessionKey;
use crate::service::user_id::UserId;
use crossbeam_queue::SegQueue;
use stats::ShardStats;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// One push for one user.
#[derive(Debug, Clone)]
pub struct PushJob {
    pub context: u32,
    pub user: UserId,
    pub filter: PathFilter,
    pub text: Arc<str>,
    /// Copies bound for other nodes may wait to merge with equal pushes (`[remote]`);
    /// `false` sends them at once. Local delivery is immediate either way.
    pub coalesce: bool,
    /// Its position when a store off the core recorded it already (`nats`); `None`: the
    /// owning core's memory store gives it one (if history is on).
    pub at: Option<crate::service::history::Position>,
    /// With `at` from the nats store: the offset of the user's message before it (0: none),
    /// so that a socket that did not get that one yet knows of the gap (pushes made on
    /// different nodes may arrive out of order) and fills it from the store first.
    pub prev: Option<u64>,
}

/// What a push reached: sockets on this node, and other nodes it was queued for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCounts {
    pub sockets: u64,
    pub remote_nodes: u64,
    /// With history on: the position of each push, in the order of the jobs (`None`: the
    /// store could not record it); empty with history off.
    pub positions: Vec<Option<crate::service::history::Position>>,
}

/// A user's matching sockets: here, and on each other node (index = peer in the config)
/// according to this node's presence directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub local: u64,
    pub remote: Vec<u64>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.local + self.remote.iter().sum::<u64>()
    }
}

/// A command from the control plane to one shard.
pub enum Command {
    /// Stop accepting, close every socket with 1001, exit the loop.
    Shutdown,
    /// Deliver pushes to users owned by this core, and (`forward`) queue them for the other
    /// nodes holding those users' sockets; replies with what they reached.
    Push {
        jobs: Vec<PushJob>,
        reply: Option<oneshot::Sender<PushCounts>>,
        forward: bool,
    },
    /// Count a user's open sockets matching a filter, here and on the other nodes.
    Count {
        context: u32,
        user: UserId,
        filter: PathFilter,
        reply: oneshot::Sender<Counts>,
    },
    /// A link to peer `node` became current: re-sync presence with it. `continued`: the
    /// link is with the same run of the peer as the one before (its sockets may all still
    /// be there: what it held is kept until it has re-sent its presence).
    PeerUp { node: u16, continued: bool },
    /// Peer `node` went away: drop its presence and what waits for it.
    PeerDown { node: u16 },
    /// Peer `node`'s link failed: what waits for it is dropped, its presence kept (pushes
    /// for its users are counted lost) until it is back or gone.
    PeerUnreachable { node: u16 },
    /// Presence updates from peer `node` for users this core owns.
    RemotePresence {
        node: u16,
        entries: Vec<crate::cluster::wire::UserPresence>,
    },
    /// Pushes of another node for these users (`None`: every user of this core) may have
    /// been lost on the way: their history sockets catch up from the store, or are told
    /// `recovered: false`.
    CatchUp { users: Option<Vec<(u32, UserId)>> },
    /// A session was terminated: refuse it, close its sockets.
    Revoke(crate::service::session::Revocation),
    /// Answered at once: every command queued before it on this core has been handled.
    Barrier(oneshot::Sender<()>),
    /// The history store answered what socket `slot` (generation `gen`) missed.
    Resumed {
        slot: u32,
        gen: u32,
        answer: resume::StoreAnswer,
    },
    /// The history store answered what socket `slot` (generation `gen`) missed after what
    /// it was sent, for a push that came before its user's previous one.
    GapFilled {
        slot: u32,
        gen: u32,
        answer: resume::StoreAnswer,
    },
    /// The history store answered the Socket.IO CONNECT of namespace `nsp` on the session
    /// in `slot` (generation `gen`), which claimed `claim` (`tag`: randomness for a new pid).
    SioResumed {
        slot: u32,
        gen: u32,
        nsp: Box<str>,
        claim: Option<crate::service::engineio::recovery::Claim>,
        tag: u64,
        answer: resume::RestoreAnswer,
    },
    /// New cascade and limits.
    Reload(Arc<crate::service::upgrade::UpgradePolicy>),
    /// The `[proxy]` application answered for the request parked in `slot` (generation
    /// `gen`), asked with credentials `key`: carry its plan out, or refuse.
    ProxyAnswered {
        slot: u32,
        gen: u32,
        key: crate::service::proxy_auth::CredKey,
        plan: crate::service::plan::PendingPlan,
        answer: crate::service::proxy_auth::ProxyAnswer,
    },
    /// A newly fetched `[jwt] jwks_url` key set, for the upgrades from now on.
    Jwks(Arc<crate::service::jwks::JwkKeys>),
    /// Set (or replace) an attribute of one socket; replies whether the socket is open and
    /// the attribute fits the limits.
    SetAttribute {
        socket: u64,
        key: Box<str>,
        value: Box<str>,
        reply: oneshot::Sender<Result<(), AttributeError>>,
    },
}

/// Why an attribute could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeError {
    /// The socket is closed (or the id is not one of ours).
    NoSuchSocket,
    /// More than [`MAX_ATTRIBUTES`] attributes, or a key/value over its size limit.
    TooLarge,
}

/// Attributes per socket, and the largest key and value (bytes): the store is small by design.
pub const MAX_ATTRIBUTES: usize = 16;
pub const MAX_ATTRIBUTE_KEY: usize = 64;
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;

/// CPUs this process may run on (what `server.cores = 0` uses).
pub fn available_cpus() -> usize {
    sys::allowed_cpus().len().max(1)
}

/// A socket id (as listeners see it): core, generation and slot.
pub fn socket_id(core: usize, gen: u32, slot: u32) -> u64 {
    (core as u64) << 56 | (gen as u64) << 32 | slot as u64
}

/// The parts of a socket id: (core, gen, slot).
pub fn socket_id_parts(id: u64) -> (usize, u32, u32) {
    (
        (id >> 56) as usize,
        ((id >> 32) as u32) & 0x00FF_FFFF,
        id as u32,
    )
}

/// State shared by the shards and the control plane. Everything here is either immutable after
/// start or lock-free.
pub struct Shared {
    pub cores: usize,
    pub stats: Vec<ShardStats>,
    ring_fds: Vec<RawFd>,
    wake_fds: Vec<OwnedFd>,
    inboxes: Vec<SegQueue<Command>>,
    /// Starting, running, draining, stopped: what readiness, the cores and the drain read.
    pub lifecycle: lifecycle::Lifecycle,
    /// Verifies sessions (shared by the nodes of a cluster).
    pub session_key: SessionKey,
    /// Embedding applications' listeners, called on the owning core.
    pub listeners: Vec<Arc<dyn Listener>>,
    /// Per endpoint (index in the config): how pushed text becomes frames and received text
    /// becomes listener messages. `None` = the endpoint takes no pushes (echo).
    pub transcoders: Vec<Option<Arc<dyn Transcoder>>>,
    /// The cluster, when `[cluster]` is configured.
    pub cluster: Option<Arc<ClusterState>>,
    /// The history store off the cores (`[history] store = "nats"`).
    pub history_bus: Option<Arc<dyn resume::HistoryBus>>,
    /// The client of `[proxy]` (`auth = "proxy"` endpoints): the cores ask it and go on;
    /// its task runs on the control thread (`server.rs` starts it).
    pub proxy: Option<Arc<crate::service::proxy_client::ProxyClient>>,
}

impl Shared {
    /// The core that owns a user's sockets.
    pub fn owner_of(&self, context: u32, user: &UserId) -> usize {
        placement::owner_core(placement::user_key(context, user), self.cores)
    }

    /// `items` grouped by the core that owns their `(context, user)`, one list per core.
    fn by_owner<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> (u32, &UserId),
    ) -> Vec<Vec<T>> {
        let mut per_core: Vec<Vec<T>> = (0..self.cores).map(|_| Vec::new()).collect();
        for item in items {
            let (context, user) = key(&item);
            per_core[self.owner_of(context, user)].push(item);
        }
        per_core
    }

    /// Connections on this node in any state (for `limits.max_connections`), summed over the
    /// cores' own counters (no counter shared by the cores on the accept path).
    pub fn open_connections(&self) -> u64 {
        // Closes first: every close counted was opened before, so the difference cannot go
        // below zero but for the reads racing the cores (saturated).
        let closed: u64 = self
            .stats
            .iter()
            .map(|s| ShardStats::get(&s.connections_closed))
            .sum();
        let opened: u64 = self
            .stats
            .iter()
            .map(|s| ShardStats::get(&s.connections_opened))
            .sum();
        opened.saturating_sub(closed)
    }

    /// The one fan-out to the owning cores: each core that owns any of `items` (by their
    /// `(context, user)`) gets one command, made by `make` from its share, in order.
    pub fn send_to_owners<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> (u32, &UserId),
        mut make: impl FnMut(Vec<T>) -> Command,
    ) {
        for (core, share) in self.by_owner(items, key).into_iter().enumerate() {
            if !share.is_empty() {
                self.send(core, make(share));
            }
        }
    }

    /// The one fan-out to every core: each gets the command `make` makes.
    pub fn send_to_every_core(&self, make: impl Fn() -> Command) {
        for core in 0..self.cores {
            self.send(core, make());
        }
    }

    /// Queue a command for shard `core` and wake it.
    pub fn send(&self, core: usize, cmd: Command) {
        self.inboxes[core].push(cmd);
        self.wake(core);
    }

    /// Ring shard `core`'s doorbell (its eventfd).
    pub(crate) fn wake(&self, core: usize) {
        sys::eventfd_signal(self.wake_fds[core].as_raw_fd());
    }
}

/// Why the engine could not start, with what to do about it.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn io_uring_unavailable(e: io::Error) -> StartError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    StartError(format!(
        "io_uring is unavailable: {e}.\n  ringwire's data plane needs io_uring (Linux >= 6.1 for multishot accept, \
         MSG_RING and provided buffer rings).\n  - kernel.io_uring_disabled = {disabled} (must be 0: `sysctl -w kernel.io_uring_disabled=0`)\n  \
         - containers: the default seccomp profiles of Docker/containerd block io_uring; run with a profile that allows \
         io_uring_setup/io_uring_enter/io_uring_register\n  - `ringwire doctor` checks the host"
    ))
}

/// The running data plane.
pub struct Engine {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// `server.drain_deadline_secs` at start: how long a drain may take at most.
    drain_deadline_secs: u64,
}

impl Engine {
    /// Build every ring and listener, then start one pinned thread per core.
    pub fn start(
        config: Config,
        session_key: SessionKey,
        listeners: Vec<Arc<dyn Listener>>,
        cluster: Option<Arc<ClusterState>>,
        history_bus: Option<Arc<dyn resume::HistoryBus>>,
    ) -> Result<Engine, StartError> {
        let nofile = sys::raise_nofile_limit();
        if config.engine.latency_histograms {
            clock::calibrate();
        }
        let cpus = sys::allowed_cpus();
        let drain_deadline_secs = config.server.drain_deadline_secs;
        let cores = Self::cores_for(&config);
        let table_slots = match config.engine.fixed_files {
            0 => nofile.min(u32::MAX as u64) as u32,
            n => n.min(nofile as u32),
        };
        sys::check_address_free(config.server.listen)
            .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.server.listen)))?;
        let mut parts = Vec::with_capacity(cores);
        for core in 0..cores {
            let ring =
                ring::build_ring(&config.engine, table_slots).map_err(io_uring_unavailable)?;
            let listener = sys::reuseport_listener(config.server.listen, config.engine.backlog)
                .map_err(|e| {
                    StartError(format!("cannot listen on {}: {e}", config.server.listen))
                })?;
            let wake = sys::eventfd().map_err(|e| StartError(format!("eventfd: {e}")))?;
            parts.push((core, ring, listener, wake));
        }
        let shared = Arc::new(Shared {
            cores,
            stats: (0..cores)
                .map(|_| ShardStats::new(config.endpoints.len()))
                .collect(),
            ring_fds: parts.iter().map(|p| p.1.as_raw_fd()).collect(),
            wake_fds: parts
                .iter()
                .map(|p| p.3.try_clone())
                .collect::<io::Result<_>>()
                .map_err(|e| StartError(format!("dup eventfd: {e}")))?,
            inboxes: (0..cores).map(|_| SegQueue::new()).collect(),
            lifecycle: lifecycle::Lifecycle::default(),
            session_key,
            listeners,
            transcoders: config
                .endpoints
                .iter()
                .map(|ep| match ep.kind {
                    EndpointKind::Raw => Some(Arc::new(RawTranscoder) as Arc<dyn Transcoder>),
                    EndpointKind::Socketio => {
                        Some(Arc::new(SocketIoTranscoder) as Arc<dyn Transcoder>)
                    }
                    EndpointKind::Echo => None,
                })
                .collect(),
            cluster,
            history_bus,
            proxy: match &config.proxy {
                Some(p) => Some(Arc::new(
                    crate::service::proxy_client::ProxyClient::new(p).map_err(StartError)?,
                )),
                None => None,
            },
        });
        let policy = Arc::new(
            crate::service::upgrade::UpgradePolicy::new(config.clone()).map_err(StartError)?,
        );
        let mut threads = Vec::with_capacity(cores);
        // Every ring must be enabled before any core accepts: a MSG_RING to a ring that is
        // still disabled fails (EBADFD).
        let all_enabled = Arc::new(std::sync::Barrier::new(cores + 1));
        for (core, ring, listener, wake) in parts {
            let all_enabled = all_enabled.clone();
            let shared = shared.clone();
            let policy = policy.clone();
            let config = config.clone();
            let cpu = cpus.get(core % cpus.len().max(1)).copied();
            let handle = std::thread::Builder::new()
                .name(format!("ringwire-core{core}"))
                .spawn(move || {
                    if config.server.pin_threads {
                        if let Some(cpu) = cpu {
                            if let Err(e) = sys::pin_to_cpu(cpu) {
                                tracing::warn!(core, cpu, "cannot pin thread: {e}");
                            }
                        }
                    }
                    match shard::Shard::new(
                        core,
                        ring,
                        listener,
                        wake,
                        shared,
                        policy,
                        &config,
                        table_slots,
                    ) {
                        Ok(mut s) => {
                            all_enabled.wait();
                            s.run()
                        }
                        Err(e) => {
                            tracing::error!(core, "shard failed to start: {e}");
                            std::process::exit(1);
                        }
                    }
                })
                .map_err(|e| StartError(format!("cannot spawn core thread: {e}")))?;
            threads.push(handle);
        }
        all_enabled.wait();
        tracing::debug!(cores, table_slots, "engine started");
        // Every ring and listener is up.
        shared.lifecycle.set_running();
        Ok(Engine {
            shared,
            threads,
            drain_deadline_secs,
        })
    }

    /// How many shards `config` starts.
    pub fn cores_for(config: &Config) -> usize {
        match config.server.cores {
            0 => available_cpus(),
            n => n,
        }
    }

    /// Ask every shard to drain and stop, all gone `server.drain_deadline_secs` from now at
    /// the latest.
    pub fn shutdown(&self) {
        let deadline_unix_ms = crate::service::session::unix_now()
            .saturating_add(self.drain_deadline_secs)
            .saturating_mul(1000);
        self.shared.lifecycle.start_draining(deadline_unix_ms);
        self.shared.send_to_every_core(|| Command::Shutdown);
    }

    /// Wait for every shard thread to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.lifecycle.set_stopped();
    }
}

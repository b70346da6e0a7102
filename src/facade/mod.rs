//! The one facade through which everything above the engine reaches the cores: the admin
//! API (a thin JSON layer over it), the cluster link, and an application that embeds
//! ringwire (the Rust API). It turns calls into commands for the owning cores' inboxes and
//! waits for their replies; nothing above it touches the cores' inboxes.
#![forbid(unsafe_code)]
use crate::cluster::wire::UserPresence;
use crate::runtime::resume::HistoryBus;
use crate::runtime::{socket_id_parts, Command, Shared};
pub use crate::runtime::{AttributeError, Counts, PushCounts, PushJob};
use crate::service::path_filter::PathFilter;
use crate::service::session::{Revocation, SessionError, SessionKey};
use crate::service::upgrade::UpgradePolicy;
pub use crate::service::user_id::{UserId, UserIdError};
use std::sync::Arc;
use tokio::sync::oneshot;

pub mod push;

/// A handle to the running engine's service. Cheap to clone; usable from any thread with a
/// tokio runtime (replies come back through oneshot channels).
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
    key: SessionKey,
}

impl Service {
    pub fn new(shared: Arc<Shared>, key: SessionKey) -> Service {
        Service { shared, key }
    }

    /// Deliver `text` to every socket of `(context, user)` whose path matches `filter`, on
    /// every node of the cluster; returns the sockets it was queued to on this node and the
    /// other nodes it was queued for (copies for other nodes may wait to merge with equal
    /// pushes, see `[remote]`).
    pub async fn send(&self, context: u32, user: &UserId, filter: &str, text: &str) -> PushCounts {
        self.send_batch(vec![PushJob {
            context,
            user: user.clone(),
            filter: PathFilter::new(filter),
            text: Arc::from(text),
            coalesce: true,
            at: None,
            prev: None,
        }])
        .await
    }

    /// Many pushes at once: grouped by owning core, one command per core. With history on,
    /// the answer's positions are in the order of `jobs`.
    pub async fn send_batch(&self, jobs: Vec<PushJob>) -> PushCounts {
        self.submit_batch(jobs).await
    }

    /// [`Service::send_batch`] in two steps: the pushes are handed over before this returns
    /// (to the owning cores' inboxes, or to the history store first with `nats`), so that
    /// pushes submitted one after the other reach each user in that order; the future then
    /// waits for the counts. Dropping it leaves the pushes under way.
    pub fn submit_batch(
        &self,
        jobs: Vec<PushJob>,
    ) -> impl std::future::Future<Output = PushCounts> + Send + 'static {
        let waiting = match self.shared.history_bus.clone() {
            Some(bus) => self.submit_recorded(bus.as_ref(), jobs),
            None => self.submit_to_cores(jobs),
        };
        waiting.counts()
    }

    fn submit_to_cores(&self, jobs: Vec<PushJob>) -> Waiting {
        let owners: Vec<usize> = jobs
            .iter()
            .map(|j| self.shared.owner_of(j.context, &j.user))
            .collect();
        let mut replies = Vec::new();
        self.shared.send_to_owners(
            jobs,
            |j| (j.context, &j.user),
            |jobs| {
                let (tx, rx) = oneshot::channel();
                replies.push(rx);
                Command::Push {
                    jobs,
                    reply: Some(tx),
                    forward: true,
                }
            },
        );
        Waiting::Cores {
            owners,
            replies,
            cores: self.shared.cores,
        }
    }

    /// Pushes recorded by the history store off the cores first (`nats`): each push goes to
    /// its owning core from the store's thread once the store gave it its position (or
    /// failed to: it is delivered live all the same, without one), so a user's pushes reach
    /// its core in the order of their positions.
    fn submit_recorded(&self, bus: &dyn HistoryBus, jobs: Vec<PushJob>) -> Waiting {
        let mut replies = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            let (tx, rx) = oneshot::channel();
            replies.push(rx);
            let shared = self.shared.clone();
            let (context, user, text) = (job.context, job.user.clone(), job.text.clone());
            let filter = job.filter.clone().narrowing();
            let done = move |at: Result<(_, u64), String>| {
                (job.at, job.prev) = match at {
                    Ok((at, prev)) => (Some(at), Some(prev)),
                    Err(_) => (None, None),
                };
                let core = shared.owner_of(job.context, &job.user);
                shared.send(
                    core,
                    Command::Push {
                        jobs: vec![job],
                        reply: Some(tx),
                        forward: true,
                    },
                );
            };
            bus.append(context, &user, text, filter, Box::new(done));
        }
        Waiting::Recorded(replies)
    }

    /// Open sockets of `(context, user)` whose path matches `filter` in the whole cluster.
    pub async fn count(&self, context: u32, user: &UserId, filter: &str) -> u64 {
        self.counts(context, user, filter).await.total()
    }

    /// Open sockets of `(context, user)` matching `filter`: here, and on each other node
    /// (index = the peer's slot in the cluster's peer table) as this node's presence directory knows them (kept
    /// current by the links within milliseconds; no node is asked).
    pub async fn counts(&self, context: u32, user: &UserId, filter: &str) -> Counts {
        let core = self.shared.owner_of(context, user);
        let (tx, rx) = oneshot::channel();
        self.shared.send(
            core,
            Command::Count {
                context,
                user: user.clone(),
                filter: PathFilter::new(filter),
                reply: tx,
            },
        );
        rx.await.unwrap_or_default()
    }

    pub async fn exists(&self, context: u32, user: &UserId, filter: &str) -> bool {
        self.count(context, user, filter).await > 0
    }

    /// End a session: refused from now on, its sockets closed with 4001 on every core of
    /// every node (nodes that are down hear of it when their link comes back).
    pub fn terminate(&self, session_id: &str) -> Result<(), SessionError> {
        let (id, session) = self.key.parse(session_id)?;
        let r = Revocation {
            id,
            context: session.context,
            user: session.user,
            expires_at: session.expires_at,
        };
        if let Some(c) = &self.shared.cluster {
            c.revoke(r.clone());
        }
        self.shared
            .send_to_every_core(|| Command::Revoke(r.clone()));
        Ok(())
    }

    /// Set an attribute on a socket (ids come from listeners' `SocketInfo::socket`); listeners
    /// see the socket's attributes on its later events.
    pub async fn set_attribute(
        &self,
        socket: u64,
        key: &str,
        value: &str,
    ) -> Result<(), AttributeError> {
        let (core, _, _) = socket_id_parts(socket);
        if core >= self.shared.cores {
            return Err(AttributeError::NoSuchSocket);
        }
        let (tx, rx) = oneshot::channel();
        self.shared.send(
            core,
            Command::SetAttribute {
                socket,
                key: key.into(),
                value: value.into(),
                reply: tx,
            },
        );
        rx.await.unwrap_or(Err(AttributeError::NoSuchSocket))
    }

    /// Apply a reloaded configuration's policy (cascade, limits, TLS certificates) on every
    /// core.
    pub fn reload(&self, policy: Arc<UpgradePolicy>) {
        self.shared
            .send_to_every_core(|| Command::Reload(policy.clone()));
    }

    /// A newly fetched `[jwt] jwks_url` key set: every core verifies with it from now on.
    pub fn set_jwks(&self, keys: Arc<crate::service::jwks::JwkKeys>) {
        self.shared
            .send_to_every_core(|| Command::Jwks(keys.clone()));
    }

    // ----- what the cluster link tells the cores -----

    /// The link to peer `node` became current: the cores drop what they knew of it and
    /// re-send their presence, before any frame of the new link is handled (commands are
    /// ordered in each core's inbox).
    /// `continued`: the same run of the peer as on the link before (a failed link is back).
    pub fn peer_up(&self, node: u16, continued: bool) {
        self.shared
            .send_to_every_core(|| Command::PeerUp { node, continued });
    }

    /// Peer `node`'s link failed: what waits for it is dropped; its presence is kept so that
    /// pushes for its users are counted lost, until it is back (`peer_up`) or gone.
    pub fn peer_unreachable(&self, node: u16) {
        self.shared
            .send_to_every_core(|| Command::PeerUnreachable { node });
    }

    /// Peer `node` left or was forgotten: its presence and what waits for it are dropped.
    pub fn peer_down(&self, node: u16) {
        self.shared
            .send_to_every_core(|| Command::PeerDown { node });
    }

    /// Resolves once every core has handled what was sent to it before (for instance a
    /// `peer_down`).
    pub async fn barrier(&self) {
        let mut waits = Vec::with_capacity(self.shared.cores);
        for core in 0..self.shared.cores {
            let (tx, rx) = oneshot::channel();
            self.shared.send(core, Command::Barrier(tx));
            waits.push(rx);
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Presence updates from peer `node`, each to the core that owns its user.
    pub fn remote_presence(&self, node: u16, entries: Vec<UserPresence>) {
        self.shared.send_to_owners(
            entries,
            |e| (e.context, &e.user),
            |entries| Command::RemotePresence { node, entries },
        );
    }

    /// Pushes another node forwarded: delivered here only, never forwarded again.
    pub fn deliver_from_peer(&self, jobs: impl IntoIterator<Item = PushJob>) {
        self.shared.send_to_owners(
            jobs,
            |j| (j.context, &j.user),
            |jobs| Command::Push {
                jobs,
                reply: None,
                forward: false,
            },
        );
    }

    /// Another node's pushes for these users (`all`: for every user) may have been lost on
    /// the way here: their history sockets are brought up to date (`Command::CatchUp`).
    pub fn catch_up(&self, all: bool, users: Vec<(u32, UserId)>) {
        if all {
            self.shared
                .send_to_every_core(|| Command::CatchUp { users: None });
        } else {
            self.shared.send_to_owners(
                users,
                |(c, u)| (*c, u),
                |users| Command::CatchUp { users: Some(users) },
            );
        }
    }

    /// A session another node terminated: refused here too, its sockets here closed.
    pub fn revoke_from_peer(&self, r: Revocation) {
        self.shared
            .send_to_every_core(|| Command::Revoke(r.clone()));
    }

    /// Open sockets on this node.
    pub fn sockets(&self) -> u64 {
        self.shared
            .stats
            .iter()
            .map(|s| crate::runtime::stats::ShardStats::get(&s.sockets))
            .sum()
    }
}

/// The replies a submitted batch waits for.
enum Waiting {
    /// One reply per core that got jobs, in the order of the cores; `owners` is each job's
    /// core, `cores` how many there are.
    Cores {
        owners: Vec<usize>,
        replies: Vec<oneshot::Receiver<PushCounts>>,
        cores: usize,
    },
    /// One reply per job, in the order of the jobs (the history store's path).
    Recorded(Vec<oneshot::Receiver<PushCounts>>),
}

impl Waiting {
    async fn counts(self) -> PushCounts {
        let mut total = PushCounts::default();
        match self {
            Waiting::Cores {
                owners,
                replies,
                cores,
            } => {
                // Replies come in the order of the cores that got jobs; each core's positions
                // are in the order of its share of the jobs.
                let mut got: Vec<usize> = owners.clone();
                got.sort_unstable();
                got.dedup();
                let mut per_core = vec![Vec::new().into_iter(); cores];
                for (core, rx) in got.into_iter().zip(replies) {
                    let c = rx.await.unwrap_or_default();
                    total.sockets += c.sockets;
                    total.remote_nodes += c.remote_nodes;
                    per_core[core] = c.positions.into_iter();
                }
                total.positions = owners
                    .iter()
                    .map_while(|&core| per_core[core].next())
                    .collect();
            }
            Waiting::Recorded(replies) => {
                for rx in replies {
                    let c = rx.await.unwrap_or_default();
                    total.sockets += c.sockets;
                    total.remote_nodes += c.remote_nodes;
                    total.positions.push(c.positions.first().copied().flatten());
                }
            }
        }
        total
    }
}

//! The core's side of the cluster: presence it tells the other nodes, the presence directory
//! of the users it owns, and the coalescing queues of pushes bound for other nodes.
//!
//! Everything here is plain core-local state; batches leave through the lock-free per
//! (core, node) queues of [`ClusterState`].
use super::shard::Shard;
use super::stats::ShardStats;
use super::{sys, PushJob};
use crate::cluster::coalesce::{Coalescer, Offer, Settings};
use crate::cluster::directory::Directory;
use crate::cluster::wire::{RemotePush, UserPresence};
use crate::cluster::{ClusterState, Outbound};
use std::collections::HashSet;
use std::sync::Arc;

/// Presence entries per batch handed to the link thread.
const PRESENCE_BATCH: usize = 4096;

pub(super) struct RemoteState {
    cluster: Arc<ClusterState>,
    directory: Directory,
    nodes: Vec<NodeQueue>,
    /// Peers this core has been told are up (bit per peer).
    up: u64,
    next_check_ms: u64,
    /// Something waits in `nodes[_].now` or `nodes[_].presence`.
    pending: bool,
}

#[derive(Default)]
struct NodeQueue {
    coalescer: Coalescer,
    /// Pushes leaving at the end of this loop turn.
    now: Vec<RemotePush>,
    /// Users whose presence this node has not been told yet.
    presence: HashSet<(u32, u32)>,
}

impl RemoteState {
    pub(super) fn new(cluster: Arc<ClusterState>, max_entries: usize) -> RemoteState {
        RemoteState {
            nodes: cluster.peers.iter().map(|_| NodeQueue::default()).collect(),
            cluster,
            directory: Directory::new(max_entries),
            up: 0,
            next_check_ms: 0,
            pending: false,
        }
    }
}

impl Shard {
    fn remote_settings(&self) -> Settings {
        let r = &self.policy.config.remote;
        Settings {
            delay_ms: r.delay_ms,
            max_delay_ms: r.max_delay_ms,
            max_messages: r.max_queued_messages,
            max_bytes: r.max_queued_bytes,
        }
    }

    /// A user's sockets here changed: every linked node hears of it at the end of the turn.
    pub(super) fn presence_changed(&mut self, context: u32, user: u32) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        for (i, n) in r.nodes.iter_mut().enumerate() {
            if r.up & (1 << i) != 0 {
                n.presence.insert((context, user));
                r.pending = true;
            }
        }
    }

    /// Queue a push for every other node that holds matching sockets of its user; returns
    /// the number of nodes.
    pub(super) fn route_remote(&mut self, job: &PushJob) -> u64 {
        // Most pushes stop here (no cluster, or no other node holds the user): nothing else
        // is read for them, not even the clock.
        let nodes = match self.remote.as_deref() {
            Some(r) => r.directory.nodes_for(job.context, job.user, &job.filter) & r.up,
            None => 0,
        };
        if nodes == 0 {
            return 0;
        }
        let settings = self.remote_settings();
        let now = sys::monotonic_ms();
        let stats = &self.shared.stats[self.id];
        let Some(r) = self.remote.as_deref_mut() else {
            return 0;
        };
        let wait = job.coalesce && settings.delay_ms > 0;
        let mut reached = 0;
        for (i, n) in r.nodes.iter_mut().enumerate() {
            if nodes & (1 << i) == 0 {
                continue;
            }
            let push = RemotePush {
                context: job.context,
                user: job.user,
                filter: job.filter.as_str().into(),
                text: job.text.clone(),
            };
            let offer = if wait {
                n.coalescer.offer(push, now, &settings)
            } else if n.now.len() + n.coalescer.len() >= settings.max_messages {
                Offer::Dropped
            } else {
                // It leaves now, and takes an equal waiting push with it.
                let merged = n.coalescer.take_equal(&push);
                n.now.push(push);
                r.pending = true;
                if merged {
                    ShardStats::inc(&stats.remote_merged);
                }
                Offer::Queued
            };
            match offer {
                Offer::Queued => ShardStats::inc(&stats.remote_queued),
                Offer::Merged => ShardStats::inc(&stats.remote_merged),
                Offer::Dropped => {
                    ShardStats::inc(&stats.remote_dropped);
                    continue;
                }
            }
            reached += 1;
        }
        reached
    }

    /// Every `remote.timer_ms`: pushes whose wait is over leave.
    pub(super) fn remote_tick(&mut self) {
        let timer_ms = self.policy.config.remote.timer_ms;
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let now = sys::monotonic_ms();
        if now < r.next_check_ms {
            return;
        }
        r.next_check_ms = now + timer_ms;
        for n in &mut r.nodes {
            let before = n.now.len();
            n.coalescer.take_due(now, &mut n.now);
            r.pending |= n.now.len() > before;
        }
    }

    /// End of a loop turn: hand what is ready to the link thread, one wake-up per node.
    pub(super) fn remote_flush(&mut self) {
        let Some(mut r) = self.remote.take() else {
            return;
        };
        if r.pending {
            r.pending = false;
            let now = sys::monotonic_ms();
            for i in 0..r.nodes.len() {
                let mut rang = false;
                if !r.nodes[i].now.is_empty() {
                    let n = &mut r.nodes[i];
                    // Immediate pushes go with whatever is already due.
                    n.coalescer.take_due(now, &mut n.now);
                    let batch = std::mem::take(&mut n.now);
                    let count = batch.len() as u64;
                    if r.cluster
                        .enqueue(self.id, i, Outbound::Push(batch))
                        .is_err()
                    {
                        ShardStats::add(&self.shared.stats[self.id].remote_dropped, count);
                    }
                    rang = true;
                }
                while !r.nodes[i].presence.is_empty() {
                    let users: Vec<(u32, u32)> = r.nodes[i]
                        .presence
                        .iter()
                        .take(PRESENCE_BATCH)
                        .copied()
                        .collect();
                    let batch = users
                        .iter()
                        .map(|&(context, user)| self.local_presence(context, user))
                        .collect();
                    if r.cluster
                        .enqueue(self.id, i, Outbound::Presence(batch))
                        .is_err()
                    {
                        // The link thread is behind: try again next turn (nothing is lost,
                        // the set keeps the users).
                        r.pending = true;
                        break;
                    }
                    for u in &users {
                        r.nodes[i].presence.remove(u);
                    }
                    rang = true;
                }
                if rang {
                    r.cluster.ring(i);
                }
            }
        }
        self.remote = Some(r);
    }

    /// This core's sockets of a user, per socket path.
    fn local_presence(&self, context: u32, user: u32) -> UserPresence {
        let mut paths: Vec<(Box<str>, u32)> = Vec::new();
        for &slot in self.users.get(&(context, user)).into_iter().flatten() {
            let Some((_, meta)) = self.conns[slot as usize].socket() else {
                continue;
            };
            match paths.iter_mut().find(|(p, _)| *p == meta.path) {
                Some((_, n)) => *n += 1,
                None => paths.push((meta.path.clone(), 1)),
            }
        }
        UserPresence {
            context,
            user,
            paths,
        }
    }

    /// A link to peer `node` became current: forget what it held (it re-sends all of it) and
    /// queue all of ours for it.
    pub(super) fn peer_up(&mut self, node: u8) {
        let users: Vec<(u32, u32)> = self.users.keys().copied().collect();
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let Some(n) = r.nodes.get_mut(node as usize) else {
            return;
        };
        r.up |= 1 << node;
        r.directory.drop_node(node);
        n.presence.extend(users);
        r.pending = true;
        self.update_directory_gauge();
    }

    /// Peer `node` went away: its presence is dropped, pushes waiting for it are dropped and
    /// counted.
    pub(super) fn peer_down(&mut self, node: u8) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let Some(n) = r.nodes.get_mut(node as usize) else {
            return;
        };
        r.up &= !(1 << node);
        r.directory.drop_node(node);
        let dropped = n.coalescer.clear() + n.now.len();
        n.now.clear();
        n.presence.clear();
        ShardStats::add(&self.shared.stats[self.id].remote_dropped, dropped as u64);
        self.update_directory_gauge();
    }

    pub(super) fn remote_presence(&mut self, node: u8, entries: Vec<UserPresence>) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let mut overflow = 0;
        for e in &entries {
            if !r.directory.apply(node, e) {
                overflow += 1;
            }
        }
        if overflow > 0 {
            ShardStats::add(&self.shared.stats[self.id].presence_overflow, overflow);
        }
        self.update_directory_gauge();
    }

    fn update_directory_gauge(&self) {
        if let Some(r) = &self.remote {
            self.shared.stats[self.id].presence_entries.store(
                r.directory.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Matching sockets of the user on each other node (index = peer), from the directory.
    pub(super) fn remote_counts(
        &self,
        context: u32,
        user: u32,
        filter: &crate::service::path_filter::PathFilter,
    ) -> Vec<u64> {
        let Some(r) = &self.remote else {
            return Vec::new();
        };
        let mut per_node = vec![0; r.nodes.len()];
        r.directory.count(context, user, filter, &mut per_node);
        for (i, n) in per_node.iter_mut().enumerate() {
            if r.up & (1 << i) == 0 {
                *n = 0;
            }
        }
        per_node
    }
}

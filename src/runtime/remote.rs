//! The core's side of the cluster: presence it tells the other nodes, the presence directory
//! of the users it owns, and the coalescing queues of pushes bound for other nodes.
//!
//! Everything here is plain core-local state; batches leave through the lock-free per
//! (core, node) queues of [`ClusterState`].
use super::stats::ShardStats;
use super::PushJob;
use crate::cluster::coalesce::{Coalescer, Offer, Settings};
use crate::cluster::directory::Directory;
use crate::cluster::missed::MissedUsers;
use crate::cluster::wire::{RemotePush, UserPresence};
use crate::cluster::{ClusterState, NodeSet, Outbound};
use crate::service::user_id::UserId;
use std::collections::HashSet;
use std::sync::Arc;

/// Presence entries per batch handed to the link thread.
const PRESENCE_BATCH: usize = 4096;

/// How long what a peer held is kept after a failed link to the same run of it is back
/// (`continued`), while it re-sends all of its presence: a user it re-sends replaces its
/// old entries, and what it has not re-sent when this is over is dropped. Dropping it all
/// at once, as for a new run, left pushes made before the re-sent presence arrived with no
/// entry: unsent and uncounted, though the sockets had been there all along. The peer's
/// cores send their presence at once, 4,096 users per batch, so even 100,000 users arrive
/// well within this.
const RESYNC_MS: u64 = 5_000;

pub struct RemoteState {
    cluster: Arc<ClusterState>,
    directory: Directory,
    /// Per peer slot (grown as slots are used).
    nodes: Vec<NodeQueue>,
    /// Peers this core has been told are up.
    up: NodeSet,
    /// Peers whose link failed: their presence is kept, and pushes for their users are
    /// counted lost instead of being dropped unseen, until the link is back or the node is
    /// forgotten.
    unreachable: NodeSet,
    /// `up` or `unreachable`: what the directory's answer is cut to.
    known: NodeSet,
    /// Linked peers re-sending their presence after a failed link ([`RESYNC_MS`]).
    resyncing: NodeSet,
    /// This core (its counters in the peers' tables).
    core: usize,
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
    presence: HashSet<(u32, UserId)>,
    /// Users of pushes for this node that were not sent (its link failed or was down): it
    /// is told them when the link is back (`Outbound::Missed`).
    missed: MissedUsers,
    /// While the node is in `resyncing`: when that ends (monotonic ms; `u64::MAX` until the
    /// next tick sets it), and the users it has re-sent so far.
    resync_until_ms: u64,
    resent: HashSet<(u32, UserId)>,
}

/// Users per `Outbound::Missed` batch.
const MISSED_BATCH: usize = crate::cluster::wire::MISSED_PER_FRAME;

impl RemoteState {
    pub fn new(cluster: Arc<ClusterState>, core: usize, max_entries: usize) -> RemoteState {
        RemoteState {
            nodes: cluster.peers().map(|_| NodeQueue::default()).collect(),
            cluster,
            directory: Directory::new(max_entries),
            up: NodeSet::EMPTY,
            unreachable: NodeSet::EMPTY,
            known: NodeSet::EMPTY,
            resyncing: NodeSet::EMPTY,
            core,
            next_check_ms: 0,
            pending: false,
        }
    }

    /// A user's sockets here changed: every linked node hears of it at the end of the turn.
    pub fn presence_changed(&mut self, context: u32, user: &UserId) {
        for i in self.up.iter() {
            self.nodes[i as usize]
                .presence
                .insert((context, user.clone()));
            self.pending = true;
        }
    }

    /// The nodes, linked or unreachable, that hold matching sockets of the job's user. Most
    /// pushes stop here: nothing else is read for them, not even the clock.
    pub fn nodes_for(&self, job: &PushJob) -> NodeSet {
        self.directory
            .nodes_for(job.context, &job.user, &job.filter)
            .and(&self.known)
    }

    /// Queue a push for the nodes in `nodes` (from [`RemoteState::nodes_for`]) at monotonic
    /// time `now`; returns how many took it.
    pub fn route(
        &mut self,
        job: &PushJob,
        nodes: NodeSet,
        now: u64,
        settings: &Settings,
        stats: &ShardStats,
    ) -> u64 {
        let wait = job.coalesce && settings.delay_ms > 0;
        let mut reached = 0;
        for i in nodes.iter() {
            if self.unreachable.contains(i) {
                // Its users' sockets miss this push: said, not silently dropped, and they
                // are brought up to date when the link is back.
                if let Some(p) = self.cluster.peer(i) {
                    p.count_unsent(self.core, 1);
                }
                if let Some(n) = self.nodes.get_mut(i as usize) {
                    n.missed.add(job.context, &job.user);
                }
                continue;
            }
            let Some(n) = self.nodes.get_mut(i as usize) else {
                continue;
            };
            let push = RemotePush {
                context: job.context,
                user: job.user.clone(),
                filter: job.filter.as_str().into(),
                text: job.text.clone(),
                at: job.at,
                prev: job.prev,
            };
            let offer = if wait {
                // In `edges` mode the leading push goes into this turn's batch.
                let batched = n.now.len();
                let offer = n.coalescer.offer(push, now, settings, &mut n.now);
                self.pending |= n.now.len() > batched;
                offer
            } else if n.now.len() + n.coalescer.len() >= settings.max_messages {
                Offer::Dropped
            } else {
                // It leaves now, and takes an equal waiting push with it.
                let merged = n.coalescer.take_equal(&push);
                n.now.push(push);
                self.pending = true;
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

    /// Every `timer_ms`: pushes whose wait is over leave at the end of the turn.
    pub fn tick(&mut self, now: u64, timer_ms: u64) {
        if now < self.next_check_ms {
            return;
        }
        self.next_check_ms = now + timer_ms;
        if !self.resyncing.is_empty() {
            self.end_resyncs(now);
        }
        for n in &mut self.nodes {
            let before = n.now.len();
            n.coalescer.take_due(now, &mut n.now);
            self.pending |= n.now.len() > before;
        }
    }

    /// Arm the resync windows begun since the last tick; end those that are over.
    fn end_resyncs(&mut self, now: u64) {
        for i in self.resyncing.iter().collect::<Vec<_>>() {
            let Some(n) = self.nodes.get_mut(i as usize) else {
                self.resyncing.remove(i);
                continue;
            };
            if n.resync_until_ms == u64::MAX {
                n.resync_until_ms = now + RESYNC_MS;
            } else if now >= n.resync_until_ms {
                let resent = std::mem::take(&mut n.resent);
                self.directory
                    .drop_node_except(i, |key| resent.contains(key));
                self.resyncing.remove(i);
            }
        }
    }

    /// Is anything waiting to be handed to the link thread?
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// End of a loop turn: hand what is ready to the link thread, one wake-up per node.
    /// `presence_of` gives this core's sockets of a user, per path.
    pub fn flush(
        &mut self,
        core: usize,
        now: u64,
        stats: &ShardStats,
        presence_of: impl Fn(u32, &UserId) -> UserPresence,
    ) {
        if !self.pending {
            return;
        }
        self.pending = false;
        for i in 0..self.nodes.len() {
            let mut rang = false;
            if !self.nodes[i].now.is_empty() {
                let n = &mut self.nodes[i];
                // Immediate pushes go with whatever is already due.
                n.coalescer.take_due(now, &mut n.now);
                let batch = std::mem::take(&mut n.now);
                let count = batch.len() as u64;
                if self
                    .cluster
                    .enqueue(core, i as u16, Outbound::Push(batch))
                    .is_err()
                {
                    ShardStats::add(&stats.remote_dropped, count);
                }
                rang = true;
            }
            while !self.nodes[i].presence.is_empty() {
                let users: Vec<(u32, UserId)> = self.nodes[i]
                    .presence
                    .iter()
                    .take(PRESENCE_BATCH)
                    .cloned()
                    .collect();
                let batch = users.iter().map(|(c, u)| presence_of(*c, u)).collect();
                if self
                    .cluster
                    .enqueue(core, i as u16, Outbound::Presence(batch))
                    .is_err()
                {
                    // The link thread is behind: try again next turn (nothing is lost, the
                    // set keeps the users).
                    self.pending = true;
                    break;
                }
                for u in &users {
                    self.nodes[i].presence.remove(u);
                }
                rang = true;
            }
            if self.up.contains(i as u16) && !self.nodes[i].missed.is_empty() {
                rang |= self.flush_missed(core, i);
            }
            if rang {
                self.cluster.ring(i as u16);
            }
        }
    }

    /// Tell linked node `i` which users' sockets may have missed pushes of this core (in
    /// batches; what does not fit in its queue waits for the next turn). Returns whether
    /// anything was queued.
    fn flush_missed(&mut self, core: usize, i: usize) -> bool {
        let Some((all, users)) = self.nodes[i].missed.take() else {
            return false;
        };
        let mut queued = false;
        let mut rest = &users[..];
        loop {
            let n = rest.len().min(MISSED_BATCH);
            let batch = Outbound::Missed {
                all,
                users: rest[..n].to_vec(),
            };
            if self.cluster.enqueue(core, i as u16, batch).is_err() {
                self.nodes[i].missed.merge(all, rest.iter().cloned());
                self.pending = true;
                return queued;
            }
            queued = true;
            rest = &rest[n..];
            if rest.is_empty() || all {
                return true;
            }
        }
    }

    /// A link to peer `node` became current: forget what it held (it re-sends all of it;
    /// with `continued`, the same run as before, only once [`RESYNC_MS`] is over, and only
    /// what it did not re-send) and queue all of `users` (this core's) for it.
    pub fn peer_up(
        &mut self,
        node: u16,
        users: impl Iterator<Item = (u32, UserId)>,
        continued: bool,
    ) {
        if node as usize >= crate::cluster::MAX_NODES {
            return;
        }
        if self.nodes.len() <= node as usize {
            self.nodes
                .resize_with(node as usize + 1, NodeQueue::default);
        }
        let n = &mut self.nodes[node as usize];
        self.up.insert(node);
        self.unreachable.remove(node);
        self.known = self.up.or(&self.unreachable);
        n.resent.clear();
        if continued {
            self.resyncing.insert(node);
            n.resync_until_ms = u64::MAX;
        } else {
            self.resyncing.remove(node);
            self.directory.drop_node(node);
        }
        n.presence.extend(users);
        self.pending = true;
    }

    /// Peer `node` went away (left, or forgotten): its presence is dropped, pushes waiting
    /// for it are dropped; returns how many.
    pub fn peer_down(&mut self, node: u16) -> usize {
        let dropped = self.peer_unreachable(node);
        if let Some(n) = self.nodes.get_mut(node as usize) {
            n.missed = MissedUsers::default();
        }
        self.unreachable.remove(node);
        self.known = self.up.or(&self.unreachable);
        self.directory.drop_node(node);
        dropped
    }

    /// Peer `node`'s link failed: pushes waiting for it are dropped (returns how many); its
    /// presence stays, so pushes for its users are counted lost until the link is back.
    pub fn peer_unreachable(&mut self, node: u16) -> usize {
        if self.up.contains(node) {
            self.unreachable.insert(node);
        }
        self.up.remove(node);
        self.resyncing.remove(node);
        self.known = self.up.or(&self.unreachable);
        let Some(n) = self.nodes.get_mut(node as usize) else {
            return 0;
        };
        let missed = &mut n.missed;
        let dropped = n.coalescer.clear(|p| missed.add(p.context, &p.user)) + n.now.len();
        for p in n.now.drain(..) {
            missed.add(p.context, &p.user);
        }
        n.presence.clear();
        dropped
    }

    /// Presence from peer `node`; returns the entries the directory had no room for.
    pub fn apply_presence(&mut self, node: u16, entries: &[UserPresence]) -> u64 {
        if self.resyncing.contains(node) {
            if let Some(n) = self.nodes.get_mut(node as usize) {
                n.resent
                    .extend(entries.iter().map(|e| (e.context, e.user.clone())));
            }
        }
        entries
            .iter()
            .filter(|e| !self.directory.apply(node, e))
            .count() as u64
    }

    /// Entries in the presence directory.
    pub fn directory_len(&self) -> usize {
        self.directory.len()
    }

    /// Matching sockets of the user on each other node (index = peer), from the directory.
    pub fn counts(
        &self,
        context: u32,
        user: &UserId,
        filter: &crate::service::path_filter::PathFilter,
    ) -> Vec<u64> {
        let mut per_node = vec![0; self.nodes.len()];
        self.directory.count(context, user, filter, &mut per_node);
        for (i, n) in per_node.iter_mut().enumerate() {
            if !self.up.contains(i as u16) {
                *n = 0;
            }
        }
        per_node
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, PeerConfig};
    use crate::service::path_filter::PathFilter;

    fn cluster(peers: usize) -> Arc<ClusterState> {
        let cfg = ClusterConfig {
            node_id: "a".into(),
            listen: "127.0.0.1:7001".parse().unwrap(),
            discovery: Default::default(),
            advertise: None,
            members_bucket: "b".into(),
            member_ttl_ms: 5_000,
            leave_wait_ms: 1_000,
            peers: (0..peers)
                .map(|i| PeerConfig {
                    id: format!("p{i}"),
                    addr: format!("127.0.0.1:{}", 7002 + i).parse().unwrap(),
                })
                .collect(),
            ca: "ca".into(),
            cert: "cert".into(),
            key: "key".into(),
            max_presence_entries: 100,
        };
        ClusterState::new(&cfg, 1).0
    }

    fn job(user: u32, coalesce: bool) -> PushJob {
        PushJob {
            context: 1,
            user: user.into(),
            filter: PathFilter::new("*"),
            text: "hi".into(),
            coalesce,
            at: None,
            prev: None,
        }
    }

    fn settings(delay_ms: u64) -> Settings {
        Settings {
            mode: crate::config::CoalesceMode::Wait,
            delay_ms,
            max_delay_ms: 1_000,
            max_messages: 10,
            max_bytes: 1 << 20,
        }
    }

    fn presence(user: impl Into<UserId>) -> UserPresence {
        UserPresence {
            context: 1,
            user: user.into(),
            paths: vec![("/ws".into(), 1)],
        }
    }

    #[test]
    fn pushes_go_only_to_linked_nodes_that_hold_the_user() {
        let c = cluster(2);
        let mut r = RemoteState::new(c.clone(), 0, 100);
        let stats = ShardStats::new(1);
        assert!(
            r.nodes_for(&job(7, false)).is_empty(),
            "nobody holds user 7 yet"
        );
        assert_eq!(r.apply_presence(1, &[presence(7)]), 0);
        assert!(
            r.nodes_for(&job(7, false)).is_empty(),
            "node 1 is not linked"
        );
        r.peer_up(1, std::iter::empty(), false);
        r.apply_presence(1, &[presence(7)]);
        let nodes = r.nodes_for(&job(7, false));
        assert_eq!(nodes, NodeSet::one(1));
        assert_eq!(r.route(&job(7, false), nodes, 0, &settings(0), &stats), 1);
        assert_eq!(r.counts(1, &7.into(), &PathFilter::new("*")), vec![0, 1]);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        match c.peer(1).unwrap().queues[0].pop() {
            Some(Outbound::Push(batch)) => assert_eq!(batch.len(), 1),
            _ => panic!("the push is queued for node 1"),
        }
        assert!(c.peer(0).unwrap().queues[0].pop().is_none());
        assert_eq!(r.peer_down(1), 0);
        assert!(
            r.nodes_for(&job(7, false)).is_empty(),
            "its presence is dropped"
        );
    }

    #[test]
    fn a_continued_peer_keeps_what_it_held_until_it_has_re_sent_it() {
        let c = cluster(2);
        let mut r = RemoteState::new(c.clone(), 0, 100);
        r.peer_up(1, std::iter::empty(), false);
        r.apply_presence(1, &[presence(7), presence(8)]);
        assert_eq!(r.nodes_for(&job(7, false)), NodeSet::one(1));
        // The link fails (presence kept: counted lost) and comes back to the same run. Until
        // node 1 has re-sent its presence, pushes for its users still go to it.
        r.peer_unreachable(1);
        assert_eq!(r.nodes_for(&job(7, false)), NodeSet::one(1));
        r.peer_up(1, std::iter::empty(), true);
        assert_eq!(r.nodes_for(&job(7, false)), NodeSet::one(1));
        assert_eq!(r.nodes_for(&job(8, false)), NodeSet::one(1));
        assert!(r.nodes_for(&job(9, false)).is_empty(), "no broadcast");
        let t = 10 * RESYNC_MS;
        r.tick(t, 0); // arms the window
        r.apply_presence(1, &[presence(7)]); // user 8 left meanwhile: not re-sent
        r.tick(t + RESYNC_MS - 1, 0);
        assert_eq!(r.nodes_for(&job(8, false)), NodeSet::one(1));
        r.tick(t + RESYNC_MS, 0);
        assert_eq!(r.nodes_for(&job(7, false)), NodeSet::one(1));
        assert!(
            r.nodes_for(&job(8, false)).is_empty(),
            "not re-sent: dropped"
        );
        // A new run of the peer starts from nothing at once.
        r.peer_up(1, std::iter::empty(), false);
        assert!(r.nodes_for(&job(7, false)).is_empty());
    }

    #[test]
    fn a_coalesced_push_waits_for_the_tick_and_presence_changes_are_batched() {
        let c = cluster(1);
        let mut r = RemoteState::new(c.clone(), 0, 100);
        let stats = ShardStats::new(1);
        r.peer_up(0, [(1, 7.into()), (1, 8.into())].into_iter(), false);
        r.apply_presence(0, &[presence(7)]);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        match c.peer(0).unwrap().queues[0].pop() {
            Some(Outbound::Presence(batch)) => assert_eq!(batch.len(), 2),
            _ => panic!("this core's users are announced to the new peer"),
        }
        let nodes = r.nodes_for(&job(7, true));
        assert_eq!(
            r.route(&job(7, true), nodes, 1_000, &settings(50), &stats),
            1
        );
        r.flush(0, 1_000, &stats, |_, u| presence(u.clone()));
        assert!(
            c.peer(0).unwrap().queues[0].pop().is_none(),
            "still waiting"
        );
        r.tick(1_100, 10);
        assert!(r.pending());
        r.flush(0, 1_100, &stats, |_, u| presence(u.clone()));
        assert!(matches!(
            c.peer(0).unwrap().queues[0].pop(),
            Some(Outbound::Push(_))
        ));
        r.presence_changed(1, &9.into());
        r.flush(0, 1_200, &stats, |_, u| presence(u.clone()));
        assert!(matches!(
            c.peer(0).unwrap().queues[0].pop(),
            Some(Outbound::Presence(_))
        ));
        assert_eq!(r.peer_down(0), 0);
    }

    #[test]
    fn users_of_pushes_not_sent_to_an_unreachable_node_are_told_when_it_is_back() {
        let c = cluster(1);
        let mut r = RemoteState::new(c.clone(), 0, 100);
        let stats = ShardStats::new(1);
        r.peer_up(0, std::iter::empty(), false);
        r.apply_presence(0, &[presence(7), presence(8), presence(9)]);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        // 7 waits in the coalescer, 8 in this turn's batch when the link fails.
        let nodes = r.nodes_for(&job(7, true));
        r.route(&job(7, true), nodes, 0, &settings(50), &stats);
        let nodes = r.nodes_for(&job(8, false));
        r.route(&job(8, false), nodes, 0, &settings(50), &stats);
        assert_eq!(r.peer_unreachable(0), 2);
        // 9 is routed while the link is down.
        let nodes = r.nodes_for(&job(9, false));
        assert_eq!(r.route(&job(9, false), nodes, 0, &settings(0), &stats), 0);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        assert!(
            c.peer(0).unwrap().queues[0].pop().is_none(),
            "nothing for a node that is down"
        );
        r.peer_up(0, std::iter::empty(), false);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        match c.peer(0).unwrap().queues[0].pop() {
            Some(Outbound::Missed { all, mut users }) => {
                users.sort();
                assert_eq!(
                    (all, users),
                    (false, vec![(1, 7.into()), (1, 8.into()), (1, 9.into())])
                );
            }
            _ => panic!("the users are told to the node"),
        }
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        assert!(c.peer(0).unwrap().queues[0].pop().is_none(), "once");
        // A node that went away for good is told nothing.
        r.apply_presence(0, &[presence(7)]);
        r.peer_unreachable(0);
        let nodes = r.nodes_for(&job(7, false));
        r.route(&job(7, false), nodes, 0, &settings(0), &stats);
        r.peer_down(0);
        r.peer_up(0, std::iter::empty(), false);
        r.flush(0, 0, &stats, |_, u| presence(u.clone()));
        assert!(c.peer(0).unwrap().queues[0].pop().is_none());
    }
}

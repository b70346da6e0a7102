//! The core's side of the cluster: presence changes, pushes routed to other nodes, and what
//! the link reports (peers up and down, their presence). The queues and the directory are
//! the remote part's; this file hands it the core's clock, settings and counters.
use super::Shard;
use crate::cluster::coalesce::{CoalesceMode, Settings};
use crate::cluster::wire::UserPresence;
use crate::runtime::stats::ShardStats;
use crate::runtime::{sys, PushJob};
use crate::service::user_id::UserId;

impl Shard {
    fn remote_settings(&self) -> Settings {
        let r = &self.policy.config.remote;
        Settings {
            mode: r.mode,
            delay_ms: r.delay_ms,
            max_delay_ms: r.max_delay_ms,
            max_messages: r.max_queued_messages,
            max_bytes: r.max_queued_bytes,
        }
    }

    /// A user's sockets here changed: every linked node hears of it at the end of the turn.
    pub(in crate::runtime) fn presence_changed(&mut self, context: u32, user: &UserId) {
        if let Some(r) = self.remote.as_deref_mut() {
            r.presence_changed(context, user);
        }
    }

    /// Queue a push for every other node that holds matching sockets of its user; returns
    /// the number of nodes.
    pub(in crate::runtime) fn route_remote(&mut self, job: &PushJob) -> u64 {
        let Some(nodes) = self.remote.as_deref().map(|r| r.nodes_for(job)) else {
            return 0;
        };
        if nodes.is_empty() {
            return 0;
        }
        let settings = self.remote_settings();
        let stats = &self.shared.stats[self.id];
        match self.remote.as_deref_mut() {
            Some(r) => r.route(job, nodes, sys::monotonic_ms(), &settings, stats),
            None => 0,
        }
    }

    /// Called on every core tick (`TICK_MS`, 100 ms): pushes whose wait is over leave. In
    /// `wait` mode the queues are checked every `remote.timer_ms`; in `edges` mode on every
    /// tick, so a trailing push leaves within one tick of its window's end (a check with
    /// nothing due costs one comparison per node).
    pub(in crate::runtime) fn remote_tick(&mut self) {
        let remote = &self.policy.config.remote;
        let period = match remote.mode {
            CoalesceMode::Wait => remote.timer_ms,
            CoalesceMode::Edges => 0,
        };
        if let Some(r) = self.remote.as_deref_mut() {
            r.tick(sys::monotonic_ms(), period);
        }
    }

    /// End of a loop turn: hand what is ready to the link thread.
    pub(in crate::runtime) fn remote_flush(&mut self) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        if !r.pending() {
            return;
        }
        let (users, conns) = (&self.users, &self.conns);
        let presence_of = |context, user: &UserId| local_presence(users, conns, context, user);
        r.flush(
            self.id,
            sys::monotonic_ms(),
            &self.shared.stats[self.id],
            presence_of,
        );
    }

    /// A link to peer `node` became current: it gets all of this core's presence again.
    pub(in crate::runtime) fn peer_up(&mut self, node: u16, continued: bool) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        r.peer_up(node, self.users.keys(), continued);
        self.update_directory_gauge();
    }

    /// Peer `node` went away: what waited for it is dropped and counted.
    /// `unreachable`: its link failed (presence kept), else it left or was forgotten.
    pub(in crate::runtime) fn peer_down(&mut self, node: u16, unreachable: bool) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let dropped = if unreachable {
            r.peer_unreachable(node)
        } else {
            r.peer_down(node)
        };
        if let Some(p) = self.shared.cluster.as_ref().and_then(|c| c.peer(node)) {
            p.count_unsent(self.id, dropped as u64);
        }
        ShardStats::add(&self.shared.stats[self.id].remote_dropped, dropped as u64);
        self.update_directory_gauge();
    }

    pub(in crate::runtime) fn remote_presence(&mut self, node: u16, entries: Vec<UserPresence>) {
        let Some(r) = self.remote.as_deref_mut() else {
            return;
        };
        let overflow = r.apply_presence(node, &entries);
        if overflow > 0 {
            ShardStats::add(&self.shared.stats[self.id].presence_overflow, overflow);
        }
        self.update_directory_gauge();
    }

    fn update_directory_gauge(&self) {
        if let Some(r) = &self.remote {
            self.shared.stats[self.id].presence_entries.store(
                r.directory_len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Matching sockets of the user on each other node (index = peer), from the directory.
    pub(in crate::runtime) fn remote_counts(
        &self,
        context: u32,
        user: &UserId,
        filter: &crate::service::path_filter::PathFilter,
    ) -> Vec<u64> {
        self.remote
            .as_deref()
            .map_or_else(Vec::new, |r| r.counts(context, user, filter))
    }
}

/// This core's sockets of a user, per socket path.
fn local_presence(
    users: &crate::runtime::users::UserIndex,
    conns: &crate::runtime::slots::Slots,
    context: u32,
    user: &UserId,
) -> UserPresence {
    let mut paths: Vec<(Box<str>, u32)> = Vec::new();
    for &slot in users.sockets(context, user) {
        let Some((_, meta)) = conns[slot as usize].socket() else {
            continue;
        };
        match paths.iter_mut().find(|(p, _)| **p == *meta.path) {
            Some((_, n)) => *n += 1,
            None => paths.push(((*meta.path).into(), 1)),
        }
    }
    UserPresence {
        context,
        user: user.clone(),
        paths,
    }
}

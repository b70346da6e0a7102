//! The core's side of the service: sockets registered in the user index as they open and
//! close (listeners and presence told), pushes delivered to a user's sockets, counts,
//! session ends.
use super::Shard;
use crate::protocol::close::CloseReason;
use crate::protocol::{MessageKind, WsConnection};
use crate::runtime::conn::{flag, ConnState};
use crate::runtime::stats::ShardStats;
use crate::runtime::{sys, PushJob};
use crate::service::history::Position;
use crate::service::listener::SocketInfo;
use crate::service::session::unix_now;
use crate::service::session::Revocation;
use crate::service::user_id::UserId;
use std::sync::Arc;

impl Shard {
    pub(in crate::runtime) fn user_socket_count(&self, context: u32, user: &UserId) -> usize {
        self.users.count(context, user)
    }

    /// A socket just opened: index it by user, schedule its session's expiry, tell listeners.
    pub(in crate::runtime) fn register(&mut self, slot: u32) {
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        ShardStats::inc(&self.shared.stats[self.id].endpoint_sockets[endpoint as usize]);
        if let Some(a) = &meta.auth {
            let (context, user) = (a.context, a.user.clone());
            self.users.add(context, &user, slot);
            self.presence_changed(context, &user);
        }
        self.notify(slot, |l, info| l.on_connect(info));
    }

    /// A socket is closing: drop it from the index, tell listeners.
    pub(in crate::runtime) fn unregister(&mut self, slot: u32) {
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        ShardStats::dec(&self.shared.stats[self.id].endpoint_sockets[endpoint as usize]);
        if let Some(a) = &meta.auth {
            let (context, user) = (a.context, a.user.clone());
            self.users.remove(context, &user, slot);
            self.presence_changed(context, &user);
        }
        self.notify(slot, |l, info| l.on_close(info));
    }

    /// Call every listener with the socket's info (no allocation, but for the query of a
    /// socket whose session came in it: `SocketMeta::query`).
    pub(in crate::runtime) fn notify(
        &self,
        slot: u32,
        f: impl Fn(&dyn crate::service::listener::Listener, &SocketInfo<'_>),
    ) {
        if self.shared.listeners.is_empty() {
            return;
        }
        let c = &self.conns[slot as usize];
        let Some((endpoint, meta)) = c.socket() else {
            return;
        };
        let query = meta.query();
        let info = SocketInfo {
            core: self.id,
            socket: crate::runtime::socket_id(self.id, c.gen, slot),
            endpoint: &self.policy.config.endpoints[endpoint as usize].path,
            path: &meta.path,
            query: &query,
            auth: meta.auth.as_ref(),
            attrs: meta.attrs(),
        };
        for l in self.shared.listeners.iter() {
            f(l.as_ref(), &info);
        }
    }

    /// Queue a close frame and close once it is written (or after the linger time).
    pub(in crate::runtime) fn close_with(&mut self, slot: u32, why: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.state, ConnState::Open { .. }) || c.has(flag::CLOSE_AFTER_FLUSH) {
            return;
        }
        WsConnection::encode_close(&mut c.out, why.code(), why.reason());
        self.shared.stats[self.id].closed(false, Some(why.code()));
        self.close_after_flush(slot);
    }

    /// Deliver pushes to the matching sockets of their users (recording each in the
    /// history first, if on); returns sockets reached and the positions given (in order).
    pub(in crate::runtime) fn deliver(&mut self, jobs: &[PushJob]) -> (u64, Vec<Option<Position>>) {
        let mut reached = 0u64;
        let mut positions = Vec::new();
        let now_ms = if self.history.is_some() {
            sys::monotonic_ms()
        } else {
            0
        };
        // The frames of a job are made once for all its sockets (per endpoint and framing
        // class), and kept for the next job while it has the same text and position.
        let mut last: Option<(&Arc<str>, Option<Position>)> = None;
        for job in jobs {
            let at = job.at.or_else(|| {
                let h = self.history.as_mut()?;
                h.append(job.context, &job.user, &job.text, &job.filter, now_ms)
            });
            if self.history.is_some() {
                positions.push(at);
            }
            let same = last.is_some_and(|(text, last_at)| {
                last_at == at && (Arc::ptr_eq(text, &job.text) || **text == *job.text)
            });
            if !same {
                self.push_key = self.push_key.wrapping_add(1 << 8);
                last = Some((&job.text, at));
            }
            // Lent out for the loop (a copy of a list of up to 3 in place, or into a kept
            // buffer): the writes below may close sockets, which change the index.
            let Some(slots) = self.users.lend(job.context, &job.user) else {
                continue;
            };
            let before = reached;
            for &slot in slots.iter() {
                let c = &self.conns[slot as usize];
                if c.has(flag::CLOSE_AFTER_FLUSH) {
                    continue;
                }
                let Some((endpoint, meta)) = c.socket() else {
                    continue;
                };
                if !job.filter.matches(&meta.path) {
                    if let (Some(at), Some(prev)) = (at, job.prev) {
                        self.passed_in_order(slot, at, prev);
                    }
                    continue;
                }
                let key = Some(self.push_key | u64::from(endpoint));
                reached += u64::from(self.push_one(slot, endpoint, at, job.prev, &job.text, key));
            }
            self.users.put_back(slots);
            self.turn_pushes += u64::from(reached != before);
        }
        self.frame_once.forget();
        let stats = &self.shared.stats[self.id];
        ShardStats::add(&stats.pushes, jobs.len() as u64);
        ShardStats::add(&stats.push_frames, reached);
        ShardStats::add(&stats.messages_out, reached);
        if let Some(h) = &self.history {
            h.publish(stats);
        }
        (reached, positions)
    }

    /// One push to a raw socket: its text, or (history endpoint) its envelope (see
    /// `push_one` for when it is held or sent later). `key`: the push's name in this batch
    /// (with the endpoint), under which it is framed once for all sockets alike.
    pub(in crate::runtime) fn push_raw(
        &mut self,
        slot: u32,
        endpoint: u8,
        at: Option<Position>,
        text: &Arc<str>,
        key: Option<u64>,
    ) -> bool {
        let Some(transcoder) = &self.shared.transcoders[endpoint as usize] else {
            return false;
        };
        let Some(payload) = transcoder.outbound(text) else {
            return false;
        };
        let bytes = match (at, self.history.as_deref_mut()) {
            (at, Some(h)) if h.on(endpoint) => h.envelope(at, endpoint, &payload),
            _ => payload.as_bytes(),
        };
        let max_out = self.limits.max_outbound_bytes;
        let c = &mut self.conns[slot as usize];
        let before = c.queued_bytes();
        let ConnState::Open { ws, .. } = &mut c.state else {
            return false;
        };
        self.outbox.pool.prepare(&mut c.out, bytes.len() + 14);
        match key {
            Some(key) => {
                let (zlib, out) = (&mut self.zlib, &mut c.out);
                self.frame_once
                    .encode(key, ws, zlib, out, MessageKind::Text, bytes)
            }
            None => ws.encode_message(&mut self.zlib, &mut c.out, MessageKind::Text, bytes),
        }
        if c.over_outbound_limit(before, max_out) {
            self.close_slow_consumer(slot);
        } else {
            self.mark_dirty(slot);
        }
        true
    }

    pub(in crate::runtime) fn local_count(
        &self,
        context: u32,
        user: &UserId,
        filter: &crate::service::path_filter::PathFilter,
    ) -> u64 {
        self.users
            .sockets(context, user)
            .iter()
            .filter(|&&slot| {
                let c = &self.conns[slot as usize];
                c.socket().is_some_and(|(_, meta)| {
                    !c.has(flag::CLOSE_AFTER_FLUSH) && filter.matches(&meta.path)
                })
            })
            .count() as u64
    }

    /// A session ended (terminated): refuse it from now on, close its sockets here.
    pub(in crate::runtime) fn revoke(&mut self, r: Revocation) {
        let Revocation {
            id,
            context,
            user,
            expires_at,
        } = r;
        self.users.revoke(id, expires_at);
        let doomed: Vec<u32> = self
            .users
            .sockets(context, &user)
            .iter()
            .copied()
            .filter(|&slot| {
                self.conns[slot as usize]
                    .socket()
                    .is_some_and(|(_, meta)| meta.auth.as_ref().is_some_and(|a| a.session == id))
            })
            .collect();
        for slot in doomed {
            ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
            self.end_session(slot, CloseReason::SessionTerminated);
        }
    }

    /// Revocations are kept until the session would have expired anyway.
    pub(in crate::runtime) fn forget_expired_revocations(&mut self) {
        self.users.forget_expired(unix_now());
    }
}

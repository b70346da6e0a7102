//! The core's side of the service: which sockets belong to which user (only the core that
//! owns the user's hash has them), pushes, counts, session ends.
use super::conn::{flag, ConnState};
use super::shard::Shard;
use super::stats::ShardStats;
use super::{
    AttributeError, Command, PushJob, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE,
};
use crate::config::EndpointKind;
use crate::protocol::close::CloseReason;
use crate::protocol::{MessageKind, WsConnection};
use crate::service::listener::SocketInfo;
use crate::service::session::unix_now;
use crate::service::session::Revocation;

impl Shard {
    pub(super) fn user_socket_count(&self, context: u32, user: u32) -> usize {
        self.users.get(&(context, user)).map_or(0, Vec::len)
    }

    /// A socket just opened: index it by user, schedule its session's expiry, tell listeners.
    pub(super) fn register(&mut self, slot: u32) {
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        ShardStats::inc(&self.shared.stats[self.id].endpoint_sockets[endpoint as usize]);
        if let Some(a) = meta.auth {
            self.users
                .entry((a.context, a.user))
                .or_default()
                .push(slot);
            self.presence_changed(a.context, a.user);
        }
        self.notify(slot, |l, info| l.on_connect(info));
    }

    /// A socket is closing: drop it from the index, tell listeners.
    pub(super) fn unregister(&mut self, slot: u32) {
        let Some((endpoint, meta)) = self.conns[slot as usize].socket() else {
            return;
        };
        ShardStats::dec(&self.shared.stats[self.id].endpoint_sockets[endpoint as usize]);
        if let Some(a) = meta.auth {
            let key = (a.context, a.user);
            if let Some(slots) = self.users.get_mut(&key) {
                slots.retain(|&s| s != slot);
                if slots.is_empty() {
                    self.users.remove(&key);
                }
            }
            self.presence_changed(a.context, a.user);
        }
        self.notify(slot, |l, info| l.on_close(info));
    }

    /// Call every listener with the socket's info (no allocation).
    pub(super) fn notify(
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
        let info = SocketInfo {
            core: self.id,
            socket: super::socket_id(self.id, c.gen, slot),
            endpoint: &self.policy.config.endpoints[endpoint as usize].path,
            path: &meta.path,
            query: &meta.query,
            auth: meta.auth.as_ref(),
            attrs: &meta.attrs,
        };
        for l in self.shared.listeners.iter() {
            f(l.as_ref(), &info);
        }
    }

    /// Queue a close frame and close once it is written (or after the linger time).
    pub(super) fn close_with(&mut self, slot: u32, why: CloseReason) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.state, ConnState::Open { .. }) || c.has(flag::CLOSE_AFTER_FLUSH) {
            return;
        }
        WsConnection::encode_close(&mut c.out, why.code(), why.reason());
        self.close_after_flush(slot);
    }

    /// Deliver pushes to the matching sockets of their users; returns sockets reached.
    fn deliver(&mut self, jobs: &[PushJob]) -> u64 {
        let mut reached = 0u64;
        let max_out = self.limits.max_outbound_bytes;
        for job in jobs {
            let key = (job.context, job.user);
            // Taken out for the loop (nothing below changes the index) to avoid a copy.
            let Some(slots) = self.users.get_mut(&key).map(std::mem::take) else {
                continue;
            };
            for &slot in &slots {
                let c = &mut self.conns[slot as usize];
                if c.has(flag::CLOSE_AFTER_FLUSH) {
                    continue;
                }
                let Some((endpoint, meta)) = c.socket() else {
                    continue;
                };
                if !job.filter.matches(&meta.path) {
                    continue;
                }
                if self.endpoint_kinds[endpoint as usize] == EndpointKind::Socketio {
                    if self.sio_push(slot, endpoint, &job.text) {
                        reached += 1;
                    }
                    continue;
                }
                let c = &mut self.conns[slot as usize];
                let before = c.queued_bytes();
                let ConnState::Open { ws, endpoint, .. } = &mut c.state else {
                    continue;
                };
                let Some(transcoder) = &self.shared.transcoders[*endpoint as usize] else {
                    continue;
                };
                let Some(payload) = transcoder.outbound(&job.text) else {
                    continue;
                };
                ws.encode_message(
                    &mut self.zlib,
                    &mut c.out,
                    MessageKind::Text,
                    payload.as_bytes(),
                );
                reached += 1;
                if c.over_outbound_limit(before, max_out) {
                    self.close_slow_consumer(slot);
                } else {
                    self.mark_dirty(slot);
                }
            }
            self.users.insert(key, slots);
        }
        let stats = &self.shared.stats[self.id];
        ShardStats::add(&stats.pushes, jobs.len() as u64);
        ShardStats::add(&stats.push_frames, reached);
        ShardStats::add(&stats.messages_out, reached);
        reached
    }

    fn local_count(
        &self,
        context: u32,
        user: u32,
        filter: &crate::service::path_filter::PathFilter,
    ) -> u64 {
        let Some(slots) = self.users.get(&(context, user)) else {
            return 0;
        };
        slots
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
    fn revoke(&mut self, r: Revocation) {
        let Revocation {
            id,
            context,
            user,
            expires_at,
        } = r;
        self.revoked.insert(id, expires_at);
        let Some(slots) = self.users.get(&(context, user)) else {
            return;
        };
        let doomed: Vec<u32> = slots
            .iter()
            .copied()
            .filter(|&slot| {
                self.conns[slot as usize]
                    .socket()
                    .is_some_and(|(_, meta)| meta.auth.is_some_and(|a| a.session == id))
            })
            .collect();
        for slot in doomed {
            ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
            self.end_session(slot, CloseReason::SessionTerminated);
        }
    }

    fn set_attribute(
        &mut self,
        socket: u64,
        key: Box<str>,
        value: Box<str>,
    ) -> Result<(), AttributeError> {
        let (_, gen, slot) = super::socket_id_parts(socket);
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return Err(AttributeError::NoSuchSocket);
        };
        if c.gen != gen || c.flags & flag::CLOSE_AFTER_FLUSH != 0 {
            return Err(AttributeError::NoSuchSocket);
        }
        let Some(meta) = c.socket_mut() else {
            return Err(AttributeError::NoSuchSocket);
        };
        if key.len() > MAX_ATTRIBUTE_KEY || value.len() > MAX_ATTRIBUTE_VALUE {
            return Err(AttributeError::TooLarge);
        }
        if let Some((_, v)) = meta.attrs.iter_mut().find(|(k, _)| *k == key) {
            *v = value;
        } else if meta.attrs.len() >= MAX_ATTRIBUTES {
            return Err(AttributeError::TooLarge);
        } else {
            meta.attrs.push((key, value));
        }
        Ok(())
    }

    /// Revocations are kept until the session would have expired anyway.
    pub(super) fn forget_expired_revocations(&mut self) {
        let now = unix_now();
        self.revoked.retain(|_, &mut exp| exp > now);
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Shutdown => self.start_shutdown(),
            Command::Push {
                jobs,
                reply,
                forward,
            } => {
                let sockets = self.deliver(&jobs);
                let mut remote_nodes = 0;
                if forward {
                    for job in &jobs {
                        remote_nodes += self.route_remote(job);
                    }
                } else {
                    ShardStats::add(
                        &self.shared.stats[self.id].remote_received,
                        jobs.len() as u64,
                    );
                }
                if let Some(reply) = reply {
                    let _ = reply.send(super::PushCounts {
                        sockets,
                        remote_nodes,
                    });
                }
            }
            Command::Count {
                context,
                user,
                filter,
                reply,
            } => {
                let _ = reply.send(super::Counts {
                    local: self.local_count(context, user, &filter),
                    remote: self.remote_counts(context, user, &filter),
                });
            }
            Command::PeerUp { node } => self.peer_up(node),
            Command::PeerDown { node } => self.peer_down(node),
            Command::RemotePresence { node, entries } => self.remote_presence(node, entries),
            Command::Revoke(r) => self.revoke(r),
            Command::SetAttribute {
                socket,
                key,
                value,
                reply,
            } => {
                let _ = reply.send(self.set_attribute(socket, key, value));
            }
            Command::Reload(policy) => {
                self.limits = policy.config.limits;
                // New sockets get the new frame/message limits; open ones keep theirs.
                self.ws_limits = crate::protocol::WsLimits {
                    max_frame_bytes: policy.config.limits.max_frame_bytes,
                    max_message_bytes: policy.config.limits.max_message_bytes,
                };
                self.upgrade_bucket = super::admission::TokenBucket::per_core(
                    policy.config.limits.upgrade_rate_per_sec,
                    self.shared.cores,
                );
                self.policy = policy;
            }
        }
    }
}

//! The inbox: commands from the control plane and the link, taken in bounded batches.
use super::Shard;
use crate::runtime::conn::flag;
use crate::runtime::stats::ShardStats;
use crate::runtime::{
    AttributeError, Command, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE,
};

/// Commands taken from the inbox in one loop turn. A batch push command carries up to a whole
/// `/v1/push/batch` request, so 64 commands are plenty of work between two looks at the ring.
const INBOX_BATCH: usize = 64;

impl Shard {
    /// Commands from the control plane and the link, at most [`INBOX_BATCH`] a loop turn:
    /// a burst of pushes cannot starve the sockets' completions. What is left rings the
    /// core's own doorbell, so the next turn takes the next batch.
    pub(in crate::runtime) fn on_wake(&mut self) {
        for _ in 0..INBOX_BATCH {
            let Some(cmd) = self.shared.inboxes[self.id].pop() else {
                break;
            };
            self.on_command(cmd);
        }
        if !self.shared.inboxes[self.id].is_empty() {
            self.shared.wake(self.id);
        }
        self.ring.arm_wake();
    }

    fn set_attribute(
        &mut self,
        socket: u64,
        key: Box<str>,
        value: Box<str>,
    ) -> Result<(), AttributeError> {
        let (_, gen, slot) = crate::runtime::socket_id_parts(socket);
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
        let attrs = meta.attrs_mut();
        if let Some((_, v)) = attrs.iter_mut().find(|(k, _)| *k == key) {
            *v = value;
        } else if attrs.len() >= MAX_ATTRIBUTES {
            return Err(AttributeError::TooLarge);
        } else {
            attrs.push((key, value));
        }
        Ok(())
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Shutdown => self.start_shutdown(),
            Command::Push {
                jobs,
                reply,
                forward,
            } => {
                let (sockets, positions) = self.deliver(&jobs);
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
                    let _ = reply.send(crate::runtime::PushCounts {
                        sockets,
                        remote_nodes,
                        positions,
                    });
                }
            }
            Command::Count {
                context,
                user,
                filter,
                reply,
            } => {
                let _ = reply.send(crate::runtime::Counts {
                    local: self.local_count(context, &user, &filter),
                    remote: self.remote_counts(context, &user, &filter),
                });
            }
            Command::PeerUp { node, continued } => self.peer_up(node, continued),
            Command::PeerDown { node } => self.peer_down(node, false),
            Command::PeerUnreachable { node } => self.peer_down(node, true),
            Command::RemotePresence { node, entries } => self.remote_presence(node, entries),
            Command::CatchUp { users } => self.catch_up(users),
            Command::Revoke(r) => self.revoke(r),
            Command::Barrier(done) => {
                let _ = done.send(());
            }
            Command::Resumed { slot, gen, answer } => self.on_resumed(slot, gen, answer),
            Command::GapFilled { slot, gen, answer } => self.on_gap_filled(slot, gen, answer),
            Command::SioResumed {
                slot,
                gen,
                nsp,
                claim,
                tag,
                answer,
            } => self.on_sio_resumed(slot, gen, &nsp, claim, tag, answer),
            Command::SetAttribute {
                socket,
                key,
                value,
                reply,
            } => {
                let _ = reply.send(self.set_attribute(socket, key, value));
            }
            Command::Jwks(keys) => self.jwks = Some(keys),
            Command::ProxyAnswered {
                slot,
                gen,
                key,
                plan,
                answer,
            } => self.on_proxy_answer(slot, gen, key, plan, answer),
            Command::Reload(policy) => {
                self.limits = policy.config.limits;
                // New sockets get the new frame/message limits; open ones keep theirs.
                self.ws_limits = crate::protocol::WsLimits {
                    max_frame_bytes: policy.config.limits.max_frame_bytes,
                    max_message_bytes: policy.config.limits.max_message_bytes,
                };
                self.upgrade_bucket = crate::runtime::admission::TokenBucket::per_core(
                    policy.config.limits.upgrade_rate_per_sec,
                    self.shared.cores,
                );
                self.policy = policy;
            }
        }
    }
}

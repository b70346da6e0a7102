//! `auth = "proxy"` on the core: a request decided but for who the client is waits while the
//! application is asked off the core (`service::proxy_client`). The connection keeps its
//! slot in the `Handshake` state with its handshake deadline running and no receive armed;
//! the answer comes back as `Command::ProxyAnswered` naming the slot and its generation (a
//! connection gone meanwhile, by the deadline or the drain, is recognised and the answer
//! dropped). An admitting answer fills the plan's session and owner and the request goes on
//! exactly as a session-authenticated one after the decision (placement, handoff); the
//! upgrade rate is taken before the application is asked.
use super::Shard;
use crate::runtime::conn::ConnState;
use crate::runtime::refusal_log::Site;
use crate::runtime::Command;
use crate::service::placement::user_key;
use crate::service::plan::{PendingPlan, ProxyPending};
use crate::service::proxy_auth::{CredKey, ProxyAnswer, NO_EXPIRY};
use crate::service::refusal::Refusal;
use crate::service::session::{unix_now, SessionError, SocketAuth};

impl Shard {
    /// Ask the application about the request in `slot` and go on; the answer comes back as
    /// a command.
    pub(super) fn ask_proxy(&mut self, slot: u32, pending: ProxyPending) {
        let Some(client) = self.shared.proxy.clone() else {
            // Not reached: a policy with an `auth = "proxy"` endpoint has `[proxy]`.
            self.refuse(
                slot,
                Refusal::ProxyUnavailable {
                    retry_after_secs: 5,
                },
            );
            return;
        };
        let ProxyPending { request, plan } = pending;
        // The upgrade rate is taken before the application is asked: a reconnect storm
        // costs it no more calls than the node admits upgrades.
        let new = match &plan {
            PendingPlan::Upgrade(_) => true,
            PendingPlan::Poll(p) => p.sid.is_none(),
        };
        if new && self.over_upgrade_rate(slot, Site::of_pending(&plan)) {
            return;
        }
        let key = request.key;
        let gen = self.conns[slot as usize].gen;
        let (shared, core) = (self.shared.clone(), self.id);
        client.ask(
            request,
            Box::new(move |answer| {
                shared.send(
                    core,
                    Command::ProxyAnswered {
                        slot,
                        gen,
                        key,
                        plan,
                        answer,
                    },
                )
            }),
        );
    }

    /// The application's answer for the request parked in `slot`.
    pub(super) fn on_proxy_answer(
        &mut self,
        slot: u32,
        gen: u32,
        key: CredKey,
        plan: PendingPlan,
        answer: ProxyAnswer,
    ) {
        // Still parked: the same connection, and its request not refused meanwhile (the
        // handshake deadline) nor closed (the drain). A parked connection reads nothing, so
        // its `Handshake` state is this request's.
        if !self.conns.is_live(slot, gen)
            || !matches!(self.conns[slot as usize].state, ConnState::Handshake { .. })
        {
            return;
        }
        let retry_after_secs = self
            .shared
            .proxy
            .as_ref()
            .map_or(5, |p| p.retry_after_secs());
        let id = match answer {
            ProxyAnswer::Admit(id) => id,
            ProxyAnswer::Refuse { status, reason } => {
                let r = match status {
                    403 => Refusal::ProxyForbidden,
                    _ => Refusal::ProxyUnauthorized,
                };
                self.refuse_because(slot, r, Site::of_pending(&plan), &reason);
                return;
            }
            ProxyAnswer::Unavailable { busy, .. } => {
                let r = match busy {
                    true => Refusal::ProxyBusy { retry_after_secs },
                    false => Refusal::ProxyUnavailable { retry_after_secs },
                };
                self.refuse_at(slot, r, Site::of_pending(&plan));
                return;
            }
        };
        let expires_at = id.expires_at.unwrap_or(NO_EXPIRY).min(NO_EXPIRY);
        // The socket's session: a ringwire session id of this user and credentials, so that
        // `DELETE /v1/sessions/{id}` ends it like a session.
        let session = self
            .shared
            .session_key
            .proxy_session(id.context, &id.user, expires_at, &key);
        let ended = if expires_at <= unix_now() {
            Some(Refusal::Session(SessionError::Expired))
        } else if self.users.revoked().contains_key(&session) {
            Some(Refusal::Session(SessionError::Revoked))
        } else {
            None
        };
        let plan = match (ended, plan) {
            (None, plan) => plan,
            // A request of a polling session (sid) whose login just ended: its owner core may
            // hold the session's last packets (the Socket.IO disconnect) for it, as with
            // sessions and tokens.
            (Some(r), PendingPlan::Poll(mut p)) if p.sid.is_some() => {
                p.ended = Some(r);
                PendingPlan::Poll(p)
            }
            (Some(r), plan) => {
                self.refuse_at(slot, r, Site::of_pending(&plan));
                return;
            }
        };
        if !self.policy.cascade.enabled(id.context, &id.user) {
            self.refuse_at(slot, Refusal::Disabled, Site::of_pending(&plan));
            return;
        }
        let shard_key = user_key(id.context, &id.user);
        let auth = SocketAuth {
            session,
            context: id.context,
            user: id.user,
            expires_at,
        };
        match plan {
            PendingPlan::Upgrade(mut p) => {
                p.auth = Some(auth);
                p.shard_key = Some(shard_key);
                p.attrs = id.attrs;
                self.place_upgrade(slot, p);
            }
            PendingPlan::Poll(mut p) => {
                p.auth = auth;
                p.shard_key = shard_key;
                p.attrs = id.attrs;
                self.place_poll(slot, p);
            }
        }
    }
}

//! A connection's request: accepted, read, decided (upgrade, polling, refusal), and the
//! WebSocket opened on its owning core.
use super::Shard;
use crate::protocol::handshake;
use crate::protocol::WsConnection;
use crate::runtime::conn::{flag, ConnState, Handoff, SocketMeta};
use crate::runtime::refusal_log::Site;
use crate::runtime::stats::ShardStats;
use crate::runtime::sys;
use crate::runtime::timer::Timers;
use crate::service::placement::owner_core;
use crate::service::plan::{PollPlan, UpgradePlan};
use crate::service::refusal::Refusal;
use crate::service::session::unix_now;
use crate::service::upgrade::{Decision, SessionCheck};
use io_uring::cqueue;

impl Shard {
    pub(in crate::runtime) fn on_new_conn(&mut self, slot: u32) {
        ShardStats::inc(&self.stats().accepted);
        // The node-wide count follows the connection, not the slot: counted once here, once
        // down when it finally closes, never on a move between cores (a moved connection
        // counted on both cores for a moment refused the last one under the limit).
        ShardStats::inc(&self.stats().connections_opened);
        let handshake = ConnState::Handshake {
            head: Vec::new(),
            reused: false,
            since_ns: self.clock_ns(),
        };
        self.conns.take(slot, handshake, self.timers.now());
        ShardStats::inc(&self.stats().handshakes);
        if let Some(cfg) = &self.policy.tls {
            match rustls::ServerConnection::new(cfg.clone()) {
                Ok(mut tls) => {
                    // Output is bounded before it reaches rustls (`limits.max_outbound_bytes`
                    // on the socket's queue); its own 64 KiB cap would cut a large turn short.
                    tls.set_buffer_limit(None);
                    self.conns[slot as usize].tls = Some(Box::new(tls));
                }
                Err(e) => {
                    tracing::warn!(core = self.id, "TLS session: {e}");
                    self.begin_close(slot);
                    return;
                }
            }
        }
        if self.refuse_unless_admitted(slot) {
            return;
        }
        let at = self.timers.now() + Timers::ticks(self.limits.handshake_timeout_ms);
        self.schedule(slot, at);
        self.arm_recv_handshake(slot);
    }

    /// A single-shot receive of request bytes (also armed on a held polling GET, to notice
    /// the client going away).
    pub(in crate::runtime) fn arm_recv_handshake(&mut self, slot: u32) {
        self.ring.recv_request(&mut self.conns[slot as usize], slot);
    }

    pub(super) fn on_recv_handshake(&mut self, slot: u32, res: i32, flags: u32) {
        let c = &mut self.conns[slot as usize];
        c.inflight -= 1;
        c.flags &= !flag::RECV_ARMED;
        if res <= 0 {
            if res == -libc::ENOBUFS {
                self.starve(slot, true);
            } else {
                self.begin_close(slot);
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.begin_close(slot);
            return;
        };
        // TLS: the request is whatever plaintext the ciphertext yields (maybe none yet).
        let mut plain = None;
        if self.conns[slot as usize].tls.is_some() {
            match self.decrypt(slot, bid, res as usize) {
                Some(p) if !p.is_empty() => plain = Some(p),
                Some(p) => {
                    // TLS records with no data (handshake, tickets): keep reading.
                    self.give_back_plain(p);
                    if matches!(
                        self.conns[slot as usize].state,
                        ConnState::Handshake { .. } | ConnState::PollWait { .. }
                    ) {
                        self.arm_recv_handshake(slot);
                    }
                    return;
                }
                None => return,
            }
        }
        if !matches!(self.conns[slot as usize].state, ConnState::Handshake { .. }) {
            if plain.is_none() {
                self.ring.recycle(bid);
            }
            // Bytes while a polling GET is held or its answer is being written: a pipelined
            // request, which HTTP clients of long-polling never send. Close.
            let c = &self.conns[slot as usize];
            if matches!(c.state, ConnState::PollWait { .. })
                || (matches!(c.state, ConnState::Responding) && c.has(flag::KEEP_ALIVE))
            {
                self.begin_close(slot);
            }
            return;
        }
        let (decision, follow_up_started) = self.read_request(slot, bid, res as usize, plain);
        self.on_decision(slot, decision, follow_up_started);
    }

    /// Add received bytes (`plain`: decrypted by TLS, else receive buffer `bid`) to the
    /// request and decide it. Also says whether this is the first byte of a follow-up request
    /// on a keep-alive connection.
    fn read_request(
        &mut self,
        slot: u32,
        bid: u16,
        len: usize,
        plain: Option<Vec<u8>>,
    ) -> (Decision, bool) {
        // The first bytes of a follow-up request on a keep-alive connection: until now the
        // connection was idle (bounded by the keep-alive timer); from here its request head
        // gets the same deadline as a new connection's.
        let mut follow_up_started = false;
        let decision = {
            let data = match &plain {
                Some(p) => &p[..],
                None => self.ring.buffer(bid, len),
            };
            let timing = self.timing;
            let ConnState::Handshake {
                head,
                reused,
                since_ns,
            } = &mut self.conns[slot as usize].state
            else {
                unreachable!()
            };
            if *reused && head.is_empty() {
                *reused = false;
                follow_up_started = true;
                if timing {
                    *since_ns = crate::runtime::clock::now_ns();
                }
            }
            let check = SessionCheck {
                key: &self.shared.session_key,
                now: unix_now(),
                revoked: self.users.revoked(),
                jwks: self.jwks.as_deref(),
            };
            let (d, bytes) = if head.is_empty() {
                let d = self.policy.decide(data, &check);
                if matches!(d, Decision::NeedMore) {
                    head.extend_from_slice(data);
                }
                (d, data)
            } else {
                // Bounded: at most the largest request (head and polling body) plus one
                // receive buffer.
                if head.len() <= self.policy.max_request_bytes {
                    head.extend_from_slice(data);
                }
                (self.policy.decide(head, &check), &head[..])
            };
            if let Decision::Refuse(_) = d {
                super::refusals::note_site(&mut self.refusals, &self.policy, bytes);
            }
            d
        };
        if plain.is_none() {
            self.ring.recycle(bid);
        }
        if let Some(p) = plain {
            self.give_back_plain(p);
        }
        (decision, follow_up_started)
    }

    /// Carry out the decision on a request: read more, refuse, answer a preflight, or take
    /// the request (polling) or socket (upgrade) to the core that owns its user.
    fn on_decision(&mut self, slot: u32, decision: Decision, follow_up_started: bool) {
        match decision {
            Decision::NeedMore => {
                if follow_up_started {
                    let at = self.timers.now() + Timers::ticks(self.limits.handshake_timeout_ms);
                    self.schedule(slot, at);
                }
                self.arm_recv_handshake(slot)
            }
            Decision::Refuse(r) => {
                if r == Refusal::Jwt(crate::service::jwt::JwtError::UnknownKey) {
                    if let Some(keys) = &self.jwks {
                        keys.want_refresh();
                    }
                }
                self.refuse_request(slot, r)
            }
            Decision::Preflight(origin) => self.answer_preflight(slot, &origin),
            Decision::Proxy(pending) => self.ask_proxy(slot, *pending),
            // A new Engine.IO session counts against the upgrade rate like an upgrade (its
            // later requests do not).
            Decision::Poll(plan) => {
                if plan.sid.is_some() || !self.over_upgrade_rate(slot, Site::of_poll(&plan)) {
                    self.place_poll(slot, plan);
                }
            }
            Decision::Upgrade(plan) => {
                if !self.over_upgrade_rate(slot, Site::of_path(&plan.path)) {
                    self.place_upgrade(slot, plan);
                }
            }
        }
    }

    /// `limits.upgrade_rate_per_sec`: refuse the request in `slot` (503) when over it.
    pub(super) fn over_upgrade_rate(&mut self, slot: u32, site: Site<'_>) -> bool {
        match self.upgrade_bucket.take(sys::monotonic_ms()) {
            Ok(()) => false,
            Err(retry_after_secs) => {
                self.refuse_at(slot, Refusal::RateLimit { retry_after_secs }, site);
                true
            }
        }
    }

    /// Serve an admitted polling request on the core that owns its user.
    pub(super) fn place_poll(&mut self, slot: u32, plan: Box<PollPlan>) {
        ShardStats::dec(&self.stats().handshakes);
        let owner = owner_core(plan.shard_key, self.shared.cores);
        self.conns[slot as usize].state = ConnState::Responding;
        if owner == self.id {
            self.serve_poll(slot, plan);
        } else {
            self.handoff(slot, owner, Handoff::Poll(plan));
        }
    }

    /// Open an admitted upgrade's socket on the core that owns its user.
    pub(super) fn place_upgrade(&mut self, slot: u32, mut plan: Box<UpgradePlan>) {
        if let ConnState::Handshake { since_ns, .. } = self.conns[slot as usize].state {
            plan.accepted_ns = since_ns;
        }
        ShardStats::dec(&self.stats().handshakes);
        let owner = plan
            .shard_key
            .map_or(self.id, |k| owner_core(k, self.shared.cores));
        if owner == self.id {
            self.conns[slot as usize].state = ConnState::Responding;
            self.open_socket(slot, plan);
        } else {
            self.handoff(slot, owner, Handoff::Upgrade(plan));
        }
    }

    /// Admission of a connection new on this core (accepted, or moved here): refused with
    /// 503 while the node drains or when it is over its slots or `max_connections`.
    /// Returns whether it was refused.
    pub(in crate::runtime) fn refuse_unless_admitted(&mut self, slot: u32) -> bool {
        let refusal = if self.stopping() {
            Refusal::ShuttingDown
        } else if self.over_admission_limit() {
            Refusal::ServerFull
        } else {
            return false;
        };
        self.refuse(slot, refusal);
        true
    }

    /// Open the WebSocket on this core: 101, register, read frames.
    pub(in crate::runtime) fn open_socket(&mut self, slot: u32, mut plan: Box<UpgradePlan>) {
        let deflate = plan.deflate.as_ref().map(|(p, _)| *p);
        let mut ws = WsConnection::new(self.ws_limits, deflate);
        ws.set_min_compress_bytes(self.policy.deflate.min_compress_bytes);
        // Socket.IO: a new session, or the WebSocket upgrading a polling session (`sid`).
        let mut transport_of = None;
        if let Some(up) = &plan.sio {
            if let Some(sid) = &up.sid {
                let session = plan.auth.as_ref().map(|a| a.session);
                let found = session.and_then(|s| self.find_sid(sid, s));
                match found.map(|v| self.sio_attach(v, slot, up.eio)) {
                    Some(Some(transport)) => transport_of = Some(transport),
                    Some(None) => {
                        self.refuse_at(slot, Refusal::EioBadRequest, Site::of_path(&plan.path));
                        return;
                    }
                    None => {
                        let site = Site::of_path(&plan.path);
                        self.refuse_at(slot, Refusal::EioSessionUnknown, site);
                        return;
                    }
                }
            }
        }
        if let (Some(auth), None) = (&plan.auth, &transport_of) {
            if self.user_socket_count(auth.context, &auth.user) >= self.limits.max_sockets_per_user
            {
                self.refuse_at(slot, Refusal::UserLimit, Site::of_path(&plan.path));
                return;
            }
        }
        let is_transport = transport_of.is_some();
        let sio = match (&plan.sio, transport_of) {
            (None, _) => None,
            (Some(up), None) => Some(self.new_ws_session(up.eio, slot)),
            (Some(_), transport) => transport,
        };
        let now = self.timers.now();
        let c = &mut self.conns[slot as usize];
        handshake::write_switching_protocols_with_protocol(
            &mut c.out,
            &plan.ws_key,
            plan.deflate.as_ref().map(|(_, h)| h.as_str()),
            plan.protocol,
        );
        let meta = Box::new(SocketMeta::new(
            plan.auth,
            self.paths.intern(&plan.path),
            &plan.query,
            std::mem::take(&mut plan.attrs),
            sio,
        ));
        c.state = ConnState::Open {
            ws,
            endpoint: plan.endpoint,
            meta,
        };
        c.last_rx = now as u32;
        self.register(slot);
        ShardStats::inc(&self.shared.stats[self.id].upgrades);
        if plan.accepted_ns != 0 {
            let took = crate::runtime::clock::now_ns().saturating_sub(plan.accepted_ns);
            self.shared.stats[self.id].hist.handshake.record(took, 1);
        }
        if !is_transport {
            ShardStats::inc(&self.shared.stats[self.id].sockets);
        }
        self.sio_greet(slot);
        self.replay_history(slot, plan.endpoint, plan.resume);
        self.mark_dirty(slot);
        self.conns[slot as usize].ping_at =
            (now + Timers::ticks(self.limits.ping_interval_secs * 1000)) as u32;
        self.schedule_open(slot);
        if !plan.leftover.is_empty() {
            let mut early = std::mem::take(&mut plan.leftover);
            self.on_frames(slot, &mut early);
        }
        self.arm_recv(slot);
    }
}

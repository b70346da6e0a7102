//! Engine.IO long-polling over HTTP/1.1 on the owning core.
//!
//! A polling request is parsed and authenticated on the core that accepted the connection,
//! then the connection moves (MSG_RING, like an upgrade) to the core owning the user, which
//! holds the session. There a GET is answered at once with what is queued, or held
//! (`ConnState::PollWait`) until something is sent or `socketio.polling_timeout_ms`; a POST
//! delivers its packets and is answered `ok`. Keep-alive connections go back to reading
//! the next request, which may belong to another user and move again.
//!
//! What to answer, hold or drop is the session's (`service::engineio::Session`); this file
//! carries it out: HTTP answers, held connections, the session's virtual slot and timer.
use super::Shard;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio;
use crate::protocol::handshake;
use crate::runtime::conn::{flag, ConnState, SessionError, Sio, SocketMeta};
use crate::runtime::refusal_log::Site;
use crate::runtime::stats::ShardStats;
use crate::runtime::timer::Timers;
use crate::runtime::timer::TICK_MS;
use crate::service::engineio::{Actions, Session};
use crate::service::plan::{PollMethod, PollPlan};
use crate::service::refusal::Refusal;

impl Shard {
    /// A polling request on its owner core.
    pub(in crate::runtime) fn serve_poll(&mut self, slot: u32, plan: Box<PollPlan>) {
        ShardStats::inc(&self.shared.stats[self.id].polling_requests);
        let Some(sid) = plan.sid.as_deref() else {
            if plan.method == PollMethod::Get {
                self.poll_open(slot, plan);
            } else {
                self.refuse_at(slot, Refusal::EioBadHandshakeMethod, Site::of_poll(&plan));
            }
            return;
        };
        let Some(session) = self.find_sid(sid, plan.auth.session) else {
            let r = plan.ended.unwrap_or(Refusal::EioSessionUnknown);
            self.refuse_at(slot, r, Site::of_poll(&plan));
            return;
        };
        if let Some(e) = plan.ended {
            if self.session_mut(session).is_some_and(|s| !s.is_ending()) {
                // The accepting core learnt of the end first (each core applies a revocation
                // on its own; an expiry timer may run a tick late): end the session now, and
                // let this request take its last packets (a held GET is superseded by it).
                self.with_session(session, |s, _, _, out| s.release_held(out));
                ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
                let code = match e {
                    Refusal::Session(SessionError::Expired) | Refusal::Jwt(_) => {
                        CloseReason::SessionExpired
                    }
                    _ => CloseReason::SessionTerminated,
                };
                self.with_session(session, |s, now, cfg, out| s.end(now, code, cfg, out));
            }
            if self.session_mut(session).is_none_or(|s| !s.is_ending()) {
                self.refuse_at(slot, e, Site::of_poll(&plan));
                return;
            }
        }
        let (now, cfg, request) = (self.sio_now(), self.sio_settings(), self.link(slot));
        let mut out = Actions::new();
        let Some(s) = self.session_mut(session) else {
            return;
        };
        let served = match plan.method {
            PollMethod::Get => s.get(now, request, plan.eio, &cfg, &mut out),
            PollMethod::Post => s.post(now, plan.eio, plan.format, &plan.body, &cfg, &mut out),
        };
        if served.is_err() {
            // Polling after the upgrade finished, another protocol version, a malformed body.
            self.refuse_at(slot, Refusal::EioBadRequest, Site::of_poll(&plan));
            return;
        }
        match plan.method {
            PollMethod::Get => {
                self.sio_actions(session, &mut out, Some((request, plan)));
            }
            PollMethod::Post => {
                self.sio_actions(session, &mut out, None);
                self.poll_reply(slot, &plan, 200, "text/html", b"ok");
            }
        }
    }

    /// A handshake: a new polling session, answered with its open packet.
    fn poll_open(&mut self, slot: u32, mut plan: Box<PollPlan>) {
        let (context, user) = (plan.auth.context, &plan.auth.user);
        if self.user_socket_count(context, user) >= self.limits.max_sockets_per_user {
            self.refuse_at(slot, Refusal::UserLimit, Site::of_poll(&plan));
            return;
        }
        let v = self.conns.take_virtual();
        let sid = self.new_sid(v, self.conns[v as usize].gen);
        let (now, cfg, request) = (self.sio_now(), self.sio_settings(), self.link(slot));
        let mut out = Actions::new();
        let session = Session::polling(plan.eio, sid, now, request, &cfg, &mut out);
        let meta = Box::new(SocketMeta::new(
            Some(plan.auth.clone()),
            self.paths.intern(&plan.path),
            &plan.query,
            std::mem::take(&mut plan.attrs),
            Some(Box::new(Sio::Session {
                session,
                retired: false,
            })),
        ));
        self.conns[v as usize].state = ConnState::Polling {
            endpoint: plan.endpoint,
            meta,
        };
        self.register(v);
        if self.sio_recovery_wanted(v) {
            if let Some(s) = self.session_mut(v) {
                s.enable_recovery();
            }
        }
        let stats = &self.shared.stats[self.id];
        ShardStats::inc(&stats.sockets);
        ShardStats::inc(&stats.polling_sessions);
        self.sio_actions(v, &mut out, Some((request, plan)));
        self.sio_v3_recovery(v);
    }

    /// Hold GET `slot` (its `plan`) of `session` until `until` (ms).
    pub(in crate::runtime) fn poll_hold(
        &mut self,
        session: u32,
        slot: u32,
        plan: Box<PollPlan>,
        until: u64,
    ) {
        let session_gen = self.conns[session as usize].gen;
        self.conns[slot as usize].state = ConnState::PollWait {
            session,
            session_gen,
            plan,
        };
        self.schedule(slot, until.div_ceil(TICK_MS));
        // Notice the client going away while held, so that nothing is answered into a dead
        // connection (what was queued waits for the next GET instead).
        self.arm_recv_handshake(slot);
    }

    /// End of a loop turn for a polling session with new packets: answer its held GET.
    pub(in crate::runtime) fn poll_flush(&mut self, session: u32) {
        self.with_session(session, |s, _, _, out| s.flush(out));
    }

    /// Answer the held GET on connection (w, wgen) with `packets`.
    pub(in crate::runtime) fn answer_held<'p>(
        &mut self,
        w: u32,
        wgen: u32,
        packets: impl Iterator<Item = &'p str>,
    ) {
        let Some(c) = self.conns.get_mut(w as usize) else {
            return;
        };
        if c.gen != wgen {
            return;
        }
        let ConnState::PollWait { .. } = &c.state else {
            return;
        };
        let ConnState::PollWait { plan, .. } =
            std::mem::replace(&mut c.state, ConnState::Responding)
        else {
            return;
        };
        self.poll_answer(w, &plan, packets);
    }

    /// The live session whose held GET is on connection `slot`, if any.
    fn held_session(&mut self, slot: u32) -> Option<u32> {
        let ConnState::PollWait {
            session,
            session_gen,
            ..
        } = self.conns[slot as usize].state
        else {
            return None;
        };
        let request = self.link(slot);
        if self.conns[session as usize].gen != session_gen {
            return None;
        }
        let s = self.session_mut(session)?;
        s.holds(request).then_some(session)
    }

    /// A held GET reached the polling timeout: answer it with a noop.
    pub(in crate::runtime) fn poll_wait_timeout(&mut self, slot: u32) {
        match self.held_session(slot) {
            Some(session) => {
                self.with_session(session, |s, _, _, out| s.release_held(out));
            }
            None => {
                let gen = self.conns[slot as usize].gen;
                self.answer_held(slot, gen, std::iter::once("6"));
            }
        }
    }

    /// A held GET's connection is closing: its session no longer waits on it.
    pub(in crate::runtime) fn poll_wait_closed(&mut self, slot: u32) {
        let request = self.link(slot);
        if let Some(s) = self
            .held_session(slot)
            .and_then(|session| self.session_mut(session))
        {
            s.held_closed(request);
        }
    }

    /// Answer a polling request with a payload of packets (JSONP-wrapped if asked).
    pub(in crate::runtime) fn poll_answer<'p>(
        &mut self,
        slot: u32,
        plan: &PollPlan,
        packets: impl IntoIterator<Item = &'p str>,
    ) {
        let mut payload = String::new();
        engineio::encode_payload(plan.eio, packets, &mut payload);
        ShardStats::inc(&self.shared.stats[self.id].messages_out);
        match plan.jsonp {
            Some(j) => {
                let mut wrapped = String::with_capacity(payload.len() + 16);
                engineio::wrap_jsonp(j, &payload, &mut wrapped);
                self.poll_reply(
                    slot,
                    plan,
                    200,
                    "text/javascript; charset=UTF-8",
                    wrapped.as_bytes(),
                );
            }
            None => self.poll_reply(
                slot,
                plan,
                200,
                "text/plain; charset=UTF-8",
                payload.as_bytes(),
            ),
        }
    }

    /// Write an HTTP answer; keep-alive connections go back to reading once it is written.
    fn poll_reply(
        &mut self,
        slot: u32,
        plan: &PollPlan,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3);
        if let Some(origin) = plan.cors_origin.as_deref() {
            headers.push(("Access-Control-Allow-Origin", origin));
            headers.push(("Access-Control-Allow-Credentials", "true"));
            headers.push(("Vary", "Origin"));
        }
        let keep_alive = plan.keep_alive && !self.stopping();
        let c = &mut self.conns[slot as usize];
        c.state = ConnState::Responding;
        handshake::write_http_reply(&mut c.out, status, content_type, &headers, body, keep_alive);
        if keep_alive {
            c.flags |= flag::KEEP_ALIVE;
            self.flush_within_linger(slot);
        } else {
            self.close_after_flush(slot);
        }
    }

    /// A CORS preflight from an allowed origin.
    pub(in crate::runtime) fn answer_preflight(&mut self, slot: u32, origin: &str) {
        let c = &mut self.conns[slot as usize];
        if matches!(c.state, ConnState::Handshake { .. }) {
            ShardStats::dec(&self.shared.stats[self.id].handshakes);
        }
        c.state = ConnState::Responding;
        let headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Max-Age", "600"),
            ("Vary", "Origin"),
        ];
        handshake::write_http_reply(&mut c.out, 204, "text/plain", &headers, b"", false);
        self.close_after_flush(slot);
    }

    /// A keep-alive answer is written: read the next request on this connection.
    pub(in crate::runtime) fn keep_alive_next(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.flags &= !flag::KEEP_ALIVE;
        c.state = ConnState::Handshake {
            head: Vec::new(),
            reused: true,
            since_ns: 0,
        };
        ShardStats::inc(&self.shared.stats[self.id].handshakes);
        // Idle longer than a ping interval plus the ping timeout: a v3 client's next ping
        // POST reuses this connection instead of racing its close (it holds no buffer).
        let idle_ms =
            self.limits.ping_interval_secs * 1000 + self.policy.config.socketio.ping_timeout_ms;
        let at = self.timers.now() + Timers::ticks(idle_ms);
        self.schedule(slot, at);
        self.arm_recv_handshake(slot);
    }

    /// The session's next deadline (`at`, ms), or its login's expiry if sooner (not once
    /// it ended: it only waits for its client to take its last packets).
    pub(in crate::runtime) fn schedule_poll_session(&mut self, v: u32, at: u64) {
        let now = self.timers.now();
        let mut at = at.div_ceil(TICK_MS);
        let ConnState::Polling { meta, .. } = &self.conns[v as usize].state else {
            return;
        };
        let ending = match meta.sio.as_deref() {
            Some(Sio::Session { session, .. }) => session.is_ending(),
            _ => false,
        };
        if let (Some(a), false) = (&meta.auth, ending) {
            let secs = a
                .expires_at
                .saturating_sub(crate::service::session::unix_now());
            at = at.min(now + secs * 1000 / TICK_MS);
        }
        self.schedule(v, at.max(now + 1));
    }

    /// A polling session's timer: its login's expiry, else the session's own deadline.
    pub(in crate::runtime) fn poll_session_timer(&mut self, v: u32) {
        let ConnState::Polling { meta, .. } = &self.conns[v as usize].state else {
            return;
        };
        let ending = match meta.sio.as_deref() {
            Some(Sio::Session { session, .. }) => session.is_ending(),
            _ => return,
        };
        if !ending
            && meta
                .auth
                .as_ref()
                .is_some_and(|a| crate::service::session::unix_now() >= a.expires_at)
        {
            ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
            let why = CloseReason::SessionExpired;
            self.with_session(v, |s, now, cfg, out| s.end(now, why, cfg, out));
            return;
        }
        self.with_session(v, |s, now, cfg, out| s.handle_timeout(now, cfg, out));
    }

    /// End a polling session: close packet to a held GET, close its WebSocket, unregister.
    pub(in crate::runtime) fn close_poll_session(&mut self, v: u32) {
        let why = CloseReason::Normal;
        if self
            .with_session(v, |s, _, _, out| s.close(why, out))
            .is_none()
        {
            self.free_poll_session(v);
        }
    }

    /// `Action::Retire`: the polling session is no socket any more.
    pub(in crate::runtime) fn retire_poll_session(&mut self, v: u32) {
        self.unregister(v);
        let stats = &self.shared.stats[self.id];
        ShardStats::dec(&stats.sockets);
        ShardStats::dec(&stats.polling_sessions);
        if let ConnState::Polling { meta, .. } = &mut self.conns[v as usize].state {
            if let Some(Sio::Session { retired, .. }) = meta.sio.as_deref_mut() {
                *retired = true;
            }
        }
    }

    /// `Action::Free`: the polling session is over; its virtual slot is free.
    pub(in crate::runtime) fn free_poll_session(&mut self, v: u32) {
        let c = &mut self.conns[v as usize];
        if !matches!(c.state, ConnState::Polling { .. }) {
            return;
        }
        self.conns.release_virtual(v);
    }
}

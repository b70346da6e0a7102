//! Engine.IO long-polling over HTTP/1.1 on the owning core.
//!
//! A polling request is parsed and authenticated on the core that accepted the connection,
//! then the connection moves (MSG_RING, like an upgrade) to the core owning the user, which
//! holds the session. There a GET is answered at once with what is queued, or held
//! (`ConnState::PollWait`) until something is sent or `socketio.polling_timeout_ms`; a POST
//! delivers its packets and is answered `ok`. Keep-alive connections go back to reading
//! the next request, which may belong to another user and move again.
use super::conn::{flag, ConnState, Ending, PollMethod, PollPlan, SessionError, SocketMeta};
use super::shard::Shard;
use super::stats::ShardStats;
use crate::protocol::close::CloseReason;
use crate::protocol::engineio::{self, Packet};
use crate::protocol::handshake;
use crate::service::refusal::Refusal;

/// A packet decoded from a POST body, owned (the body is consumed before handling).
enum Owned {
    Text(engineio::PacketType, String),
    Binary(Vec<u8>),
}

impl Shard {
    /// A polling request on its owner core.
    pub(super) fn serve_poll(&mut self, slot: u32, plan: Box<PollPlan>) {
        ShardStats::inc(&self.shared.stats[self.id].polling_requests);
        let Some(sid) = plan.sid.as_deref() else {
            if plan.method == PollMethod::Get {
                self.poll_open(slot, plan);
            } else {
                self.refuse(slot, Refusal::EioBadHandshakeMethod);
            }
            return;
        };
        let Some(session) = self.find_sid(sid, plan.auth.session) else {
            let refusal = plan
                .ended
                .map_or(Refusal::EioSessionUnknown, Refusal::Session);
            self.refuse(slot, refusal);
            return;
        };
        if let Some(e) = plan.ended {
            if self.sio_state(session).is_some_and(|s| s.ending.is_none()) {
                // The accepting core learnt of the end first (each core applies a revocation
                // on its own; an expiry timer may run a tick late): end the session now, and
                // let this request take its last packets (a held GET is superseded by it).
                self.poll_release(session);
                ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
                let code = match e {
                    SessionError::Expired => CloseReason::SessionExpired,
                    _ => CloseReason::SessionTerminated,
                };
                self.end_poll_session(session, code);
            }
            if self.sio_state(session).is_none_or(|s| s.ending.is_none()) {
                self.refuse(slot, Refusal::Session(e));
                return;
            }
        }
        let now = self.wheel.now();
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        if sio.eio != plan.eio || matches!(sio.ws, Some((_, _, true))) {
            // Polling after the upgrade finished, or another protocol version.
            self.refuse(slot, Refusal::EioBadRequest);
            return;
        }
        sio.last_seen = now;
        match plan.method {
            PollMethod::Get => self.poll_get(slot, session, plan),
            PollMethod::Post => self.poll_post(slot, session, plan),
        }
    }

    /// A handshake: a new polling session, answered with its open packet.
    fn poll_open(&mut self, slot: u32, plan: Box<PollPlan>) {
        let (context, user) = (plan.auth.context, plan.auth.user);
        if self.user_socket_count(context, user) >= self.limits.max_sockets_per_user {
            self.refuse(slot, Refusal::UserLimit);
            return;
        }
        let v = self.conns.take_virtual();
        let mut sio = self.new_sio_state(plan.eio, v);
        if plan.eio == crate::protocol::engineio::EioVersion::V3 {
            // The default namespace's connect follows on the next GET, as socket.io 2 does.
            sio.queue.push("40".into());
        }
        let open = self.open_packet(plan.eio, &sio.sid, true);
        let meta = Box::new(SocketMeta {
            auth: Some(plan.auth),
            path: plan.path.clone(),
            query: plan.query.clone(),
            attrs: Vec::new(),
            sio: Some(sio),
        });
        self.conns[v as usize].state = ConnState::Polling {
            endpoint: plan.endpoint,
            meta,
        };
        self.register(v);
        let stats = &self.shared.stats[self.id];
        ShardStats::inc(&stats.sockets);
        ShardStats::inc(&stats.polling_sessions);
        self.schedule_poll_session(v);
        self.poll_answer(slot, &plan, std::iter::once(open.as_str()));
    }

    fn poll_get(&mut self, slot: u32, session: u32, plan: Box<PollPlan>) {
        // A GET while another is held: the other one's client went away (or retried); answer
        // it with a noop and hold this one.
        self.poll_release(session);
        let gen = self.conns[slot as usize].gen;
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        if !sio.queue.is_empty() {
            let queued = sio.queue.take();
            self.poll_answer(slot, &plan, queued.iter().map(|p| &**p));
            self.ending_step(session, &queued);
            return;
        }
        sio.waiting = Some((slot, gen));
        let session_gen = self.conns[session as usize].gen;
        self.conns[slot as usize].state = ConnState::PollWait {
            session,
            session_gen,
            plan,
        };
        let at = self.wheel.now() + self.ticks(self.policy.config.socketio.polling_timeout_ms);
        self.schedule(slot, at);
        // Notice the client going away while held, so that nothing is answered into a dead
        // connection (what was queued waits for the next GET instead).
        self.arm_recv_handshake(slot);
    }

    fn poll_post(&mut self, slot: u32, session: u32, plan: Box<PollPlan>) {
        let mut packets = Vec::new();
        let decoded = engineio::decode_payload(plan.eio, plan.format, &plan.body, &mut |p| {
            packets.push(match p {
                Packet::Text(t, d) => Owned::Text(t, d.to_string()),
                Packet::Binary(b) => Owned::Binary(b),
            })
        });
        if decoded.is_err() {
            self.refuse(slot, Refusal::EioBadRequest);
            return;
        }
        let gen = self.conns[session as usize].gen;
        for p in packets {
            // A packet may end the session (close packet, protocol error).
            if self.conns[session as usize].gen != gen
                || !matches!(
                    self.conns[session as usize].state,
                    ConnState::Polling { .. }
                )
            {
                break;
            }
            match p {
                Owned::Text(t, d) => self.sio_packet(session, None, Packet::Text(t, &d)),
                Owned::Binary(b) => self.sio_packet(session, None, Packet::Binary(b)),
            }
        }
        self.poll_reply(slot, &plan, 200, "text/html", b"ok");
    }

    /// Answer the held GET of `session` (if any) with what is queued, or a noop.
    pub(super) fn poll_release(&mut self, session: u32) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        let Some((w, wgen)) = sio.waiting.take() else {
            return;
        };
        let mut queued = sio.queue.take();
        if queued.is_empty() {
            queued.push("6".into());
        }
        self.answer_held(w, wgen, queued.iter().map(|p| &**p));
        self.ending_step(session, &queued);
    }

    /// Release the held GET with a noop; with none held, make the next GET return at once
    /// (the client is pausing polling for an upgrade and waits for its last poll to end).
    pub(super) fn poll_release_or_noop(&mut self, session: u32) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        if sio.waiting.is_none() {
            if sio.queue.is_empty() {
                sio.queue.push("6".into());
            }
            return;
        }
        self.poll_release(session);
    }

    /// End of a loop turn for a polling session with new packets: answer its held GET.
    pub(super) fn poll_flush(&mut self, session: u32) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        if sio.queue.is_empty() || sio.waiting.is_none() {
            return;
        }
        self.poll_release(session);
    }

    /// Answer the held GET on connection (w, wgen) with `packets`.
    fn answer_held<'p>(&mut self, w: u32, wgen: u32, packets: impl Iterator<Item = &'p str>) {
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
        let gen = self.conns[slot as usize].gen;
        if self.conns[session as usize].gen != session_gen {
            return None;
        }
        let sio = self.sio_state(session)?;
        (sio.waiting == Some((slot, gen))).then_some(session)
    }

    /// A held GET reached the polling timeout: answer it with a noop.
    pub(super) fn poll_wait_timeout(&mut self, slot: u32) {
        match self.held_session(slot) {
            Some(session) => self.poll_release(session),
            None => {
                let gen = self.conns[slot as usize].gen;
                self.answer_held(slot, gen, std::iter::once("6"));
            }
        }
    }

    /// A held GET's connection is closing: its session no longer waits on it.
    pub(super) fn poll_wait_closed(&mut self, slot: u32) {
        if let Some(sio) = self
            .held_session(slot)
            .and_then(|session| self.sio_state(session))
        {
            sio.waiting = None;
        }
    }

    /// Answer a polling request with a payload of packets (JSONP-wrapped if asked).
    fn poll_answer<'p>(
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
    pub(super) fn answer_preflight(&mut self, slot: u32, origin: &str) {
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
    pub(super) fn keep_alive_next(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.flags &= !flag::KEEP_ALIVE;
        c.state = ConnState::Handshake {
            head: Vec::new(),
            reused: true,
        };
        ShardStats::inc(&self.shared.stats[self.id].handshakes);
        // Idle longer than a ping interval plus the ping timeout: a v3 client's next ping
        // POST reuses this connection instead of racing its close (it holds no buffer).
        let idle_ms =
            self.limits.ping_interval_secs * 1000 + self.policy.config.socketio.ping_timeout_ms;
        let at = self.wheel.now() + self.ticks(idle_ms);
        self.schedule(slot, at);
        self.arm_recv_handshake(slot);
    }

    /// The next deadline of a polling session: its v4 ping, its liveness, its expiry.
    pub(super) fn schedule_poll_session(&mut self, v: u32) {
        let now = self.wheel.now();
        let dead_after = self.ticks(
            self.limits.ping_interval_secs * 1000 + self.policy.config.socketio.ping_timeout_ms,
        );
        let c = &self.conns[v as usize];
        let ConnState::Polling { meta, .. } = &c.state else {
            return;
        };
        let Some(sio) = meta.sio.as_ref() else { return };
        if let Some(e) = sio.ending {
            self.schedule(v, e.until.max(now + 1));
            return;
        }
        let mut at = sio.last_seen + dead_after;
        if sio.eio == crate::protocol::engineio::EioVersion::V4 {
            at = at.min(sio.ping_at);
        }
        if let Some(a) = &meta.auth {
            let secs = a
                .expires_at
                .saturating_sub(crate::service::session::unix_now());
            at = at.min(now + secs * 1000 / super::timer::TICK_MS);
        }
        self.schedule(v, at.max(now + 1));
    }

    /// A polling session's timer: session expiry, dead client, v4 ping.
    pub(super) fn poll_session_timer(&mut self, v: u32) {
        let now = self.wheel.now();
        let interval = self.ticks(self.limits.ping_interval_secs * 1000);
        let dead_after = self.ticks(
            self.limits.ping_interval_secs * 1000 + self.policy.config.socketio.ping_timeout_ms,
        );
        let ConnState::Polling { meta, .. } = &mut self.conns[v as usize].state else {
            return;
        };
        if let Some(e) = meta.sio.as_ref().and_then(|s| s.ending) {
            // Ended, and its client did not come for its last packets.
            if now >= e.until {
                self.close_poll_session_with(v, Vec::new(), e.why);
            } else {
                self.schedule_poll_session(v);
            }
            return;
        }
        if meta
            .auth
            .is_some_and(|a| crate::service::session::unix_now() >= a.expires_at)
        {
            ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
            self.end_poll_session(v, CloseReason::SessionExpired);
            return;
        }
        let Some(sio) = meta.sio.as_mut() else { return };
        let upgraded = matches!(sio.ws, Some((_, _, true)));
        if !upgraded && sio.waiting.is_none() && now >= sio.last_seen + dead_after {
            ShardStats::inc(&self.shared.stats[self.id].closed_idle);
            self.close_poll_session(v);
            return;
        }
        if upgraded || sio.waiting.is_some() {
            // Alive through its WebSocket or its held request.
            sio.last_seen = now;
        }
        if sio.eio == crate::protocol::engineio::EioVersion::V4 && now >= sio.ping_at {
            sio.ping_at = now + interval;
            ShardStats::inc(&self.shared.stats[self.id].pings_sent);
            self.sio_send(v, "2");
        }
        self.schedule_poll_session(v);
    }

    /// End a polling session: close packet to a held GET, close its WebSocket, unregister.
    pub(super) fn close_poll_session(&mut self, v: u32) {
        self.close_poll_session_with(v, Vec::new(), CloseReason::Normal);
    }

    /// The session (login) of polling session `v` ended (`why`: terminated or expired): its client gets the Socket.IO DISCONNECTs of its namespaces, over its
    /// WebSocket (then the close frame), or as the answer to its held GET, else to its next
    /// GET (or over the WebSocket it is upgrading to). Engine.IO v4: the close packet comes
    /// with the GET after that (as socket.io does), since socket.io-client 4 handles a
    /// DISCONNECT a tick after the payload that carried it, after a close packet in the same
    /// payload ("transport close": it would reconnect); v3: in the same answer. Meanwhile,
    /// for a ping timeout at most, the session is no socket any more (not counted, not
    /// pushed to) and takes nothing from its client but its close packet (or an upgrade).
    pub(super) fn end_poll_session(&mut self, v: u32, why: CloseReason) {
        let ping_timeout = self.ticks(self.policy.config.socketio.ping_timeout_ms);
        let now = self.wheel.now();
        let Some(sio) = self.sio_state(v) else {
            self.close_poll_session(v);
            return;
        };
        if sio.ending.is_some() {
            return;
        }
        let farewell = sio.disconnect_packets();
        if matches!(sio.ws, Some((_, _, true))) {
            self.close_poll_session_with(v, farewell, why);
            return;
        }
        self.unregister(v);
        let stats = &self.shared.stats[self.id];
        ShardStats::dec(&stats.sockets);
        ShardStats::dec(&stats.polling_sessions);
        let Some(sio) = self.sio_state(v) else { return };
        let v3 = sio.eio == crate::protocol::engineio::EioVersion::V3;
        for p in farewell {
            sio.queue.push(p);
        }
        if v3 || sio.queue.is_empty() {
            // socket.io-client 2 handles a payload's packets in order: the close packet may
            // come with the DISCONNECTs. (With no namespace joined, it is all there is.)
            sio.queue.push("1".into());
        }
        sio.ending = Some(Ending {
            until: now + ping_timeout.max(1),
            why,
        });
        self.poll_release(v);
        self.schedule_poll_session(v);
    }

    /// An ended session's packets were answered (`sent`): after its DISCONNECTs, its close
    /// packet waits for the next GET; after the close packet, the session is gone.
    fn ending_step(&mut self, session: u32, sent: &[Box<str>]) {
        let Some(sio) = self.sio_state(session) else {
            return;
        };
        let Some(e) = sio.ending else { return };
        if sent.iter().any(|p| &**p == "1") {
            self.close_poll_session_with(session, Vec::new(), e.why);
        } else if !sio.queue.iter().any(|p| p == "1") {
            sio.queue.push("1".into());
        }
    }

    /// End a polling session: what is queued, then `farewell` and the close packet to a held
    /// GET (`farewell` before the close frame `why` on its upgraded WebSocket), close its
    /// WebSocket, unregister (unless it ended before), free the slot.
    pub(super) fn close_poll_session_with(
        &mut self,
        v: u32,
        farewell: Vec<Box<str>>,
        why: CloseReason,
    ) {
        let ConnState::Polling { meta, .. } = &mut self.conns[v as usize].state else {
            return;
        };
        let (ws, waiting, queued, ended) = match meta.sio.as_mut() {
            Some(sio) => (
                sio.ws.take(),
                sio.waiting.take(),
                sio.queue.take(),
                sio.ending.is_some(),
            ),
            None => (None, None, Vec::new(), false),
        };
        if let Some((w, wgen, upgraded)) = ws {
            if self.conns.get(w as usize).is_some_and(|c| c.gen == wgen) {
                if upgraded {
                    self.ws_send_final(w, &farewell);
                }
                self.close_with(w, why);
            }
        }
        if let Some((w, wgen)) = waiting {
            let packets = queued.iter().chain(farewell.iter()).map(|p| &**p);
            self.answer_held(w, wgen, packets.chain(std::iter::once("1")));
        }
        if !ended {
            self.unregister(v);
            let stats = &self.shared.stats[self.id];
            ShardStats::dec(&stats.sockets);
            ShardStats::dec(&stats.polling_sessions);
        }
        self.conns.release_virtual(v);
    }
}

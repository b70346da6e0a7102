//! One core's event loop: accept, handshake, frames, writes, timers, commands.
use super::admission::TokenBucket;
use super::bufring::BufRing;
use super::conn::{flag, Conn, ConnState, Handoff, SocketMeta, UpgradePlan};
use super::refusal::Refusal;
use super::stats::ShardStats;
use super::timer::{TimerWheel, TICK_MS};
use super::token::{self, Op};
use super::upgrade::{Decision, SessionCheck, UpgradePolicy};
use super::{sys, Shared};
use crate::config::{Config, EndpointKind, EngineConfig, Limits};
use crate::protocol::close::CloseReason;
use crate::protocol::deflate::SharedDeflate;
use crate::protocol::frame::OpCode;
use crate::protocol::handshake;
use crate::protocol::{Event, MessageKind, WsConnection, WsLimits};
use crate::service::placement::owner_core;
use crate::service::session::{unix_now, SessionId};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const BGID: u16 = 0;
/// How long a closing socket waits for the peer's EOF after our close frame / refusal.
const LINGER_MS: u64 = 2_000;
/// Commands taken from the inbox in one loop turn. A batch push command carries up to a whole
/// `/v1/push/batch` request, so 64 commands are plenty of work between two looks at the ring.
const INBOX_BATCH: usize = 64;
/// Output capacity kept by an idle socket; larger buffers are released after a flush.
const KEEP_CAPACITY: usize = 4096;
/// Capacity the per-core event scratch keeps between reads (one inflated burst can be large).
const SCRATCH_KEEP: usize = 64 * 1024;

/// Build a ring with a sparse fixed-file table of `slots` entries.
///
/// The ring is created disabled (it is built on the main thread so that every core knows every
/// ring fd before any starts) and enabled by its core thread with [`enable_ring`]: it is then
/// single-issuer with deferred task work (completions run only when that thread waits).
/// Kernels without those flags get a plain ring.
pub fn build_ring(cfg: &EngineConfig, slots: u32) -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_cqsize(cfg.ring_entries * 4)
        .setup_submit_all()
        .setup_r_disabled()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(cfg.ring_entries);
    let ring = match tuned {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cfg.ring_entries * 4)
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_r_disabled()
            .build(cfg.ring_entries)?,
        Err(e) => return Err(e),
    };
    ring.submitter().register_files_sparse(slots)?;
    Ok(ring)
}

/// Enable a ring built by [`build_ring`] on the thread that will drive it.
fn enable_ring(ring: &IoUring) -> io::Result<()> {
    ring.submitter().register_enable_rings()
}

pub struct Shard {
    // Field order matters: the ring is dropped before the buffer memory it uses.
    ring: IoUring,
    bufs: BufRing,
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) policy: Arc<UpgradePolicy>,
    /// Sockets of each (context, user) owned by this core.
    pub(super) users: HashMap<(u32, u32), Vec<u32>>,
    /// Terminated sessions (until their expiry): refused at upgrade.
    pub(super) revoked: HashMap<SessionId, u64>,
    pub(super) upgrade_bucket: TokenBucket,
    pub(super) listener: OwnedFd,
    wake: OwnedFd,
    wake_buf: Box<u64>,
    tick_spec: Box<types::Timespec>,
    pub(super) conns: Vec<Conn>,
    /// Slots in use (any state but Free).
    pub(super) in_use: usize,
    /// Above this many slots in use, new connections are answered 503.
    admission_limit: usize,
    pub(super) accept: super::accept::AcceptState,
    pub(super) wheel: TimerWheel,
    start_ms: u64,
    dirty: Vec<u32>,
    /// Sockets whose receive found every provided buffer taken: (slot, gen, in handshake).
    /// Re-armed at the end of the loop turn, once this turn's buffers are recycled, so a burst
    /// cannot spin on ENOBUFS.
    starved: std::collections::VecDeque<(u32, u32, bool)>,
    cqes: Vec<(u64, i32, u32)>,
    /// A received Socket.IO packet or listener text, copied out for its handler.
    scratch: Vec<u8>,
    pub(super) limits: Limits,
    pub(super) ws_limits: WsLimits,
    pub(super) endpoint_kinds: Vec<EndpointKind>,
    /// Descriptor-table size: polling sessions use virtual slots from here up.
    pub(super) table_slots: u32,
    pub(super) virtual_next: u32,
    pub(super) virtual_free: Vec<u32>,
    /// State of the sid tag generator.
    pub(super) rng: u64,
    /// Set when this core starts draining: the tick by which it ends, drained or not.
    pub(super) stop_deadline: Option<u64>,
    /// Graceful drain: sockets still to close, and the window's start and end ticks.
    pub(super) drain: super::drain::Drain,
    /// Presence and outbound queues for the other nodes (`[cluster]` only).
    pub(super) remote: Option<Box<super::remote::RemoteState>>,
    /// `[tls]`: plaintext of the receive being handled (kept between receives).
    tls_plain: Vec<u8>,
    /// permessage-deflate compressors and spare inflater lent to this core's sockets (those
    /// that agreed to no context takeover, the default), so an idle socket holds no zlib state.
    pub(super) zlib: SharedDeflate,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        ring: IoUring,
        listener: OwnedFd,
        wake: OwnedFd,
        shared: Arc<Shared>,
        policy: Arc<UpgradePolicy>,
        config: &Config,
        table_slots: u32,
    ) -> io::Result<Shard> {
        enable_ring(&ring)?;
        let bufs = BufRing::new(
            &ring.submitter(),
            config.engine.recv_buffers,
            config.engine.recv_buffer_bytes,
            BGID,
        )?;
        let admission_limit =
            (table_slots as usize).saturating_sub(config.engine.reserve_slots as usize);
        let upgrade_bucket =
            TokenBucket::per_core(config.limits.upgrade_rate_per_sec, shared.cores);
        let remote = shared.cluster.as_ref().map(|c| {
            let per_core = config
                .cluster
                .as_ref()
                .map_or(0, |c| c.max_presence_entries)
                / shared.cores.max(1);
            Box::new(super::remote::RemoteState::new(c.clone(), per_core))
        });
        Ok(Shard {
            ring,
            bufs,
            id,
            shared,
            upgrade_bucket,
            policy,
            users: HashMap::new(),
            revoked: HashMap::new(),
            listener,
            wake,
            wake_buf: Box::new(0),
            tick_spec: Box::new(types::Timespec::new().nsec((TICK_MS * 1_000_000) as u32)),
            conns: Vec::new(),
            in_use: 0,
            admission_limit,
            accept: super::accept::AcceptState::new(table_slots as usize, config.engine.backlog),
            wheel: TimerWheel::default(),
            start_ms: sys::monotonic_ms(),
            dirty: Vec::new(),
            starved: std::collections::VecDeque::new(),
            cqes: Vec::with_capacity(1024),
            scratch: Vec::new(),
            limits: config.limits,
            ws_limits: WsLimits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_message_bytes: config.limits.max_message_bytes,
            },
            endpoint_kinds: config.endpoints.iter().map(|e| e.kind).collect(),
            stop_deadline: None,
            drain: Default::default(),
            table_slots,
            virtual_next: 0,
            virtual_free: Vec::new(),
            remote,
            tls_plain: Vec::new(),
            zlib: SharedDeflate::new(),
            rng: {
                let mut seed = [0u8; 8];
                let _ = getrandom::getrandom(&mut seed);
                u64::from_le_bytes(seed) | 1
            },
        })
    }

    fn stats(&self) -> &ShardStats {
        &self.shared.stats[self.id]
    }

    /// Queue a submission; if the queue is full, submit what is queued first.
    pub(super) fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this module points only at memory that outlives the
            // operation: Box fields of Shard, a connection's `sending` buffer (not touched while
            // SEND_INFLIGHT) or the buffer ring (registered for the ring's lifetime).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::error!(core = self.id, "io_uring submit failed: {e}");
            }
        }
    }

    pub(super) fn ticks(&self, ms: u64) -> u64 {
        ms.div_ceil(TICK_MS).max(1)
    }

    fn now_tick(&self) -> u64 {
        (sys::monotonic_ms() - self.start_ms) / TICK_MS
    }

    pub fn run(&mut self) {
        self.arm_accept();
        self.arm_wake();
        let tick = opcode::Timeout::new(&*self.tick_spec as *const _)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(token::plain(Op::Tick));
        self.push(tick);
        tracing::debug!(
            core = self.id,
            slots = self.admission_limit,
            "shard running"
        );
        loop {
            self.rearm_starved();
            self.flush_dirty();
            self.remote_flush();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // A core that cannot drive its ring would strand its users' sockets and
                    // every command queued to it: stop the process (the supervisor restarts it).
                    tracing::error!(core = self.id, "io_uring_enter failed: {e}; exiting");
                    std::process::exit(70);
                }
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &cqes {
                self.dispatch(ud, res, flags);
            }
            cqes.clear();
            self.cqes = cqes;
            if self
                .stop_deadline
                .is_some_and(|d| self.drained() || self.wheel.now() >= d)
            {
                break;
            }
        }
        tracing::debug!(core = self.id, "shard stopped");
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(t) = token::decode(ud) else { return };
        match t.op {
            Op::Accept => self.on_accept(res, flags),
            Op::AcceptOverflow => self.on_accept_overflow(res),
            Op::OverflowSend => {
                let close = opcode::Close::new(types::Fd(t.slot as i32))
                    .build()
                    .user_data(token::plain(Op::OverflowClose));
                self.push(close);
            }
            Op::OverflowClose | Op::CancelAccept => {}
            Op::Tick => self.on_tick(flags),
            Op::Wake => self.on_wake(),
            Op::HandoffIn => self.on_handoff_in(t.ptr, res),
            _ => {
                let slot = t.slot as usize;
                if slot >= self.conns.len()
                    || self.conns[slot].gen != t.gen
                    || self.conns[slot].is_free()
                {
                    return;
                }
                match t.op {
                    Op::RecvHandshake => self.on_recv_handshake(t.slot, res, flags),
                    Op::Recv => self.on_recv(t.slot, res, flags),
                    Op::Send => self.on_send(t.slot, res),
                    Op::Close => self.on_closed(t.slot),
                    Op::HandoffSent => self.on_handoff_sent(t.slot, res),
                    Op::Shutdown | Op::Cancel => self.conns[slot].inflight -= 1,
                    _ => {}
                }
                self.maybe_release(t.slot);
            }
        }
    }

    /// The node is draining (or stopped): no new connection, no keep-alive.
    pub(super) fn stopping(&self) -> bool {
        self.shared.lifecycle.is_stopping()
    }

    /// More slots in use than the admission limit: the newest connection is answered 503
    /// from the reserve.
    pub(super) fn over_admission_limit(&self) -> bool {
        let node_max = self.limits.max_connections;
        self.in_use > self.admission_limit
            || (node_max > 0 && self.shared.open_connections() > node_max as u64)
    }

    fn ensure_slot(&mut self, slot: u32) {
        let slot = slot as usize;
        if slot >= self.conns.len() {
            // Vec growth is amortised; only slots up to the highest in use are touched (RSS).
            let new_len = slot + 1;
            self.conns.resize_with(new_len, Conn::free);
        }
    }

    /// Take slot `slot` for a new connection (fresh generation, counters reset).
    pub(super) fn take_slot(&mut self, slot: u32, state: ConnState) {
        self.ensure_slot(slot);
        let now = self.wheel.now();
        let c = &mut self.conns[slot as usize];
        debug_assert!(c.is_free());
        c.gen = token::next_gen(c.gen);
        c.flags = 0;
        c.inflight = 0;
        c.sent = 0;
        c.tls = None;
        c.last_rx = now as u32;
        c.state = state;
        self.in_use += 1;
    }

    pub(super) fn on_new_conn(&mut self, slot: u32) {
        ShardStats::inc(&self.stats().accepted);
        // The node-wide count follows the connection, not the slot: counted once here, once
        // down when it finally closes, never on a move between cores (a moved connection
        // counted on both cores for a moment refused the last one under the limit).
        ShardStats::inc(&self.stats().connections_opened);
        self.take_slot(
            slot,
            ConnState::Handshake {
                head: Vec::new(),
                reused: false,
            },
        );
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
        if self.stopping() {
            self.refuse(slot, Refusal::ShuttingDown);
            return;
        }
        if self.over_admission_limit() {
            self.refuse(slot, Refusal::ServerFull);
            return;
        }
        let at = self.wheel.now() + self.ticks(self.limits.handshake_timeout_ms);
        self.schedule(slot, at);
        self.arm_recv_handshake(slot);
    }

    pub(super) fn schedule(&mut self, slot: u32, at: u64) {
        let gen = self.conns[slot as usize].gen;
        self.conns[slot as usize].timer_at = self.wheel.insert(at, slot, gen);
    }

    /// A single-shot receive of request bytes (also armed on a held polling GET, to notice
    /// the client going away).
    pub(super) fn arm_recv_handshake(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.has(flag::RECV_ARMED) {
            return;
        }
        c.flags |= flag::RECV_ARMED;
        c.inflight += 1;
        let e = opcode::Recv::new(
            types::Fixed(slot),
            std::ptr::null_mut(),
            self.bufs.buf_size(),
        )
        .buf_group(BGID)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(token::conn(Op::RecvHandshake, slot, c.gen));
        self.push(e);
    }

    fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.has(flag::RECV_ARMED)
            || c.has(flag::CLOSE_SUBMITTED)
            || !matches!(c.state, ConnState::Open { .. } | ConnState::Responding)
            || c.has(flag::KEEP_ALIVE)
        {
            return;
        }
        c.inflight += 1;
        c.flags |= flag::RECV_ARMED;
        let e = opcode::RecvMulti::new(types::Fixed(slot), BGID)
            .build()
            .user_data(token::conn(Op::Recv, slot, c.gen));
        self.push(e);
    }

    // ----- handshake -----

    fn on_recv_handshake(&mut self, slot: u32, res: i32, flags: u32) {
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
                self.bufs.recycle(bid);
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
        // The first bytes of a follow-up request on a keep-alive connection: until now the
        // connection was idle (bounded by the keep-alive timer); from here its request head
        // gets the same deadline as a new connection's.
        let mut follow_up_started = false;
        let decision = {
            let data = match &plain {
                Some(p) => &p[..],
                None => self.bufs.get(bid, res as usize),
            };
            let ConnState::Handshake { head, reused } = &mut self.conns[slot as usize].state else {
                unreachable!()
            };
            if *reused && head.is_empty() {
                *reused = false;
                follow_up_started = true;
            }
            let check = SessionCheck {
                key: &self.shared.session_key,
                now: unix_now(),
                revoked: &self.revoked,
            };
            if head.is_empty() {
                let d = self.policy.decide(data, &check);
                if matches!(d, Decision::NeedMore) {
                    head.extend_from_slice(data);
                }
                d
            } else {
                // Bounded: at most the largest request (head and polling body) plus one
                // receive buffer.
                if head.len() <= self.policy.max_request_bytes {
                    head.extend_from_slice(data);
                }
                self.policy.decide(head, &check)
            }
        };
        if plain.is_none() {
            self.bufs.recycle(bid);
        }
        if let Some(p) = plain {
            self.give_back_plain(p);
        }
        match decision {
            Decision::NeedMore => {
                if follow_up_started {
                    let at = self.wheel.now() + self.ticks(self.limits.handshake_timeout_ms);
                    self.schedule(slot, at);
                }
                self.arm_recv_handshake(slot)
            }
            Decision::Refuse(r) => self.refuse(slot, r),
            Decision::Preflight(origin) => self.answer_preflight(slot, &origin),
            Decision::Poll(plan) => {
                // A new Engine.IO session counts against the upgrade rate like an upgrade
                // (its later requests do not).
                if plan.sid.is_none() {
                    if let Err(retry_after_secs) = self.upgrade_bucket.take(sys::monotonic_ms()) {
                        self.refuse(slot, Refusal::RateLimit { retry_after_secs });
                        return;
                    }
                }
                ShardStats::dec(&self.stats().handshakes);
                let owner = owner_core(plan.shard_key, self.shared.cores);
                self.conns[slot as usize].state = ConnState::Responding;
                if owner == self.id {
                    self.serve_poll(slot, plan);
                } else {
                    self.handoff(slot, owner, Handoff::Poll(plan));
                }
            }
            Decision::Upgrade(plan) => {
                if let Err(retry_after_secs) = self.upgrade_bucket.take(sys::monotonic_ms()) {
                    self.refuse(slot, Refusal::RateLimit { retry_after_secs });
                    return;
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
        }
    }

    /// Answer a plain HTTP status with a one-line reason and close; counted by status and reason.
    pub(super) fn refuse(&mut self, slot: u32, r: Refusal) {
        self.stats().refused_for(&r);
        let c = &mut self.conns[slot as usize];
        if matches!(c.state, ConnState::Handshake { .. }) {
            ShardStats::dec(&self.shared.stats[self.id].handshakes);
        }
        c.state = ConnState::Responding;
        c.flags &= !flag::KEEP_ALIVE;
        // A refusal with a Retry-After has no other extra header.
        let secs = r.retry_after_secs().map(|s| s.to_string());
        let retry_after;
        let headers = match &secs {
            Some(s) => {
                retry_after = [("Retry-After", s.as_str())];
                &retry_after[..]
            }
            None => r.headers(),
        };
        handshake::write_http_response(&mut c.out, r.status(), headers, r.reason());
        self.close_after_flush(slot);
    }

    /// Open the WebSocket on this core: 101, register, read frames.
    pub(super) fn open_socket(&mut self, slot: u32, mut plan: Box<UpgradePlan>) {
        let deflate = plan.deflate.as_ref().map(|(p, _)| *p);
        let mut ws = WsConnection::new(self.ws_limits, deflate);
        ws.set_min_compress_bytes(self.policy.deflate.min_compress_bytes);
        // Socket.IO: a new session, or the WebSocket upgrading a polling session (`sid`).
        let mut transport_of = None;
        if let Some(up) = &plan.sio {
            if let Some(sid) = &up.sid {
                let session = plan.auth.map(|a| a.session);
                let found = session.and_then(|s| self.find_sid(sid, s));
                let gen = self.conns[slot as usize].gen;
                match found.and_then(|v| self.sio_state(v).map(|s| (v, s))) {
                    Some((v, sio)) if sio.ws.is_none() && sio.eio == up.eio => {
                        sio.ws = Some((slot, gen, false));
                        transport_of = Some(v);
                    }
                    Some(_) => {
                        self.refuse(slot, Refusal::EioBadRequest);
                        return;
                    }
                    None => {
                        self.refuse(slot, Refusal::EioSessionUnknown);
                        return;
                    }
                }
            }
        }
        if let (Some(auth), None) = (&plan.auth, transport_of) {
            if self.user_socket_count(auth.context, auth.user) >= self.limits.max_sockets_per_user {
                self.refuse(slot, Refusal::UserLimit);
                return;
            }
        }
        let sio = match (&plan.sio, transport_of) {
            (None, _) => None,
            (Some(up), None) => Some(self.new_sio_state(up.eio, slot)),
            (Some(up), Some(v)) => {
                let mut s = self.new_sio_state(up.eio, slot);
                s.transport_of = Some((v, self.conns[v as usize].gen));
                Some(s)
            }
        };
        let now = self.wheel.now();
        let c = &mut self.conns[slot as usize];
        handshake::write_switching_protocols(
            &mut c.out,
            &plan.ws_key,
            plan.deflate.as_ref().map(|(_, h)| h.as_str()),
        );
        let meta = Box::new(SocketMeta {
            auth: plan.auth,
            path: std::mem::take(&mut plan.path),
            query: std::mem::take(&mut plan.query),
            attrs: Vec::new(),
            sio,
        });
        c.state = ConnState::Open {
            ws,
            endpoint: plan.endpoint,
            meta,
        };
        c.last_rx = now as u32;
        self.register(slot);
        ShardStats::inc(&self.shared.stats[self.id].upgrades);
        if transport_of.is_none() {
            ShardStats::inc(&self.shared.stats[self.id].sockets);
        }
        self.sio_greet(slot);
        self.mark_dirty(slot);
        self.conns[slot as usize].ping_at = now + self.ticks(self.limits.ping_interval_secs * 1000);
        self.schedule_open(slot);
        if !plan.leftover.is_empty() {
            let mut early = std::mem::take(&mut plan.leftover);
            self.on_frames(slot, &mut early);
        }
        self.arm_recv(slot);
    }

    fn starve(&mut self, slot: u32, handshake: bool) {
        ShardStats::inc(&self.shared.stats[self.id].recv_no_buffers);
        self.starved
            .push_back((slot, self.conns[slot as usize].gen, handshake));
    }

    fn rearm_starved(&mut self) {
        // Half the buffers: leave room for sockets whose multishot receive is still armed.
        let budget = self
            .starved
            .len()
            .min(self.policy.config.engine.recv_buffers as usize / 2);
        for _ in 0..budget {
            let Some((slot, gen, handshake)) = self.starved.pop_front() else {
                break;
            };
            let c = &self.conns[slot as usize];
            if c.gen != gen || c.has(flag::CLOSE_SUBMITTED) {
                continue;
            }
            match (&c.state, handshake) {
                (ConnState::Handshake { .. } | ConnState::PollWait { .. }, true) => {
                    self.arm_recv_handshake(slot)
                }
                (ConnState::Open { .. } | ConnState::Responding, false) => self.arm_recv(slot),
                _ => {}
            }
        }
    }

    // ----- TLS -----

    /// Decrypt a received buffer (recycled here) into a per-core plaintext buffer; handshake
    /// bytes rustls wants to answer are flushed at the end of the turn. `None`: the connection
    /// is closing (bad TLS, or the peer said close_notify).
    fn decrypt(&mut self, slot: u32, bid: u16, len: usize) -> Option<Vec<u8>> {
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let c = &mut self.conns[slot as usize];
        let tls = c.tls.as_deref_mut()?;
        let result = super::tls::receive(tls, self.bufs.get(bid, len), &mut plain);
        let wants_write = tls.wants_write();
        self.bufs.recycle(bid);
        match result {
            Ok(()) => {
                if wants_write {
                    self.mark_dirty(slot);
                }
                Some(plain)
            }
            Err(e) => {
                if let super::tls::TlsInputError::Protocol(e) = &e {
                    tracing::debug!(core = self.id, slot, "TLS: {e}");
                    ShardStats::inc(&self.stats().tls_errors);
                }
                self.give_back_plain(plain);
                self.begin_close(slot);
                None
            }
        }
    }

    fn give_back_plain(&mut self, mut p: Vec<u8>) {
        if p.capacity() > SCRATCH_KEEP {
            p = Vec::new();
        }
        self.tls_plain = p;
    }

    // ----- frames -----

    fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            let c = &mut self.conns[slot as usize];
            c.inflight -= 1;
            c.flags &= !flag::RECV_ARMED;
        }
        if res > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                return;
            };
            ShardStats::add(&self.shared.stats[self.id].bytes_in, res as u64);
            self.conns[slot as usize].last_rx = self.wheel.now() as u32;
            let c = &self.conns[slot as usize];
            if c.tls.is_some() {
                // TLS: decrypted into a per-core buffer, then the same frame path.
                if let Some(mut p) = self.decrypt(slot, bid, res as usize) {
                    let c = &self.conns[slot as usize];
                    if !p.is_empty()
                        && matches!(c.state, ConnState::Open { .. })
                        && !c.has(flag::LINGER)
                        && !c.has(flag::CLOSE_AFTER_FLUSH)
                    {
                        self.on_frames(slot, &mut p);
                    }
                    self.give_back_plain(p);
                    if !more {
                        self.arm_recv(slot);
                    }
                }
                return;
            }
            if matches!(c.state, ConnState::Open { .. })
                && !c.has(flag::LINGER)
                && !c.has(flag::CLOSE_AFTER_FLUSH)
            {
                // Copy-free path: frames are decoded and unmasked in the provided buffer; the
                // buffer is temporarily detached from `self.bufs` by pointer to satisfy borrows.
                let data: *mut [u8] = self.bufs.get(bid, res as usize);
                // SAFETY: the buffer is ours until `recycle(bid)` below and nothing else touches
                // the buffer ring's memory for this bid in between.
                self.on_frames(slot, unsafe { &mut *data });
            }
            self.bufs.recycle(bid);
            if !more {
                self.arm_recv(slot);
            }
        } else if res == -libc::ENOBUFS {
            self.starve(slot, false);
        } else {
            // EOF or error: the peer is gone (or finished its side of the close).
            self.begin_close(slot);
        }
    }

    /// Feed received bytes to the connection's protocol state machine and act on its events,
    /// in one pass: an echo is encoded straight from the received bytes, a Socket.IO packet or
    /// a text for the listeners is copied out for its handler (which needs the whole shard),
    /// and the frames the connection owes (Pong, close echo, the close of a protocol error)
    /// follow their event, ahead of what comes after.
    fn on_frames(&mut self, slot: u32, data: &mut [u8]) {
        let c = &self.conns[slot as usize];
        let queued_before = c.queued_bytes();
        let ConnState::Open { endpoint, .. } = &c.state else {
            return;
        };
        let endpoint_index = *endpoint as usize;
        let kind = self.endpoint_kinds[endpoint_index];
        // Received text goes to the listeners through the endpoint's transcoder (the socket is
        // still registered even when closing: its close notification comes after).
        let listened = kind != EndpointKind::Socketio
            && !self.shared.listeners.is_empty()
            && self.shared.transcoders[endpoint_index].is_some();
        let mut closing = false;
        let mut messages = 0u64;
        let mut echoed = 0u64;
        let mut pos = 0usize;
        loop {
            let c = &mut self.conns[slot as usize];
            let ConnState::Open { ws, .. } = &mut c.state else {
                break;
            };
            let mut rx = ws.read(&mut data[pos..], &mut self.zlib);
            // A payload copied to `scratch` for a handler: whether it is binary.
            let mut handoff = None;
            while let Some(next) = rx.next_event_with_sender() {
                match next {
                    Ok((Event::Message(k, payload), mut tx)) => {
                        if kind != EndpointKind::Socketio {
                            messages += 1;
                        }
                        if kind == EndpointKind::Echo {
                            tx.encode_message(&mut c.out, k, payload);
                            echoed += 1;
                        }
                        if kind == EndpointKind::Socketio || (listened && k == MessageKind::Text) {
                            self.scratch.clear();
                            self.scratch.extend_from_slice(payload);
                            handoff = Some(k == MessageKind::Binary);
                        }
                    }
                    Ok((Event::Close { .. }, _)) => closing = true,
                    // A Ping's Pong is owed (written below); a Pong needs nothing.
                    Ok(_) => {}
                    Err(err) => {
                        ShardStats::inc(&self.shared.stats[self.id].protocol_errors);
                        tracing::debug!(core = self.id, slot, "protocol error: {err:?} ({err})");
                        closing = true;
                    }
                }
                // What the connection owes goes right after its event: the replies to the
                // messages before an error stay ahead of the close frame.
                rx.poll_transmit(&mut c.out);
                if handoff.is_some() {
                    break;
                }
            }
            pos += rx.consumed();
            drop(rx);
            let Some(binary) = handoff else {
                break;
            };
            let mut scratch = std::mem::take(&mut self.scratch);
            if kind == EndpointKind::Socketio {
                // Socket.IO frames are Engine.IO packets.
                self.sio_ws_frame(slot, binary, &scratch);
            } else if let Some(transcoder) = self.shared.transcoders[endpoint_index].as_ref() {
                // Validated UTF-8 by the protocol core.
                let text = std::str::from_utf8(&scratch).unwrap_or("");
                if let Some(text) = transcoder.inbound(text) {
                    self.notify(slot, |l, info| l.on_message(info, &text));
                }
            }
            scratch.clear();
            scratch.shrink_to(SCRATCH_KEEP);
            self.scratch = scratch;
            // The handler may have closed the socket: nothing more is read then.
            let c = &self.conns[slot as usize];
            if c.has(flag::CLOSE_AFTER_FLUSH) || !matches!(c.state, ConnState::Open { .. }) {
                break;
            }
        }
        let stats = &self.shared.stats[self.id];
        ShardStats::add(&stats.messages_in, messages);
        ShardStats::add(&stats.messages_out, echoed);
        let c = &self.conns[slot as usize];
        if closing {
            self.close_after_flush(slot);
        } else if c.has(flag::CLOSE_AFTER_FLUSH) || !matches!(c.state, ConnState::Open { .. }) {
            // A Socket.IO handler closed it.
        } else if c.over_outbound_limit(queued_before, self.limits.max_outbound_bytes) {
            self.close_slow_consumer(slot);
        } else {
            self.mark_dirty(slot);
        }
    }

    /// A socket whose queue exceeds the outbound limit: drop what is queued, try a 1013 close,
    /// and give it the linger time to go away.
    pub(super) fn close_slow_consumer(&mut self, slot: u32) {
        ShardStats::inc(&self.stats().closed_slow_consumer);
        let c = &mut self.conns[slot as usize];
        c.out.clear();
        c.out.shrink_to(KEEP_CAPACITY);
        let why = CloseReason::SlowConsumer;
        WsConnection::encode_close(&mut c.out, why.code(), why.reason());
        self.close_after_flush(slot);
    }

    /// Every close the server starts ends here: what `out` holds (a close frame, an HTTP
    /// answer) is written, then the connection closes; the linger timer bounds the wait for
    /// a peer that does not read.
    pub(super) fn close_after_flush(&mut self, slot: u32) {
        self.conns[slot as usize].flags |= flag::CLOSE_AFTER_FLUSH;
        self.flush_within_linger(slot);
    }

    /// Write what `out` holds at the end of this turn, and give it the linger time.
    pub(super) fn flush_within_linger(&mut self, slot: u32) {
        self.mark_dirty(slot);
        let at = self.wheel.now() + self.ticks(LINGER_MS);
        self.schedule(slot, at);
    }

    pub(super) fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.has(flag::DIRTY) {
            c.flags |= flag::DIRTY;
            self.dirty.push(slot);
        }
    }

    /// End of a loop turn: one send per socket with queued bytes.
    fn flush_dirty(&mut self) {
        // Flushing a polling session answers a held request on another connection, which
        // becomes dirty in turn: repeat until nothing new is dirty.
        let mut dirty = std::mem::take(&mut self.dirty);
        while !dirty.is_empty() {
            for &slot in &dirty {
                self.conns[slot as usize].flags &= !flag::DIRTY;
                self.flush(slot);
                self.maybe_release(slot);
            }
            dirty.clear();
            std::mem::swap(&mut dirty, &mut self.dirty);
        }
        self.dirty = dirty;
    }

    fn flush(&mut self, slot: u32) {
        if matches!(self.conns[slot as usize].state, ConnState::Polling { .. }) {
            self.poll_flush(slot);
            return;
        }
        let c = &mut self.conns[slot as usize];
        if c.is_free() || c.has(flag::SEND_INFLIGHT) || c.has(flag::CLOSE_SUBMITTED) {
            return;
        }
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        if c.tls.is_some() {
            if c.seal() {
                self.submit_send(slot);
            } else if c.has(flag::CLOSE_AFTER_FLUSH) && !c.has(flag::LINGER) {
                self.start_linger(slot);
            }
        } else if !c.out.is_empty() {
            std::mem::swap(&mut c.out, &mut c.sending);
            c.sent = 0;
            self.submit_send(slot);
        } else if c.has(flag::CLOSE_AFTER_FLUSH) && !c.has(flag::LINGER) {
            self.start_linger(slot);
        }
    }

    fn submit_send(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let rest = &c.sending[c.sent as usize..];
        c.flags |= flag::SEND_INFLIGHT;
        c.inflight += 1;
        let e = opcode::Send::new(types::Fixed(slot), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token::conn(Op::Send, slot, c.gen));
        self.push(e);
    }

    fn on_send(&mut self, slot: u32, res: i32) {
        let c = &mut self.conns[slot as usize];
        c.inflight -= 1;
        c.flags &= !flag::SEND_INFLIGHT;
        if res < 0 {
            c.sending.clear();
            c.sent = 0;
            c.out.clear();
            self.begin_close(slot);
            return;
        }
        ShardStats::add(&self.shared.stats[self.id].bytes_out, res as u64);
        c.sent += res as u32;
        if (c.sent as usize) < c.sending.len() && !matches!(c.state, ConnState::Closing) {
            self.submit_send(slot);
            return;
        }
        // An idle socket holds no write buffer (the allocator's thread cache makes the next
        // allocation cheap).
        c.sending = Vec::new();
        c.sent = 0;
        if !c.out.is_empty() || c.has(flag::CLOSE_AFTER_FLUSH) {
            self.mark_dirty(slot);
        } else if c.has(flag::KEEP_ALIVE) && matches!(c.state, ConnState::Responding) {
            self.keep_alive_next(slot);
        }
    }

    // ----- closing -----

    /// Our close frame or refusal is written: shut our side and wait briefly for the peer's EOF,
    /// so that it reads everything we sent (closing with unread input would send RST).
    fn start_linger(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.flags |= flag::LINGER;
        c.inflight += 1;
        let e = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
            .build()
            .user_data(token::conn(Op::Shutdown, slot, c.gen));
        self.push(e);
        let at = self.wheel.now() + self.ticks(LINGER_MS);
        self.schedule(slot, at);
        self.arm_recv(slot);
    }

    /// Close now: cancel what is in flight, then release the descriptor.
    pub(super) fn begin_close(&mut self, slot: u32) {
        match self.conns[slot as usize].state {
            ConnState::Closing | ConnState::Free => return,
            ConnState::Open { .. } => {
                if self.conns[slot as usize].socket().is_some() {
                    ShardStats::dec(&self.shared.stats[self.id].sockets);
                }
                self.sio_transport_closed(slot);
                self.unregister(slot);
            }
            // A virtual slot: no descriptor to close.
            ConnState::Polling { .. } => {
                self.close_poll_session(slot);
                return;
            }
            ConnState::PollWait { .. } => self.poll_wait_closed(slot),
            ConnState::Handshake { .. } => ShardStats::dec(&self.shared.stats[self.id].handshakes),
            ConnState::Moving { .. } => return, // finished by the MSG_RING completion
            ConnState::Responding => {}
        }
        let c = &mut self.conns[slot as usize];
        c.state = ConnState::Closing;
        c.out = Vec::new();
        // Cancel the receive and the send in flight by their user_data, which the kernel finds
        // in a hash. Cancelling by descriptor walks every request in flight on the ring: with
        // 17,000 sockets per core, the 4,096 cancels of one submission took seconds in a
        // reconnect storm, the loop stalled and handshakes waiting behind it timed out (408).
        // A shutdown or MSG_RING in flight completes by itself.
        let (gen, recv, send) = (c.gen, c.has(flag::RECV_ARMED), c.has(flag::SEND_INFLIGHT));
        // Which receive is armed depends on the state it was armed in: try both (the other
        // answers ENOENT).
        let targets = [
            (recv, Op::Recv),
            (recv, Op::RecvHandshake),
            (send, Op::Send),
        ];
        for (armed, op) in targets {
            if armed {
                self.conns[slot as usize].inflight += 1;
                let cancel = opcode::AsyncCancel::new(token::conn(op, slot, gen))
                    .build()
                    .user_data(token::conn(Op::Cancel, slot, gen));
                self.push(cancel);
            }
        }
    }

    /// Once a closing slot has nothing in flight, close the descriptor; once that completes,
    /// free the slot.
    pub(super) fn maybe_release(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.state, ConnState::Closing) || c.inflight > 0 || c.has(flag::CLOSE_SUBMITTED)
        {
            return;
        }
        c.flags |= flag::CLOSE_SUBMITTED;
        c.inflight += 1;
        let e = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(token::conn(Op::Close, slot, c.gen));
        self.push(e);
    }

    fn on_closed(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.inflight -= 1;
        if !c.has(flag::MOVED) {
            ShardStats::inc(&self.shared.stats[self.id].connections_closed);
        }
        c.state = ConnState::Free;
        c.flags = 0;
        c.sending = Vec::new();
        c.out = Vec::new();
        c.tls = None;
        self.in_use -= 1;
        self.arm_accept();
    }

    // ----- timers -----

    fn on_tick(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            let tick = opcode::Timeout::new(&*self.tick_spec as *const _)
                .flags(types::TimeoutFlags::MULTISHOT)
                .build()
                .user_data(token::plain(Op::Tick));
            self.push(tick);
        }
        let to = self.now_tick();
        if self.stop_deadline.is_some() {
            self.drain_tick(to);
        }
        if to / 600 != self.wheel.now() / 600 {
            self.forget_expired_revocations();
        }
        self.remote_tick();
        let mut due = Vec::new();
        self.wheel
            .advance(to, |_, slot, gen, tick| due.push((slot, gen, tick)));
        for (slot, gen, tick) in due {
            let Some(c) = self.conns.get(slot as usize) else {
                continue;
            };
            if c.gen != gen || c.timer_at != tick || c.is_free() {
                continue;
            }
            self.on_timer(slot);
            self.maybe_release(slot);
        }
        self.arm_accept();
    }

    fn on_timer(&mut self, slot: u32) {
        let now = self.wheel.now();
        let ping_ticks = self.ticks(self.limits.ping_interval_secs * 1000);
        let c = &mut self.conns[slot as usize];
        match &c.state {
            // An idle keep-alive connection between two requests is just closed.
            ConnState::Handshake { reused: true, .. } => self.begin_close(slot),
            ConnState::Handshake { .. } => self.refuse(slot, Refusal::HandshakeTimeout),
            ConnState::Polling { .. } => self.poll_session_timer(slot),
            ConnState::PollWait { .. } => self.poll_wait_timeout(slot),
            ConnState::Open { .. } if c.has(flag::LINGER) || c.has(flag::CLOSE_AFTER_FLUSH) => {
                self.begin_close(slot)
            }
            ConnState::Open { meta, .. } => {
                if meta.auth.is_some_and(|a| unix_now() >= a.expires_at) {
                    ShardStats::inc(&self.shared.stats[self.id].closed_session_ended);
                    self.end_session(slot, CloseReason::SessionExpired);
                    return;
                }
                if now >= c.ping_at {
                    let idle_ticks = self.limits.idle_timeout_secs * 1000 / TICK_MS;
                    if now.saturating_sub(c.last_rx as u64) >= idle_ticks {
                        ShardStats::inc(&self.shared.stats[self.id].closed_idle);
                        self.close_with(slot, CloseReason::IdleTimeout);
                        return;
                    }
                    ShardStats::inc(&self.shared.stats[self.id].pings_sent);
                    c.ping_at = now + ping_ticks;
                    if !self.sio_ping(slot) {
                        let c = &mut self.conns[slot as usize];
                        WsConnection::encode_control(&mut c.out, OpCode::Ping, b"");
                        self.mark_dirty(slot);
                    }
                }
                self.schedule_open(slot);
            }
            ConnState::Responding => self.begin_close(slot),
            _ => {}
        }
    }

    /// An open socket's next deadline: its next ping or its session's expiry.
    pub(super) fn schedule_open(&mut self, slot: u32) {
        let now = self.wheel.now();
        let c = &self.conns[slot as usize];
        let ConnState::Open { meta, .. } = &c.state else {
            return;
        };
        let mut at = c.ping_at;
        if let Some(a) = &meta.auth {
            let secs = a.expires_at.saturating_sub(unix_now());
            at = at.min(now + secs * 1000 / TICK_MS);
        }
        self.schedule(slot, at.max(now + 1));
    }

    // ----- control plane -----

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            &mut *self.wake_buf as *mut u64 as *mut u8,
            8,
        )
        .build()
        .user_data(token::plain(Op::Wake));
        self.push(e);
    }

    /// Commands from the control plane and the link, at most [`INBOX_BATCH`] a loop turn:
    /// a burst of pushes cannot starve the sockets' completions. What is left rings the
    /// core's own doorbell, so the next turn takes the next batch.
    fn on_wake(&mut self) {
        for _ in 0..INBOX_BATCH {
            let Some(cmd) = self.shared.inboxes[self.id].pop() else {
                break;
            };
            self.on_command(cmd);
        }
        if !self.shared.inboxes[self.id].is_empty() {
            self.shared.wake(self.id);
        }
        self.arm_wake();
    }
}

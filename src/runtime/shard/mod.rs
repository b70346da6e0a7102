//! One core's event loop. The shard owns the loop and the dispatch of completions; the state
//! lives in parts that own it and are passed explicitly: the ring ([`Ring`]), the connection
//! slots ([`Slots`]), the outbox ([`Outbox`]), the user index ([`UserIndex`]), the timers
//! ([`Timers`]), the accept ([`AcceptState`]), the drain ([`Drain`]) and the cluster queues
//! ([`RemoteState`]). The files of this folder are the handlers of one kind of event each:
//! `handshake` (a request until its decision), `frames` (bytes of an open connection),
//! `writes` (flushes and closes), `ticks` (deadlines), `commands` (the inbox), `users`
//! (register, deliver, revoke), `accept`, `handoff`, `drain`, `cluster`, `refusals` (a
//! refusal's answer and its rate-limited log line), and the drivers of
//! Engine.IO sessions (`socketio`, `polling`: they feed `service::engineio::Session` and
//! carry out its actions).
mod accept;
mod catchup;
mod cluster;
mod commands;
mod drain;
mod frames;
mod handoff;
mod handshake;
mod history;
mod order;
mod polling;
mod proxy;
mod refusals;
mod sio_recovery;
mod socketio;
mod ticks;
mod users;
mod writes;

use super::accept::AcceptState;
use super::admission::TokenBucket;
use super::drain::Drain;
use super::history::CoreHistory;
use super::outbox::Outbox;
use super::remote::RemoteState;
use super::ring::Ring;
use super::slots::Slots;
use super::stats::ShardStats;
use super::timer::Timers;
use super::token::{self, Op};
use super::{clock, sys, Shared};
use crate::config::{Config, EndpointKind, Limits};
use crate::protocol::deflate::SharedDeflate;
use crate::protocol::{FrameOnce, WsLimits};
use crate::service::upgrade::UpgradePolicy;
use io_uring::IoUring;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// How long a closing socket waits for the peer's EOF after our close frame / refusal.
const LINGER_MS: u64 = 2_000;
/// Capacity the per-core event scratch keeps between reads (one inflated burst can be large).
const SCRATCH_KEEP: usize = 64 * 1024;

pub struct Shard {
    ring: Ring,
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) policy: Arc<UpgradePolicy>,
    /// `[jwt] jwks_url`: the key set last fetched (None until the first good fetch).
    pub(super) jwks: Option<Arc<crate::service::jwks::JwkKeys>>,
    /// Connection slots (descriptor and virtual), indexed by slot.
    pub(super) conns: Slots,
    outbox: Outbox,
    /// Sockets of each (context, user) owned by this core, and terminated sessions.
    pub(super) users: UserIndex,
    /// The core's clock (ticks) and connection deadlines.
    pub(super) timers: Timers,
    accept: AcceptState,
    /// Graceful drain: when it started, what is left to close, the deadline.
    pub(super) drain: Drain,
    /// Presence and outbound queues for the other nodes (`[cluster]` only).
    pub(super) remote: Option<Box<RemoteState>>,
    /// Push history of the users this core owns (`[history]` on some endpoint only).
    pub(super) history: Option<Box<CoreHistory>>,
    /// Settings taken from the policy (replaced on reload).
    pub(super) limits: Limits,
    pub(super) ws_limits: WsLimits,
    pub(super) endpoint_kinds: Vec<EndpointKind>,
    pub(super) upgrade_bucket: TokenBucket,
    /// State of the sid tag generator.
    pub(super) rng: u64,
    /// A received Socket.IO packet or listener text, copied out for its handler.
    scratch: Vec<u8>,
    /// `[tls]`: plaintext of the receive being handled (kept between receives).
    tls_plain: Vec<u8>,
    /// permessage-deflate compressors and spare inflater lent to this core's sockets (those
    /// that agreed to no context takeover, the default), so an idle socket holds no zlib state.
    pub(super) zlib: SharedDeflate,
    /// `engine.latency_histograms`: time pushes, handshakes and loop turns.
    pub(super) timing: bool,
    /// Pushes of this loop turn that reached a socket (observed once the turn's sends are
    /// submitted), and when the turn started (`clock` ns): the commands of a turn are taken
    /// after its wake-up, so a push's latency is counted from there.
    pub(super) turn_pushes: u64,
    /// An open socket's receive found no provided buffer this turn (the window widens).
    pub(super) frames_starved: bool,
    pub(super) turn_start: u64,
    /// Refusals logged this second, those left out, lines waiting for a peer address.
    pub(super) refusals: super::refusal_log::RefusalLog,
    /// A push framed once for all its sockets alike (`users::deliver`).
    frame_once: FrameOnce,
    /// The name of the push being delivered (`deliver`; the low 8 bits are the endpoint's).
    push_key: u64,
    /// The paths of this core's sockets, shared (`SocketMeta::path`).
    paths: super::meta::Paths,
}

use super::users::UserIndex;

/// A fresh random number (sid tags, the history epoch of this start).
fn random_u64() -> u64 {
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    u64::from_le_bytes(seed)
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
        let ring = Ring::new(ring, wake, &config.engine, id)?;
        let upgrade_bucket =
            TokenBucket::per_core(config.limits.upgrade_rate_per_sec, shared.cores);
        let remote = shared.cluster.as_ref().map(|c| {
            let per_core = config
                .cluster
                .as_ref()
                .map_or(0, |c| c.max_presence_entries)
                / shared.cores.max(1);
            Box::new(RemoteState::new(c.clone(), id, per_core))
        });
        Ok(Shard {
            ring,
            id,
            shared,
            policy,
            jwks: None,
            conns: Slots::new(table_slots, config.engine.reserve_slots),
            outbox: Outbox::default(),
            users: UserIndex::default(),
            timers: Timers::new(sys::monotonic_ms()),
            accept: AcceptState::new(listener, config.engine.backlog),
            drain: Drain::default(),
            remote,
            history: CoreHistory::new(config, random_u64()).map(Box::new),
            limits: config.limits,
            ws_limits: WsLimits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_message_bytes: config.limits.max_message_bytes,
            },
            endpoint_kinds: config.endpoints.iter().map(|e| e.kind).collect(),
            upgrade_bucket,
            rng: random_u64() | 1,
            scratch: Vec::new(),
            tls_plain: Vec::new(),
            zlib: SharedDeflate::new(),
            timing: config.engine.latency_histograms,
            turn_pushes: 0,
            frames_starved: false,
            turn_start: 0,
            refusals: Default::default(),
            frame_once: FrameOnce::default(),
            push_key: 0,
            paths: Default::default(),
        })
    }

    /// The histograms' clock when `engine.latency_histograms` is on, else 0 (not timed).
    pub(super) fn clock_ns(&self) -> u64 {
        if self.timing {
            clock::now_ns()
        } else {
            0
        }
    }

    pub(super) fn stats(&self) -> &ShardStats {
        &self.shared.stats[self.id]
    }

    /// Arm the deadline of connection `slot` at tick `at` (its one live timer entry).
    pub(super) fn schedule(&mut self, slot: u32, at: u64) {
        let c = &mut self.conns[slot as usize];
        c.timer_at = self.timers.schedule(slot, c.gen, at) as u32;
    }

    pub fn run(&mut self) {
        self.arm_accept();
        self.ring.arm_wake();
        self.ring.arm_tick();
        tracing::debug!(
            core = self.id,
            slots = self.conns.admission_limit(),
            "shard running"
        );
        loop {
            self.rearm_starved();
            self.flush_dirty();
            self.remote_flush();
            if self.timing {
                self.end_turn();
            }
            match self.ring.submit_and_wait() {
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
            if self.timing {
                self.turn_start = clock::now_ns();
            }
            let cqes = self.ring.completions();
            for &(ud, res, flags) in &cqes {
                self.dispatch(ud, res, flags);
            }
            self.ring.recycle_completions(cqes);
            if self.drain.is_over(self.timers.now(), self.conns.in_use()) {
                break;
            }
        }
        tracing::debug!(core = self.id, "shard stopped");
    }

    /// The turn's sends are queued for the kernel (submitted by the `io_uring_enter` that
    /// follows): observe the turn's length and the latency of its pushes.
    fn end_turn(&mut self) {
        if self.turn_start == 0 {
            return; // the first turn: no wake-up yet
        }
        let took = clock::now_ns().saturating_sub(self.turn_start);
        let hist = &self.shared.stats[self.id].hist;
        hist.loop_turn.record(took, 1);
        if self.turn_pushes != 0 {
            hist.push.record(took, self.turn_pushes);
            self.turn_pushes = 0;
        }
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(t) = token::decode(ud) else { return };
        match t.op {
            Op::Accept => self.on_accept(res, flags),
            Op::AcceptOverflow => self.on_accept_overflow(res),
            Op::OverflowSend => self.ring.close_plain(t.slot as i32),
            Op::OverflowClose | Op::CancelAccept => {}
            Op::Tick => self.on_tick(flags),
            Op::Wake => self.on_wake(),
            Op::HandoffIn => self.on_handoff_in(t.ptr, res),
            // Before the liveness check: the installed descriptor is closed either way.
            Op::PeerFd => self.on_peer_fd(t.slot, t.gen, res),
            _ => {
                if !self.conns.is_live(t.slot, t.gen) {
                    // A receive's buffer goes back whoever it was for.
                    if matches!(t.op, Op::Recv | Op::RecvHandshake) && res > 0 {
                        if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
                            self.ring.recycle(bid);
                        }
                    }
                    return;
                }
                match t.op {
                    Op::RecvHandshake => self.on_recv_handshake(t.slot, res, flags),
                    Op::Recv => self.on_recv(t.slot, res, flags),
                    Op::Send => self.on_send(t.slot, res),
                    Op::Close => self.on_closed(t.slot),
                    Op::HandoffSent => self.on_handoff_sent(t.slot, res),
                    Op::Shutdown | Op::Cancel => self.conns[t.slot as usize].inflight -= 1,
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

    /// More slots in use than the admission limit (or the node over `max_connections`): the
    /// newest connection is answered 503 from the reserve.
    pub(super) fn over_admission_limit(&self) -> bool {
        let node_max = self.limits.max_connections;
        self.conns.over_admission_limit()
            || (node_max > 0 && self.shared.open_connections() > node_max as u64)
    }
}

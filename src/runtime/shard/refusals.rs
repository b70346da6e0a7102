//! Refusals on a core: the answer (status, one-line reason, `Retry-After`, and the CORS
//! headers when the request's Origin is allowed, so that a page sees the real status rather
//! than a CORS error) and its log line (at most `LINES_PER_SEC` per core and second, with
//! the reason, status, path, Origin and the peer's address; see `runtime::refusal_log`).
use super::Shard;
use crate::protocol::handshake;
use crate::runtime::conn::{flag, ConnState};
use crate::runtime::refusal_log::{Admit, Line, RefusalLog, Site, LINES_PER_SEC};
use crate::runtime::stats::ShardStats;
use crate::runtime::sys;
use crate::runtime::timer::Timers;
use crate::service::refusal::{Refusal, LABELS};
use crate::service::upgrade::UpgradePolicy;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// The headers a refusal may carry: the protocol error's own, `Retry-After`, and CORS.
const MAX_HEADERS: usize = 8;

impl Shard {
    /// Answer a plain HTTP status with a one-line reason and close; counted by status and
    /// reason, and logged. Where the request went is not known here (see [`Self::refuse_at`]).
    pub(in crate::runtime) fn refuse(&mut self, slot: u32, r: Refusal) {
        self.refuse_at(slot, r, Site::UNKNOWN);
    }

    /// A refusal of the request just decided on: its site was noted by [`note_site`].
    pub(super) fn refuse_request(&mut self, slot: u32, r: Refusal) {
        let path = std::mem::take(&mut self.refusals.scratch_path);
        let origin = std::mem::take(&mut self.refusals.scratch_origin);
        let site = Site {
            path: &path,
            origin: Some(origin.as_str()).filter(|o| !o.is_empty()),
            cors: self.refusals.scratch_cors,
        };
        self.refuse_at(slot, r, site);
        self.refusals.scratch_path = path;
        self.refusals.scratch_origin = origin;
    }

    /// Refuse a request that went to `site`: the answer carries the CORS headers when its
    /// Origin is allowed, and on the refusal of an Origin that is not (a static 403, the same
    /// whatever the cookies: the page learns only that its origin is not allowed, and a
    /// preflight still fails on its status), so that a page sees why.
    pub(in crate::runtime) fn refuse_at(&mut self, slot: u32, r: Refusal, site: Site<'_>) {
        self.refuse_because(slot, r, site, r.reason());
    }

    /// [`Self::refuse_at`] with another one-line reason than the refusal's own (an
    /// `auth = "proxy"` application's).
    pub(in crate::runtime) fn refuse_because(
        &mut self,
        slot: u32,
        r: Refusal,
        site: Site<'_>,
        reason: &str,
    ) {
        self.stats().refused_for(&r);
        let waits_for_peer = self.log_refusal(slot, r, &site);
        let c = &mut self.conns[slot as usize];
        if matches!(c.state, ConnState::Handshake { .. }) {
            ShardStats::dec(&self.shared.stats[self.id].handshakes);
        }
        c.state = ConnState::Responding;
        c.flags &= !flag::KEEP_ALIVE;
        let mut headers = [("", ""); MAX_HEADERS];
        let mut n = 0;
        // A refusal with a Retry-After has no other extra header of its own.
        let secs = r.retry_after_secs().map(|s| s.to_string());
        let own: &[(&str, &str)] = match &secs {
            Some(s) => &[("Retry-After", s.as_str())],
            None => r.headers(),
        };
        for h in own.iter().take(MAX_HEADERS - 3) {
            headers[n] = *h;
            n += 1;
        }
        if let Some(origin) = site.origin.filter(|_| site.cors || r == Refusal::Origin) {
            for h in [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Credentials", "true"),
                ("Vary", "Origin"),
            ] {
                headers[n] = h;
                n += 1;
            }
        }
        handshake::write_http_response(&mut c.out, r.status(), &headers[..n], reason);
        if waits_for_peer {
            // Written once the peer address is read (the next completion): a client that
            // reads the answer and resets the connection would leave none to read.
            c.flags |= flag::CLOSE_AFTER_FLUSH;
            let at = self.timers.now() + Timers::ticks(super::LINGER_MS);
            self.schedule(slot, at);
        } else {
            self.close_after_flush(slot);
        }
    }

    /// Log a refusal, or count it if this second's lines are spent. A line waits for the
    /// connection's peer address (its descriptor installed by the ring) when an entry is free;
    /// returns whether it does.
    fn log_refusal(&mut self, slot: u32, r: Refusal, site: &Site<'_>) -> bool {
        let gen = self.conns[slot as usize].gen;
        let (admit, left_out) =
            self.refusals
                .admit(sys::monotonic_ms(), r, site, Some((slot, gen)));
        if let Some(n) = left_out {
            log_left_out(self.id, n);
        }
        match admit {
            Admit::Suppressed => false,
            Admit::Now => {
                log_line(self.id, &self.refusals.now, None);
                false
            }
            Admit::Pending => {
                self.ring.install_fd(&mut self.conns[slot as usize], slot);
                true
            }
        }
    }

    /// The descriptor of refused connection (slot, gen) is installed as `res` (or failed):
    /// its peer address completes the waiting line.
    pub(super) fn on_peer_fd(&mut self, slot: u32, gen: u32, res: i32) {
        let peer = (res >= 0).then(|| {
            // SAFETY: a successful FIXED_FD_INSTALL returns a new descriptor of this process
            // that nothing else owns; it is closed when `fd` drops.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            peer_of(&fd)
        });
        if let Some(i) = self.refusals.pending_of(slot, gen) {
            if let Some(line) = self.refusals.pending(i) {
                log_line(self.id, line, peer.flatten());
            }
            self.refusals.release(i);
        }
        if self.conns.is_live(slot, gen) {
            self.conns[slot as usize].inflight -= 1;
            // The refusal waited for this lookup: write it now.
            if matches!(self.conns[slot as usize].state, ConnState::Responding) {
                self.mark_dirty(slot);
            }
            self.maybe_release(slot);
        }
    }

    /// A connection accepted on a plain descriptor while the table is full, answered 503.
    pub(super) fn log_overflow(&mut self, fd: i32) {
        let r = Refusal::ServerFull;
        let (admit, left_out) = self
            .refusals
            .admit(sys::monotonic_ms(), r, &Site::UNKNOWN, None);
        if let Some(n) = left_out {
            log_left_out(self.id, n);
        }
        if let Admit::Now = admit {
            // SAFETY: `fd` is the accepted descriptor, open until the overflow send completes
            // and its close is submitted; it is only borrowed here.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            log_line(self.id, &self.refusals.now, peer_of(&fd));
        }
    }

    /// The tick: say how many refusals the second that ended left out.
    pub(super) fn refusal_log_tick(&mut self) {
        if let Some(n) = self.refusals.roll(sys::monotonic_ms()) {
            log_left_out(self.id, n);
        }
    }
}

/// Note where a refused request went (path, Origin) and whether its Origin is allowed, from
/// its bytes (parsed again: refusals are rare, and this keeps the decision pure and small).
pub(super) fn note_site(log: &mut RefusalLog, policy: &UpgradePolicy, bytes: &[u8]) {
    match handshake::parse_request(bytes, &policy.handshake) {
        Ok(Some(req)) => {
            let origin = req.headers.get_str("origin");
            let cors = policy.origin_allowed(origin, &req);
            log.set_scratch(req.path, origin, cors);
        }
        _ => log.set_scratch("", None, false),
    }
}

/// Note the path of a request head that never completed (its request line, if that came).
pub(super) fn note_partial(log: &mut RefusalLog, head: &[u8]) {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(&[]);
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    log.set_scratch(std::str::from_utf8(path).unwrap_or(""), None, false);
}

fn peer_of(fd: &impl std::os::fd::AsFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).peer_addr().ok()?.as_socket()
}

/// A peer address, or `-` when unknown (without allocating).
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// One refusal's line: `warn` for the node's own refusals (5xx: full, draining, rate),
/// `info` for a client's (its request, its origin, its credentials). Path and Origin are
/// written quoted and escaped (they are the client's bytes).
fn log_line(core: usize, line: &Line, peer: Option<SocketAddr>) {
    let Some(r) = line.refusal else { return };
    let (status, reason, path, origin, peer) = (
        r.status(),
        LABELS[r.index()],
        line.path.as_str(),
        line.origin.as_str(),
        Peer(peer),
    );
    if status >= 500 {
        tracing::warn!(core, status, reason, path, origin, %peer, "refused: {}", r.reason());
    } else {
        tracing::info!(core, status, reason, path, origin, %peer, "refused: {}", r.reason());
    }
}

fn log_left_out(core: usize, n: u64) {
    tracing::info!(
        core,
        suppressed = n,
        "suppressed {n} refusals in the last second (at most {LINES_PER_SEC} lines a second \
         per core; all are counted in ringwire_upgrades_refused_by_reason_total)"
    );
}

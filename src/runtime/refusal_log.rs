//! The log of refusals, one core's part (sans-IO: the clock is passed in).
//!
//! Every refusal is worth a line to the developer who wonders why a browser gets 403, but a
//! flood of refusals (a reconnect storm, a scan) must not become a flood of lines, nor of
//! allocations: a core logs at most [`LINES_PER_SEC`] refusals in each one-second window,
//! counts the rest, and says how many it left out once the window is over. The peer's
//! address of a connection in the fixed-file table is only known by installing the
//! descriptor (an io_uring operation), so a line that names it waits for that completion in
//! one of at most [`LINES_PER_SEC`] pending entries, whose strings keep their capacity.
use crate::service::refusal::Refusal;

/// Refusal lines a core logs per second at most; the others are counted and summed up.
pub const LINES_PER_SEC: u32 = 20;
/// Longest path or Origin a line repeats (bytes; longer ones are cut, marked with `...`).
pub const MAX_FIELD: usize = 200;

/// Where a refused request was going and where it came from, as far as known.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    pub path: &'a str,
    pub origin: Option<&'a str>,
    /// The Origin is allowed: the refusal carries CORS headers, so a page sees its status.
    pub cors: bool,
}

impl<'a> Site<'a> {
    /// A refusal before any request was read (admission, timeout).
    pub const UNKNOWN: Site<'static> = Site {
        path: "",
        origin: None,
        cors: false,
    };

    /// A WebSocket upgrade's path (WebSockets have no CORS; its Origin was checked).
    pub fn of_path(path: &'a str) -> Site<'a> {
        Site {
            path,
            origin: None,
            cors: false,
        }
    }

    /// A request parked for the connect proxy's answer (`auth = "proxy"`).
    pub fn of_pending(plan: &'a crate::service::plan::PendingPlan) -> Site<'a> {
        match plan {
            crate::service::plan::PendingPlan::Upgrade(p) => Site::of_path(&p.path),
            crate::service::plan::PendingPlan::Poll(p) => Site::of_poll(p),
        }
    }

    /// A polling request: its Origin, when it has one, is allowed (others were refused
    /// before the plan was made), and its answers carry the CORS headers.
    pub fn of_poll(plan: &'a crate::service::plan::PollPlan) -> Site<'a> {
        Site {
            path: &plan.path,
            origin: plan.cors_origin.as_deref(),
            cors: plan.cors_origin.is_some(),
        }
    }
}

/// A line to write: the refusal, and its site copied (cut at [`MAX_FIELD`]).
#[derive(Default)]
pub struct Line {
    pub refusal: Option<Refusal>,
    pub path: String,
    pub origin: String,
    /// The connection (slot, generation) whose peer address the line waits for.
    pub conn: Option<(u32, u32)>,
}

impl Line {
    fn fill(&mut self, r: Refusal, site: &Site<'_>, conn: Option<(u32, u32)>) {
        self.refusal = Some(r);
        copy_cut(&mut self.path, site.path);
        copy_cut(&mut self.origin, site.origin.unwrap_or(""));
        self.conn = conn;
    }
}

/// `to` = `from` cut at [`MAX_FIELD`] bytes (on a char boundary), reusing its capacity.
fn copy_cut(to: &mut String, from: &str) {
    to.clear();
    if from.len() <= MAX_FIELD {
        to.push_str(from);
        return;
    }
    let mut end = MAX_FIELD;
    while !from.is_char_boundary(end) {
        end -= 1;
    }
    to.push_str(&from[..end]);
    to.push_str("...");
}

/// What to do with one refusal.
pub enum Admit {
    /// Over this window's lines: counted only.
    Suppressed,
    /// Log it now (`Line` filled; no peer address to wait for, or no pending entry free).
    Now,
    /// Log it when the peer's address is known (a pending entry, found by its connection).
    Pending,
}

/// One core's refusal log: the window's count, what it left out, the lines waiting for a
/// peer address, and the scratch that holds a refused request's site.
pub struct RefusalLog {
    window_start_ms: u64,
    in_window: u32,
    suppressed: u64,
    pending: Vec<Line>,
    /// A line logged at once (no peer, or no free pending entry).
    pub now: Line,
    /// The site of the request being refused, copied out of the receive buffer.
    pub scratch_path: String,
    pub scratch_origin: String,
    pub scratch_cors: bool,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            window_start_ms: 0,
            in_window: 0,
            suppressed: 0,
            pending: (0..LINES_PER_SEC).map(|_| Line::default()).collect(),
            now: Line::default(),
            scratch_path: String::new(),
            scratch_origin: String::new(),
            scratch_cors: false,
        }
    }
}

impl RefusalLog {
    /// A refusal at `now_ms` (monotonic): whether and how to log it. `conn`: the connection
    /// whose peer address may be looked up. Also returns the refusals left out of the window
    /// that just ended, if any, for a summary line first.
    pub fn admit(
        &mut self,
        now_ms: u64,
        r: Refusal,
        site: &Site<'_>,
        conn: Option<(u32, u32)>,
    ) -> (Admit, Option<u64>) {
        let summary = self.roll(now_ms);
        if self.in_window >= LINES_PER_SEC {
            self.suppressed += 1;
            return (Admit::Suppressed, summary);
        }
        self.in_window += 1;
        if conn.is_some() {
            if let Some(i) = self.pending.iter().position(|l| l.refusal.is_none()) {
                self.pending[i].fill(r, site, conn);
                return (Admit::Pending, summary);
            }
        }
        self.now.fill(r, site, None);
        (Admit::Now, summary)
    }

    /// Start a new window if the current one is over; returns what the old one left out.
    pub fn roll(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms < self.window_start_ms + 1_000 {
            return None;
        }
        self.window_start_ms = now_ms;
        self.in_window = 0;
        let left_out = std::mem::take(&mut self.suppressed);
        (left_out > 0).then_some(left_out)
    }

    /// Pending entry `i`, once its peer lookup completed: read it, then [`Self::release`].
    pub fn pending(&self, i: usize) -> Option<&Line> {
        self.pending.get(i).filter(|l| l.refusal.is_some())
    }

    /// The pending entry waiting for connection (slot, gen), if any.
    pub fn pending_of(&self, slot: u32, gen: u32) -> Option<usize> {
        self.pending
            .iter()
            .position(|l| l.refusal.is_some() && l.conn == Some((slot, gen)))
    }

    pub fn release(&mut self, i: usize) {
        if let Some(l) = self.pending.get_mut(i) {
            l.refusal = None;
            l.conn = None;
        }
    }

    /// Set the scratch site of the request being refused (capacity reused; whole, as the
    /// CORS header repeats the Origin exactly: bounded by the request head's size limit).
    pub fn set_scratch(&mut self, path: &str, origin: Option<&str>, cors: bool) {
        self.scratch_path.clear();
        self.scratch_path.push_str(path);
        self.scratch_origin.clear();
        self.scratch_origin.push_str(origin.unwrap_or(""));
        self.scratch_cors = cors && origin.is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Site<'static> = Site {
        path: "/ws",
        origin: Some("https://a.example"),
        cors: false,
    };

    #[test]
    fn at_most_the_lines_of_a_window_then_a_summary() {
        let mut log = RefusalLog::default();
        let mut logged = 0;
        for i in 0..100u32 {
            let conn = (i % 2 == 0).then_some((i, 1));
            match log.admit(5_000, Refusal::Origin, &SITE, conn) {
                (Admit::Suppressed, None) => {}
                (Admit::Now, None) => logged += 1,
                (Admit::Pending, None) => {
                    logged += 1;
                    let p = log.pending_of(i, 1).unwrap();
                    let l = log.pending(p).unwrap();
                    assert_eq!(
                        (l.path.as_str(), l.origin.as_str()),
                        ("/ws", "https://a.example")
                    );
                    log.release(p);
                }
                (_, Some(_)) => panic!("no window ended"),
            }
        }
        assert_eq!(logged, LINES_PER_SEC);
        assert_eq!(log.roll(5_999), None, "the window is not over");
        assert_eq!(log.roll(6_000), Some(100 - LINES_PER_SEC as u64));
        assert_eq!(log.roll(7_500), None, "nothing left out since");
        assert!(matches!(
            log.admit(7_600, Refusal::NotFound, &SITE, None),
            (Admit::Now, None)
        ));
    }

    #[test]
    fn pending_entries_are_bounded_and_fields_cut() {
        let mut log = RefusalLog::default();
        let long = "é".repeat(300);
        let site = Site {
            path: &long,
            origin: None,
            cors: false,
        };
        for i in 0..LINES_PER_SEC {
            assert!(matches!(
                log.admit(0, Refusal::NotFound, &site, Some((i, 0))),
                (Admit::Pending, _)
            ));
        }
        log.roll(1_000);
        // Every entry still waits for its peer: the next line is written without one.
        assert!(matches!(
            log.admit(1_000, Refusal::NotFound, &site, Some((99, 0))),
            (Admit::Now, None)
        ));
        assert!(log.now.path.len() <= MAX_FIELD + 3 && log.now.path.ends_with("..."));
        assert!(log.now.origin.is_empty());
    }

    #[test]
    fn scratch_site() {
        let mut log = RefusalLog::default();
        log.set_scratch("/socket.io/", Some("http://x"), true);
        let s = (&*log.scratch_path, &*log.scratch_origin, log.scratch_cors);
        assert_eq!(s, ("/socket.io/", "http://x", true));
        log.set_scratch("/a", None, true);
        let s = (&*log.scratch_path, &*log.scratch_origin, log.scratch_cors);
        assert_eq!(s, ("/a", "", false), "no Origin, no CORS");
    }
}

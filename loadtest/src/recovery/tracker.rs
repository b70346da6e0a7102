//! One connection's view of its user's pushes across reconnects, sans IO: fed the
//! connects and drops, the push envelopes and the recovery markers, it keeps the position
//! to resume from and counts, by per-user sequence number, what arrived, twice, late or
//! never.

use std::time::Duration;

use tokio::time::Instant;

use crate::recovery::counts::RecoveryCounts;
use crate::recovery::ledger::Expected;
use crate::wire::history::{is_valid_epoch, Position, RecoveryMarker};

/// Sequence numbers `from..to` that were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    from: u64,
    to: u64,
    kind: GapKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GapKind {
    /// Seen while replaying: the marker will tell (`recovered: true` makes it a loss).
    Unconfirmed,
    /// A loss that no marker announced.
    Missing,
    /// Announced by a marker with `recovered: false`.
    Acknowledged,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never connected: nothing is counted.
    Never,
    /// Went down (churn close, storm drop, drop by the server) and not connected again.
    Down,
    /// Connected, before the recovery marker: pushes are replayed ones.
    Replaying,
    /// After the marker. `acknowledge_gap`: the marker said `recovered: false` and no push
    /// came since, so a gap before the next push is the one it announced.
    Live { acknowledge_gap: bool },
}

/// The push stream of one connection (one user), across its reconnects.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    user: u64,
    position: Option<Position>,
    /// Every sequence number below this one was received or is in a gap.
    next_seq: u64,
    /// Ascending and disjoint.
    gaps: Vec<Gap>,
    link: Link,
    /// This connection asked to resume.
    resuming: bool,
    /// Pushes received on this connection before its marker.
    replaying_pushes: u64,
    /// When the connection went down, until the next marker.
    down_since: Option<Instant>,
    /// What is counted as it happens (the ledger's part is added by [`Self::counts`]).
    counts: RecoveryCounts,
}

impl StreamTracker {
    pub fn new(user: u64) -> Self {
        StreamTracker {
            user,
            position: None,
            next_seq: 0,
            gaps: Vec::new(),
            link: Link::Never,
            resuming: false,
            replaying_pushes: 0,
            down_since: None,
            counts: RecoveryCounts::default(),
        }
    }

    /// The user whose pushes this connection gets.
    pub fn user(&self) -> u64 {
        self.user
    }

    /// Where to resume from (`epoch` and `since` of the next upgrade); `None`: fresh.
    pub fn resume_position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// A connection was established, resuming from [`Self::resume_position`] if any.
    pub fn connected(&mut self) {
        // Gaps replayed on a connection that ended before its marker: nobody announced them.
        self.settle_unconfirmed(GapKind::Missing);
        self.resuming = self.position.is_some();
        if self.resuming {
            self.counts.resumes_attempted += 1;
        }
        self.replaying_pushes = 0;
        self.link = Link::Replaying;
    }

    /// The connection went down at `at` (closed, dropped or reset; not stopped).
    pub fn disconnected(&mut self, at: Instant) {
        self.link = Link::Down;
        self.down_since.get_or_insert(at);
    }

    /// A push envelope at `position`; `message` is the pushed text's user and per-user
    /// sequence number (`None`: not one of ours).
    pub fn push(&mut self, position: Position, message: Option<(u64, u64)>) {
        self.advance(position);
        if self.link == Link::Replaying {
            self.replaying_pushes += 1;
        }
        match message {
            Some((user, seq)) if user == self.user => {
                let acknowledge = self.link
                    == Link::Live {
                        acknowledge_gap: true,
                    };
                if acknowledge {
                    self.link = Link::Live {
                        acknowledge_gap: false,
                    };
                }
                self.sequence(seq, acknowledge);
            }
            _ => self.counts.foreign += 1,
        }
    }

    /// The recovery marker, received at `at`. Returns the outage it ends (from the drop
    /// until now), if the connection had gone down.
    pub fn marker(&mut self, m: &RecoveryMarker, at: Instant) -> Option<Duration> {
        self.counts.markers += 1;
        let first = self.link == Link::Replaying;
        let consistent = m.resumed == self.resuming
            && (m.resumed || !m.recovered)
            && m.replayed == self.replaying_pushes;
        if !first || !consistent {
            self.counts.protocol_errors += 1;
        }
        if first && self.resuming {
            if m.recovered {
                self.counts.resumes_recovered += 1;
            } else {
                self.counts.resumes_not_recovered += 1;
            }
            self.counts.replayed += m.replayed;
        }
        self.advance(Position {
            epoch: m.epoch.clone(),
            offset: m.offset,
        });
        self.settle_unconfirmed(if m.recovered {
            GapKind::Missing
        } else {
            GapKind::Acknowledged
        });
        self.link = Link::Live {
            acknowledge_gap: !m.recovered,
        };
        self.down_since
            .take()
            .map(|since| at.saturating_duration_since(since))
    }

    /// This connection's counts. With `expected` (the ledger's entry for its user) also
    /// what was expected, received and not received.
    pub fn counts(&self, expected: Option<Expected<'_>>) -> RecoveryCounts {
        if self.link == Link::Never {
            return RecoveryCounts::default();
        }
        let mut c = self.counts.clone();
        c.connections_tracked = 1;
        let Some(e) = expected else {
            return c;
        };
        // Sequence numbers below `below` were received or are in a gap.
        let below = self.next_seq.min(e.issued);
        let mut in_gaps = 0;
        let mut unaccepted_in_gaps = 0;
        for g in &self.gaps {
            let (from, to) = (g.from.min(below), g.to.min(below));
            let unaccepted = e.unaccepted_in(from, to);
            in_gaps += to - from;
            unaccepted_in_gaps += unaccepted;
            *gap_count(&mut c, g.kind) += to - from - unaccepted;
        }
        let tail = e.issued - below - e.unaccepted_in(below, e.issued);
        *self.tail_count(&mut c) += tail;
        let unexpected = e.unaccepted_in(0, below) - unaccepted_in_gaps;
        c.messages_expected = e.count();
        c.messages_received = below - in_gaps - unexpected;
        c.unexpected = unexpected;
        c
    }

    /// Where the pushes after the last one received count: not connected, announced as
    /// lost, or still to come.
    fn tail_count<'c>(&self, c: &'c mut RecoveryCounts) -> &'c mut u64 {
        match self.link {
            Link::Never | Link::Down => &mut c.missing_disconnected,
            Link::Live {
                acknowledge_gap: true,
            } => &mut c.missing_acknowledged,
            Link::Replaying | Link::Live { .. } => &mut c.pending,
        }
    }

    /// Sequence number `seq` of this user arrived.
    fn sequence(&mut self, seq: u64, acknowledge: bool) {
        if seq >= self.next_seq {
            if seq > self.next_seq {
                let kind = match self.link {
                    Link::Replaying => GapKind::Unconfirmed,
                    _ if acknowledge => GapKind::Acknowledged,
                    _ => GapKind::Missing,
                };
                self.gaps.push(Gap {
                    from: self.next_seq,
                    to: seq,
                    kind,
                });
            }
            self.next_seq = seq + 1;
            return;
        }
        let i = self.gaps.partition_point(|g| g.to <= seq);
        match self.gaps.get(i) {
            Some(g) if g.from <= seq => {
                self.counts.out_of_order += 1;
                self.fill(i, seq);
            }
            _ => self.counts.duplicated += 1,
        }
    }

    /// Takes `seq` out of gap `i` (it arrived late).
    fn fill(&mut self, i: usize, seq: u64) {
        let g = self.gaps[i];
        let before = Gap { to: seq, ..g };
        let after = Gap { from: seq + 1, ..g };
        match (before.from < before.to, after.from < after.to) {
            (true, true) => {
                self.gaps[i] = before;
                self.gaps.insert(i + 1, after);
            }
            (true, false) => self.gaps[i] = before,
            (false, true) => self.gaps[i] = after,
            (false, false) => {
                self.gaps.remove(i);
            }
        }
    }

    fn settle_unconfirmed(&mut self, kind: GapKind) {
        for g in &mut self.gaps {
            if g.kind == GapKind::Unconfirmed {
                g.kind = kind;
            }
        }
    }

    /// Moves the position forward (or to another epoch).
    fn advance(&mut self, to: Position) {
        if !is_valid_epoch(&to.epoch) {
            self.counts.protocol_errors += 1;
        }
        match &mut self.position {
            Some(p) if p.epoch == to.epoch => p.offset = p.offset.max(to.offset),
            Some(_) => {
                self.counts.epoch_changes += 1;
                self.position = Some(to);
            }
            None => self.position = Some(to),
        }
    }
}

/// Where a gap's sequence numbers count.
fn gap_count(c: &mut RecoveryCounts, kind: GapKind) -> &mut u64 {
    match kind {
        GapKind::Unconfirmed => &mut c.pending,
        GapKind::Missing => &mut c.missing,
        GapKind::Acknowledged => &mut c.missing_acknowledged,
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::recovery::ledger::Ledger;

const EPOCH: &str = "00000000000000e1";
const USER: u64 = 3;

fn at(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.to_string(),
        offset,
    }
}

fn marker(resumed: bool, recovered: bool, offset: u64, replayed: u64) -> RecoveryMarker {
    RecoveryMarker {
        resumed,
        recovered,
        epoch: EPOCH.to_string(),
        offset,
        replayed,
    }
}

/// Pushes these sequence numbers of `USER`, at offset 10 * (seq + 1).
fn push_seqs(t: &mut StreamTracker, seqs: &[u64]) {
    for &s in seqs {
        t.push(at(EPOCH, 10 * (s + 1)), Some((USER, s)));
    }
}

/// A tracker connected fresh, its marker received.
fn live() -> StreamTracker {
    let mut t = StreamTracker::new(USER);
    t.connected();
    assert_eq!(t.marker(&marker(false, false, 0, 0), Instant::now()), None);
    t
}

/// A live tracker that got `seqs`, went down and connected again (resuming).
fn reconnected(seqs: &[u64]) -> StreamTracker {
    let mut t = live();
    push_seqs(&mut t, seqs);
    t.disconnected(Instant::now());
    t.connected();
    t
}

/// `issued` pushes sent to `USER`, the requests of `unaccepted` failed.
fn ledger(issued: u64, unaccepted: &[u64]) -> Ledger {
    let mut l = Ledger::default();
    l.record((0..issued).map(|s| (USER, s)), true);
    l.record(unaccepted.iter().map(|&s| (USER, s)), false);
    l
}

fn counts(t: &StreamTracker, l: &Ledger) -> RecoveryCounts {
    let c = t.counts(Some(l.expected(USER)));
    assert_eq!(
        c.messages_expected,
        c.messages_received
            + c.missing
            + c.missing_acknowledged
            + c.missing_disconnected
            + c.pending,
        "{c:?}"
    );
    c
}

#[test]
fn in_order_stream_is_complete() {
    let mut t = live();
    push_seqs(&mut t, &[0, 1, 2, 3]);
    let c = counts(&t, &ledger(4, &[]));
    assert_eq!(
        (
            c.connections_tracked,
            c.messages_expected,
            c.messages_received,
            c.markers
        ),
        (1, 4, 4, 1)
    );
    assert_eq!((c.missing, c.duplicated, c.out_of_order), (0, 0, 0));
    assert_eq!(
        (c.protocol_errors, c.resumes_attempted, c.foreign),
        (0, 0, 0)
    );
    assert_eq!(t.resume_position(), Some(&at(EPOCH, 40)));
}

#[test]
fn gaps_duplicates_and_late_arrivals() {
    let mut t = live();
    push_seqs(&mut t, &[0, 1, 4, 1, 5]);
    let c = counts(&t, &ledger(6, &[]));
    assert_eq!((c.messages_received, c.missing, c.duplicated), (4, 2, 1));
    // 2 and 3 arrive late: out of order, no longer missing; 3 again is a duplicate.
    push_seqs(&mut t, &[3, 2, 3]);
    let c = counts(&t, &ledger(6, &[]));
    assert_eq!((c.messages_received, c.missing), (6, 0));
    assert_eq!((c.out_of_order, c.duplicated), (2, 2));
    // A late arrival in the middle of a gap splits it.
    push_seqs(&mut t, &[10, 7]);
    let c = counts(&t, &ledger(11, &[]));
    assert_eq!((c.missing, c.out_of_order, c.messages_received), (3, 3, 8));
}

#[test]
fn tail_is_pending_until_the_end_and_disconnected_when_gone() {
    let mut t = live();
    push_seqs(&mut t, &[0, 1]);
    let c = counts(&t, &ledger(5, &[]));
    assert_eq!((c.messages_received, c.pending, c.missing), (2, 3, 0));
    t.disconnected(Instant::now());
    let c = counts(&t, &ledger(5, &[]));
    assert_eq!((c.pending, c.missing_disconnected), (0, 3));
    // Without the ledger only what was seen is counted.
    let c = t.counts(None);
    assert_eq!(
        (
            c.connections_tracked,
            c.messages_expected,
            c.messages_received
        ),
        (1, 0, 0)
    );
    // A connection that never connected is not tracked.
    let never = StreamTracker::new(USER);
    assert_eq!(
        never.counts(Some(ledger(5, &[]).expected(USER))),
        RecoveryCounts::default()
    );
}

#[test]
fn complete_resume() {
    let mut t = live();
    push_seqs(&mut t, &[0, 1]);
    let down = Instant::now();
    t.disconnected(down);
    assert_eq!(t.resume_position(), Some(&at(EPOCH, 20)));
    t.connected();
    push_seqs(&mut t, &[2, 3]);
    let outage = t.marker(
        &marker(true, true, 40, 2),
        down + Duration::from_millis(300),
    );
    assert_eq!(outage, Some(Duration::from_millis(300)));
    push_seqs(&mut t, &[4]);
    let c = counts(&t, &ledger(5, &[]));
    assert_eq!(
        (
            c.resumes_attempted,
            c.resumes_recovered,
            c.resumes_not_recovered
        ),
        (1, 1, 0)
    );
    assert_eq!((c.replayed, c.messages_received, c.missing), (2, 5, 0));
    assert_eq!((c.markers, c.protocol_errors), (2, 0));
}

#[test]
fn acknowledged_gap_in_the_replay() {
    let mut t = reconnected(&[0, 1]);
    // History kept only 5 and 6: the gap 2..5 is unconfirmed until the marker says so.
    push_seqs(&mut t, &[5, 6]);
    assert_eq!(counts(&t, &ledger(7, &[])).pending, 3);
    t.marker(&marker(true, false, 70, 2), Instant::now());
    push_seqs(&mut t, &[7, 9]);
    let c = counts(&t, &ledger(10, &[]));
    assert_eq!((c.missing_acknowledged, c.missing, c.pending), (3, 1, 0));
    assert_eq!((c.resumes_not_recovered, c.replayed), (1, 2));
}

#[test]
fn acknowledged_gap_at_the_first_live_push() {
    let mut t = reconnected(&[0]);
    // Nothing replayed (history expired): the gap shows at the first live push.
    t.marker(&marker(true, false, 90, 0), Instant::now());
    push_seqs(&mut t, &[4, 5, 7]);
    let c = counts(&t, &ledger(8, &[]));
    assert_eq!((c.missing_acknowledged, c.missing), (3, 1));
    // Pushed but not yet arrived after such a marker: the announced loss.
    let mut t = reconnected(&[]);
    t.marker(&marker(true, false, 90, 0), Instant::now());
    let c = counts(&t, &ledger(2, &[]));
    assert_eq!((c.missing_acknowledged, c.pending), (2, 0));
}

#[test]
fn gap_with_recovered_true_or_without_marker_is_missing() {
    let mut t = reconnected(&[0]);
    push_seqs(&mut t, &[2]);
    t.marker(&marker(true, true, 30, 1), Instant::now());
    assert_eq!(counts(&t, &ledger(3, &[])).missing, 1);
    // Dropped while replaying, before the marker: the gap nobody announced is a loss.
    t.disconnected(Instant::now());
    t.connected();
    push_seqs(&mut t, &[5]);
    t.disconnected(Instant::now());
    t.connected();
    let c = counts(&t, &ledger(6, &[]));
    assert_eq!(
        (c.missing, c.resumes_attempted, c.resumes_recovered),
        (3, 3, 1)
    );
}

#[test]
fn epoch_change_moves_the_position() {
    let mut t = reconnected(&[0, 1]);
    let other = "00000000000000e2";
    let mut m = marker(true, false, 5, 0);
    m.epoch = other.to_string();
    t.marker(&m, Instant::now());
    assert_eq!(t.resume_position(), Some(&at(other, 5)));
    t.push(at(other, 6), Some((USER, 2)));
    let c = counts(&t, &ledger(3, &[]));
    assert_eq!(
        (c.epoch_changes, c.messages_received, c.protocol_errors),
        (1, 3, 0)
    );
    // Offsets only move forward within an epoch.
    t.push(at(other, 2), Some((USER, 2)));
    assert_eq!(t.resume_position(), Some(&at(other, 6)));
}

#[test]
fn failed_requests_are_not_expected() {
    let mut t = live();
    // 2 was in a failed request but arrived; 4's request failed and it never came.
    push_seqs(&mut t, &[0, 1, 2, 3, 5]);
    let c = counts(&t, &ledger(7, &[2, 4]));
    assert_eq!(
        (c.messages_expected, c.messages_received, c.unexpected),
        (5, 4, 1)
    );
    assert_eq!((c.missing, c.pending), (0, 1));
}

#[test]
fn protocol_errors_and_foreign_pushes() {
    let mut t = live();
    // A second marker, one that claims a replay that did not happen, a bad epoch.
    t.marker(&marker(false, false, 0, 0), Instant::now());
    t.disconnected(Instant::now());
    t.connected();
    t.marker(&marker(true, true, 0, 4), Instant::now());
    t.push(at("XYZ", 1), Some((USER, 0)));
    t.push(at(EPOCH, 1), Some((USER + 1, 0)));
    t.push(at(EPOCH, 2), None);
    let c = t.counts(None);
    assert_eq!((c.protocol_errors, c.foreign, c.epoch_changes), (3, 2, 2));
    // A fresh connection must not be told it recovered.
    let mut t = StreamTracker::new(USER);
    t.connected();
    t.marker(&marker(false, true, 0, 0), Instant::now());
    assert_eq!(t.counts(None).protocol_errors, 1);
}

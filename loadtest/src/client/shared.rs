//! The counters and latency histograms shared by all connections of a worker (reported
//! to the coordinator every 250 ms as [`Counters`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::ipc::Counters;
use crate::stats;
use crate::wire::messages::{parse_push_message, PushMessage};

/// Counters shared by all connections of a worker.
pub struct Shared {
    /// Time origin for the timestamps carried in messages.
    pub epoch: Instant,
    /// `epoch` as wall clock time (µs since the Unix epoch), to line up with the coordinator.
    pub epoch_unix_us: u64,
    /// When the latest connection attempt finished (µs since `epoch`).
    pub last_attempt_done_us: AtomicU64,
    pub attempts: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub mismatches: AtomicU64,
    pub unsolicited: AtomicU64,
    pub send_errors: AtomicU64,
    pub pings: AtomicU64,
    pub check_ok: AtomicU64,
    pub check_failed: AtomicU64,
    pub push_received: AtomicU64,
    pub failed_by_kind: Mutex<BTreeMap<String, u64>>,
    pub dropped_by_kind: Mutex<BTreeMap<String, u64>>,
    /// Latency samples since the last progress event (drained every 250 ms).
    pub latency: Mutex<Histogram<u64>>,
    /// Connect latency of first attempts / reconnects, and storm time to reconnect (µs),
    /// since the last progress event.
    pub connect_latency: Mutex<Histogram<u64>>,
    pub reconnect_latency: Mutex<Histogram<u64>>,
    pub storm_latency: Mutex<Histogram<u64>>,
    /// `--recover`: from a connection's drop until its recovery marker (µs).
    pub recover_latency: Mutex<Histogram<u64>>,
    pub reconnect_attempts: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_failed: AtomicU64,
    pub reconnect_failed_by_kind: Mutex<BTreeMap<String, u64>>,
    pub reconnect_retries: AtomicU64,
    pub retry_after_waits: AtomicU64,
    pub backoff_waits: AtomicU64,
    pub retry_after_max_s: AtomicU64,
    pub reconnecting: AtomicU64,
    pub reconnect_abandoned: AtomicU64,
    pub churn_kicks: AtomicU64,
    pub churn_skipped: AtomicU64,
    pub storm_dropped: AtomicU64,
    pub storm_reconnected: AtomicU64,
    pub storm_gave_up: AtomicU64,
    /// When this worker dropped its connections (storm).
    pub storm_at: Mutex<Option<Instant>>,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            epoch_unix_us: crate::sysinfo::unix_now_us(),
            last_attempt_done_us: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            unsolicited: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            check_ok: AtomicU64::new(0),
            check_failed: AtomicU64::new(0),
            push_received: AtomicU64::new(0),
            failed_by_kind: Mutex::new(BTreeMap::new()),
            dropped_by_kind: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(stats::new_histogram()),
            connect_latency: Mutex::new(stats::new_histogram()),
            reconnect_latency: Mutex::new(stats::new_histogram()),
            storm_latency: Mutex::new(stats::new_histogram()),
            recover_latency: Mutex::new(stats::new_histogram()),
            reconnect_attempts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            reconnect_failed: AtomicU64::new(0),
            reconnect_failed_by_kind: Mutex::new(BTreeMap::new()),
            reconnect_retries: AtomicU64::new(0),
            retry_after_waits: AtomicU64::new(0),
            backoff_waits: AtomicU64::new(0),
            retry_after_max_s: AtomicU64::new(0),
            reconnecting: AtomicU64::new(0),
            reconnect_abandoned: AtomicU64::new(0),
            churn_kicks: AtomicU64::new(0),
            churn_skipped: AtomicU64::new(0),
            storm_dropped: AtomicU64::new(0),
            storm_reconnected: AtomicU64::new(0),
            storm_gave_up: AtomicU64::new(0),
            storm_at: Mutex::new(None),
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            attempts: self.attempts.load(Relaxed),
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            failed_by_kind: self.failed_by_kind.lock().unwrap().clone(),
            open: self.open.load(Relaxed),
            peak_open: self.peak_open.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            dropped_by_kind: self.dropped_by_kind.lock().unwrap().clone(),
            sent: self.sent.load(Relaxed),
            received: self.received.load(Relaxed),
            mismatches: self.mismatches.load(Relaxed),
            unsolicited: self.unsolicited.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            pings_received: self.pings.load(Relaxed),
            echo_check_ok: self.check_ok.load(Relaxed),
            echo_check_failed: self.check_failed.load(Relaxed),
            push_received: self.push_received.load(Relaxed),
            reconnect_attempts: self.reconnect_attempts.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            reconnect_failed: self.reconnect_failed.load(Relaxed),
            reconnect_failed_by_kind: self.reconnect_failed_by_kind.lock().unwrap().clone(),
            reconnect_retries: self.reconnect_retries.load(Relaxed),
            retry_after_waits: self.retry_after_waits.load(Relaxed),
            backoff_waits: self.backoff_waits.load(Relaxed),
            retry_after_max_s: self.retry_after_max_s.load(Relaxed),
            reconnecting: self.reconnecting.load(Relaxed),
            reconnect_abandoned: self.reconnect_abandoned.load(Relaxed),
            churn_kicks: self.churn_kicks.load(Relaxed),
            churn_skipped: self.churn_skipped.load(Relaxed),
            storm_dropped: self.storm_dropped.load(Relaxed),
            storm_reconnected: self.storm_reconnected.load(Relaxed),
            storm_gave_up: self.storm_gave_up.load(Relaxed),
            // The worker adds its connections' delivery counts.
            recovery: Default::default(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A connection attempt finished (established or not).
    pub fn attempt_done(&self, result: Result<(), &str>) {
        self.last_attempt_done_us.fetch_max(self.now_us(), Relaxed);
        match result {
            Ok(()) => {
                self.connected.fetch_add(1, Relaxed);
                self.opened();
            }
            Err(kind) => {
                self.failed.fetch_add(1, Relaxed);
                Shared::count_kind(&self.failed_by_kind, kind);
            }
        }
    }

    pub fn opened(&self) {
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
    }

    /// An established connection ended: `Some(kind)` if it was dropped (not by us).
    pub fn connection_ended(&self, drop_kind: Option<&str>) {
        self.open.fetch_sub(1, Relaxed);
        if let Some(kind) = drop_kind {
            self.dropped.fetch_add(1, Relaxed);
            Shared::count_kind(&self.dropped_by_kind, kind);
        }
    }

    /// A message that may be one of the push scenario's: records its end-to-end latency
    /// and returns true if it is one.
    pub fn record_push(&self, text: &str) -> bool {
        let Some(m) = parse_push_message(text) else {
            return false;
        };
        self.push_arrived(&m);
        true
    }

    /// One of the push scenario's messages arrived: counts it, records its end-to-end
    /// latency.
    pub fn push_arrived(&self, m: &PushMessage) {
        self.push_received.fetch_add(1, Relaxed);
        // End to end: from right before the coordinator sent the push request.
        let lat_us = crate::sysinfo::unix_now_ns().saturating_sub(m.ts) / 1000;
        stats::record(&mut self.latency.lock().unwrap(), lat_us);
    }

    /// A connection left the reconnecting state (connected, gave up or stopped).
    pub fn reconnect_over(&self) {
        let _ = self
            .reconnecting
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    pub fn count_kind(map: &Mutex<BTreeMap<String, u64>>, kind: &str) {
        let mut m = map.lock().unwrap();
        match m.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                m.insert(kind.to_string(), 1);
            }
        }
    }
}

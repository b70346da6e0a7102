//! Counters of the `nats` store (appends and resumes by outcome, the pending gap marker).
use super::settings::HistoryError;
use crate::service::history::Recovery;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters of one store, written by its thread, read by anyone.
#[derive(Debug, Default)]
pub struct NatsCounters {
    /// An append failed (the push went out unrecorded) and no gap marker was written since:
    /// see [`NatsHistory::mark_gap`].
    pub(super) gap_pending: AtomicBool,
    appends_ok: AtomicU64,
    appends_failed: AtomicU64,
    resumes_complete: AtomicU64,
    resumes_incomplete: AtomicU64,
    resumes_failed: AtomicU64,
}

/// A snapshot of [`NatsCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    pub appends_ok: u64,
    pub appends_failed: u64,
    /// Resumes answered with `complete = true`.
    pub resumes_complete: u64,
    /// Resumes answered with `complete = false`.
    pub resumes_incomplete: u64,
    /// Resumes that failed with an error.
    pub resumes_failed: u64,
}

impl NatsCounters {
    pub fn snapshot(&self) -> NatsStats {
        NatsStats {
            appends_ok: self.appends_ok.load(Relaxed),
            appends_failed: self.appends_failed.load(Relaxed),
            resumes_complete: self.resumes_complete.load(Relaxed),
            resumes_incomplete: self.resumes_incomplete.load(Relaxed),
            resumes_failed: self.resumes_failed.load(Relaxed),
        }
    }

    pub(crate) fn count_append<T>(&self, r: &Result<T, HistoryError>) {
        let c = if r.is_ok() {
            &self.appends_ok
        } else {
            self.gap_pending.store(true, Relaxed);
            &self.appends_failed
        };
        c.fetch_add(1, Relaxed);
    }

    /// A push went out unrecorded and the stream does not say so yet.
    pub fn gap_pending(&self) -> bool {
        self.gap_pending.load(Relaxed)
    }

    pub(crate) fn count_resume(&self, r: &Result<Recovery, HistoryError>) {
        let c = match r {
            Ok(rec) if rec.complete => &self.resumes_complete,
            Ok(_) => &self.resumes_incomplete,
            Err(_) => &self.resumes_failed,
        };
        c.fetch_add(1, Relaxed);
    }
}

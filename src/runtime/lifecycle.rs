//! The node's lifecycle: one value that readiness (`/readyz`), the cores and the drain read.
//!
//! `Starting` until every listener is up, `Running` while the node serves, `Draining` from
//! SIGTERM (listeners closed, sockets closed with 1001 over `server.drain_secs`, the process
//! gone at the latest at the deadline), `Stopped` once every core has ended. A phase only
//! moves forward.
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    /// Draining; every core has stopped by `deadline_unix_ms` at the latest.
    Draining {
        deadline_unix_ms: u64,
    },
    Stopped,
}

impl Phase {
    /// Lower-case name (`/v1/stats`, logs).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining { .. } => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;
const STOPPED: u8 = 3;

/// Shared by the cores and the control plane (lock-free).
#[derive(Debug, Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    deadline_unix_ms: AtomicU64,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            STARTING => Phase::Starting,
            RUNNING => Phase::Running,
            DRAINING => Phase::Draining {
                deadline_unix_ms: self.deadline_unix_ms.load(Ordering::Relaxed),
            },
            _ => Phase::Stopped,
        }
    }

    /// Ready for traffic: `/readyz` answers 200 only now.
    pub fn is_running(&self) -> bool {
        self.phase.load(Ordering::Acquire) == RUNNING
    }

    /// Draining or stopped: new connections are refused, keep-alive ends.
    pub fn is_stopping(&self) -> bool {
        self.phase.load(Ordering::Acquire) >= DRAINING
    }

    /// Every listener is up.
    pub fn set_running(&self) {
        let _ = self
            .phase
            .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Start draining (from starting or running); false if already draining or stopped.
    pub fn start_draining(&self, deadline_unix_ms: u64) -> bool {
        self.deadline_unix_ms
            .store(deadline_unix_ms, Ordering::Relaxed);
        let mut cur = self.phase.load(Ordering::Acquire);
        while cur < DRAINING {
            match self
                .phase
                .compare_exchange(cur, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Every core has ended.
    pub fn set_stopped(&self) {
        self.phase.store(STOPPED, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let l = Lifecycle::default();
        assert_eq!(l.phase(), Phase::Starting);
        assert!(!l.is_running() && !l.is_stopping());
        l.set_running();
        assert!(l.is_running());
        assert!(l.start_draining(5_000));
        assert_eq!(
            l.phase(),
            Phase::Draining {
                deadline_unix_ms: 5_000
            }
        );
        assert!(l.is_stopping() && !l.is_running());
        assert!(
            !l.start_draining(9_000),
            "a second SIGTERM does not restart the drain"
        );
        l.set_running();
        assert!(l.is_stopping(), "running again after a drain started");
        l.set_stopped();
        assert_eq!(l.phase(), Phase::Stopped);
        assert_eq!(l.phase().name(), "stopped");
    }
}

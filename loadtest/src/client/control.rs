//! What the worker tells its connections: the run's phase (broadcast to all) and churn or
//! storm kicks (one connection at a time, through its [`Slot`]); and how a connection ended.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::client::shared::Shared;
use crate::recovery::StreamTracker;

/// What the worker tells every connection to do (broadcast through a watch channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Run,
    EchoCheck,
    Stop,
}

/// Why a connection is told to go away and come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Churn: close gracefully, reconnect.
    Churn = 1,
    /// Storm: drop the TCP socket abruptly (RST), reconnect at once.
    Storm = 2,
}

/// Per-connection control shared with the worker: whether the connection is open, a
/// pending churn/storm kick, and (`--recover`) its push stream across reconnects.
#[derive(Default)]
pub struct Slot {
    open: AtomicBool,
    kick: AtomicU8,
    notify: Notify,
    stream: Option<Mutex<StreamTracker>>,
}

impl Slot {
    /// The slot of a connection of `user` that tracks its pushes (`--recover`).
    pub fn tracking(user: u64) -> Self {
        Slot {
            stream: Some(Mutex::new(StreamTracker::new(user))),
            ..Slot::default()
        }
    }

    /// The connection's push stream (`--recover`), locked: never hold it across an await.
    pub fn stream(&self) -> Option<MutexGuard<'_, StreamTracker>> {
        self.stream.as_ref().map(|s| s.lock().unwrap())
    }

    /// Kicks the connection if it is open and not kicked yet; it then counts as
    /// reconnecting. Returns whether it was kicked.
    ///
    /// Workers run single-threaded, so the connection task cannot change state between
    /// the check and the kick.
    pub fn kick(&self, shared: &Shared, kick: Kick) -> bool {
        if !self.open.load(Relaxed) || self.kick.load(Relaxed) != 0 {
            return false;
        }
        self.kick.store(kick as u8, Relaxed);
        shared.reconnecting.fetch_add(1, Relaxed);
        self.notify.notify_one();
        true
    }

    /// The pending kick, if any (left in place).
    pub fn pending(&self) -> Option<Kick> {
        match self.kick.load(Relaxed) {
            1 => Some(Kick::Churn),
            2 => Some(Kick::Storm),
            _ => None,
        }
    }

    /// Marks the connection open (kicks are only taken while it is) or closed.
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Relaxed);
    }

    /// The pending kick, if any, cleared.
    pub fn take(&self) -> Option<Kick> {
        let k = self.pending();
        self.kick.store(0, Relaxed);
        k
    }

    /// Completes when the connection may have been kicked (check [`Slot::pending`]).
    pub async fn kicked(&self) {
        self.notify.notified().await
    }
}

/// How an established connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Stopped by us (`Phase::Stop`), closed gracefully.
    Stopped,
    /// Ended by the server or the network: the drop kind.
    Dropped(String),
    /// Closed because of a churn/storm kick: reconnect.
    Kicked,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;

    #[tokio::test]
    async fn slots_are_kicked_once() {
        let shared = Shared::new();
        let slot = Slot::default();
        assert!(!slot.kick(&shared, Kick::Churn), "not open yet");
        slot.set_open(true);
        assert!(slot.kick(&shared, Kick::Storm));
        assert!(!slot.kick(&shared, Kick::Churn), "already kicked");
        assert_eq!(shared.reconnecting.load(Relaxed), 1);
        // The notification is kept until the connection looks.
        timeout(Duration::from_secs(1), slot.kicked())
            .await
            .unwrap();
        assert_eq!(slot.pending(), Some(Kick::Storm));
        assert_eq!(slot.take(), Some(Kick::Storm));
        assert_eq!(slot.pending(), None);
    }
}

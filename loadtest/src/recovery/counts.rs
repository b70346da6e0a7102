//! The delivery counts of `--recover`, per connection ([`crate::recovery::StreamTracker`])
//! and summed per worker and per run.

use serde::{Deserialize, Serialize};

/// Delivery and resume counts, by per-user sequence number. Once the push ledger is
/// known: `messages_expected = messages_received + missing + missing_acknowledged +
/// missing_disconnected + pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCounts {
    /// Connections whose pushes are tracked (connected at least once).
    pub connections_tracked: u64,
    /// Workers that know the push ledger (what was sent to every user).
    pub workers_with_ledger: u64,
    /// Pushes accepted for the connections' users, summed over the connections.
    pub messages_expected: u64,
    /// Expected pushes received (each counted once, replayed ones included).
    pub messages_received: u64,
    /// Expected pushes that never arrived, with no recovery marker saying so: losses.
    pub missing: u64,
    /// Expected pushes that never arrived after a marker with `recovered: false`.
    pub missing_acknowledged: u64,
    /// Expected pushes of connections that were not connected at the end (gave up).
    pub missing_disconnected: u64,
    /// Not arrived yet on a connected client: the newest pushes (in flight), and gaps
    /// seen while replaying, before the marker came. After the drain they are missing
    /// (the report adds them to `missing`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending: u64,
    /// Pushes received again.
    pub duplicated: u64,
    /// Pushes received after a later one of the same user.
    pub out_of_order: u64,
    /// Received pushes whose push request had failed (not expected).
    pub unexpected: u64,
    /// Pushes for another user, or without a per-user sequence number.
    pub foreign: u64,
    /// A second marker on a connection, a marker that contradicts the resume request or
    /// the number of pushes replayed before it, a malformed epoch.
    pub protocol_errors: u64,
    /// Positions whose epoch differs from the one the connection had.
    pub epoch_changes: u64,
    /// Connections opened with `epoch` and `since` (resume requests).
    pub resumes_attempted: u64,
    /// Their markers: `recovered: true` / `recovered: false`.
    pub resumes_recovered: u64,
    pub resumes_not_recovered: u64,
    /// Pushes replayed before the markers of resumed connections.
    pub replayed: u64,
    /// Recovery markers received (resumed or fresh connections).
    pub markers: u64,
}

impl RecoveryCounts {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &RecoveryCounts) {
        self.connections_tracked += o.connections_tracked;
        self.workers_with_ledger += o.workers_with_ledger;
        self.messages_expected += o.messages_expected;
        self.messages_received += o.messages_received;
        self.missing += o.missing;
        self.missing_acknowledged += o.missing_acknowledged;
        self.missing_disconnected += o.missing_disconnected;
        self.pending += o.pending;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.foreign += o.foreign;
        self.protocol_errors += o.protocol_errors;
        self.epoch_changes += o.epoch_changes;
        self.resumes_attempted += o.resumes_attempted;
        self.resumes_recovered += o.resumes_recovered;
        self.resumes_not_recovered += o.resumes_not_recovered;
        self.replayed += o.replayed;
        self.markers += o.markers;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

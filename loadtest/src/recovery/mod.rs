//! `--recover`: delivery across reconnects, counted by per-user sequence number.
//!
//! - [`ledger`]: what the push driver sent to every user (built by the coordinator,
//!   handed to the workers once pushing is over).
//! - [`tracker`]: one connection's stream across its reconnects, sans IO: the position to
//!   resume from, gaps, duplicates, late arrivals, recovery markers.
//! - [`counts`]: the counts, per connection and summed.

pub mod counts;
pub mod ledger;
pub mod tracker;

pub use counts::RecoveryCounts;
pub use ledger::Ledger;
pub use tracker::StreamTracker;

//! Outages in the stream: after a push went out unrecorded, a gap marker says so to every
//! node's resumes (module docs, "Outages").
use super::{NatsHistory, Read};
use std::sync::atomic::Ordering::Relaxed;

impl NatsHistory {
    /// The stream's record of an outage: the subject `<prefix>.gap` (never a user's, those
    /// have two tokens) gets an empty message after pushes went out unrecorded. A resume from
    /// a position below the last such marker is incomplete: the unrecorded pushes may have
    /// been the user's. Written at the first call after NATS is back (and from the thread's
    /// tick); until then this node answers its resumes incomplete itself. Returns whether
    /// the stream is up to date (no unrecorded push left unmarked).
    pub async fn mark_gap(&self) -> bool {
        if !self.counters.gap_pending() {
            return true;
        }
        let subject = format!("{}.gap", self.settings.subject_prefix);
        let written = self
            .bounded("gap marker", async {
                self.check_connected()?;
                let ack = self
                    .js
                    .publish(subject, Vec::<u8>::new().into())
                    .await
                    .map_err(|e| self.failed("publish of a gap marker", e))?;
                ack.await
                    .map_err(|e| self.failed("publish of a gap marker", e))
            })
            .await;
        match written {
            Ok(_) => {
                self.counters.gap_pending.store(false, Relaxed);
                tracing::info!("history store nats: pushes made while NATS was unreachable are marked as a gap");
                true
            }
            Err(_) => false,
        }
    }

    /// The offset of the last gap marker (0: none held).
    pub(super) async fn last_gap(&self) -> Result<u64, Read> {
        let subject = format!("{}.gap", self.settings.subject_prefix);
        let got = self.stream.get_last_raw_message_by_subject(&subject).await;
        Ok(self
            .found("get of the last gap marker", got)?
            .map_or(0, |m| m.sequence))
    }
}

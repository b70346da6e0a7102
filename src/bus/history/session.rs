//! Parked Socket.IO sessions in the stream, so that a client reconnecting to another node
//! can restore its session there (connection state recovery with the nats store). A record
//! is opaque bytes here (the engine encodes it) under `<prefix>.session.<key>` (three
//! tokens: never a user's subject, nor the gap marker's); the stream's max age (the history
//! ttl) bounds its life, as a parked record's on a core. Taking a record deletes it.
use super::{HistoryError, NatsHistory};
use std::time::Duration;

/// A record may be taken just before the node that parks it wrote it (its client
/// reconnected at once, maybe to another node): looked for again after this, a few times.
const TAKE_RETRY: Duration = Duration::from_millis(100);
const TAKE_ATTEMPTS: usize = 3;

/// The subject of a parked session: `<prefix>.session.<key>` (key: URL-safe characters).
fn session_subject(prefix: &str, key: &str) -> Option<String> {
    let safe = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    safe.then(|| format!("{prefix}.session.{key}"))
}

impl NatsHistory {
    /// Keep `record` under `key` (replacing an older one of the same key).
    pub async fn put_session(&self, key: &str, record: Vec<u8>) -> Result<(), HistoryError> {
        let subject = session_subject(&self.settings.subject_prefix, key)
            .ok_or_else(|| self.failed("park of a session", "key not URL-safe"))?;
        self.bounded("park", async {
            self.check_connected()?;
            let ack = self
                .js
                .publish(subject, record.into())
                .await
                .map_err(|e| self.failed("publish of a parked session", e))?;
            ack.await
                .map(|_| ())
                .map_err(|e| self.failed("publish of a parked session", e))
        })
        .await
    }

    /// The record under `key`, if one is held (then deleted, once `accept` approved it: a
    /// key is no proof on its own, a record of another user stays).
    pub async fn take_session(
        &self,
        key: &str,
        accept: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, HistoryError> {
        let Some(subject) = session_subject(&self.settings.subject_prefix, key) else {
            return Ok(None);
        };
        self.bounded("restore", async {
            for attempt in 0..TAKE_ATTEMPTS {
                self.check_connected()?;
                let got = self.stream.get_last_raw_message_by_subject(&subject).await;
                let found = self
                    .found("get of a parked session", got)
                    .map_err(|r| match r {
                        super::Read::Gone => self.failed("get of a parked session", "no stream"),
                        super::Read::Failed(e) => e,
                    })?;
                let Some(m) = found else {
                    if attempt + 1 < TAKE_ATTEMPTS {
                        tokio::time::sleep(TAKE_RETRY).await;
                    }
                    continue;
                };
                if !accept(&m.payload) {
                    return Ok(None);
                }
                // Deleted before it is used: a record restores one session once. A failed
                // delete (already deleted by a racing restore) is that race lost.
                let deleted = self.stream.delete_message(m.sequence).await;
                return match deleted {
                    Ok(true) => Ok(Some(m.payload.to_vec())),
                    Ok(false) => Ok(None),
                    Err(e) if !self.is_connected() => Err(self.failed("delete", e)),
                    Err(_) => Ok(None),
                };
            }
            Ok(None)
        })
        .await
    }
}

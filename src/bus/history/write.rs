//! The append path of [`NatsHistory`]: one push stored for its user, in order, with the
//! user's previous offset in its `Ringwire-Prev` header (module docs).
use super::{
    contended_backoff, named_last_sequence, path, user_subject, HistoryError, NatsHistory,
    CONTENDED_SHARE, EPOCH_RECHECK, EXPECTED_LAST_SUBJECT_SEQUENCE, PREV_HEADER, RECREATIONS,
};
use crate::service::history::Position;
use crate::service::path_filter::PathFilter;
use async_nats::jetstream::context::PublishErrorKind;
use std::time::Instant;

impl NatsHistory {
    /// Stores `text`, pushed with path filter `filter` (`None`: every path), for (context,
    /// user) and returns its position once NATS acknowledged it. Appends to one user from
    /// this store are stored in the order of the calls.
    pub async fn append(
        &self,
        context: u32,
        user: &[u8],
        text: &str,
        filter: Option<&PathFilter>,
    ) -> Result<Position, HistoryError> {
        let r = self.append_linked(context, user, text, filter).await;
        r.map(|(at, _)| at)
    }

    /// [`NatsHistory::append`], with the offset of the user's message before it (0: none):
    /// a node that gets this push before that one knows it missed one (`PushJob::prev`).
    pub async fn append_linked(
        &self,
        context: u32,
        user: &[u8],
        text: &str,
        filter: Option<&PathFilter>,
    ) -> Result<(Position, u64), HistoryError> {
        let subject = user_subject(&self.settings.subject_prefix, context, user);
        self.mark_gap().await;
        let r = self
            .bounded("append", async {
                self.check_connected()?;
                let _gate = self.gate(&subject).await;
                self.append_in_order(&subject, text, filter).await
            })
            .await;
        self.counters.count_append(&r);
        r
    }

    /// Publish with the user's last offset expected (so that its `Ringwire-Prev` is true);
    /// its position and that previous offset.
    async fn append_in_order(
        &self,
        subject: &str,
        text: &str,
        filter: Option<&PathFilter>,
    ) -> Result<(Position, u64), HistoryError> {
        let stale = self.lock_cache().epoch_checked.elapsed() > EPOCH_RECHECK;
        if stale {
            self.fresh_info().await?;
        }
        let mut prev = self.user_last(subject).await?;
        let (num, den) = CONTENDED_SHARE;
        let deadline = Instant::now() + self.settings.timeout * num / den;
        let (mut attempts, mut recreations) = (0, 0);
        loop {
            attempts += 1;
            // The epoch known before the publish: the stream that takes the message is that
            // one or a later one, so the position is never of an epoch later than its
            // offset's (at worst an older one, which a resume refuses).
            let epoch = self.epoch();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, prev.to_string().as_str());
            headers.insert(PREV_HEADER, prev.to_string().as_str());
            if let Some(f) = filter.filter(|f| !f.is_any()) {
                headers.insert(path::PATH_HEADER, path::encode(f));
            }
            let sent = self
                .js
                .publish_with_headers(subject.to_string(), headers, text.to_owned().into())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    self.remember_last(subject, ack.sequence);
                    let at = Position {
                        epoch,
                        offset: ack.sequence,
                    };
                    return Ok((at, prev));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    let named = named_last_sequence(&e.to_string());
                    if named.is_none_or(|n| n < prev) {
                        // Gone back: the user's messages expired or the stream was made
                        // again; check the epoch before reporting one.
                        self.fresh_info().await?;
                    }
                    prev = match named {
                        Some(n) => n,
                        None => {
                            self.forget_last(subject);
                            self.user_last(subject).await?
                        }
                    };
                    self.remember_last(subject, prev);
                    if Instant::now() >= deadline {
                        return Err(HistoryError::Contended { attempts });
                    }
                    // Another append to this user won. Retry at once the first time (this
                    // store's cache was behind); after that another node is appending in a
                    // burst, which would win every race of an immediate retry: back off.
                    tokio::time::sleep(contended_backoff(attempts)).await;
                }
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                    // The stream was deleted: make it again (a new epoch) and start over.
                    recreations += 1;
                    if recreations > RECREATIONS {
                        return Err(self.failed("publish", e));
                    }
                    self.forget_last(subject);
                    self.fresh_info().await?;
                    prev = self.user_last(subject).await?;
                }
                Err(e) => {
                    self.forget_last(subject);
                    return Err(self.failed("publish", e));
                }
            }
        }
    }
}

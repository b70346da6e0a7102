//! The resume path of [`NatsHistory`]: walk a user's held messages after a position and
//! judge, by the rule of the module docs, whether that is everything.
use super::{
    epoch_of, is_complete, path, HistoryError, Link, NatsHistory, Read, PREV_HEADER, WALK_ATTEMPTS,
};
use crate::service::history::{Missed, Position, Recovery};
use std::sync::Arc;

impl NatsHistory {
    pub(super) async fn resume(
        &self,
        subject: &str,
        from: Position,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        self.check_connected()?;
        let incomplete = Recovery {
            messages: Vec::new(),
            complete: false,
        };
        if from.epoch != self.epoch() && from.epoch != epoch_of(&self.fresh_info().await?) {
            return Ok(incomplete);
        }
        for _ in 0..WALK_ATTEMPTS {
            let read = async {
                let (messages, links, truncated) = self.walk(subject, from.offset, limit).await?;
                let user_last = if links.is_empty() {
                    self.read_user_last(subject).await?
                } else {
                    None
                };
                Ok((messages, links, truncated, user_last))
            };
            let read = async {
                let read = read.await?;
                Ok((read, self.last_gap().await?))
            };
            let ((messages, links, truncated, user_last), gap) = match read.await {
                Ok(read) => read,
                Err(Read::Gone) => {
                    // Deleted: made again with a new epoch, which `from` is not of.
                    self.fresh_info().await?;
                    return Ok(incomplete);
                }
                Err(Read::Failed(e)) => return Err(e),
            };
            if user_last.is_some_and(|last| last > from.offset) {
                // Appended after the walk looked: walk again.
                continue;
            }
            // Read after the messages (rule, fact 3).
            let info = self.fresh_info().await?;
            if from.epoch != epoch_of(&info) || from.offset > info.state.last_sequence {
                return Ok(incomplete);
            }
            let complete = gap <= from.offset
                && is_complete(
                    from.offset,
                    &links,
                    truncated,
                    user_last,
                    info.state.first_sequence,
                );
            return Ok(Recovery { messages, complete });
        }
        Ok(incomplete)
    }

    /// The user's held messages after `from` (with their path filters), at most `limit`,
    /// and whether more are held.
    async fn walk(
        &self,
        subject: &str,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<Missed>, Vec<Link>, bool), Read> {
        let mut messages = Vec::new();
        let mut links = Vec::new();
        let mut next = from.saturating_add(1);
        loop {
            let got = self
                .stream
                .get_first_raw_message_by_subject(subject, next)
                .await;
            let Some(m) = self.found("get of a user's next message", got)? else {
                return Ok((messages, links, false));
            };
            if messages.len() == limit {
                return Ok((messages, links, true));
            }
            let prev = m
                .headers
                .get(PREV_HEADER)
                .and_then(|v| v.as_str().parse::<u64>().ok());
            links.push(Link {
                offset: m.sequence,
                prev,
            });
            let text: Arc<str> = match std::str::from_utf8(&m.payload) {
                Ok(s) => s.into(),
                Err(_) => String::from_utf8_lossy(&m.payload).into(),
            };
            let filter = m
                .headers
                .get(path::PATH_HEADER)
                .map(|v| path::decode(v.as_str()));
            messages.push(Missed {
                offset: m.sequence,
                text,
                filter: filter.and_then(|f| f.narrowing()),
            });
            next = m.sequence.saturating_add(1);
        }
    }
}

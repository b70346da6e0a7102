//! [`NatsHistory`]: per-user push history in one NATS JetStream stream.
//!
//! # Layout
//! One stream (default `RINGWIRE_HISTORY`, file storage, limits retention, discard old) with
//! the subjects `<prefix>.>` (default prefix `ringwire.history`); each user's history is one
//! subject, `<prefix>.<context>.u<user>`, the user's bytes in unpadded base64url (no dot, no
//! wildcard, any byte string works, the empty one too). The stream keeps `size` messages per
//! subject (`max_msgs_per_subject`) and none older than `ttl` (`max_age`). Reads are message
//! gets by subject from the stream leader (`STREAM.MSG.GET` with `next_by_subj` or
//! `last_by_subj`): no consumer, and never a lagging replica (a direct get may be answered by
//! a follower, which could hide a message that was already acknowledged). Everything used
//! exists in nats-server 2.9.
//!
//! # Positions
//! - epoch: the stream's creation time in nanoseconds (`created` of the stream info). It is the
//!   same on every node and across server restarts, and changes when the stream is deleted and
//!   made again, so a position of a former stream is never mistaken for one of this stream.
//! - offset: the message's stream sequence. It increases strictly per user (and is unique
//!   stream-wide); offsets of one user are not dense.
//!
//! # Appends
//! Every message carries the header `Ringwire-Prev`: the offset of the message of the same
//! user that was the newest when this one was stored (0: the user held nothing). The append
//! sends `Nats-Expected-Last-Subject-Sequence` with that same value, so the server stores the
//! message only if it is true at that moment; on a mismatch (another node appended, or the
//! user's messages expired) the server names the real last offset and the append retries with
//! it: at once the first time, then after a short random pause (another node appending to the
//! same user in a burst would win every immediate retry), until nine tenths of the timeout
//! ([`HistoryError::Contended`]). Appends to one user from one `NatsHistory` go one at a
//! time, in the order they were called; a small cache keeps each user's last offset so that
//! an append is one round trip. A push's path filter (unless `*`) is in `Ringwire-Path` ([`path`]).
//!
//! # When a resume is complete
//! `since(from)` returns the user's held messages with an offset above `from.offset`, in
//! order, and `complete = true` only when it is proven that no message of that user with an
//! offset above `from.offset` was dropped. The proof uses three facts:
//!
//! 1. The prev chain (above): a held message M with prev p > 0 proves that the user had no
//!    message with an offset in (p, M). (At M's arrival p was the user's newest message, so
//!    none in between had arrived; one that had arrived and gone would have been newer than
//!    p while p stayed, which neither limit does.)
//! 2. Both limits drop oldest first: `max_msgs_per_subject` drops the user's oldest message,
//!    and `max_age` (like any stream-wide limit or a purge of the whole stream) drops from
//!    the front of the stream (the server only ever expires the stream's first message). So
//!    the user's newest message can only go from the front, and every message dropped from
//!    the front has an offset below the stream's current `first_seq`.
//! 3. `first_seq` never decreases, and the stream info is read after the messages, so the
//!    `first_seq` used bounds every drop that happened before the reads.
//!
//! The rule ([`is_complete`]), for the held messages M1 < M2 < ... after `from`:
//! - M1's prev p > 0: complete iff p <= from (fact 1), and
//! - M1's prev is 0 (the user held nothing when M1 arrived): every earlier message of the
//!   user had gone, the newest of them from the front (fact 2), so all are below `first_seq`:
//!   complete iff from + 1 >= min(first_seq, M1);
//! - every next message's prev is the message before it (else something in between was
//!   removed by hand: incomplete);
//! - no held message after `from`, and the user's newest held message L exists: L <= from,
//!   and a dropped newer one would have had to go from the front before L (fact 2): complete;
//! - the user holds nothing: whatever came after `from` went from the front: complete iff
//!   from + 1 >= first_seq;
//! - more than `limit` messages held after `from`: the first `limit` are returned,
//!   incomplete;
//! - a position of another epoch, or above the stream's last offset (never given out):
//!   incomplete, no messages.
//!
//! [`NatsHistory::current`] gives a fresh client the stream's last offset: it asks for
//! nothing before now, and the larger the offset the more often the last two rules can
//! prove completeness. A later resume from it with nothing pushed is complete while the
//! user's history is held, and after the user's messages expired as long as the stream's
//! first held message is not past the position (`first_seq <= from + 1`; the memory store
//! has the same limit, its forgotten watermark). Past that nothing can tell whether a push
//! came and expired, and the answer is incomplete.
//!
//! What voids the guarantee: deleting single messages or purging one subject by hand (delete
//! the whole stream instead: that changes the epoch), publishing to the history subjects
//! without the headers (such messages have no prev: resumes across them are incomplete, never
//! wrongly complete), and a server that loses acknowledged writes.
//!
//! # Outages
//! A push that could not be recorded (NATS down, a timeout) is delivered live all the same;
//! the store then owes the stream a gap marker ([`NatsHistory::mark_gap`]: an empty message
//! on `<prefix>.gap`), written at the first call once NATS is back or within a second from
//! the thread's tick. A resume from below the last marker is incomplete (any user may have
//! missed the unrecorded push), and this node answers its own resumes incomplete until the
//! marker is written. Another node may answer complete in the at most one second between
//! NATS coming back and the marker; a marker older than `ttl` is gone, as are the pushes of
//! that time.
//!
//! # Failure
//! Every call is bounded by `settings.timeout` ([`HistoryError::Timeout`]); while the client
//! is not connected calls fail at once ([`HistoryError::Unreachable`]) instead of queueing in
//! the client; the client reconnects by itself (retrying forever, at most a second apart). A
//! timed-out append may still be stored if its request had left before the failure.
pub use super::counters::{NatsCounters, NatsStats};
pub use super::rule::{is_complete, Link};
pub use super::settings::{HistoryError, NatsSettings};
use crate::service::history::{Position, Recovery};
use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The header naming the previous offset of the same user (see the module docs).
pub const PREV_HEADER: &str = "Ringwire-Prev";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// The part of the timeout an append may spend retrying after mismatches of the expected
/// last offset (each retry uses the offset the server named), before giving up with
/// [`HistoryError::Contended`]: nine tenths, so that it is said rather than a timeout.
const CONTENDED_SHARE: (u32, u32) = (9, 10);
/// Stream re-creations one append may do (the stream deleted under it).
const RECREATIONS: usize = 2;
/// How long the epoch an append reports may go unchecked.
const EPOCH_RECHECK: Duration = Duration::from_secs(1);
/// Users whose last offset is cached (the cache is emptied when full).
const LAST_CACHE_MAX: usize = 100_000;
/// Resume walks restarted because an append landed in the middle of one.
const WALK_ATTEMPTS: usize = 3;

/// The subject of a user's history: `<prefix>.<context>.u<base64url(user)>`.
pub fn user_subject(prefix: &str, context: u32, user: &[u8]) -> String {
    format!("{prefix}.{context}.u{}", URL_SAFE_NO_PAD.encode(user))
}

/// The epoch of a stream: its creation time in nanoseconds since 1970 (at least 1).
fn epoch_of(info: &stream::Info) -> u64 {
    u64::try_from(info.created.unix_timestamp_nanos())
        .unwrap_or(1)
        .max(1)
}

/// The real last offset a "wrong last sequence" refusal names ("wrong last sequence: 42").
fn named_last_sequence(error: &str) -> Option<u64> {
    let rest = &error[error.rfind("wrong last sequence: ")? + "wrong last sequence: ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// The pause before retry `attempts + 1` of an append that lost to another: none after the
/// first loss, then a random 0 to `attempts - 1` ms (at most 8 ms).
fn contended_backoff(attempts: u32) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let mut byte = [0u8; 2];
    let _ = getrandom::getrandom(&mut byte);
    let micros = u64::from(u16::from_le_bytes(byte)) * u64::from((attempts - 1).min(8)) * 1_000
        / u64::from(u16::MAX);
    Duration::from_micros(micros)
}

/// Reconnect delays: at once, then doubling from 10 ms up to one second (the NATS clients of
/// the history store and of the NATS ingress).
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
    Duration::from_millis(10u64.saturating_mul(1 << exp)).min(Duration::from_secs(1))
}

struct Cache {
    epoch: u64,
    epoch_checked: Instant,
    /// Per user subject: the newest offset this store knows of.
    last: HashMap<String, u64>,
}

/// The history store on NATS JetStream. Use it from a tokio runtime (the [`super::thread`]
/// runs one); every method takes `&self` and may be called concurrently.
pub struct NatsHistory {
    url: String,
    settings: NatsSettings,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream<()>,
    cache: Mutex<Cache>,
    /// Per user subject with an append under way: the lock that orders its appends.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counters: Arc<NatsCounters>,
}

impl NatsHistory {
    /// Connects to NATS at `url` (e.g. `nats://127.0.0.1:4222`) and makes the stream if it is
    /// absent, or sets its limits (subjects, size, ttl, replicas, discard old) if they differ.
    /// Fails if NATS cannot be reached within `settings.timeout`.
    pub async fn connect(url: &str, settings: NatsSettings) -> Result<NatsHistory, HistoryError> {
        NatsHistory::connect_counted(url, settings, Arc::default()).await
    }

    pub(crate) async fn connect_counted(
        url: &str,
        settings: NatsSettings,
        counters: Arc<NatsCounters>,
    ) -> Result<NatsHistory, HistoryError> {
        settings.validate()?;
        let t = settings.timeout;
        // The client's own timeouts are longer than ours, so that ours decides and says so.
        let inner = t * 2;
        let log_url = url.to_string();
        let options = async_nats::ConnectOptions::new()
            .name("ringwire")
            .connection_timeout(t)
            .request_timeout(Some(inner))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let url = log_url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(%url, "history store nats: connected")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%url, "history store nats: disconnected, reconnecting")
                        }
                        other => tracing::warn!(%url, event = %other, "history store nats"),
                    }
                }
            });
        let unreachable = |detail: String| HistoryError::Unreachable {
            url: url.to_string(),
            detail,
        };
        let client = match tokio::time::timeout(t, options.connect(url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no connection within {t:?}"))),
        };
        let js = jetstream::context::ContextBuilder::new()
            .timeout(inner)
            .ack_timeout(inner)
            .build(client.clone());
        let stream = js
            .get_stream_no_info(&settings.stream)
            .await
            .map_err(|e| HistoryError::Settings(format!("stream {}: {e}", settings.stream)))?;
        let history = NatsHistory {
            url: url.to_string(),
            settings,
            client,
            js,
            stream,
            cache: Mutex::new(Cache {
                epoch: 0,
                epoch_checked: Instant::now(),
                last: HashMap::new(),
            }),
            gates: Mutex::new(HashMap::new()),
            counters,
        };
        let info = history.bounded("connect", history.ensure_stream()).await?;
        history.set_epoch(&info);
        tracing::info!(
            url = %history.url,
            stream = %history.settings.stream,
            epoch = history.epoch(),
            "history store nats: ready"
        );
        Ok(history)
    }

    /// The epoch of the stream as last seen.
    pub fn epoch(&self) -> u64 {
        self.lock_cache().epoch
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    pub fn stats(&self) -> NatsStats {
        self.counters.snapshot()
    }

    pub fn counters(&self) -> Arc<NatsCounters> {
        self.counters.clone()
    }

    /// Whether the client is connected now (it reconnects by itself).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// What a client of (context, user) that has everything up to `from` missed: at most
    /// `limit` messages after it, in order, and whether that is everything (module docs).
    pub async fn since(
        &self,
        context: u32,
        user: &[u8],
        from: Position,
        limit: usize,
    ) -> Result<Recovery, HistoryError> {
        let subject = user_subject(&self.settings.subject_prefix, context, user);
        let marked = self.mark_gap().await;
        let r = self
            .bounded("resume", self.resume(&subject, from, limit))
            .await
            .map(|mut r| {
                // This node sent pushes unrecorded and could not say so in the stream yet.
                r.complete &= marked;
                r
            });
        self.counters.count_resume(&r);
        r
    }

    /// The position a fresh client of (context, user) starts from: the stream's last offset
    /// (at least the user's last). Ask it after the client is registered for live pushes.
    pub async fn current(&self, context: u32, user: &[u8]) -> Result<Position, HistoryError> {
        // Any user's position is the stream's last offset; the arguments are for symmetry
        // with the other calls (and keep the door open for a per-user answer).
        let _ = (context, user);
        self.bounded("current", async {
            self.check_connected()?;
            let info = self.fresh_info().await?;
            Ok(Position {
                epoch: epoch_of(&info),
                offset: info.state.last_sequence,
            })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        let after = self.settings.timeout;
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) if !self.is_connected() => Err(self.unreachable()),
            Err(_) => Err(HistoryError::Timeout { op, after }),
        }
    }

    fn unreachable(&self) -> HistoryError {
        HistoryError::Unreachable {
            url: self.url.clone(),
            detail: format!("client {:?}", self.client.connection_state()).to_lowercase(),
        }
    }

    fn check_connected(&self) -> Result<(), HistoryError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(self.unreachable())
        }
    }

    /// An error of a request to NATS: unreachable if the connection is gone, else the
    /// stream's problem.
    fn failed(&self, what: &str, e: impl fmt::Display) -> HistoryError {
        if !self.is_connected() {
            return self.unreachable();
        }
        HistoryError::Stream {
            stream: self.settings.stream.clone(),
            detail: format!("{what}: {e}"),
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_epoch(&self, info: &stream::Info) -> u64 {
        let epoch = epoch_of(info);
        let mut cache = self.lock_cache();
        if cache.epoch != epoch {
            // Another stream: what was cached of the former one is void.
            cache.last.clear();
            cache.epoch = epoch;
        }
        cache.epoch_checked = Instant::now();
        epoch
    }

    fn stream_config(&self) -> stream::Config {
        let s = &self.settings;
        stream::Config {
            name: s.stream.clone(),
            description: Some("ringwire push history (one subject per user)".into()),
            subjects: vec![format!("{}.>", s.subject_prefix)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_messages_per_subject: s.size as i64,
            max_age: s.ttl,
            num_replicas: s.replicas,
            ..Default::default()
        }
    }

    /// Makes the stream if it is absent, or sets the limits this store needs if they differ
    /// (other settings, like stream-wide limits an operator added, are kept).
    async fn ensure_stream(&self) -> Result<stream::Info, HistoryError> {
        let want = self.stream_config();
        match self.js.get_stream(&self.settings.stream).await {
            Ok(existing) => {
                let info = existing.cached_info().clone();
                let have = &info.config;
                if have.retention != stream::RetentionPolicy::Limits {
                    return Err(self.failed(
                        "exists with a retention other than limits",
                        "delete it or choose another stream name",
                    ));
                }
                let same = have.subjects == want.subjects
                    && have.max_messages_per_subject == want.max_messages_per_subject
                    && have.max_age == want.max_age
                    && have.num_replicas == want.num_replicas
                    && have.discard == stream::DiscardPolicy::Old;
                if same {
                    return Ok(info);
                }
                let mut update = have.clone();
                update.subjects = want.subjects;
                update.max_messages_per_subject = want.max_messages_per_subject;
                update.max_age = want.max_age;
                update.num_replicas = want.num_replicas;
                update.discard = stream::DiscardPolicy::Old;
                let updated = self
                    .js
                    .update_stream(update)
                    .await
                    .map_err(|e| self.failed("cannot update its limits", e))?;
                tracing::info!(
                    stream = %self.settings.stream,
                    size = self.settings.size,
                    ttl_secs = self.settings.ttl.as_secs_f64(),
                    "history store nats: stream limits updated"
                );
                Ok(updated)
            }
            Err(e) if is_stream_not_found(&e) => match self.js.create_stream(want).await {
                Ok(created) => {
                    tracing::info!(stream = %self.settings.stream, "history store nats: stream created");
                    Ok(created.cached_info().clone())
                }
                Err(create) => {
                    // Another node may have made it just now.
                    match self.js.get_stream(&self.settings.stream).await {
                        Ok(s) => Ok(s.cached_info().clone()),
                        Err(_) => Err(self.failed("cannot create it", create)),
                    }
                }
            },
            Err(e) => Err(self.failed("cannot read it", e)),
        }
    }

    /// The stream's info read now; a missing stream is made again (a new epoch).
    async fn fresh_info(&self) -> Result<stream::Info, HistoryError> {
        let info = match self.stream.get_info().await {
            Ok(info) => info,
            Err(e) if names_stream_not_found(&e) => self.ensure_stream().await?,
            Err(e) => return Err(self.failed("cannot read its state", e)),
        };
        self.set_epoch(&info);
        Ok(info)
    }

    /// Waits for this subject's earlier appends (FIFO) and holds it until dropped.
    async fn gate(&self, subject: &str) -> Gate<'_> {
        let lock = {
            let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            gates.entry(subject.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        Gate {
            gates: &self.gates,
            subject: subject.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    /// The user's newest held offset (0: none), from the cache or from NATS. A deleted
    /// stream is made again (the user holds nothing in it).
    async fn user_last(&self, subject: &str) -> Result<u64, HistoryError> {
        if let Some(&last) = self.lock_cache().last.get(subject) {
            return Ok(last);
        }
        match self.read_user_last(subject).await {
            Ok(last) => Ok(last.unwrap_or(0)),
            Err(Read::Gone) => {
                self.fresh_info().await?;
                Ok(0)
            }
            Err(Read::Failed(e)) => Err(e),
        }
    }

    /// The user's newest held offset, from the stream leader.
    async fn read_user_last(&self, subject: &str) -> Result<Option<u64>, Read> {
        let got = self.stream.get_last_raw_message_by_subject(subject).await;
        Ok(self
            .found("get of a user's last message", got)?
            .map(|m| m.sequence))
    }

    /// A message get's answer: the message, none, or why not.
    fn found(
        &self,
        what: &str,
        got: Result<jetstream::message::StreamMessage, stream::RawMessageError>,
    ) -> Result<Option<jetstream::message::StreamMessage>, Read> {
        match got {
            Ok(m) => Ok(Some(m)),
            Err(e) => match e.kind() {
                stream::RawMessageErrorKind::NoMessageFound => Ok(None),
                stream::RawMessageErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(Read::Gone)
                }
                _ => Err(Read::Failed(self.failed(what, e))),
            },
        }
    }

    fn remember_last(&self, subject: &str, last: u64) {
        let mut cache = self.lock_cache();
        if cache.last.len() >= LAST_CACHE_MAX && !cache.last.contains_key(subject) {
            cache.last.clear();
        }
        cache.last.insert(subject.to_string(), last);
    }

    fn forget_last(&self, subject: &str) {
        self.lock_cache().last.remove(subject);
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    match e.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(js) => {
            js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        }
        _ => false,
    }
}

/// Whether JetStream answered "stream not found" somewhere in this error's sources.
fn names_stream_not_found(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            return js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND;
        }
        next = e.source();
    }
    false
}

/// Why a message get gave no answer.
enum Read {
    /// The stream does not exist (deleted).
    Gone,
    Failed(HistoryError),
}

/// Holds a user subject's append lock; on drop, forgets the lock if nobody waits for it.
struct Gate<'a> {
    gates: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    subject: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            gates.remove(&self.subject);
        }
    }
}

mod gap;
pub mod path;
mod read;
mod session;
#[cfg(test)]
mod tests;
mod write;

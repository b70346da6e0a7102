//! The `nats` store's settings and the one error type of its calls.
use std::fmt;
use std::time::Duration;

/// Where and how the history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// The JetStream stream (default `RINGWIRE_HISTORY`).
    pub stream: String,
    /// Subject prefix; the stream holds `<prefix>.>` (default `ringwire.history`).
    pub subject_prefix: String,
    /// Messages kept per user (at least 1; default 100).
    pub size: u64,
    /// Age after which a message is dropped (at least 1 s; default 10 minutes).
    pub ttl: Duration,
    /// Stream replicas (1 for one nats-server; up to 5 in a NATS cluster).
    pub replicas: usize,
    /// Bound of every call: connect, append, since, current (default 2 s).
    pub timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> NatsSettings {
        NatsSettings {
            stream: "RINGWIRE_HISTORY".into(),
            subject_prefix: "ringwire.history".into(),
            size: 100,
            ttl: Duration::from_secs(600),
            replicas: 1,
            timeout: Duration::from_secs(2),
        }
    }
}

impl NatsSettings {
    /// Checks what NATS would refuse or what would make the store misbehave.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let bad = |what: String| Err(HistoryError::Settings(what));
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .chars()
                .all(|c| !c.is_whitespace() && !matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if !name_ok {
            return bad(format!(
                "stream name {:?}: must be non-empty, without spaces, '.', '*', '>', '/' or '\\'",
                self.stream
            ));
        }
        let prefix_ok = self.subject_prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && c != '*' && c != '>')
        });
        if !prefix_ok {
            return bad(format!(
                "subject prefix {:?}: must be dot-separated non-empty tokens without spaces or wildcards",
                self.subject_prefix
            ));
        }
        if self.size == 0 || self.size > i64::MAX as u64 {
            return bad(format!(
                "size {}: messages kept per user must be at least 1",
                self.size
            ));
        }
        if self.ttl < Duration::from_secs(1) {
            return bad(format!("ttl {:?}: must be at least 1 s", self.ttl));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!(
                "replicas {}: must be 1 to 5 (JetStream's limit)",
                self.replicas
            ));
        }
        if self.timeout < Duration::from_millis(10) {
            return bad(format!(
                "timeout {:?}: must be at least 10 ms",
                self.timeout
            ));
        }
        Ok(())
    }
}

/// Everything that can go wrong with the `nats` store. Each message says what an operator
/// can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The settings cannot be used.
    Settings(String),
    /// No connection to NATS.
    Unreachable { url: String, detail: String },
    /// NATS did not answer in time.
    Timeout { op: &'static str, after: Duration },
    /// JetStream refused, or the history stream is missing or cannot be made as configured.
    Stream { stream: String, detail: String },
    /// An append kept losing the race with appends of other nodes to the same user.
    Contended { attempts: u32 },
    /// The queue to the NATS thread is full.
    Overloaded { capacity: usize },
    /// The NATS thread has stopped.
    Stopped,
    /// The NATS thread could not be started.
    Thread(String),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Settings(what) => write!(f, "history store nats: bad setting: {what}"),
            HistoryError::Unreachable { url, detail } => write!(
                f,
                "history store nats: NATS at {url} is unreachable ({detail}); is nats-server \
                 running with JetStream (-js)? The client keeps reconnecting"
            ),
            HistoryError::Timeout { op, after } => write!(
                f,
                "history store nats: {op} got no answer from NATS within {} ms",
                after.as_millis()
            ),
            HistoryError::Stream { stream, detail } => {
                write!(f, "history store nats: JetStream stream {stream}: {detail}")
            }
            HistoryError::Contended { attempts } => write!(
                f,
                "history store nats: append gave up after {attempts} attempts, each overtaken by \
                 another append to the same user"
            ),
            HistoryError::Overloaded { capacity } => write!(
                f,
                "history store nats: {capacity} requests already wait for the NATS thread; \
                 request refused"
            ),
            HistoryError::Stopped => write!(f, "history store nats: the NATS thread has stopped"),
            HistoryError::Thread(why) => {
                write!(f, "history store nats: cannot start the NATS thread: {why}")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

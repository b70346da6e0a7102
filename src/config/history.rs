//! `[history]` and `[nats]`: per-user push history for recovery across reconnects.
use super::ConfigError;
use serde::Deserialize;

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStore {
    /// On the core that owns the user, no lock; one node (a new epoch on every start).
    #[default]
    Memory,
    /// NATS JetStream (`[nats] url`): shared by the nodes of a cluster, survives restarts.
    Nats,
}

/// `[history]`: every push for a user gets a position (epoch, offset); the last `size`
/// pushes per user, none older than `ttl_secs`, are kept so that a client that reconnects
/// with its position gets what it missed. Restart to change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// The default of every endpoint (`[[endpoints]] history` overrides it). Default false:
    /// history costs memory and changes what a raw endpoint's client receives (an envelope).
    pub enabled: bool,
    pub store: HistoryStore,
    /// Pushes kept per user. 100 covers a long reconnect of a busy inbox.
    pub size: usize,
    /// Longest a push is kept. 300 s covers a laptop lid, a proxy timeout, a deploy.
    pub ttl_secs: u64,
    /// `memory` store: bytes each core may hold (messages, their bookkeeping and the
    /// streams); beyond, the oldest pushes of the core are dropped first and counted
    /// (`ringwire_history_evicted_total`), and a resume that needed them is told
    /// `recovered: false`. 256 MiB per core: about 820,000 pushes of 200 B.
    pub max_bytes_per_core: usize,
    /// `memory` store: users whose history position is remembered after their last push
    /// expired (so that a client idle for longer than `ttl_secs` still recovers, nothing
    /// having been pushed), per core. 48 B each; the oldest are forgotten first.
    pub max_idle_users_per_core: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: false,
            store: HistoryStore::Memory,
            size: 100,
            ttl_secs: 300,
            max_bytes_per_core: 256 << 20,
            max_idle_users_per_core: 1_000_000,
        }
    }
}

/// `[nats]`: the NATS server used by the `nats` history store (JetStream). Restart to change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Where nats-server listens (JetStream enabled: `nats-server -js`).
    pub url: String,
    /// The stream that holds the history (made if absent, its limits kept equal to
    /// `[history]`); every node of a cluster uses the same.
    pub stream: String,
    /// Subjects of the stream: `<subject_prefix>.<context>.u<user>`.
    pub subject_prefix: String,
    /// Copies of the stream in a NATS cluster (1 for one nats-server).
    pub replicas: usize,
    /// Longest a history call may take (record, resume) before it counts as failed: a push
    /// is then delivered live without a position, a resume is told `recovered: false`.
    pub timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "RINGWIRE_HISTORY".into(),
            subject_prefix: "ringwire.history".into(),
            replicas: 1,
            timeout_ms: 2000,
        }
    }
}

impl HistoryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.size == 0 || self.size > 100_000 {
            return Err(ConfigError(
                "history.size must be between 1 and 100000 pushes per user".into(),
            ));
        }
        if self.ttl_secs == 0 {
            return Err(ConfigError("history.ttl_secs must be > 0".into()));
        }
        if self.max_bytes_per_core < 1 << 20 {
            return Err(ConfigError(
                "history.max_bytes_per_core must be at least 1048576 (1 MiB)".into(),
            ));
        }
        Ok(())
    }
}

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

/// `[nats]`: the NATS server used by the `nats` history store (JetStream) and by the NATS
/// ingress (pushes published on NATS). Restart to change.
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
    /// Take pushes published on NATS (core NATS, no JetStream): `<ingress_subject>` carries
    /// the body of `POST /v1/push`, `<ingress_subject>.batch` that of `POST /v1/push/batch`,
    /// `<ingress_subject>.<context>.<user>` a push whose body may leave out context and user.
    /// Default false: a node subscribes to nothing it was not told to.
    pub ingress: bool,
    /// The subject of pushes (dot-separated tokens, no wildcards). `ringwire.push` sits beside
    /// the history store's `ringwire.history`.
    pub ingress_subject: String,
    /// The queue group every node subscribes in, so that each push is taken by one node of
    /// the cluster (which delivers it cluster-wide). The same on every node; `ringwire`.
    pub ingress_queue: String,
    /// NATS messages being handled at once (handed to the cores and not answered yet). 64
    /// keeps the cores busy (they answer in microseconds; with the `nats` history store a push
    /// waits for its append, about 50 us to 2 ms) and bounds what a flood holds.
    pub ingress_max_in_flight: usize,
    /// NATS messages the client keeps for the ingress while it is busy; past it the client
    /// drops them and counts them (`ringwire_nats_ingress_dropped_total`). 1024 absorbs a burst;
    /// memory held is at most (this + `ingress_max_in_flight`) x NATS `max_payload` (1 MiB by
    /// default).
    pub ingress_buffer: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "RINGWIRE_HISTORY".into(),
            subject_prefix: "ringwire.history".into(),
            replicas: 1,
            timeout_ms: 2000,
            ingress: false,
            ingress_subject: "ringwire.push".into(),
            ingress_queue: "ringwire".into(),
            ingress_max_in_flight: 64,
            ingress_buffer: 1024,
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

impl NatsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let subject_ok = self.ingress_subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        });
        if !subject_ok {
            return Err(ConfigError(format!(
                "nats.ingress_subject {:?}: must be dot-separated non-empty tokens of visible \
                 ASCII, without wildcards ('*', '>')",
                self.ingress_subject
            )));
        }
        if self.ingress_queue.is_empty()
            || !self.ingress_queue.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError(format!(
                "nats.ingress_queue {:?}: must be a non-empty name of visible ASCII",
                self.ingress_queue
            )));
        }
        if !(1..=65_536).contains(&self.ingress_max_in_flight) {
            return Err(ConfigError(
                "nats.ingress_max_in_flight must be between 1 and 65536".into(),
            ));
        }
        if !(1..=1 << 20).contains(&self.ingress_buffer) {
            return Err(ConfigError(
                "nats.ingress_buffer must be between 1 and 1048576 messages".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn ingress_keys_are_checked() {
        let ok = Config::from_toml("[nats]\ningress = true\ningress_subject = \"app.push\"\n");
        assert!(ok.unwrap().nats.ingress);
        for (bad, says) in [
            ("ingress_subject = \"app.*\"", "nats.ingress_subject"),
            ("ingress_subject = \"app..push\"", "nats.ingress_subject"),
            ("ingress_queue = \"\"", "nats.ingress_queue"),
            ("ingress_queue = \"a b\"", "nats.ingress_queue"),
            ("ingress_max_in_flight = 0", "nats.ingress_max_in_flight"),
            ("ingress_buffer = 0", "nats.ingress_buffer"),
        ] {
            let e = Config::from_toml(&format!("[nats]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}

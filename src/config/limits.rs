//! Every finite limit of the server, with its default and the reason for it.
use super::ConfigError;
use serde::Deserialize;

/// `[limits]`: protocol and admission limits. Reloadable keys are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A client must complete its HTTP upgrade request within this time (slowloris defence).
    /// 5 s is generous for real browsers on slow links and cheap to hold.
    pub handshake_timeout_ms: u64,
    /// Bytes of the HTTP request head (request line + headers). 8 KiB, like nginx's default
    /// large header buffer; cookies of real applications fit.
    pub max_header_bytes: usize,
    /// Number of request headers. 64 is more than any browser sends.
    pub max_headers: usize,
    /// Largest single frame payload accepted from a client. Push clients send small messages;
    /// 1 MiB leaves room for uploads of state without letting one frame pin much memory.
    /// At most 4 GiB - 1 (a connection keeps its limits in 32 bits).
    pub max_frame_bytes: u64,
    /// Largest (reassembled, decompressed) message accepted from a client (1 MiB, same reason;
    /// at most 4 GiB - 1).
    pub max_message_bytes: usize,
    /// Bytes queued for one socket before it is a slow consumer and closed with 1013.
    /// 1 MiB absorbs bursts of pushes; anything more is a client that stopped reading.
    pub max_outbound_bytes: usize,
    /// Server ping interval. 25 s stays well under the 60 s idle timeouts of proxies (nginx
    /// `proxy_read_timeout`, HAProxy `timeout tunnel` examples).
    pub ping_interval_secs: u64,
    /// A socket with no inbound traffic (not even a pong) for this long is closed as dead.
    /// Two missed pings plus slack.
    pub idle_timeout_secs: u64,
    /// Open sockets per user (all sessions, this node). 64 covers many tabs and devices; more
    /// is a runaway client. Answered 429.
    pub max_sockets_per_user: usize,
    /// Upgrades accepted per second on this node (token bucket, one second of burst);
    /// 0 = unlimited. Absorbs reconnect storms; answered 503 with a Retry-After that spreads
    /// the refused clients over the time this rate needs to admit them (at most 60 s).
    pub upgrade_rate_per_sec: u32,
    /// Connections per node. 0 = as many as the engine's fixed-file tables hold
    /// (RLIMIT_NOFILE soft limit per core, minus a reserve used to answer 503).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout_ms: 5_000,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            max_outbound_bytes: 1 << 20,
            ping_interval_secs: 25,
            idle_timeout_secs: 60,
            max_sockets_per_user: 64,
            upgrade_rate_per_sec: 0,
            max_connections: 0,
        }
    }
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(format!("limits.{m}")));
        if self.handshake_timeout_ms == 0 {
            return err("handshake_timeout_ms must be > 0");
        }
        if self.max_header_bytes < 256 {
            return err("max_header_bytes must be >= 256");
        }
        if self.max_headers < 8 {
            return err("max_headers must be >= 8");
        }
        if self.max_message_bytes == 0 || self.max_frame_bytes == 0 {
            return err("max_frame_bytes and max_message_bytes must be > 0");
        }
        if self.max_frame_bytes > u32::MAX as u64 || self.max_message_bytes > u32::MAX as usize {
            // A connection keeps them in 32 bits (memory per connection).
            return err("max_frame_bytes and max_message_bytes must be at most 4294967295");
        }
        if self.max_outbound_bytes < 4096 {
            return err("max_outbound_bytes must be >= 4096");
        }
        if self.max_sockets_per_user == 0 {
            return err("max_sockets_per_user must be > 0");
        }
        if self.ping_interval_secs > 90 {
            return err("ping_interval_secs must be <= 90 (proxies close idle tunnels after 60 s)");
        }
        if self.ping_interval_secs == 0 || self.idle_timeout_secs <= self.ping_interval_secs {
            return err("idle_timeout_secs must be greater than ping_interval_secs (> 0)");
        }
        Ok(())
    }
}

/// `[engine]`: io_uring sizing per core. Not reloadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Submission queue entries per ring (the completion queue is 4x). 4096 lets one loop turn
    /// submit a send to thousands of sockets during a fan-out without waiting.
    pub ring_entries: u32,
    /// Provided receive buffers per core. Idle connections hold none; this bounds how many
    /// sockets can have unread data in flight at once (the rest wait in their kernel buffers).
    /// The kernel is handed a window of them (64 at first, doubled whenever a receive finds
    /// none, halved after 10 s without), the most recently used first, so a quiet core
    /// touches only a few (`runtime::bufring`).
    pub recv_buffers: u16,
    /// Size of one provided receive buffer. 16 KiB reads a typical burst in one completion.
    pub recv_buffer_bytes: u32,
    /// Slots of each core's fixed-file (direct descriptor) table. 0 = the RLIMIT_NOFILE soft
    /// limit (the kernel's maximum per table). Direct descriptors do not count against the
    /// process's open-file limit, so N cores hold N times this many connections.
    pub fixed_files: u32,
    /// Slots per core kept free to accept connections beyond the limits only to answer them
    /// `503` (a client is never left hanging in the listen backlog).
    pub reserve_slots: u32,
    /// Listen backlog (also capped by net.core.somaxconn).
    pub backlog: u32,
    /// Time pushes, handshakes and loop turns into the latency histograms of `/metrics`
    /// (two reads of the vDSO clock a loop turn, about 40 ns; measured under 2% of a push,
    /// `benches/push.rs`). `false` leaves those histograms empty.
    pub latency_histograms: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ring_entries: 4096,
            recv_buffers: 1024,
            recv_buffer_bytes: 16 * 1024,
            fixed_files: 0,
            reserve_slots: 64,
            backlog: 4096,
            latency_histograms: true,
        }
    }
}

impl EngineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(format!("engine.{m}")));
        if !self.ring_entries.is_power_of_two() || !(64..=32768).contains(&self.ring_entries) {
            return err("ring_entries must be a power of two between 64 and 32768");
        }
        if !self.recv_buffers.is_power_of_two()
            || self.recv_buffers < 16
            || self.recv_buffers > 32768
        {
            return err("recv_buffers must be a power of two between 16 and 32768");
        }
        if !(1024..=1 << 20).contains(&self.recv_buffer_bytes) {
            return err("recv_buffer_bytes must be between 1024 and 1048576");
        }
        if self.reserve_slots < 1 {
            return err("reserve_slots must be >= 1");
        }
        Ok(())
    }
}

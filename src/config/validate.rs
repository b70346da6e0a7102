//! Checks serde cannot express, section by section, and warnings for what is valid but
//! worth an operator's attention.
use super::*;

impl Config {
    /// What is valid but worth an operator's attention, one sentence each (printed by
    /// `serve --check`, logged at start and on reload).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.admin.token {
            if t.len() < MIN_ADMIN_TOKEN_BYTES {
                out.push(format!(
                    "admin.token is {} bytes: accepted only because admin.listen is loopback; \
                     use at least {MIN_ADMIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)",
                    t.len()
                ));
            }
        }
        if self.history_on() && self.history.store == HistoryStore::Memory && self.cluster.is_some()
        {
            out.push(
                "history.store = \"memory\" in a cluster: a client recovers only on the node it \
                 left, and only while that node kept another socket of its user open (other \
                 nodes forward a user's pushes only to nodes holding its sockets); resumes \
                 elsewhere are answered recovered: false. Use store = \"nats\" for a cluster"
                    .into(),
            );
        }
        out
    }

    /// Cross-field checks that serde cannot express, section by section (the first error
    /// found is returned).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.engine.validate()?;
        self.compression.validate()?;
        self.server.validate()?;
        self.socketio.validate()?;
        self.admin.validate()?;
        validate_endpoints(&self.endpoints)?;
        self.sessions.validate()?;
        self.websockets.context_overrides().map_err(ConfigError)?;
        self.websockets.user_overrides().map_err(ConfigError)?;
        if let Some(c) = &self.cluster {
            c.validate(&self.sessions)?;
        }
        self.remote.validate()?;
        self.history.validate()?;
        if let Some(w) = &self.webhook {
            w.validate().map_err(ConfigError)?;
        }
        Ok(())
    }
}

impl CompressionConfig {
    /// `server_max_window_bits` within what zlib accepts.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(8..=15).contains(&self.server_max_window_bits) {
            return Err(ConfigError(
                "compression.server_max_window_bits must be between 8 and 15".into(),
            ));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// The drain deadline is not before the end of the drain.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.drain_deadline_secs < self.drain_secs {
            return Err(ConfigError(
                "server.drain_deadline_secs must be >= server.drain_secs".into(),
            ));
        }
        Ok(())
    }
}

impl SocketIoConfig {
    /// Non-zero timeouts and room for at least one HTTP body and packet.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_timeout_ms == 0 || self.polling_timeout_ms == 0 {
            return Err(ConfigError(
                "socketio.ping_timeout_ms and socketio.polling_timeout_ms must be > 0".into(),
            ));
        }
        if self.max_http_body_bytes < 1024 || self.max_buffered_packets == 0 {
            return Err(ConfigError(
                "socketio.max_http_body_bytes must be >= 1024 and max_buffered_packets > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Endpoint paths: absolute, unique, and authenticated unless the endpoint only echoes.
fn validate_endpoints(endpoints: &[EndpointConfig]) -> Result<(), ConfigError> {
    if endpoints.len() > 255 {
        return Err(ConfigError("at most 255 [[endpoints]]".into()));
    }
    if endpoints.is_empty() {
        return Err(ConfigError("at least one [[endpoints]] is required".into()));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        if !ep.path.starts_with('/') {
            return Err(ConfigError(format!(
                "endpoints[{i}].path = {:?} must start with '/'",
                ep.path
            )));
        }
        if ep.auth == EndpointAuth::None && ep.kind != EndpointKind::Echo {
            return Err(ConfigError(format!(
                "endpoints[{i}] ({}): auth = \"none\" is allowed for kind = \"echo\" only",
                ep.path
            )));
        }
        if ep.history == Some(true) && ep.kind == EndpointKind::Echo {
            return Err(ConfigError(format!(
                "endpoints[{i}] ({}): history = true needs a raw or socketio endpoint (echo has no user)",
                ep.path
            )));
        }
        if endpoints[..i].iter().any(|o| o.path == ep.path) {
            return Err(ConfigError(format!(
                "endpoints[{i}].path = {:?} is declared twice",
                ep.path
            )));
        }
    }
    Ok(())
}

impl SessionsConfig {
    /// A real 32-byte hex key (not a placeholder) when one is set, and a non-zero TTL cap.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.key {
            let key = key.trim();
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError(
                    "sessions.key must be 64 hex characters (32 bytes; `openssl rand -hex 32`)"
                        .into(),
                ));
            }
            // A placeholder (all zeros, "aaaa...") is not a key: anyone could mint sessions.
            if key
                .bytes()
                .all(|b| b.eq_ignore_ascii_case(&key.as_bytes()[0]))
            {
                return Err(ConfigError(
                    "sessions.key is one repeated character, a placeholder rather than a key: \
                     generate one with `openssl rand -hex 32`"
                        .into(),
                ));
            }
        }
        if self.max_ttl_secs == 0 {
            return Err(ConfigError("sessions.max_ttl_secs must be > 0".into()));
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// This node and its peers are named, unique and few enough, and every node can verify
    /// the sessions the others mint.
    fn validate(&self, sessions: &SessionsConfig) -> Result<(), ConfigError> {
        if self.node_id.is_empty() {
            return Err(ConfigError("cluster.node_id must not be empty".into()));
        }
        if sessions.key.is_none() {
            return Err(ConfigError(
                "[cluster] needs sessions.key: every node must verify the sessions the others mint \
                 (generate one with `openssl rand -hex 32` and set the same key on every node)"
                    .into(),
            ));
        }
        if self.peers.len() >= MAX_CLUSTER_NODES {
            return Err(ConfigError(format!(
                "cluster.peers: at most {} peers",
                MAX_CLUSTER_NODES - 1
            )));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.id.is_empty() {
                return Err(ConfigError(format!(
                    "cluster.peers[{i}].id must not be empty"
                )));
            }
            if p.id == self.node_id || self.peers[..i].iter().any(|o| o.id == p.id) {
                return Err(ConfigError(format!(
                    "cluster.peers: id {:?} is this node or listed twice",
                    p.id
                )));
            }
        }
        Ok(())
    }
}

impl RemoteConfig {
    /// Coalescing delays in order and non-zero queue bounds.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timer_ms == 0 {
            return Err(ConfigError("remote.timer_ms must be > 0".into()));
        }
        if self.max_delay_ms < self.delay_ms {
            return Err(ConfigError(
                "remote.max_delay_ms must be >= remote.delay_ms".into(),
            ));
        }
        if self.max_queued_messages == 0 || self.max_queued_bytes == 0 {
            return Err(ConfigError(
                "remote.max_queued_messages and remote.max_queued_bytes must be > 0".into(),
            ));
        }
        Ok(())
    }
}

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
        let sessions = self
            .endpoints
            .iter()
            .any(|ep| ep.auth == EndpointAuth::Session);
        if sessions && self.sessions.key.is_none() {
            out.push(
                "sessions.key is unset: a random key is made at each start, so every session \
                 minted before a restart is refused after it (401 \"unknown session\") and \
                 every client must log in again; set one (`ringwire keygen` prints a fresh key)"
                    .into(),
            );
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
        if let Some(j) = &self.jwt {
            j.validate()?;
        } else if let Some(ep) = self.endpoints.iter().find(|e| e.auth == EndpointAuth::Jwt) {
            return Err(ConfigError(format!(
                "endpoint {}: auth = \"jwt\" needs a [jwt] section (its keys and claims)",
                ep.path
            )));
        }
        if let Some(p) = &self.proxy {
            p.validate(self.limits.handshake_timeout_ms)?;
        } else if let Some(ep) = self
            .endpoints
            .iter()
            .find(|e| e.auth == EndpointAuth::Proxy)
        {
            return Err(ConfigError(format!(
                "endpoint {}: auth = \"proxy\" needs a [proxy] section (the application's url)",
                ep.path
            )));
        }
        self.sessions.validate()?;
        self.security.validate()?;
        self.websockets.context_overrides().map_err(ConfigError)?;
        self.websockets.user_overrides().map_err(ConfigError)?;
        if let Some(c) = &self.cluster {
            c.validate(&self.sessions)?;
        }
        self.remote.validate()?;
        self.history.validate()?;
        self.nats.validate()?;
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

impl SecurityConfig {
    /// Every `allowed_origins` entry is `*` or an origin as browsers send it:
    /// `scheme://host[:port]`, nothing after (an entry with a path never matches).
    fn validate(&self) -> Result<(), ConfigError> {
        for entry in &self.allowed_origins {
            if let Err(why) = check_origin(entry) {
                return Err(ConfigError(format!(
                    "security.allowed_origins entry {entry:?}: {why}"
                )));
            }
        }
        Ok(())
    }
}

/// Why `entry` is not an origin as a browser's `Origin` header carries it.
fn check_origin(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    let example = "write it as a browser sends it, e.g. \"https://app.example.com\" or \
                   \"http://localhost:3000\"";
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(format!("not scheme://host[:port]; {example}"));
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(format!("{scheme:?} is not a URL scheme; {example}"));
    }
    if let Some(i) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "an Origin has no path, query or fragment, so this never matches: drop {:?}",
            &rest[i..]
        ));
    }
    // `[v6 address]` or a name, then an optional `:port`.
    let after_host = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find(':').unwrap_or(rest.len())
    };
    let (host, port) = match rest[after_host..].strip_prefix(':') {
        Some(p) => (&rest[..after_host], Some(p)),
        None if after_host == rest.len() => (rest, None),
        None => return Err(format!("junk after the host; {example}")),
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'@') {
        return Err(format!(
            "no host, or one with spaces or credentials; {example}"
        ));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("port {p:?} is not 1 to 65535"));
        }
        // Browsers leave the scheme's default port out of an Origin.
        let default = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => "443",
            "http" | "ws" => "80",
            _ => "",
        };
        if p == default {
            return Err(format!(
                "browsers leave the default port out of an Origin, so this never matches: \
                 write {scheme}://{host}"
            ));
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
        if self.discovery == super::Discovery::Nats {
            if !self.peers.is_empty() {
                return Err(ConfigError(
                    "cluster.peers must be empty with discovery = \"nats\": the nodes find \
                     each other in the members bucket"
                        .into(),
                ));
            }
            if !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError(format!(
                    "cluster.node_id {:?}: with discovery = \"nats\" use letters, digits, '-' \
                     and '_' only (it is the node's key in the bucket)",
                    self.node_id
                )));
            }
            let addr = self.advertised();
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(ConfigError(format!(
                    "cluster.advertise: the other nodes cannot dial {addr}; set advertise to \
                     this node's address as they reach it"
                )));
            }
            if self.members_bucket.is_empty()
                || !self
                    .members_bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError(format!(
                    "cluster.members_bucket {:?}: letters, digits, '-' and '_' only",
                    self.members_bucket
                )));
            }
            if self.member_ttl_ms < 1_000 {
                return Err(ConfigError(
                    "cluster.member_ttl_ms must be at least 1000".into(),
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_are_origins_as_browsers_send_them() {
        for good in [
            "*",
            "https://app.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://app.example.com:8443",
            "http://app.example.com:443",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("https://app.example.com/", "drop \"/\""),
            ("https://app.example.com/app", "drop \"/app\""),
            ("app.example.com", "not scheme://host"),
            ("https://", "no host"),
            ("https://app.example.com:0", "port"),
            ("https://app.example.com:99999", "port"),
            ("https://user@app.example.com", "credentials"),
            ("1http://x", "not a URL scheme"),
            ("http://[::1]x", "junk"),
            (
                "https://app.example.com:443",
                "write https://app.example.com",
            ),
            ("http://localhost:80", "write http://localhost"),
        ] {
            let err = check_origin(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let text = "[security]\nallowed_origins = [\"https://app.example.com/\"]\n";
        let err = Config::from_toml(text).expect_err("a path never matches");
        assert!(err.0.contains("security.allowed_origins") && err.0.contains("never matches"));
    }

    #[test]
    fn message_limits_fit_in_32_bits() {
        let ok = "[limits]\nmax_frame_bytes = 4294967295\nmax_message_bytes = 4294967295\n";
        assert!(Config::from_toml(ok).is_ok());
        for key in ["max_frame_bytes", "max_message_bytes"] {
            let text = format!("[limits]\n{key} = 4294967296\n");
            let err = Config::from_toml(&text).expect_err(key);
            assert!(err.0.contains("at most 4294967295"), "{key}: {}", err.0);
        }
    }

    #[test]
    fn an_unset_session_key_is_warned_about_where_sessions_are_used() {
        let session = "[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"session\"\n";
        let warned = |c: &Config| c.warnings().iter().any(|w| w.contains("sessions.key"));
        assert!(warned(&Config::from_toml(session).unwrap()));
        let key = format!(
            "[sessions]\nkey = \"{}\"\n{session}",
            "0123456789abcdef".repeat(4)
        );
        assert!(!warned(&Config::from_toml(&key).unwrap()));
        let none = "[[endpoints]]\npath = \"/e\"\nkind = \"echo\"\nauth = \"none\"\n";
        assert!(!warned(&Config::from_toml(none).unwrap()));
    }
}

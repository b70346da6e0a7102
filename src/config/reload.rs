//! What a reload (SIGHUP or `POST /v1/config/reload`) makes of a new file: the configuration
//! to apply now, and the changed keys that only a restart applies (they keep their running
//! values until then).
use super::{Config, ConfigError};

/// The outcome of [`Config::reload`].
#[derive(Debug)]
pub struct Reload {
    /// The new file with every restart-only key at its running value.
    pub applied: Config,
    /// Restart-only keys (or sections) the file changed, in a stable order.
    pub restart_needed: Vec<&'static str>,
}

impl Config {
    /// Reload from `self` (running) to `new` (already validated on its own).
    ///
    /// Applied at once: `[websockets]`, `[limits]`, `[remote]`, `[socketio]`,
    /// `[compression]`, `[security]`, `[tls]` certificates, `[jwt]` (its key file read again)
    /// but for the `jwks_*` keys, `server.drain_secs` and
    /// `drain_deadline_secs`, `admin.token` and the admin timeouts. Restart only: the public
    /// listener, cores and pinning, `[engine]`, `admin.listen`, `admin.max_connections`, the
    /// endpoints, `sessions.key`, `[webhook]`, `[nats]`, `[proxy]`.
    ///
    /// Refused when the admin settings that would be in force are invalid together: a file
    /// that moves `admin.listen` to loopback and drops the token would otherwise leave the
    /// running public listener (kept until a restart) without authentication.
    pub fn reload(&self, new: Config) -> Result<Reload, ConfigError> {
        let cur = self;
        let mut restart_needed = Vec::new();
        let mut changed = |yes: bool, name: &'static str| {
            if yes {
                restart_needed.push(name);
            }
        };
        changed(
            new.server.listen != cur.server.listen
                || new.server.cores != cur.server.cores
                || new.server.pin_threads != cur.server.pin_threads,
            "server",
        );
        changed(new.engine != cur.engine, "engine");
        changed(new.admin.listen != cur.admin.listen, "admin.listen");
        changed(
            new.admin.max_connections != cur.admin.max_connections,
            "admin.max_connections",
        );
        changed(
            new.endpoints
                .iter()
                .map(|e| (&e.path, e.kind, e.auth))
                .ne(cur.endpoints.iter().map(|e| (&e.path, e.kind, e.auth))),
            "endpoints",
        );
        changed(new.sessions.key != cur.sessions.key, "sessions.key");
        changed(new.webhook != cur.webhook, "webhook");
        changed(new.nats != cur.nats, "nats");
        changed(new.proxy != cur.proxy, "proxy");
        let jwks = |c: &Config| {
            c.jwt.as_ref().map(|j| {
                (
                    j.jwks_url.clone(),
                    j.jwks_ca_file.clone(),
                    j.jwks_refresh_secs,
                    j.jwks_timeout_ms,
                    j.jwks_max_bytes,
                )
            })
        };
        let running_jwks = jwks(cur);
        changed(jwks(&new) != running_jwks, "jwt.jwks_url");

        let mut applied = new;
        applied.server = super::ServerConfig {
            drain_secs: applied.server.drain_secs,
            drain_deadline_secs: applied.server.drain_deadline_secs,
            ..cur.server.clone()
        };
        applied.engine = cur.engine;
        applied.admin.listen = cur.admin.listen;
        applied.admin.max_connections = cur.admin.max_connections;
        applied.endpoints = cur.endpoints.clone();
        applied.sessions.key = cur.sessions.key.clone();
        applied.webhook = cur.webhook.clone();
        applied.nats = cur.nats.clone();
        applied.proxy = cur.proxy.clone();
        // The key set's fetcher runs with the settings it started with.
        if let Some(j) = applied.jwt.as_mut() {
            let d = super::JwtConfig::default();
            let (url, ca, refresh, timeout, max) = running_jwks.unwrap_or((
                None,
                None,
                d.jwks_refresh_secs,
                d.jwks_timeout_ms,
                d.jwks_max_bytes,
            ));
            j.jwks_url = url;
            j.jwks_ca_file = ca;
            j.jwks_refresh_secs = refresh;
            j.jwks_timeout_ms = timeout;
            j.jwks_max_bytes = max;
        }
        applied.admin.validate().map_err(|e| {
            ConfigError(format!(
                "{e} (the running admin listener is {})",
                cur.admin.listen
            ))
        })?;
        Ok(Reload {
            applied,
            restart_needed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text).expect(text)
    }

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let cur = cfg("[server]\nlisten = \"127.0.0.1:8080\"\ncores = 2\n");
        let new = cfg(
            "[server]\nlisten = \"127.0.0.1:9090\"\ncores = 2\ndrain_secs = 3\n\
             [limits]\nmax_sockets_per_user = 7\n",
        );
        let r = cur.reload(new).unwrap();
        assert_eq!(r.restart_needed, ["server"]);
        assert_eq!(r.applied.server.listen, cur.server.listen);
        assert_eq!(
            r.applied.server.drain_secs, 3,
            "drain settings apply at once"
        );
        assert_eq!(r.applied.limits.max_sockets_per_user, 7);
    }

    #[test]
    fn jwt_applies_but_its_key_set_settings_need_a_restart() {
        let hex = "ab".repeat(32);
        let run = cfg(&format!(
            "[jwt]\nalgorithms = [\"HS256\", \"RS256\"]\nsecret = \"{hex}\"\n\
             jwks_url = \"https://a/jwks\"\n"
        ));
        let new = cfg(&format!(
            "[jwt]\nalgorithms = [\"HS256\", \"RS256\"]\nsecret = \"{hex}\"\n\
             jwks_url = \"https://b/jwks\"\njwks_refresh_secs = 60\nleeway_secs = 5\n"
        ));
        let r = run.reload(new).unwrap();
        assert_eq!(r.restart_needed, ["jwt.jwks_url"]);
        let j = r.applied.jwt.unwrap();
        assert_eq!(j.leeway_secs, 5, "the rest of [jwt] applies");
        assert_eq!(j.jwks_url.as_deref(), Some("https://a/jwks"));
        assert_eq!(j.jwks_refresh_secs, 300);
    }

    #[test]
    fn pinning_needs_a_restart() {
        let cur = cfg("[server]\npin_threads = true\n");
        let r = cur.reload(cfg("[server]\npin_threads = false\n")).unwrap();
        assert_eq!(r.restart_needed, ["server"]);
        assert!(r.applied.server.pin_threads);
    }

    #[test]
    fn nothing_changed_nothing_to_restart() {
        let cur = cfg("");
        let r = cur.reload(cfg("")).unwrap();
        assert!(r.restart_needed.is_empty());
    }

    #[test]
    fn a_public_admin_listener_keeps_its_token() {
        let cur = cfg("[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"0123456789abcdef\"\n");
        let err = cur.reload(cfg("")).unwrap_err();
        assert!(
            err.0.contains("running admin listener is 0.0.0.0:8081"),
            "{err}"
        );
    }
}

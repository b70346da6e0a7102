//! `[proxy]`: upgrades of `auth = "proxy"` endpoints authenticated by the application itself
//! (a connect proxy): the request's credentials are forwarded to `url`, and the answer admits
//! or refuses the client. One section for every such endpoint; absent = no endpoint may use
//! `auth = "proxy"`. Restart to change (the client runs with the settings it started with).
use super::ConfigError;
use serde::Deserialize;

/// `[proxy]`: where the application answers, how long it may take, what is cached and how
/// many calls may be under way. See `docs/proxy-auth.md` for the request and the answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The application's URL (`http://` only, like the webhook: a backend on a private
    /// network or a local sidecar). Each upgrade (or polling request) of an `auth = "proxy"`
    /// endpoint not answered from the cache is a `GET` of this URL. Required.
    pub url: String,
    /// Longest wait for the answer (connect included); then the client gets 503 with
    /// `Retry-After`. Must be below `limits.handshake_timeout_ms` (the deadline that runs
    /// meanwhile), so that the client hears why.
    pub timeout_ms: u64,
    /// How long an admitting answer is reused for the same credentials and endpoint, without
    /// asking the application (never past the answer's `expires_at`). 0 = ask every time.
    /// Refusals and failures are never cached.
    pub cache_ttl_ms: u64,
    /// Most answers kept; the oldest go first. Bounds the cache's memory (about 200 bytes
    /// an entry).
    pub cache_max_entries: usize,
    /// Most calls to the application under way at once (answers to the same credentials
    /// asked meanwhile share one call). More: 503 with `Retry-After` at once, without a call.
    pub max_in_flight: usize,
    /// Request headers forwarded to the application as they came (lowercase names), and
    /// hashed into the cache key. Cookie, Authorization and Origin by default: the
    /// credentials a browser sends and where the page came from.
    pub forward_headers: Vec<String>,
    /// The `Retry-After` (seconds) of a 503 when the application is slow, down or busy.
    pub retry_after_secs: u32,
    /// Largest answer body read; a longer one is a failed call (503).
    pub max_answer_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            url: String::new(),
            timeout_ms: 2_000,
            cache_ttl_ms: 10_000,
            cache_max_entries: 100_000,
            max_in_flight: 256,
            forward_headers: vec!["cookie".into(), "authorization".into(), "origin".into()],
            retry_after_secs: 5,
            max_answer_bytes: 16 * 1024,
        }
    }
}

/// Most headers forwarded (each is looked up per request).
pub const MAX_FORWARD_HEADERS: usize = 16;

impl ProxyConfig {
    /// The URL (`http://host[:port]/path`), the bounds, the header names.
    pub fn validate(&self, handshake_timeout_ms: u64) -> Result<(), ConfigError> {
        parse_url(&self.url).map_err(ConfigError)?;
        if self.timeout_ms == 0 || self.timeout_ms >= handshake_timeout_ms {
            return Err(ConfigError(format!(
                "proxy.timeout_ms must be between 1 and limits.handshake_timeout_ms - 1 ({}): \
                 a longer wait would end in the handshake timeout (408) instead of 503",
                handshake_timeout_ms.saturating_sub(1)
            )));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError("proxy.max_in_flight must be at least 1".into()));
        }
        if self.cache_ttl_ms > 0 && self.cache_max_entries == 0 {
            return Err(ConfigError(
                "proxy.cache_max_entries must be at least 1 when cache_ttl_ms > 0".into(),
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            return Err(ConfigError(
                "proxy.retry_after_secs must be between 1 and 3600".into(),
            ));
        }
        if !(64..=1 << 20).contains(&self.max_answer_bytes) {
            return Err(ConfigError(
                "proxy.max_answer_bytes must be between 64 and 1048576".into(),
            ));
        }
        if self.forward_headers.len() > MAX_FORWARD_HEADERS {
            return Err(ConfigError(format!(
                "proxy.forward_headers: at most {MAX_FORWARD_HEADERS} headers"
            )));
        }
        for h in &self.forward_headers {
            let token = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !token {
                return Err(ConfigError(format!(
                    "proxy.forward_headers: {h:?} is not a lowercase header name"
                )));
            }
            if matches!(
                h.as_str(),
                "host" | "content-length" | "connection" | "x-forwarded-uri"
            ) {
                return Err(ConfigError(format!(
                    "proxy.forward_headers: {h:?} is set by ringwire itself"
                )));
            }
        }
        Ok(())
    }
}

/// `url` as an `http://` URI with a host.
pub fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    if url.is_empty() {
        return Err("proxy.url is required (e.g. \"http://127.0.0.1:3000/ringwire/auth\")".into());
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("proxy.url = {url:?} is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "proxy.url = {url:?} must start with http:// (TLS to the application is not \
             supported yet: use a backend on a private network or a local sidecar)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("proxy.url = {url:?} has no host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<ProxyConfig, String> {
        let c: ProxyConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        c.validate(5_000).map_err(|e| e.0)?;
        Ok(c)
    }

    #[test]
    fn validation() {
        let c = parse("url = \"http://127.0.0.1:3000/auth\"").unwrap();
        assert_eq!(c.forward_headers, ["cookie", "authorization", "origin"]);
        assert!(parse("").unwrap_err().contains("required"));
        assert!(parse("url = \"https://x/a\"")
            .unwrap_err()
            .contains("http://"));
        assert!(parse("url = \"http://x/\"\ntimeout_ms = 5000")
            .unwrap_err()
            .contains("handshake_timeout_ms"));
        assert!(parse("url = \"http://x/\"\nmax_in_flight = 0").is_err());
        assert!(parse("url = \"http://x/\"\nforward_headers = [\"Cookie\"]").is_err());
        assert!(parse("url = \"http://x/\"\nforward_headers = [\"host\"]").is_err());
        assert!(
            parse("url = \"http://x/\"\nnope = 1").is_err(),
            "unknown keys refused"
        );
        let c = parse("url = \"http://x/\"\nforward_headers = [\"cookie\", \"x-csrf-token\"]");
        assert_eq!(c.unwrap().forward_headers.len(), 2);
    }

    /// An `auth = "proxy"` endpoint needs `[proxy]`, checked with the handshake deadline it
    /// must beat; `[proxy]` needs a restart on reload.
    #[test]
    fn endpoints_need_the_section_and_reload_keeps_it() {
        use crate::config::Config;
        let ep = "[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"proxy\"\n";
        let e = Config::from_toml(ep).unwrap_err();
        assert!(e.0.contains("needs a [proxy] section"), "{e:?}");
        let slow =
            format!("[limits]\nhandshake_timeout_ms = 1000\n[proxy]\nurl = \"http://a/\"\n{ep}");
        assert!(Config::from_toml(&slow).is_err(), "timeout_ms 2000 >= 1000");
        let cur = Config::from_toml(&format!("[proxy]\nurl = \"http://a/\"\n{ep}")).unwrap();
        let new = Config::from_toml(&format!("[proxy]\nurl = \"http://b/\"\n{ep}")).unwrap();
        let r = cur.reload(new).unwrap();
        assert_eq!(r.restart_needed, ["proxy"]);
        assert_eq!(r.applied.proxy.unwrap().url, "http://a/");
    }

    /// The commented `[proxy]` of the example file names every key with its default.
    #[test]
    fn example_file_shows_the_defaults() {
        let text = include_str!("../../tuning/ringwire.example.toml");
        let section = &text[text.find("# [proxy]").expect("example has # [proxy]")..];
        let mut shown = Vec::new();
        for line in section.lines().skip(1) {
            let Some(kv) = line.strip_prefix("# ") else {
                break;
            };
            if kv.starts_with(' ') {
                continue;
            }
            let kv = kv.split("  #").next().unwrap().trim();
            let key = kv.split(" = ").next().unwrap();
            let example: ProxyConfig = toml::from_str(kv).unwrap_or_else(|e| panic!("{kv}: {e}"));
            if key != "url" {
                assert_eq!(example, ProxyConfig::default(), "{kv}");
            }
            shown.push(key.to_string());
        }
        for key in [
            "url",
            "timeout_ms",
            "cache_ttl_ms",
            "cache_max_entries",
            "max_in_flight",
            "forward_headers",
            "retry_after_secs",
            "max_answer_bytes",
        ] {
            assert!(shown.iter().any(|k| k == key), "{key} shown in the example");
        }
    }
}

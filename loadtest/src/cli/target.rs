//! Where to connect: `--url` and `--admin-url` parsed, query parameters added
//! (`session=`, `EIO=`, `transport=`), `--source-range` expanded.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};

use crate::cli::choices::Protocol;

/// Parsed `ws://host:port/path` (or `wss://`) target.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `wss://`: TLS (rustls; `--ca` adds trusted certificates).
    pub tls: bool,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("ws://") {
            Self::parse_authority(url, rest, 80)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            let mut t = Self::parse_authority(url, rest, 443)?;
            t.tls = true;
            Ok(t)
        } else {
            bail!("URL must start with ws:// or wss:// (got {url:?})")
        }
    }

    /// Like [`Target::parse`] for `protocol`: Socket.IO URLs may also be http://.
    pub fn parse_for(url: &str, protocol: Protocol) -> Result<Self> {
        match (protocol, url.strip_prefix("http://")) {
            (Protocol::Socketio, Some(rest)) => Self::parse_authority(url, rest, 80),
            (Protocol::Socketio, None) if url.starts_with("https://") => {
                bail!("https:// is not supported for long-polling; use wss:// (websocket transport) or http://")
            }
            (Protocol::Socketio, None)
                if !url.starts_with("ws://") && !url.starts_with("wss://") =>
            {
                bail!("--url must start with ws://, wss:// or http:// (got {url:?})")
            }
            _ => Self::parse(url),
        }
    }

    fn parse_authority(url: &str, rest: &str, default_port: u16) -> Result<Self> {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() {
            bail!("URL {url:?} has no host");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').context("unterminated [ in IPv6 host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().context("bad port")?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().context("bad port")?),
                None => (authority.to_string(), default_port),
            }
        };
        Ok(Target {
            host,
            port,
            tls: false,
        })
    }
}

/// Parsed `http://host:port/prefix` admin API base URL.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    pub host: String,
    pub port: u16,
    /// Value of the Host header.
    pub authority: String,
    /// Path prefix without a trailing slash ("" for the root).
    pub prefix: String,
}

impl AdminTarget {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            bail!("https:// admin URLs are not supported (no TLS); use http://")
        } else {
            bail!("--admin-url must start with http:// (got {url:?})")
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let t = Target::parse(&format!("ws://{authority}"))?;
        Ok(AdminTarget {
            host: t.host,
            port: t.port,
            authority: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}
/// Splits `scheme://authority/path?query` into (authority, `/path?query`), dropping
/// any fragment. The path is `/` when the URL has none.
pub fn split_url(url: &str) -> (String, String) {
    let base = url.split('#').next().unwrap_or(url);
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let i = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(i);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    (authority.to_string(), path)
}

/// Appends `session=<id>` to the query of a ws:// URL (percent-encoding the id).
pub fn url_with_session(url: &str, session: &str) -> String {
    url_with_param(url, "session", session)
}

/// Appends `key=value` to the query of a URL (percent-encoding the value).
pub fn url_with_param(url: &str, key: &str, value: &str) -> String {
    // A fragment is never sent in the handshake: drop it.
    let base = url.split('#').next().unwrap_or(url);
    let sep = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    format!("{base}{sep}{key}={}", percent_encode(value))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut enc = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc
}

/// Parses `a.b.c.d-e.f.g.h` into the inclusive list of IPv4 addresses.
pub fn parse_source_range(s: &str) -> Result<Vec<IpAddr>> {
    let (a, b) = s
        .split_once('-')
        .context("--source-range must look like 127.0.0.1-127.0.0.20")?;
    let a: Ipv4Addr = a.trim().parse().context("bad start address")?;
    let b: Ipv4Addr = b.trim().parse().context("bad end address")?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a {
        bail!("--source-range end is before its start");
    }
    if b - a >= 65_536 {
        bail!("--source-range is too large (max 65536 addresses)");
    }
    Ok((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("ws://127.0.0.1:8080/echo").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        let t = Target::parse("ws://example.com/x?y").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 80));
        let t = Target::parse("ws://[::1]:9000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert!(Target::parse("http://x").is_err());
        let t = Target::parse("wss://x/ws").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("x", 443, true));
    }

    #[test]
    fn parses_admin_urls() {
        let a = AdminTarget::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("127.0.0.1", 8081, "")
        );
        let a = AdminTarget::parse("http://localhost/admin/").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("localhost", 80, "/admin")
        );
        assert_eq!(a.authority, "localhost");
        assert!(AdminTarget::parse("https://x").is_err());
        assert!(AdminTarget::parse("ws://x").is_err());
    }

    #[test]
    fn appends_session() {
        assert_eq!(
            url_with_session("ws://h:1/ws", "ab-1"),
            "ws://h:1/ws?session=ab-1"
        );
        assert_eq!(
            url_with_session("ws://h/ws?x=1", "a/b"),
            "ws://h/ws?x=1&session=a%2Fb"
        );
        assert_eq!(url_with_session("ws://h/ws?", "a"), "ws://h/ws?session=a");
    }

    #[test]
    fn parses_ranges() {
        let r = parse_source_range("127.0.0.1-127.0.0.20").unwrap();
        assert_eq!(r.len(), 20);
        assert_eq!(r[19], "127.0.0.20".parse::<IpAddr>().unwrap());
        let r = parse_source_range("10.0.0.255-10.0.1.1").unwrap();
        assert_eq!(r.len(), 3);
        assert!(parse_source_range("127.0.0.5-127.0.0.1").is_err());
    }
}

//! The WebSocket opening handshake of a client, sans-IO: the request head (with the
//! `--origin` and `--header` values and the session cookie), and the check of the answer.

use crate::wire::errors::{parse_retry_after, ConnectError};

/// Longest answer head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// The GET request head that upgrades `path_and_query` on `authority`.
pub fn request(authority: &str, path_and_query: &str, key: &str, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Where the answer head ends (the index after its blank line), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks the answer head: `101` with the `Sec-WebSocket-Accept` of `key`. Another status
/// is the failure `http_<status>` (with its `Retry-After`).
pub fn check_answer(head: &[u8], key: &str) -> Result<(), ConnectError> {
    let text = std::str::from_utf8(head).map_err(|_| "handshake_error")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err("handshake_error".into());
    };
    let status: u16 = match (version.starts_with("HTTP/1."), code.parse()) {
        (true, Ok(s)) => s,
        _ => return Err("handshake_error".into()),
    };
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if status != 101 {
        return Err(ConnectError {
            kind: format!("http_{status}"),
            retry_after: header("retry-after").and_then(parse_retry_after),
        });
    }
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept") != Some(want.as_str()) {
        return Err("handshake_error".into());
    }
    Ok(())
}

/// A `--header 'Name: value'` argument as (name, value).
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("--header {arg:?}: expected 'Name: value'"))?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("--header {arg:?}: {name:?} is not a header name"));
    }
    let value = value.trim();
    if value.chars().any(|c| c == '\r' || c == '\n') {
        return Err(format!("--header {arg:?}: the value has a line break"));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_extra_headers() {
        let r = request(
            "h:1",
            "/ws?a=1",
            "k==",
            &[("Origin", "https://o"), ("X-A", "b")],
        );
        assert!(r.starts_with("GET /ws?a=1 HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Key: k==\r\n"));
        assert!(r.ends_with("Origin: https://o\r\nX-A: b\r\n\r\n"));
    }

    #[test]
    fn answers() {
        // RFC 6455's example key and accept value.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(head_end(ok), Some(ok.len()));
        assert_eq!(check_answer(ok, key), Ok(()));
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(check_answer(bad, key), Err("handshake_error".into()));
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n\r\n";
        assert_eq!(
            check_answer(busy, key),
            Err(ConnectError {
                kind: "http_503".into(),
                retry_after: Some(2)
            })
        );
        assert_eq!(
            check_answer(b"junk\r\n\r\n", key),
            Err("handshake_error".into())
        );
    }

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header_arg("X-Tenant:  blue "),
            Ok(("X-Tenant".into(), "blue".into()))
        );
        assert!(parse_header_arg("no colon").is_err());
        assert!(parse_header_arg("Bad Name: x").is_err());
        assert!(parse_header_arg(": x").is_err());
    }
}

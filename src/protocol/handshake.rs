//! HTTP/1.1 upgrade: request-head parsing (httparse, zero copy), RFC 6455
//! section 4.2.1 validation, and the `101` / error responses.

use std::mem::MaybeUninit;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::error::ProtocolError;

/// The GUID appended to `Sec-WebSocket-Key` (RFC 6455 1.3).
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Hard cap on header lines whatever the limits say (stack array size).
const MAX_HEADERS_CAP: usize = 256;

/// Bounds on the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Request line + headers + final CRLFCRLF (default 8192).
    pub max_header_bytes: usize,
    /// Header lines (default 64, capped at 256).
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_header_bytes: 8192,
            max_headers: 64,
        }
    }
}

/// The request headers, in order, borrowing the receive buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers<'a> {
    list: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Headers<'a> {
    /// First value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// First value of `name` if it is UTF-8, trimmed of spaces/tabs.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        self.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(trim_ows)
    }

    /// Every value of header `name`, in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.list
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// All `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.list.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A parsed HTTP request head, borrowing the receive buffer (no copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Request target up to (not including) `?`.
    pub path: &'a str,
    /// After `?`; `""` if none.
    pub query: &'a str,
    pub headers: Headers<'a>,
    /// Bytes consumed, including the final CRLFCRLF.
    pub head_len: usize,
    /// HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more — but `Err(HeadersTooLarge)` once
/// `buf.len() > max_header_bytes` without a complete head (or when the
/// complete head is longer than that).
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &HandshakeLimits,
) -> Result<Option<Request<'a>>, ProtocolError> {
    // Uninitialized header slots: no 8 KiB memset per parse (safe API).
    let mut raw = [const { MaybeUninit::<httparse::Header<'a>>::uninit() }; MAX_HEADERS_CAP];
    let n_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let status = match req.parse_with_uninit_headers(window, &mut raw[..n_headers]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::TooManyHeaders),
        Err(_) => return Err(ProtocolError::MalformedRequest),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() > limits.max_header_bytes {
                Err(ProtocolError::HeadersTooLarge)
            } else {
                Ok(None)
            };
        }
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(ProtocolError::MalformedRequest);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let list = req.headers.iter().map(|h| (h.name, h.value)).collect();
    Ok(Some(Request {
        method,
        path,
        query,
        headers: Headers { list },
        head_len,
        version,
    }))
}

/// The length of the request's body, framed as RFC 9112 6.3 says and as nginx and hyper
/// enforce it: no `Transfer-Encoding` (chunked request bodies are not accepted), and every
/// `Content-Length` value (repeated headers and comma lists alike) exactly 1*DIGIT and equal
/// to the others. Anything else is an error the caller answers with 400 and a closed
/// connection: a proxy in front that read the framing differently would otherwise take the
/// rest of this request as the start of the next one (request smuggling).
pub fn body_length(req: &Request) -> Result<u64, ProtocolError> {
    if req.headers.get("transfer-encoding").is_some() {
        return Err(ProtocolError::TransferEncodingNotAccepted);
    }
    let mut length = None;
    for value in req.headers.all("content-length") {
        for item in value.split(|&b| b == b',') {
            let n = parse_decimal(item.trim_ascii()).ok_or(ProtocolError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ProtocolError::InvalidContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

/// 1*DIGIT as a u64: no sign, no spaces, no empty string, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// What a valid RFC 6455 upgrade request carries (borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// `Sec-WebSocket-Key`, trimmed; feed it to [`accept_key`].
    pub key: &'a str,
    pub origin: Option<&'a str>,
    /// The first `Sec-WebSocket-Extensions` value that mentions
    /// `permessage-deflate` (or else the first one); pass to
    /// [`super::deflate::negotiate`].
    pub deflate_offer: Option<&'a str>,
    /// The first `Sec-WebSocket-Protocol` value.
    pub protocols: Option<&'a str>,
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// True if some value of header `name` is a comma-separated list
/// containing `token` (case-insensitive; `token/version` also matches).
fn header_has_token(req: &Request, name: &str, token: &str) -> bool {
    req.headers.all(name).any(|v| {
        v.split(|&b| b == b',').any(|t| {
            let t = t.split(|&b| b == b'/').next().unwrap_or(t);
            let t = t.trim_ascii();
            t.eq_ignore_ascii_case(token.as_bytes())
        })
    })
}

/// True if the request asks for `Upgrade: websocket` (to route plain HTTP
/// vs upgrade; full validation is [`validate_upgrade`]).
pub fn is_upgrade_request(req: &Request) -> bool {
    header_has_token(req, "upgrade", "websocket")
}

/// Validates an RFC 6455 opening handshake (section 4.2.1).
pub fn validate_upgrade<'a>(req: &Request<'a>) -> Result<Upgrade<'a>, ProtocolError> {
    if req.method != "GET" {
        return Err(ProtocolError::MethodNotAllowed);
    }
    if req.version != 1 {
        return Err(ProtocolError::UnsupportedHttpVersion);
    }
    if req.headers.all("host").count() != 1 {
        return Err(ProtocolError::MissingHost);
    }
    if req.headers.get("transfer-encoding").is_some() {
        return Err(ProtocolError::UnexpectedBody);
    }
    if body_length(req)? != 0 {
        return Err(ProtocolError::UnexpectedBody);
    }
    if !is_upgrade_request(req) || !header_has_token(req, "connection", "upgrade") {
        return Err(ProtocolError::NotAnUpgrade);
    }
    let mut versions = req.headers.all("sec-websocket-version");
    match (versions.next().map(<[u8]>::trim_ascii), versions.next()) {
        (Some(b"13"), None) => {}
        _ => return Err(ProtocolError::UnsupportedWebSocketVersion),
    }
    let mut keys = req.headers.all("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => {
            std::str::from_utf8(k.trim_ascii()).map_err(|_| ProtocolError::InvalidKey)?
        }
        _ => return Err(ProtocolError::InvalidKey),
    };
    let mut decoded = [0u8; 18];
    if key.len() != 24 || STANDARD.decode_slice(key, &mut decoded) != Ok(16) {
        return Err(ProtocolError::InvalidKey);
    }
    let exts = || {
        req.headers
            .all("sec-websocket-extensions")
            .filter_map(|v| std::str::from_utf8(v).ok())
    };
    let deflate_offer = exts()
        .find(|v| v.contains("permessage-deflate"))
        .or_else(|| exts().next())
        .map(trim_ows);
    Ok(Upgrade {
        key,
        origin: req.headers.get_str("origin"),
        deflate_offer,
        protocols: req.headers.get_str("sec-websocket-protocol"),
    })
}

/// `base64(sha1(key + GUID))`, the `Sec-WebSocket-Accept` value.
pub fn accept_key(key: &str) -> [u8; 28] {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 base64 chars.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

/// Appends the `101 Switching Protocols` response, with
/// `Sec-WebSocket-Extensions: {extension}` if given.
pub fn write_switching_protocols(out: &mut Vec<u8>, key: &str, extension: Option<&str>) {
    write_switching_protocols_with_protocol(out, key, extension, None);
}

/// [`write_switching_protocols`] plus `Sec-WebSocket-Protocol: {protocol}`
/// (browsers fail the connection if they offered subprotocols and none is
/// echoed). Values containing CR, LF or NUL are skipped.
pub fn write_switching_protocols_with_protocol(
    out: &mut Vec<u8>,
    key: &str,
    extension: Option<&str>,
    protocol: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    for (name, value) in [
        ("Sec-WebSocket-Extensions", extension),
        ("Sec-WebSocket-Protocol", protocol),
    ] {
        if let Some(v) = value.filter(|v| safe_header_value(v)) {
            push_header(out, name, v);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn safe_header_value(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Canonical reason phrase for the statuses we emit.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends a complete plain-text HTTP response (`Connection: close`):
/// body = `body` + `"\n"`. Extra headers with CR/LF in them are skipped.
pub fn write_http_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len() + 1
    );
    for (n, v) in extra_headers {
        if safe_header_value(n) && safe_header_value(v) {
            push_header(out, n, v);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
}

/// Appends a complete HTTP response with a body of any type; `keep_alive` picks the
/// `Connection` header. Extra headers with CR/LF in them are skipped.
pub fn write_http_reply(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        reason_phrase(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (n, v) in extra_headers {
        if safe_header_value(n) && safe_header_value(v) {
            push_header(out, n, v);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends the HTTP response refusing an upgrade with `err` (status, the
/// headers it requires — e.g. `Sec-WebSocket-Version: 13` for 426 — and
/// its reason as body).
pub fn write_error_response(out: &mut Vec<u8>, err: &ProtocolError) {
    write_http_response(out, err.http_status(), err.extra_headers(), err.reason());
}

/// Raw (not percent-decoded) value of the first `name=` parameter of a
/// query string; `Some("")` for a bare `name`.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Value of cookie `name` from all `Cookie` headers (raw; surrounding
/// double quotes removed).
pub fn cookie<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    cookies(req, name).next()
}

/// Every value of the cookie `name`, in the order the request carries them.
///
/// A browser sends every cookie whose Path and Domain match, the longer Path first
/// (RFC 6265 5.4), so a stale cookie of the same name set for a deeper path can come
/// before the valid one: a check must accept when any of them matches.
pub fn cookies<'r, 'a: 'r>(
    req: &'r Request<'a>,
    name: &'r str,
) -> impl Iterator<Item = &'a str> + 'r {
    req.headers
        .all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |kv| {
            let (k, v) = kv.split_once('=')?;
            (trim_ows(k) == name).then(|| {
                let v = trim_ows(v);
                v.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;

//! Unit tests for the HTTP upgrade (kept out of handshake.rs for size).

use super::*;

const CHROME: &[u8] = b"GET /ws?token=abc%20d&x=1 HTTP/1.1\r\n\
Host: push.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: a=1; session=\"s3cr3t\"; b=2\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn parse(buf: &[u8]) -> Result<Option<Request<'_>>, ProtocolError> {
    parse_request(buf, &HandshakeLimits::default())
}

#[test]
fn parses_browser_request() {
    let mut buf = CHROME.to_vec();
    buf.extend_from_slice(b"trailing bytes");
    let req = parse(&buf).unwrap().unwrap();
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/ws");
    assert_eq!(req.query, "token=abc%20d&x=1");
    assert_eq!(req.head_len, CHROME.len());
    assert_eq!(req.version, 1);
    assert_eq!(req.headers.get_str("HOST"), Some("push.example.com"));
    assert_eq!(query_param(req.query, "token"), Some("abc%20d"));
    assert_eq!(query_param(req.query, "x"), Some("1"));
    assert_eq!(query_param(req.query, "y"), None);
    assert_eq!(cookie(&req, "session"), Some("s3cr3t"));
    assert_eq!(cookie(&req, "b"), Some("2"));
    assert_eq!(cookie(&req, "c"), None);
    assert!(is_upgrade_request(&req));
    let up = validate_upgrade(&req).unwrap();
    assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(up.origin, Some("https://example.com"));
    assert_eq!(
        up.deflate_offer,
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(up.protocols, None);
}

#[test]
fn incomplete_and_too_large() {
    for cut in 0..CHROME.len() {
        assert_eq!(parse(&CHROME[..cut]), Ok(None), "cut {cut}");
    }
    let limits = HandshakeLimits {
        max_header_bytes: 100,
        max_headers: 64,
    };
    assert_eq!(parse_request(&CHROME[..100], &limits), Ok(None));
    assert_eq!(
        parse_request(&CHROME[..101], &limits),
        Err(ProtocolError::HeadersTooLarge)
    );
    assert_eq!(
        parse_request(CHROME, &limits),
        Err(ProtocolError::HeadersTooLarge)
    );
    let few = HandshakeLimits {
        max_header_bytes: 8192,
        max_headers: 3,
    };
    assert_eq!(
        parse_request(CHROME, &few),
        Err(ProtocolError::TooManyHeaders)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n"),
        Err(ProtocolError::MalformedRequest)
    );
    assert_eq!(
        parse(b"\x00\x01garbage\r\n\r\n"),
        Err(ProtocolError::MalformedRequest)
    );
}

#[test]
fn accept_key_rfc_example() {
    assert_eq!(
        &accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    // Cross-check with tungstenite.
    let k = "x3JJHMbDL1EzLkh9GBhXDw==";
    assert_eq!(
        std::str::from_utf8(&accept_key(k)).unwrap(),
        tungstenite::handshake::derive_accept_key(k.as_bytes())
    );
}

fn with(replace: &str, by: &str) -> Vec<u8> {
    let s = std::str::from_utf8(CHROME).unwrap();
    assert!(s.contains(replace), "{replace}");
    s.replacen(replace, by, 1).into_bytes()
}

fn validate(buf: &[u8]) -> Result<(), ProtocolError> {
    let req = parse(buf)?.ok_or(ProtocolError::MalformedRequest)?;
    validate_upgrade(&req).map(|_| ())
}

#[test]
fn upgrade_validation() {
    use ProtocolError::*;
    assert_eq!(validate(CHROME), Ok(()));
    assert_eq!(validate(&with("GET", "POST")), Err(MethodNotAllowed));
    assert_eq!(
        validate(&with("HTTP/1.1", "HTTP/1.0")),
        Err(UnsupportedHttpVersion)
    );
    assert_eq!(
        validate(&with("Host: push.example.com\r\n", "")),
        Err(MissingHost)
    );
    assert_eq!(
        validate(&with(
            "Host: push.example.com\r\n",
            "Host: a\r\nHost: b\r\n"
        )),
        Err(MissingHost)
    );
    assert_eq!(
        validate(&with("Upgrade: websocket", "Upgrade: h2c")),
        Err(NotAnUpgrade)
    );
    assert_eq!(
        validate(&with("Connection: Upgrade", "Connection: keep-alive")),
        Err(NotAnUpgrade)
    );
    assert_eq!(
        validate(&with(
            "Connection: Upgrade",
            "Connection: keep-alive, UPGRADE"
        )),
        Ok(())
    );
    assert_eq!(
        validate(&with("Upgrade: websocket", "Upgrade: WebSocket")),
        Ok(())
    );
    assert_eq!(
        validate(&with(
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 8"
        )),
        Err(UnsupportedWebSocketVersion)
    );
    assert_eq!(
        validate(&with("Sec-WebSocket-Version: 13\r\n", "")),
        Err(UnsupportedWebSocketVersion)
    );
    assert_eq!(
        validate(&with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ")),
        Err(InvalidKey)
    );
    assert_eq!(
        validate(&with(
            "dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZXg="
        )),
        Err(InvalidKey)
    );
    assert_eq!(
        validate(&with(
            "dGhlIHNhbXBsZSBub25jZQ==",
            "!!!!!!!!!!!!!!!!!!!!!!=="
        )),
        Err(InvalidKey)
    );
    assert_eq!(
        validate(&with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
        Err(InvalidKey)
    );
    assert_eq!(
        validate(&with("Pragma: no-cache", "Content-Length: 5")),
        Err(UnexpectedBody)
    );
    assert_eq!(
        validate(&with("Pragma: no-cache", "Content-Length: 0")),
        Ok(())
    );
    assert_eq!(
        validate(&with("Pragma: no-cache", "Transfer-Encoding: chunked")),
        Err(UnexpectedBody)
    );
    let req_buf = with("Pragma: no-cache", "Upgrade: foo");
    let req = parse(&req_buf).unwrap().unwrap();
    assert!(is_upgrade_request(&req));
}

#[test]
fn extension_offer_selection() {
    let buf = with(
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        "Sec-WebSocket-Extensions: x-foo\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Protocol: chat, superchat\r\n",
    );
    let req = parse(&buf).unwrap().unwrap();
    let up = validate_upgrade(&req).unwrap();
    assert_eq!(up.deflate_offer, Some("permessage-deflate"));
    assert_eq!(up.protocols, Some("chat, superchat"));
}

#[test]
fn responses() {
    let mut out = Vec::new();
    write_switching_protocols(
        &mut out,
        "dGhlIHNhbXBsZSBub25jZQ==",
        Some("permessage-deflate"),
    );
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    );
    // tungstenite's client accepts our 101.
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut resp = httparse::Response::new(&mut headers);
    assert!(resp.parse(&out).unwrap().is_complete());
    assert_eq!(resp.code, Some(101));

    let mut out = Vec::new();
    write_error_response(&mut out, &ProtocolError::UnsupportedWebSocketVersion);
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(s.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(s.contains("\r\nConnection: close\r\n"));
    let body = "unsupported Sec-WebSocket-Version, expected 13\n";
    assert!(s.ends_with(&format!("\r\n\r\n{body}")));
    assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));

    let mut out = Vec::new();
    write_http_response(
        &mut out,
        404,
        &[("X-Bad", "a\r\nInjected: 1"), ("X-Ok", "1")],
        "nope",
    );
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(!s.contains("Injected") && s.contains("X-Ok: 1\r\n"));
}

#[test]
fn body_length_follows_rfc_9112() {
    let req_with =
        |headers: &str| format!("POST /p HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes();
    let len = |headers: &str| {
        let buf = req_with(headers);
        let req = parse(&buf).unwrap().unwrap();
        body_length(&req)
    };
    assert_eq!(len(""), Ok(0));
    assert_eq!(len("Content-Length: 0\r\n"), Ok(0));
    assert_eq!(len("Content-Length: 42\r\n"), Ok(42));
    assert_eq!(len("Content-Length: 007\r\n"), Ok(7));
    // Identical repeats are one length (RFC 9110 8.6), as a list or as headers.
    assert_eq!(len("Content-Length: 5, 5\r\n"), Ok(5));
    assert_eq!(len("Content-Length: 5\r\nContent-Length: 5\r\n"), Ok(5));
    assert_eq!(
        len(&format!("Content-Length: {}\r\n", u64::MAX)),
        Ok(u64::MAX)
    );
    use ProtocolError::{InvalidContentLength as Bad, TransferEncodingNotAccepted as Te};
    for h in [
        "Content-Length: 2\r\nContent-Length: 40\r\n",
        "Content-Length: 2, 40\r\n",
        "Content-Length: +2\r\n",
        "Content-Length: -0\r\n",
        "Content-Length: 0x2\r\n",
        "Content-Length: 2 2\r\n",
        "Content-Length: 2,\r\n",
        "Content-Length: \r\n",
        "Content-Length: 18446744073709551616\r\n",
    ] {
        assert_eq!(len(h), Err(Bad), "{h:?}");
    }
    assert_eq!(len("Transfer-Encoding: chunked\r\n"), Err(Te));
    assert_eq!(
        len("Transfer-Encoding: chunked\r\nContent-Length: 2\r\n"),
        Err(Te)
    );
    assert_eq!(Bad.http_status(), 400);
    assert_eq!(Te.http_status(), 400);
}

#[test]
fn every_same_named_cookie_in_order() {
    let buf =
        b"GET / HTTP/1.1\r\nHost: h\r\nCookie: s=stale; a=1; s=\"good\"\r\nCookie: s=third\r\n\r\n";
    let req = parse(buf).unwrap().unwrap();
    assert_eq!(
        cookies(&req, "s").collect::<Vec<_>>(),
        ["stale", "good", "third"]
    );
    assert_eq!(cookie(&req, "s"), Some("stale"));
    assert_eq!(cookies(&req, "none").count(), 0);
}

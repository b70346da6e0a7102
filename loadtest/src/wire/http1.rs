//! A minimal HTTP/1.1 client connection (keep-alive, Content-Length bodies only), for
//! the Engine.IO long-polling transport.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::errors::{classify_io, parse_retry_after};

/// Largest HTTP response head accepted from the server.
const MAX_HEAD: usize = 16 << 10;
/// Largest HTTP response body accepted from the server.
const MAX_BODY: usize = 16 << 20;

/// One keep-alive HTTP/1.1 connection (Content-Length bodies only).
pub struct Http {
    pub stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResp {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, if given.
    pub retry_after: Option<u64>,
}

/// What a response head says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub len: usize,
    pub keep_alive: bool,
    pub retry_after: Option<u64>,
}

impl Http {
    pub fn new(stream: TcpStream) -> Self {
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    async fn read_more(&mut self) -> Result<(), String> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("eof".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(classify_io(&e).to_string()),
        }
    }

    /// Sends `req`, reads the response; returns it and whether the connection stays open.
    async fn exchange(&mut self, req: &[u8]) -> Result<(HttpResp, bool), String> {
        self.stream
            .write_all(req)
            .await
            .map_err(|e| classify_io(&e).to_string())?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err("bad_response".to_string());
            }
            self.read_more().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        let len = head.len;
        if len > MAX_BODY {
            return Err("bad_response".to_string());
        }
        while self.buf.len() < head_end + len {
            self.read_more().await?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        let resp = HttpResp {
            status: head.status,
            body,
            retry_after: head.retry_after,
        };
        Ok((resp, head.keep_alive))
    }
}

/// Parses a response head: status, content length, keep-alive, `Retry-After`.
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    let bad = || "bad_response".to_string();
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().ok_or_else(bad)?.splitn(3, ' ');
    let version = status_line.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status: u16 = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut len = None;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<usize>().map_err(|_| bad())?);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = parse_retry_after(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only Content-Length bodies are supported.
            return Err("bad_response_chunked".to_string());
        }
    }
    let len = match len {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err("bad_response_no_length".to_string()),
    };
    Ok(Head {
        status,
        len,
        keep_alive,
        retry_after,
    })
}

/// One request on a connection; the connection is given back if it can be reused.
pub async fn exchange(mut c: Http, req: Vec<u8>) -> (Option<Http>, Result<HttpResp, String>) {
    match c.exchange(&req).await {
        Ok((resp, keep_alive)) => (keep_alive.then_some(c), Ok(resp)),
        Err(kind) => (None, Err(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n";
        let head = |status, len, keep_alive, retry_after| Head {
            status,
            len,
            keep_alive,
            retry_after,
        };
        assert_eq!(parse_head(h).unwrap(), head(200, 12, true, None));
        let h = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(400, 3, false, None));
        let h = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(200, 0, false, None));
        let h = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_head(h).unwrap(), head(503, 12, false, Some(1)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }
}

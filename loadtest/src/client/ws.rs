//! The WebSocket client shared by the raw and the Socket.IO clients (`ws://`, and `wss://`
//! with rustls).
//!
//! Built for holding many idle connections cheaply (issue 18: a held connection used to
//! cost about 19 KB, mostly tungstenite's two 4 KiB read buffers and its handshake): on a
//! plain socket nothing is allocated while no bytes wait, the receive buffer is taken when
//! the socket is readable and given back as soon as it holds no partial frame. The frames
//! themselves are [`crate::wire::frame`] (sans-IO); pings are answered with a pong, a
//! server's close with the close echo.
//!
//! [`Ws::next`] is cancel-safe (it may lose the race of a `select!`): its only awaits are
//! readiness (plain) or one read (TLS, cancel-safe in tokio-rustls), and what it has read
//! stays in the connection.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::cli::split_url;
use crate::client::params::{ConnParams, CLOSE_TIMEOUT, SEND_TIMEOUT};
use crate::client::recover::resume_url;
use crate::rng::mix;
use crate::wire::errors::{classify_io, ConnectError};
use crate::wire::frame::{self, Incoming, Parser, OP_CLOSE, OP_PONG, OP_TEXT};
use crate::wire::handshake;
use crate::wire::history::Position;
use crate::wire::net::{set_linger_zero, tcp_connect};

/// What one read asks for at most (the buffer is given back once parsed).
const READ_CHUNK: usize = 8 * 1024;

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An established WebSocket (client side).
pub struct Ws {
    io: Io,
    /// Received bytes not parsed yet (unallocated while idle on a plain socket).
    rbuf: Vec<u8>,
    /// Frames waiting to be written (pongs, close echoes, a message being sent).
    wbuf: Vec<u8>,
    parser: Parser,
    max_message: usize,
    close_sent: bool,
    eof: bool,
}

/// A fresh masking key (RFC 6455 asks for unpredictable keys from browsers; a load tester
/// only needs them to vary).
fn mask_key() -> [u8; 4] {
    static NEXT: AtomicU64 = AtomicU64::new(0x5eed);
    (mix(NEXT.fetch_add(1, Relaxed)) as u32).to_ne_bytes()
}

impl Ws {
    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(t) => t.get_ref().0,
        }
    }

    /// The next message or control frame; None once the server closed the connection.
    /// Errors are failure kinds (`reset`, `protocol_error`, ...).
    pub async fn next(&mut self) -> Option<Result<Incoming, String>> {
        loop {
            match self.parse() {
                Ok(Some(msg)) => return Some(Ok(msg)),
                Ok(None) => {}
                Err(kind) => return Some(Err(kind.to_string())),
            }
            if let Err(e) = self.flush().await {
                return Some(Err(classify_io(&e).to_string()));
            }
            if self.eof {
                return if self.rbuf.is_empty() {
                    None
                } else {
                    Some(Err("eof".to_string()))
                };
            }
            if let Err(e) = self.fill().await {
                return Some(Err(classify_io(&e).to_string()));
            }
        }
    }

    /// One frame out of the received bytes, if they hold a whole one; answers pings and
    /// the server's close.
    fn parse(&mut self) -> Result<Option<Incoming>, &'static str> {
        loop {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            let (used, msg) = self.parser.next(&self.rbuf, self.max_message)?;
            if used == 0 {
                return Ok(None);
            }
            self.rbuf.drain(..used);
            if self.rbuf.is_empty() && matches!(self.io, Io::Plain(_)) {
                // Give the buffer back: an idle connection holds none.
                self.rbuf = Vec::new();
            }
            match &msg {
                Some(Incoming::Ping(data)) if !self.close_sent => {
                    frame::encode(&mut self.wbuf, OP_PONG, data, mask_key());
                }
                Some(Incoming::Close(code)) if !self.close_sent => {
                    self.close_sent = true;
                    let echo = code.map(u16::to_be_bytes);
                    let payload = echo.as_ref().map_or(&[][..], |c| &c[..]);
                    frame::encode(&mut self.wbuf, OP_CLOSE, payload, mask_key());
                }
                _ => {}
            }
            if msg.is_some() {
                return Ok(msg);
            }
        }
    }

    /// Reads what the socket has (at least one read): appended to `rbuf`; EOF sets `eof`.
    async fn fill(&mut self) -> std::io::Result<()> {
        let n = match &mut self.io {
            Io::Plain(s) => loop {
                s.readable().await?;
                self.rbuf.reserve(READ_CHUNK);
                match s.try_read_buf(&mut self.rbuf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if self.rbuf.is_empty() {
                            self.rbuf = Vec::new();
                        }
                    }
                    Err(e) => return Err(e),
                }
            },
            Io::Tls(t) => {
                self.rbuf.reserve(READ_CHUNK);
                t.read_buf(&mut self.rbuf).await?
            }
        };
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Writes the queued frames (each write is cancel-safe: what was written is dropped
    /// from the queue at once).
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        while !self.wbuf.is_empty() {
            let n = match &mut self.io {
                Io::Plain(s) => s.write(&self.wbuf).await?,
                Io::Tls(t) => t.write(&self.wbuf).await?,
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.wbuf.drain(..n);
        }
        self.wbuf = Vec::new();
        if let Io::Tls(t) = &mut self.io {
            t.flush().await?;
        }
        Ok(())
    }

    /// Sends one text message (a failure is its kind).
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        if self.close_sent {
            return Err("closed".to_string());
        }
        frame::encode(&mut self.wbuf, OP_TEXT, text.as_bytes(), mask_key());
        self.flush().await.map_err(|e| classify_io(&e).to_string())
    }

    /// Starts the closing handshake (status 1000) if nobody did.
    async fn send_close(&mut self) -> std::io::Result<()> {
        if !self.close_sent {
            self.close_sent = true;
            frame::encode(&mut self.wbuf, OP_CLOSE, &1000u16.to_be_bytes(), mask_key());
        }
        self.flush().await
    }
}

/// Prepares an abrupt drop of a WebSocket: dropping it afterwards resets the TCP connection.
pub fn abort_ws(ws: &Ws) {
    set_linger_zero(ws.tcp().as_raw_fd());
}

/// TCP connect (bound to `source` if given), TLS for `wss://`, and the WebSocket handshake
/// (`--recover`: resuming from `resume`, if given).
pub async fn connect(
    p: &ConnParams,
    id: u64,
    source: Option<IpAddr>,
    resume: Option<&Position>,
) -> Result<Ws, ConnectError> {
    // With --auth session: `?session=<id>` and the secret cookie of this connection's user.
    let (url, cookie) = p.url_and_cookie(id)?;
    let url = resume_url(&url, resume);
    let (authority, path) = split_url(&url);
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let mut extra: Vec<(&str, &str)> = Vec::with_capacity(p.headers.len() + 2);
    if let Some(origin) = &p.origin {
        extra.push(("Origin", origin));
    }
    if let Some(cookie) = cookie {
        extra.push(("Cookie", cookie));
    }
    extra.extend(p.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let head = handshake::request(&authority, &path, &key, &extra);
    let stream = tcp_connect(p.target, source).await?;
    let io = match &p.tls {
        None => Io::Plain(stream),
        Some(tls) => Io::Tls(Box::new(tls.connect(stream).await?)),
    };
    let mut ws = Ws {
        io,
        rbuf: Vec::new(),
        wbuf: head.into_bytes(),
        parser: Parser::default(),
        max_message: p.max_message_bytes,
        close_sent: false,
        eof: false,
    };
    let io_err = |e: std::io::Error| ConnectError::from(classify_io(&e));
    ws.flush().await.map_err(io_err)?;
    let end = loop {
        if let Some(end) = handshake::head_end(&ws.rbuf) {
            break end;
        }
        if ws.eof {
            return Err("eof".into());
        }
        if ws.rbuf.len() > handshake::MAX_HEAD {
            return Err("handshake_error".into());
        }
        ws.fill().await.map_err(io_err)?;
    };
    handshake::check_answer(&ws.rbuf[..end], &key)?;
    // What the server sent right after its answer (e.g. Engine.IO's open packet) stays.
    ws.rbuf.drain(..end);
    if ws.rbuf.is_empty() {
        ws.rbuf = Vec::new();
    }
    Ok(ws)
}

/// A graceful close (close frame, then wait for the server's), bounded by [`CLOSE_TIMEOUT`].
///
/// This and [`send_text`] box their work: the drive loops that await them then hold a
/// pointer, not the timer and the I/O futures, for as long as a connection is held.
pub async fn close(ws: &mut Ws) {
    let work = timeout(CLOSE_TIMEOUT, async {
        if ws.send_close().await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    let _ = Box::pin(work).await;
}

/// Sends a text message within [`SEND_TIMEOUT`]; a failure is returned as its kind.
pub async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    match Box::pin(timeout(SEND_TIMEOUT, ws.send_text(&text))).await {
        Ok(r) => r,
        Err(_) => Err("send_timeout".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::cli::{Protocol, Scenario, Transport};
    use crate::client::params::ReconnectPolicy;

    fn params(target: std::net::SocketAddr) -> ConnParams {
        ConnParams {
            url: format!("ws://{target}/ws?x=1"),
            protocol: Protocol::Raw,
            transport: Transport::Websocket,
            eio: 4,
            target,
            source_addrs: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            scenario: Scenario::Hold,
            message_bytes: 32,
            interval: Duration::from_secs(1),
            echo_timeout: Duration::from_secs(1),
            tls: None,
            origin: Some("https://o.example".into()),
            headers: vec![("X-Test".into(), "yes".into())],
            max_message_bytes: 1 << 20,
            sessions: None,
            reconnect: ReconnectPolicy {
                storm_timeout: Duration::from_secs(1),
                max_wait: Duration::from_secs(1),
                delay: Duration::from_secs(1),
                delay_max: Duration::from_secs(1),
            },
            recover: false,
        }
    }

    /// tungstenite as the server: pings, a large message, an echo, then a close whose
    /// echo it waits for. Returns what the server saw (headers, messages).
    #[tokio::test]
    async fn pings_messages_and_the_closing_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            #[allow(clippy::result_large_err)]
            let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                let h = req.headers();
                log.lock().unwrap().push(format!(
                    "{} origin={:?} x-test={:?}",
                    req.uri(),
                    h.get("origin").unwrap(),
                    h.get("x-test").unwrap()
                ));
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(s, record)
                .await
                .unwrap();
            ws.send(Message::Ping(b"p1".to_vec())).await.unwrap();
            ws.send(Message::text("x".repeat(100_000))).await.unwrap();
            // The pong comes back, then the client's message.
            let mut got = Vec::new();
            while got.len() < 2 {
                match ws.next().await.unwrap().unwrap() {
                    Message::Pong(p) => got.push(format!("pong {}", String::from_utf8(p).unwrap())),
                    Message::Text(t) => got.push(format!("text {t}")),
                    other => panic!("{other:?}"),
                }
            }
            ws.close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            }))
            .await
            .unwrap();
            // The client's close echo, then the end of the stream.
            while let Some(Ok(m)) = ws.next().await {
                got.push(format!("after close: {m:?}"));
            }
            log.lock().unwrap().extend(got);
        });
        let mut ws = connect(&params(addr), 0, None, None).await.unwrap();
        assert_eq!(ws.next().await, Some(Ok(Incoming::Ping(b"p1".to_vec()))));
        assert_eq!(
            ws.next().await,
            Some(Ok(Incoming::Text("x".repeat(100_000))))
        );
        assert!(ws.rbuf.capacity() == 0, "no buffer held while idle");
        send_text(&mut ws, "hi".into()).await.unwrap();
        assert_eq!(ws.next().await, Some(Ok(Incoming::Close(Some(1001)))));
        assert_eq!(ws.next().await, None, "the server closes after the echo");
        server.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                r#"/ws?x=1 origin="https://o.example" x-test="yes""#,
                "pong p1",
                "text hi",
                // The close echo carries the server's code.
                r#"after close: Close(Some(CloseFrame { code: Away, reason: "" }))"#,
            ]
        );
    }
}

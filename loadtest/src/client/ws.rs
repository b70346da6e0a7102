//! WebSocket connection setup shared by the raw and the Socket.IO clients.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, COOKIE};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::params::{ConnParams, CLOSE_TIMEOUT, SEND_TIMEOUT};
use crate::client::recover::resume_url;
use crate::wire::errors::{classify_ws, handshake_error, ConnectError};
use crate::wire::history::Position;
use crate::wire::net::{set_linger_zero, tcp_connect};

pub type Ws = WebSocketStream<TcpStream>;

/// Prepares an abrupt drop of a WebSocket: dropping it afterwards resets the TCP connection.
pub fn abort_ws(ws: &Ws) {
    set_linger_zero(ws.get_ref().as_raw_fd());
}

/// TCP connect (bound to `source` if given) + WebSocket handshake (`--recover`: resuming
/// from `resume`, if given).
pub async fn connect(
    p: &ConnParams,
    id: u64,
    source: Option<IpAddr>,
    resume: Option<&Position>,
) -> Result<Ws, ConnectError> {
    // With --auth session: `?session=<id>` and the secret cookie of this connection's user.
    let (url, cookie) = p.url_and_cookie(id)?;
    let url = resume_url(&url, resume);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| classify_ws(&e))?;
    if let Some(cookie) = cookie {
        let cookie = HeaderValue::from_str(cookie).map_err(|_| "bad_cookie")?;
        request.headers_mut().insert(COOKIE, cookie);
    }
    let stream = tcp_connect(p.target, source).await?;
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(p.ws_config))
            .await
            .map_err(|e| handshake_error(&e))?;
    Ok(ws)
}

/// A graceful close (close frame, then wait for the server's), bounded by [`CLOSE_TIMEOUT`].
pub async fn close(ws: &mut Ws) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Sends a text message within [`SEND_TIMEOUT`]; a failure is returned as its kind.
pub async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify_ws(&e)),
        Err(_) => Err("send_timeout".to_string()),
    }
}

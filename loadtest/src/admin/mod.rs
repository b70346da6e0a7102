//! Admin API client (plain HTTP/1.1 with keep-alive over hyper), used by the coordinator:
//! minting sessions ([`sessions`], `POST /v1/sessions`) and the push driver of the `push`
//! scenario ([`push`], `POST /v1/push/batch`, or `POST /v1/push` with `--batch-size 1`).
//!
//! Both run with a fixed number of "lanes": one keep-alive connection each, one request
//! in flight each, reconnected after an error.

pub mod push;
pub mod sessions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;

/// User `user`: the number, or with `--user-prefix P` the string `"P<user>"`.
pub fn user_value(prefix: Option<&str>, user: u64) -> serde_json::Value {
    match prefix {
        None => user.into(),
        Some(p) => format!("{p}{user}").into(),
    }
}

/// [`user_value`] as JSON text.
pub fn user_json(prefix: Option<&str>, user: u64) -> String {
    user_value(prefix, user).to_string()
}
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::cli::AdminTarget;
use crate::wire::errors::classify_io;

/// Timeout of one admin request (connect included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AdminClient {
    addr: SocketAddr,
    target: AdminTarget,
    auth: Option<HeaderValue>,
}

impl AdminClient {
    pub async fn new(url: &str, token: Option<&str>) -> Result<Arc<Self>> {
        let target = AdminTarget::parse(url)?;
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .with_context(|| format!("resolving admin host {}", target.host))?
            .next()
            .with_context(|| format!("admin host {} resolved to no address", target.host))?;
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("--admin-token is not a valid header value")?;
        Ok(Arc::new(AdminClient { addr, target, auth }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One keep-alive connection to the admin API (connected lazily, dropped on error).
pub struct Lane {
    client: Arc<AdminClient>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// A response: status and body.
pub struct Resp {
    pub status: u16,
    pub body: Bytes,
}

impl Lane {
    pub fn new(client: Arc<AdminClient>) -> Self {
        Lane {
            client,
            sender: None,
        }
    }

    /// Connects if needed and waits until the connection can take a request.
    /// Errors are returned as a short kind (refused, timeout, ...).
    pub async fn ready(&mut self) -> Result<(), String> {
        if let Some(s) = self.sender.as_mut() {
            if s.ready().await.is_ok() {
                return Ok(());
            }
            self.sender = None;
        }
        let fut = async {
            let stream = TcpStream::connect(self.client.addr)
                .await
                .map_err(|e| classify_io(&e).to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "http_handshake".to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(sender)
        };
        let mut sender = timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| "timeout".to_string())??;
        sender.ready().await.map_err(|_| "closed".to_string())?;
        self.sender = Some(sender);
        Ok(())
    }

    /// POSTs a JSON body to `path` (relative to the admin URL's prefix). Call
    /// [`Lane::ready`] first to keep connection setup out of the measured time.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Resp, String> {
        self.ready().await?;
        let c = &self.client;
        let mut req = Request::post(format!("{}{path}", c.target.prefix))
            .header(HOST, c.target.authority.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = &c.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| "bad_request".to_string())?;
        let sender = self.sender.as_mut().expect("ready() connected");
        let fut = async {
            let resp = sender.send_request(req).await.map_err(|e| hyper_kind(&e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| hyper_kind(&e))?
                .to_bytes();
            Ok::<_, String>(Resp { status, body })
        };
        match timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(kind)) => {
                self.sender = None;
                Err(kind)
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".to_string())
            }
        }
    }
}

fn hyper_kind(e: &hyper::Error) -> String {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "closed".to_string()
    } else if e.is_parse() {
        "bad_response".to_string()
    } else {
        "http_error".to_string()
    }
}

pub(crate) fn short_body(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 200 {
        let mut i = 200;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}...", &s[..i])
    } else {
        s.to_string()
    }
}

pub(crate) fn bump(map: &Mutex<BTreeMap<String, u64>>, kind: &str) {
    *map.lock().unwrap().entry(kind.to_string()).or_default() += 1;
}

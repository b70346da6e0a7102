//! The optional webhook: socket events (connect, close, text message) POSTed as JSON batches
//! to an HTTP endpoint.
//!
//! Two halves, joined by one lock-free bounded queue (`crossbeam_queue::ArrayQueue`):
//!
//! - [`WebhookListener`] is a [`Listener`]: it runs on the data-plane cores, inside their event
//!   loops. It builds a small record (one allocation, bounded: message text is cut at
//!   `max_text_bytes`) and pushes it onto the queue. It never blocks and never waits: when the
//!   queue is full (`queue_capacity` events or `queue_max_bytes` bytes) the event is dropped and
//!   counted.
//! - [`WebhookListener::run`] is a task on the control runtime (`ringwire-control`). Every
//!   `flush_ms` it drains the queue in batches of at most `batch_max` events and POSTs each as
//!   `{"node": "...", "events": [...]}`, one request at a time (events of a socket stay in
//!   order), retrying failures `max_retries` times with exponential backoff before dropping the
//!   batch (counted).
//!
//! A slow or dead receiver therefore only fills the queue: sockets never wait for it.
//!
//! Each event is a JSON object:
//!
//! | field | |
//! | --- | --- |
//! | `type` | `"connect"`, `"close"` or `"message"` |
//! | `ts` | unix milliseconds when the core saw the event |
//! | `socket` | the socket id, a decimal **string** (a u64: above JavaScript's 2^53) |
//! | `endpoint`, `path` | the endpoint's configured prefix and the upgrade request's path |
//! | `context`, `user`, `session` | the socket's session (absent on `auth = "none"` endpoints); `user` is a number for a numeric user id, a string for a string one |
//! | `text` | messages only: the text, cut at `max_text_bytes` on a character boundary |
//! | `truncated` | messages only: true when `text` was cut |
//!
//! Message events come from `raw` endpoints (text frames from clients).
use crate::config::webhook::{parse_url, WebhookConfig, WebhookEventKind};
use crate::service::listener::{Listener, SocketInfo};
use crate::service::session::SessionId;
use crate::service::user_id::UserId;
use crossbeam_queue::ArrayQueue;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Longest wait between two retries of a batch, whatever `retry_backoff_ms` and the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One queued event. Endpoint, path and text share one allocation.
struct Event {
    kind: WebhookEventKind,
    truncated: bool,
    ts_ms: u64,
    socket: u64,
    auth: Option<(u32, UserId, SessionId)>,
    endpoint_len: u32,
    path_len: u32,
    strs: Box<str>,
}

impl Event {
    fn endpoint(&self) -> &str {
        &self.strs[..self.endpoint_len as usize]
    }
    fn path(&self) -> &str {
        let start = self.endpoint_len as usize;
        &self.strs[start..start + self.path_len as usize]
    }
    fn text(&self) -> &str {
        &self.strs[(self.endpoint_len + self.path_len) as usize..]
    }
    /// What the event counts against `queue_max_bytes` (a long string user's heap bytes
    /// included, though its sockets' events share them).
    fn cost(strs_len: usize, user: Option<&UserId>) -> usize {
        std::mem::size_of::<Event>() + strs_len + user.map_or(0, UserId::heap_bytes)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Serialize)]
struct WireBatch<'a> {
    node: &'a str,
    events: Vec<WireEvent<'a>>,
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: u64,
    socket: String,
    endpoint: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// A number for a numeric user, a string otherwise.
    user: Option<&'a UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
}

/// How one POST went.
enum Outcome {
    Delivered,
    /// Worth retrying (transport error, timeout, 408, 429, 5xx).
    Retry(String),
    /// The receiver refused the batch (other 4xx): retrying will not help.
    Rejected(StatusCode),
}

/// The webhook: a [`Listener`] on the cores plus the sender task on the control runtime.
pub struct WebhookListener {
    queue: ArrayQueue<Event>,
    queued_bytes: AtomicUsize,
    events_mask: u8,
    queue_max_bytes: usize,
    max_text_bytes: usize,
    uri: Uri,
    auth: Option<HeaderValue>,
    node: String,
    batch_max: usize,
    flush: Duration,
    timeout: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    stopping: AtomicBool,
    /// Wakes the sender at shutdown (instead of waiting for its next tick).
    stop: tokio::sync::Notify,
    /// The sender's answer: the final drain is over.
    done: tokio::sync::Notify,
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_after_retries: AtomicU64,
    dropped_rejected: AtomicU64,
    post_errors: AtomicU64,
}

impl WebhookListener {
    /// `config` must have passed [`WebhookConfig::validate`]; `node` names this node in batches.
    pub fn new(config: &WebhookConfig, node: &str) -> Result<WebhookListener, String> {
        config.validate()?;
        let auth = config
            .token
            .as_ref()
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "webhook.token is not a valid header value".to_string())?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(WebhookListener {
            queue: ArrayQueue::new(config.queue_capacity),
            queued_bytes: AtomicUsize::new(0),
            events_mask: config.events.iter().fold(0, |m, k| m | k.bit()),
            queue_max_bytes: config.queue_max_bytes,
            max_text_bytes: config.max_text_bytes,
            uri: parse_url(&config.url)?,
            auth,
            node: node.to_string(),
            batch_max: config.batch_max,
            flush: Duration::from_millis(config.flush_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            max_retries: config.max_retries,
            retry_backoff: Duration::from_millis(config.retry_backoff_ms),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            done: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_after_retries: AtomicU64::new(0),
            dropped_rejected: AtomicU64::new(0),
            post_errors: AtomicU64::new(0),
        })
    }

    /// Data plane: record one event, or drop and count it. Never blocks; one bounded allocation.
    fn record(&self, kind: WebhookEventKind, info: &SocketInfo<'_>, text: &str) {
        if self.events_mask & kind.bit() == 0 {
            return;
        }
        if self.queue.is_full() {
            self.dropped_queue_full.fetch_add(1, Relaxed);
            return;
        }
        let (text, truncated) = crate::protocol::utf8::truncate_utf8(text, self.max_text_bytes);
        let len = info.endpoint.len() + info.path.len() + text.len();
        let cost = Event::cost(len, info.auth.map(|a| &a.user));
        if self.queued_bytes.fetch_add(cost, Relaxed) + cost > self.queue_max_bytes {
            self.queued_bytes.fetch_sub(cost, Relaxed);
            self.dropped_queue_full.fetch_add(1, Relaxed);
            return;
        }
        let mut strs = String::with_capacity(len);
        strs.push_str(info.endpoint);
        strs.push_str(info.path);
        strs.push_str(text);
        let event = Event {
            kind,
            truncated,
            ts_ms: unix_ms(),
            socket: info.socket,
            auth: info.auth.map(|a| (a.context, a.user.clone(), a.session)),
            // Endpoint prefixes and paths are bounded by the header limits (far below 4 GiB).
            endpoint_len: info.endpoint.len() as u32,
            path_len: info.path.len() as u32,
            strs: strs.into_boxed_str(),
        };
        if self.queue.push(event).is_err() {
            self.queued_bytes.fetch_sub(cost, Relaxed);
            self.dropped_queue_full.fetch_add(1, Relaxed);
        }
    }

    fn pop(&self) -> Option<Event> {
        let e = self.queue.pop()?;
        self.queued_bytes.fetch_sub(
            Event::cost(e.strs.len(), e.auth.as_ref().map(|a| &a.1)),
            Relaxed,
        );
        Some(e)
    }

    /// The sender: runs on the control runtime until [`WebhookListener::shutdown`].
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.timeout));
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let mut tick = tokio::time::interval(self.flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.notified() => {}
            }
            let stopping = self.stopping.load(Relaxed);
            loop {
                while batch.len() < self.batch_max {
                    match self.pop() {
                        Some(e) => batch.push(e),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                let full = batch.len() == self.batch_max;
                self.deliver(&client, &batch).await;
                batch.clear();
                // A partial batch emptied the queue: wait for the next tick (stopping: drain).
                if !full && !stopping {
                    break;
                }
            }
            if stopping {
                self.done.notify_one();
                return;
            }
        }
    }

    /// Stop the sender after one last drain (call once the cores have stopped, so their close
    /// events are queued). Waits at most `grace`; what is left is logged.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Relaxed);
        self.stop.notify_one();
        if tokio::time::timeout(grace, self.done.notified())
            .await
            .is_err()
        {
            tracing::warn!(
                "webhook: {} events not delivered at shutdown (receiver too slow)",
                self.queue.len()
            );
        }
    }

    /// The grace period [`WebhookListener::shutdown`] deserves: one request timeout.
    pub fn shutdown_grace(&self) -> Duration {
        self.timeout
    }

    fn encode(&self, batch: &[Event]) -> Vec<u8> {
        let events = batch
            .iter()
            .map(|e| {
                let message = e.kind == WebhookEventKind::Message;
                WireEvent {
                    kind: e.kind.name(),
                    ts: e.ts_ms,
                    socket: e.socket.to_string(),
                    endpoint: e.endpoint(),
                    path: e.path(),
                    context: e.auth.as_ref().map(|a| a.0),
                    user: e.auth.as_ref().map(|a| &a.1),
                    session: e.auth.as_ref().map(|a| a.2.to_text(&a.1)),
                    text: message.then(|| e.text()),
                    truncated: message.then_some(e.truncated),
                }
            })
            .collect();
        serde_json::to_vec(&WireBatch {
            node: &self.node,
            events,
        })
        .expect("serializing plain structs cannot fail")
    }

    /// POST one batch, retrying with exponential backoff; counts the outcome.
    async fn deliver(&self, client: &Client<HttpConnector, Full<Bytes>>, batch: &[Event]) {
        let n = batch.len() as u64;
        let body = Bytes::from(self.encode(batch));
        let mut backoff = self.retry_backoff;
        let mut attempt = 0u32;
        loop {
            match self.post(client, body.clone()).await {
                Outcome::Delivered => {
                    self.sent.fetch_add(n, Relaxed);
                    return;
                }
                Outcome::Rejected(status) => {
                    self.post_errors.fetch_add(1, Relaxed);
                    self.dropped_rejected.fetch_add(n, Relaxed);
                    tracing::warn!(
                        "webhook: {} refused a batch of {n} events with {status}; dropped (not retried)",
                        self.uri
                    );
                    return;
                }
                Outcome::Retry(why) => {
                    self.post_errors.fetch_add(1, Relaxed);
                    // At shutdown: one attempt per batch, no backoff.
                    if attempt >= self.max_retries || self.stopping.load(Relaxed) {
                        self.dropped_after_retries.fetch_add(n, Relaxed);
                        tracing::warn!(
                            "webhook: POST {} failed ({why}) {} times; dropped a batch of {n} events",
                            self.uri,
                            attempt + 1
                        );
                        return;
                    }
                    tracing::debug!(
                        "webhook: POST {} failed ({why}); retry {} in {backoff:?}",
                        self.uri,
                        attempt + 1
                    );
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn post(&self, client: &Client<HttpConnector, Full<Bytes>>, body: Bytes) -> Outcome {
        let mut req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("ringwire/", env!("CARGO_PKG_VERSION"), " webhook"),
            );
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("bad request: {e}")),
        };
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read (and discard) the response body so the connection can be reused.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retry(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => Outcome::Retry(e),
            Ok(Ok(s)) if s.is_success() => Outcome::Delivered,
            Ok(Ok(s))
                if s.is_server_error()
                    || s == StatusCode::REQUEST_TIMEOUT
                    || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Retry(format!("status {s}"))
            }
            Ok(Ok(s)) => Outcome::Rejected(s),
        }
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, series: &[(&str, u64)]| {
            super::prometheus::metric(&mut out, name, kind, help, series)
        };
        metric(
            "ringwire_webhook_events_sent_total",
            "counter",
            "Webhook events delivered (2xx answer)",
            &[("", self.sent.load(Relaxed))],
        );
        metric(
            "ringwire_webhook_events_dropped_total",
            "counter",
            "Webhook events dropped: queue full, given up after retries, or refused (4xx)",
            &[
                (
                    "{reason=\"queue_full\"}",
                    self.dropped_queue_full.load(Relaxed),
                ),
                (
                    "{reason=\"retries\"}",
                    self.dropped_after_retries.load(Relaxed),
                ),
                ("{reason=\"rejected\"}", self.dropped_rejected.load(Relaxed)),
            ],
        );
        metric(
            "ringwire_webhook_post_errors_total",
            "counter",
            "Failed webhook POST attempts (transport error, timeout or non-2xx)",
            &[("", self.post_errors.load(Relaxed))],
        );
        metric(
            "ringwire_webhook_queue_events",
            "gauge",
            "Webhook events waiting to be sent",
            &[("", self.queue.len() as u64)],
        );
        out
    }
}

impl Listener for WebhookListener {
    fn on_connect(&self, socket: &SocketInfo<'_>) {
        self.record(WebhookEventKind::Connect, socket, "");
    }
    fn on_close(&self, socket: &SocketInfo<'_>) {
        self.record(WebhookEventKind::Close, socket, "");
    }
    fn on_message(&self, socket: &SocketInfo<'_>, text: &str) {
        self.record(WebhookEventKind::Message, socket, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::service::session::SocketAuth;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn urls() {
        assert!(config("http://127.0.0.1:9000/events").validate().is_ok());
        assert!(config("http://hooks.internal/x?y=1").validate().is_ok());
        let e = config("https://example.com/h").validate().unwrap_err();
        assert!(e.contains("TLS webhooks are not supported yet"), "{e}");
        assert!(config("").validate().unwrap_err().contains("required"));
        assert!(config("ftp://x/").validate().is_err());
        assert!(config("/relative").validate().is_err());
    }

    #[test]
    fn toml_section() {
        let c = Config::from_toml(
            "[webhook]\nurl = \"http://127.0.0.1:9/e\"\nevents = [\"message\"]\ntoken = \"t\"\n",
        )
        .unwrap();
        let w = c.webhook.unwrap();
        assert_eq!(w.events, vec![WebhookEventKind::Message]);
        assert_eq!(w.batch_max, 100);
        let e = Config::from_toml("[webhook]\nurl = \"https://x/\"\n").unwrap_err();
        assert!(e.0.contains("TLS"), "{e}");
        assert!(Config::from_toml("[webhook]\nurl = \"http://x/\"\nbogus = 1\n").is_err());
        assert!(Config::from_toml("[webhook]\nurl = \"http://x/\"\nevents = []\n").is_err());
        assert!(Config::from_toml("[webhook]\nurl = \"http://x/\"\nbatch_max = 0\n").is_err());
        assert!(Config::from_toml("").unwrap().webhook.is_none());
    }

    /// The commented `[webhook]` block of the example file, uncommented, is valid and equals
    /// the defaults (with its example url).
    #[test]
    fn example_file_documents_defaults() {
        let text = include_str!("../../tuning/ringwire.example.toml");
        let mut section = String::new();
        let mut inside = false;
        for line in text.lines() {
            let l = line.strip_prefix("# ").unwrap_or(line);
            if l.starts_with("[webhook]") {
                inside = true;
            } else if inside && (l.starts_with('[') || !line.starts_with('#')) {
                break;
            }
            if inside && !l.trim_start().starts_with("token") {
                section.push_str(l);
                section.push('\n');
            }
        }
        assert!(!section.is_empty(), "example file has no # [webhook] block");
        let c = Config::from_toml(&section).expect(&section);
        let w = c.webhook.expect("webhook section");
        assert_eq!(w, config("http://127.0.0.1:9000/events"));
    }

    fn info<'a>(auth: Option<&'a SocketAuth>) -> SocketInfo<'a> {
        SocketInfo {
            core: 1,
            socket: 1 << 56 | 7,
            endpoint: "/ws",
            path: "/ws/room",
            query: "session=x",
            auth,
            attrs: &[],
        }
    }

    #[test]
    fn records_encode_and_drop_when_full() {
        let mut c = config("http://127.0.0.1:9/e");
        c.queue_capacity = 2;
        c.max_text_bytes = 4;
        let w = WebhookListener::new(&c, "n1").unwrap();
        let (session, _) =
            crate::service::session::SessionKey::random().mint(5, &42.into(), u64::MAX);
        let auth = SocketAuth {
            session,
            context: 5,
            user: 42.into(),
            expires_at: 0,
        };
        w.on_connect(&info(Some(&auth)));
        w.on_message(&info(None), "hello");
        w.on_close(&info(None)); // full
        assert_eq!(w.dropped_queue_full.load(Relaxed), 1);
        let batch: Vec<Event> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(w.queued_bytes.load(Relaxed), 0);
        let v: serde_json::Value = serde_json::from_slice(&w.encode(&batch)).unwrap();
        assert_eq!(v["node"], "n1");
        let e = &v["events"];
        assert_eq!(e[0]["type"], "connect");
        assert_eq!(e[0]["context"], 5);
        assert_eq!(e[0]["user"], 42);
        assert_eq!(e[0]["session"], auth.session.v1_text());
        assert_eq!(e[0]["path"], "/ws/room");
        assert_eq!(e[0]["endpoint"], "/ws");
        assert_eq!(e[0]["socket"], (1u64 << 56 | 7).to_string());
        assert!(e[0].get("text").is_none());
        assert_eq!(e[1]["type"], "message");
        assert_eq!(e[1]["text"], "hell");
        assert_eq!(e[1]["truncated"], true);
        assert!(e[1].get("user").is_none());
        // A string user is a string, and its session id is its v2 token.
        let key = crate::service::session::SessionKey::random();
        let alice = UserId::parse("alice-0123456789-0123456789").unwrap();
        let (session, _) = key.mint(5, &alice, u64::MAX);
        let auth = SocketAuth {
            session,
            context: 5,
            user: alice.clone(),
            expires_at: 0,
        };
        w.on_connect(&info(Some(&auth)));
        let batch: Vec<Event> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(w.queued_bytes.load(Relaxed), 0, "its heap bytes given back");
        let v: serde_json::Value = serde_json::from_slice(&w.encode(&batch)).unwrap();
        assert_eq!(v["events"][0]["user"], "alice-0123456789-0123456789");
        let text = v["events"][0]["session"].as_str().unwrap();
        let (id, s) = key.parse(text).unwrap();
        assert_eq!((id, s.user), (session, alice));
        let m = w.metrics_text();
        assert!(m.contains("ringwire_webhook_events_dropped_total{reason=\"queue_full\"} 1\n"));
        assert!(m.contains("ringwire_webhook_events_sent_total 0\n"));
    }

    #[test]
    fn event_filter() {
        let mut c = config("http://127.0.0.1:9/e");
        c.events = vec![WebhookEventKind::Close];
        let w = WebhookListener::new(&c, "n").unwrap();
        w.on_connect(&info(None));
        w.on_message(&info(None), "x");
        w.on_close(&info(None));
        assert_eq!(w.queue.len(), 1);
    }
}

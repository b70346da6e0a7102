//! `[webhook]`: socket events POSTed to an HTTP endpoint (see `service::webhook`).
use hyper::header::HeaderValue;
use hyper::Uri;
use serde::Deserialize;

/// Which socket events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEventKind {
    Connect,
    Close,
    Message,
}

impl WebhookEventKind {
    pub fn bit(self) -> u8 {
        match self {
            WebhookEventKind::Connect => 1,
            WebhookEventKind::Close => 2,
            WebhookEventKind::Message => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WebhookEventKind::Connect => "connect",
            WebhookEventKind::Close => "close",
            WebhookEventKind::Message => "message",
        }
    }
}

/// `[webhook]`: socket events POSTed to an HTTP endpoint. Absent = no webhook. Restart to change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where batches are POSTed: `http://host[:port]/path` (required). `https://` is refused:
    /// TLS webhooks are not supported yet (POST to a local relay or sidecar).
    pub url: String,
    /// Events to send. Default all three.
    pub events: Vec<WebhookEventKind>,
    /// Events per POST. 100: large enough to amortize a request, small enough that one body
    /// stays well under a typical 1 MiB request limit without message text.
    pub batch_max: usize,
    /// Longest time an event waits for its batch to fill; the sender wakes this often.
    /// 200 ms: near-real-time, at most 5 wake-ups per second when idle.
    pub flush_ms: u64,
    /// Events queued between the cores and the sender; further events are dropped (counted in
    /// `ringwire_webhook_events_dropped_total{reason="queue_full"}`). 10,000 absorbs a burst
    /// (a reconnect wave) and about 20 s of a dead receiver at 500 events/s.
    pub queue_capacity: usize,
    /// Bytes the queued events may hold (records + text); beyond, events are dropped as
    /// `queue_full`. 64 MiB: caps the memory of `queue_capacity` events with long texts.
    /// At least 4 x `max_text_bytes` and 64 KiB.
    pub queue_max_bytes: usize,
    /// Message text kept per event; longer text is cut on a character boundary and the event
    /// says `"truncated": true`. 64 KiB: whole for ordinary messages, bounded per event.
    pub max_text_bytes: usize,
    /// Per request: connect, send and the full response. 5 s.
    pub timeout_ms: u64,
    /// Retries of a failed batch (transport error, timeout, 408, 429, 5xx) before it is
    /// dropped (`reason="retries"`). Other 4xx are not retried (`reason="rejected"`).
    /// 3 retries with the default backoff span about 3.5 s plus the attempts.
    pub max_retries: u32,
    /// Wait before the first retry, doubled each retry (capped at 30 s). 500 ms.
    pub retry_backoff_ms: u64,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            events: vec![
                WebhookEventKind::Connect,
                WebhookEventKind::Close,
                WebhookEventKind::Message,
            ],
            batch_max: 100,
            flush_ms: 200,
            queue_capacity: 10_000,
            queue_max_bytes: 64 << 20,
            max_text_bytes: 64 << 10,
            timeout_ms: 5000,
            max_retries: 3,
            retry_backoff_ms: 500,
            token: None,
        }
    }
}

impl WebhookConfig {
    /// Checks a serde cannot express; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        parse_url(&self.url)?;
        if self.events.is_empty() {
            return Err("webhook.events is empty: list at least one of \"connect\", \"close\", \"message\" (or remove [webhook])".into());
        }
        if !(1..=10_000).contains(&self.batch_max) {
            return Err("webhook.batch_max must be between 1 and 10000".into());
        }
        if !(1..=60_000).contains(&self.flush_ms) {
            return Err("webhook.flush_ms must be between 1 and 60000".into());
        }
        if !(1..=10_000_000).contains(&self.queue_capacity) {
            return Err("webhook.queue_capacity must be between 1 and 10000000".into());
        }
        if self.max_text_bytes > 16 << 20 {
            return Err("webhook.max_text_bytes must be at most 16777216".into());
        }
        if self.queue_max_bytes < (64 << 10).max(self.max_text_bytes.saturating_mul(4)) {
            return Err(
                "webhook.queue_max_bytes must be at least 65536 and 4 x webhook.max_text_bytes"
                    .into(),
            );
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err("webhook.timeout_ms must be between 1 and 600000".into());
        }
        if self.max_retries > 20 {
            return Err("webhook.max_retries must be at most 20".into());
        }
        if !(1..=60_000).contains(&self.retry_backoff_ms) {
            return Err("webhook.retry_backoff_ms must be between 1 and 60000".into());
        }
        if let Some(t) = &self.token {
            if t.is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err("webhook.token must be non-empty visible ASCII".into());
            }
        }
        Ok(())
    }
}

/// `http://host[:port][/path]` -> Uri. https is refused with a clear message.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    if url.is_empty() {
        return Err("webhook.url is required (e.g. \"http://127.0.0.1:9000/events\")".into());
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("webhook.url = {url:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "webhook.url = {url:?}: TLS webhooks are not supported yet; use an http:// URL \
                 (e.g. a local relay or sidecar that forwards over TLS)"
            ))
        }
        _ => return Err(format!("webhook.url = {url:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("webhook.url = {url:?} has no host"));
    }
    Ok(uri)
}

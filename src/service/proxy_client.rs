//! `auth = "proxy"`: the calls to the application, off the cores. A core hands a request
//! over with [`ProxyClient::ask`] (a lock-free unbounded channel: it never waits; what is
//! queued is bounded by the connections parked on the cores) and goes on; the task
//! [`ProxyClient::run`] on the control thread's runtime answers from the cache, joins a call
//! already under way for the same credentials, refuses at once (busy) over `max_in_flight`
//! calls, or makes the call (`GET [proxy] url` with the forwarded headers, bounded by
//! `timeout_ms` and `max_answer_bytes`). Every request is answered exactly once, by `done`
//! on the control thread (which must only queue work, e.g. a command to the core).
use crate::config::proxy::{parse_url, ProxyConfig};
use crate::service::proxy_auth::{parse_answer, AnswerCache, CredKey, ProxyAnswer, ProxyRequest};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a core is told when the application has answered.
pub type Done = Box<dyn FnOnce(ProxyAnswer) + Send>;

struct Job {
    req: ProxyRequest,
    done: Done,
}

/// Counters for `/metrics` (written by the control thread only).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Calls made to the application.
    pub calls: AtomicU64,
    /// Requests answered from the cache.
    pub cache_hits: AtomicU64,
    /// Requests that joined a call under way for the same credentials.
    pub joined: AtomicU64,
    /// Calls by outcome.
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Requests answered 503 at once: `max_in_flight` calls under way.
    pub busy: AtomicU64,
}

/// The client of `[proxy]`: the cores' side (`ask`) and the task that serves it (`run`).
pub struct ProxyClient {
    config: ProxyConfig,
    uri: Uri,
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    pub stats: ProxyStats,
}

impl ProxyClient {
    pub fn new(config: &ProxyConfig) -> Result<ProxyClient, String> {
        let uri = parse_url(&config.url)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(ProxyClient {
            config: config.clone(),
            uri,
            tx,
            rx: Mutex::new(Some(rx)),
            stats: ProxyStats::default(),
        })
    }

    /// The forwarded header names (for [`ProxyRequest::of`]).
    pub fn forward_headers(&self) -> &[String] {
        &self.config.forward_headers
    }

    /// `Retry-After` of a 503.
    pub fn retry_after_secs(&self) -> u32 {
        self.config.retry_after_secs
    }

    /// Ask the application about `req`; `done` runs on the control thread with the answer.
    /// Never waits (called on the cores).
    pub fn ask(&self, req: ProxyRequest, done: Done) {
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { req, done }) {
            (job.done)(ProxyAnswer::unavailable("the proxy client has stopped"));
        }
    }

    /// Serve the cores' requests until the process ends (a task on the control runtime).
    pub async fn run(self: std::sync::Arc<Self>) {
        let Some(mut jobs) = self.rx.lock().expect("proxy rx lock").take() else {
            return;
        };
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(self.config.max_in_flight.min(64))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        // Unix ms: the cache compares with the answers' `expires_at`.
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let mut cache = AnswerCache::new(self.config.cache_ttl_ms, self.config.cache_max_entries);
        // Calls under way, by credentials: who waits for each.
        let mut waiting: HashMap<CredKey, Vec<Done>> = HashMap::new();
        let (answered_tx, mut answered) = mpsc::unbounded_channel::<(CredKey, ProxyAnswer)>();
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(Job { req, done }) = job else { return };
                    if let Some(id) = cache.get(&req.key, now_ms()) {
                        self.stats.cache_hits.fetch_add(1, Relaxed);
                        done(ProxyAnswer::Admit(id));
                    } else if let Some(w) = waiting.get_mut(&req.key) {
                        self.stats.joined.fetch_add(1, Relaxed);
                        w.push(done);
                    } else if waiting.len() >= self.config.max_in_flight {
                        self.stats.busy.fetch_add(1, Relaxed);
                        done(ProxyAnswer::Unavailable {
                            why: "too many calls to the application under way".into(),
                            busy: true,
                        });
                    } else {
                        self.stats.calls.fetch_add(1, Relaxed);
                        waiting.insert(req.key, vec![done]);
                        let call = self.call(&client, &req, timeout);
                        let tx = answered_tx.clone();
                        let key = req.key;
                        tokio::spawn(async move {
                            let _ = tx.send((key, call.await));
                        });
                    }
                }
                Some((key, answer)) = answered.recv() => {
                    let counter = match &answer {
                        ProxyAnswer::Admit(id) => {
                            cache.put(key, id.clone(), now_ms());
                            &self.stats.admitted
                        }
                        ProxyAnswer::Refuse { .. } => &self.stats.refused,
                        ProxyAnswer::Unavailable { why, .. } => {
                            tracing::warn!("proxy auth: {why} ({})", self.uri);
                            &self.stats.failed
                        }
                    };
                    counter.fetch_add(1, Relaxed);
                    for done in waiting.remove(&key).unwrap_or_default() {
                        done(answer.clone());
                    }
                }
            }
        }
    }

    /// One call: the request, bounded in time (connect, answer, body) and size.
    fn call(
        &self,
        client: &Client<HttpConnector, Empty<Bytes>>,
        req: &ProxyRequest,
        timeout: Duration,
    ) -> impl std::future::Future<Output = ProxyAnswer> + Send + 'static {
        let request = self.request(req);
        let client = client.clone();
        let max = self.config.max_answer_bytes;
        async move {
            let request = match request {
                Ok(r) => r,
                Err(e) => return ProxyAnswer::unavailable(format!("bad request: {e}")),
            };
            let exchange = async {
                let resp = client.request(request).await.map_err(|e| {
                    use std::error::Error as _;
                    match e.source() {
                        Some(s) => format!("{e}: {s}"),
                        None => e.to_string(),
                    }
                })?;
                let status = resp.status().as_u16();
                let body = Limited::new(resp.into_body(), max)
                    .collect()
                    .await
                    .map_err(|e| format!("answer body: {e}"))?
                    .to_bytes();
                Ok::<_, String>(parse_answer(status, &body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Err(_) => ProxyAnswer::unavailable(format!("no answer within {timeout:?}")),
                Ok(Err(e)) => ProxyAnswer::unavailable(e),
                Ok(Ok(a)) => a,
            }
        }
    }

    /// `GET url` with the forwarded headers and `X-Forwarded-Uri`, `-Host`, `-Method`.
    fn request(&self, req: &ProxyRequest) -> Result<Request<Empty<Bytes>>, String> {
        let mut r = Request::get(self.uri.clone())
            .header(
                USER_AGENT,
                concat!("ringwire/", env!("CARGO_PKG_VERSION"), " proxy-auth"),
            )
            .header("x-forwarded-uri", &*req.uri)
            .header("x-forwarded-method", &*req.method);
        if let Some(h) = &req.host {
            r = r.header("x-forwarded-host", &**h);
        }
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            // A value hyper refuses (control bytes) is left out rather than failing the call.
            if let Ok(v) = HeaderValue::from_bytes(value) {
                r = r.header(name, v);
            }
        }
        r.body(Empty::new()).map_err(|e| e.to_string())
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(1024);
        let s = &self.stats;
        super::prometheus::metric(
            &mut out,
            "ringwire_proxy_auth_calls_total",
            "counter",
            "Calls to the [proxy] application, by outcome (admitted, refused 401/403, failed: \
             timeout, connection, 5xx or a bad answer)",
            &[
                ("{outcome=\"admitted\"}", s.admitted.load(Relaxed)),
                ("{outcome=\"refused\"}", s.refused.load(Relaxed)),
                ("{outcome=\"failed\"}", s.failed.load(Relaxed)),
            ],
        );
        super::prometheus::metric(
            &mut out,
            "ringwire_proxy_auth_requests_total",
            "counter",
            "Requests of auth = \"proxy\" endpoints by how they were answered (call, cache, \
             joined a call under way, busy: over max_in_flight)",
            &[
                ("{by=\"call\"}", s.calls.load(Relaxed)),
                ("{by=\"cache\"}", s.cache_hits.load(Relaxed)),
                ("{by=\"joined\"}", s.joined.load(Relaxed)),
                ("{by=\"busy\"}", s.busy.load(Relaxed)),
            ],
        );
        out
    }
}

//! The `ringwire-ingress` thread: a NATS client (tokio current-thread runtime of its own, so
//! that a flood of NATS messages never slows the admin API or a core) subscribed in the
//! queue group to `<subject>` and `<subject>.>`.
//!
//! The client connects in the background and reconnects by itself: the server starts and
//! serves with NATS down, the ingress starts taking pushes once NATS is there (one warning
//! per outage, one line when it is back). Messages are handled in the order they arrive (a
//! publisher's pushes to a user reach the user in its order): parsed here, handed to the
//! cores at once ([`Service::submit_batch`]), and the answer waited for in a task of its own.
//! At most `ingress_max_in_flight` messages are handled at once; meanwhile the client keeps
//! at most `ingress_buffer` more, and drops (and counts) the rest: memory stays bounded
//! whatever is published. The cores' inboxes are never waited on: the core answers through
//! a oneshot, polled here.
use super::{parse, IngressStats, RejectLog};
use crate::bus::RuntimeThread;
use crate::config::NatsConfig;
use crate::facade::push;
use crate::facade::Service;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// At most one warning about dropped messages in this time.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest a reply may wait for room in the client's queue (NATS down): then it is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The running ingress. [`IngressHandle::shutdown`] (or dropping it) stops taking messages
/// and joins the thread.
pub struct IngressHandle {
    stats: Arc<IngressStats>,
    thread: RuntimeThread,
}

impl IngressHandle {
    pub fn stats(&self) -> Arc<IngressStats> {
        self.stats.clone()
    }

    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}

/// Starts the ingress thread for `config` (`ingress` on). Fails only if the thread or its
/// runtime cannot be made; NATS being unreachable is not an error (see the module docs).
pub fn start(config: &NatsConfig, service: Service) -> Result<IngressHandle, String> {
    let stats = Arc::new(IngressStats::default());
    let (config, thread_stats) = (config.clone(), stats.clone());
    let thread = RuntimeThread::spawn("ringwire-ingress", move |stop| {
        run(config, service, thread_stats, stop)
    })
    .map_err(|e| format!("nats ingress: {e}"))?;
    Ok(IngressHandle { stats, thread })
}

/// What the client's events change: the gauge, the dropped count, one warning per outage.
fn on_event(
    event: async_nats::Event,
    url: &str,
    stats: &IngressStats,
    outage: &AtomicBool,
    dropping: &Mutex<Option<Instant>>,
) {
    use async_nats::Event;
    match event {
        Event::Connected => {
            stats.connected.store(true, Relaxed);
            outage.store(false, Relaxed);
            tracing::info!(%url, "nats ingress: connected, taking pushes");
        }
        Event::Disconnected => {
            stats.connected.store(false, Relaxed);
            if !outage.swap(true, Relaxed) {
                tracing::warn!(
                    %url,
                    "nats ingress: lost NATS, reconnecting in the background; the server keeps \
                     serving; pushes published meanwhile go to the other nodes of the queue \
                     group, if any"
                );
            }
        }
        Event::ClientError(e) => {
            // Every failed attempt while NATS is away: one warning for the outage.
            if !stats.connected() && !outage.swap(true, Relaxed) {
                tracing::warn!(
                    %url,
                    error = %e,
                    "nats ingress: NATS is unreachable; the server serves without it and keeps \
                     retrying in the background"
                );
            }
        }
        Event::SlowConsumer(_) => {
            // One event per message dropped: one line per burst (counted by the loop).
            let now = Instant::now();
            let mut last = dropping.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY) {
                tracing::warn!(
                    "nats ingress: messages dropped, nats.ingress_buffer is full (see \
                     ringwire_nats_ingress_dropped_total)"
                );
                *last = Some(now);
            }
        }
        other => tracing::warn!(%url, event = %other, "nats ingress"),
    }
}

async fn run(
    config: NatsConfig,
    service: Service,
    stats: Arc<IngressStats>,
    mut stop: oneshot::Receiver<()>,
) {
    let url = config.url.clone();
    let prefix = config.ingress_subject.clone();
    let outage = Arc::new(AtomicBool::new(false));
    let dropping = Arc::new(Mutex::new(None));
    let (event_url, event_stats) = (url.clone(), stats.clone());
    let options = async_nats::ConnectOptions::new()
        .name("ringwire-ingress")
        .retry_on_initial_connect()
        .subscription_capacity(config.ingress_buffer)
        .reconnect_delay_callback(crate::bus::reconnect_delay)
        .event_callback(move |event| {
            let (url, stats) = (event_url.clone(), event_stats.clone());
            let (outage, dropping) = (outage.clone(), dropping.clone());
            async move { on_event(event, &url, &stats, &outage, &dropping) }
        });
    tracing::info!(
        %url,
        "nats ingress: connecting in the background (the server does not wait for NATS): \
         pushes on {prefix}, {prefix}.batch and {prefix}.<context>.<user>, queue group {}",
        config.ingress_queue
    );
    let client = match options.connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%url, error = %e, "nats ingress: cannot use this NATS url; ingress off");
            return;
        }
    };
    let queue = config.ingress_queue.clone();
    let subscribed = async {
        let exact = client
            .queue_subscribe(prefix.clone(), queue.clone())
            .await?;
        let below = client
            .queue_subscribe(format!("{prefix}.>"), queue.clone())
            .await?;
        Ok::<_, async_nats::SubscribeError>(futures_util::stream::select(exact, below))
    };
    let mut messages = match subscribed.await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(%url, error = %e, "nats ingress: cannot subscribe; ingress off");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(config.ingress_max_in_flight));
    let mut log = RejectLog::new();
    // Messages taken from the subscriptions (the client counts those it received).
    let mut seen = 0u64;
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let next = std::future::poll_fn(|cx| {
            let polled = messages.poll_next_unpin(cx);
            if polled.is_pending() {
                // Both subscriptions are empty, and the client's reader runs on this thread:
                // every message it received and did not buffer was dropped.
                let received = client.statistics().in_messages.load(Relaxed);
                stats.dropped.store(received.saturating_sub(seen), Relaxed);
            }
            polled
        });
        let msg = tokio::select! {
            _ = &mut stop => break,
            m = next => match m {
                Some(m) => m,
                None => break,
            },
        };
        seen += 1;
        let subject = msg.subject.as_str();
        let answer = match parse(&prefix, subject, &msg.payload) {
            Ok(parsed) => {
                stats.took(&parsed);
                let batch = parsed.batch;
                // Handed to the cores now, in the order the messages came.
                let counts = service.submit_batch(parsed.jobs);
                Ok(async move {
                    let c = counts.await;
                    match batch {
                        Some(n) => push::batch_answer(n, &c),
                        None => push::push_answer(&c),
                    }
                })
            }
            Err(rejected) => {
                stats.rejected(rejected.reason);
                log.refused(subject, &rejected, Instant::now());
                Err(serde_json::json!({ "error": rejected.message }))
            }
        };
        let (client, stats, reply) = (client.clone(), stats.clone(), msg.reply.clone());
        stats.in_flight.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let body = match answer {
                Ok(counts) => counts.await,
                Err(error) => error,
            };
            if let Some(reply) = reply {
                let publish = client.publish(reply, body.to_string().into_bytes().into());
                let _ = tokio::time::timeout(REPLY_TIMEOUT, publish).await;
            }
            stats.in_flight.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
    stats.connected.store(false, Relaxed);
    tracing::info!("nats ingress: stopped");
}

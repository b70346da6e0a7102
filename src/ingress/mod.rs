//! Pushes that come in other than through the admin API: the NATS ingress (`[nats] ingress`).
//!
//! An application that publishes to NATS pushes without HTTP: `<subject>` carries the body of
//! `POST /v1/push`, `<subject>.batch` that of `POST /v1/push/batch`, and
//! `<subject>.<context>.<user>` a push for that user (a string user as `u` and its bytes in
//! base64url; its body may leave context and user out;
//! if given they must agree). The JSON is parsed and checked by `facade::push`, as the admin
//! API's, and the pushes go through `facade::Service` like the admin API's. Every node
//! subscribes in one queue group, so each message is taken by one node, which delivers it
//! cluster-wide. A message with a reply subject is answered with the admin API's JSON (the
//! counts, or `{"error"}`); one without is fire-and-forget.
//!
//! - this file: which subject is what ([`route`]), what a message becomes ([`parse`]), the
//!   counters ([`IngressStats`]) and the rate-limited log of refused messages.
//! - [`nats`]: the `ringwire-ingress` thread (its own tokio runtime, never a core): the NATS
//!   client, the subscriptions, the bounded handling.
#![forbid(unsafe_code)]
mod nats;

pub use nats::{start, IngressHandle};

use crate::facade::push::{self, Refused};
use crate::facade::{PushJob, UserId};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Largest message taken: the admin API's body limit (axum's default, 2 MiB). A push's
/// message is at most 1 MiB (`facade::push::MAX_MESSAGE_LEN`).
pub const MAX_BODY_LEN: usize = 2 << 20;

/// What a subject carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `<subject>`: the body of `POST /v1/push`.
    Push,
    /// `<subject>.batch`: the body of `POST /v1/push/batch`.
    Batch,
    /// `<subject>.<context>.<user>`: a push for that user (a numeric user in decimal, a
    /// string user as `u` and its bytes in unpadded base64url, as in history subjects).
    PushFor { context: u32, user: UserId },
}

/// Why a message was refused; the label of `ringwire_nats_ingress_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not the JSON a push takes (not JSON, a field missing, unknown or mistyped).
    Json,
    /// A value out of bounds, or context / user disagreeing with the subject.
    Invalid,
    /// Over [`MAX_BODY_LEN`].
    TooLarge,
    /// A subject under `<subject>.` that is none of the above.
    Subject,
}

pub const REASONS: [Reason; 4] = [
    Reason::Json,
    Reason::Invalid,
    Reason::TooLarge,
    Reason::Subject,
];

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Json => "json",
            Reason::Invalid => "invalid",
            Reason::TooLarge => "too_large",
            Reason::Subject => "subject",
        }
    }
}

/// A refused message: why, and the text its reply gets as `{"error": text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reason,
    pub message: String,
}

impl From<Refused> for Rejected {
    fn from(r: Refused) -> Rejected {
        match r {
            Refused::Json(message) => Rejected {
                reason: Reason::Json,
                message,
            },
            Refused::Invalid(message) => Rejected {
                reason: Reason::Invalid,
                message,
            },
        }
    }
}

/// What `subject` carries, for the ingress subject `prefix`.
pub fn route(prefix: &str, subject: &str) -> Result<Route, Rejected> {
    let rest = match subject.strip_prefix(prefix) {
        Some("") => return Ok(Route::Push),
        Some(rest) => rest.strip_prefix('.'),
        None => None,
    };
    let bad = || Rejected {
        reason: Reason::Subject,
        message: format!(
            "subject {subject}: expected {prefix}, {prefix}.batch or \
             {prefix}.<context>.<user> (a decimal context; a decimal user, or u and the \
             base64url of a string user)"
        ),
    };
    let rest = rest.ok_or_else(bad)?;
    if rest == "batch" {
        return Ok(Route::Batch);
    }
    let id = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u32>().ok())
            .flatten()
    };
    let user = |t: &str| match id(t) {
        Some(n) => Some(UserId::from(n)),
        None => {
            let bytes = URL_SAFE_NO_PAD.decode(t.strip_prefix('u')?).ok()?;
            UserId::from_bytes(&bytes).ok()
        }
    };
    match rest.split_once('.') {
        Some((c, u)) => match (id(c), user(u)) {
            (Some(context), Some(user)) => Ok(Route::PushFor { context, user }),
            _ => Err(bad()),
        },
        None => Err(bad()),
    }
}

/// A message taken: its pushes, and the batch size when it was a batch.
pub struct Parsed {
    pub jobs: Vec<PushJob>,
    pub batch: Option<usize>,
}

/// What the message on `subject` with `payload` asks for.
pub fn parse(prefix: &str, subject: &str, payload: &[u8]) -> Result<Parsed, Rejected> {
    let route = route(prefix, subject)?;
    if payload.len() > MAX_BODY_LEN {
        return Err(Rejected {
            reason: Reason::TooLarge,
            message: format!(
                "message of {} bytes: at most {MAX_BODY_LEN} are taken",
                payload.len()
            ),
        });
    }
    Ok(match route {
        Route::Push => Parsed {
            jobs: vec![push::parse_push(payload)?],
            batch: None,
        },
        Route::PushFor { context, user } => Parsed {
            jobs: vec![push::parse_push_for(payload, context, &user)?],
            batch: None,
        },
        Route::Batch => {
            let jobs = push::parse_batch(payload)?;
            Parsed {
                batch: Some(jobs.len()),
                jobs,
            }
        }
    })
}

/// The ingress's counters (written by its thread and the NATS client's events, read by
/// `/metrics` and `/v1/stats`).
#[derive(Default)]
pub struct IngressStats {
    connected: AtomicBool,
    /// Messages taken: single pushes, batches.
    taken: [AtomicU64; 2],
    /// Pushes handed to the cores (each of a batch).
    pushes: AtomicU64,
    rejected: [AtomicU64; REASONS.len()],
    /// Messages the NATS client received and dropped, its buffer full: what it received less
    /// what the ingress took, whenever the ingress finds its subscriptions empty.
    dropped: AtomicU64,
    in_flight: AtomicU64,
}

impl IngressStats {
    fn took(&self, parsed: &Parsed) {
        self.taken[usize::from(parsed.batch.is_some())].fetch_add(1, Relaxed);
        self.pushes.fetch_add(parsed.jobs.len() as u64, Relaxed);
    }

    fn rejected(&self, reason: Reason) {
        let i = REASONS.iter().position(|&r| r == reason).unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// The Prometheus text of the counters.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut one = |name: &str, kind: &str, help: &str, series: &[(&str, u64)]| {
            crate::service::prometheus::metric(&mut out, name, kind, help, series)
        };
        one(
            "ringwire_nats_ingress_connected",
            "gauge",
            "The NATS ingress's connection to NATS is up (1) or not (0)",
            &[("", u64::from(self.connected()))],
        );
        let taken = |i: usize| self.taken[i].load(Relaxed);
        one(
            "ringwire_nats_ingress_messages_total",
            "counter",
            "NATS messages taken by the ingress, by kind (a push or a batch)",
            &[
                ("{kind=\"push\"}", taken(0)),
                ("{kind=\"batch\"}", taken(1)),
            ],
        );
        one(
            "ringwire_nats_ingress_pushes_total",
            "counter",
            "Pushes from NATS handed to the cores (each push of a batch)",
            &[("", self.pushes.load(Relaxed))],
        );
        let labels: Vec<String> = REASONS
            .iter()
            .map(|r| format!("{{reason=\"{}\"}}", r.label()))
            .collect();
        let rejected: Vec<(&str, u64)> = labels
            .iter()
            .zip(&self.rejected)
            .map(|(l, n)| (l.as_str(), n.load(Relaxed)))
            .collect();
        one(
            "ringwire_nats_ingress_rejected_total",
            "counter",
            "NATS messages refused by the ingress: json (not the JSON of a push), invalid (a value out of bounds or disagreeing with the subject), too_large, subject (an unknown subject)",
            &rejected,
        );
        one(
            "ringwire_nats_ingress_dropped_total",
            "counter",
            "NATS messages the client dropped because nats.ingress_buffer was full (slow consumer)",
            &[("", self.dropped.load(Relaxed))],
        );
        one(
            "ringwire_nats_ingress_in_flight",
            "gauge",
            "NATS messages being handled (at most nats.ingress_max_in_flight)",
            &[("", self.in_flight.load(Relaxed))],
        );
        out
    }

    /// The counters for `/v1/stats`.
    pub fn json(&self) -> serde_json::Value {
        let rejected: serde_json::Map<String, serde_json::Value> = REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (r.label().to_string(), n.load(Relaxed).into()))
            .collect();
        serde_json::json!({
            "connected": self.connected(),
            "messages": self.taken[0].load(Relaxed) + self.taken[1].load(Relaxed),
            "batches": self.taken[1].load(Relaxed),
            "pushes": self.pushes.load(Relaxed),
            "rejected": rejected,
            "dropped": self.dropped.load(Relaxed),
            "in_flight": self.in_flight.load(Relaxed),
        })
    }
}

/// At most one warning per second about refused messages; the others are counted and said in
/// the next one.
struct RejectLog {
    last: Option<Instant>,
    suppressed: u64,
}

const REJECT_LOG_EVERY: Duration = Duration::from_secs(1);

impl RejectLog {
    fn new() -> RejectLog {
        RejectLog {
            last: None,
            suppressed: 0,
        }
    }

    fn refused(&mut self, subject: &str, r: &Rejected, now: Instant) {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REJECT_LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        let text: String = r.message.chars().take(300).collect();
        tracing::warn!(
            subject,
            reason = r.reason.label(),
            not_logged_since_last = self.suppressed,
            "nats ingress: message refused: {text}"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let p = "ringwire.push";
        assert_eq!(route(p, "ringwire.push"), Ok(Route::Push));
        assert_eq!(route(p, "ringwire.push.batch"), Ok(Route::Batch));
        assert_eq!(
            route(p, "ringwire.push.3.42"),
            Ok(Route::PushFor {
                context: 3,
                user: 42.into()
            })
        );
        // A string user: `u` and its bytes in base64url ("alice@x.y").
        assert_eq!(
            route(p, "ringwire.push.3.uYWxpY2VAeC55"),
            Ok(Route::PushFor {
                context: 3,
                user: UserId::parse("alice@x.y").unwrap()
            })
        );
        for bad in [
            "ringwire.pushx",
            "ringwire.push.",
            "ringwire.push.3",
            "ringwire.push.3.x",
            "ringwire.push.3.42.1",
            "ringwire.push.+3.42",
            "ringwire.push.3.4294967296",
            "ringwire.push.3.u",
            "ringwire.push.3.u!!",
            "ringwire.push.3.uAA",
            "ringwire.push.batch.1",
            "other",
        ] {
            assert_eq!(
                route(p, bad).map_err(|e| e.reason),
                Err(Reason::Subject),
                "{bad}"
            );
        }
    }

    #[test]
    fn messages() {
        let p = "ringwire.push";
        let big = vec![b' '; MAX_BODY_LEN + 1];
        assert_eq!(
            parse(p, p, &big).err().map(|e| e.reason),
            Some(Reason::TooLarge)
        );
        let r = parse(p, p, b"{nope").err().unwrap();
        assert_eq!(r.reason, Reason::Json);
        assert!(r.message.starts_with("invalid push: "), "{}", r.message);
        let b = parse(
            p,
            "ringwire.push.batch",
            br#"{"pushes":[{"context":1,"user":2,"message":"a"}]}"#,
        )
        .ok()
        .unwrap();
        assert_eq!((b.batch, b.jobs.len()), (Some(1), 1));
        let one = parse(p, "ringwire.push.1.2", br#"{"message":"a"}"#)
            .ok()
            .unwrap();
        assert_eq!((one.batch, &one.jobs[0].user), (None, &2.into()));
        let stats = IngressStats::default();
        stats.took(&b);
        stats.rejected(Reason::TooLarge);
        let text = stats.metrics_text();
        assert!(text.contains("ringwire_nats_ingress_messages_total{kind=\"batch\"} 1\n"));
        assert!(text.contains("ringwire_nats_ingress_rejected_total{reason=\"too_large\"} 1\n"));
    }
}

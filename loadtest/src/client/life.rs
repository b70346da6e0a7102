//! The life of one simulated client across reconnects: the first connect, reconnect
//! attempts after a churn close or a storm drop, the waits between them (`Retry-After` or
//! backoff) and giving up. Every attempt is timed and counted here.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::client::{ConnParams, End, Kick, Phase, Shared, Slot};
use crate::rng::mix;
use crate::stats;
use crate::wire::errors::ConnectError;

/// Reconnect behaviour (churn and storm scenarios).
#[derive(Debug, Clone, Copy)]
pub struct ReconnectPolicy {
    /// Storm: give up this long after the drop.
    pub storm_timeout: Duration,
    /// Longest single wait between two attempts.
    pub max_wait: Duration,
    /// Exponential backoff (socket.io-client): base delay and cap.
    pub delay: Duration,
    pub delay_max: Duration,
}

impl ReconnectPolicy {
    /// The wait after a failed attempt: the server's `Retry-After: S` as S + random(0..S),
    /// otherwise socket.io-client's backoff (`delay * 2^failures`, +-50 % jitter, capped at
    /// `delay_max`); never more than `max_wait`. `failures` counts the earlier failures of
    /// this reconnect, `r` is uniform in [0, 1). Returns the wait and whether it followed
    /// `Retry-After`.
    pub fn wait(&self, retry_after: Option<u64>, failures: u32, r: f64) -> (Duration, bool) {
        let (wait, honoured) = match retry_after {
            Some(s) if s > 0 => (Duration::from_secs_f64(s as f64 * (1.0 + r)), true),
            _ => {
                // socket.io-client (engine.io-client's Backoff): jitter 0.5, factor 2.
                let base = self.delay.as_secs_f64() * 2f64.powi(failures.min(30) as i32);
                let deviation = (r * 0.5 * base * 1000.0).floor() / 1000.0;
                let secs = if ((r * 10.0).floor() as u64) & 1 == 0 {
                    base - deviation
                } else {
                    base + deviation
                };
                (
                    Duration::from_secs_f64(secs.min(self.delay_max.as_secs_f64()).max(0.0)),
                    false,
                )
            }
        };
        (wait.min(self.max_wait), honoured)
    }
}

/// What to do after a connection attempt.
pub enum Next<T> {
    /// Connected.
    Up(T),
    /// Failed; the wait is over, try again.
    Retry,
    /// Failed for good (first attempt, gave up, or stopped).
    Quit,
}

/// A reconnect under way.
struct Reconnect {
    kick: Kick,
    /// Start of the reconnect: the churn close, or the worker's storm drop.
    since: Instant,
    /// Storm: give up at this time.
    deadline: Option<Instant>,
    /// Failed attempts so far.
    failures: u32,
}

/// The life of one simulated client across reconnects: times and counts every connection
/// attempt, and waits between reconnect attempts.
pub struct Life<'a> {
    p: &'a ConnParams,
    shared: &'a Shared,
    slot: &'a Slot,
    /// Held during the first attempt (limits in-flight first connects).
    permit: Option<OwnedSemaphorePermit>,
    reconnect: Option<Reconnect>,
    rng: u64,
}

impl<'a> Life<'a> {
    pub fn new(
        id: u64,
        p: &'a ConnParams,
        shared: &'a Shared,
        slot: &'a Slot,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Life {
            p,
            shared,
            slot,
            permit: Some(permit),
            reconnect: None,
            rng: mix(id ^ crate::sysinfo::unix_now_ns()),
        }
    }

    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng = mix(self.rng);
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn established(&self) {
        self.slot.set_open(true);
    }

    /// Runs one connection attempt (`attempt`: TCP connect + handshake) within the connect
    /// timeout and counts it. The first attempt of a connection is not retried. A reconnect
    /// that fails waits (`Retry-After` + jitter, or the backoff) and returns `Retry`; it
    /// gives up at the storm deadline, and stops waiting on `Phase::Stop`.
    pub async fn attempt<T>(
        &mut self,
        ctrl: &mut watch::Receiver<Phase>,
        attempt: impl std::future::Future<Output = Result<T, ConnectError>>,
    ) -> Next<T> {
        let shared = self.shared;
        let t0 = Instant::now();
        let Some((kick, since, deadline)) = self
            .reconnect
            .as_ref()
            .map(|re| (re.kick, re.since, re.deadline))
        else {
            let r = within_connect_timeout(self.p, attempt).await;
            self.permit = None;
            return match r {
                Ok(x) => {
                    stats::record(
                        &mut shared.connect_latency.lock().unwrap(),
                        t0.elapsed().as_micros() as u64,
                    );
                    shared.attempt_done(Ok(()));
                    self.established();
                    Next::Up(x)
                }
                Err(e) => {
                    shared.attempt_done(Err(&e.kind));
                    Next::Quit
                }
            };
        };
        if *ctrl.borrow() == Phase::Stop {
            return self.abandon();
        }
        let limit = deadline.map_or(t0 + self.p.connect_timeout, |d| {
            d.min(t0 + self.p.connect_timeout)
        });
        shared.reconnect_attempts.fetch_add(1, Relaxed);
        let r = tokio::select! {
            r = timeout_at(limit, attempt) => r.unwrap_or_else(|_| Err("timeout".into())),
            _ = stopped(ctrl) => return self.abandon(),
        };
        let e = match r {
            Ok(x) => {
                self.reconnect = None;
                stats::record(
                    &mut shared.reconnect_latency.lock().unwrap(),
                    t0.elapsed().as_micros() as u64,
                );
                shared.reconnects.fetch_add(1, Relaxed);
                if kick == Kick::Storm {
                    shared.storm_reconnected.fetch_add(1, Relaxed);
                    stats::record(
                        &mut shared.storm_latency.lock().unwrap(),
                        since.elapsed().as_micros() as u64,
                    );
                }
                shared.reconnect_over();
                shared.opened();
                self.established();
                return Next::Up(x);
            }
            Err(e) => e,
        };
        shared.reconnect_failed.fetch_add(1, Relaxed);
        Shared::count_kind(&shared.reconnect_failed_by_kind, &e.kind);
        if let Some(s) = e.retry_after {
            shared.retry_after_max_s.fetch_max(s, Relaxed);
        }
        let r = self.random();
        let re = self.reconnect.as_mut().expect("reconnecting");
        let (wait, honoured) = self.p.reconnect.wait(e.retry_after, re.failures, r);
        re.failures += 1;
        let resume = Instant::now() + wait;
        if re.deadline.is_some_and(|d| resume >= d) {
            shared.storm_gave_up.fetch_add(1, Relaxed);
            shared.reconnect_over();
            return Next::Quit;
        }
        if honoured {
            shared.retry_after_waits.fetch_add(1, Relaxed);
        } else {
            shared.backoff_waits.fetch_add(1, Relaxed);
        }
        tokio::select! {
            _ = sleep_until(resume) => {
                shared.reconnect_retries.fetch_add(1, Relaxed);
                Next::Retry
            }
            _ = stopped(ctrl) => self.abandon(),
        }
    }

    /// The run stops while reconnecting.
    fn abandon<T>(&mut self) -> Next<T> {
        self.reconnect = None;
        self.shared.reconnect_abandoned.fetch_add(1, Relaxed);
        self.shared.reconnect_over();
        Next::Quit
    }

    /// An established connection ended (its socket is already closed or dropped). Returns
    /// true if it is to connect again (churn or storm kick).
    pub async fn ended(&mut self, end: End) -> bool {
        let shared = self.shared;
        self.slot.set_open(false);
        let kick = self.slot.take();
        match (end, kick) {
            // Kicked, or dropped while a kick was pending (it was leaving anyway).
            (End::Kicked | End::Dropped(_), Some(kick)) => {
                shared.connection_ended(None);
                let since = match kick {
                    Kick::Storm => shared.storm_at.lock().unwrap().unwrap_or_else(Instant::now),
                    Kick::Churn => Instant::now(),
                };
                self.reconnect = Some(Reconnect {
                    kick,
                    since,
                    deadline: (kick == Kick::Storm).then(|| since + self.p.reconnect.storm_timeout),
                    failures: 0,
                });
                if kick == Kick::Storm {
                    // Let every other kicked connection drop its socket before reconnecting,
                    // so that the drops happen together.
                    tokio::task::yield_now().await;
                }
                true
            }
            (End::Stopped, Some(_)) => {
                shared.connection_ended(None);
                shared.reconnect_over();
                false
            }
            (End::Dropped(kind), None) => {
                shared.connection_ended(Some(&kind));
                false
            }
            (End::Stopped | End::Kicked, None) => {
                shared.connection_ended(None);
                false
            }
        }
    }
}

/// Completes when the phase is (or becomes) `Stop`, or the worker is gone.
pub async fn stopped(ctrl: &mut watch::Receiver<Phase>) {
    loop {
        if *ctrl.borrow_and_update() == Phase::Stop {
            return;
        }
        if ctrl.changed().await.is_err() {
            return;
        }
    }
}

/// A connection attempt bounded by `--connect-timeout` (a timeout counts as "timeout").
pub async fn within_connect_timeout<T>(
    p: &ConnParams,
    attempt: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    timeout(p.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_wait_ms: u64) -> ReconnectPolicy {
        ReconnectPolicy {
            storm_timeout: Duration::from_secs(60),
            max_wait: Duration::from_millis(max_wait_ms),
            delay: Duration::from_secs(1),
            delay_max: Duration::from_secs(5),
        }
    }

    #[test]
    fn reconnect_waits() {
        let p = policy(30_000);
        let ms = Duration::from_millis;
        // Retry-After: S -> S + random(0..S), capped by the max wait.
        assert_eq!(p.wait(Some(1), 0, 0.0), (ms(1000), true));
        assert_eq!(p.wait(Some(1), 5, 0.5), (ms(1500), true));
        assert_eq!(p.wait(Some(5), 0, 0.999).0, ms(9995));
        assert_eq!(p.wait(Some(100), 0, 0.9), (ms(30_000), true));
        // Otherwise socket.io-client's backoff: 1 s * 2^failures +-50 %, at most 5 s.
        assert_eq!(p.wait(None, 0, 0.0), (ms(1000), false));
        assert_eq!(p.wait(None, 0, 0.13), (ms(1065), false));
        assert_eq!(p.wait(Some(0), 1, 0.5), (ms(2500), false));
        for r in [0.0, 0.13, 0.25, 0.5, 0.77, 0.999] {
            let w = p.wait(None, 0, r).0;
            assert!(w >= ms(500) && w <= ms(1500), "{w:?}");
            let w = p.wait(None, 1, r).0;
            assert!(w >= ms(1000) && w <= ms(3000), "{w:?}");
            assert_eq!(p.wait(None, 40, r).0, ms(5000));
            assert!(policy(200).wait(None, 3, r).0 <= ms(200));
        }
    }
}

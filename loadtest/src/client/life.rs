//! The life of one simulated client across reconnects: the first connect, reconnect
//! attempts after a churn close or a storm drop, the waits between them (`Retry-After` or
//! backoff) and giving up. Every attempt is timed and counted here.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::client::control::{End, Kick, Phase, Slot};
use crate::client::params::ConnParams;
use crate::client::shared::Shared;
use crate::rng::mix;
use crate::stats;
use crate::wire::errors::ConnectError;

/// One protocol's client: how to connect, and what an established connection does.
pub trait Driver {
    /// An established connection.
    type Conn;

    /// One connection attempt (TCP connect + handshake [+ Socket.IO connect]); the
    /// caller bounds it by the connect timeout.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, ConnectError>>;

    /// The scenario loop of an established connection, until it is stopped, dropped or
    /// kicked; its sockets are closed (or reset) when it returns.
    fn drive(
        &mut self,
        conn: Self::Conn,
        ctrl: &mut watch::Receiver<Phase>,
    ) -> impl Future<Output = End>;
}

/// The life of one client: attempts until connected (or given up), the scenario, and
/// again after every churn or storm kick.
pub async fn reconnect_loop<D: Driver>(
    mut driver: D,
    mut life: Life<'_>,
    mut ctrl: watch::Receiver<Phase>,
) {
    loop {
        // The steps are boxed: a held connection then costs the size of its drive loop
        // only, not of the largest state of this one (the handshake, the waits).
        let conn = loop {
            match Box::pin(life.attempt(&mut ctrl, driver.connect())).await {
                Next::Up(conn) => break conn,
                Next::Retry => {}
                Next::Quit => return,
            }
        };
        let end = Box::pin(driver.drive(conn, &mut ctrl)).await;
        if !Box::pin(life.ended(end)).await {
            return;
        }
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
    /// After a storm drop (counted as the storm's, given up at `deadline`).
    storm: bool,
    /// Start of the reconnect: the churn close, the worker's storm drop, or the drop.
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
        let Some((storm, since, deadline)) = self
            .reconnect
            .as_ref()
            .map(|re| (re.storm, re.since, re.deadline))
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
                if storm {
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
    /// true if it is to connect again (churn or storm kick; with `--recover` any drop).
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
                self.reconnect_from(since, kick == Kick::Storm);
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
            // --recover: a client whose connection drops comes back and resumes.
            (End::Dropped(kind), None) if self.p.recover => {
                shared.connection_ended(Some(&kind));
                shared.reconnecting.fetch_add(1, Relaxed);
                self.reconnect_from(Instant::now(), false);
                true
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

    /// Starts reconnecting after an outage that began at `since` (a storm reconnect gives
    /// up at its deadline).
    fn reconnect_from(&mut self, since: Instant, storm: bool) {
        if let Some(mut stream) = self.slot.stream() {
            stream.disconnected(since);
        }
        self.reconnect = Some(Reconnect {
            storm,
            since,
            deadline: storm.then(|| since + self.p.reconnect.storm_timeout),
            failures: 0,
        });
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

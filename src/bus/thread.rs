//! The NATS thread: one [`NatsHistory`] on a thread of its own (`ringwire-nats`, tokio
//! current-thread runtime, like the cluster link's), fed by a bounded queue.
//!
//! Other threads hold a [`BusSender`] (cheap to clone) and submit requests with
//! `append`, `since`, `current`, `put_session` and `take_session`: each returns at once (never blocks, never waits for
//! NATS) and the answer is given to the `done` callback, which runs on the NATS thread: keep
//! it short (put the answer on a queue and ring a doorbell). `done` is called exactly once,
//! also for a request refused at submission (queue full, thread stopped): then at once, on
//! the caller's thread, and the same error is returned.
//!
//! The thread connects at start and, while NATS cannot be reached, again every second; the
//! requests meanwhile fail with the connect error. Once connected, the client reconnects by
//! itself. Requests run concurrently; appends to one user are stored in submission order.
use super::history::{HistoryError, NatsCounters, NatsHistory, NatsSettings, NatsStats};
use crate::service::history::{Position, Recovery};
use crate::service::path_filter::PathFilter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Requests that may wait for the NATS thread.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Between two connection attempts while NATS cannot be reached.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

type Done<T> = Box<dyn FnOnce(Result<T, HistoryError>) + Send>;

enum Job {
    Append {
        context: u32,
        user: Box<[u8]>,
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: Done<(Position, u64)>,
    },
    Since {
        context: u32,
        user: Box<[u8]>,
        from: Position,
        limit: usize,
        done: Done<Recovery>,
    },
    Current {
        context: u32,
        user: Box<[u8]>,
        done: Done<Position>,
    },
    PutSession {
        key: Box<str>,
        record: Vec<u8>,
        done: Done<()>,
    },
    TakeSession {
        key: Box<str>,
        accept: Accept,
        done: Done<Option<Vec<u8>>>,
    },
}

/// Whether a parked session's record may be taken (see [`NatsHistory::take_session`]).
pub type Accept = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

impl Job {
    /// Answers with an error without running (counted as a failure).
    fn fail(self, e: HistoryError, counters: &NatsCounters) {
        match self {
            Job::Append { done, .. } => {
                let r = Err(e);
                counters.count_append(&r);
                done(r)
            }
            Job::Since { done, .. } => {
                let r = Err(e);
                counters.count_resume(&r);
                done(r)
            }
            Job::Current { done, .. } => done(Err(e)),
            Job::PutSession { done, .. } => done(Err(e)),
            Job::TakeSession { done, .. } => done(Err(e)),
        }
    }

    async fn run(self, h: &NatsHistory) {
        match self {
            Job::Append {
                context,
                user,
                text,
                filter,
                done,
            } => done(
                h.append_linked(context, &user, &text, filter.as_ref())
                    .await,
            ),
            Job::Since {
                context,
                user,
                from,
                limit,
                done,
            } => done(h.since(context, &user, from, limit).await),
            Job::Current {
                context,
                user,
                done,
            } => done(h.current(context, &user).await),
            Job::PutSession { key, record, done } => done(h.put_session(&key, record).await),
            Job::TakeSession { key, accept, done } => done(h.take_session(&key, accept).await),
        }
    }
}

/// Submits requests to the NATS thread from any thread, without blocking.
#[derive(Clone)]
pub struct BusSender {
    tx: mpsc::Sender<Job>,
    counters: Arc<NatsCounters>,
}

impl BusSender {
    fn submit(&self, job: Job) -> Result<(), HistoryError> {
        self.tx.try_send(job).map_err(|e| {
            let (job, error) = match e {
                mpsc::error::TrySendError::Full(job) => (
                    job,
                    HistoryError::Overloaded {
                        capacity: QUEUE_CAPACITY,
                    },
                ),
                mpsc::error::TrySendError::Closed(job) => (job, HistoryError::Stopped),
            };
            // Counted and answered: every `done` is called once.
            job.fail(error.clone(), &self.counters);
            error
        })
    }

    /// Stores `text`, pushed with path filter `filter` (`None`: every path), for (context,
    /// user); `done` gets its position.
    pub fn append(
        &self,
        context: u32,
        user: &[u8],
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: impl FnOnce(Result<Position, HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.append_linked(context, user, text, filter, move |r| {
            done(r.map(|(at, _)| at))
        })
    }

    /// [`BusSender::append`], with the offset of the user's previous message (see
    /// [`NatsHistory::append_linked`]).
    pub fn append_linked(
        &self,
        context: u32,
        user: &[u8],
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: impl FnOnce(Result<(Position, u64), HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.submit(Job::Append {
            context,
            user: user.into(),
            text,
            filter,
            done: Box::new(done),
        })
    }

    /// What (context, user) missed after `from` (see [`NatsHistory::since`]).
    pub fn since(
        &self,
        context: u32,
        user: &[u8],
        from: Position,
        limit: usize,
        done: impl FnOnce(Result<Recovery, HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.submit(Job::Since {
            context,
            user: user.into(),
            from,
            limit,
            done: Box::new(done),
        })
    }

    /// The position a fresh client starts from (see [`NatsHistory::current`]).
    pub fn current(
        &self,
        context: u32,
        user: &[u8],
        done: impl FnOnce(Result<Position, HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.submit(Job::Current {
            context,
            user: user.into(),
            done: Box::new(done),
        })
    }

    /// Keep a parked Socket.IO session's record under `key` (see
    /// [`NatsHistory::put_session`]).
    pub fn put_session(
        &self,
        key: &str,
        record: Vec<u8>,
        done: impl FnOnce(Result<(), HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.submit(Job::PutSession {
            key: key.into(),
            record,
            done: Box::new(done),
        })
    }

    /// Take the parked session's record under `key` if `accept` approves it (see
    /// [`NatsHistory::take_session`]).
    pub fn take_session(
        &self,
        key: &str,
        accept: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
        done: impl FnOnce(Result<Option<Vec<u8>>, HistoryError>) + Send + 'static,
    ) -> Result<(), HistoryError> {
        self.submit(Job::TakeSession {
            key: key.into(),
            accept: Box::new(accept),
            done: Box::new(done),
        })
    }

    /// The store's counters, refusals at submission included.
    pub fn stats(&self) -> NatsStats {
        self.counters.snapshot()
    }
}

/// The running NATS thread. Dropping it (or [`BusHandle::shutdown`]) stops taking requests,
/// lets those under way finish (each is bounded by the timeout) and joins the thread.
pub struct BusHandle {
    sender: BusSender,
    thread: RuntimeThread,
}

/// A thread of its own that runs one task on a tokio current-thread runtime until told to
/// stop (the NATS thread; the NATS ingress's too): the stop signal and the join. Dropping it
/// stops and joins it as well.
pub struct RuntimeThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuntimeThread {
    /// Makes the runtime here (so that a failure is the caller's error), then runs
    /// `task(stop)` on the thread `name`; `stop` completes when the task should end.
    pub fn spawn<F, Fut>(name: &str, task: F) -> Result<RuntimeThread, String>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no tokio runtime: {e}"))?;
        let (stop, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rt.block_on(task(stop_rx)))
            .map_err(|e| format!("cannot spawn it: {e}"))?;
        Ok(RuntimeThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the task to stop and waits for the thread to end.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the NATS thread for the store at `url`. Fails only on bad settings or if the
/// thread or its runtime cannot be made; NATS being down is not an error here (see the module docs).
pub fn spawn(url: &str, settings: NatsSettings) -> Result<BusHandle, HistoryError> {
    settings.validate()?;
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let counters = Arc::new(NatsCounters::default());
    let url = url.to_string();
    let thread_counters = counters.clone();
    let thread = RuntimeThread::spawn("ringwire-nats", move |stop| {
        serve(url, settings, thread_counters, rx, stop)
    })
    .map_err(HistoryError::Thread)?;
    Ok(BusHandle {
        sender: BusSender { tx, counters },
        thread,
    })
}

impl BusHandle {
    /// A sender for another thread.
    pub fn sender(&self) -> BusSender {
        self.sender.clone()
    }

    pub fn stats(&self) -> NatsStats {
        self.sender.stats()
    }

    /// Stops and joins the thread: requests under way finish first (each is bounded by the
    /// timeout), those still queued are answered [`HistoryError::Stopped`], later ones are
    /// refused with it.
    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}

async fn serve(
    url: String,
    settings: NatsSettings,
    counters: Arc<NatsCounters>,
    mut rx: mpsc::Receiver<Job>,
    mut stop: oneshot::Receiver<()>,
) {
    let timeout = settings.timeout;
    let mut history: Option<Arc<NatsHistory>> = None;
    let mut down = HistoryError::Unreachable {
        url: url.clone(),
        detail: "not connected yet".into(),
    };
    let mut retry_at = tokio::time::Instant::now();
    let mut running = JoinSet::new();
    loop {
        if history.is_none() && tokio::time::Instant::now() >= retry_at {
            match NatsHistory::connect_counted(&url, settings.clone(), counters.clone()).await {
                Ok(h) => history = Some(Arc::new(h)),
                Err(e) => {
                    tracing::warn!(error = %e, "history store nats: not connected, retrying in 1 s");
                    down = e;
                    retry_at = tokio::time::Instant::now() + CONNECT_RETRY;
                }
            }
        }
        let job = tokio::select! {
            _ = &mut stop => None,
            job = rx.recv() => job,
            Some(_) = running.join_next(), if !running.is_empty() => continue,
            _ = tokio::time::sleep_until(retry_at), if history.is_none() => continue,
            // Pushes went out unrecorded and nothing else asked the store since: say so in
            // the stream now that it may be back (`NatsHistory::mark_gap`).
            _ = tokio::time::sleep(CONNECT_RETRY), if history.is_some() && counters.gap_pending() => {
                if let Some(h) = history.clone() {
                    running.spawn(async move { h.mark_gap().await; });
                }
                continue;
            }
        };
        let Some(job) = job else { break };
        match &history {
            Some(h) => {
                let h = h.clone();
                running.spawn(async move { job.run(&h).await });
            }
            None => job.fail(down.clone(), &counters),
        }
    }
    // Stopped (or every sender is gone): refuse what comes, answer what waits, let what
    // runs finish (each call is bounded by the timeout).
    rx.close();
    while let Ok(job) = rx.try_recv() {
        job.fail(HistoryError::Stopped, &counters);
    }
    let _ = tokio::time::timeout(timeout * 2, async {
        while running.join_next().await.is_some() {}
    })
    .await;
}

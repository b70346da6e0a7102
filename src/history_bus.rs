//! The `nats` history store wired to the engine: [`NatsBus`] answers the cores' and the
//! facade's history questions (`runtime::resume::HistoryBus`) through the `ringwire-nats`
//! thread (`bus`). Numeric users are named by their decimal text in the store, so that
//! string user ids can share it later.
use crate::bus::{self, BusHandle, BusSender, NatsSettings};
use crate::config::Config;
use crate::runtime::resume::{HistoryBus, StoreAnswer};
use crate::service::history::Position;
use crate::service::path_filter::PathFilter;
use std::sync::Arc;
use std::time::Duration;

pub struct NatsBus {
    tx: BusSender,
    /// Most messages a resume replays (`history.size`: a user never has more held).
    limit: usize,
}

/// The store's settings from `[history]` and `[nats]`.
pub fn settings(config: &Config) -> NatsSettings {
    NatsSettings {
        stream: config.nats.stream.clone(),
        subject_prefix: config.nats.subject_prefix.clone(),
        size: config.history.size as u64,
        ttl: Duration::from_secs(config.history.ttl_secs),
        replicas: config.nats.replicas,
        timeout: Duration::from_millis(config.nats.timeout_ms),
    }
}

/// The running NATS thread and what the engine asks it through.
pub type Started = (BusHandle, Arc<dyn HistoryBus>);

/// Start the NATS thread when the config keeps history in NATS.
pub fn start(config: &Config) -> Result<Option<Started>, String> {
    if !config.history_on() || config.history.store != crate::config::HistoryStore::Nats {
        return Ok(None);
    }
    let handle = bus::spawn(&config.nats.url, settings(config)).map_err(|e| e.to_string())?;
    let nats = NatsBus {
        tx: handle.sender(),
        limit: config.history.size,
    };
    Ok(Some((handle, Arc::new(nats))))
}

impl HistoryBus for NatsBus {
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.tx.stats();
        vec![
            ("append_ok", s.appends_ok),
            ("append_failed", s.appends_failed),
            ("resume_complete", s.resumes_complete),
            ("resume_incomplete", s.resumes_incomplete),
            ("resume_failed", s.resumes_failed),
        ]
    }

    fn append(
        &self,
        context: u32,
        user: u32,
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: Box<dyn FnOnce(Result<Position, String>) + Send>,
    ) {
        let key = user.to_string();
        let _ = self
            .tx
            .append(context, key.as_bytes(), text, filter, move |r| {
                done(r.map_err(|e| e.to_string()))
            });
    }

    /// The store's current position first, then what was missed: a push recorded in
    /// between is in the replay (the socket's held copy is dropped by offset), never lost.
    fn connect(
        &self,
        context: u32,
        user: u32,
        from: Option<Position>,
        done: Box<dyn FnOnce(StoreAnswer) + Send>,
    ) {
        let key = user.to_string();
        let (tx, limit) = (self.tx.clone(), self.limit);
        let name = key.clone();
        let _ = self.tx.current(context, name.as_bytes(), move |current| {
            let current = match (current, from) {
                (Err(e), _) => return done(Err(e.to_string())),
                (Ok(c), None) => return done(Ok((c, None))),
                (Ok(c), Some(_)) => c,
            };
            let from = from.expect("matched above");
            let _ = tx.since(context, key.as_bytes(), from, limit, move |r| {
                done(r.map(|r| (current, Some(r))).map_err(|e| e.to_string()))
            });
        });
    }
}

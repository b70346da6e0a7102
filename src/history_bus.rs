//! The `nats` history store wired to the engine: [`NatsBus`] answers the cores' and the
//! facade's history questions (`runtime::resume::HistoryBus`) through the `ringwire-nats`
//! thread (`bus`). A user is named by its text in the store (a numeric user by its decimal,
//! a string user by its string; the subject carries it in base64url).
use crate::bus::{self, BusHandle, BusSender, NatsSettings};
use crate::config::Config;
use crate::runtime::resume::{AppendAnswer, HistoryBus, RestoreAnswer, StoreAnswer};
use crate::service::engineio::recovery::{resume_from, Parked, Pid};
use crate::service::history::{Position, Recovery};
use crate::service::path_filter::PathFilter;
use crate::service::user_id::UserId;
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
        user: &UserId,
        text: Arc<str>,
        filter: Option<PathFilter>,
        done: Box<dyn FnOnce(AppendAnswer) + Send>,
    ) {
        // Numeric users keep their subject (base64url of the decimal); a string user's is
        // the base64url of its bytes: any string is a valid subject token.
        let key = user.to_string();
        let _ = self
            .tx
            .append_linked(context, key.as_bytes(), text, filter, move |r| {
                done(r.map_err(|e| e.to_string()))
            });
    }

    /// The store's current position first, then what was missed: a push recorded in
    /// between is in the replay (the socket's held copy is dropped by offset), never lost.
    fn connect(
        &self,
        context: u32,
        user: &UserId,
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

    fn park(&self, record: Parked) {
        let key = record.ns.pid.encode();
        let _ = self.tx.put_session(&key, record.encode(), |r| {
            if let Err(e) = r {
                // Its client's restore will find nothing and say so (`recovered` false).
                tracing::debug!(error = %e, "history store nats: a session could not be parked");
            }
        });
    }

    /// The store's current position first (a fresh session starts there), then the parked
    /// record claimed and what its session missed since it started or since the client's
    /// offset (see `resume_from`).
    fn restore(
        &self,
        context: u32,
        user: &UserId,
        nsp: &str,
        claim: Option<(Pid, Option<Position>)>,
        done: Box<dyn FnOnce(RestoreAnswer) + Send>,
    ) {
        let key = user.to_string();
        let user = user.clone();
        let (tx, limit, nsp) = (self.tx.clone(), self.limit, Box::<str>::from(nsp));
        let _ = self
            .tx
            .current(context, key.clone().as_bytes(), move |current| {
                let current = match current {
                    Err(e) => return done(Err(e.to_string())),
                    Ok(c) => c,
                };
                let Some((pid, offset)) = claim.filter(|(pid, _)| pid.epoch == current.epoch)
                else {
                    // Nothing claimed, or a pid of another epoch: nothing to look up.
                    return done(Ok((current, None)));
                };
                let accept = move |bytes: &[u8]| {
                    Parked::decode(pid, bytes).is_some_and(|p| p.belongs_to(context, &user, &nsp))
                };
                let tx2 = tx.clone();
                let _ = tx.take_session(&pid.encode(), accept, move |taken| {
                    let parked = match taken {
                        Err(e) => return done(Err(e.to_string())),
                        Ok(bytes) => bytes.and_then(|b| Parked::decode(pid, &b)),
                    };
                    let Some(p) = parked else {
                        return done(Ok((current, None)));
                    };
                    if !p.ns.pushes {
                        // No push went to that namespace: it missed nothing.
                        let nothing = Recovery {
                            messages: Vec::new(),
                            complete: true,
                        };
                        return done(Ok((current, Some((p, nothing)))));
                    }
                    let from = resume_from(offset, p.ns.start);
                    let _ = tx2.since(context, key.as_bytes(), from, limit, move |r| match r {
                        Err(e) => done(Err(e.to_string())),
                        Ok(r) => done(Ok((current, Some((p, r))))),
                    });
                });
            });
    }
}

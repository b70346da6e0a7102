//! Minting one session per simulated user (`POST /v1/sessions`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use crate::admin::{bump, short_body, AdminClient, Lane};
use crate::ipc::SessionCred;

/// Attempts per session before giving up on that user.
const MINT_ATTEMPTS: u32 = 4;
/// Failures (with nothing minted) after which minting stops.
const MINT_GIVE_UP: u64 = 16;

#[derive(Deserialize)]
struct SessionResp {
    session: String,
    secret: Option<String>,
    cookie: Option<String>,
}

/// Outcome of minting the sessions of users 1..=U.
pub struct MintResult {
    /// Index `user - 1`; `None` if minting failed for that user.
    pub creds: Vec<Option<SessionCred>>,
    pub minted: u64,
    pub failed: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub seconds: f64,
}

#[derive(Serialize)]
struct SessionReq {
    /// The simulated user's number (named by `user`).
    #[serde(skip)]
    number: u64,
    user: serde_json::Value,
    context: u64,
    ttl_secs: u64,
}

/// Mints one session per user 1..=`users` with `concurrency` keep-alive connections (user i
/// named `<user_prefix>i` if a prefix is given, else the number i).
#[allow(clippy::too_many_arguments)]
pub async fn mint_sessions(
    client: Arc<AdminClient>,
    users: u64,
    user_prefix: Option<&str>,
    context: u64,
    ttl_secs: u64,
    concurrency: u64,
    log: &dyn Fn(String),
) -> MintResult {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicU64::new(0));
    let creds: Arc<Mutex<Vec<Option<SessionCred>>>> =
        Arc::new(Mutex::new(vec![None; users as usize]));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let lanes = concurrency.clamp(1, users.max(1));
    let mut set = JoinSet::new();
    for _ in 0..lanes {
        let failed = failed.clone();
        let (client, next, done, creds, errors, first_error) = (
            client.clone(),
            next.clone(),
            done.clone(),
            creds.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let prefix = user_prefix.map(str::to_string);
        set.spawn(async move {
            let mut lane = Lane::new(client);
            loop {
                // Give up early when the API is clearly not working (nothing minted yet
                // and every lane failed), instead of retrying every user.
                let f = failed.load(Relaxed);
                if f >= lanes.max(MINT_GIVE_UP) && done.load(Relaxed) == f {
                    break;
                }
                let user = next.fetch_add(1, Relaxed);
                if user > users {
                    break;
                }
                let req = SessionReq {
                    number: user,
                    user: crate::admin::user_value(prefix.as_deref(), user),
                    context,
                    ttl_secs,
                };
                let minted = mint_one(&mut lane, &req).await;
                let ok = minted.is_ok();
                let last_err = match minted {
                    Ok(cred) => {
                        creds.lock().unwrap()[(user - 1) as usize] = Some(cred);
                        String::new()
                    }
                    Err(e) => e,
                };
                if !ok {
                    failed.fetch_add(1, Relaxed);
                    let kind = last_err.split(':').next().unwrap_or("error").to_string();
                    bump(&errors, &kind);
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("user {user}: {last_err}"));
                }
                done.fetch_add(1, Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            _ = tick.tick() => {
                let d = done.load(Relaxed);
                log(format!(
                    "minting sessions: {d}/{users} ({:.0}/s)",
                    d as f64 / started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    let creds = std::mem::take(&mut *creds.lock().unwrap());
    let minted = creds.iter().filter(|c| c.is_some()).count() as u64;
    let errors_by_kind = std::mem::take(&mut *errors.lock().unwrap());
    let first_error = first_error.lock().unwrap().take();
    MintResult {
        creds,
        minted,
        failed: users - minted,
        errors_by_kind,
        first_error,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Mints the session of one user, retrying transport errors, 5xx and 429
/// ([`MINT_ATTEMPTS`] attempts); an error is returned as `kind: detail`.
async fn mint_one(lane: &mut Lane, req: &SessionReq) -> Result<SessionCred, String> {
    let body = Bytes::from(serde_json::to_vec(req).expect("serializable"));
    let mut last_err = String::new();
    for attempt in 0..MINT_ATTEMPTS {
        if attempt > 0 {
            sleep(Duration::from_millis(50 << attempt)).await;
        }
        match lane.post("/v1/sessions", body.clone()).await {
            Ok(r) if (200..300).contains(&r.status) => {
                return match serde_json::from_slice::<SessionResp>(&r.body) {
                    Ok(s) => {
                        let cookie = match (s.cookie, s.secret) {
                            (Some(c), _) => c,
                            (None, Some(secret)) => format!("ringwire-secret={secret}"),
                            (None, None) => {
                                return Err("bad_response: no cookie or secret".into());
                            }
                        };
                        Ok(SessionCred {
                            user: req.number,
                            session: s.session,
                            cookie,
                        })
                    }
                    Err(e) => Err(format!("bad_response: {e}: {}", short_body(&r.body))),
                };
            }
            Ok(r) => {
                last_err = format!("http_{}: {}", r.status, short_body(&r.body));
                // Client errors will not get better by retrying.
                if r.status < 500 && r.status != 429 {
                    break;
                }
            }
            Err(kind) => last_err = kind,
        }
    }
    Err(last_err)
}

//! The service through the admin API: sessions, push, socket queries, reload.
use super::{error, AdminState};
use crate::config::Config;
use crate::facade::PushJob;
use crate::service::path_filter::PathFilter;
use crate::service::session::unix_now;
use crate::service::upgrade::UpgradePolicy;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// Longest path filter accepted (globs are matched per socket).
const MAX_FILTER_LEN: usize = 1024;
/// Largest push message (a push is copied into every matching socket's queue).
const MAX_MESSAGE_LEN: usize = 1 << 20;
/// Most pushes in one batch request.
const MAX_BATCH: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    user: u32,
    context: u32,
    ttl_secs: u64,
}

pub async fn create_session(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let req: NewSession = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid session request: {e}"),
            )
        }
    };
    let (max_ttl, cookie_name) = {
        let c = state.config.lock().expect("config lock");
        (c.sessions.max_ttl_secs, c.security.cookie_name.clone())
    };
    if req.ttl_secs == 0 || req.ttl_secs > max_ttl {
        return error(
            StatusCode::BAD_REQUEST,
            format!("ttl_secs must be between 1 and {max_ttl}"),
        );
    }
    let expires_at = unix_now() + req.ttl_secs;
    let (id, secret) = state.key.mint(req.context, req.user, expires_at);
    let body = serde_json::json!({
        "session": id.to_text(),
        "secret": secret,
        "cookie": format!("{cookie_name}={secret}"),
        "expires_at": expires_at,
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

pub async fn delete_session(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    if state.service.terminate(&id).is_err() {
        return error(StatusCode::NOT_FOUND, "no such session");
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    context: u32,
    user: u32,
    #[serde(default)]
    path: Option<String>,
    /// A string is sent as it is; any other JSON value (object, array, number...) as its
    /// JSON text, so that JSON payloads need no second encoding.
    #[serde(deserialize_with = "text_or_json")]
    message: String,
    /// Remote coalescing (cluster); local delivery is immediate either way.
    #[serde(default = "yes")]
    coalesce: bool,
}

/// A JSON string's content, or any other JSON value's compact JSON text.
fn text_or_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::Deserialize;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Null => Err(serde::de::Error::custom(
            "message is null: give a string or any other JSON value",
        )),
        other => Ok(other.to_string()),
    }
}

fn yes() -> bool {
    true
}

/// The same limit and message for every path filter the API takes (push, batch, sockets).
fn check_filter(path: &str) -> Result<(), String> {
    if path.len() > MAX_FILTER_LEN {
        return Err(format!("path filter longer than {MAX_FILTER_LEN} bytes"));
    }
    Ok(())
}

impl PushRequest {
    fn into_job(self) -> Result<PushJob, String> {
        let path = self.path.unwrap_or_else(|| "*".into());
        check_filter(&path)?;
        if self.message.len() > MAX_MESSAGE_LEN {
            return Err(format!("message longer than {MAX_MESSAGE_LEN} bytes"));
        }
        Ok(PushJob {
            context: self.context,
            user: self.user,
            filter: PathFilter::new(&path),
            text: Arc::from(self.message),
            coalesce: self.coalesce,
            at: None,
            prev: None,
        })
    }
}

pub async fn push(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let job = match serde_json::from_slice::<PushRequest>(&body)
        .map_err(|e| e.to_string())
        .and_then(PushRequest::into_job)
    {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid push: {e}")),
    };
    let c = state.service.send_batch(vec![job]).await;
    let mut answer = serde_json::json!({ "sockets": c.sockets, "remote_nodes": c.remote_nodes });
    if let Some(&p) = c.positions.first() {
        answer["position"] = position_json(p);
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    pushes: Vec<PushRequest>,
}

pub async fn push_batch(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let batch: PushBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid batch: {e}")),
    };
    if batch.pushes.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_BATCH} pushes per batch"),
        );
    }
    let n = batch.pushes.len();
    let mut jobs = Vec::with_capacity(n);
    for (i, p) in batch.pushes.into_iter().enumerate() {
        match p.into_job() {
            Ok(j) => jobs.push(j),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("pushes[{i}]: {e}")),
        }
    }
    let c = state.service.send_batch(jobs).await;
    let mut answer = serde_json::json!({
        "pushes": n,
        "sockets": c.sockets,
        "remote_nodes": c.remote_nodes,
    });
    if !c.positions.is_empty() {
        answer["positions"] = c.positions.into_iter().map(position_json).collect();
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// A push's position as the API answers it (the epoch as on the wire: 16 hex digits);
/// `null` when the history store could not record it.
fn position_json(p: Option<crate::service::history::Position>) -> serde_json::Value {
    match p {
        Some(p) => serde_json::json!({
            "epoch": crate::service::history::envelope::epoch_hex(p.epoch),
            "offset": p.offset,
        }),
        None => serde_json::Value::Null,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsQuery {
    context: u32,
    user: u32,
    #[serde(default)]
    path: Option<String>,
}

pub async fn sockets(
    State(state): State<AdminState>,
    q: Result<Query<SocketsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Err(e) = check_filter(q.path.as_deref().unwrap_or("*")) {
        return error(StatusCode::BAD_REQUEST, format!("invalid query: {e}"));
    }
    let counts = state
        .service
        .counts(q.context, q.user, q.path.as_deref().unwrap_or("*"))
        .await;
    let total = counts.total();
    // This node first (even at 0), then each other node holding matching sockets.
    let mut nodes = vec![serde_json::json!({ "node": &*state.node_id, "count": counts.local })];
    if let Some(c) = &state.shared.cluster {
        for (i, &n) in counts.remote.iter().enumerate() {
            if let Some(peer) = c.peer(i as u16).filter(|_| n > 0) {
                nodes.push(serde_json::json!({ "node": &*peer.id(), "count": n }));
            }
        }
    }
    Json(serde_json::json!({
        "exists": total > 0,
        "count": total,
        "nodes": nodes,
    }))
    .into_response()
}

/// Re-read the configuration file and apply what is reloadable (cascade, limits, coalescing).
/// Returns a message for the log / API.
pub fn reload_config(state: &AdminState) -> Result<Vec<String>, String> {
    // The reserved descriptors are free while the files (configuration, certificates) are
    // read: a host at its descriptor limit can still reload. Re-opened when this returns.
    let _released = state.fd_reserve.release_all();
    let new = match &state.config_path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let mut current = state.config.lock().expect("config lock");
    let plan = current.reload(new).map_err(|e| e.to_string())?;
    let policy = Arc::new(UpgradePolicy::new(plan.applied.clone())?);
    state.service.reload(policy);
    *current = plan.applied;
    Ok(plan.restart_needed.into_iter().map(String::from).collect())
}

pub async fn reload(State(state): State<AdminState>) -> Response {
    match reload_config(&state) {
        Ok(restart) => {
            if !restart.is_empty() {
                tracing::warn!(
                    "reloaded; these changes need a restart: {}",
                    restart.join(", ")
                );
            }
            Json(serde_json::json!({ "reloaded": true, "restart_required_for": restart }))
                .into_response()
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("reload failed, configuration unchanged: {e}"),
        ),
    }
}

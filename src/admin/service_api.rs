//! The service through the admin API: sessions, push, socket queries, reload.
use super::{error, AdminState};
use crate::config::Config;
use crate::facade::push;
use crate::service::session::unix_now;
use crate::service::upgrade::UpgradePolicy;
use crate::service::user_id::UserId;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    user: UserId,
    context: u32,
    ttl_secs: u64,
}

/// A request body. One the extractor refuses (over the 2 MiB limit, or a failed read) is
/// answered as every other refusal of the API, `{"error": ...}`, with the extractor's status
/// (413 for the limit), rather than axum's plain text.
pub struct Body(axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| error(e.status(), e.body_text()))
    }
}

pub async fn create_session(State(state): State<AdminState>, Body(body): Body) -> Response {
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
    // Saturating: `sessions.max_ttl_secs` has no upper bound.
    let expires_at = unix_now().saturating_add(req.ttl_secs);
    let (id, secret) = state.key.mint(req.context, &req.user, expires_at);
    let body = serde_json::json!({
        "session": id.to_text(&req.user),
        "secret": secret,
        "cookie": format!("{cookie_name}={secret}"),
        "expires_at": expires_at,
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

pub async fn delete_session(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    // An id that does not percent-decode to UTF-8 is no session either.
    let Ok(Path(id)) = id else {
        return error(StatusCode::NOT_FOUND, "no such session");
    };
    if state.service.terminate(&id).is_err() {
        return error(StatusCode::NOT_FOUND, "no such session");
    }
    StatusCode::NO_CONTENT.into_response()
}

pub async fn push(State(state): State<AdminState>, Body(body): Body) -> Response {
    let job = match push::parse_push(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.message()),
    };
    let c = state.service.send_batch(vec![job]).await;
    (StatusCode::ACCEPTED, Json(push::push_answer(&c))).into_response()
}

pub async fn push_batch(State(state): State<AdminState>, Body(body): Body) -> Response {
    let jobs = match push::parse_batch(&body) {
        Ok(j) => j,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.message()),
    };
    let n = jobs.len();
    let c = state.service.send_batch(jobs).await;
    (StatusCode::ACCEPTED, Json(push::batch_answer(n, &c))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsQuery {
    context: u32,
    /// The user id's text (percent-decoded): a number's canonical decimal is that number.
    user: UserId,
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
    if let Err(e) = push::check_filter(q.path.as_deref().unwrap_or("*")) {
        return error(StatusCode::BAD_REQUEST, format!("invalid query: {e}"));
    }
    let counts = state
        .service
        .counts(q.context, &q.user, q.path.as_deref().unwrap_or("*"))
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

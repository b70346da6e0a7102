//! The admin HTTP API (control plane: its own listener and thread, never a data-plane core).
//! JSON in and out; bearer-token auth on everything but `/healthz` and `/readyz`.
#![forbid(unsafe_code)]
mod metrics;
mod service_api;

pub use service_api::reload_config;

use crate::config::Config;
use crate::runtime::Shared;
use crate::service::session::SessionKey;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub service: crate::service::api::Service,
    pub key: SessionKey,
    pub node_id: Arc<str>,
    /// The configuration in force (replaced on reload; control plane only).
    pub config: Arc<Mutex<Config>>,
    pub config_path: Option<PathBuf>,
    /// The webhook, when `[webhook]` is configured (its counters go to `/metrics`).
    pub webhook: Option<Arc<crate::service::webhook::WebhookListener>>,
}

pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    // Everything but the health checks needs the bearer token.
    let protected = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/v1/stats", get(stats))
        .route("/v1/sessions", post(service_api::create_session))
        .route("/v1/sessions/{id}", delete(service_api::delete_session))
        .route("/v1/push", post(service_api::push))
        .route("/v1/push/batch", post(service_api::push_batch))
        .route("/v1/sockets", get(service_api::sockets))
        .route("/v1/config/reload", post(service_api::reload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("admin listener failed: {e}");
    }
}

/// The live dashboard: a static page (no build step) that polls `/v1/stats` every second
/// with the token from its URL fragment (`/#token=...`), so the page itself needs none.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// Bearer-token check (constant time). No token configured = open (loopback only, enforced
/// by config validation).
pub(crate) fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let token = state
        .config
        .lock()
        .expect("config lock")
        .admin
        .token
        .clone();
    let Some(token) = token else { return true };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    use subtle::ConstantTimeEq;
    bool::from(got.as_bytes().ct_eq(token.as_bytes()))
}

async fn require_token(
    State(state): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if authorized(&state, req.headers()) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub(crate) fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.shared.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = metrics::render(&state.shared);
            if let Some(w) = &state.webhook {
                text.push_str(&w.metrics_text());
            }
            if let Some(c) = &state.shared.cluster {
                text.push_str(
                    "# HELP ringwire_cluster_link_up Cluster link to a peer is up (1) or down (0)\n# TYPE ringwire_cluster_link_up gauge\n",
                );
                for p in &c.peers {
                    text.push_str(&format!(
                        "ringwire_cluster_link_up{{peer=\"{}\"}} {}\n",
                        p.id,
                        u8::from(p.up())
                    ));
                }
            }
            text
        },
    )
        .into_response()
}

async fn stats(State(state): State<AdminState>) -> Response {
    let endpoints: Vec<String> = state
        .config
        .lock()
        .expect("config lock")
        .endpoints
        .iter()
        .map(|e| e.path.clone())
        .collect();
    Json(metrics::stats_json(
        &state.shared,
        &state.node_id,
        &endpoints,
    ))
    .into_response()
}

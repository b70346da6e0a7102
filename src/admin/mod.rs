//! The admin HTTP API (control plane, own listener, never on a data-plane core).
mod metrics;

use crate::config::Config;
use crate::runtime::Shared;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
}

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, config: Config) {
    let state = AppState {
        shared,
        token: config.admin.token.as_deref().map(Arc::from),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/v1/stats", get(stats))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("admin listener failed: {e}");
    }
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(got.as_bytes(), token.as_bytes())
}

/// Compare without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shared.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.shared),
    )
        .into_response()
}

async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    Json(metrics::stats_json(&state.shared)).into_response()
}

//! The admin HTTP API (control plane: its own listener and thread, never a data-plane core).
//! JSON in and out; bearer-token auth on everything but the dashboard page, `/healthz`,
//! `/readyz` and the OpenAPI document (`docs/openapi.json`, served at `/v1/openapi.json`). The listener bounds its connections (timeouts, a cap): see [`listener`].
#![forbid(unsafe_code)]
mod latency;
mod listener;
mod metrics;
mod openapi;
mod process;
mod service_api;

pub use listener::{nofile_limits, FdReserve, ListenerStats, Trusted};

pub use service_api::reload_config;

use crate::config::Config;
use crate::runtime::lifecycle::Phase;
use crate::runtime::Shared;
use crate::service::session::SessionKey;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub service: crate::facade::Service,
    pub key: SessionKey,
    pub node_id: Arc<str>,
    /// The configuration in force (replaced on reload; control plane only).
    pub config: Arc<Mutex<Config>>,
    pub config_path: Option<PathBuf>,
    /// The webhook, when `[webhook]` is configured (its counters go to `/metrics`).
    pub webhook: Option<Arc<crate::service::webhook::WebhookListener>>,
    /// The admin listener's connection counters (`/metrics`).
    pub listener_stats: Arc<ListenerStats>,
    /// Descriptors held for accepts at EMFILE and for reloads.
    pub fd_reserve: Arc<FdReserve>,
    /// The NATS ingress's counters, when `[nats] ingress` is on.
    pub ingress: Option<Arc<crate::ingress::IngressStats>>,
    /// The `[jwt] jwks_url` fetches' counters, when a key set is configured.
    pub jwks: Option<Arc<crate::service::jwks::JwksStats>>,
    /// Admin request durations by route (`/metrics`).
    pub timings: Arc<latency::AdminTimings>,
}

impl AdminState {
    /// `admin.max_connections` as configured now.
    pub(crate) fn max_connections(&self) -> usize {
        self.config
            .lock()
            .expect("config lock")
            .admin
            .max_connections
    }
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
        .route("/v1/openapi.json", get(openapi::openapi))
        .merge(protected)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            latency::time_request,
        ))
        .with_state(state.clone());
    listener::run(listener, app, state).await;
}

/// The live dashboard: a static page (no build step) that polls `/v1/stats` every second
/// with the admin token typed into its field or given in its URL fragment (`/#token=...`),
/// kept in the tab's sessionStorage, so the page itself needs none. Its sparklines keep
/// the last minutes in the page; the server stores no history for it.
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
/// by config validation). A request without a usable `Authorization: Bearer <token>` header
/// never matches, whatever the configured token.
pub(crate) fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let token = state
        .config
        .lock()
        .expect("config lock")
        .admin
        .token
        .clone();
    let Some(token) = token else { return true };
    token_matches(&token, headers)
}

fn token_matches(token: &str, headers: &HeaderMap) -> bool {
    // Validation refuses an empty token; never let one match anything regardless.
    if token.is_empty() {
        return false;
    }
    let Some(got) = bearer_token(headers) else {
        return false;
    };
    use subtle::ConstantTimeEq;
    bool::from(got.as_bytes().ct_eq(token.as_bytes()))
}

/// The credentials of a single `Authorization: Bearer <token>` header (RFC 6750 / 9110: the
/// scheme is case-insensitive, spaces or tabs separate it from the token). None when the
/// header is missing, repeated, not Bearer, or carries an empty token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    (!token.is_empty()).then_some(token)
}

async fn require_token(
    State(state): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if authorized(&state, req.headers()) {
        if let Some(t) = req.extensions().get::<Trusted>() {
            t.set();
        }
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
    match state.shared.lifecycle.phase() {
        Phase::Running => "ready\n".into_response(),
        phase => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", phase.name()),
        )
            .into_response(),
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
            latency::render_cores(&mut text, &state.shared);
            state.timings.render(&mut text);
            process::render(&mut text);
            if let Some(w) = &state.webhook {
                text.push_str(&w.metrics_text());
            }
            text.push_str(&state.listener_stats.metrics_text(state.max_connections()));
            if let Some(i) = &state.ingress {
                text.push_str(&i.metrics_text());
            }
            if let Some(j) = &state.jwks {
                text.push_str(&j.metrics_text());
            }
            if let Some(p) = &state.shared.proxy {
                text.push_str(&p.metrics_text());
            }
            if let Some(c) = &state.shared.cluster {
                text.push_str(&c.membership_metrics());
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
    let mut json = metrics::stats_json(&state.shared, &state.node_id, &endpoints);
    // The process: version, uptime, resident memory (the dashboard's header).
    if let (Some(obj), serde_json::Value::Object(p)) = (json.as_object_mut(), process::json()) {
        obj.extend(p);
    }
    if let Some(i) = &state.ingress {
        json["nats_ingress"] = i.json();
    }
    Json(json).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        let t = "0123456789abcdef";
        for ok in [
            "Bearer 0123456789abcdef",
            "bearer 0123456789abcdef",
            "BEARER  0123456789abcdef",
            "Bearer\t0123456789abcdef ",
        ] {
            assert!(token_matches(t, &with(&[ok])), "{ok:?}");
        }
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "0123456789abcdef",
            "Basic 0123456789abcdef",
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdefX",
            "Bearer0123456789abcdef",
        ] {
            assert!(!token_matches(t, &with(&[bad])), "{bad:?}");
        }
        assert!(!token_matches(t, &HeaderMap::new()));
        assert!(!token_matches("", &HeaderMap::new()));
        assert!(!token_matches("", &with(&["Bearer "])));
        let twice = ["Bearer 0123456789abcdef", "Bearer 0123456789abcdef"];
        assert!(!token_matches(t, &with(&twice)));
    }
}

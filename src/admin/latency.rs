//! The latency histograms of `/metrics`: the cores' (pushes, handshakes, loop turns: each
//! core's own buckets, summed here) and the admin API's requests by route (timed by the
//! [`time_request`] middleware on the control thread).
use super::AdminState;
use crate::runtime::histogram::{bound_secs, Histogram, Snapshot, BUCKETS};
use crate::runtime::Shared;
use crate::service::prometheus::histogram_series;
use axum::extract::{MatchedPath, State};
use axum::response::Response;
use std::fmt::Write;
use std::sync::Mutex;

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

fn series(out: &mut String, name: &str, labels: &str, s: &Snapshot) {
    let le = (0..BUCKETS).map(bound_secs);
    histogram_series(out, name, labels, le, &s.counts, s.sum_ns as f64 / 1e9);
}

/// The cores' histograms: pushes and handshakes summed over the cores, loop turns per core.
pub fn render_cores(out: &mut String, shared: &Shared) {
    let mut push = Snapshot::default();
    let mut handshake = Snapshot::default();
    for s in &shared.stats {
        push.add(&s.hist.push.snapshot());
        handshake.add(&s.hist.handshake.snapshot());
    }
    for (name, help, snapshot) in [
        (
            "ringwire_push_latency_seconds",
            "A push on its owning core: from the wake-up of the loop turn that took it from the inbox to the end of that turn, when the sends of its frames are submitted to the kernel; pushes that reached at least one socket",
            &push,
        ),
        (
            "ringwire_handshake_duration_seconds",
            "A connection accepted to its 101 Switching Protocols written (WebSocket upgrades, on the owning core)",
            &handshake,
        ),
    ] {
        header(out, name, help);
        series(out, name, "", snapshot);
    }
    let name = "ringwire_loop_turn_duration_seconds";
    header(
        out,
        name,
        "Work of one event-loop turn of a core: from its wake-up to its next wait for completions",
    );
    for (core, s) in shared.stats.iter().enumerate() {
        series(
            out,
            name,
            &format!("core=\"{core}\""),
            &s.hist.loop_turn.snapshot(),
        );
    }
}

/// Admin API request durations by route (the route's pattern, e.g. `/v1/sessions/{id}`: a
/// bounded set, the router's own).
#[derive(Default)]
pub struct AdminTimings(Mutex<Vec<(Box<str>, Histogram)>>);

impl AdminTimings {
    pub fn record(&self, route: &str, ns: u64) {
        let mut routes = self.0.lock().expect("admin timings lock");
        match routes.iter().position(|(r, _)| &**r == route) {
            Some(i) => routes[i].1.record_shared(ns),
            None => {
                let h = Histogram::default();
                h.record_shared(ns);
                routes.push((route.into(), h));
            }
        }
    }

    pub fn render(&self, out: &mut String) {
        let name = "ringwire_admin_request_duration_seconds";
        header(
            out,
            name,
            "Admin API requests by route pattern: from the request routed to its answer ready (token check, body read, handler; not the write of the answer)",
        );
        let routes = self.0.lock().expect("admin timings lock");
        for (route, h) in routes.iter() {
            series(out, name, &format!("route=\"{route}\""), &h.snapshot());
        }
    }
}

/// Middleware (a `route_layer`, so the route is known): times the request's handling.
pub async fn time_request(
    State(state): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |m| m.as_str().to_string());
    let start = crate::runtime::monotonic_ns();
    let response = next.run(req).await;
    let took = crate::runtime::monotonic_ns().saturating_sub(start);
    state.timings.record(&route, took);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_routes_render_as_histograms() {
        let t = AdminTimings::default();
        t.record("/v1/push", 2_000_000);
        t.record("/v1/push", 3_000);
        t.record("/metrics", 500);
        let mut out = String::new();
        t.render(&mut out);
        assert!(
            out.contains("ringwire_admin_request_duration_seconds_count{route=\"/v1/push\"} 2\n")
        );
        assert!(out.contains(
            "ringwire_admin_request_duration_seconds_bucket{route=\"/metrics\",le=\"0.000001024\"} 1\n"
        ));
        assert!(out.contains(
            "ringwire_admin_request_duration_seconds_bucket{route=\"/v1/push\",le=\"+Inf\"} 2\n"
        ));
    }
}

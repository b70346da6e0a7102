//! Prometheus text and JSON stats: per-core counters summed at scrape time.
use crate::runtime::stats::{ShardStats, CLOSE_CODES, REFUSAL_STATUSES};
use crate::runtime::Shared;
use crate::service::refusal::LABELS;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

type Field = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> &AtomicU64,
);

/// (metric name, type, help, accessor)
const FIELDS: &[Field] = &[
    (
        "ringwire_sockets",
        "gauge",
        "Open sockets (WebSockets and long-polling sessions)",
        |s| &s.sockets,
    ),
    (
        "ringwire_handshakes_in_progress",
        "gauge",
        "Connections in the HTTP upgrade phase",
        |s| &s.handshakes,
    ),
    (
        "ringwire_accepted_total",
        "counter",
        "TCP connections accepted",
        |s| &s.accepted,
    ),
    (
        "ringwire_upgrades_total",
        "counter",
        "Successful WebSocket upgrades",
        |s| &s.upgrades,
    ),
    (
        "ringwire_handoffs_out_total",
        "counter",
        "Sockets moved to their owning core",
        |s| &s.handoffs_out,
    ),
    (
        "ringwire_handoffs_in_total",
        "counter",
        "Sockets received from another core",
        |s| &s.handoffs_in,
    ),
    (
        "ringwire_handoffs_failed_total",
        "counter",
        "Moves refused by the owning core (full)",
        |s| &s.handoffs_failed,
    ),
    (
        "ringwire_messages_in_total",
        "counter",
        "Data messages received",
        |s| &s.messages_in,
    ),
    (
        "ringwire_messages_out_total",
        "counter",
        "Data messages sent",
        |s| &s.messages_out,
    ),
    (
        "ringwire_received_bytes_total",
        "counter",
        "Bytes received on WebSockets",
        |s| &s.received_bytes,
    ),
    (
        "ringwire_sent_bytes_total",
        "counter",
        "Bytes written to sockets (WebSockets, HTTP answers, long-polling)",
        |s| &s.sent_bytes,
    ),
    (
        "ringwire_pushes_total",
        "counter",
        "Pushes handled by the core that owns their user (from the admin API, NATS, or another node)",
        |s| &s.pushes,
    ),
    (
        "ringwire_push_deliveries_total",
        "counter",
        "Frames queued for pushes: one per socket a push reached",
        |s| &s.push_frames,
    ),
    (
        "ringwire_closed_session_ended_total",
        "counter",
        "Sockets closed because their session was terminated or expired",
        |s| &s.closed_session_ended,
    ),
    (
        "ringwire_protocol_errors_total",
        "counter",
        "Sockets closed for a protocol error",
        |s| &s.protocol_errors,
    ),
    (
        "ringwire_closed_slow_consumer_total",
        "counter",
        "Sockets closed with 1013 (outbound queue over limit)",
        |s| &s.closed_slow_consumer,
    ),
    (
        "ringwire_closed_idle_total",
        "counter",
        "Sockets closed after the idle timeout",
        |s| &s.closed_idle,
    ),
    (
        "ringwire_accept_table_full_total",
        "counter",
        "Accepts that found the fixed-file table full",
        |s| &s.accept_table_full,
    ),
    (
        "ringwire_recv_no_buffers_total",
        "counter",
        "Receives that found no provided buffer",
        |s| &s.recv_no_buffers,
    ),
    (
        "ringwire_recv_buffers_window",
        "gauge",
        "Provided receive buffers the kernel may take now (the window widens when a receive finds none)",
        |s| &s.recv_window,
    ),
    (
        "ringwire_pings_sent_total",
        "counter",
        "Keepalive pings sent",
        |s| &s.pings_sent,
    ),
    (
        "ringwire_socketio_polling_sessions",
        "gauge",
        "Engine.IO sessions on the long-polling transport",
        |s| &s.polling_sessions,
    ),
    (
        "ringwire_socketio_polling_requests_total",
        "counter",
        "Engine.IO long-polling requests served",
        |s| &s.polling_requests,
    ),
    (
        "ringwire_socketio_dropped_packets_total",
        "counter",
        "Packets dropped: a polling session's buffer was full",
        |s| &s.sio_dropped_packets,
    ),
    (
        "ringwire_socketio_upgrades_total",
        "counter",
        "Engine.IO sessions upgraded from polling to WebSocket",
        |s| &s.sio_upgrades,
    ),
    (
        "ringwire_presence_entries",
        "gauge",
        "Presence directory entries (user x node x path) about other nodes' sockets",
        |s| &s.presence_entries,
    ),
    (
        "ringwire_presence_overflow_total",
        "counter",
        "Presence updates that did not fit in cluster.max_presence_entries",
        |s| &s.presence_overflow,
    ),
    (
        "ringwire_tls_errors_total",
        "counter",
        "Connections closed for a TLS error (bad record, failed handshake)",
        |s| &s.tls_errors,
    ),
    (
        "ringwire_history_appended_total",
        "counter",
        "Pushes recorded in the history (memory store)",
        |s| &s.history_appended,
    ),
    (
        "ringwire_history_evicted_total",
        "counter",
        "Pushes dropped from the history before their time to stay under history.max_bytes_per_core",
        |s| &s.history_evicted,
    ),
    (
        "ringwire_history_expired_total",
        "counter",
        "Pushes dropped from the history for history.size or history.ttl_secs",
        |s| &s.history_expired,
    ),
    (
        "ringwire_history_bytes",
        "gauge",
        "Bytes held by the history (messages, their bookkeeping, the streams)",
        |s| &s.history_bytes,
    ),
    (
        "ringwire_history_streams",
        "gauge",
        "Users with at least one push held in the history",
        |s| &s.history_streams,
    ),
    (
        "ringwire_history_replayed_total",
        "counter",
        "Pushes replayed to resuming clients",
        |s| &s.history_replayed,
    ),
    (
        "ringwire_history_gaps_total",
        "counter",
        "Pushes that reached a socket before their user's previous one (made on another node): the gap was filled from the store first",
        |s| &s.history_gaps,
    ),
    (
        "ringwire_history_catchups_total",
        "counter",
        "History sockets brought up to date after another node's pushes for their user may have been lost on a failed cluster link: read from the store, or told recovered: false",
        |s| &s.history_catchups,
    ),
];

/// Remote push counters of the node: (queued, merged, sent, dropped, received).
pub fn remote_totals(shared: &Shared) -> [(&'static str, u64); 5] {
    let sum = |get: fn(&ShardStats) -> &AtomicU64| -> u64 {
        shared.stats.iter().map(|s| ShardStats::get(get(s))).sum()
    };
    let (sent, link_dropped, _) = shared
        .cluster
        .as_ref()
        .map_or((0, 0, 0), |c| c.link_totals());
    [
        ("queued", sum(|s| &s.remote_queued)),
        ("merged", sum(|s| &s.remote_merged)),
        ("sent", sent),
        ("dropped", sum(|s| &s.remote_dropped) + link_dropped),
        ("received", sum(|s| &s.remote_received)),
    ]
}

/// A counter with one label: series `i` is the sum over cores of `get(core, i)`.
fn labeled_counter(
    out: &mut String,
    shared: &Shared,
    (name, label): (&str, &str),
    help: &str,
    values: &[&str],
    get: fn(&ShardStats, usize) -> &AtomicU64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (i, value) in values.iter().enumerate() {
        let total: u64 = shared
            .stats
            .iter()
            .map(|s| ShardStats::get(get(s, i)))
            .sum();
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {total}");
    }
}

/// A status or close code as a label; 0 stands for the codes not listed.
fn label_or_other(code: u16) -> String {
    match code {
        0 => "other".to_string(),
        c => c.to_string(),
    }
}

/// WebSocket closes by code and by who started them.
fn closes(out: &mut String, shared: &Shared) {
    let name = "ringwire_websocket_closes_total";
    let _ = writeln!(
        out,
        "# HELP {name} WebSocket closes by close code (1005: no code; other: any code not listed) and by who sent the first close frame (server: including protocol errors)\n# TYPE {name} counter"
    );
    for (by, get) in [
        (
            "server",
            (|s| &s.closes_by_server.0[..]) as fn(&ShardStats) -> &[AtomicU64],
        ),
        ("client", |s| &s.closes_by_client.0[..]),
    ] {
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            let total: u64 = shared
                .stats
                .iter()
                .map(|s| ShardStats::get(&get(s)[i]))
                .sum();
            let code = label_or_other(*code);
            let _ = writeln!(out, "{name}{{code=\"{code}\",by=\"{by}\"}} {total}");
        }
    }
}

pub fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    for (name, kind, help, get) in FIELDS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, s) in shared.stats.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", ShardStats::get(get(s)));
        }
    }
    let name = "ringwire_upgrades_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Upgrade attempts refused, by HTTP status\n# TYPE {name} counter"
    );
    for (i, status) in REFUSAL_STATUSES.iter().enumerate() {
        let total: u64 = shared
            .stats
            .iter()
            .map(|s| ShardStats::get(&s.refused[i]))
            .sum();
        let label = label_or_other(*status);
        let _ = writeln!(out, "{name}{{status=\"{label}\"}} {total}");
    }
    labeled_counter(
        &mut out,
        shared,
        ("ringwire_upgrades_refused_by_reason_total", "reason"),
        "Upgrade attempts refused, by reason",
        &LABELS,
        |s, i| &s.refused_by_reason[i],
    );
    closes(&mut out, shared);
    labeled_counter(
        &mut out,
        shared,
        ("ringwire_history_resumes_total", "outcome"),
        "Clients that resumed from a position, by outcome (recovered: nothing lost; epoch_changed: the store restarted; dropped: a missed push was no longer held; unavailable: the store cannot vouch, e.g. memory store in a cluster)",
        &crate::runtime::history::RESUME_OUTCOMES,
        |s, i| &s.resumes[i],
    );
    if let Some(bus) = &shared.history_bus {
        let name = "ringwire_history_store_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests to the history store off the cores (nats), by event: pushes recorded or not (NATS down or slow: the push went live without a position), resumes answered complete, incomplete or failed\n# TYPE {name} counter"
        );
        for (event, n) in bus.counters() {
            let _ = writeln!(out, "{name}{{event=\"{event}\"}} {n}");
        }
    }
    if shared.cluster.is_some() {
        let name = "ringwire_remote_messages_total";
        let _ = writeln!(
            out,
            "# HELP {name} Pushes for other nodes: queued, merged into an equal waiting push, sent on a link, dropped (node down or queue full); pushes received from other nodes\n# TYPE {name} counter"
        );
        for (event, n) in remote_totals(shared) {
            let _ = writeln!(out, "{name}{{event=\"{event}\"}} {n}");
        }
    }
    out
}

pub fn stats_json(shared: &Shared, node: &str, endpoints: &[String]) -> serde_json::Value {
    let per_core: Vec<_> = shared
        .stats
        .iter()
        .enumerate()
        .map(|(core, s)| {
            serde_json::json!({
                "core": core,
                "sockets": ShardStats::get(&s.sockets),
                "handshakes": ShardStats::get(&s.handshakes),
                "accepted": ShardStats::get(&s.accepted),
                "upgrades": ShardStats::get(&s.upgrades),
                "handoffs_in": ShardStats::get(&s.handoffs_in),
                "handoffs_out": ShardStats::get(&s.handoffs_out),
                "messages_in": ShardStats::get(&s.messages_in),
                "messages_out": ShardStats::get(&s.messages_out),
                "pushes": ShardStats::get(&s.pushes),
                // Descriptor table headroom (updated every tick).
                "slots_used": ShardStats::get(&s.slots_in_use),
                "slots_capacity": ShardStats::get(&s.slots_capacity),
            })
        })
        .collect();
    let sockets: u64 = shared
        .stats
        .iter()
        .map(|s| ShardStats::get(&s.sockets))
        .sum();
    let per_endpoint: serde_json::Map<String, serde_json::Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let n: u64 = shared
                .stats
                .iter()
                .map(|s| s.endpoint_sockets.get(i).map_or(0, ShardStats::get))
                .sum();
            (path.clone(), n.into())
        })
        .collect();
    let sum = |get: fn(&ShardStats) -> &AtomicU64| -> u64 {
        shared.stats.iter().map(|s| ShardStats::get(get(s))).sum()
    };
    let refused: serde_json::Map<String, serde_json::Value> = LABELS
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let n: u64 = shared
                .stats
                .iter()
                .map(|s| ShardStats::get(&s.refused_by_reason[i]))
                .sum();
            (label.to_string(), n)
        })
        .filter(|&(_, n)| n != 0)
        .map(|(label, n)| (label, serde_json::Value::from(n)))
        .collect();
    serde_json::json!({
        "node": node,
        "sockets": sockets,
        "polling_sessions": sum(|s| &s.polling_sessions),
        "upgrades": sum(|s| &s.upgrades),
        "pushes": sum(|s| &s.pushes),
        "push_frames": sum(|s| &s.push_frames),
        "refused_by_reason": refused,
        "stopping": shared.lifecycle.is_stopping(),
        "lifecycle": shared.lifecycle.phase().name(),
        "cores": per_core,
        "endpoints": per_endpoint,
        // Links to other nodes (none until a [cluster] is configured).
        "cluster": {
            "node": node,
            "links": shared.cluster.as_ref().map_or(serde_json::json!([]), |c| c.links_json()),
            "remote": remote_totals(shared)
                .iter()
                .map(|&(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>(),
            "presence_entries": sum(|s| &s.presence_entries),
            "discovery": shared.cluster.as_ref().map(|c| c.discovery_json()),
        },
    })
}

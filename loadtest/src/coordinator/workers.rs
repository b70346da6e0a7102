//! The worker processes as the coordinator sees them: starting them (this binary,
//! re-executed as `ringwire-loadtest worker`, with its [`WorkerSpec`] on stdin), their
//! latest state, and reaping them.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::coordinator::plan::Plan;
use crate::ipc::{Command, Counters, Event, SessionCred, WorkerSpec};

pub struct Worker {
    pub spec: WorkerSpec,
    pub child: Option<Child>,
    pub stdin: Option<ChildStdin>,
    pub pid: Option<u32>,
    pub nofile: Option<u64>,
    pub counters: Counters,
    pub connect_done: bool,
    pub connect_done_unix_us: Option<u64>,
    pub check: Option<(u64, u64)>,
    /// Storm: when this worker dropped its connections (unix µs).
    pub storm_started: Option<u64>,
    pub final_rss: Option<u64>,
    pub got_final: bool,
    pub exited: bool,
    pub exit: Option<String>,
}

impl Worker {
    pub async fn send(&mut self, cmd: Command) {
        if let Some(stdin) = self.stdin.as_mut() {
            let mut line = serde_json::to_string(&cmd).expect("serializable command");
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                self.stdin = None;
            }
        }
    }
}

pub enum Msg {
    Event(usize, Box<Event>),
    Eof(usize),
}

/// The sum of the workers' latest counters.
pub fn sum_counters(workers: &[Worker]) -> Counters {
    let mut t = Counters::default();
    for w in workers {
        let c = &w.counters;
        t.attempts += c.attempts;
        t.connected += c.connected;
        t.failed += c.failed;
        t.open += c.open;
        t.peak_open += c.peak_open;
        t.dropped += c.dropped;
        t.sent += c.sent;
        t.received += c.received;
        t.mismatches += c.mismatches;
        t.unsolicited += c.unsolicited;
        t.send_errors += c.send_errors;
        t.pings_received += c.pings_received;
        t.echo_check_ok += c.echo_check_ok;
        t.echo_check_failed += c.echo_check_failed;
        t.push_received += c.push_received;
        t.reconnect_attempts += c.reconnect_attempts;
        t.reconnects += c.reconnects;
        t.reconnect_failed += c.reconnect_failed;
        t.reconnect_retries += c.reconnect_retries;
        t.retry_after_waits += c.retry_after_waits;
        t.backoff_waits += c.backoff_waits;
        t.retry_after_max_s = t.retry_after_max_s.max(c.retry_after_max_s);
        t.reconnecting += c.reconnecting;
        t.reconnect_abandoned += c.reconnect_abandoned;
        t.churn_kicks += c.churn_kicks;
        t.churn_skipped += c.churn_skipped;
        t.storm_dropped += c.storm_dropped;
        t.storm_reconnected += c.storm_reconnected;
        t.storm_gave_up += c.storm_gave_up;
        t.recovery.add(&c.recovery);
        for (k, n) in &c.failed_by_kind {
            *t.failed_by_kind.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &c.reconnect_failed_by_kind {
            *t.reconnect_failed_by_kind.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &c.dropped_by_kind {
            *t.dropped_by_kind.entry(k.clone()).or_default() += n;
        }
    }
    t
}

pub fn spawn_worker(
    index: usize,
    spec: WorkerSpec,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<Worker> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting worker process")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let pid = child.id();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(ev) => {
                    if tx.send(Msg::Event(index, Box::new(ev))).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker {index}: unparsable event ({e}): {line}"),
            }
        }
        let _ = tx.send(Msg::Eof(index));
    });
    Ok(Worker {
        spec,
        child: Some(child),
        stdin: Some(stdin),
        pid,
        nofile: None,
        counters: Counters::default(),
        connect_done: false,
        connect_done_unix_us: None,
        check: None,
        storm_started: None,
        final_rss: None,
        got_final: false,
        exited: false,
        exit: None,
    })
}

/// Starts the workers and sends each its spec: its share of the connections (and the
/// sessions of their users, `creds` by user - 1).
pub async fn start_workers(
    args: &RunArgs,
    plan: &Plan,
    users: u64,
    creds: Vec<Option<SessionCred>>,
) -> Result<(Vec<Worker>, mpsc::UnboundedReceiver<Msg>)> {
    let n = args.connections;
    let w_count = plan.workers;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut workers: Vec<Worker> = Vec::new();
    let mut first = 0u64;
    for i in 0..w_count {
        let share = n / w_count + u64::from(i < n % w_count);
        let spec = WorkerSpec {
            index: i,
            url: args.connect_url(),
            protocol: args.protocol,
            transport: args.transport(),
            eio: args.eio(),
            first_conn_id: first,
            connections: share,
            ramp_per_sec: args.ramp_per_sec * share as f64 / n as f64,
            max_inflight_connects: args.max_inflight_connects.div_ceil(w_count).max(1),
            source_addrs: plan.source_addrs.clone(),
            connect_timeout_ms: args.connect_timeout_ms,
            scenario: args.scenario,
            message_bytes: args.message_bytes,
            interval_ms: args.interval_ms,
            echo_timeout_ms: args.echo_timeout_ms,
            max_runtime_s: plan.max_runtime.as_secs_f64(),
            users,
            sessions: worker_sessions(&creds, users, first, share),
            churn_per_sec: args.churn_per_sec * share as f64 / n as f64,
            storm_timeout_ms: (args.storm_timeout * 1000.0) as u64,
            max_wait_ms: (args.storm_max_wait * 1000.0) as u64,
            reconnect_delay_ms: args.reconnect_delay_ms,
            reconnect_delay_max_ms: args.reconnect_delay_max_ms,
            recover: args.recover,
            origin: args.origin.clone(),
            headers: args.header_pairs()?,
            ca: args.ca.clone(),
        };
        first += share;
        let mut line = serde_json::to_string(&spec)?;
        let mut spec = spec;
        spec.sessions = Vec::new();
        let mut w = spawn_worker(i as usize, spec, tx.clone())?;
        line.push('\n');
        if let Some(stdin) = w.stdin.as_mut() {
            stdin
                .write_all(line.as_bytes())
                .await
                .context("sending worker spec")?;
        }
        workers.push(w);
    }
    drop(tx);
    Ok((workers, rx))
}

/// Reaps the workers (killing any that are still running 15 s from now) and notes abnormal
/// exits. One deadline for all: a worker that closes 15,000 sockets on a busy host takes
/// seconds to exit, and they exit side by side.
pub async fn reap(workers: &mut [Worker]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for w in workers.iter_mut() {
        w.stdin = None;
    }
    for w in workers.iter_mut() {
        if let Some(mut child) = w.child.take() {
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(s)) => s,
                _ => {
                    let _ = child.start_kill();
                    match child.wait().await {
                        Ok(s) => s,
                        Err(e) => {
                            w.exit = Some(format!("wait failed: {e}"));
                            continue;
                        }
                    }
                }
            };
            if !status.success() {
                w.exit = Some(format!("exit: {status}"));
            }
        }
    }
}

/// The sessions of the users that connections `first .. first + count` belong to
/// (connection `id` belongs to user `id % users + 1`).
pub fn worker_sessions(
    creds: &[Option<SessionCred>],
    users: u64,
    first: u64,
    count: u64,
) -> Vec<SessionCred> {
    if users == 0 {
        return Vec::new();
    }
    let needed: Box<dyn Iterator<Item = u64>> = if count >= users {
        Box::new(1..=users)
    } else {
        Box::new((first..first + count).map(|id| id % users + 1))
    };
    needed
        .filter_map(|u| creds.get((u - 1) as usize).cloned().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: u64) -> Option<SessionCred> {
        Some(SessionCred {
            user,
            session: format!("s{user}"),
            cookie: format!("ringwire-secret=x{user}"),
        })
    }

    #[test]
    fn sessions_per_worker() {
        let creds: Vec<_> = (1..=5).map(cred).collect();
        let users = |v: Vec<SessionCred>| v.iter().map(|c| c.user).collect::<Vec<_>>();
        // 12 connections over 5 users, workers of 4: ids 0..4, 4..8, 8..12.
        assert_eq!(users(worker_sessions(&creds, 5, 0, 4)), vec![1, 2, 3, 4]);
        assert_eq!(users(worker_sessions(&creds, 5, 4, 4)), vec![5, 1, 2, 3]);
        assert_eq!(users(worker_sessions(&creds, 5, 8, 4)), vec![4, 5, 1, 2]);
        assert_eq!(
            users(worker_sessions(&creds, 5, 0, 12)),
            vec![1, 2, 3, 4, 5]
        );
        assert!(worker_sessions(&creds, 0, 0, 4).is_empty());
        let mut holes = creds.clone();
        holes[1] = None;
        assert_eq!(users(worker_sessions(&holes, 5, 0, 3)), vec![1, 3]);
    }
}

//! The plan of a run, before anything is started: the options are checked, the worker
//! count and source addresses chosen, and the time budgets (connect phase, hard
//! deadline) computed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::{parse_source_range, AuthMode, Protocol, RunArgs, Scenario};
use crate::sysinfo;

/// Sockets kept free in every worker for stdio, the runtime, DNS, ...
const FD_MARGIN: u64 = 64;
/// Default connections per worker when --workers is not given.
const DEFAULT_PER_WORKER: u64 = 15_000;
/// Roughly the ephemeral port range (32768-60999) per (source IP, target) pair, when
/// `/proc/sys/net/ipv4/ip_local_port_range` cannot be read.
const EPHEMERAL_PORTS: u64 = 28_000;

/// Connections per source IP when choosing loopback source addresses automatically: 3/4 of
/// half the ephemeral range. `connect()` looks for a free port among the even ports of the
/// range first (the odd ones are left to `bind()`), so once a (source IP, target) pair has
/// used its ~14k even ports every further connect scans all of them before it finds an odd
/// one. Measured (issue 18): with 20,000 per address the connect rate fell from about
/// 10,000/s to 100-1,000/s at 11 x 14.1k (200,000 connections) and 26 x 14.1k (500,000).
fn per_source_addr(ports: u64) -> u64 {
    (ports / 2 * 3 / 4).max(1)
}
/// How long the push driver may take beyond --duration to send what was scheduled.
pub const PUSH_FINISH_GRACE: Duration = Duration::from_secs(30);
/// Churn: after the last reconnect was started, how long (beyond the connect timeout)
/// the reconnects under way may take to finish.
pub const SETTLE_SLACK: Duration = Duration::from_secs(10);
/// Storm: slack on top of --storm-timeout + the connect timeout for the storm phase.
pub const STORM_SLACK: Duration = Duration::from_secs(15);

/// The resolved plan of a run.
pub struct Plan {
    pub source_addrs: Vec<IpAddr>,
    pub workers: u64,
    pub max_runtime: Duration,
    pub connect_budget: Duration,
}

/// Rejects option combinations that cannot run.
fn check_args(args: &RunArgs) -> Result<()> {
    args.header_pairs()?;
    if args.ca.is_some() && !args.url.starts_with("wss://") {
        bail!("--ca applies to wss:// URLs only");
    }
    if args.url.starts_with("wss://") && args.transport() == crate::cli::Transport::Polling {
        bail!("wss:// is for the websocket transport; long-polling has no TLS here (use http://)");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    check_pushes(args)?;
    if args.auth == AuthMode::Session && args.users == Some(0) {
        bail!("--users must be at least 1");
    }
    let reconnecting = matches!(args.scenario, Scenario::Churn | Scenario::Storm);
    if args.scenario == Scenario::Churn
        && !(args.churn_per_sec > 0.0 && args.churn_per_sec.is_finite())
    {
        bail!("--churn-per-sec must be > 0");
    }
    if args.scenario == Scenario::Storm
        && !(args.storm_timeout > 0.0 && args.storm_timeout.is_finite())
    {
        bail!("--storm-timeout must be > 0");
    }
    if !(args.storm_max_wait >= 0.0 && args.storm_max_wait.is_finite()) {
        bail!("--storm-max-wait must be >= 0");
    }
    if args.scenario != Scenario::Storm
        && (args.max_storm_secs.is_some() || args.max_gave_up.is_some())
    {
        bail!("--max-storm-secs and --max-gave-up apply to --scenario storm only");
    }
    if !reconnecting
        && (args.max_reconnect_failures.is_some() || args.max_reconnect_p99_ms.is_some())
    {
        bail!(
            "--max-reconnect-failures and --max-reconnect-p99-ms apply to --scenario churn and \
             storm only"
        );
    }
    match args.protocol {
        Protocol::Raw => {
            if args.transport.is_some() || args.eio.is_some() {
                bail!("--transport and --eio apply to --protocol socketio only");
            }
        }
        Protocol::Socketio => {
            if args.auth != AuthMode::Session {
                bail!(
                    "--protocol socketio needs --auth session (ringwire's socketio endpoints \
                     only accept sessions minted through the admin API)"
                );
            }
            if args.scenario == Scenario::Echo {
                bail!(
                    "--scenario echo is not available with --protocol socketio: the server does \
                     not echo Socket.IO events (use hold or push)"
                );
            }
            if args.echo_check {
                bail!(
                    "--echo-check is not available with --protocol socketio: the server does \
                     not echo Socket.IO events"
                );
            }
        }
    }
    Ok(())
}

/// The push scenario, and churn and storm with --recover, push to users.
fn check_pushes(args: &RunArgs) -> Result<()> {
    if args.recover {
        if args.protocol != Protocol::Raw {
            bail!(
                "--recover speaks the history protocol of raw endpoints (Socket.IO endpoints \
                 recover with socket.io's own protocol): it needs --protocol raw"
            );
        }
        if !matches!(
            args.scenario,
            Scenario::Push | Scenario::Churn | Scenario::Storm
        ) {
            bail!("--recover needs pushes: --scenario push, churn or storm");
        }
    }
    if !args.pushes() {
        return Ok(());
    }
    if args.auth != AuthMode::Session {
        bail!("pushes go to users: the push scenario and --recover need --auth session");
    }
    if !(args.push_rate > 0.0 && args.push_rate.is_finite()) {
        bail!("--push-rate must be > 0");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    Ok(())
}

/// Seconds the phases after the hold may take: the settle or the storm, the push
/// driver's grace and the drain, the echo check.
fn after_hold_budget(args: &RunArgs) -> f64 {
    let ct = args.connect_timeout_ms as f64 / 1000.0;
    let reconnects = match args.scenario {
        Scenario::Churn => ct + SETTLE_SLACK.as_secs_f64(),
        Scenario::Storm => args.storm_timeout + ct + STORM_SLACK.as_secs_f64(),
        Scenario::Push | Scenario::Hold | Scenario::Echo => 0.0,
    };
    let drain = if args.pushes() {
        args.drain_timeout_ms as f64 / 1000.0 + PUSH_FINISH_GRACE.as_secs_f64()
    } else {
        0.0
    };
    let check = if args.echo_check {
        args.echo_timeout_ms as f64 / 1000.0 + 20.0
    } else {
        0.0
    };
    reconnects + drain + check
}

/// Checks the options and resolves the plan: workers, source addresses, time budgets.
pub fn plan(args: &RunArgs, target_ip: IpAddr) -> Result<Plan> {
    check_args(args)?;
    let n = args.connections;
    let (_, hard) = sysinfo::nofile_limit().context("reading RLIMIT_NOFILE")?;
    // Sockets one connection may hold (long-polling: 2), counted against the fd limit.
    let per_conn = args.sockets_per_connection();
    let per_worker_cap = (hard.saturating_sub(FD_MARGIN) / per_conn).max(1);
    let workers = args
        .workers
        .unwrap_or_else(|| n.div_ceil(DEFAULT_PER_WORKER / per_conn))
        .clamp(1, n);
    let largest_share = n.div_ceil(workers);
    if largest_share > per_worker_cap {
        bail!(
            "{n} connections over {workers} worker(s) = {largest_share} per worker, but one process \
             can hold at most {per_worker_cap} (RLIMIT_NOFILE hard limit {hard} - {FD_MARGIN}{}); \
             use --workers {} or more",
            if per_conn > 1 {
                format!(", {per_conn} sockets per connection")
            } else {
                String::new()
            },
            n.div_ceil(per_worker_cap)
        );
    }

    let ephemeral_ports = sysinfo::ephemeral_ports().unwrap_or(EPHEMERAL_PORTS);
    let mut source_addrs = if let Some(range) = &args.source_range {
        parse_source_range(range)?
    } else {
        args.source_addrs.clone()
    };
    if source_addrs.is_empty() && target_ip.is_loopback() && target_ip.is_ipv4() {
        let k = n / per_source_addr(ephemeral_ports) + 1;
        if k > 1 {
            source_addrs = (1..=k.min(254))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect();
        }
    }
    if let Some(bad) = source_addrs
        .iter()
        .find(|a| a.is_ipv4() != target_ip.is_ipv4())
    {
        bail!("source address {bad} is not of the same family as the target {target_ip}");
    }
    let port_capacity = source_addrs.len().max(1) as u64 * ephemeral_ports;
    let fast_capacity = source_addrs.len().max(1) as u64 * (ephemeral_ports / 2);
    if n > port_capacity {
        eprintln!(
            "warning: {n} connections but only ~{port_capacity} ephemeral ports with {} source \
             address(es); add --source-addrs/--source-range",
            source_addrs.len().max(1)
        );
    } else if n > fast_capacity {
        eprintln!(
            "warning: {n} connections over {} source address(es) use more than the ~{} even \
             ephemeral ports of each: connects past them are slow (the kernel scans the even \
             ports first); add --source-addrs/--source-range",
            source_addrs.len().max(1),
            ephemeral_ports / 2
        );
    }

    let ct = args.connect_timeout_ms as f64 / 1000.0;
    let connect_budget = if args.ramp_per_sec > 0.0 {
        n as f64 / args.ramp_per_sec * 1.2 + ct + 30.0
    } else {
        n as f64 / 200.0 + ct + 60.0
    };
    let max_runtime = if args.max_runtime_s > 0.0 {
        args.max_runtime_s
    } else {
        connect_budget + args.duration.max(0.0) + after_hold_budget(args) + 30.0
    };
    Ok(Plan {
        source_addrs,
        workers,
        max_runtime: Duration::from_secs_f64(max_runtime),
        connect_budget: Duration::from_secs_f64(connect_budget),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["ringwire-loadtest"];
        v.extend_from_slice(extra);
        <crate::cli::Cli as clap::Parser>::try_parse_from(v)
            .unwrap()
            .run
    }

    #[test]
    fn reconnect_options_are_checked() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ok = |a: &[&str]| plan(&args(a), ip).map(|_| ()).map_err(|e| e.to_string());
        assert!(ok(&["--scenario", "churn", "--churn-per-sec", "50"]).is_ok());
        assert!(ok(&["--scenario", "churn", "--churn-per-sec", "0"]).is_err());
        assert!(ok(&[
            "--scenario",
            "storm",
            "--max-storm-secs",
            "10",
            "--max-gave-up",
            "2"
        ])
        .is_ok());
        assert!(ok(&["--scenario", "storm", "--storm-timeout", "0"]).is_err());
        assert!(ok(&["--scenario", "hold", "--max-storm-secs", "10"]).is_err());
        assert!(ok(&["--scenario", "hold", "--max-reconnect-failures", "0"]).is_err());
        assert!(ok(&["--scenario", "churn", "--max-reconnect-p99-ms", "5"]).is_ok());
        // The storm's time budget is part of the hard deadline.
        let short = plan(&args(&["--scenario", "storm", "--storm-timeout", "1"]), ip).unwrap();
        let long = plan(
            &args(&["--scenario", "storm", "--storm-timeout", "100"]),
            ip,
        )
        .unwrap();
        assert!(long.max_runtime >= short.max_runtime + Duration::from_secs(99));
    }

    #[test]
    fn loopback_sources_stay_within_the_even_ports() {
        assert_eq!(per_source_addr(28_232), 10_587);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let p = plan(&args(&["-c", "1000000", "--workers", "100"]), ip).unwrap();
        let ports = sysinfo::ephemeral_ports().unwrap_or(EPHEMERAL_PORTS);
        let k = p.source_addrs.len() as u64;
        assert!(1_000_000u64.div_ceil(k) <= ports / 2, "{k} addresses");
        assert_eq!(p.source_addrs[1], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    }

    #[test]
    fn recover_options_are_checked() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ok = |a: &[&str]| plan(&args(a), ip).map(|_| ()).map_err(|e| e.to_string());
        let session = ["--auth", "session", "--recover"];
        for scenario in ["push", "churn", "storm"] {
            assert!(ok(&[&session[..], &["--scenario", scenario]].concat()).is_ok());
        }
        assert!(ok(&[&session[..], &["--scenario", "hold"]].concat()).is_err());
        assert!(ok(&["--recover", "--scenario", "churn"]).is_err());
        let sio = ["--protocol", "socketio", "--scenario", "storm"];
        assert!(ok(&[&session[..], &sio[..]].concat()).is_err());
        assert!(
            ok(&[&session[..], &["--scenario", "storm", "--push-rate", "0"]].concat()).is_err()
        );
        // A storm that pushes has the drain in its time budget.
        let storm = plan(&args(&["--scenario", "storm"]), ip).unwrap();
        let recover = plan(
            &args(&[&session[..], &["--scenario", "storm"]].concat()),
            ip,
        )
        .unwrap();
        assert!(recover.max_runtime >= storm.max_runtime + PUSH_FINISH_GRACE);
    }
}

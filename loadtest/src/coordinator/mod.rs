//! Coordinator: plans the run, starts the worker processes (re-executing this binary
//! with the hidden `worker` subcommand), drives the phases, aggregates the workers'
//! JSON-line events, shows progress and builds the [`Report`].
//!
//! [`run`] is the sequence of steps, each in its own module:
//! - [`plan`]: the options are checked; workers, source addresses, time budgets.
//! - [`auth`]: with `--auth session`, one session per user through the admin API.
//! - [`workers`]: the worker processes (start, their latest state, reap).
//! - [`events`]: the event loop (worker events, the 250 ms tick with the timeline and the
//!   progress, Ctrl-C, the hard deadline).
//! - [`phases`]: the phase machine, one function per phase: connect, then hold (push:
//!   pushing, then drain; churn: churning, then settle; storm: the storm), then the echo
//!   check, then stop.
//! - [`state`]: the run's state ([`state::Run`]) and its phases.
//! - [`summary`]: the report, built from the run's state.
//! - [`ui`]: progress bar, log and status lines.

mod auth;
mod events;
mod phases;
mod plan;
mod state;
mod summary;
mod ui;
mod workers;

use std::net::IpAddr;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::cli::{choice_name, RunArgs, Target};
use crate::report::Report;
use crate::sysinfo;
use state::{sample_mem, Run};
use ui::Ui;

/// Runs the load test and returns its report (thresholds checked).
pub async fn run(args: &RunArgs) -> Result<Report> {
    let target_ip = resolve(args).await?;
    let plan = plan::plan(args, target_ip)?;
    let _ = sysinfo::raise_nofile_limit();
    let ui = Ui::new(args);
    ui.log(format!(
        "target {} ({target_ip}, {}), {} connections, {} worker(s), {} source address(es), \
         scenario {}, hard deadline {:.0} s",
        args.connect_url(),
        args.protocol_label(),
        args.connections,
        plan.workers,
        plan.source_addrs.len(),
        choice_name(args.scenario),
        plan.max_runtime.as_secs_f64()
    ));
    let mem_before = sample_mem(args.server_pid);
    if args.server_pid.is_some() && mem_before.rss.is_none() {
        ui.log(format!(
            "warning: cannot read /proc/{}/status",
            args.server_pid.unwrap_or(0)
        ));
    }
    let mut auth = auth::mint(args, &ui).await?;
    let started = Instant::now();
    let started_unix_us = sysinfo::unix_now_us();
    let creds = std::mem::take(&mut auth.creds);
    let (workers, rx) = workers::start_workers(args, &plan, auth.users, creds).await?;
    let mut run = Run::new(args, &plan, &ui, auth, workers, started, started_unix_us);
    run.mem_before = mem_before;
    run.event_loop(rx).await?;
    ui.finish();
    workers::reap(&mut run.workers).await;
    Ok(run.into_report())
}

/// The address `--url` resolves to.
async fn resolve(args: &RunArgs) -> Result<IpAddr> {
    let target = Target::parse_for(&args.url, args.protocol)?;
    let ip = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} resolved to no address", target.host))?
        .ip();
    Ok(ip)
}

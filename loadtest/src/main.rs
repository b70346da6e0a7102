//! `ringwire-loadtest`: WebSocket load tester for ringwire (any RFC 6455 server).
//!
//! The coordinator (what the user runs) plans the test and re-executes this
//! binary as `ringwire-loadtest worker` once per worker process; workers open
//! the connections and report JSON lines on stdout. See README.md.
//!
//! # Module map
//!
//! Imports point down this list; no module imports one above it.
//!
//! - [`coordinator`]: the user's process. One step per module: `plan`, `auth` (session
//!   minting), `workers` (processes), `events` (the event loop), `phases` (one function
//!   per phase: connect, hold, push drain, churn, settle, storm, echo check, stop),
//!   `summary` (the report from the run's state).
//! - [`worker`]: a worker process: its share of the connections, commands from the
//!   coordinator, progress events.
//! - [`report`]: the report's JSON structure, the table, the thresholds, the SVG plot.
//! - [`admin`]: the admin API client: session minting, the push driver.
//! - [`client`]: one simulated client. A single reconnect loop (`client::life`) for every
//!   protocol, which is a `Driver`: `raw` WebSocket, `socketio::websocket`,
//!   `socketio::polling`.
//! - [`ipc`]: the coordinator <-> worker protocol (JSON lines: spec, commands, events,
//!   counters).
//! - [`recovery`]: `--recover`: the push ledger, and the per-connection stream tracker
//!   that counts missing, duplicated and out-of-order pushes across reconnects.
//! - [`wire`]: the protocol level: failure kinds, sockets, scenario messages, Engine.IO
//!   packets, a minimal HTTP/1.1 client.
//! - [`cli`], [`stats`], [`sysinfo`], [`rng`]: options, histograms, /proc and rlimits,
//!   splitmix64.

mod admin;
mod cli;
mod client;
mod coordinator;
mod ipc;
mod recovery;
mod report;
mod rng;
mod stats;
mod sysinfo;
mod wire;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, RunArgs};

/// Exit code when a threshold is violated.
const EXIT_THRESHOLD: u8 = 1;
/// Exit code when the run was interrupted with Ctrl-C (report still written).
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when the test could not be run at all.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker) => match worker::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringwire-loadtest worker: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        },
        None => match run(&cli.run) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("ringwire-loadtest: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(coordinator::run(args))?;
    print!("{}", report.to_table());
    report.write_json(&args.report)?;
    println!("report written to {}", args.report.display());
    if let Some(plot) = &args.plot {
        match report::plot::write_svg(plot, &report) {
            Ok(()) => println!("plot written to {}", plot.display()),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    Ok(if report.outcome.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_THRESHOLD)
    })
}

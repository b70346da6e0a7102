//! What the user sees while a run goes on: the progress bar (on a terminal), log lines,
//! and a status line every 5 s otherwise (`--quiet`: nothing).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::cli::RunArgs;

pub struct Ui {
    bar: ProgressBar,
    interactive: bool,
    quiet: bool,
    /// When the last status line was printed (non-interactive).
    last_status: Cell<Instant>,
}

impl Ui {
    pub fn new(args: &RunArgs) -> Self {
        let interactive = !args.quiet && std::io::stdout().is_terminal();
        let bar = if interactive {
            let pb = ProgressBar::new(args.connections);
            pb.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} open | {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        } else {
            ProgressBar::hidden()
        };
        Ui {
            bar,
            interactive,
            quiet: args.quiet,
            last_status: Cell::new(Instant::now()),
        }
    }

    /// A log line (above the progress bar; on stderr without a terminal).
    pub fn log(&self, msg: String) {
        if self.interactive {
            self.bar.println(msg);
        } else if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Shows the open connections and the status; without a terminal, prints the status
    /// every 5 s (`t`: seconds since the start, `n`: connections requested).
    pub fn show(&self, now: Instant, t: f64, open: u64, n: u64, status: String) {
        self.bar.set_position(open);
        self.bar.set_message(status.clone());
        if !self.interactive
            && !self.quiet
            && now.duration_since(self.last_status.get()) >= Duration::from_secs(5)
        {
            self.last_status.set(now);
            eprintln!("[{t:>6.1}s] open {open}/{n} | {status}");
        }
    }

    /// Status lines count from now on (the workers were just started).
    pub fn restart_clock(&self) {
        self.last_status.set(Instant::now());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Milliseconds with two decimals, from µs.
pub fn fmt_ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

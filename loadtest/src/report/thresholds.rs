//! The thresholds given on the command line (`--max-*`, `--min-connected`), checked
//! against a finished report.

use crate::cli::{RunArgs, Scenario};
use crate::report::Report;

impl Report {
    /// Fills `violations` from the thresholds given on the command line.
    pub fn check_thresholds(&mut self, args: &RunArgs) {
        let mut v = Vec::new();
        // Whatever the thresholds, a run where no connection was established measured
        // nothing: it fails.
        if let Some(why) = self.nothing_connected(args) {
            v.push(why);
        }
        self.check_connections(args, &mut v);
        self.check_messages(args, &mut v);
        self.check_missing(args, &mut v);
        self.check_reconnects(args, &mut v);
        self.check_storm(args, &mut v);
        if self.outcome.deadline_hit {
            v.push("the hard deadline (--max-runtime-s) was hit".to_string());
        }
        self.violations = v;
    }

    /// "nothing connected (...)" when connections were asked for and none was established,
    /// with the failures by kind and a hint for the usual cause.
    fn nothing_connected(&self, args: &RunArgs) -> Option<String> {
        let c = &self.connections;
        if c.requested == 0 || c.connected > 0 || self.outcome.interrupted {
            return None;
        }
        let kinds: Vec<String> = c
            .failed_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut why = format!(
            "nothing connected: 0 of {} connections were established",
            c.requested
        );
        if !kinds.is_empty() {
            why += &format!(" (failures: {})", kinds.join(", "));
        }
        let refused_auth = c.failed_by_kind.contains_key("http_401");
        if refused_auth && args.auth == crate::cli::AuthMode::None {
            why += "; the endpoint asks for a session: add --auth session (or use an endpoint with auth = \"none\")";
        } else if c.failed_by_kind.contains_key("refused") {
            why += "; is the server listening on --url?";
        }
        Some(why)
    }

    /// --max-connect-errors, --min-connected.
    fn check_connections(&self, args: &RunArgs, v: &mut Vec<String>) {
        if let Some(max) = args.max_connect_errors {
            if self.connections.failed > max {
                v.push(format!(
                    "connect errors {} > --max-connect-errors {max}",
                    self.connections.failed
                ));
            }
        }
        if let Some(min) = args.min_connected {
            if self.connections.connected < min {
                v.push(format!(
                    "connected {} < --min-connected {min}",
                    self.connections.connected
                ));
            } else if self.connections.open_at_end < min {
                v.push(format!(
                    "still open at the end {} < --min-connected {min}",
                    self.connections.open_at_end
                ));
            }
        }
    }

    /// --max-p99-ms, --max-echo-failures.
    fn check_messages(&self, args: &RunArgs, v: &mut Vec<String>) {
        if let Some(max_ms) = args.max_p99_ms {
            let lat = self.messages.latency_steady_us.as_ref();
            match lat.or(self.messages.latency_us.as_ref()) {
                Some(l) if l.p99_us as f64 / 1000.0 > max_ms => v.push(format!(
                    "p99 latency {:.3} ms > --max-p99-ms {max_ms}",
                    l.p99_us as f64 / 1000.0
                )),
                Some(_) => {}
                None => v.push("--max-p99-ms given but no latency was measured".to_string()),
            }
        }
        if let Some(max) = args.max_echo_failures {
            match &self.echo_check {
                Some(c) if c.echoes_failed > max => v.push(format!(
                    "echo check failures {} > --max-echo-failures {max}",
                    c.echoes_failed
                )),
                Some(_) => {}
                None => v.push("--max-echo-failures given but no echo check ran".to_string()),
            }
        }
    }

    /// --max-missing: with --recover the losses by sequence number, else the push
    /// scenario's or the echoes' missing messages.
    fn check_missing(&self, args: &RunArgs, v: &mut Vec<String>) {
        let Some(max) = args.max_missing else {
            return;
        };
        let missing = match (&self.recovery, &self.push) {
            (Some(r), _) if !r.ledger_complete => {
                v.push(
                    "--max-missing given but the pushes to expect are unknown (the run \
                     stopped before pushing was over)"
                        .to_string(),
                );
                return;
            }
            (Some(r), _) => r.counts.missing,
            (None, Some(p)) => p.missing,
            (None, None) => self.messages.missing,
        };
        if missing > max {
            v.push(format!("missing messages {missing} > --max-missing {max}"));
        }
    }

    /// Churn and storm: --max-reconnect-failures, --max-reconnect-p99-ms.
    fn check_reconnects(&self, args: &RunArgs, v: &mut Vec<String>) {
        let reconnect = match (&self.churn, &self.storm) {
            (Some(c), _) => Some((c.failed, c.connect_latency_us.as_ref())),
            (_, Some(s)) => Some((s.failed_attempts, s.connect_latency_us.as_ref())),
            _ => None,
        };
        if let Some(max) = args.max_reconnect_failures {
            match reconnect {
                Some((failed, _)) if failed > max => v.push(format!(
                    "failed reconnect attempts {failed} > --max-reconnect-failures {max}"
                )),
                Some(_) => {}
                None => {
                    v.push("--max-reconnect-failures given but no churn or storm ran".to_string())
                }
            }
        }
        if let Some(max_ms) = args.max_reconnect_p99_ms {
            match reconnect.map(|r| r.1) {
                Some(Some(l)) if l.p99_us as f64 / 1000.0 > max_ms => v.push(format!(
                    "reconnect p99 connect latency {:.3} ms > --max-reconnect-p99-ms {max_ms}",
                    l.p99_us as f64 / 1000.0
                )),
                Some(Some(_)) => {}
                _ => v.push("--max-reconnect-p99-ms given but no reconnect was made".to_string()),
            }
        }
    }

    /// Storm: the storm took place, --max-gave-up, --max-storm-secs.
    fn check_storm(&self, args: &RunArgs, v: &mut Vec<String>) {
        if self.scenario == Scenario::Storm {
            match &self.storm {
                None => v.push("the storm did not take place".to_string()),
                Some(st) => {
                    let max_gave_up = args.max_gave_up.unwrap_or(0);
                    if st.gave_up > max_gave_up {
                        v.push(format!(
                            "{} clients gave up reconnecting > --max-gave-up {max_gave_up}",
                            st.gave_up
                        ));
                    }
                    if let Some(max) = args.max_storm_secs {
                        match st.all_reconnected_s {
                            Some(secs) if secs <= max => {}
                            Some(secs) => v.push(format!(
                                "all reconnected after {secs:.2} s > --max-storm-secs {max}"
                            )),
                            None => v.push(format!(
                                "not all reconnected ({} of {}) within --max-storm-secs {max}",
                                st.reconnected, st.dropped
                            )),
                        }
                    }
                }
            }
        }
    }
}

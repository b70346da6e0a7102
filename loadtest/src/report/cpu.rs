//! The host's CPU during a run (sampled from /proc/stat with the timeline): a run on a
//! busy host measured the machine as much as the server, so the report says so.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::{Report, TimelineSample};

/// A run counts as contended when the host was at least this busy on average, or for at
/// least [`BUSY_SHARE`] of the samples.
pub const BUSY_PCT: f64 = 90.0;
pub const BUSY_SHARE: f64 = 0.25;
/// ... or when the hypervisor took at least this share of the CPU time (steal).
pub const STEAL_PCT: f64 = 5.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostCpu {
    pub samples: usize,
    pub busy_pct_mean: f64,
    pub busy_pct_max: f64,
    /// Share of the samples (250 ms each) with the host at least `BUSY_PCT` busy.
    pub busy_share: f64,
    pub steal_pct_mean: f64,
    pub steal_pct_max: f64,
    pub contended: bool,
    /// The warning printed when contended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl HostCpu {
    /// From the timeline's samples; None when none had the CPU.
    pub fn from_timeline(timeline: &[TimelineSample]) -> Option<HostCpu> {
        let pairs: Vec<(f64, f64)> = timeline
            .iter()
            .filter_map(|s| Some((s.host_cpu_busy_pct?, s.host_cpu_steal_pct.unwrap_or(0.0))))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let n = pairs.len() as f64;
        let busy_pct_mean = pairs.iter().map(|p| p.0).sum::<f64>() / n;
        let steal_pct_mean = pairs.iter().map(|p| p.1).sum::<f64>() / n;
        let busy_share = pairs.iter().filter(|p| p.0 >= BUSY_PCT).count() as f64 / n;
        let mut cpu = HostCpu {
            samples: pairs.len(),
            busy_pct_mean,
            busy_pct_max: pairs.iter().map(|p| p.0).fold(0.0, f64::max),
            busy_share,
            steal_pct_mean,
            steal_pct_max: pairs.iter().map(|p| p.1).fold(0.0, f64::max),
            contended: false,
            warning: None,
        };
        let busy = busy_pct_mean >= BUSY_PCT || busy_share >= BUSY_SHARE;
        let steal = steal_pct_mean >= STEAL_PCT;
        if busy || steal {
            cpu.contended = true;
            let mut why = Vec::new();
            if busy {
                why.push(format!(
                    "the host CPU was {:.0}% busy on average ({:.0}% of the time at {BUSY_PCT:.0}% or more)",
                    busy_pct_mean,
                    busy_share * 100.0
                ));
            }
            if steal {
                why.push(format!(
                    "the hypervisor took {steal_pct_mean:.1}% of the CPU time (steal)"
                ));
            }
            cpu.warning = Some(format!(
                "contended run: {}; the load tester and the server competed for the CPU, so \
                 latencies and rates measure the machine as much as the server",
                why.join(" and ")
            ));
        }
        Some(cpu)
    }
}

impl Report {
    /// The `host cpu` lines of the table, with the warning of a contended run.
    pub(crate) fn table_host_cpu(&self, s: &mut String) {
        let Some(c) = &self.host_cpu else {
            return;
        };
        let _ = writeln!(s, "host cpu");
        let _ = writeln!(
            s,
            "  {:<34} {:.0}% / {:.0}% (steal {:.1}% / {:.1}%)",
            "busy mean / max", c.busy_pct_mean, c.busy_pct_max, c.steal_pct_mean, c.steal_pct_max
        );
        if let Some(w) = &c.warning {
            let _ = writeln!(s, "  WARNING: {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy: f64, steal: f64) -> TimelineSample {
        serde_json::from_value(serde_json::json!({
            "t": 0.0, "connected": 0, "failed": 0, "sent": 0, "received": 0,
            "host_cpu_busy_pct": busy, "host_cpu_steal_pct": steal,
        }))
        .unwrap()
    }

    #[test]
    fn contended_or_not() {
        let calm = HostCpu::from_timeline(&[sample(20.0, 0.0), sample(40.0, 0.0)]).unwrap();
        assert!(!calm.contended && calm.warning.is_none());
        assert_eq!(calm.busy_pct_mean, 30.0);
        let busy: Vec<_> = [50.0, 95.0, 97.0, 60.0].map(|b| sample(b, 0.0)).into();
        let busy = HostCpu::from_timeline(&busy).unwrap();
        assert!(busy.contended, "half the time at 95%+");
        assert!(busy.warning.unwrap().contains("busy"));
        let stolen = HostCpu::from_timeline(&[sample(30.0, 8.0)]).unwrap();
        assert!(stolen.contended && stolen.warning.unwrap().contains("steal"));
        assert_eq!(HostCpu::from_timeline(&[]), None);
    }
}

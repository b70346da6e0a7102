//! Process limits and /proc sampling (Linux).

use std::io;

/// Raises the soft RLIMIT_NOFILE to the hard limit. Returns (soft, hard) after the change.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(as_pair(&lim))
}

// rlim_t is u64 on 64-bit Linux but not everywhere.
#[allow(clippy::unnecessary_cast)]
fn as_pair(lim: &libc::rlimit) -> (u64, u64) {
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

/// Current (soft, hard) RLIMIT_NOFILE.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: see above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(as_pair(&lim))
}

/// Reads a `Key:   123 kB` line from a /proc file, in bytes.
fn proc_kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Ports in `net.ipv4.ip_local_port_range` (both ends included).
pub fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    hi.checked_sub(lo).map(|d| d + 1)
}

/// VmRSS of a process in bytes.
pub fn process_rss(pid: u32) -> Option<u64> {
    proc_kb_field(&format!("/proc/{pid}/status"), "VmRSS")
}

/// Peak RSS (VmHWM) of this process in bytes.
pub fn self_peak_rss() -> Option<u64> {
    proc_kb_field("/proc/self/status", "VmHWM")
}

/// Whole-machine kernel slab memory in bytes (/proc/meminfo `Slab:`).
pub fn slab_bytes() -> Option<u64> {
    proc_kb_field("/proc/meminfo", "Slab")
}

/// Wall clock time in microseconds since the Unix epoch.
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Wall clock time in ns since the Unix epoch (push timestamps: all processes run on
/// the same machine, so the coordinator's and the workers' clocks agree).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Ignore SIGINT: workers are stopped by the coordinator (which gets the Ctrl-C
/// of the whole process group) so that it can still collect their final stats.
pub fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss_and_slab() {
        assert!(super::process_rss(std::process::id()).unwrap() > 0);
        assert!(super::self_peak_rss().unwrap() > 0);
        assert!(super::slab_bytes().is_some());
        let (soft, hard) = super::raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
}

/// The host's CPU time counters (`cpu` line of /proc/stat, in clock ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    /// idle + iowait.
    pub idle: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Parses the first (`cpu `) line of /proc/stat.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 4 {
            return None;
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
        let field = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(CpuTimes {
            total: (0..8).map(field).sum(),
            idle: field(3) + field(4),
            steal: field(7),
        })
    }

    /// The whole machine's counters now.
    pub fn now() -> Option<CpuTimes> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// (busy %, steal %) of the host between `earlier` and `self`; None if no time passed.
    pub fn busy_since(&self, earlier: &CpuTimes) -> Option<(f64, f64)> {
        let total = self.total.checked_sub(earlier.total).filter(|t| *t > 0)? as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let steal = self.steal.saturating_sub(earlier.steal) as f64;
        Some((
            (100.0 * (total - idle) / total).clamp(0.0, 100.0),
            (100.0 * steal / total).clamp(0.0, 100.0),
        ))
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn busy_and_steal() {
        let a = CpuTimes::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!((a.total, a.idle, a.steal), (1000, 800, 0));
        let b = CpuTimes::parse("cpu  550 0 150 720 100 0 0 80 0 0\n").unwrap();
        let (busy, steal) = b.busy_since(&a).unwrap();
        // 600 ticks passed: 20 idle, 80 steal.
        assert!((busy - 96.666).abs() < 0.01, "{busy}");
        assert!((steal - 13.333).abs() < 0.01, "{steal}");
        assert_eq!(a.busy_since(&a), None);
        assert_eq!(CpuTimes::parse("intr 1 2"), None);
    }
}

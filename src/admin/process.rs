//! The process metrics of the Prometheus client libraries (`process_*`, read from /proc at
//! scrape time) and `ringwire_build_info`.
use crate::service::prometheus::metric_f64;
use std::fmt::Write;

/// What /proc says of this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
}

/// Fields of `/proc/self/stat` after the command name (field 3, the state, is index 0):
/// (utime, stime, threads, starttime, vsize, rss) in ticks, ticks, -, ticks, bytes, pages.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64, u64, u64, u64)> {
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    // Field k of proc(5) (1-based) is f[k - 3].
    Some((n(11)?, n(12)?, n(17)?, n(19)?, n(20)?, n(21)?))
}

/// `btime` of /proc/stat: when the system booted, in seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

pub fn read() -> Option<ProcessStats> {
    let (tck, page) = crate::runtime::proc_units();
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (utime, stime, threads, start, vsize, rss) = parse_stat(&stat)?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / tck as f64,
        resident_bytes: rss * page,
        virtual_bytes: vsize,
        start_time_seconds: boot as f64 + start as f64 / tck as f64,
        open_fds,
        max_fds: super::nofile_limits().map(|(soft, _)| soft),
        threads,
    })
}

/// The `process_*` metrics and `ringwire_build_info`.
pub fn render(out: &mut String) {
    let name = "ringwire_build_info";
    let _ = writeln!(
        out,
        "# HELP {name} The running build: version, target architecture, profile (always 1)\n\
         # TYPE {name} gauge\n\
         {name}{{version=\"{}\",arch=\"{}\",profile=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    let Some(p) = read() else { return };
    let mut m = |name: &str, kind: &str, help: &str, v: f64| metric_f64(out, name, kind, help, v);
    m(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds",
        p.cpu_seconds,
    );
    m(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        p.resident_bytes as f64,
    );
    m(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes",
        p.virtual_bytes as f64,
    );
    m(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds",
        p.start_time_seconds,
    );
    m(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors",
        p.open_fds as f64,
    );
    if let Some(max) = p.max_fds {
        m(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (soft RLIMIT_NOFILE)",
            max as f64,
        );
    }
    m(
        "process_threads",
        "gauge",
        "Number of OS threads in the process",
        p.threads as f64,
    );
}

/// The process fields of `/v1/stats` (the dashboard shows them): version, uptime and
/// resident memory.
pub fn json() -> serde_json::Value {
    let p = read();
    let uptime = p.as_ref().and_then(|p| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Some(((now - p.start_time_seconds).max(0.0) * 10.0).round() / 10.0)
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": uptime,
        "rss_bytes": p.map(|p| p.resident_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        // proc(5) order from field 3 on; the name holds a space and a parenthesis.
        let line = "4242 (ring (wire) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(line), Some((250, 50, 7, 12345, 1_000_000, 300)));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc");
        assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.threads >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("\nprocess_open_fds "));
        assert!(out.contains("ringwire_build_info{version=\""));
    }

    #[test]
    fn the_stats_fields_are_real() {
        let j = json();
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
        assert!(j["rss_bytes"].as_u64().unwrap() > 0);
        assert!(j["uptime_secs"].as_f64().unwrap() >= 0.0);
    }
}

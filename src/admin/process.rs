//! What `/v1/stats` says about the process itself: version, uptime and resident memory,
//! read from /proc (the dashboard shows them).

/// VmRSS of this process in bytes, from /proc/self/status.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Seconds since this process started: the boot-relative start time of /proc/self/stat
/// (field 22, in clock ticks of 100 Hz, as the kernel reports them to user space) against
/// /proc/uptime.
pub fn uptime_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    uptime_from(&stat, &uptime)
}

fn uptime_from(stat: &str, uptime: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after ')', so field 22 is the 20th.
    let start_ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some((up - start_ticks / 100.0).max(0.0))
}

/// The `process` fields of `/v1/stats`.
pub fn json() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": uptime_secs().map(|s| (s * 10.0).round() / 10.0),
        "rss_bytes": rss_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_of_a_stat_line() {
        let stat = "4242 (ring wire) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 99 1";
        assert_eq!(uptime_from(stat, "200.50 10.0\n"), Some(200.50 - 123.45));
        assert_eq!(uptime_from("junk", "1 2"), None);
        assert!(rss_bytes().unwrap() > 0);
        assert!(uptime_secs().unwrap() >= 0.0);
    }
}

//! `ringwire doctor [--connections N]`: is this host ready for N connections, and if not,
//! exactly what to change. The host is read once into [`HostFacts`]; [`assess`] is a pure
//! function of those facts (unit-tested), so the advice is the same wherever it is computed.
use crate::config::Config;
use std::fmt::Write as _;

/// What the doctor reads off the host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub file_max: Option<u64>,
    pub nr_open: Option<u64>,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub ip_local_port_range: Option<(u64, u64)>,
    /// tcp_mem high threshold, in pages.
    pub tcp_mem_high_pages: Option<u64>,
    pub page_size: u64,
    /// `kernel.io_uring_disabled`: 0 allowed, 1 restricted to a group, 2 disabled (absent on
    /// kernels without the knob).
    pub io_uring_disabled: Option<u64>,
    /// Creating a ring worked (or the error).
    pub io_uring_probe: Result<(), String>,
    pub kernel: Option<(u32, u32)>,
    pub memlock_soft: Option<u64>,
    pub mem_available: Option<u64>,
    pub cpus: usize,
    /// Running under systemd (INVOCATION_ID set): the unit's TasksMax (cgroup pids.max).
    pub systemd_tasks_max: Option<Option<u64>>,
    /// `net.netfilter.nf_conntrack_max` (None: connection tracking is not loaded).
    pub conntrack_max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    /// What to change (empty when fine).
    pub change: String,
}

fn ok(what: String) -> Finding {
    Finding {
        level: Level::Ok,
        what,
        change: String::new(),
    }
}

fn bad(level: Level, what: String, change: String) -> Finding {
    Finding {
        level,
        what,
        change,
    }
}

/// User-space bytes budgeted per idle connection: 507-609 B measured per idle authenticated
/// connection at 100,000 on six rings (638 B with short string ids), about 405 B of it the
/// connection's own and the rest the rings' fixed memory (README, "Memory per connection"),
/// rounded up to 1 KiB for allocator slack, long string ids and smaller nodes; and kernel bytes per connection (socket, both directions' minimal
/// buffers; measured about 9 KB for both ends on loopback, so about 5 KB for the server's
/// end).
const USER_BYTES_PER_CONN: u64 = 1_024;
const KERNEL_BYTES_PER_CONN: u64 = 5_000;
/// The kernel's cap on one fixed-file table (IORING_MAX_FIXED_FILES).
const MAX_FIXED_FILES: u64 = 1 << 20;

/// The findings for `n` connections with `config` on a host with `facts`.
pub fn assess(facts: &HostFacts, n: u64, config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let cores = match config.server.cores {
        0 => facts.cpus.max(1),
        c => c,
    } as u64;
    let reserve = config.engine.reserve_slots as u64;
    // Each core's ring holds up to RLIMIT_NOFILE direct descriptors (the soft limit is raised
    // to the hard one at start), at most 2^20.
    let per_core_needed = busiest_core(n, cores) + reserve + 64;
    check_open_files(&mut out, facts, n, cores, reserve, per_core_needed);
    check_system_files(&mut out, facts, n, per_core_needed);
    check_network(&mut out, facts, n, config.engine.backlog as u64);
    check_kernel(&mut out, facts);
    check_memory(&mut out, facts, n);
    check_systemd(&mut out, facts, cores);
    check_conntrack(&mut out, facts, n);
    out
}

/// With connection tracking loaded, every connection takes an entry; a full table drops new
/// connections' packets silently (the kernel logs "table full, dropping packet"). Entries
/// outlive their connection (TIME_WAIT, 120 s), so a reconnect storm needs about twice N.
fn check_conntrack(out: &mut Vec<Finding>, facts: &HostFacts, n: u64) {
    let Some(max) = facts.conntrack_max else {
        out.push(ok(
            "connection tracking not loaded (no conntrack table to fill)".into(),
        ));
        return;
    };
    let want = n.saturating_mul(2);
    let change = format!(
        "sysctl net.netfilter.nf_conntrack_max={want} (and nf_conntrack_buckets={}), or exempt ringwire's port from tracking (iptables -t raw -A PREROUTING -p tcp --dport 8080 -j NOTRACK)",
        want / 4
    );
    if max < n {
        out.push(bad(
            Level::Fail,
            format!("net.netfilter.nf_conntrack_max = {max}: under {n} connections, new ones would be dropped"),
            change,
        ));
    } else if max < want {
        out.push(bad(
            Level::Warn,
            format!("net.netfilter.nf_conntrack_max = {max}: under {want} (twice the connections: a reconnect storm leaves the old ones' entries for 120 s)"),
            change,
        ));
    } else {
        out.push(ok(format!("net.netfilter.nf_conntrack_max = {max}")));
    }
}

/// Connections on the busiest of `cores` cores when `n` users with one socket each are
/// placed by their key's hash (`service::placement`): the mean plus 5 standard deviations
/// of the spread. Measured for users 1..=1,000,000 of one context over 50 to 64 cores, the
/// busiest core is 2.2 to 4.2 standard deviations above the mean (51 cores: 20,194 against
/// a mean of 19,608), so a table sized for the mean refuses users on its busiest core.
pub fn busiest_core(n: u64, cores: u64) -> u64 {
    let mean = n.div_ceil(cores.max(1));
    mean + (5.0 * (mean as f64).sqrt()).ceil() as u64
}

/// The fewest cores whose busiest one holds its share of `n` in a table of `table` slots
/// with `reserve` (and 64 more) kept free; `None` if no count of cores up to `n` does.
fn cores_needed(n: u64, table: u64, reserve: u64) -> Option<u64> {
    let room = table.checked_sub(reserve + 64)?;
    let first = n.div_ceil(room.max(1)).max(1);
    (first..=n.max(1)).find(|&c| busiest_core(n, c) <= room)
}

/// RLIMIT_NOFILE against the direct descriptors each core's ring must hold.
fn check_open_files(
    out: &mut Vec<Finding>,
    facts: &HostFacts,
    n: u64,
    cores: u64,
    reserve: u64,
    per_core_needed: u64,
) {
    let per_core_table = facts.nofile_hard.min(MAX_FIXED_FILES);
    if per_core_table >= per_core_needed {
        out.push(ok(format!(
            "open files: hard limit {} holds {} per core x {cores} cores",
            facts.nofile_hard, per_core_needed
        )));
    } else {
        let want = per_core_needed.max(65_536);
        let mut change = format!(
            "raise the open-file limit to at least {want} (systemd: LimitNOFILE={want} in ringwire.service; shell: /etc/security/limits.d/ringwire.conf 'ringwire - nofile {want}')"
        );
        if per_core_needed > MAX_FIXED_FILES {
            let _ = write!(
                change,
                "; {per_core_needed} per core is over the kernel's 2^20 per ring: use more cores (server.cores >= {})",
                cores_needed(n, MAX_FIXED_FILES, reserve).unwrap_or(n)
            );
        } else {
            let _ = write!(
                change,
                "; or run more rings: server.cores = {} holds {n} with this limit",
                cores_needed(n, per_core_table, reserve).unwrap_or(n)
            );
        }
        out.push(bad(
            Level::Fail,
            format!(
                "open files: hard limit {} (soft {}) gives each of {cores} cores {} slots; {n} connections need {per_core_needed} per core",
                facts.nofile_hard, facts.nofile_soft, per_core_table
            ),
            change,
        ));
    }
}

/// The system-wide file limits: `fs.nr_open` (per process) and `fs.file-max`.
fn check_system_files(out: &mut Vec<Finding>, facts: &HostFacts, n: u64, per_core_needed: u64) {
    match facts.nr_open {
        Some(v) if v < per_core_needed => out.push(bad(
            Level::Fail,
            format!("fs.nr_open = {v}: no process may hold {per_core_needed} files"),
            format!(
                "sysctl fs.nr_open={} (tuning/sysctl.d/60-ringwire.conf)",
                per_core_needed.max(1_048_576)
            ),
        )),
        Some(v) => out.push(ok(format!("fs.nr_open = {v}"))),
        None => {}
    }
    let files_needed = n + n / 10 + 1024;
    match facts.file_max {
        Some(v) if v < files_needed => out.push(bad(
            Level::Fail,
            format!("fs.file-max = {v}: the system cannot open {files_needed} files"),
            format!("sysctl fs.file-max={}", (files_needed * 2).max(2_097_152)),
        )),
        Some(v) => out.push(ok(format!("fs.file-max = {v}"))),
        None => {}
    }
}

/// Listen backlog, ephemeral ports and TCP socket memory.
fn check_network(out: &mut Vec<Finding>, facts: &HostFacts, n: u64, backlog: u64) {
    for (name, value) in [
        ("net.core.somaxconn", facts.somaxconn),
        ("net.ipv4.tcp_max_syn_backlog", facts.tcp_max_syn_backlog),
    ] {
        match value {
            Some(v) if v < backlog => out.push(bad(
                Level::Warn,
                format!("{name} = {v} caps the listen backlog under engine.backlog = {backlog} (reconnect storms overflow it)"),
                format!("sysctl {name}={backlog}"),
            )),
            Some(v) => out.push(ok(format!("{name} = {v}"))),
            None => {}
        }
    }
    if let Some((lo, hi)) = facts.ip_local_port_range {
        let ports = hi.saturating_sub(lo) + 1;
        // Only clients and proxies on this host use ephemeral ports towards ringwire.
        if ports < 28_000 {
            out.push(bad(
                Level::Warn,
                format!("net.ipv4.ip_local_port_range = {lo} {hi}: {ports} ports per source address for a local proxy or load tester"),
                "sysctl net.ipv4.ip_local_port_range=\"1024 65535\" (a proxy needs one port per upstream connection and source address)".into(),
            ));
        } else {
            out.push(ok(format!(
                "net.ipv4.ip_local_port_range = {lo} {hi} ({ports} ports per source address; a local proxy needs several source addresses beyond that)"
            )));
        }
    }
    if let Some(high) = facts.tcp_mem_high_pages {
        let need_pages = n * 2 * 4096 / facts.page_size.max(1);
        if high < need_pages {
            out.push(bad(
                Level::Warn,
                format!("net.ipv4.tcp_mem high = {high} pages: under {need_pages} pages (8 KiB of socket buffers per connection)"),
                format!("sysctl net.ipv4.tcp_mem=\"{} {} {}\"", need_pages / 2, need_pages * 3 / 4, need_pages),
            ));
        } else {
            out.push(ok(format!("net.ipv4.tcp_mem high = {high} pages")));
        }
    }
}

/// io_uring availability, the kernel version and the memlock limit.
fn check_kernel(out: &mut Vec<Finding>, facts: &HostFacts) {
    match (facts.io_uring_disabled, &facts.io_uring_probe) {
        (Some(2), _) => out.push(bad(
            Level::Fail,
            "kernel.io_uring_disabled = 2: io_uring is switched off".into(),
            "sysctl kernel.io_uring_disabled=0 (or 1 with kernel.io_uring_group set to ringwire's group)".into(),
        )),
        (_, Err(e)) => out.push(bad(
            Level::Fail,
            format!("io_uring unavailable here: {e}"),
            "allow io_uring: kernel.io_uring_disabled=0, and in containers a seccomp profile that permits io_uring_setup/io_uring_enter/io_uring_register".into(),
        )),
        (v, Ok(())) => out.push(ok(format!(
            "io_uring available{}",
            v.map(|v| format!(" (kernel.io_uring_disabled = {v})")).unwrap_or_default()
        ))),
    }
    if let Some((major, minor)) = facts.kernel {
        if (major, minor) < (6, 1) {
            out.push(bad(
                Level::Fail,
                format!("kernel {major}.{minor}: ringwire needs 6.1+ (MSG_RING fd passing, deferred task work, buffer rings)"),
                "upgrade the kernel to 6.1 or later".into(),
            ));
        } else {
            out.push(ok(format!("kernel {major}.{minor}")));
        }
    }
    if let Some(m) = facts.memlock_soft {
        // Kernels since 5.12 charge io_uring memory to the cgroup, not RLIMIT_MEMLOCK.
        out.push(ok(format!(
            "memlock {} (io_uring memory is charged to the memory cgroup on 5.12+)",
            if m == u64::MAX {
                "unlimited".to_string()
            } else {
                format!("{m} bytes")
            }
        )));
    }
}

/// Available memory against `n` idle connections.
fn check_memory(out: &mut Vec<Finding>, facts: &HostFacts, n: u64) {
    if let Some(avail) = facts.mem_available {
        let need = n * (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN);
        if avail < need {
            out.push(bad(
                Level::Fail,
                format!(
                    "memory: {} MiB available, {n} idle connections need about {} MiB",
                    avail >> 20,
                    need >> 20
                ),
                "add memory or spread the connections over more nodes".into(),
            ));
        } else {
            out.push(ok(format!(
                "memory: {} MiB available, about {} MiB needed for {n} idle connections",
                avail >> 20,
                need >> 20
            )));
        }
    }
}

/// Under systemd: the unit's TasksMax against ringwire's threads.
fn check_systemd(out: &mut Vec<Finding>, facts: &HostFacts, cores: u64) {
    if let Some(tasks) = facts.systemd_tasks_max {
        let threads = cores + 4;
        match tasks {
            Some(t) if t < threads => out.push(bad(
                Level::Fail,
                format!("systemd TasksMax = {t}: ringwire runs {threads} threads"),
                format!("TasksMax={} in ringwire.service", threads * 4),
            )),
            Some(t) => out.push(ok(format!("systemd TasksMax = {t}"))),
            None => out.push(ok("systemd TasksMax = infinity".into())),
        }
    }
}

/// Read the host.
pub fn read_host() -> HostFacts {
    fn sysctl(path: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/sys/{path}"))
            .ok()
            .map(|s| s.trim().to_string())
    }
    fn num(path: &str) -> Option<u64> {
        sysctl(path)?.parse().ok()
    }
    let (nofile_soft, nofile_hard) = rlimit(libc::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let ip_local_port_range = sysctl("net/ipv4/ip_local_port_range").and_then(|s| {
        let mut it = s.split_whitespace().filter_map(|v| v.parse().ok());
        Some((it.next()?, it.next()?))
    });
    let tcp_mem_high_pages = sysctl("net/ipv4/tcp_mem")
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|s| {
            let mut it = s.trim().split(['.', '-']);
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        });
    let mem_available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let systemd_tasks_max = std::env::var_os("INVOCATION_ID").map(|_| {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/pids.max")).ok()?;
        max.trim().parse().ok()
    });
    HostFacts {
        nofile_soft,
        nofile_hard,
        file_max: num("fs/file-max"),
        nr_open: num("fs/nr_open"),
        somaxconn: num("net/core/somaxconn"),
        tcp_max_syn_backlog: num("net/ipv4/tcp_max_syn_backlog"),
        ip_local_port_range,
        tcp_mem_high_pages,
        page_size: 4096,
        io_uring_disabled: num("kernel/io_uring_disabled"),
        io_uring_probe: io_uring::IoUring::new(8)
            .map(drop)
            .map_err(|e| e.to_string()),
        kernel,
        memlock_soft: rlimit(libc::RLIMIT_MEMLOCK).map(|(s, _)| s),
        mem_available,
        cpus: crate::runtime::available_cpus(),
        systemd_tasks_max,
        conntrack_max: num("net/netfilter/nf_conntrack_max"),
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    // SAFETY: getrlimit writes into a local, zero-initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(resource, &mut lim) == 0).then_some((lim.rlim_cur, lim.rlim_max))
    }
}

/// The report as JSON (`ringwire doctor --json`): `{"connections", "ready", "findings":
/// [{"level": "ok"|"warn"|"fail", "what", "change"}]}`; returns (json, ready).
pub fn report_json(facts: &HostFacts, n: u64, config: &Config) -> (serde_json::Value, bool) {
    let findings = assess(facts, n, config);
    let ready = findings.iter().all(|f| f.level != Level::Fail);
    let list: Vec<_> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "level": match f.level {
                    Level::Ok => "ok",
                    Level::Warn => "warn",
                    Level::Fail => "fail",
                },
                "what": f.what,
                "change": f.change,
            })
        })
        .collect();
    (
        serde_json::json!({"connections": n, "ready": ready, "findings": list}),
        ready,
    )
}

/// The report printed by `ringwire doctor`; returns (text, ready).
pub fn report(facts: &HostFacts, n: u64, config: &Config) -> (String, bool) {
    let findings = assess(facts, n, config);
    let mut text = format!("ringwire doctor: this host for {n} connections\n");
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(text, "{tag} {}", f.what);
        if !f.change.is_empty() {
            let _ = writeln!(text, "     change: {}", f.change);
        }
    }
    let fails = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = findings.iter().filter(|f| f.level == Level::Warn).count();
    if fails == 0 {
        let _ = writeln!(
            text,
            "ready for {n} connections{}",
            if warns > 0 {
                format!(" ({warns} warnings)")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            text,
            "NOT ready for {n} connections: {fails} change(s) needed, {warns} warning(s); see tuning/README.md"
        );
    }
    (text, fails == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            nofile_soft: 20_000,
            nofile_hard: 20_000,
            file_max: Some(9_223_372_036_854_775_807),
            nr_open: Some(1_048_576),
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(4096),
            ip_local_port_range: Some((32768, 60999)),
            tcp_mem_high_pages: Some(6_000_000),
            page_size: 4096,
            io_uring_disabled: Some(0),
            io_uring_probe: Ok(()),
            kernel: Some((6, 8)),
            memlock_soft: Some(8 << 20),
            mem_available: Some(24 << 30),
            cpus: 2,
            systemd_tasks_max: None,
            conntrack_max: None,
        }
    }

    fn fails(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.level == Level::Fail)
            .map(|f| f.what.as_str())
            .collect()
    }

    #[test]
    fn a_small_conntrack_table_fails_and_json_says_so() {
        let mut h = host();
        h.conntrack_max = Some(65_536);
        let (json, ready) = report_json(&h, 100_000, &Config::default());
        assert!(!ready);
        let conntrack: Vec<_> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["what"].as_str().unwrap().contains("nf_conntrack_max"))
            .collect();
        assert_eq!(conntrack.len(), 1);
        assert_eq!(conntrack[0]["level"], "fail");
        assert!(conntrack[0]["change"]
            .as_str()
            .unwrap()
            .contains("nf_conntrack_max=200000"));
        h.conntrack_max = Some(150_000);
        let f = assess(&h, 100_000, &Config::default());
        assert!(f
            .iter()
            .any(|f| f.level == Level::Warn && f.what.contains("nf_conntrack_max")));
        h.conntrack_max = Some(200_000);
        let f = assess(&h, 100_000, &Config::default());
        let conntrack: Vec<_> = f
            .iter()
            .filter(|f| f.what.contains("nf_conntrack_max"))
            .collect();
        assert_eq!(conntrack.len(), 1);
        assert_eq!(conntrack[0].level, Level::Ok);
    }

    #[test]
    fn small_counts_fit_a_20k_limit() {
        let f = assess(&host(), 30_000, &Config::default());
        assert!(fails(&f).is_empty(), "{f:?}");
    }

    #[test]
    fn a_million_needs_the_limit_raised() {
        let (text, ready) = report(&host(), 1_000_000, &Config::default());
        assert!(!ready);
        assert!(text.contains("hard limit 20000"), "{text}");
        assert!(text.contains("LimitNOFILE="), "{text}");
        // 1M / 2 cores = 500k per core (+ 5 x 708 for the spread), under the 2^20 ring cap.
        assert!(text.contains("503664"), "{text}");
        // More rings would hold it too: how many, and the count itself (not a placeholder).
        assert!(
            text.contains("server.cores = 53 holds 1000000 with this limit"),
            "{text}"
        );
    }

    #[test]
    fn rings_are_sized_for_the_busiest_core() {
        // The spread of the real placement: users 1..=1M of context 1 over 51 cores put
        // 20,194 on the busiest, over the 19,936 slots a 20,000 table leaves; 53 cores fit.
        let on = |cores: u64| {
            let mut count = vec![0u64; cores as usize];
            for user in 1..=1_000_000u32 {
                let core = crate::service::placement::owner_core(
                    crate::service::placement::user_key(1, &user.into()),
                    cores as usize,
                );
                count[core] += 1;
            }
            count.into_iter().max().unwrap_or(0)
        };
        assert!(on(51) > 20_000 - 64, "51 cores: {}", on(51));
        assert!(busiest_core(1_000_000, 51) > 20_000 - 128);
        let c = cores_needed(1_000_000, 20_000, 64).unwrap();
        assert_eq!(c, 53);
        assert!(on(c) <= 20_000 - 128, "{c} cores: {}", on(c));
        let mut config = Config::default();
        config.server.cores = 51;
        let f = assess(&host(), 1_000_000, &config);
        assert!(
            !fails(&f).is_empty(),
            "51 cores must not pass for 1M: {f:?}"
        );
        config.server.cores = 64;
        let f = assess(&host(), 1_000_000, &config);
        assert!(
            !f.iter()
                .any(|x| x.level == Level::Fail && x.what.starts_with("open files")),
            "{f:?}"
        );
    }

    #[test]
    fn io_uring_off_and_old_kernels_fail() {
        let mut h = host();
        h.io_uring_disabled = Some(2);
        h.kernel = Some((5, 15));
        let f = assess(&h, 10, &Config::default());
        let fails = fails(&f);
        assert!(
            fails.iter().any(|w| w.contains("io_uring_disabled")),
            "{fails:?}"
        );
        assert!(fails.iter().any(|w| w.contains("kernel 5.15")), "{fails:?}");
    }

    #[test]
    fn backlog_and_tasks() {
        let mut h = host();
        h.somaxconn = Some(128);
        h.systemd_tasks_max = Some(Some(3));
        let f = assess(&h, 10, &Config::default());
        assert!(f
            .iter()
            .any(|f| f.level == Level::Warn && f.what.contains("somaxconn")));
        assert!(fails(&f).iter().any(|w| w.contains("TasksMax")));
    }
}

//! What the memory examples share (not an example itself: cargo builds only
//! `examples/*.rs` and `examples/*/main.rs` as examples).

/// Resident memory of this process, in bytes (`/proc/self/statm`, 4 KiB pages).
pub fn rss() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

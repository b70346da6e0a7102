//! The latency histograms' clock: nanoseconds, comparable across cores. On x86-64 with the
//! kernel's own clocksource on the TSC (constant and synchronized across cores, so the kernel
//! trusts it), the TSC read directly (`rdtsc`, about 8 ns) and scaled by a factor calibrated
//! once against CLOCK_MONOTONIC at engine start; otherwise CLOCK_MONOTONIC (vDSO, about 20 to
//! 40 ns). A loop turn reads it twice, so the cheaper read keeps the histograms' cost far under
//! the cost of the pushes they time (`benches/push.rs`).
use std::sync::OnceLock;

struct Tsc {
    /// TSC and CLOCK_MONOTONIC ns at calibration.
    tsc0: u64,
    mono0: u64,
    /// ns per TSC tick, in 32.32 fixed point.
    mult: u64,
}

static TSC: OnceLock<Option<Tsc>> = OnceLock::new();

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a register; it has no memory effect and exists on every x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

fn kernel_uses_tsc() -> bool {
    cfg!(target_arch = "x86_64")
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

/// Calibrate once (10 ms) before the cores start; later calls return at once.
pub fn calibrate() {
    TSC.get_or_init(|| {
        if !kernel_uses_tsc() {
            return None;
        }
        let (t1, m1) = (rdtsc(), super::sys::monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(10));
        let (t2, m2) = (rdtsc(), super::sys::monotonic_ns());
        let (ticks, ns) = (t2.checked_sub(t1)?, m2.checked_sub(m1)?);
        // A TSC between 100 MHz and 20 GHz, or the reads were not what we think.
        if ticks == 0 || ns == 0 || ticks < ns / 10 || ticks > ns * 20 {
            return None;
        }
        let mult = u64::try_from((u128::from(ns) << 32) / u128::from(ticks)).ok()?;
        Some(Tsc {
            tsc0: t2,
            mono0: m2,
            mult,
        })
    });
}

/// Now, in ns (CLOCK_MONOTONIC's origin).
#[inline]
pub fn now_ns() -> u64 {
    match TSC.get() {
        Some(Some(c)) => {
            let ticks = rdtsc().wrapping_sub(c.tsc0);
            c.mono0 + ((u128::from(ticks) * u128::from(c.mult)) >> 32) as u64
        }
        _ => super::sys::monotonic_ns(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_monotonic_clock() {
        calibrate();
        let (a, m1) = (now_ns(), crate::runtime::sys::monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (b, m2) = (now_ns(), crate::runtime::sys::monotonic_ns());
        assert!(b > a);
        // Within 2% of the elapsed monotonic time, and of its origin.
        let (got, want) = ((b - a) as f64, (m2 - m1) as f64);
        assert!((got - want).abs() < want * 0.02, "{got} vs {want}");
        assert!((a as f64 - m1 as f64).abs() < 5e6, "{a} vs {m1}");
    }
}

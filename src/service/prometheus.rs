//! Prometheus text: one metric, its help and type lines and its series.
use std::fmt::Write;

/// Appends metric `name` of `kind` (counter, gauge) with `help` and one line per series
/// (`labels` is `""` or `{key="value",...}`).
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, series: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

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

/// One unlabelled series with a float value (seconds, ...).
pub fn metric_f64(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The series of one histogram: cumulative `_bucket` lines for the finite bounds `le` (in
/// seconds) of `counts` (not cumulative; one more count than bounds, the `+Inf` one), then
/// `_sum` (seconds) and `_count`. `labels` is `""` or `key="value",...` (no braces). The
/// `# HELP`/`# TYPE` lines are the caller's (once per metric).
pub fn histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    le: impl Iterator<Item = f64>,
    counts: &[u64],
    sum_secs: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut total = 0u64;
    for (bound, n) in le.zip(counts) {
        total += n;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {total}");
    }
    total = counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
    let braces = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{{{s}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum_secs}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let mut out = String::new();
        histogram_series(
            &mut out,
            "x_seconds",
            "",
            [0.5, 1.0].into_iter(),
            &[1, 2, 3],
            4.25,
        );
        assert_eq!(
            out,
            "x_seconds_bucket{le=\"0.5\"} 1\nx_seconds_bucket{le=\"1\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 6\nx_seconds_sum 4.25\nx_seconds_count 6\n"
        );
        out.clear();
        histogram_series(&mut out, "y", "core=\"1\"", [0.5].into_iter(), &[0, 2], 0.0);
        assert!(out.starts_with(
            "y_bucket{core=\"1\",le=\"0.5\"} 0\ny_bucket{core=\"1\",le=\"+Inf\"} 2\n"
        ));
        assert!(out.ends_with("y_sum{core=\"1\"} 0\ny_count{core=\"1\"} 2\n"));
    }
}

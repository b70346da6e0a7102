//! SVG plot of a run: open connections over time and, if messages were echoed,
//! the per-interval latency percentiles; push rates; reconnects (churn, storm).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::{Report, TimelineSample};

/// (name, value of a timeline sample, colour) of one latency line.
type Series = (&'static str, fn(&TimelineSample) -> Option<f64>, RGBColor);

pub fn write_svg(path: &Path, report: &Report) -> Result<()> {
    draw(path, report).with_context(|| format!("writing plot {}", path.display()))
}

fn draw(path: &Path, report: &Report) -> Result<()> {
    let tl = &report.timeline;
    let has_latency = tl.iter().any(|s| s.p99_ms.is_some());
    let has_push = tl.iter().any(|s| s.push_received.is_some());
    let has_reconnects = tl.iter().any(|s| s.reconnects.is_some());
    let has_rss = tl.iter().any(|s| s.server_rss_bytes.is_some());
    let has_cpu = tl.iter().any(|s| s.host_cpu_busy_pct.is_some());
    let panels = 1
        + u32::from(has_latency)
        + u32::from(has_push)
        + u32::from(has_reconnects)
        + u32::from(has_rss)
        + u32::from(has_cpu);
    let height = 420 * panels;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut areas = root.split_evenly((panels as usize, 1)).into_iter();
    let top = areas.next().expect("one panel at least");
    let bottom = if has_latency { areas.next() } else { None };
    let push_area = if has_push { areas.next() } else { None };
    let reconnect_area = if has_reconnects { areas.next() } else { None };
    let rss_area = if has_rss { areas.next() } else { None };
    let cpu_area = if has_cpu { areas.next() } else { None };

    let t_max = tl.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    draw_connections(&top, report, t_max)?;
    if let Some(area) = bottom {
        draw_latency(&area, tl, t_max, has_push)?;
    }
    if let Some(area) = push_area {
        draw_push_rates(&area, tl, t_max)?;
    }
    if let Some(area) = reconnect_area {
        draw_reconnects(&area, tl, t_max)?;
    }
    if let Some(area) = rss_area {
        let rss: Vec<(f64, f64)> = tl
            .iter()
            .filter_map(|s| Some((s.t, s.server_rss_bytes? as f64 / (1 << 20) as f64)))
            .collect();
        draw_lines(
            &area,
            "server memory: RSS of --server-pid",
            "MiB",
            t_max,
            &[("server RSS (MiB)", &rss, RGBColor(120, 60, 170))],
        )?;
    }
    if let Some(area) = cpu_area {
        let pct = |get: fn(&TimelineSample) -> Option<f64>| -> Vec<(f64, f64)> {
            tl.iter().filter_map(|s| Some((s.t, get(s)?))).collect()
        };
        let busy = pct(|s| s.host_cpu_busy_pct);
        let steal = pct(|s| s.host_cpu_steal_pct);
        draw_lines(
            &area,
            "host CPU (all processes): busy and stolen, % per 250 ms interval",
            "%",
            t_max,
            &[
                ("host CPU busy %", &busy, RGBColor(200, 30, 30)),
                ("steal %", &steal, RGBColor(120, 120, 120)),
            ],
        )?;
    }
    root.present()?;
    Ok(())
}

/// Open connections and failed attempts (cumulative) over time.
fn draw_connections(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    t_max: f64,
) -> Result<()> {
    let tl = &report.timeline;
    let c_max = tl
        .iter()
        .map(|s| s.connected.max(s.failed))
        .max()
        .unwrap_or(0)
        .max(report.connections.requested)
        .max(1) as f64
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} — connections over time", report.target),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..c_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("connections")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let open: Vec<_> = tl.iter().map(|s| (s.t, s.connected as f64)).collect();
    let failed: Vec<_> = tl.iter().map(|s| (s.t, s.failed as f64)).collect();
    lines_with_legend(
        &mut chart,
        &[
            ("open", &open, BLUE),
            ("failed attempts (cumulative)", &failed, RED),
        ],
        SeriesLabelPosition::LowerRight,
    )?;
    Ok(())
}

/// Echo round trip or push end-to-end latency: p50, p99 and max per 250 ms interval.
fn draw_latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    tl: &[TimelineSample],
    t_max: f64,
    has_push: bool,
) -> Result<()> {
    let l_max = tl
        .iter()
        .filter_map(|s| s.max_ms)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(
            if has_push {
                "push end-to-end latency per 250 ms interval"
            } else {
                "round-trip latency per 250 ms interval"
            },
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..l_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .draw()?;
    let series: [Series; 3] = [
        ("p50", |s| s.p50_ms, GREEN),
        ("p99", |s| s.p99_ms, MAGENTA),
        ("max", |s| s.max_ms, RGBColor(150, 150, 150)),
    ];
    let points: Vec<Vec<_>> = series
        .iter()
        .map(|(_, get, _)| tl.iter().filter_map(|s| get(s).map(|v| (s.t, v))).collect())
        .collect();
    let lines: Vec<Line<'_>> = series
        .iter()
        .zip(&points)
        .map(|(&(name, _, color), points)| (name, points, color))
        .collect();
    lines_with_legend(&mut chart, &lines, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// `(t, rate per second)` between consecutive samples of a cumulative counter.
fn rate_of(tl: &[TimelineSample], get: fn(&TimelineSample) -> Option<u64>) -> Vec<(f64, f64)> {
    tl.windows(2)
        .filter_map(|w| {
            let (a, b) = (get(&w[0])?, get(&w[1])?);
            let dt = w[1].t - w[0].t;
            (dt > 0.0).then(|| (w[1].t, b.saturating_sub(a) as f64 / dt))
        })
        .collect()
}

/// Churn and storm: reconnects done/s, failed reconnect attempts/s, and the connections
/// reconnecting at each sample.
fn draw_reconnects(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    tl: &[TimelineSample],
    t_max: f64,
) -> Result<()> {
    let done = rate_of(tl, |s| s.reconnects);
    let failed = rate_of(tl, |s| s.reconnect_failed);
    let reconnecting: Vec<(f64, f64)> = tl
        .iter()
        .filter_map(|s| s.reconnecting.map(|v| (s.t, v as f64)))
        .collect();
    draw_lines(
        area,
        "reconnects: done and failed attempts per second, connections reconnecting",
        "per second / connections",
        t_max,
        &[
            ("reconnects/s", &done, BLUE),
            ("failed attempts/s", &failed, RED),
            ("reconnecting", &reconnecting, RGBColor(230, 140, 0)),
        ],
    )
}

/// Per-interval rates of the push scenario: messages delivered/s and pushes accepted/s.
fn draw_push_rates(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    tl: &[TimelineSample],
    t_max: f64,
) -> Result<()> {
    let delivered = rate_of(tl, |s| s.push_received);
    let accepted = rate_of(tl, |s| s.pushes_accepted);
    draw_lines(
        area,
        "push: messages delivered and pushes accepted per second (250 ms intervals)",
        "per second",
        t_max,
        &[
            ("messages delivered/s", &delivered, BLUE),
            ("pushes accepted/s", &accepted, RGBColor(230, 140, 0)),
        ],
    )
}

/// A named line: its points (t, value) and colour.
type Line<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// A panel of named line series over time, y axis from 0 to just above the largest value.
fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    t_max: f64,
    series: &[Line<'_>],
) -> Result<()> {
    let y_max = series
        .iter()
        .flat_map(|(_, points, _)| points.iter())
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    lines_with_legend(&mut chart, series, SeriesLabelPosition::UpperRight)
}

/// A panel's chart: time (s) on x, values on y.
type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws named lines (name, points (t, value), colour) on `chart`, and their legend at
/// `position`.
fn lines_with_legend<'a, 'b: 'a>(
    chart: &mut TimeChart<'a, 'b>,
    lines: &[Line<'_>],
    position: SeriesLabelPosition,
) -> Result<()> {
    for &(name, points, color) in lines {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    Ok(())
}

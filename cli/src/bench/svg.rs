//! The chart of a `keel bench wal --sweep`: throughput (top) and p99 append latency
//! (bottom) against the number of writers on a log scale, one line per backend,
//! written as an SVG file.

use std::path::Path;

use plotters::prelude::*;

use super::WalRow;
use crate::error::{CliError, Result};

const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 900;

fn color(backend: &str) -> RGBColor {
    match backend {
        "raw" => RGBColor(120, 120, 120),
        "wal" => RGBColor(31, 119, 180),
        _ => RGBColor(214, 39, 40),
    }
}

/// 1, 2, 5 × powers of ten between `lo` and `hi`.
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 1.0;
    // Bounded: 20 decades cover every latency in µs a run can report.
    for _ in 0..20 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * decade;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

// One line with a dot at each measured point per backend, then the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    backends: &[&'static str],
    series: impl Fn(&str) -> Vec<(f64, f64)>,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for &b in backends {
        let c = color(b);
        let pts = series(b);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(b)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Draws `rows` (any order) into an SVG file at `path`.
pub fn draw_sweep(path: &Path, rows: &[WalRow], size: usize) -> Result<()> {
    draw(path, rows, size).map_err(|reason| CliError::WriteFile {
        path: path.to_path_buf(),
        reason,
    })
}

fn draw(path: &Path, rows: &[WalRow], size: usize) -> std::result::Result<(), String> {
    if rows.is_empty() {
        return Err("no results to draw".into());
    }
    let mut backends: Vec<&'static str> = rows.iter().map(|r| r.backend).collect();
    backends.sort_unstable();
    backends.dedup();
    let series = |backend: &str, y: fn(&WalRow) -> f64| {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.backend == backend)
            .map(|r| (r.writers as f64, y(r).max(1e-3)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    let max_writers = rows.iter().map(|r| r.writers).max().unwrap_or(1) as f64;
    let min_writers = rows.iter().map(|r| r.writers).min().unwrap_or(1) as f64;
    let x_range = min_writers * 0.8..(max_writers * 1.25).max(min_writers * 2.0);
    // Ticks at the writer counts measured, not at every power of ten's subdivisions.
    let mut ticks: Vec<f64> = rows.iter().map(|r| r.writers as f64).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let max_ops = rows.iter().map(|r| r.ops_per_sec).fold(1.0, f64::max);
    let p99 = rows.iter().map(|r| r.p99_us.max(1.0));
    let (min_p99, max_p99) = p99.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));

    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(HEIGHT_PX / 2);

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("keel bench wal: synced {size} B appends, throughput"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            x_range.clone().log_scale().with_key_points(ticks.clone()),
            0.0..max_ops * 1.1,
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("writers (log scale)")
        .y_desc("entries/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_lines(&mut chart, &backends, |b| series(b, |r| r.ops_per_sec))?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption("p99 append latency", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            x_range.log_scale().with_key_points(ticks),
            (min_p99 * 0.8..max_p99 * 1.25)
                .log_scale()
                .with_key_points(ticks_125(min_p99 * 0.8, max_p99 * 1.25)),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("writers (log scale)")
        .y_desc("p99 µs (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_lines(&mut chart, &backends, |b| series(b, |r| r.p99_us.max(1.0)))?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

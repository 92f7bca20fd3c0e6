//! `ready.png`: Ready tenants over time, one line per phase (floor, berth, kro).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::Curves;

/// Candidate TrueType fonts for the chart's text (`BENCH_FONT` first).
const FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font as plotters' "sans-serif"; false when none is found (the chart then has
/// no text).
fn register_font() -> bool {
    let candidates = std::env::var("BENCH_FONT")
        .ok()
        .into_iter()
        .chain(FONTS.iter().map(|s| (*s).to_owned()));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Cumulative step curve: (t, tenants ready by t), starting at (0, 0).
fn steps(ready: &[f64]) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0)];
    for (i, t) in ready.iter().enumerate() {
        out.push((*t, i as f64));
        out.push((*t, (i + 1) as f64));
    }
    out
}

/// The floor in blue, berth in red, kro in green (when it ran).
pub fn phases(path: &Path, n: usize, curves: &Curves) -> anyhow::Result<()> {
    let floor = ("floor", RGBColor(31, 119, 180), curves.floor.as_slice());
    let berth = ("berth", RGBColor(214, 39, 40), curves.berth.as_slice());
    let kro = ("kro", RGBColor(44, 160, 44), curves.kro.as_slice());
    if curves.kro.is_empty() {
        plot(path, n, &[floor, berth])
    } else {
        plot(path, n, &[floor, berth, kro])
    }
}

/// Ready tenants over time, one line per phase (`ready` times sorted ascending).
pub fn plot(path: &Path, n: usize, series: &[(&str, RGBColor, &[f64])]) -> anyhow::Result<()> {
    let text = register_font();
    let x_max = series
        .iter()
        .filter_map(|(_, _, r)| r.last().copied())
        .fold(1.0_f64, f64::max)
        * 1.05;
    let y_max = (n as f64 * 1.05).max(1.0);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                format!(
                    "Ready tenants over time, N = {n}: {}",
                    series
                        .iter()
                        .map(|(name, _, _)| *name)
                        .collect::<Vec<_>>()
                        .join(" vs ")
                ),
                ("sans-serif", 24),
            )
            .x_label_area_size(50)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since the phase started")
            .y_desc("tenants Ready")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&|v| format!("{v:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| anyhow!("{e}"))?;
    for (name, color, ready) in series {
        let color = *color;
        let drawn = chart
            .draw_series(LineSeries::new(steps(ready), color.stroke_width(3)))
            .map_err(|e| anyhow!("{e}"))?;
        if text {
            drawn
                .label(format!("{name} ({} ready)", ready.len()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .label_font(("sans-serif", 18))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

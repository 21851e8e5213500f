//! The three figures of a benchmark sweep (quality over wall time, the time split per clock,
//! bytes against final quality), each written as PNG and SVG with `plotters`. Self-contained:
//! the sweep driver hands it plain numbers and labels.
//!
//! Text needs a font: [`font`] loads a TrueType face from the usual system paths (or
//! `$PS_PLOT_FONT`). Without one only the SVGs are written (a viewer renders their text) and
//! [`draw_all`] returns [`PlotError::NoFont`] naming them. Non-finite values are skipped, empty
//! inputs give empty but valid figures, degenerate ranges are widened, long labels truncated.

mod font;
mod look;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use font::{FontState, FontlessSvg};
use look::*;

/// One configuration's quality over time (one run, or the median run of its repeats).
pub struct QualitySeries {
    pub label: String,
    /// (wall seconds since the job started, metric value)
    pub points: Vec<(f64, f64)>,
}

/// One configuration's time split, seconds per clock averaged over clocks and workers.
pub struct TimeSplit {
    pub label: String,
    pub compute_s: f64,
    pub comm_s: f64,
    pub blocked_s: f64,
}

/// One configuration's bytes pushed+pulled and final quality.
pub struct BytesQuality {
    pub label: String,
    pub bytes: f64,
    pub quality: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write figure {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw figure {path}: {message}")]
    Draw { path: PathBuf, message: String },
    /// No font was found, so no PNG could be drawn; the SVGs in `written` were (their text is
    /// rendered by whatever views them). Callers may treat this as a warning.
    #[error(
        "no TrueType font found (set {env} to a .ttf file; tried {tried:?}): wrote only the SVG \
         figures {written:?}, no PNGs",
        env = font::FONT_ENV
    )]
    NoFont {
        tried: Vec<PathBuf>,
        written: Vec<PathBuf>,
    },
}

/// Writes quality_vs_wall.{png,svg}, time_split.{png,svg}, bytes_vs_quality.{png,svg} into `dir`
/// (which exists); `metric` names the y axis (e.g. "test_rmse"), `lower_is_better` says which way
/// is good (for a note in the title), `target` draws a horizontal dashed line at the target value
/// on the quality plot when given. Returns the paths written.
///
/// Where no font is found ([`PlotError::NoFont`]) the three SVGs are still written.
pub fn draw_all(
    dir: &Path,
    metric: &str,
    lower_is_better: bool,
    target: Option<f64>,
    series: &[QualitySeries],
    splits: &[TimeSplit],
    points: &[BytesQuality],
) -> Result<Vec<PathBuf>, PlotError> {
    let have_font = matches!(font::ensure_font(), FontState::Loaded(_));
    let written = draw_all_with(
        dir,
        have_font,
        metric,
        lower_is_better,
        target,
        series,
        splits,
        points,
    )?;
    match font::ensure_font() {
        FontState::Loaded(font) => {
            tracing::debug!(font = %font.display(), "plots drawn");
            Ok(written)
        }
        FontState::Missing(tried) => Err(PlotError::NoFont {
            tried: tried.clone(),
            written,
        }),
    }
}

/// [`draw_all`] with the font's presence given: without one, SVGs only.
#[allow(clippy::too_many_arguments)]
fn draw_all_with(
    dir: &Path,
    have_font: bool,
    metric: &str,
    lower_is_better: bool,
    target: Option<f64>,
    series: &[QualitySeries],
    splits: &[TimeSplit],
    points: &[BytesQuality],
) -> Result<Vec<PathBuf>, PlotError> {
    let metric = truncate(metric, 40);
    let better = if lower_is_better { "lower" } else { "higher" };
    let target = target.filter(|t| plottable(*t));
    // One style per configuration label, shared by the quality and bytes figures.
    let mut labels: Vec<String> = Vec::new();
    for l in series
        .iter()
        .take(MAX_ENTRIES)
        .map(|s| &s.label)
        .chain(points.iter().take(MAX_ENTRIES).map(|p| &p.label))
    {
        let l = truncate(l, MAX_LABEL);
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let style_of = |label: &str| {
        let l = truncate(label, MAX_LABEL);
        labels.iter().position(|x| *x == l).unwrap_or(0)
    };
    let quality = QualityFig {
        title: format!("{metric} vs wall time ({better} is better)"),
        metric: metric.clone(),
        target,
        lines: series
            .iter()
            .take(MAX_ENTRIES)
            .map(|s| {
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| plottable(*x) && plottable(*y))
                    .collect();
                Line {
                    style: style_of(&s.label),
                    label: truncate(&s.label, MAX_LABEL),
                    points: pts,
                }
            })
            .collect(),
    };
    let split = SplitFig {
        title: format!("Time per clock, s (mean over clocks and workers; sweep on {metric})"),
        rows: splits
            .iter()
            .take(MAX_ENTRIES)
            .map(|s| {
                let ok = |v: f64| if plottable(v) && v > 0.0 { v } else { 0.0 };
                let label = truncate(&s.label, MAX_LABEL);
                (label, ok(s.compute_s), ok(s.blocked_s), ok(s.comm_s))
            })
            .collect(),
    };
    let bytes = BytesFig {
        title: format!("final {metric} vs bytes pushed + pulled ({better} is better)"),
        metric,
        target,
        points: points
            .iter()
            .take(MAX_ENTRIES)
            .filter(|p| plottable(p.bytes) && p.bytes >= 1.0 / MAX_ABS && plottable(p.quality))
            .map(|p| {
                let l = truncate(&p.label, MAX_LABEL);
                (style_of(&p.label), l, p.bytes, p.quality)
            })
            .collect(),
    };
    let mut written = Vec::new();
    write_figure(dir, "quality_vs_wall", &quality, have_font, &mut written)?;
    write_figure(dir, "time_split", &split, have_font, &mut written)?;
    write_figure(dir, "bytes_vs_quality", &bytes, have_font, &mut written)?;
    Ok(written)
}

/// A figure that can draw itself on any backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB>;
}

fn write_figure<F: Figure>(
    dir: &Path,
    stem: &str,
    fig: &F,
    have_font: bool,
    written: &mut Vec<PathBuf>,
) -> Result<(), PlotError> {
    let size = fig.size();
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    guarded(&svg_path, || {
        let backend = SVGBackend::with_string(&mut svg, size);
        if have_font {
            render(fig, backend.into_drawing_area())
        } else {
            render(fig, FontlessSvg(backend).into_drawing_area())
        }
    })?;
    std::fs::write(&svg_path, svg).map_err(|source| PlotError::Io {
        path: svg_path.clone(),
        source,
    })?;
    written.push(svg_path);
    if have_font {
        let png_path = dir.join(format!("{stem}.png"));
        guarded(&png_path, || {
            render(fig, BitMapBackend::new(&png_path, size).into_drawing_area())
        })?;
        written.push(png_path);
    }
    Ok(())
}

fn render<F: Figure, DB: DrawingBackend>(
    fig: &F,
    root: DrawingArea<DB, Shift>,
) -> Result<(), String> {
    fig.draw(&root).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Runs a drawing, turning its error or a panic inside plotters into a [`PlotError`].
fn guarded(path: &Path, f: impl FnOnce() -> Result<(), String>) -> Result<(), PlotError> {
    let message = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(message)) => message,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("plotters panicked: {what}")
        }
    };
    Err(PlotError::Draw {
        path: path.to_path_buf(),
        message,
    })
}

/// One configuration's line: its style index, label and finite points.
struct Line {
    style: usize,
    label: String,
    points: Vec<(f64, f64)>,
}

struct QualityFig {
    title: String,
    metric: String,
    target: Option<f64>,
    lines: Vec<Line>,
}

/// A figure's title, with the target line named when there is one.
fn with_target(title: &str, target: Option<f64>) -> String {
    match target {
        Some(t) => format!("{title}; dashed line: target {}", fmt_num(t)),
        None => title.to_string(),
    }
}

impl Figure for QualityFig {
    fn size(&self) -> (u32, u32) {
        (1200, 700.max(100 + ROW_H * self.lines.len() as u32))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(&with_target(&self.title, self.target), text(22))?;
        let entries: Vec<(usize, String)> = self
            .lines
            .iter()
            .map(|l| (l.style, l.label.clone()))
            .collect();
        let (w, _) = body.dim_in_pixel();
        let legend_w = if entries.is_empty() {
            0
        } else {
            legend_width(root, &entries)?
        };
        let (plot, legend) = body.split_horizontally(w.saturating_sub(legend_w));
        let all = self.lines.iter().flat_map(|l| l.points.iter());
        let (x0, x1) = padded(all.clone().map(|p| p.0));
        let (y0, y1) = padded(all.map(|p| p.1).chain(self.target));
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("wall time since the job started (s)")
            .y_desc(self.metric.as_str())
            .label_style(text(14))
            .axis_desc_style(text(16))
            .x_label_formatter(&|v| fmt_num(*v))
            .y_label_formatter(&|v| fmt_num(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let area = chart.plotting_area();
        if let Some(t) = self.target {
            target_line(area, (x0, x1), t)?;
        }
        for Line {
            style: i,
            points: pts,
            ..
        } in &self.lines
        {
            if pts.len() > 1 {
                draw_styled_line(area, pts.clone(), *i)?;
            }
            // Markers at about eight places along the line (the only mark of a lone point).
            let step = pts.len().div_ceil(8).max(1);
            for p in pts.iter().step_by(step) {
                draw_marker(area, *p, *i, 4)?;
            }
        }
        if self.lines.iter().all(|l| l.points.is_empty()) {
            no_data(&plot)?;
        }
        draw_legend(&legend, &entries, true)
    }
}

struct SplitFig {
    title: String,
    /// (label, compute, blocked, comm), non-finite or negative values as 0
    rows: Vec<(String, f64, f64, f64)>,
}

const COMPUTE: RGBColor = RGBColor(31, 119, 180);
const BLOCKED: RGBColor = RGBColor(214, 39, 40);
const COMM: RGBColor = RGBColor(150, 150, 150);

impl Figure for SplitFig {
    fn size(&self) -> (u32, u32) {
        (1200, 360.max(170 + 30 * self.rows.len() as u32))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(&self.title, text(22))?;
        let body = body.titled(
            "thick bar: compute, then blocked (the part of comm that held compute up) stacked \
             on it; thin grey bar: all comm, which overlaps compute",
            text(15),
        )?;
        let (key, body) = body.split_vertically(34);
        let mut x = 90;
        for (name, c) in [("compute", COMPUTE), ("blocked", BLOCKED), ("comm", COMM)] {
            key.draw(&Rectangle::new([(x, 10), (x + 24, 24)], c.filled()))?;
            let style = text(15).pos(Pos::new(HPos::Left, VPos::Center));
            key.draw_text(name, &style, (x + 30, 17))?;
            x += 140;
        }
        let n = self.rows.len();
        let mut label_w_px = 0;
        for (l, ..) in &self.rows {
            label_w_px = label_w_px.max(root.estimate_text_size(l, &text(14))?.0);
        }
        let label_w_px = (label_w_px + 20).clamp(100, 520);
        let xmax = self
            .rows
            .iter()
            .map(|(_, c, b, m)| (c + b).max(*m))
            .fold(0.0, f64::max);
        let xmax = if xmax > 0.0 { xmax * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(&body)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(label_w_px)
            .build_cartesian_2d(0.0..xmax, -0.6..(n.max(1) as f64 - 0.4))?;
        chart
            .configure_mesh()
            .x_desc("seconds per clock")
            .label_style(text(14))
            .axis_desc_style(text(16))
            .x_label_formatter(&|v| fmt_num(*v))
            .y_labels(0)
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (row, (label, c, b, m)) in self.rows.iter().enumerate() {
            let y = (n - 1 - row) as f64;
            let area = chart.plotting_area();
            area.draw(&Rectangle::new(
                [(0.0, y - 0.02), (*c, y + 0.36)],
                COMPUTE.filled(),
            ))?;
            area.draw(&Rectangle::new(
                [(*c, y - 0.02), (c + b, y + 0.36)],
                BLOCKED.filled(),
            ))?;
            area.draw(&Rectangle::new(
                [(0.0, y - 0.3), (*m, y - 0.1)],
                COMM.filled(),
            ))?;
            let (px, py) = chart.backend_coord(&(c + b, y + 0.17));
            let style = text(12).pos(Pos::new(HPos::Left, VPos::Center));
            root.draw_text(&fmt_num(c + b), &style, (px + 4, py))?;
            let (lx, ly) = chart.backend_coord(&(0.0, y));
            let style = text(14).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(label, &style, (lx - 8, ly))?;
        }
        if n == 0 {
            no_data(&body)?;
        }
        Ok(())
    }
}

struct BytesFig {
    title: String,
    metric: String,
    target: Option<f64>,
    /// (style index, label, bytes > 0, quality), all finite
    points: Vec<(usize, String, f64, f64)>,
}

impl Figure for BytesFig {
    fn size(&self) -> (u32, u32) {
        (1200, 700.max(100 + ROW_H * self.points.len() as u32))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(&with_target(&self.title, self.target), text(22))?;
        let mut entries: Vec<(usize, String)> = Vec::new();
        for (i, l, ..) in &self.points {
            if !entries.iter().any(|(j, _)| j == i) {
                entries.push((*i, l.clone()));
            }
        }
        let (w, _) = body.dim_in_pixel();
        let legend_w = if entries.is_empty() {
            0
        } else {
            legend_width(root, &entries)?
        };
        let (plot, legend) = body.split_horizontally(w.saturating_sub(legend_w));
        let (blo, bhi) = self
            .points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
                (l.min(p.2), h.max(p.2))
            });
        // Whole decades, so that the log axis has its 1-2-5 labels (a span inside one decade
        // would show one or two).
        let (blo, bhi) = if blo.is_finite() && bhi.is_finite() {
            let lo = (blo / 1.2).log10().floor();
            let hi = (bhi * 1.2).log10().ceil().max(lo + 1.0);
            (10f64.powf(lo), 10f64.powf(hi))
        } else {
            (1.0, 10.0)
        };
        let (y0, y1) = padded(self.points.iter().map(|p| p.3).chain(self.target));
        let mut chart = ChartBuilder::on(&plot)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d((blo..bhi).log_scale(), y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("bytes pushed + pulled, all workers (log scale)")
            .y_desc(format!("final {}", self.metric))
            .label_style(text(14))
            .axis_desc_style(text(16))
            .x_label_formatter(&|v| fmt_bytes(*v))
            .y_label_formatter(&|v| fmt_num(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let area = chart.plotting_area();
        if let Some(t) = self.target {
            target_line(area, (blo, bhi), t)?;
        }
        for (i, _, b, q) in &self.points {
            draw_marker(area, (*b, *q), *i, 6)?;
            let (px, py) = chart.backend_coord(&(*b, *q));
            let style = text(13).pos(Pos::new(HPos::Left, VPos::Bottom));
            root.draw_text(&format!("{}", i + 1), &style, (px + 6, py - 4))?;
        }
        if self.points.is_empty() {
            no_data(&plot)?;
        }
        draw_legend(&legend, &entries, false)
    }
}

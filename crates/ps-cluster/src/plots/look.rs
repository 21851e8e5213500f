//! The figures' shared look: palette, dashes and markers per configuration, legends, text,
//! axis ranges and tick labels.

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::font::FAMILY;

/// Values beyond this magnitude are skipped like NaN: plotters maps to i32 pixels with
/// arithmetic that overflows on ranges near f64's limits.
pub(super) const MAX_ABS: f64 = 1e100;

pub(super) fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_ABS
}

/// Labels longer than this many characters are cut, with an ellipsis.
pub(super) const MAX_LABEL: usize = 40;
/// Entries past this many are left out of a figure (it would be taller than is useful).
pub(super) const MAX_ENTRIES: usize = 200;
pub(super) const ROW_H: u32 = 20;

pub(super) type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// At most `max` characters, the last an ellipsis when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Tableau 10: distinct, colour-blind-aware hues.
pub(super) const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Configuration `i`'s look: colour cycles every 10, then the dash and marker change, so the
/// first 30 are all different.
pub(super) fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}
pub(super) fn variant(i: usize) -> usize {
    (i / PALETTE.len()) % 3
}

pub(super) fn text<'a>(size: u32) -> TextStyle<'a> {
    (FAMILY, size).into_text_style(&(1u32, 1u32)).color(&BLACK)
}

/// `(lo, hi)` widened by 5%, or by a unit-ish amount when degenerate; (0, 1) when empty.
pub(super) fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| plottable(*v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs());
    if span <= scale * 1e-9 || span == 0.0 {
        let d = if scale > 0.0 { scale * 0.1 } else { 1.0 };
        return (lo - d, hi + d);
    }
    (lo - span * 0.05, hi + span * 0.05)
}

/// A tick label with about four significant digits.
pub(super) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub(super) fn fmt_bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = v;
    let mut u = 0;
    while v.abs() >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{} {}", fmt_num(v), UNITS[u])
}

/// A line from `pts` in configuration `i`'s dash (solid, dashed, dotted), in any coordinates.
pub(super) fn draw_styled_line<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    pts: Vec<CT::From>,
    i: usize,
) -> Drawn<DB>
where
    CT::From: Clone,
{
    let style = colour(i).stroke_width(2);
    match variant(i) {
        0 => area.draw(&PathElement::new(pts, style)),
        1 => area.draw(&DashedPathElement::new(pts, 9, 5, style)),
        _ => area.draw(&DashedPathElement::new(pts, 2, 4, style)),
    }
}

/// Configuration `i`'s marker (circle, triangle, square by [`variant`]) at `p`.
pub(super) fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    p: CT::From,
    i: usize,
    r: i32,
) -> Drawn<DB> {
    let fill = colour(i).filled();
    match variant(i) {
        0 => area.draw(&Circle::new(p, r, fill)),
        1 => area.draw(&TriangleMarker::new(p, r + 1, fill)),
        _ => area.draw(&(EmptyElement::at(p) + Rectangle::new([(-r, -r), (r, r)], fill))),
    }
}

/// A legend column: one row per entry, `(style index, label)`, with the line sample and/or
/// marker of that style.
pub(super) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(usize, String)],
    line: bool,
) -> Drawn<DB> {
    for (row, (i, label)) in entries.iter().enumerate() {
        let y = 30 + row as i32 * ROW_H as i32;
        if line {
            draw_styled_line(area, vec![(6, y), (40, y)], *i)?;
        }
        draw_marker(area, (23, y), *i, 4)?;
        let style = text(14).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(&format!("{}  {label}", i + 1), &style, (48, y))?;
    }
    Ok(())
}

/// Width for a legend column holding these labels.
pub(super) fn legend_width<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[(usize, String)],
) -> Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut w = 0;
    for (i, label) in entries {
        let s = format!("{}  {label}", i + 1);
        w = w.max(root.estimate_text_size(&s, &text(14))?.0);
    }
    Ok((w + 60).clamp(140, 520))
}

/// Writes "no data" in the middle of an area.
pub(super) fn no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> Drawn<DB> {
    let (w, h) = area.dim_in_pixel();
    let style = text(20).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text("no data", &style, (w as i32 / 2, h as i32 / 2))
}
/// The target: a horizontal black dashed line across `x0..x1` at `y`.
pub(super) fn target_line<DB: DrawingBackend, X: Clone, CT>(
    area: &DrawingArea<DB, CT>,
    (x0, x1): (X, X),
    y: f64,
) -> Drawn<DB>
where
    CT: CoordTranslate<From = (X, f64)>,
{
    let style = BLACK.stroke_width(2);
    area.draw(&DashedPathElement::new([(x0, y), (x1, y)], 12, 6, style))
}

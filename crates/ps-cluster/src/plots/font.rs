//! Text for the figures without system -dev packages: plotters' `ab_glyph` feature renders with a
//! TrueType font that we read at run time from the usual system locations (nothing is bundled),
//! and, where there is none, an SVG backend wrapper that measures text by a rule of thumb so the
//! SVGs can still be laid out (the viewer draws their text with its own fonts).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::SVGBackend;
use plotters::style::FontStyle;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// The family name every figure's text uses; the loaded font is registered under it.
pub(super) const FAMILY: &str = "sans-serif";

/// Environment variable naming a TTF/OTF file to use before the built-in list.
pub(super) const FONT_ENV: &str = "PS_PLOT_FONT";

/// Regular sans-serif faces at their usual paths on Debian/Ubuntu, Fedora/RHEL, Arch, SUSE,
/// Alpine, macOS and Windows.
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans-fonts/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/gnu-free/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
    "C:\\Windows\\Fonts\\segoeui.ttf",
];

/// The outcome of the one font search a process makes.
#[derive(Debug, Clone)]
pub(super) enum FontState {
    /// This file was read and registered as [`FAMILY`].
    Loaded(PathBuf),
    /// No usable font; these paths were tried.
    Missing(Vec<PathBuf>),
}

/// Finds and registers a font once per process (plotters keeps registered fonts in a global
/// table for `'static`, so the bytes of the one font found are leaked, once).
pub(super) fn ensure_font() -> &'static FontState {
    static STATE: OnceLock<FontState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut tried = Vec::new();
        let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
        for path in from_env
            .into_iter()
            .chain(CANDIDATES.iter().map(PathBuf::from))
        {
            if try_register(&path) {
                return FontState::Loaded(path);
            }
            tried.push(path);
        }
        FontState::Missing(tried)
    })
}

fn try_register(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // Parse a copy first so that a file that is not a font is not leaked.
    if ab_glyph_parses(&bytes) {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        return plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok();
    }
    false
}

/// Whether the bytes look like a TrueType/OpenType font or collection (the parse itself is
/// ab_glyph's, inside `register_font`; this only keeps arbitrary files from being leaked).
fn ab_glyph_parses(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some([0, 1, 0, 0]) | Some(b"OTTO") | Some(b"true") | Some(b"ttcf")
    )
}

/// The SVG backend with a text measure that needs no font: width 0.6 em a character.
pub(super) struct FontlessSvg<'a>(pub(super) SVGBackend<'a>);

impl DrawingBackend for FontlessSvg<'_> {
    type ErrorType = <SVGBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        // The SVG backend writes a <text> element and measures nothing.
        self.0.draw_text(text, style, pos)
    }
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        // plotters' sizes are 1.24x the SVG font-size it writes.
        let em = style.size() / 1.24;
        let width = em * 0.6 * text.chars().count() as f64;
        Ok((width.round() as u32, em.round() as u32))
    }
}

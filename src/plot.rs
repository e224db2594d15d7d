//! Figures as PNG files, drawn pixel by pixel: a tiny built-in 3x5 bitmap font ([`text`]),
//! line charts with error bars, markers and a legend ([`LineChart`]), and the training loss
//! curve built on them ([`plot_loss_curve`]). No font files and no plotting dependency, so a
//! figure comes out the same on every machine and the crate keeps its short dependency list.

use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Series colours, told apart from each other, from the near-black ink of axes and text and
/// from the white background. The first two are the loss curve's training and validation
/// colours, so other figures that show both agree with it.
pub const PALETTE: [Rgb<u8>; 6] = [
    Rgb([70, 110, 200]), // blue
    Rgb([230, 120, 30]), // orange
    Rgb([50, 160, 70]),  // green
    Rgb([200, 50, 50]),  // red
    Rgb([140, 90, 190]), // purple
    Rgb([140, 90, 60]),  // brown
];

const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Scale of all text on charts: 6x10-pixel glyphs.
const SCALE: u32 = 2;
/// Pixels between a glyph's left edge and the next one's, at scale 1 (3 inked columns + a gap).
const ADVANCE: u32 = 4;
/// Rows of a glyph at scale 1.
const GLYPH_H: u32 = 5;

/// Drawn for characters the font lacks: a small box, so a missing glyph shows up in the figure
/// instead of silently vanishing.
const MISSING: [&str; 5] = ["...", "###", "#.#", "###", "..."];

/// 3x5 glyphs, one string per row, '#' inked. Lowercase letters stand on rows 1-4 (those with
/// a descender keep their bowl on rows 1-3 and the tail on row 4); capitals, digits and most
/// signs fill all five rows.
fn glyph(c: char) -> [&'static str; 5] {
    match c {
        ' ' => ["...", "...", "...", "...", "..."],
        '0' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["###", "..#", "###", "#..", "###"],
        '3' => ["###", "..#", "###", "..#", "###"],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' => ["###", "#..", "###", "..#", "###"],
        '6' => ["###", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", "..#", "..#", "..#"],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "###"],
        'A' => [".#.", "#.#", "###", "#.#", "#.#"],
        'B' => ["##.", "#.#", "##.", "#.#", "##."],
        'C' => [".##", "#..", "#..", "#..", ".##"],
        'D' => ["##.", "#.#", "#.#", "#.#", "##."],
        'E' => ["###", "#..", "##.", "#..", "###"],
        'F' => ["###", "#..", "##.", "#..", "#.."],
        'G' => [".##", "#..", "#.#", "#.#", ".##"],
        'H' => ["#.#", "#.#", "###", "#.#", "#.#"],
        'I' => ["###", ".#.", ".#.", ".#.", "###"],
        'J' => ["..#", "..#", "..#", "#.#", ".#."],
        'K' => ["#.#", "#.#", "##.", "#.#", "#.#"],
        'L' => ["#..", "#..", "#..", "#..", "###"],
        'M' => ["#.#", "###", "###", "#.#", "#.#"],
        'N' => ["##.", "#.#", "#.#", "#.#", "#.#"],
        'O' => [".#.", "#.#", "#.#", "#.#", ".#."],
        'P' => ["##.", "#.#", "##.", "#..", "#.."],
        'Q' => [".#.", "#.#", "#.#", "##.", ".##"],
        'R' => ["##.", "#.#", "##.", "#.#", "#.#"],
        'S' => [".##", "#..", ".#.", "..#", "##."],
        'T' => ["###", ".#.", ".#.", ".#.", ".#."],
        'U' => ["#.#", "#.#", "#.#", "#.#", "###"],
        'V' => ["#.#", "#.#", "#.#", "#.#", ".#."],
        'W' => ["#.#", "#.#", "###", "###", "#.#"],
        'X' => ["#.#", "#.#", ".#.", "#.#", "#.#"],
        'Y' => ["#.#", "#.#", ".#.", ".#.", ".#."],
        'Z' => ["###", "..#", ".#.", "#..", "###"],
        'a' => ["...", "##.", ".##", "#.#", ".##"],
        'b' => ["#..", "##.", "#.#", "#.#", "##."],
        'c' => ["...", ".##", "#..", "#..", ".##"],
        'd' => ["..#", ".##", "#.#", "#.#", ".##"],
        'e' => ["...", ".#.", "###", "#..", ".##"],
        'f' => [".##", "#..", "###", "#..", "#.."],
        'g' => ["...", ".##", "#.#", ".##", "##."],
        'h' => ["#..", "##.", "#.#", "#.#", "#.#"],
        'i' => [".#.", "...", ".#.", ".#.", ".#."],
        'j' => ["..#", "...", "..#", "#.#", ".#."],
        'k' => ["#..", "#..", "#.#", "##.", "#.#"],
        'l' => ["#..", "#..", "#..", "#..", ".##"],
        'm' => ["...", "###", "###", "#.#", "#.#"],
        'n' => ["...", "##.", "#.#", "#.#", "#.#"],
        'o' => ["...", "###", "#.#", "#.#", "###"],
        'p' => ["...", "###", "#.#", "###", "#.."],
        'q' => ["...", "###", "#.#", "###", "..#"],
        'r' => ["...", ".##", "#..", "#..", "#.."],
        's' => ["...", "###", "##.", "..#", "###"],
        't' => [".#.", "###", ".#.", ".#.", ".##"],
        'u' => ["...", "#.#", "#.#", "#.#", ".##"],
        'v' => ["...", "#.#", "#.#", "#.#", ".#."],
        'w' => ["...", "#.#", "#.#", "###", "###"],
        'x' => ["...", "#.#", ".#.", ".#.", "#.#"],
        'y' => ["...", "#.#", "#.#", ".#.", "#.."],
        'z' => ["...", "###", ".#.", "#..", "###"],
        '.' => ["...", "...", "...", "...", ".#."],
        ',' => ["...", "...", "...", ".#.", "#.."],
        ':' => ["...", ".#.", "...", ".#.", "..."],
        ';' => ["...", ".#.", "...", ".#.", "#.."],
        '-' => ["...", "...", "###", "...", "..."],
        '+' => ["...", ".#.", "###", ".#.", "..."],
        '%' => ["#..", "..#", ".#.", "#..", "..#"],
        '/' => ["..#", "..#", ".#.", "#..", "#.."],
        '\\' => ["#..", "#..", ".#.", "..#", "..#"],
        '(' => [".#.", "#..", "#..", "#..", ".#."],
        ')' => [".#.", "..#", "..#", "..#", ".#."],
        '[' => ["##.", "#..", "#..", "#..", "##."],
        ']' => [".##", "..#", "..#", "..#", ".##"],
        '{' => [".##", ".#.", "##.", ".#.", ".##"],
        '}' => ["##.", ".#.", ".##", ".#.", "##."],
        '<' => ["..#", ".#.", "#..", ".#.", "..#"],
        '>' => ["#..", ".#.", "..#", ".#.", "#.."],
        '=' => ["...", "###", "...", "###", "..."],
        '@' => [".##", "#.#", "###", "#..", ".##"],
        '\'' => [".#.", ".#.", "...", "...", "..."],
        '"' => ["#.#", "#.#", "...", "...", "..."],
        '`' => ["#..", ".#.", "...", "...", "..."],
        '!' => [".#.", ".#.", ".#.", "...", ".#."],
        '?' => ["##.", "..#", ".#.", "...", ".#."],
        '_' => ["...", "...", "...", "...", "###"],
        '#' => ["#.#", "###", "#.#", "###", "#.#"],
        '*' => ["...", "#.#", ".#.", "#.#", "..."],
        '&' => [".#.", "#.#", ".#.", "#.#", ".##"],
        '$' => [".##", "##.", ".#.", ".##", "##."],
        '^' => [".#.", "#.#", "...", "...", "..."],
        '~' => ["...", "...", "##.", ".##", "..."],
        '|' => [".#.", ".#.", ".#.", ".#.", ".#."],
        _ => MISSING,
    }
}

/// Draws `s` with the built-in font, its top-left corner at (`x`, `y`), each font pixel a
/// `scale` x `scale` square. Whatever falls outside the image is clipped, so labels near an
/// edge (or captions under a tile) never panic. Characters without a glyph draw a small box.
pub fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>, scale: u32) {
    draw_text(img, i64::from(x), i64::from(y), s, color, scale);
}

/// Width in pixels of `s` drawn by [`text`] at `scale`, from the first glyph's left edge to the
/// last glyph's right edge (no trailing gap), so callers can centre or right-align labels.
pub fn text_width(s: &str, scale: u32) -> u32 {
    let n = u32::try_from(s.chars().count()).unwrap_or(u32::MAX);
    if n == 0 {
        0
    } else {
        n.saturating_mul(ADVANCE)
            .saturating_sub(1)
            .saturating_mul(scale)
    }
}

/// Height in pixels of a line drawn by [`text`] at `scale`, for stacking captions.
pub fn text_height(scale: u32) -> u32 {
    GLYPH_H.saturating_mul(scale)
}

/// [`text`] at a signed position, so centred labels may start left of or above the image.
fn draw_text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>, scale: u32) {
    let scale = i64::from(scale);
    let step = i64::from(ADVANCE) * scale;
    for (k, c) in s.chars().enumerate() {
        let left = x.saturating_add((k as i64).saturating_mul(step));
        if left >= i64::from(img.width()) {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for (col, b) in bits.bytes().enumerate() {
                if b == b'#' {
                    let (px, py) = (left + col as i64 * scale, y + row as i64 * scale);
                    fill_rect(img, px, py, scale, scale, color);
                }
            }
        }
    }
}

/// Fills the `w` x `h` rectangle at (`x`, `y`), clipped to the image.
fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
    let (x0, y0) = (x.max(0), y.max(0));
    let x1 = x.saturating_add(w).min(i64::from(img.width()));
    let y1 = y.saturating_add(h).min(i64::from(img.height()));
    for py in y0..y1 {
        for px in x0..x1 {
            img.put_pixel(px as u32, py as u32, color);
        }
    }
}

/// Saves `img` at `path` (format from the extension); a failure names the file. For callers
/// that compose their own figures (contact sheets) and want the same errors as the charts.
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path).map_err(|e| invalid(path, e))
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid {
        op: "plot",
        why: format!("{}: {why}", path.display()),
    }
}

/// One line on a [`LineChart`].
#[derive(Clone, Debug)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    pub color: Rgb<u8>,
    /// Line width in pixels; 0 draws no line (markers and error bars only).
    pub width: u32,
    /// (x, y) in data units, joined in the given order. Points with a non-finite coordinate
    /// are skipped and their neighbours joined, so a missing value does not end the line.
    pub points: Vec<(f32, f32)>,
    /// Half-height of an error bar per point (e.g. a standard deviation over seeds); must have
    /// one entry per point. Non-finite entries draw no bar; the sign is ignored.
    pub error: Option<Vec<f32>>,
    /// Small filled squares on the points, so sparse series (one value per label fraction)
    /// show where the measurements are.
    pub markers: bool,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            name: String::new(),
            color: PALETTE[0],
            width: 2,
            points: Vec::new(),
            error: None,
            markers: false,
        }
    }
}

/// A line chart with axes, grid, tick labels, a legend naming every series, error bars and
/// markers, saved as a PNG of [`LineChart::WIDTH`] x [`LineChart::HEIGHT`] pixels (or any size
/// through [`LineChart::render`]). Build it as a struct literal ending in
/// `..LineChart::default()`.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    /// Centred above the plot; empty for none.
    pub title: String,
    /// Centred under the x axis.
    pub x_label: String,
    /// Above the y axis, at the top left.
    pub y_label: String,
    /// A log10 x axis, for quantities spread over decades (label fractions 1%, 10%, 100%).
    /// Every finite x (and `x_range`, `x_ticks`) must then be positive: a zero or negative x
    /// is an error rather than a silently dropped measurement.
    pub log_x: bool,
    /// The x axis span in data units; `None`: the data's span with a small margin.
    pub x_range: Option<(f32, f32)>,
    /// The y axis span; `None`: the data's span (error bars included) with a small margin.
    /// Data outside a given range is cut at the frame.
    pub y_range: Option<(f32, f32)>,
    /// x ticks as (position in data units, label), for labels the caller wants ("1%", "10%");
    /// `None`: round numbers, or on a log axis powers of ten (the data's x values when the axis
    /// spans less than a decade), labelled numerically (0.01, 0.1, 1).
    pub x_ticks: Option<Vec<(f32, String)>>,
    pub series: Vec<Series>,
}

/// The drawing area for data: series are cut a few pixels outside the frame.
#[derive(Clone, Copy)]
struct Clip {
    x0: f32,
    y0: f32,
    x1: f32,
    y1: f32,
}

/// Half the side of a marker square, in pixels.
const MARKER: i64 = 3;
/// Half the width of an error bar's caps, in pixels.
const CAP: f32 = 4.0;

impl LineChart {
    /// Width of the PNG written by [`LineChart::save`].
    pub const WIDTH: u32 = 720;
    /// Height of the PNG written by [`LineChart::save`].
    pub const HEIGHT: u32 = 420;

    /// Writes the chart as a [`LineChart::WIDTH`] x [`LineChart::HEIGHT`] PNG. Errors (bad
    /// ranges, a non-positive x on a log axis, error bars that do not match the points, an
    /// unwritable file) name the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let img = self
            .draw(Self::WIDTH, Self::HEIGHT)
            .map_err(|why| invalid(path, why))?;
        save_image(&img, path)
    }

    /// The chart as an image of any size, for figures composed of several panels.
    pub fn render(&self, width: u32, height: u32) -> Result<RgbImage> {
        self.draw(width, height)
            .map_err(|why| Error::Invalid { op: "plot", why })
    }

    /// Position on the x axis: data units, or their log10 on a log axis.
    fn axis_x(&self, x: f32) -> f32 {
        if self.log_x {
            x.log10()
        } else {
            x
        }
    }

    fn draw(&self, width: u32, height: u32) -> std::result::Result<RgbImage, String> {
        // Data: finite points in axis units, each with its error bar.
        let mut data: Vec<Vec<(f32, f32, Option<f32>)>> = Vec::with_capacity(self.series.len());
        for s in &self.series {
            if let Some(e) = &s.error {
                if e.len() != s.points.len() {
                    return Err(format!(
                        "series {:?} has {} error bars for {} points",
                        s.name,
                        e.len(),
                        s.points.len()
                    ));
                }
            }
            let mut pts = Vec::with_capacity(s.points.len());
            for (i, &(x, y)) in s.points.iter().enumerate() {
                if !(x.is_finite() && y.is_finite()) {
                    continue;
                }
                if self.log_x && x <= 0.0 {
                    return Err(format!(
                        "series {:?} has x = {x}, which a log x axis cannot show",
                        s.name
                    ));
                }
                let err = s
                    .error
                    .as_ref()
                    .and_then(|e| e.get(i))
                    .map(|e| e.abs())
                    .filter(|e| e.is_finite());
                pts.push((self.axis_x(x), y, err));
            }
            data.push(pts);
        }
        let all = data.iter().flatten();

        let (x_lo, x_hi) = match self.x_range {
            Some((a, b)) => {
                if !(a.is_finite() && b.is_finite() && a < b) || (self.log_x && a <= 0.0) {
                    return Err(format!("x range ({a}, {b}) is not an increasing span"));
                }
                (self.axis_x(a), self.axis_x(b))
            }
            None => {
                let xs = all.clone().map(|p| p.0);
                let (lo, hi) = span(xs).unwrap_or((0.0, 1.0));
                pad(lo, hi, 0.04)
            }
        };
        let (y_lo, y_hi) = match self.y_range {
            Some((a, b)) => {
                if !(a.is_finite() && b.is_finite() && a < b) {
                    return Err(format!("y range ({a}, {b}) is not an increasing span"));
                }
                (a, b)
            }
            None => {
                let ys = all.flat_map(|&(_, y, e)| {
                    let e = e.unwrap_or(0.0);
                    [y - e, y + e]
                });
                let (lo, hi) = span(ys).unwrap_or((0.0, 1.0));
                pad(lo, hi, 0.05)
            }
        };
        if !(x_lo.is_finite() && x_hi.is_finite() && y_lo.is_finite() && y_hi.is_finite()) {
            return Err("values too large to plot".into());
        }

        let x_ticks = self.x_tick_marks(x_lo, x_hi, &data)?;
        let y_ticks = linear_ticks(y_lo, y_hi);

        // Layout: title, then the y label and legend rows, above the plot.
        let th = i64::from(text_height(SCALE));
        let right = 24u32;
        let bottom = 50u32;
        let y_label_w = text_width(&self.y_label, SCALE);
        let tick_w = y_ticks
            .iter()
            .map(|t| text_width(&t.1, SCALE))
            .max()
            .unwrap_or(0);
        let left = (tick_w + 18).max(60);
        let mut band = 9i64;
        if !self.title.is_empty() {
            band += th + 8;
        }
        let legend_x0 = 8 + i64::from(y_label_w) + 24;
        let legend_x1 = i64::from(width) - i64::from(right);
        let rows = legend_rows(&self.series, legend_x1 - legend_x0);
        let top = band + 16 * (rows.len().max(1) as i64 - 1) + 21;
        let top = u32::try_from(top).unwrap_or(u32::MAX);
        if width < left + right + 20 || height < top.saturating_add(bottom + 20) {
            return Err(format!(
                "a {width}x{height} image is too small for the chart"
            ));
        }

        let mut img = RgbImage::from_pixel(width, height, WHITE);
        let (l, r) = (left as f32, (width - right) as f32);
        let (t, b) = (top as f32, (height - bottom) as f32);
        let px = |x: f32| l + (x - x_lo) / (x_hi - x_lo) * (r - l);
        let py = |y: f32| t + (1.0 - (y - y_lo) / (y_hi - y_lo)) * (b - t);
        let frame = Clip {
            x0: l,
            y0: t,
            x1: r,
            y1: b,
        };

        // Grid and tick labels.
        for (v, label) in &y_ticks {
            let y = py(*v);
            segment(&mut img, (l, y), (r, y), GRID, 1, frame);
            let w = i64::from(text_width(label, SCALE));
            let ty = y.round() as i64 - th / 2;
            draw_text(&mut img, i64::from(left) - 8 - w, ty, label, INK, SCALE);
        }
        let mut last_right = i64::MIN;
        for (v, label) in &x_ticks {
            let x = px(*v);
            segment(&mut img, (x, t), (x, b), GRID, 1, frame);
            let w = i64::from(text_width(label, SCALE));
            let lx = x.round() as i64 - w / 2;
            // Labels that would overlap the previous one are left out rather than smeared.
            if lx > last_right + 6 {
                draw_text(
                    &mut img,
                    lx,
                    i64::from(height - bottom) + 8,
                    label,
                    INK,
                    SCALE,
                );
                last_right = lx + w;
            }
        }
        segment(&mut img, (l, t), (l, b), INK, 1, frame);
        segment(&mut img, (l, b), (r, b), INK, 1, frame);

        // Labels, title and legend.
        let xw = i64::from(text_width(&self.x_label, SCALE));
        let centre = (i64::from(left) + i64::from(width - right)) / 2;
        let label_y = i64::from(height) - 20;
        draw_text(
            &mut img,
            centre - xw / 2,
            label_y,
            &self.x_label,
            INK,
            SCALE,
        );
        if !self.title.is_empty() {
            let w = i64::from(text_width(&self.title, SCALE));
            let cx = i64::from(width) / 2 - w / 2;
            draw_text(&mut img, cx, 9, &self.title, INK, SCALE);
        }
        draw_text(&mut img, 8, band, &self.y_label, INK, SCALE);
        let whole = Clip {
            x0: 0.0,
            y0: 0.0,
            x1: width as f32,
            y1: height as f32,
        };
        for (k, row) in rows.iter().enumerate() {
            let y = band + 16 * k as i64;
            let row_w: i64 = row.iter().map(|&(_, w)| w).sum::<i64>() - LEGEND_GAP;
            let mut x = legend_x1 - row_w;
            for &(i, w) in row {
                let s = &self.series[i];
                let mid = (y + th / 2) as f32;
                let swatch = ((x as f32, mid), ((x + 20) as f32, mid));
                segment(&mut img, swatch.0, swatch.1, s.color, s.width, whole);
                if s.markers {
                    marker(&mut img, x + 10, y + th / 2, s.color);
                }
                draw_text(&mut img, x + 25, y, &s.name, INK, SCALE);
                x += w;
            }
        }

        // Series: lines, then error bars, then markers on top.
        let clip = Clip {
            x0: l - 4.0,
            y0: t - 4.0,
            x1: r + 4.0,
            y1: b + 4.0,
        };
        for (s, pts) in self.series.iter().zip(&data) {
            let at: Vec<(f32, f32)> = pts.iter().map(|&(x, y, _)| (px(x), py(y))).collect();
            if s.width > 0 {
                for pair in at.windows(2) {
                    segment(&mut img, pair[0], pair[1], s.color, s.width, clip);
                }
            }
            for (&(_, y, e), &(ax, _)) in pts.iter().zip(&at) {
                if let Some(e) = e {
                    let (y0, y1) = (py(y - e), py(y + e));
                    segment(&mut img, (ax, y0), (ax, y1), s.color, 1, clip);
                    for cy in [y0, y1] {
                        segment(&mut img, (ax - CAP, cy), (ax + CAP, cy), s.color, 1, clip);
                    }
                }
            }
            if s.markers {
                for &(ax, ay) in &at {
                    if (clip.x0..=clip.x1).contains(&ax) && (clip.y0..=clip.y1).contains(&ay) {
                        marker(&mut img, ax.round() as i64, ay.round() as i64, s.color);
                    }
                }
            }
        }
        Ok(img)
    }

    /// The x ticks in axis units with their labels (see [`LineChart::x_ticks`]).
    fn x_tick_marks(
        &self,
        lo: f32,
        hi: f32,
        data: &[Vec<(f32, f32, Option<f32>)>],
    ) -> std::result::Result<Vec<(f32, String)>, String> {
        if let Some(ticks) = &self.x_ticks {
            let mut out = Vec::with_capacity(ticks.len());
            for (x, label) in ticks {
                if !x.is_finite() {
                    continue;
                }
                if self.log_x && *x <= 0.0 {
                    return Err(format!("x tick {label:?} at {x} is not on a log axis"));
                }
                out.push((self.axis_x(*x), label.clone()));
            }
            return Ok(out);
        }
        if !self.log_x {
            return Ok(linear_ticks(lo, hi));
        }
        // Powers of ten inside the axis, thinned to at most 8.
        let first = (lo - 1e-4).ceil() as i64;
        let last = (hi + 1e-4).floor() as i64;
        if last > first {
            let every = ((last - first) / 8 + 1).max(1);
            return Ok((first..=last)
                .filter(|k| (k - first) % every == 0)
                .map(|k| (k as f32, number(10f32.powi(k as i32))))
                .collect());
        }
        // Less than a decade: the data's own x values, else the axis ends.
        let mut xs: Vec<f32> = data.iter().flatten().map(|p| p.0).collect();
        if xs.is_empty() {
            xs = vec![lo, hi];
        }
        xs.sort_by(f32::total_cmp);
        xs.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
        Ok(xs.into_iter().map(|x| (x, number(10f32.powf(x)))).collect())
    }
}

/// Pixels between legend entries.
const LEGEND_GAP: i64 = 17;

/// Legend entries (series index, width with the gap after it) packed into rows of at most
/// `avail` pixels, so many or long names wrap instead of running off the image.
fn legend_rows(series: &[Series], avail: i64) -> Vec<Vec<(usize, i64)>> {
    let mut rows: Vec<Vec<(usize, i64)>> = Vec::new();
    let mut used = 0i64;
    for (i, s) in series.iter().enumerate() {
        let w = 25 + i64::from(text_width(&s.name, SCALE)) + LEGEND_GAP;
        match rows.last_mut() {
            Some(row) if used + w - LEGEND_GAP <= avail => {
                row.push((i, w));
                used += w;
            }
            _ => {
                rows.push(vec![(i, w)]);
                used = w;
            }
        }
    }
    rows
}

/// Smallest and largest of the finite values, if any.
fn span(values: impl Iterator<Item = f32>) -> Option<(f32, f32)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Widens (`lo`, `hi`) by `frac` of its span on each side, so points at the ends sit off the
/// frame; a single value gets a span around it.
fn pad(lo: f32, hi: f32, frac: f32) -> (f32, f32) {
    let w = hi - lo;
    if w > 1e-6 * hi.abs().max(lo.abs()).max(1e-12) {
        (lo - frac * w, hi + frac * w)
    } else {
        let d = (lo.abs() * 0.1).max(0.5);
        (lo - d, hi + d)
    }
}

/// About five round-numbered ticks (steps of 1, 2 or 5 times a power of ten) inside the span,
/// labelled with as many decimals as the step needs.
fn linear_ticks(lo: f32, hi: f32) -> Vec<(f32, String)> {
    let raw = (hi - lo) / 5.0;
    if !(raw.is_finite() && raw > 0.0) {
        return Vec::new();
    }
    let mut exp = raw.log10().floor() as i32;
    let norm = raw / 10f32.powi(exp);
    let unit = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        exp += 1;
        1.0
    };
    let step = unit * 10f32.powi(exp);
    let decimals = (-exp).clamp(0, 6) as usize;
    let first = (lo / step - 1e-4).ceil() as i64;
    let last = (hi / step + 1e-4).floor() as i64;
    (first..=last.min(first + 20))
        .map(|k| {
            let v = k as f32 * step;
            let v = if k == 0 { 0.0 } else { v };
            (v, format!("{v:.decimals$}"))
        })
        .collect()
}

/// A value as a short label: up to four significant digits, no trailing zeros (0.01, 0.1, 1,
/// 100), scientific notation beyond.
fn number(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor();
    if !(-4.0..6.0).contains(&mag) {
        return format!("{v:e}");
    }
    let decimals = (3.0 - mag).clamp(0.0, 7.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').into()
    } else {
        s
    }
}

/// A filled square centred on (`x`, `y`).
fn marker(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    fill_rect(
        img,
        x - MARKER,
        y - MARKER,
        2 * MARKER + 1,
        2 * MARKER + 1,
        color,
    );
}

/// The part of the segment inside `clip` (Liang-Barsky), if any.
fn clip_segment(
    (x0, y0): (f32, f32),
    (x1, y1): (f32, f32),
    c: Clip,
) -> Option<((f32, f32), (f32, f32))> {
    let (dx, dy) = (x1 - x0, y1 - y0);
    let (mut t0, mut t1) = (0f32, 1f32);
    for (p, q) in [
        (-dx, x0 - c.x0),
        (dx, c.x1 - x0),
        (-dy, y0 - c.y0),
        (dy, c.y1 - y0),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some(((x0 + t0 * dx, y0 + t0 * dy), (x0 + t1 * dx, y0 + t1 * dy)))
}

/// A straight line `width` pixels wide, cut to `clip` (and the image) before it is drawn, so a
/// point far outside a given axis range costs nothing.
fn segment(
    img: &mut RgbImage,
    a: (f32, f32),
    b: (f32, f32),
    color: Rgb<u8>,
    width: u32,
    clip: Clip,
) {
    if width == 0 || ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return;
    }
    let Some(((x0, y0), (x1, y1))) = clip_segment(a, b, clip) else {
        return;
    };
    let w = i64::from(width.min(64));
    let (lo, hi) = (-(w - 1) / 2, w / 2);
    let (cx0, cy0) = (clip.x0.floor() as i64, clip.y0.floor() as i64);
    let (cx1, cy1) = (clip.x1.ceil() as i64, clip.y1.ceil() as i64);
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let x = (x0 + t * (x1 - x0)).round() as i64;
        let y = (y0 + t * (y1 - y0)).round() as i64;
        for dy in lo..=hi {
            for dx in lo..=hi {
                let (px, py) = (x + dx, y + dy);
                if (cx0..=cx1).contains(&px) && (cy0..=cy1).contains(&py) {
                    fill_rect(img, px, py, 1, 1, color);
                }
            }
        }
    }
}

/// The loss curve: training loss per step (thin) and validation loss per evaluation (thick,
/// with markers). `points`: (step, training loss, validation loss when evaluated); NaN losses
/// are skipped. The y axis starts near the lowest loss (never below zero) so late progress
/// stays visible.
pub fn plot_loss_curve(points: &[(usize, f32, Option<f32>)], path: &Path) -> Result<()> {
    let values = points.iter().flat_map(|&(_, t, v)| [Some(t), v]).flatten();
    let y_range = span(values).and_then(|(lo, hi)| {
        let range = (lo.min(hi - 1e-3).max(0.0) * 0.95, hi * 1.05);
        (range.0 < range.1).then_some(range)
    });
    let max_step = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f32;
    LineChart {
        x_label: "step".into(),
        y_label: "loss".into(),
        x_range: Some((0.0, max_step)),
        y_range,
        series: vec![
            Series {
                name: "train".into(),
                color: PALETTE[0],
                width: 1,
                points: points.iter().map(|p| (p.0 as f32, p.1)).collect(),
                error: None,
                markers: false,
            },
            Series {
                name: "val".into(),
                color: PALETTE[1],
                width: 3,
                points: points
                    .iter()
                    .filter_map(|p| p.2.map(|v| (p.0 as f32, v)))
                    .collect(),
                error: None,
                markers: true,
            },
        ],
        ..LineChart::default()
    }
    .save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A temporary file removed when dropped.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp_png(name: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("convirt-plot-{}-{name}.png", std::process::id())),
        )
    }

    fn load(path: &Path) -> RgbImage {
        image::open(path).expect("read the PNG back").to_rgb8()
    }

    fn count(img: &RgbImage, color: Rgb<u8>) -> usize {
        img.pixels().filter(|&&p| p == color).count()
    }

    /// The chart the evaluation needs: mean AUC against label fraction, one series per
    /// initialisation, error bars, markers, a log x axis.
    fn auc_chart() -> LineChart {
        let fractions = [0.01, 0.1, 1.0];
        let series = [
            ("ImageNet", [0.80, 0.85, 0.88], 2),
            ("ConVIRT", [0.86, 0.88, 0.90], 3),
            ("random", [0.60, 0.70, 0.80], 0),
        ];
        LineChart {
            title: "CheXpert AUC".into(),
            x_label: "label fraction".into(),
            y_label: "mean AUC".into(),
            log_x: true,
            series: series
                .iter()
                .enumerate()
                .map(|(i, (name, auc, width))| Series {
                    name: (*name).into(),
                    color: PALETTE[i + 2],
                    width: *width,
                    points: fractions.iter().copied().zip(auc.iter().copied()).collect(),
                    error: Some(vec![0.01, 0.02, 0.005]),
                    markers: true,
                })
                .collect(),
            ..LineChart::default()
        }
    }

    #[test]
    fn chart_saves_a_png_with_every_series() {
        let file = temp_png("auc");
        let chart = auc_chart();
        chart.save(&file.0).expect("save the chart");
        let img = load(&file.0);
        assert_eq!(
            img.dimensions(),
            (LineChart::WIDTH, LineChart::HEIGHT),
            "the stated size"
        );
        assert!(count(&img, WHITE) < img.pixels().len(), "not blank");
        assert!(count(&img, INK) > 500, "axes and text are drawn");
        for s in &chart.series {
            // Markers (7x7 at three points) plus lines, error bars and the legend swatch.
            assert!(
                count(&img, s.color) > 3 * 40,
                "{} has {} pixels",
                s.name,
                count(&img, s.color)
            );
        }
        // The same chart with x ticks labelled by the caller, at another size.
        let custom = LineChart {
            x_ticks: Some(vec![
                (0.01, "1%".into()),
                (0.1, "10%".into()),
                (1.0, "100%".into()),
            ]),
            ..auc_chart()
        };
        let img = custom.render(400, 300).expect("render");
        assert_eq!(img.dimensions(), (400, 300));
        assert!(count(&img, PALETTE[3]) > 0);
    }

    #[test]
    fn error_bars_and_markers_land_on_the_points() {
        // One point alone at a known place: y range 0..1, x range 0..1, point in the middle.
        let chart = LineChart {
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.0)),
            series: vec![Series {
                name: String::new(),
                color: PALETTE[3],
                width: 0,
                points: vec![(0.5, 0.5)],
                error: Some(vec![0.25]),
                markers: true,
            }],
            ..LineChart::default()
        };
        let img = chart.render(400, 300).expect("render");
        let ys: Vec<u32> = img
            .enumerate_pixels()
            .filter(|p| *p.2 == PALETTE[3] && p.1 >= 30)
            .map(|p| p.1)
            .collect();
        let (lo, hi) = (ys.iter().min(), ys.iter().max());
        let (Some(&lo), Some(&hi)) = (lo, hi) else {
            panic!("nothing drawn")
        };
        // The bar spans half the plot's height; the marker is much shorter.
        let plot_h = 300 - 50 - 30;
        assert!(
            (hi - lo).abs_diff(plot_h / 2) <= 2,
            "bar from {lo} to {hi}, plot {plot_h} high"
        );
    }

    #[test]
    fn log_x_rejects_zero_and_negative_x() {
        let file = temp_png("logx");
        for bad in [0.0, -0.5] {
            let mut chart = auc_chart();
            chart.series[1].points[0].0 = bad;
            let e = chart.save(&file.0).expect_err("x <= 0 on a log axis");
            let m = e.to_string();
            assert!(m.contains(&file.0.display().to_string()), "{m}");
            assert!(m.contains("ConVIRT"), "{m}");
        }
        let chart = LineChart {
            x_range: Some((0.0, 1.0)),
            ..auc_chart()
        };
        assert!(chart.render(720, 420).is_err());
        let chart = LineChart {
            x_ticks: Some(vec![(0.0, "0%".into())]),
            ..auc_chart()
        };
        assert!(chart.render(720, 420).is_err());
        // A non-finite x is skipped, not an error.
        let mut chart = auc_chart();
        chart.series[0].points[0].0 = f32::NAN;
        chart.render(720, 420).expect("NaN x is skipped");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut chart = auc_chart();
        chart.series[0].error = Some(vec![0.1]);
        assert!(chart.render(720, 420).is_err(), "error bars != points");
        let chart = LineChart {
            y_range: Some((1.0, 1.0)),
            ..auc_chart()
        };
        assert!(chart.render(720, 420).is_err(), "empty y range");
        assert!(auc_chart().render(50, 40).is_err(), "too small");
        let dir = std::env::temp_dir().join("convirt-plot-no-such-dir/x.png");
        let m = auc_chart()
            .save(&dir)
            .expect_err("no directory")
            .to_string();
        assert!(m.contains("convirt-plot-no-such-dir"), "{m}");
    }

    #[test]
    fn chart_without_finite_points_saves_empty_axes() {
        let file = temp_png("empty");
        for log_x in [false, true] {
            let chart = LineChart {
                log_x,
                y_label: "AUC".into(),
                series: vec![Series {
                    name: "nothing".into(),
                    color: PALETTE[2],
                    points: vec![(f32::NAN, 0.5), (1.0, f32::INFINITY)],
                    error: Some(vec![0.1, 0.1]),
                    markers: true,
                    ..Series::default()
                }],
                ..LineChart::default()
            };
            chart.save(&file.0).expect("an empty chart saves");
            let img = load(&file.0);
            assert_eq!(img.dimensions(), (LineChart::WIDTH, LineChart::HEIGHT));
            assert!(count(&img, INK) > 0, "axes drawn");
            LineChart::default()
                .save(&file.0)
                .expect("no series at all");
        }
    }

    #[test]
    fn points_outside_a_given_range_are_cut_at_the_frame() {
        let chart = LineChart {
            y_range: Some((0.0, 1.0)),
            series: vec![Series {
                name: "wild".into(),
                color: PALETTE[4],
                width: 3,
                points: vec![(0.0, 0.5), (1.0, 1e30), (2.0, -1e30), (3.0, 0.5)],
                error: Some(vec![1e30, 0.0, 0.0, 0.0]),
                markers: true,
            }],
            ..LineChart::default()
        };
        let img = chart.render(400, 300).expect("render");
        // The frame spans rows 30..=250; the legend sits on rows 9..19.
        for (x, y, p) in img.enumerate_pixels() {
            if *p == PALETTE[4] {
                assert!(y < 20 || (26..=254).contains(&y), "ink at ({x}, {y})");
            }
        }
    }

    #[test]
    fn loss_curve_keeps_working() {
        let file = temp_png("loss");
        let points: Vec<(usize, f32, Option<f32>)> = (1..=50)
            .map(|s| {
                let t = 4.0 / (s as f32).sqrt();
                let v = (s % 10 == 0).then_some(t * 1.1);
                (s, if s == 7 { f32::NAN } else { t }, v)
            })
            .collect();
        plot_loss_curve(&points, &file.0).expect("save the loss curve");
        let img = load(&file.0);
        assert_eq!(img.dimensions(), (720, 420));
        assert!(count(&img, PALETTE[0]) > 100 && count(&img, PALETTE[1]) > 100);
        plot_loss_curve(&[], &file.0).expect("no points yet");
        plot_loss_curve(&[(0, 0.0, Some(0.0))], &file.0).expect("a flat zero loss");
    }

    /// Inked columns and rows of `s` drawn at (x, y).
    fn ink_box(s: &str, x: u32, y: u32, scale: u32) -> Option<(u32, u32, u32, u32)> {
        let mut img = RgbImage::from_pixel(x + text_width(s, scale) + 20, y + 40, WHITE);
        text(&mut img, x, y, s, INK, scale);
        img.enumerate_pixels()
            .filter(|p| *p.2 == INK)
            .fold(None, |acc, (px, py, _)| {
                Some(match acc {
                    None => (px, px, py, py),
                    Some((a, b, c, d)) => (a.min(px), b.max(px), c.min(py), d.max(py)),
                })
            })
    }

    #[test]
    fn text_width_matches_what_text_draws() {
        assert_eq!(text_width("", 2), 0);
        for scale in [1, 2, 3] {
            // Strings whose first and last glyphs ink their outer columns.
            for s in [
                "AUC 0.81",
                "ImageNet",
                "100%",
                "#",
                "loss=4.2 [val]",
                "Hmm?#",
            ] {
                let (x0, x1, y0, y1) = ink_box(s, 5, 3, scale).expect("ink");
                assert_eq!(x0, 5, "{s:?} starts at x");
                assert_eq!(x1 + 1 - 5, text_width(s, scale), "{s:?} at scale {scale}");
                assert!(y0 >= 3 && y1 < 3 + text_height(scale), "{s:?} rows");
            }
            // No glyph inks beyond the width.
            for c in ' '..='~' {
                let s: String = [c, c].iter().collect();
                if let Some((_, x1, _, _)) = ink_box(&s, 5, 3, scale) {
                    assert!(x1 < 5 + text_width(&s, scale), "{c:?}");
                }
            }
        }
        assert_eq!(text_width("é", 1), 3, "width counts characters, not bytes");
    }

    #[test]
    fn every_printable_ascii_char_has_an_inked_glyph() {
        for c in ' '..='~' {
            let g = glyph(c);
            assert!(
                g.iter()
                    .all(|row| row.len() == 3 && row.bytes().all(|b| b == b'#' || b == b'.')),
                "{c:?} is malformed"
            );
            let mut img = RgbImage::from_pixel(3, 5, WHITE);
            text(&mut img, 0, 0, &c.to_string(), INK, 1);
            let ink = count(&img, INK);
            if c == ' ' {
                assert_eq!(ink, 0);
            } else {
                assert!(ink > 0, "{c:?} draws nothing");
                assert_ne!(g, MISSING, "{c:?} has no glyph of its own");
            }
        }
        // Glyphs differ from each other, so no two characters read the same.
        let chars: Vec<char> = (' '..='~').collect();
        for (i, a) in chars.iter().enumerate() {
            for b in &chars[i + 1..] {
                assert_ne!(glyph(*a), glyph(*b), "{a:?} and {b:?} look the same");
            }
        }
        // Unknown characters draw the box.
        let mut img = RgbImage::from_pixel(3, 5, WHITE);
        text(&mut img, 0, 0, "é", INK, 1);
        assert_eq!(count(&img, INK), 8);
    }

    #[test]
    fn text_is_clipped_at_the_edges() {
        let mut img = RgbImage::from_pixel(20, 10, WHITE);
        text(&mut img, 15, 7, "Hello, world", INK, 2);
        text(&mut img, u32::MAX, u32::MAX, "edge", INK, u32::MAX);
        text(&mut img, 0, 0, "big", INK, 1000);
        draw_text(&mut img, -7, -3, "left", INK, 2);
        assert!(count(&img, INK) > 0);
        assert_eq!(text_width("abc", u32::MAX), u32::MAX, "saturates");
    }

    #[test]
    fn tick_labels_are_short_numbers() {
        assert_eq!(number(0.01), "0.01");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(100.0), "100");
        let ticks = linear_ticks(0.52, 0.93);
        let labels: Vec<&str> = ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0.6", "0.7", "0.8", "0.9"]);
        let ticks = linear_ticks(0.0, 5000.0);
        assert_eq!(ticks.first().map(|t| t.1.as_str()), Some("0"));
        assert_eq!(ticks.last().map(|t| t.1.as_str()), Some("5000"));
        let chart = auc_chart();
        let lo = 0.01f32.log10();
        let ticks = chart
            .x_tick_marks(lo - 0.1, 0.1, &[])
            .expect("ticks on a log axis");
        let labels: Vec<&str> = ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0.01", "0.1", "1"]);
    }
}

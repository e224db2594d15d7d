//! The loss curve as a PNG: training loss per step and validation loss per evaluation, with
//! ticks labelled by a tiny built-in bitmap font (no font files, no plotting dependency).

use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

const W: u32 = 720;
const H: u32 = 420;
const LEFT: u32 = 70;
const BOTTOM: u32 = 50;
const TOP: u32 = 30;
const RIGHT: u32 = 20;
const TRAIN: Rgb<u8> = Rgb([70, 110, 200]);
const VAL: Rgb<u8> = Rgb([230, 120, 30]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// 3x5 glyphs, one row per string, '#' set.
fn glyph(c: char) -> [&'static str; 5] {
    match c {
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
        '.' => ["...", "...", "...", "...", ".#."],
        'a' => ["...", "##.", "..#", "###", "###"],
        'e' => ["...", "###", "###", "#..", "###"],
        'i' => [".#.", "...", ".#.", ".#.", ".#."],
        'l' => ["#..", "#..", "#..", "#..", "###"],
        'n' => ["...", "##.", "#.#", "#.#", "#.#"],
        'o' => ["...", "###", "#.#", "#.#", "###"],
        'p' => ["...", "###", "#.#", "###", "#.."],
        'r' => ["...", "###", "#..", "#..", "#.."],
        's' => ["...", "###", "##.", "..#", "###"],
        't' => [".#.", "###", ".#.", ".#.", ".##"],
        'v' => ["...", "#.#", "#.#", "#.#", ".#."],
        _ => ["...", "...", "...", "...", "..."],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    const SCALE: u32 = 2;
    for (k, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for (col, b) in bits.bytes().enumerate() {
                if b == b'#' {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let (px, py) = (
                                x + (k as u32 * 4 + col as u32) * SCALE + dx,
                                y + row as u32 * SCALE + dy,
                            );
                            if px < W && py < H {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(
    img: &mut RgbImage,
    (x0, y0): (f32, f32),
    (x1, y1): (f32, f32),
    color: Rgb<u8>,
    width: i32,
) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let (x, y) = (
            (x0 + t * (x1 - x0)).round() as i32,
            (y0 + t * (y1 - y0)).round() as i32,
        );
        for dy in -(width / 2)..=width / 2 {
            for dx in -(width / 2)..=width / 2 {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && (px as u32) < W && (py as u32) < H {
                    img.put_pixel(px as u32, py as u32, color);
                }
            }
        }
    }
}

/// `points`: (step, training loss, validation loss when evaluated); NaN losses are skipped.
pub fn plot_loss_curve(points: &[(usize, f32, Option<f32>)], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let values: Vec<f32> = points
        .iter()
        .flat_map(|&(_, t, v)| [Some(t), v])
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(hi - 1e-3).max(0.0) * 0.95, hi * 1.05)
    } else {
        (0.0, 1.0)
    };
    let max_step = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f32;
    let (pw, ph) = ((W - LEFT - RIGHT) as f32, (H - TOP - BOTTOM) as f32);
    let at = |step: f32, v: f32| {
        (
            LEFT as f32 + step / max_step * pw,
            TOP as f32 + (1.0 - (v - lo) / (hi - lo)) * ph,
        )
    };
    for k in 0..=5 {
        let v = lo + (hi - lo) * k as f32 / 5.0;
        let (_, y) = at(0.0, v);
        line(&mut img, (LEFT as f32, y), ((W - RIGHT) as f32, y), GRID, 1);
        text(&mut img, 8, y as u32 - 5, &format!("{v:.2}"), INK);
        let s = max_step * k as f32 / 5.0;
        let (x, _) = at(s, lo);
        text(
            &mut img,
            x as u32 - 6,
            H - BOTTOM + 8,
            &format!("{}", s.round() as usize),
            INK,
        );
    }
    line(
        &mut img,
        (LEFT as f32, TOP as f32),
        (LEFT as f32, (H - BOTTOM) as f32),
        INK,
        1,
    );
    line(
        &mut img,
        (LEFT as f32, (H - BOTTOM) as f32),
        ((W - RIGHT) as f32, (H - BOTTOM) as f32),
        INK,
        1,
    );
    text(&mut img, W / 2 - 16, H - 20, "step", INK);
    text(&mut img, 8, 8, "loss", INK);
    let series = |select: &dyn Fn(&(usize, f32, Option<f32>)) -> Option<f32>| -> Vec<(f32, f32)> {
        points
            .iter()
            .filter_map(|p| {
                select(p)
                    .filter(|v| v.is_finite())
                    .map(|v| at(p.0 as f32, v))
            })
            .collect()
    };
    for (pts, color, width) in [
        (series(&|p| Some(p.1)), TRAIN, 1),
        (series(&|p| p.2), VAL, 3),
    ] {
        for pair in pts.windows(2) {
            line(&mut img, pair[0], pair[1], color, width);
        }
    }
    line(
        &mut img,
        ((W - 170) as f32, 14.0),
        ((W - 150) as f32, 14.0),
        TRAIN,
        1,
    );
    text(&mut img, W - 145, 9, "train", INK);
    line(
        &mut img,
        ((W - 90) as f32, 14.0),
        ((W - 70) as f32, 14.0),
        VAL,
        3,
    );
    text(&mut img, W - 65, 9, "val", INK);
    img.save(path).map_err(|e| Error::Invalid {
        op: "plot",
        why: format!("{}: {e}", path.display()),
    })
}

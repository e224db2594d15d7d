//! ConVIRT's image augmentations, in the paper's order: random crop, horizontal flip, affine
//! transform, brightness and contrast jitter, Gaussian blur, resize, grey to three channels and
//! ImageNet normalisation.
//!
//! Reading of the paper ("random cropping with a ratio sampled from [0.6, 1.0]"): we follow the
//! public reimplementations and torchvision's `RandomResizedCrop(out_size, scale=(0.6, 1.0))`:
//! the ratio is the fraction of the image *area* kept, the crop's aspect ratio is log-uniform in
//! [3/4, 4/3], and the crop is resized to `out_size` at once. Everything after the crop
//! therefore works at `out_size` (translation in a fraction of it, blur sigma in its pixels),
//! and the paper's final resize is that same step, not a second one.

use super::image::{Image, IMAGENET_MEAN, IMAGENET_STD};
use super::rng::Rng;
use crate::error::{Error, Result};
use ::image::imageops::{self, FilterType};
use ::image::{ImageBuffer, Luma};

/// The augmentation settings; [`Default`] is the paper's.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    /// Range of the fraction of the image area the crop keeps.
    pub crop_scale: (f32, f32),
    /// Range of the crop's aspect ratio (width / height), drawn log-uniformly.
    pub crop_ratio: (f32, f32),
    /// Probability of a horizontal flip.
    pub hflip: f32,
    /// Rotation drawn uniformly in [-rotate_deg, rotate_deg] degrees (positive turns the
    /// picture counter-clockwise, as torchvision).
    pub rotate_deg: f32,
    /// Translation along each axis drawn uniformly in [-translate, translate] times the size.
    pub translate: f32,
    /// Range of the affine scale factor.
    pub scale: (f32, f32),
    /// Range of the brightness factor (values multiplied by it).
    pub brightness: (f32, f32),
    /// Range of the contrast factor (values pulled towards or pushed from the mean grey).
    pub contrast: (f32, f32),
    /// Range of the Gaussian blur's sigma, in output pixels (0 = no blur).
    pub blur_sigma: (f32, f32),
    /// Side of the square output.
    pub out_size: usize,
}

impl Augment {
    /// No augmentation: the whole picture resized to `out_size` and normalised, the same every
    /// time (validation and evaluation).
    pub fn identity(out_size: usize) -> Augment {
        Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            hflip: 0.0,
            rotate_deg: 0.0,
            translate: 0.0,
            scale: (1.0, 1.0),
            brightness: (1.0, 1.0),
            contrast: (1.0, 1.0),
            blur_sigma: (0.0, 0.0),
            out_size,
        }
    }
}

/// Named augmentation strengths, as a training configuration records them.
///
/// ```
/// use convirt::data::augment::Augmentation;
///
/// let mild: Augmentation = "mild".parse().unwrap();
/// let settings = mild.settings(64);
/// assert_eq!((settings.out_size, settings.hflip), (64, 0.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Augmentation {
    /// The paper's augmentations ([`Augment::default`]).
    Paper,
    /// Milder and without flips, for encoders trained from scratch in a few hundred steps
    /// (the embedded default): the paper's strength, made for ImageNet- and ClinicalBERT-
    /// initialised encoders and thousands of steps, slows early learning several-fold there,
    /// and a flip contradicts every "left" and "right" in the report.
    Mild,
    /// None: the whole picture, as validation sees it ([`Augment::identity`]).
    None,
}

impl Augmentation {
    /// The settings for `out_size` x `out_size` outputs.
    pub fn settings(self, out_size: usize) -> Augment {
        match self {
            Augmentation::Paper => Augment {
                out_size,
                ..Augment::default()
            },
            Augmentation::Mild => Augment {
                crop_scale: (0.8, 1.0),
                crop_ratio: (0.9, 1.0 / 0.9),
                hflip: 0.0,
                rotate_deg: 5.0,
                translate: 0.05,
                scale: (0.95, 1.05),
                brightness: (0.8, 1.2),
                contrast: (0.8, 1.2),
                blur_sigma: (0.1, 0.5),
                out_size,
            },
            Augmentation::None => Augment::identity(out_size),
        }
    }

    /// The name `--augment` takes and checkpoints record.
    pub fn name(self) -> &'static str {
        match self {
            Augmentation::Paper => "paper",
            Augmentation::Mild => "mild",
            Augmentation::None => "none",
        }
    }
}

impl std::str::FromStr for Augmentation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Augmentation> {
        match s {
            "paper" => Ok(Augmentation::Paper),
            "mild" => Ok(Augmentation::Mild),
            "none" => Ok(Augmentation::None),
            _ => Err(Error::Invalid {
                op: "Augmentation",
                why: format!("'{s}' is not an augmentation (paper, mild or none)"),
            }),
        }
    }
}

impl Default for Augment {
    fn default() -> Augment {
        Augment {
            crop_scale: (0.6, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: 0.5,
            rotate_deg: 20.0,
            translate: 0.1,
            scale: (0.95, 1.05),
            brightness: (0.6, 1.4),
            contrast: (0.6, 1.4),
            blur_sigma: (0.1, 3.0),
            out_size: 224,
        }
    }
}

/// The parameters drawn for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The crop in input pixels: left, top, width, height.
    pub crop: [usize; 4],
    pub flip: bool,
    /// Rotation in degrees, counter-clockwise.
    pub angle_deg: f32,
    /// Translation (x, y) in output pixels.
    pub translate: (f32, f32),
    pub scale: f32,
    pub brightness: f32,
    pub contrast: f32,
    /// The order of the two jitters (torchvision's `ColorJitter` draws a random order).
    pub brightness_first: bool,
    pub blur_sigma: f32,
}

impl Augment {
    /// Checks that every range is ordered and meaningful, so that drawing from it cannot give
    /// nonsense (a negative scale, an empty crop, ...).
    pub fn validate(&self) -> Result<()> {
        let ranges = [
            ("crop_scale", self.crop_scale, f32::MIN_POSITIVE, 1.0),
            ("crop_ratio", self.crop_ratio, f32::MIN_POSITIVE, f32::MAX),
            ("scale", self.scale, f32::MIN_POSITIVE, f32::MAX),
            ("brightness", self.brightness, 0.0, f32::MAX),
            ("contrast", self.contrast, 0.0, f32::MAX),
            ("blur_sigma", self.blur_sigma, 0.0, 100.0),
        ];
        let singles = [
            ("hflip", self.hflip, 1.0),
            ("rotate_deg", self.rotate_deg, 360.0),
            ("translate", self.translate, 1.0),
        ];
        let bad = |what: &str, why: String| {
            Err(Error::Invalid {
                op: "Augment",
                why: format!("{what}: {why}"),
            })
        };
        for (name, (lo, hi), min, max) in ranges {
            if !(lo >= min && lo <= hi && hi <= max) {
                return bad(
                    name,
                    format!("({lo}, {hi}) must satisfy {min} <= lo <= hi <= {max}"),
                );
            }
        }
        for (name, v, max) in singles {
            if !(0.0..=max).contains(&v) {
                return bad(name, format!("{v} must be in [0, {max}]"));
            }
        }
        if !(1..=8192).contains(&self.out_size) {
            return bad("out_size", format!("{} must be in 1..=8192", self.out_size));
        }
        Ok(())
    }

    /// Draws the parameters for an image of `width` x `height`. The crop follows torchvision's
    /// `RandomResizedCrop.get_params`: ten tries at an area fraction in `crop_scale` and a
    /// log-uniform aspect ratio in `crop_ratio`, then a centre crop of the whole image clamped
    /// to the ratio range.
    pub fn sample(&self, width: usize, height: usize, rng: &mut Rng) -> Params {
        let crop = self.sample_crop(width, height, rng);
        let flip = rng.bernoulli(self.hflip as f64);
        let angle_deg = rng.uniform(-self.rotate_deg, self.rotate_deg);
        let t = self.translate * self.out_size as f32;
        let translate = (rng.uniform(-t, t), rng.uniform(-t, t));
        let scale = rng.uniform(self.scale.0, self.scale.1);
        let brightness = rng.uniform(self.brightness.0, self.brightness.1);
        let contrast = rng.uniform(self.contrast.0, self.contrast.1);
        let brightness_first = rng.bernoulli(0.5);
        let blur_sigma = rng.uniform(self.blur_sigma.0, self.blur_sigma.1);
        Params {
            crop,
            flip,
            angle_deg,
            translate,
            scale,
            brightness,
            contrast,
            brightness_first,
            blur_sigma,
        }
    }

    fn sample_crop(&self, width: usize, height: usize, rng: &mut Rng) -> [usize; 4] {
        let area = (width * height) as f64;
        let (log_lo, log_hi) = (
            (self.crop_ratio.0 as f64).ln(),
            (self.crop_ratio.1 as f64).ln(),
        );
        for _ in 0..10 {
            let target = area * rng.uniform_f64(self.crop_scale.0 as f64, self.crop_scale.1 as f64);
            let ratio = rng.uniform_f64(log_lo, log_hi).exp();
            let w = (target * ratio).sqrt().round() as usize;
            let h = (target / ratio).sqrt().round() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.below((height - h + 1) as u64) as usize;
                let left = rng.below((width - w + 1) as u64) as usize;
                return [left, top, w, h];
            }
        }
        let in_ratio = width as f64 / height.max(1) as f64;
        let (w, h) = if in_ratio < self.crop_ratio.0 as f64 {
            (
                width,
                (width as f64 / self.crop_ratio.0 as f64).round() as usize,
            )
        } else if in_ratio > self.crop_ratio.1 as f64 {
            (
                (height as f64 * self.crop_ratio.1 as f64).round() as usize,
                height,
            )
        } else {
            (width, height)
        };
        let (w, h) = (w.min(width), h.min(height));
        [(width - w) / 2, (height - h) / 2, w, h]
    }

    /// Augments `img` with freshly drawn parameters: planar `[3, out_size, out_size]`,
    /// normalised with the ImageNet mean and std, and the parameters drawn.
    pub fn apply(&self, img: &Image, rng: &mut Rng) -> (Vec<f32>, Params) {
        let params = self.sample(img.width, img.height, rng);
        (self.apply_params(img, &params), params)
    }

    /// Augments `img` with the given parameters. An RGB image is first turned grey (ITU-R 601
    /// luma, as torchvision); an image without pixels gives black.
    ///
    /// # Panics
    /// When `img` breaks the layout [`Image::new`] checks, or `out_size` is 0.
    pub fn apply_params(&self, img: &Image, p: &Params) -> Vec<f32> {
        let n = self.out_size;
        let mut x = resized_crop(img, p.crop, n);
        if p.flip {
            for row in x.chunks_exact_mut(n) {
                row.reverse();
            }
        }
        if p.angle_deg != 0.0 || p.translate != (0.0, 0.0) || p.scale != 1.0 {
            x = affine(&x, n, p.angle_deg, p.translate, p.scale);
        }
        if p.brightness_first {
            brighten(&mut x, p.brightness);
            contrast(&mut x, p.contrast);
        } else {
            contrast(&mut x, p.contrast);
            brighten(&mut x, p.brightness);
        }
        gaussian_blur(&mut x, n, p.blur_sigma);
        let mut out = Vec::with_capacity(3 * n * n);
        for c in 0..3 {
            out.extend(x.iter().map(|v| (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]));
        }
        out
    }
}

/// The grey plane of `img`: itself, or the ITU-R 601 luma of an RGB image.
fn grey(img: &Image) -> Vec<f32> {
    if img.channels == 1 {
        return img.plane(0).to_vec();
    }
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    (0..r.len())
        .map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i])
        .collect()
}

/// The `[left, top, w, h]` crop of `img`'s grey plane resized to `n` x `n` with the same
/// antialiasing bilinear filter as [`super::image::eval_transform`].
fn resized_crop(img: &Image, [left, top, w, h]: [usize; 4], n: usize) -> Vec<f32> {
    assert!(
        (img.channels == 1 || img.channels == 3)
            && img.data.len() == img.width * img.height * img.channels,
        "Augment: image of {} values is not {} plane(s) of {} x {}",
        img.data.len(),
        img.channels,
        img.width,
        img.height
    );
    if w == 0 || h == 0 || left + w > img.width || top + h > img.height {
        return vec![0.0; n * n];
    }
    let plane = grey(img);
    let crop: Vec<f32> = (top..top + h)
        .flat_map(|y| {
            plane[y * img.width + left..y * img.width + left + w]
                .iter()
                .copied()
        })
        .collect();
    if (w, h) == (n, n) {
        return crop;
    }
    let src: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(w as u32, h as u32, crop).expect("the crop holds w * h values");
    imageops::resize(&src, n as u32, n as u32, FilterType::Triangle).into_raw()
}

/// Rotation by `angle_deg` (counter-clockwise) about the centre, scaling by `scale` and
/// translation by `t` pixels of an `n` x `n` plane; bilinear sampling, black outside.
fn affine(src: &[f32], n: usize, angle_deg: f32, t: (f32, f32), scale: f32) -> Vec<f32> {
    let c = (n as f32 - 1.0) / 2.0;
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    let at = |x: isize, y: isize| {
        let inside = x >= 0 && y >= 0 && (x as usize) < n && (y as usize) < n;
        if inside {
            src[y as usize * n + x as usize]
        } else {
            0.0
        }
    };
    let mut out = vec![0.0f32; n * n];
    for (y, row) in out.chunks_exact_mut(n).enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            // The inverse map: output pixel -> source position.
            let dx = (x as f32 - c - t.0) / scale;
            let dy = (y as f32 - c - t.1) / scale;
            let sx = c + cos * dx - sin * dy;
            let sy = c + sin * dx + cos * dy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            *v = (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1, y0))
                + fy * ((1.0 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
        }
    }
    out
}

/// Brightness as torchvision: scaled by `factor`, clamped to [0, 1].
fn brighten(x: &mut [f32], factor: f32) {
    for v in x {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// Contrast as torchvision: blended with the mean grey, `factor * v + (1 - factor) * mean`,
/// clamped to [0, 1].
fn contrast(x: &mut [f32], factor: f32) {
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() as f32 / x.len().max(1) as f32;
    for v in x {
        *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0);
    }
}

/// Index `i` mirrored into [0, n) without repeating the edge (-1 -> 1, n -> n - 2), as
/// torchvision's reflect padding.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Separable Gaussian blur of an `n` x `n` plane, radius `ceil(3 sigma)`, reflected borders.
fn gaussian_blur(x: &mut [f32], n: usize, sigma: f32) {
    if sigma <= 0.0 {
        return;
    }
    let r = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-r..=r)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut tmp = vec![0.0f32; n * n];
    for y in 0..n {
        for xx in 0..n {
            tmp[y * n + xx] = (-r..=r)
                .zip(&kernel)
                .map(|(d, k)| k * x[y * n + reflect(xx as isize + d, n)])
                .sum();
        }
    }
    for y in 0..n {
        for xx in 0..n {
            x[y * n + xx] = (-r..=r)
                .zip(&kernel)
                .map(|(d, k)| k * tmp[reflect(y as isize + d, n) * n + xx])
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::{eval_transform, load_image};
    use super::*;
    use std::path::Path;

    #[test]
    fn augmentation_presets_round_trip_and_differ() {
        for a in [Augmentation::Paper, Augmentation::Mild, Augmentation::None] {
            assert_eq!(a.name().parse::<Augmentation>().unwrap(), a);
            assert_eq!(a.settings(40).out_size, 40);
        }
        assert_eq!(Augmentation::Paper.settings(224), Augment::default());
        let mild = Augmentation::Mild.settings(64);
        assert_eq!(mild.hflip, 0.0);
        assert!(mild.crop_scale.0 > Augment::default().crop_scale.0);
        assert_eq!(Augmentation::None.settings(48), Augment::identity(48));
        assert!("strong".parse::<Augmentation>().is_err());
    }

    fn in_range(v: f32, (lo, hi): (f32, f32)) -> bool {
        lo <= v && v <= hi
    }

    #[test]
    fn drawn_parameters_stay_in_their_ranges() {
        let aug = Augment::default();
        aug.validate().unwrap();
        let mut rng = Rng::new(5);
        let (w, h) = (300usize, 260usize);
        let (mut flips, mut brightness_first) = (0, 0);
        for _ in 0..1000 {
            let p = aug.sample(w, h, &mut rng);
            let [left, top, cw, ch] = p.crop;
            assert!(left + cw <= w && top + ch <= h, "{p:?}");
            // Rounding the sides moves the area by at most about (cw + ch) / 2 pixels.
            let slack = (cw + ch) as f32 / (w * h) as f32;
            let area = (cw * ch) as f32 / (w * h) as f32;
            assert!(in_range(area, (0.6 - slack, 1.0)), "area {area}: {p:?}");
            let ratio = cw as f32 / ch as f32;
            assert!(in_range(ratio, (0.74, 1.34)), "ratio {ratio}: {p:?}");
            assert!(in_range(p.angle_deg, (-20.0, 20.0)), "{p:?}");
            let t = 0.1 * 224.0;
            assert!(in_range(p.translate.0, (-t, t)) && in_range(p.translate.1, (-t, t)));
            assert!(in_range(p.scale, (0.95, 1.05)), "{p:?}");
            assert!(in_range(p.brightness, (0.6, 1.4)), "{p:?}");
            assert!(in_range(p.contrast, (0.6, 1.4)), "{p:?}");
            assert!(in_range(p.blur_sigma, (0.1, 3.0)), "{p:?}");
            flips += p.flip as usize;
            brightness_first += p.brightness_first as usize;
        }
        assert!((420..580).contains(&flips), "{flips} flips in 1000");
        assert!((420..580).contains(&brightness_first));
    }

    fn test_image(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                    0.5 + 0.3 * (7.0 * u).sin() * (5.0 * v).cos() + 0.1 * u
                })
            })
            .collect();
        Image::new(w, h, 1, data).unwrap()
    }

    #[test]
    fn deterministic_per_seed() {
        let aug = Augment {
            out_size: 48,
            ..Augment::default()
        };
        let img = test_image(90, 80);
        let a = aug.apply(&img, &mut Rng::new(11));
        let b = aug.apply(&img, &mut Rng::new(11));
        let c = aug.apply(&img, &mut Rng::new(12));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
    }

    fn identity(out_size: usize) -> Augment {
        Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: 0.0,
            rotate_deg: 0.0,
            translate: 0.0,
            scale: (1.0, 1.0),
            brightness: (1.0, 1.0),
            contrast: (1.0, 1.0),
            blur_sigma: (0.1, 0.1),
            out_size,
        }
    }

    #[test]
    fn identity_settings_are_a_plain_resize() {
        for (size, out) in [(64, 32), (50, 50), (40, 72)] {
            let img = test_image(size, size);
            let (x, p) = identity(out).apply(&img, &mut Rng::new(3));
            assert_eq!(p.crop, [0, 0, size, size]);
            let want = eval_transform(&img, out, out);
            assert_eq!(x.len(), want.len());
            let worst = x
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{size} -> {out}: max difference {worst}");
        }
    }

    /// A black `n` x `n` plane with one white pixel at (`x`, `y`); where the geometric steps put
    /// it.
    fn move_pixel(aug: &Augment, p: &Params, n: usize, x: usize, y: usize) -> (usize, usize) {
        let mut data = vec![0.0; n * n];
        data[y * n + x] = 1.0;
        let out = aug.apply_params(&Image::new(n, n, 1, data).unwrap(), p);
        let best = (0..n * n)
            .max_by(|&a, &b| out[a].total_cmp(&out[b]))
            .unwrap();
        (best % n, best / n)
    }

    #[test]
    fn flip_and_rotation_directions() {
        let n = 21;
        let aug = Augment {
            blur_sigma: (0.0, 0.0),
            ..identity(n)
        };
        let base = aug.sample(n, n, &mut Rng::new(0));
        assert_eq!(move_pixel(&aug, &base, n, 15, 10), (15, 10));
        let flip = Params {
            flip: true,
            ..base.clone()
        };
        assert_eq!(move_pixel(&aug, &flip, n, 15, 10), (5, 10));
        // Counter-clockwise: a point right of the centre goes up.
        let rot = Params {
            angle_deg: 90.0,
            ..base.clone()
        };
        assert_eq!(move_pixel(&aug, &rot, n, 15, 10), (10, 5));
        let shift = Params {
            translate: (3.0, -2.0),
            ..base.clone()
        };
        assert_eq!(move_pixel(&aug, &shift, n, 15, 10), (18, 8));
        let zoom = Params { scale: 2.0, ..base };
        assert_eq!(move_pixel(&aug, &zoom, n, 13, 10), (16, 10));
    }

    #[test]
    fn jitter_and_blur() {
        let n = 16;
        let flat = Image::new(n, n, 1, vec![0.4; n * n]).unwrap();
        let aug = identity(n);
        let mut p = aug.sample(n, n, &mut Rng::new(0));
        p.brightness = 1.5;
        p.blur_sigma = 2.0;
        let x = aug.apply_params(&flat, &p);
        let want = (0.6 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!(
            x[..n * n].iter().all(|v| (v - want).abs() < 1e-5),
            "a flat image stays flat"
        );
        // Contrast 0 leaves the mean everywhere.
        let img = test_image(n, n);
        p.brightness = 1.0;
        p.contrast = 0.0;
        let mean = img.data.iter().sum::<f32>() / (n * n) as f32;
        let x = aug.apply_params(&img, &p);
        let want = (mean - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!(x[..n * n].iter().all(|v| (v - want).abs() < 1e-4));
        // Blur keeps the mean (reflected borders) and lowers the variance.
        p.contrast = 1.0;
        let sharp = aug.apply_params(
            &img,
            &Params {
                blur_sigma: 0.0,
                ..p.clone()
            },
        );
        let blurred = aug.apply_params(&img, &p);
        let stats = |v: &[f32]| {
            let m = v.iter().sum::<f32>() / v.len() as f32;
            (
                m,
                v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32,
            )
        };
        let (ms, vs) = stats(&sharp[..n * n]);
        let (mb, vb) = stats(&blurred[..n * n]);
        assert!(
            (ms - mb).abs() < 0.05 && vb < 0.8 * vs,
            "{ms} {vs} / {mb} {vb}"
        );
    }

    #[test]
    fn real_radiograph() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        let path = dir.join("chest_xray_rg1.png");
        assert!(
            path.exists(),
            "{} is missing: the test needs the shared fixtures folder {}",
            path.display(),
            dir.display()
        );
        let img = load_image(&path).unwrap();
        let aug = Augment::default();
        let mut rng = Rng::new(2024);
        let n = aug.out_size * aug.out_size;
        for _ in 0..3 {
            let (x, p) = aug.apply(&img, &mut rng);
            assert_eq!(x.len(), 3 * n);
            let lo = (0.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0] - 1e-4;
            let hi = (1.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2] + 1e-4;
            assert!(
                x.iter().all(|v| v.is_finite() && *v >= lo && *v <= hi),
                "{p:?}"
            );
            let grey: Vec<f32> = x[..n]
                .iter()
                .map(|v| v * IMAGENET_STD[0] + IMAGENET_MEAN[0])
                .collect();
            let mean = grey.iter().sum::<f32>() / n as f32;
            let var = grey.iter().map(|g| (g - mean) * (g - mean)).sum::<f32>() / n as f32;
            assert!(
                mean > 0.05 && mean < 0.95 && var.sqrt() > 0.05,
                "{mean} {var}: {p:?}"
            );
            // Grey replicated: channel 2 is channel 0 renormalised.
            for i in (0..n).step_by(331) {
                let g2 = x[2 * n + i] * IMAGENET_STD[2] + IMAGENET_MEAN[2];
                assert!((g2 - grey[i]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = [
            Augment {
                crop_scale: (0.8, 0.6),
                ..Augment::default()
            },
            Augment {
                crop_scale: (0.0, 1.0),
                ..Augment::default()
            },
            Augment {
                hflip: 1.5,
                ..Augment::default()
            },
            Augment {
                scale: (-1.0, 1.0),
                ..Augment::default()
            },
            Augment {
                blur_sigma: (f32::NAN, 1.0),
                ..Augment::default()
            },
            Augment {
                out_size: 0,
                ..Augment::default()
            },
        ];
        for aug in bad {
            let err = aug.validate().unwrap_err().to_string();
            assert!(err.starts_with("Augment: "), "{err}");
        }
    }
}

//! Images on the host: decoding PNG and JPEG (8 or 16 bit, grey or RGB, with or without alpha,
//! any size) into `f32` in [0, 1], and torchvision's evaluation transform for ImageNet models
//! (resize the shorter side, centre crop, grey to three channels, ImageNet normalisation).

use crate::error::{Error, Result};
use ::image::imageops::{self, FilterType};
use ::image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Luma};
use std::panic::AssertUnwindSafe;
use std::path::Path;

/// ImageNet channel means (R, G, B) on [0, 1] values, as torchvision's models expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A decoded image.
///
/// `data` holds `channels` planes (1 = grey, 3 = RGB; an alpha channel is dropped when decoding)
/// of `height` rows of `width` values each: planar and row-major, so the value of channel `c`
/// at row `y`, column `x` is `data[(c * height + y) * width + x]`. Values are in [0, 1]: 8-bit
/// samples divided by 255, 16-bit samples by 65535.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// Checks that `data` holds `channels` (1 or 3) planes of `width` x `height` values.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Image> {
        if channels != 1 && channels != 3 {
            return Err(Error::Invalid {
                op: "Image::new",
                why: format!("{channels} channels: use 1 (grey) or 3 (RGB)"),
            });
        }
        if data.len() != width * height * channels {
            return Err(Error::Invalid {
                op: "Image::new",
                why: format!(
                    "{} values for {channels} plane(s) of {width} x {height} (expected {})",
                    data.len(),
                    width * height * channels
                ),
            });
        }
        Ok(Image {
            width,
            height,
            channels,
            data,
        })
    }

    /// The `height * width` values of channel `c`.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    /// The value of channel `c` at row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// Decodes the PNG or JPEG file at `path` (the format is told by the content, not the
/// extension). An unreadable, truncated or corrupt file, or one of another format, is an
/// [`Error::Invalid`] with op `load_image` whose message names the file and the reason; a
/// loader can skip it and go on.
pub fn load_image(path: &Path) -> Result<Image> {
    let fail = |why: String| Error::Invalid {
        op: "load_image",
        why: format!("{}: {why}", path.display()),
    };
    let reader = ImageReader::open(path)
        .map_err(|e| fail(format!("cannot open it: {e}")))?
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(fail(format!(
                "it is a {other:?} image; only PNG and JPEG are supported"
            )));
        }
        None => {
            return Err(fail(
                "not a PNG or JPEG image (its content matches no known image format)".into(),
            ))
        }
    }
    // The decoders return errors on bad input; the guard only makes sure that a decoder bug on
    // some exotic corrupt file costs that file, not the whole run.
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| reader.decode()))
        .map_err(|_| fail("the image decoder crashed on it (corrupt file?)".into()))?
        .map_err(|e| fail(format!("cannot decode it: {e}")))?;
    from_dynamic(decoded).map_err(fail)
}

/// Grey (with or without alpha) becomes one plane, anything with colour three; alpha is dropped
/// (not composited), 16-bit samples are scaled by 1/65535.
fn from_dynamic(img: DynamicImage) -> std::result::Result<Image, String> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(format!("the image has no pixels ({width} x {height})"));
    }
    if img.color().has_color() {
        let rgb = img.to_rgb32f();
        let n = width * height;
        let mut data = vec![0.0f32; 3 * n];
        for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            data[i] = px[0];
            data[n + i] = px[1];
            data[2 * n + i] = px[2];
        }
        Ok(Image {
            width,
            height,
            channels: 3,
            data,
        })
    } else {
        Ok(Image {
            width,
            height,
            channels: 1,
            data: img.to_luma32f().into_raw(),
        })
    }
}

/// The (width, height) torchvision's `Resize(resize)` gives an image of `width` x `height`: the
/// shorter side becomes `resize`, the longer `int(resize * long / short)` (truncated).
pub fn resized_size(width: usize, height: usize, resize: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // As torchvision: an exact integer product, one correctly rounded division, truncation.
    let new_long = ((resize * long) as f64 / short.max(1) as f64) as usize;
    if width <= height {
        (resize, new_long)
    } else {
        (new_long, resize)
    }
}

/// Where a centre crop of `crop` starts along an axis of `size`, as torchvision's `center_crop`
/// computes it: `round((size - crop) / 2)` with Python's round-half-to-even; when the image is
/// smaller than the crop it is first padded with zeros, `(crop - size) // 2` before it, which
/// makes the start negative.
fn crop_start(size: usize, crop: usize) -> isize {
    if size >= crop {
        ((size - crop) as f64 / 2.0).round_ties_even() as isize
    } else {
        -(((crop - size) / 2) as isize)
    }
}

/// torchvision's evaluation transform for ImageNet models,
/// `Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize(IMAGENET_MEAN, IMAGENET_STD)`,
/// with grey images replicated to three channels. Output: planar `[3, crop, crop]` (CHW).
///
/// - Resize: the shorter side becomes `resize` ([`resized_size`]), bilinear. We use
///   `image::imageops::resize` with `FilterType::Triangle`, which, like PIL's BILINEAR (what
///   torchvision uses on PIL images, and `antialias=True` on tensors), widens the triangle
///   filter by the scale factor when shrinking, so it antialiases. It works in f32 where PIL
///   rounds an 8-bit image back to 8 bits after resizing, so values differ from torchvision's
///   by up to about half a grey level (0.5 / 255) before normalisation.
/// - Centre crop: starts at `round((h - crop) / 2)`, `round((w - crop) / 2)` (half to even, as
///   Python); an image smaller than the crop is padded with zeros (black) as torchvision does.
/// - Normalise: `(v - mean[c]) / std[c]`.
///
/// # Panics
/// When `resize` or `crop` is 0, or `img` breaks the layout [`Image::new`] checks (programming
/// errors: [`load_image`] never returns such an image).
pub fn eval_transform(img: &Image, resize: usize, crop: usize) -> Vec<f32> {
    assert!(
        resize > 0 && crop > 0,
        "eval_transform: resize ({resize}) and crop ({crop}) must be positive"
    );
    assert!(
        (img.channels == 1 || img.channels == 3)
            && img.data.len() == img.width * img.height * img.channels,
        "eval_transform: image of {} values is not {} plane(s) of {} x {}",
        img.data.len(),
        img.channels,
        img.width,
        img.height
    );
    let (w, h) = resized_size(img.width, img.height, resize);
    let planes: Vec<Vec<f32>> = (0..img.channels)
        .map(|c| {
            let plane = img.plane(c);
            if (w, h) == (img.width, img.height) || img.width == 0 || img.height == 0 {
                return plane.to_vec();
            }
            let src: ImageBuffer<Luma<f32>, &[f32]> =
                ImageBuffer::from_raw(img.width as u32, img.height as u32, plane)
                    .expect("a plane holds width * height values");
            imageops::resize(&src, w as u32, h as u32, FilterType::Triangle).into_raw()
        })
        .collect();
    // An empty image has nothing to resize: it is all padding.
    let (w, h) = if img.width == 0 || img.height == 0 {
        (0, 0)
    } else {
        (w, h)
    };
    let (top, left) = (crop_start(h, crop), crop_start(w, crop));
    let mut out = vec![0.0f32; 3 * crop * crop];
    for (c, dst) in out.chunks_exact_mut(crop * crop).enumerate() {
        let plane = &planes[if img.channels == 1 { 0 } else { c }];
        let (mean, std) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        for y in 0..crop {
            let sy = y as isize + top;
            for x in 0..crop {
                let sx = x as isize + left;
                let inside = sy >= 0 && (sy as usize) < h && sx >= 0 && (sx as usize) < w;
                let v = if inside {
                    plane[sy as usize * w + sx as usize]
                } else {
                    0.0
                };
                dst[y * crop + x] = (v - mean) / std;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::{LumaA, Rgb, Rgba};
    use std::path::PathBuf;

    /// A fresh folder of this test's own under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("convirt-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fixture(name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: it comes from the shared fixtures folder (../shared/fixtures next to the \
             crate, see its README.md)",
            path.display()
        );
        path
    }

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn decodes_the_real_radiograph() {
        let img = load_image(&fixture("chest_xray_rg1.png")).unwrap();
        assert_eq!(img.channels, 1, "the radiograph is grey");
        assert_eq!(
            img.width.max(img.height),
            1024,
            "resized to 1024 px: {} x {}",
            img.width,
            img.height
        );
        assert!(
            img.width >= 512 && img.height >= 512,
            "{} x {}",
            img.width,
            img.height
        );
        assert_eq!(img.data.len(), img.width * img.height);
        let (lo, hi) = img
            .data
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi),
            "values in [0, 1]: {lo} .. {hi}"
        );
        assert!(hi - lo > 0.5, "a radiograph has contrast: {lo} .. {hi}");
        let mean = img.data.iter().sum::<f32>() / img.data.len() as f32;
        assert!(mean > 0.05 && mean < 0.95, "mean grey {mean}");

        let x = eval_transform(&img, 256, 224);
        assert_eq!(x.len(), 3 * 224 * 224);
        assert!(x.iter().all(|v| v.is_finite()));
        // Grey replicated: the planes differ only by the per-channel normalisation.
        let n = 224 * 224;
        for i in (0..n).step_by(997) {
            let v0 = x[i] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
            let v2 = x[2 * n + i] * IMAGENET_STD[2] + IMAGENET_MEAN[2];
            assert!(close(v0, v2, 1e-5), "pixel {i}: {v0} vs {v2}");
        }
    }

    #[test]
    fn decodes_16_bit_and_alpha_png() {
        let dir = scratch("png16");
        let values: Vec<u16> = vec![
            0, 1, 255, 256, 1000, 32768, 40000, 65534, 65535, 12345, 54321, 7,
        ];
        let grey16 = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(4, 3, values.clone()).unwrap();
        let path = dir.join("grey16.png");
        grey16.save(&path).unwrap();
        let img = load_image(&path).unwrap();
        assert_eq!((img.width, img.height, img.channels), (4, 3, 1));
        for (i, &v) in values.iter().enumerate() {
            assert!(
                close(img.data[i], v as f32 / 65535.0, 1e-7),
                "sample {i}: {} vs {v}",
                img.data[i]
            );
        }

        // 16-bit RGBA: alpha dropped, planes split.
        let rgba: Vec<u16> = (0..2 * 2 * 4).map(|i| (i * 4000) as u16).collect();
        let path = dir.join("rgba16.png");
        ImageBuffer::<Rgba<u16>, Vec<u16>>::from_raw(2, 2, rgba.clone())
            .unwrap()
            .save(&path)
            .unwrap();
        let img = load_image(&path).unwrap();
        assert_eq!((img.width, img.height, img.channels), (2, 2, 3));
        for p in 0..4 {
            for c in 0..3 {
                let want = rgba[p * 4 + c] as f32 / 65535.0;
                assert!(
                    close(img.at(c, p / 2, p % 2), want, 1e-7),
                    "pixel {p} channel {c}"
                );
            }
        }

        // 8-bit grey with alpha: one plane.
        let path = dir.join("la8.png");
        ImageBuffer::<LumaA<u8>, Vec<u8>>::from_raw(2, 1, vec![51, 0, 204, 255])
            .unwrap()
            .save(&path)
            .unwrap();
        let img = load_image(&path).unwrap();
        assert_eq!((img.width, img.height, img.channels), (2, 1, 1));
        assert!(
            close(img.data[0], 0.2, 1e-6) && close(img.data[1], 0.8, 1e-6),
            "{:?}",
            img.data
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decodes_rgb_jpeg() {
        let dir = scratch("jpeg");
        // Two colour halves, each a whole 16 x 16 block so chroma subsampling does not mix them.
        let (a, b) = ([200u8, 100, 50], [30u8, 160, 220]);
        let img = ImageBuffer::<Rgb<u8>, Vec<u8>>::from_fn(32, 16, |x, _| {
            Rgb(if x < 16 { a } else { b })
        });
        let path = dir.join("colour.jpg");
        let mut file = std::fs::File::create(&path).unwrap();
        JpegEncoder::new_with_quality(&mut file, 95)
            .encode_image(&img)
            .unwrap();
        drop(file);
        let dec = load_image(&path).unwrap();
        assert_eq!((dec.width, dec.height, dec.channels), (32, 16, 3));
        for (x, want) in [(8, a), (24, b)] {
            for (c, &level) in want.iter().enumerate() {
                let got = dec.at(c, 8, x);
                assert!(
                    close(got, level as f32 / 255.0, 0.03),
                    "x {x} channel {c}: {got} vs {level}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_errors_naming_them() {
        let dir = scratch("corrupt");
        let mut valid = Vec::new();
        ImageBuffer::<Luma<u8>, Vec<u8>>::from_fn(64, 64, |x, y| Luma([(x * 3 + y) as u8]))
            .write_to(&mut std::io::Cursor::new(&mut valid), ImageFormat::Png)
            .unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "garbage.png",
                b"\x89PNG\r\n\x1a\nthis is not really a png at all".to_vec(),
            ),
            ("truncated.png", valid[..valid.len() / 2].to_vec()),
            ("empty.jpg", Vec::new()),
            ("broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg body".to_vec()),
            ("notes.txt", b"FINDINGS: none.".to_vec()),
        ];
        for (name, bytes) in &cases {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            match load_image(&path) {
                Err(Error::Invalid { op, why }) => {
                    assert_eq!(op, "load_image");
                    assert!(why.contains(name), "the message names the file: {why}");
                }
                other => panic!("{name}: expected an error, got {other:?}"),
            }
        }
        let missing = dir.join("missing.png");
        let err = load_image(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.png") && err.contains("cannot open"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resized_size_follows_torchvision() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(1024, 1024, 256), (256, 256));
        assert_eq!(resized_size(2000, 2500, 256), (256, 320));
        assert_eq!(resized_size(100, 50, 256), (512, 256));
    }

    #[test]
    fn output_shape_and_constant_images() {
        for (w, h) in [(300, 200), (200, 300), (256, 256), (1000, 37), (10, 10)] {
            let img = Image::new(w, h, 1, vec![0.0; w * h]).unwrap();
            assert_eq!(
                eval_transform(&img, 256, 224).len(),
                3 * 224 * 224,
                "{w} x {h}"
            );
        }
        for v in [0.0f32, 0.3, 1.0] {
            let img = Image::new(300, 260, 1, vec![v; 300 * 260]).unwrap();
            let x = eval_transform(&img, 256, 224);
            for (c, plane) in x.chunks_exact(224 * 224).enumerate() {
                let want = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                assert!(
                    plane.iter().all(|&p| close(p, want, 1e-5)),
                    "value {v} channel {c}"
                );
            }
        }
        // A constant colour keeps its channels apart.
        let rgb = [0.9f32, 0.5, 0.1];
        let data: Vec<f32> = rgb.iter().flat_map(|&v| vec![v; 400 * 300]).collect();
        let x = eval_transform(&Image::new(400, 300, 3, data).unwrap(), 256, 224);
        for (c, plane) in x.chunks_exact(224 * 224).enumerate() {
            let want = (rgb[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!(plane.iter().all(|&p| close(p, want, 1e-5)), "channel {c}");
        }
    }

    /// Grey value of a gradient that identifies the pixel.
    fn gradient(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| x as f32 / 100.0 + y as f32 / 1000.0))
            .collect();
        Image::new(w, h, 1, data).unwrap()
    }

    #[test]
    fn centre_crop_placement() {
        // The shorter side already equals `resize`, so only the crop moves pixels. The third
        // and fourth cases put the start on a half: Python rounds 4.5 to 4 and 5.5 to 6.
        for (w, h, left, top) in [
            (12, 8, 4, 2),
            (8, 12, 2, 4),
            (13, 8, 4, 2),
            (15, 8, 6, 2),
            (8, 8, 2, 2),
        ] {
            let img = gradient(w, h);
            let x = eval_transform(&img, 8, 4);
            assert_eq!(x.len(), 3 * 4 * 4);
            for (c, plane) in x.chunks_exact(16).enumerate() {
                for y in 0..4 {
                    for xx in 0..4 {
                        let want =
                            (img.at(0, y + top, xx + left) - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                        let got = plane[y * 4 + xx];
                        assert!(
                            close(got, want, 1e-6),
                            "{w} x {h}, channel {c}, ({y}, {xx}): {got} vs {want}"
                        );
                    }
                }
            }
        }
        // A crop larger than the image pads with black, (crop - size) // 2 before it.
        let img = gradient(2, 3);
        let x = eval_transform(&img, 2, 5);
        let black = (0.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        for y in 0..5 {
            for xx in 0..5 {
                let (sy, sx) = (y as isize - 1, xx as isize - 1);
                let want = if (0..3).contains(&sy) && (0..2).contains(&sx) {
                    (img.at(0, sy as usize, sx as usize) - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
                } else {
                    black
                };
                assert!(close(x[y * 5 + xx], want, 1e-6), "padded ({y}, {xx})");
            }
        }
    }

    #[test]
    fn shrinking_antialiases() {
        // A one-pixel checkerboard halved: a bilinear filter widened by the scale factor gives
        // grey 0.5 inside the image; plain bilinear sampling would give 0 or 1.
        let (w, h) = (16, 16);
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| ((x + y) % 2) as f32))
            .collect();
        let x = eval_transform(&Image::new(w, h, 1, data).unwrap(), 8, 8);
        for y in 1..7 {
            for xx in 1..7 {
                let v = x[y * 8 + xx] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
                assert!(close(v, 0.5, 1e-5), "({y}, {xx}): {v}");
            }
        }
    }
}

//! The images of an evaluation and the encoders' features of them.
//!
//! An evaluation compares image encoders that differ only in their initial weights: random,
//! ConVIRT-pretrained (a checkpoint written by `examples/train`) or ImageNet (torchvision
//! names). Each encodes the same images once, in eval mode and without its heads; probes and
//! retrieval then work on those features.

use crate::autograd::no_grad;
use crate::data::synthetic::{corpus_size, generate};
use crate::data::{eval_transform, load_image, Augment, Rng};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::resnet::{Arch, Head, ResNet};
use crate::nn::{StateDict, WeightSource};
use crate::tensor::Tensor;
use crate::train::CHECKPOINT_FILE;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One image of an evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageItem {
    /// Sample `index` of the synthetic corpus of `seed`.
    Synthetic { index: u64, seed: u64 },
    /// A PNG or JPEG file.
    File(PathBuf),
}

impl ImageItem {
    /// The planar `[3, size, size]` pixels the encoders take: a synthetic picture resized
    /// whole (as training's validation sees it), a file through torchvision's evaluation
    /// transform (resize to 8/7 of `size`, centre crop). Both ImageNet-normalised.
    pub fn pixels(&self, size: usize) -> Result<Vec<f32>> {
        match self {
            ImageItem::Synthetic { index, seed } => {
                let sample = generate(*index, corpus_size(size), *seed);
                Ok(Augment::identity(size)
                    .apply(&sample.image, &mut Rng::new(0))
                    .0)
            }
            ImageItem::File(path) => Ok(eval_transform(&load_image(path)?, size * 8 / 7, size)),
        }
    }
}

/// Where an image encoder's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageInit {
    /// torchvision's initialiser, from a seed.
    Random { seed: u64 },
    /// The image encoder of a ConVIRT checkpoint folder (heads dropped).
    ConVirt(PathBuf),
    /// A torchvision-named ResNet state dict (its `fc` is dropped).
    ImageNet(PathBuf),
}

impl ImageInit {
    /// A short name for tables and plots.
    pub fn name(&self) -> &'static str {
        match self {
            ImageInit::Random { .. } => "random",
            ImageInit::ConVirt(_) => "convirt",
            ImageInit::ImageNet(_) => "imagenet",
        }
    }

    /// A fresh encoder of `arch` with these weights (its `fc` is never used here).
    pub fn load(&self, gpu: &Arc<Gpu>, arch: Arch) -> Result<ResNet> {
        match self {
            ImageInit::Random { seed } => ResNet::random(gpu, arch, 1000, *seed),
            ImageInit::ImageNet(path) => ResNet::load(gpu, path, arch, 1000, Head::Replaceable),
            ImageInit::ConVirt(dir) => {
                let path = dir.join(CHECKPOINT_FILE);
                let mut src = WeightSource::from_file(gpu, &path)?
                    .ignore("adam.")
                    .ignore("model.text.")
                    .ignore("model.image_head.")
                    .ignore("model.text_head.");
                let net = src.scoped("model", |s| {
                    s.scoped("image", |s| {
                        s.allow_replacing_mut("fc.");
                        ResNet::new(s, arch, 1000)
                    })
                })?;
                src.finish()?;
                Ok(net)
            }
        }
    }
}

/// Encoder features of a list of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `[kept.len(), dim]`, row-major.
    pub data: Vec<f32>,
    pub dim: usize,
    /// Which items have a row (an unreadable image is skipped).
    pub kept: Vec<usize>,
    /// The skipped items and why.
    pub skipped: Vec<(usize, String)>,
}

impl Features {
    /// Row of item `i` of the list, if it was read.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        let r = self.kept.binary_search(&i).ok()?;
        Some(&self.data[r * self.dim..(r + 1) * self.dim])
    }
}

/// Pooled features of `items` at `size` px, in eval mode, `batch` images per forward;
/// `progress` is told how many items are done after each batch. An image that cannot be read
/// is skipped (reported in [`Features::skipped`]); if none can, it is an error.
pub fn image_features(
    net: &ResNet,
    items: &[ImageItem],
    size: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Features> {
    let gpu = net.gpu();
    let dim = net.arch.features();
    let mut out = Features {
        data: Vec::with_capacity(items.len() * dim),
        dim,
        kept: Vec::new(),
        skipped: Vec::new(),
    };
    let mut done = 0;
    for chunk in (0..items.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let mut pixels = Vec::new();
        let mut rows = Vec::new();
        for &i in chunk {
            match items[i].pixels(size) {
                Ok(p) => {
                    pixels.extend(p);
                    rows.push(i);
                }
                Err(e) => out.skipped.push((i, e.to_string())),
            }
        }
        if !rows.is_empty() {
            let x = Tensor::from_slice(gpu, &pixels, &[rows.len(), 3, size, size])?;
            out.data
                .extend(no_grad(|| net.features(&x, false)?.to_vec())?);
            out.kept.extend(rows);
        }
        done += chunk.len();
        progress(done);
    }
    if out.kept.is_empty() && !items.is_empty() {
        return Err(Error::Invalid {
            op: "image_features",
            why: format!(
                "none of the {} images could be read; the first: {}",
                items.len(),
                out.skipped.first().map_or("", |s| s.1.as_str())
            ),
        });
    }
    Ok(out)
}

/// Writes features to a safetensors file (`features`, `kept`), atomically, so a later
/// evaluation of the same encoder and images reuses them.
pub fn save_features(gpu: &Arc<Gpu>, f: &Features, path: &Path) -> Result<()> {
    let kept: Vec<f32> = f.kept.iter().map(|&i| i as f32).collect();
    let tensors = vec![
        (
            "features".to_string(),
            Tensor::from_slice(gpu, &f.data, &[f.kept.len(), f.dim])?,
        ),
        (
            "kept".to_string(),
            Tensor::from_slice(gpu, &kept, &[kept.len()])?,
        ),
    ];
    StateDict::write(path, &tensors, HashMap::new())
}

/// Reads what [`save_features`] wrote; None when the file is absent or does not hold features
/// of `dim` for items below `items` (then they are computed again).
pub fn load_features(path: &Path, items: usize, dim: usize) -> Option<Features> {
    let dict = StateDict::read(path).ok()?;
    let (shape, data) = dict.tensors.get("features")?;
    let (_, kept) = dict.tensors.get("kept")?;
    let kept: Vec<usize> = kept.iter().map(|&k| k as usize).collect();
    let fits = shape.len() == 2
        && shape[1] == dim
        && shape[0] == kept.len()
        && kept.iter().all(|&k| k < items);
    fits.then(|| Features {
        data: data.clone(),
        dim,
        kept,
        skipped: Vec::new(),
    })
}

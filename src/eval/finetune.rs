//! Fine-tuning: the image encoder trained together with a new linear head on the labelled
//! images, the encoder at its own, lower learning rate (the pretrained features should move
//! less than the new head).

use super::features::ImageItem;
use super::probe::{score, Labels, ProbeScore};
use crate::autograd::no_grad;
use crate::data::Rng;
use crate::error::{Error, Result};
use crate::models::resnet::ResNet;
use crate::nn::{Linear, WeightSource};
use crate::ops::adam::Adam;
use crate::ops::classify::classification_loss;
use crate::tensor::Tensor;

/// How a fine-tuning run goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FineTuneOptions {
    /// Optimiser steps (minibatches drawn with replacement from the labelled items).
    pub steps: usize,
    pub batch: usize,
    pub encoder_lr: f32,
    pub head_lr: f32,
    pub weight_decay: f32,
}

impl Default for FineTuneOptions {
    fn default() -> FineTuneOptions {
        FineTuneOptions {
            steps: 30,
            batch: 32,
            encoder_lr: 1e-4,
            head_lr: 1e-3,
            weight_decay: 1e-6,
        }
    }
}

/// Pixels of labelled images, read once: fine-tuning visits them many times.
pub struct PixelSet {
    pub pixels: Vec<Vec<f32>>,
    pub labels: Labels,
    pub size: usize,
}

impl PixelSet {
    /// Reads `items` at `size` px; an unreadable one is an error naming it (the caller has
    /// already dropped what feature extraction could not read).
    pub fn read(items: &[ImageItem], labels: Labels, size: usize) -> Result<PixelSet> {
        if items.len() != labels.len() {
            return Err(Error::Invalid {
                op: "PixelSet",
                why: format!("{} images for {} labels", items.len(), labels.len()),
            });
        }
        let pixels = items
            .iter()
            .map(|item| item.pixels(size))
            .collect::<Result<Vec<_>>>()?;
        Ok(PixelSet {
            pixels,
            labels,
            size,
        })
    }

    fn tensor(&self, net: &ResNet, rows: &[usize]) -> Result<Tensor> {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|&r| self.pixels[r].iter().copied())
            .collect();
        Tensor::from_slice(net.gpu(), &data, &[rows.len(), 3, self.size, self.size])
    }
}

/// Fine-tunes `net` (consumed: its weights change) with a new head on `train`, then scores it
/// on `test` in eval mode.
pub fn fine_tune(
    net: ResNet,
    train: &PixelSet,
    test: &PixelSet,
    opts: FineTuneOptions,
    seed: u64,
) -> Result<ProbeScore> {
    let n = train.labels.len();
    if n == 0 || test.labels.is_empty() {
        return Err(Error::Invalid {
            op: "fine_tune",
            why: "needs labelled training and test images".into(),
        });
    }
    let gpu = net.gpu().clone();
    let head = Linear::new(
        &mut WeightSource::random(&gpu, seed),
        "head",
        net.arch.features(),
        train.labels.outputs(),
        true,
    )?;
    let encoder_params: Vec<Tensor> = net
        .parameters()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("fc."))
        .map(|(_, t)| t)
        .collect();
    let head_params: Vec<Tensor> = std::iter::once(head.weight.clone())
        .chain(head.bias.clone())
        .collect();
    let mut encoder_adam = Adam::new(&encoder_params, opts.encoder_lr, opts.weight_decay)?;
    let mut head_adam = Adam::new(&head_params, opts.head_lr, opts.weight_decay)?;
    let mut rng = Rng::new(seed).fork(0xF1E);
    for _ in 0..opts.steps {
        let rows: Vec<usize> = (0..opts.batch.min(n).max(1))
            .map(|_| rng.below(n as u64) as usize)
            .collect();
        for p in encoder_params.iter().chain(&head_params) {
            p.zero_grad();
        }
        let x = train.tensor(&net, &rows)?;
        let logits = head.forward(&net.features(&x, true)?)?;
        let labels = train.labels.subset(&rows);
        classification_loss(&logits, labels.targets())?.backward()?;
        encoder_adam.step(&encoder_params)?;
        head_adam.step(&head_params)?;
    }
    let mut logits = Vec::new();
    let all: Vec<usize> = (0..test.labels.len()).collect();
    for rows in all.chunks(opts.batch.max(1)) {
        let x = test.tensor(&net, rows)?;
        logits.extend(no_grad(|| {
            head.forward(&net.features(&x, false)?)?.to_vec()
        })?);
    }
    Ok(score(&logits, &test.labels))
}

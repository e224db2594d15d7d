//! ConVIRT training: the step (both encoders, heads, the fused InfoNCE loss, backward, Adam),
//! validation, the learning-rate schedule and checkpoints that resume the same run.

mod checkpoint;
mod config;
mod metrics;
mod plateau;

pub use crate::plot::plot_loss_curve;
pub use checkpoint::{load_checkpoint, save_checkpoint, CHECKPOINT_FILE};
pub use config::TrainConfig;
pub use metrics::Metrics;
pub use plateau::Plateau;

use crate::autograd::no_grad;
use crate::data::loader::PairBatch;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::bert::Mode;
use crate::models::convirt::ConVirt;
use crate::nn::WeightSource;
use crate::ops::adam::{clip_grad_norm, Adam};
use crate::ops::infonce::infonce;
use crate::tensor::Tensor;
use std::sync::Arc;

/// A model, its optimiser and schedule, and where the run stands.
pub struct Trainer {
    pub config: TrainConfig,
    pub model: ConVirt,
    pub tokenizer: Tokenizer,
    pub adam: Adam,
    pub plateau: Plateau,
    /// Optimiser steps taken.
    pub step: usize,
    params: Vec<Tensor>,
}

impl Trainer {
    /// A fresh run: weights from `src` (a seeded initialiser, or files of pretrained weights).
    pub fn new(
        config: TrainConfig,
        tokenizer: Tokenizer,
        src: &mut WeightSource,
    ) -> Result<Trainer> {
        let model = ConVirt::new(src, config.arch, &config.text)?;
        model.text.freeze(config.frozen_layers);
        Trainer::from_parts(config, tokenizer, model)
    }

    /// A fresh run on a model built by the caller (encoders loaded from pretrained weights):
    /// the text encoder is frozen as the config says.
    pub fn from_model(
        config: TrainConfig,
        tokenizer: Tokenizer,
        model: ConVirt,
    ) -> Result<Trainer> {
        model.text.freeze(config.frozen_layers);
        Trainer::from_parts(config, tokenizer, model)
    }

    pub(crate) fn from_parts(
        config: TrainConfig,
        tokenizer: Tokenizer,
        model: ConVirt,
    ) -> Result<Trainer> {
        let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let adam = Adam::new(&params, config.lr, config.weight_decay)?;
        let plateau = Plateau::new(config.plateau_factor, config.plateau_patience);
        Ok(Trainer {
            config,
            model,
            tokenizer,
            adam,
            plateau,
            step: 0,
            params,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        self.params[0].gpu()
    }

    /// A batch's images on the device, [N, 3, size, size].
    fn images(&self, batch: &PairBatch) -> Result<Tensor> {
        let s = self.config.image_size;
        Tensor::from_slice(self.gpu(), &batch.images, &[batch.len(), 3, s, s])
    }

    /// The loss of one batch (`train`: batch statistics, dropout, a graph for backward).
    fn loss(&self, batch: &PairBatch, train: bool) -> Result<Tensor> {
        let images = self.images(batch)?;
        let texts: Vec<&str> = batch.texts.iter().map(String::as_str).collect();
        let tokens = self.tokenizer.encode(&texts)?;
        let mode = if train {
            Mode::Train {
                seed: self.config.seed ^ (self.step as u64).wrapping_mul(0x2545_F491),
            }
        } else {
            Mode::Eval
        };
        let v = self.model.embed_images(&images, train)?;
        let u = self.model.embed_texts(&tokens, mode)?;
        infonce(&v, &u, self.config.tau, self.config.lambda)
    }

    /// One optimiser step on `batch`; returns its loss. A NaN or infinite loss stops the run
    /// before the update, naming the step (the last checkpoint stays intact).
    pub fn train_step(&mut self, batch: &PairBatch) -> Result<f32> {
        for p in &self.params {
            p.zero_grad();
        }
        let loss = self.loss(batch, true)?;
        loss.backward()?;
        let value = loss.item()?;
        if !value.is_finite() {
            return Err(Error::Invalid {
                op: "train",
                why: format!("the loss is {value} at step {}; stopping before the update (lower the learning rate or enable gradient clipping)", self.step + 1),
            });
        }
        if let Some(max) = self.config.clip_grad_norm {
            clip_grad_norm(&self.params, max)?;
        }
        self.adam.step(&self.params)?;
        self.step += 1;
        Ok(value)
    }

    /// Re-estimates the image encoder's batch-norm running statistics on `batches` with the
    /// current weights (see [`ResNet::recompute_batch_norm_statistics`]), so that validation
    /// and the checkpoint judge the weights with their own statistics. Training steps use
    /// batch statistics and are unaffected.
    ///
    /// [`ResNet::recompute_batch_norm_statistics`]: crate::models::resnet::ResNet::recompute_batch_norm_statistics
    pub fn recompute_batch_norm_statistics(&mut self, batches: &[PairBatch]) -> Result<()> {
        let images = batches
            .iter()
            .map(|b| self.images(b))
            .collect::<Result<Vec<_>>>()?;
        self.model.image.recompute_batch_norm_statistics(&images)
    }

    /// Mean loss over validation batches (evaluation mode, no graph).
    pub fn validation_loss(&self, batches: &[PairBatch]) -> Result<f32> {
        let mut total = 0.0;
        for b in batches {
            total += no_grad(|| self.loss(b, false)?.item())?;
        }
        Ok(total / batches.len().max(1) as f32)
    }

    /// Feeds the schedule a validation loss; returns the new learning rate.
    pub fn schedule(&mut self, val_loss: f32) -> f32 {
        let factor = self.plateau.observe(val_loss);
        if factor != 1.0 {
            self.adam.set_lr(self.adam.lr() * factor);
        }
        self.adam.lr()
    }
}

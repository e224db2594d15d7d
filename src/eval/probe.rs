//! Linear probes: logistic regression on frozen encoder features, trained on the GPU with the
//! engine's own kernels (GEMM, the fused classification loss, Adam).
//!
//! Features are standardised with the training rows' mean and deviation (what scikit-learn
//! pipelines do before a logistic regression, and what makes one learning rate fit every
//! encoder), then a [`Linear`] layer is fitted by full-batch Adam with weight decay.

use super::metrics::{accuracy, auc, masked_auc};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Linear, WeightSource};
use crate::ops::adam::Adam;
use crate::ops::classify::{classification_loss, Targets};
use crate::tensor::Tensor;
use std::sync::Arc;

/// What a probe predicts for each item.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One class per item (softmax), `count` classes.
    Classes { classes: Vec<usize>, count: usize },
    /// `count` binary labels per item, row-major (per-class sigmoid); NaN = unlabelled.
    MultiLabel { values: Vec<f32>, count: usize },
}

impl Labels {
    /// The number of items.
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes { classes, .. } => classes.len(),
            Labels::MultiLabel { values, count } => values.len() / count.max(&1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Outputs of the classifier: classes, or labels.
    pub fn outputs(&self) -> usize {
        match self {
            Labels::Classes { count, .. } | Labels::MultiLabel { count, .. } => *count,
        }
    }

    /// The labels of the items `rows`, in that order.
    pub fn subset(&self, rows: &[usize]) -> Labels {
        match self {
            Labels::Classes { classes, count } => Labels::Classes {
                classes: rows.iter().map(|&r| classes[r]).collect(),
                count: *count,
            },
            Labels::MultiLabel { values, count } => Labels::MultiLabel {
                values: rows
                    .iter()
                    .flat_map(|&r| values[r * count..(r + 1) * count].iter().copied())
                    .collect(),
                count: *count,
            },
        }
    }

    pub(crate) fn targets(&self) -> Targets<'_> {
        match self {
            Labels::Classes { classes, .. } => Targets::Classes(classes),
            Labels::MultiLabel { values, .. } => Targets::MultiLabel(values),
        }
    }
}

/// How a probe is fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOptions {
    /// Full-batch Adam steps.
    pub steps: usize,
    pub lr: f32,
    /// L2 penalty (Adam's weight decay), the logistic regression's regulariser.
    pub weight_decay: f32,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions {
            steps: 300,
            lr: 0.01,
            weight_decay: 1e-3,
        }
    }
}

/// A fitted linear classifier over standardised features.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    linear: Linear,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl LinearProbe {
    /// Fits a probe to `features` (`[N, d]`, row-major, one row per item of `labels`).
    ///
    /// ```no_run
    /// # use convirt::Gpu;
    /// use convirt::eval::probe::{Labels, LinearProbe, ProbeOptions};
    /// # let gpu = Gpu::shared()?;
    /// let features = [0.0, 1.0, 1.0, 0.0, 0.1, 0.9, 0.9, 0.2];
    /// let labels = Labels::Classes { classes: vec![0, 1, 0, 1], count: 2 };
    /// let probe = LinearProbe::fit(&gpu, &features, 2, &labels, ProbeOptions::default(), 0)?;
    /// let scores = probe.scores(&features)?; // [4, 2] class probabilities
    /// # Ok::<(), convirt::Error>(())
    /// ```
    pub fn fit(
        gpu: &Arc<Gpu>,
        features: &[f32],
        d: usize,
        labels: &Labels,
        opts: ProbeOptions,
        seed: u64,
    ) -> Result<LinearProbe> {
        let n = labels.len();
        if d == 0 || n == 0 || features.len() != n * d {
            return Err(Error::Invalid {
                op: "LinearProbe::fit",
                why: format!(
                    "{} feature values for {n} labelled items of dimension {d}",
                    features.len()
                ),
            });
        }
        let (mean, inv_std) = standardisation(features, d);
        let linear = Linear::new(
            &mut WeightSource::random(gpu, seed),
            "probe",
            d,
            labels.outputs(),
            true,
        )?;
        let probe = LinearProbe {
            linear,
            mean,
            inv_std,
        };
        let x = probe.standardised(gpu, features)?;
        let params: Vec<Tensor> = std::iter::once(probe.linear.weight.clone())
            .chain(probe.linear.bias.clone())
            .collect();
        let mut adam = Adam::new(&params, opts.lr, opts.weight_decay)?;
        for _ in 0..opts.steps {
            for p in &params {
                p.zero_grad();
            }
            classification_loss(&probe.linear.forward(&x)?, labels.targets())?.backward()?;
            adam.step(&params)?;
        }
        Ok(probe)
    }

    fn standardised(&self, gpu: &Arc<Gpu>, features: &[f32]) -> Result<Tensor> {
        let d = self.mean.len();
        let x: Vec<f32> = features
            .chunks(d)
            .flat_map(|row| {
                row.iter()
                    .zip(self.mean.iter().zip(&self.inv_std))
                    .map(|(v, (m, s))| (v - m) * s)
            })
            .collect();
        Tensor::from_slice(gpu, &x, &[features.len() / d, d])
    }

    /// Logits `[M, C]` for `features` (`[M, d]`), row-major.
    pub fn scores(&self, features: &[f32]) -> Result<Vec<f32>> {
        let gpu = self.linear.weight.gpu().clone();
        no_grad(|| {
            self.linear
                .forward(&self.standardised(&gpu, features)?)?
                .to_vec()
        })
    }
}

/// Per-dimension mean and 1 / deviation (1 where a dimension is constant).
fn standardisation(features: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (features.len() / d) as f64;
    let mut mean = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in features.chunks(d) {
        for (k, &v) in row.iter().enumerate() {
            mean[k] += v as f64;
            sq[k] += (v as f64) * (v as f64);
        }
    }
    let inv_std = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| {
            let var = (s / n - (m / n) * (m / n)).max(0.0);
            if var > 1e-12 {
                (1.0 / var.sqrt()) as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.iter().map(|m| (m / n) as f32).collect(), inv_std)
}

/// How well scores (`[M, C]` logits) rank the true labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeScore {
    /// One-vs-rest AUC per class (None where the test items hold only one value).
    pub class_auc: Vec<Option<f64>>,
    /// Mean over the classes that have an AUC.
    pub mean_auc: f64,
    /// Argmax accuracy (classes), or the fraction of labelled entries on the right side of
    /// 0.5 (multi-label).
    pub accuracy: f64,
}

/// Scores a probe's logits against `labels`.
pub fn score(logits: &[f32], labels: &Labels) -> ProbeScore {
    let c = labels.outputs();
    let column =
        |values: &[f32], k: usize| -> Vec<f32> { values.chunks(c).map(|row| row[k]).collect() };
    let (class_auc, accuracy) = match labels {
        Labels::Classes { classes, .. } => {
            // Softmax probabilities: one-vs-rest AUC ranks items by p_k, not by the raw logit.
            let probs: Vec<f32> = logits
                .chunks(c)
                .flat_map(|row| {
                    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|z| (z - m).exp()).sum();
                    row.iter().map(move |z| (z - m).exp() / sum)
                })
                .collect();
            let aucs: Vec<Option<f64>> = (0..c)
                .map(|k| {
                    let truth: Vec<bool> = classes.iter().map(|&y| y == k).collect();
                    auc(&column(&probs, k), &truth)
                })
                .collect();
            let predicted: Vec<usize> = probs
                .chunks(c)
                .map(|row| super::metrics::top_k(row, 1)[0])
                .collect();
            (aucs, accuracy(&predicted, classes))
        }
        Labels::MultiLabel { values, .. } => {
            let aucs: Vec<Option<f64>> = (0..c)
                .map(|k| masked_auc(&column(logits, k), &column(values, k)))
                .collect();
            let (mut right, mut total) = (0usize, 0usize);
            for (z, y) in logits.iter().zip(values) {
                if !y.is_nan() {
                    total += 1;
                    right += ((*z > 0.0) == (*y > 0.5)) as usize;
                }
            }
            (aucs, right as f64 / total.max(1) as f64)
        }
    };
    let known: Vec<f64> = class_auc.iter().flatten().copied().collect();
    ProbeScore {
        mean_auc: known.iter().sum::<f64>() / known.len().max(1) as f64,
        class_auc,
        accuracy,
    }
}

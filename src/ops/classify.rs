//! Classification losses for linear probes and fine-tuning (`shaders/classify.wgsl`), fused
//! with their gradient like the InfoNCE loss: the forward writes each row's loss and its row
//! of dL/dz, the backward only scales that by the incoming gradient.

use super::u32_len;
use crate::autograd::{grad_enabled, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "classify",
    wgsl: include_str!("../../shaders/classify.wgsl"),
};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    scale: f32,
    _pad: f32,
}

/// What the classifier is asked to predict, one entry per row of the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Targets<'a> {
    /// One class per row (`[N]`, each `< C`): softmax cross-entropy, averaged over rows.
    Classes(&'a [usize]),
    /// Per-class binary labels (`[N, C]`: 1 positive, 0 negative, NaN unlabelled): a sigmoid
    /// binary cross-entropy per entry, averaged over the labelled entries.
    MultiLabel(&'a [f32]),
}

/// The mean classification loss of `logits` (`[N, C]`) against `targets`, a scalar: softmax
/// cross-entropy as torch's `cross_entropy`, or sigmoid binary cross-entropy over the labelled
/// entries as `binary_cross_entropy_with_logits` on them.
///
/// Errors: logits not `[N, C]` f32, a target count that does not match, a class `>= C`, a
/// binary label that is not 0, 1 or NaN, or no labelled entry at all.
///
/// ```no_run
/// # use convirt::{Gpu, Tensor};
/// use convirt::ops::classify::{classification_loss, Targets};
/// # let gpu = Gpu::shared()?;
/// let logits = Tensor::param(&gpu, &[2.0, -1.0, 0.5, 0.3], &[2, 2])?;
/// let loss = classification_loss(&logits, Targets::Classes(&[0, 1]))?;
/// loss.backward()?;
/// assert!(logits.grad().is_some());
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn classification_loss(logits: &Tensor, targets: Targets) -> Result<Tensor> {
    let op = "classification_loss";
    logits.expect_dtype(op, DType::F32)?;
    if logits.rank() != 2 || logits.numel() == 0 {
        return Err(Error::Invalid {
            op,
            why: format!(
                "logits must be a non-empty [N, C], got {:?}",
                logits.shape()
            ),
        });
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let count_mismatch = |got: usize, want: usize| Error::Shape {
        op,
        lhs: logits.shape().to_vec(),
        rhs: vec![got],
        why: format!("{want} targets expected"),
    };
    let (t, scale, sigmoid) = match targets {
        Targets::Classes(classes) => {
            if classes.len() != n {
                return Err(count_mismatch(classes.len(), n));
            }
            let mut t = vec![0.0f32; n * c];
            for (r, &k) in classes.iter().enumerate() {
                if k >= c {
                    return Err(Error::Invalid {
                        op,
                        why: format!("row {r} has class {k}, but there are {c} classes"),
                    });
                }
                t[r * c + k] = 1.0;
            }
            (t, 1.0 / n as f32, false)
        }
        Targets::MultiLabel(labels) => {
            if labels.len() != n * c {
                return Err(count_mismatch(labels.len(), n * c));
            }
            if let Some(bad) = labels
                .iter()
                .find(|y| !(y.is_nan() || **y == 0.0 || **y == 1.0))
            {
                return Err(Error::Invalid {
                    op,
                    why: format!("binary labels are 0, 1 or NaN (unlabelled), got {bad}"),
                });
            }
            let labelled = labels.iter().filter(|y| !y.is_nan()).count();
            if labelled == 0 {
                return Err(Error::Invalid {
                    op,
                    why: "no labelled entry to learn from".into(),
                });
            }
            // The kernel reads a negative label as "unlabelled" (see the shader).
            let t = labels
                .iter()
                .map(|&y| if y.is_nan() { -1.0 } else { y })
                .collect();
            (t, 1.0 / labelled as f32, true)
        }
    };
    let gpu = logits.gpu();
    let params = Params {
        n: u32_len(op, n)?,
        c: u32_len(op, c)?,
        scale,
        _pad: 0.0,
    };
    let t = Tensor::from_slice(gpu, &t, &[n, c])?;
    let row_loss = Tensor::uninit(gpu, &[n], DType::F32, op)?;
    let dz = Tensor::uninit(gpu, &[n, c], DType::F32, op)?;
    let kernel = Launch {
        params,
        sigmoid,
        t,
        row_loss,
        dz,
    };
    kernel.run("loss_and_grad", "classification_loss", logits, logits, n)?;
    let loss = kernel.row_loss.sum_all()?;
    if !(grad_enabled() && logits.requires_grad_flag()) {
        return Ok(loss);
    }
    let logits_kept = logits.detach();
    Ok(record(op, loss, &[logits], move |g, _| {
        kernel.run(
            "scale_grad",
            "classification_loss_backward",
            &logits_kept,
            g,
            n * c,
        )?;
        Ok(vec![Some(kernel.dz.clone())])
    }))
}

/// The buffers of one loss evaluation, shared by its two entries.
struct Launch {
    params: Params,
    sigmoid: bool,
    t: Tensor,
    row_loss: Tensor,
    dz: Tensor,
}

impl Launch {
    /// Runs `entry` over `elems` invocations. The scale entry reads the incoming gradient at
    /// binding 5; the forward binds the logits there, unread, so both share one layout.
    fn run(
        &self,
        entry: &'static str,
        name: &'static str,
        logits: &Tensor,
        upstream: &Tensor,
        elems: usize,
    ) -> Result<()> {
        let gpu = logits.gpu();
        let nc = (self.params.n * self.params.c) as u64;
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry,
                overrides: &[("WG", WG as f64), ("SIGMOID", self.sigmoid as u8 as f64)],
            },
            name,
            params: bytemuck::bytes_of(&self.params),
            buffers: &[
                (logits.buffer(), Access::Read),
                (self.t.buffer(), Access::Read),
                (self.row_loss.buffer(), Access::ReadWrite),
                (self.dz.buffer(), Access::ReadWrite),
                (upstream.buffer(), Access::Read),
            ],
            workgroups: gpu.grid(elems.div_ceil(WG as usize) as u32),
            flops: 12 * nc,
            bytes: 16 * nc,
        })
    }
}

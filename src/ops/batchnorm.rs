//! Batch normalisation over NCHW (`shaders/batchnorm.wgsl`), PyTorch's `BatchNorm2d`: training
//! (batch statistics; the running statistics updated in place) and evaluation (running
//! statistics, optionally fused with the ReLU that follows it in ResNet), with backward.

use super::{one_subgroup_on_cpu, u32_len};
use crate::autograd::{grad_enabled, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource};
use crate::ops::elementwise::{unary_raw, Unary};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "batchnorm",
    wgsl: concat!(
        include_str!("../../shaders/batchnorm.wgsl"),
        include_str!("../../shaders/common/workgroup_sum.wgsl")
    ),
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    m: u32,
    var_off: u32,
    row: u32,
    _pad: [u32; 2],
    eps: f32,
    momentum: f32,
    scale: f32,
    _pad1: f32,
}

/// Checks the operands and returns the parameter block for `x` seen as `[N, C, HW]`.
fn params(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Params> {
    let op = "batch_norm";
    let s = x.shape();
    if s.len() != 2 && s.len() != 4 {
        return Err(Error::Shape {
            op,
            lhs: s.to_vec(),
            rhs: weight.shape().to_vec(),
            why: "the input must be [N, C, H, W] or [N, C]".into(),
        });
    }
    let c = s[1];
    for (name, t) in [
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ] {
        if t.shape() != [c] {
            return Err(Error::Shape {
                op,
                lhs: s.to_vec(),
                rhs: t.shape().to_vec(),
                why: format!("{name} must have shape [{c}], one value per input channel"),
            });
        }
        t.expect_dtype(op, DType::F32)?;
    }
    x.expect_dtype(op, DType::F32)?;
    let hw: usize = s[2..].iter().product();
    Ok(Params {
        n: u32_len(op, x.numel())?,
        c: u32_len(op, c)?,
        hw: u32_len(op, hw)?,
        m: u32_len(op, s[0] * hw)?,
        var_off: 0,
        row: 0,
        _pad: [0; 2],
        eps,
        momentum: 0.0,
        scale: 1.0,
        _pad1: 0.0,
    })
}

#[allow(clippy::too_many_arguments)]
fn launch(
    t: &Tensor,
    entry: &'static str,
    overrides: &[(&'static str, f64)],
    p: &Params,
    buffers: &[(&wgpu::Buffer, Access)],
    workgroups: u32,
    flops: u64,
    bytes: u64,
) -> Result<()> {
    let gpu = t.gpu();
    let name = format!("batch_norm.{entry}");
    gpu.dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides,
        },
        name: &name,
        params: bytemuck::bytes_of(p),
        buffers,
        workgroups: gpu.grid(workgroups),
        flops,
        bytes,
    })
}

/// Invocations of a per-channel reduction's workgroup. On CPU adapters one subgroup (see
/// `one_subgroup_on_cpu`; a channel's workgroup has work enough for a core either way):
/// ResNet-50 at batch 8, statistics 110 -> 65 ms, the backward's sums 135 -> 116 ms, against
/// the rule for GPUs: about an eighth of its M / SPAN accesses (a power of two, 32 to 256), so
/// a channel of few elements (ResNet's 7 x 7 maps: M = 49 N) gets a small workgroup.
fn reduction_wg(gpu: &Gpu, p: &Params) -> u32 {
    one_subgroup_on_cpu(gpu, (p.m / span(p) / 8).next_power_of_two().clamp(32, WG))
}

/// Elements per access of the maps and reductions (the shader's `SPAN`): 4 consecutive ones
/// of one (image, channel) row, as one vec4, where rows hold whole groups of 4.
fn span(p: &Params) -> u32 {
    if p.hw.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// Accesses per invocation of the maps (the shader's `REPEAT`).
fn repeat(p: &Params) -> u32 {
    if (p.hw / span(p)).is_multiple_of(4) {
        4
    } else {
        1
    }
}

fn map_overrides(p: &Params, relu: bool) -> [(&'static str, f64); 4] {
    [
        ("WG", WG as f64),
        ("RELU", relu as u8 as f64),
        ("SPAN", span(p) as f64),
        ("REPEAT", repeat(p) as f64),
    ]
}

fn map_workgroups(p: &Params) -> u32 {
    (p.n / span(p) / repeat(p)).div_ceil(WG)
}

/// `dst[c] = scale * src[row * C + c]`, or with `momentum` blended into `dst` in place:
/// `dst = (1 - momentum) dst + momentum * scale * src[row]`.
fn update_row(
    src: &Tensor,
    dst: &Tensor,
    p: &Params,
    row: u32,
    scale: f32,
    momentum: Option<f32>,
) -> Result<()> {
    let p = Params {
        row: row * p.c,
        scale,
        momentum: momentum.unwrap_or(0.0),
        ..*p
    };
    launch(
        src,
        "update_row",
        &[
            ("WG", WG as f64),
            ("BLEND", momentum.is_some() as u8 as f64),
        ],
        &p,
        &[
            (src.buffer(), Access::Read),
            (dst.buffer(), Access::ReadWrite),
        ],
        p.c.div_ceil(WG),
        3 * p.c as u64,
        12 * p.c as u64,
    )
}

/// The per-channel statistics a normalisation reads: training's `[2, C]` batch mean and
/// variance (bound twice, the variance at offset C), or evaluation's running tensors.
struct Stats<'a> {
    mean: &'a Tensor,
    var: &'a Tensor,
    var_off: u32,
}

impl<'a> Stats<'a> {
    fn batch(stats: &'a Tensor, p: &Params) -> Self {
        Stats {
            mean: stats,
            var: stats,
            var_off: p.c,
        }
    }

    fn running(mean: &'a Tensor, var: &'a Tensor) -> Self {
        Stats {
            mean,
            var,
            var_off: 0,
        }
    }
}

fn normalize(
    x: &Tensor,
    st: &Stats,
    weight: &Tensor,
    bias: &Tensor,
    p: &Params,
    relu: bool,
) -> Result<Tensor> {
    let y = Tensor::uninit(x.gpu(), x.shape(), DType::F32, "batch_norm")?;
    let p = Params {
        var_off: st.var_off,
        ..*p
    };
    launch(
        x,
        "normalize",
        &map_overrides(&p, relu),
        &p,
        &[
            (x.buffer(), Access::Read),
            (y.buffer(), Access::ReadWrite),
            (st.mean.buffer(), Access::Read),
            (st.var.buffer(), Access::Read),
            (weight.buffer(), Access::Read),
            (bias.buffer(), Access::Read),
        ],
        map_workgroups(&p),
        6 * p.n as u64,
        8 * p.n as u64 + 16 * p.c as u64,
    )?;
    Ok(y)
}

/// `[2, C]`: per channel `sum(g * xhat)` (the weight's gradient), then `sum(g)` (the bias's),
/// `g` masked by the ReLU when `relu` (then `bias` is needed to recompute the mask).
fn backward_reduce(
    x: &Tensor,
    g: &Tensor,
    st: &Stats,
    weight: &Tensor,
    bias: &Tensor,
    p: &Params,
    relu: bool,
) -> Result<Tensor> {
    let sums = Tensor::uninit(x.gpu(), &[2, p.c as usize], DType::F32, "batch_norm")?;
    let p = Params {
        var_off: st.var_off,
        ..*p
    };
    launch(
        x,
        "backward_reduce",
        &[
            ("WG", reduction_wg(x.gpu(), &p) as f64),
            ("RELU", relu as u8 as f64),
            ("SPAN", span(&p) as f64),
        ],
        &p,
        &[
            (x.buffer(), Access::Read),
            (sums.buffer(), Access::ReadWrite),
            (st.mean.buffer(), Access::Read),
            (st.var.buffer(), Access::Read),
            (weight.buffer(), Access::Read),
            // Read under RELU only (the mask).
            (bias.buffer(), Access::Read),
            (g.buffer(), Access::Read),
        ],
        p.c,
        6 * p.n as u64,
        8 * p.n as u64 + 8 * p.c as u64,
    )?;
    Ok(sums)
}

/// The input's gradient: `backward_train` (given `backward_reduce`'s sums) or `backward_eval`,
/// with the fused ReLU's mask under `relu`.
#[allow(clippy::too_many_arguments)]
fn backward_input(
    x: &Tensor,
    g: &Tensor,
    st: &Stats,
    weight: &Tensor,
    bias: &Tensor,
    sums: Option<&Tensor>,
    p: &Params,
    relu: bool,
) -> Result<Tensor> {
    let dx = Tensor::uninit(g.gpu(), x.shape(), DType::F32, "batch_norm")?;
    let p = Params {
        var_off: st.var_off,
        ..*p
    };
    let mut buffers = vec![
        (x.buffer(), Access::Read),
        (dx.buffer(), Access::ReadWrite),
        (st.mean.buffer(), Access::Read),
        (st.var.buffer(), Access::Read),
        (weight.buffer(), Access::Read),
        (bias.buffer(), Access::Read),
        (g.buffer(), Access::Read),
    ];
    let (entry, flops) = match sums {
        Some(sums) => {
            buffers.push((sums.buffer(), Access::Read));
            ("backward_train", 9)
        }
        None => ("backward_eval", 4),
    };
    launch(
        x,
        entry,
        &map_overrides(&p, relu),
        &p,
        &buffers,
        map_workgroups(&p),
        flops * p.n as u64,
        12 * p.n as u64 + 16 * p.c as u64,
    )?;
    Ok(dx)
}

/// The weight's and the bias's gradients out of `backward_reduce`'s `[2, C]` result: the
/// first row is a view, the second a copy.
fn split_sums(
    sums: &Tensor,
    p: &Params,
    needs: (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let c = p.c as usize;
    let dweight = needs.0.then(|| sums.with_node(vec![c], None));
    let dbias = if needs.1 {
        let db = Tensor::uninit(sums.gpu(), &[c], DType::F32, "batch_norm")?;
        update_row(sums, &db, p, 1, 1.0, None)?;
        Some(db)
    } else {
        None
    };
    Ok((dweight, dbias))
}

impl Tensor {
    /// Batch normalisation in training mode, as PyTorch's `BatchNorm2d` in `train()`: `self`
    /// is `[N, C, H, W]` (or `[N, C]`), each channel normalised by the mean and biased
    /// variance of its N * H * W values, then scaled by `weight` and shifted by `bias` (both
    /// `[C]`). `running_mean` and `running_var` (`[C]`, no gradient) are updated in place on
    /// the device, `running = (1 - momentum) * running + momentum * batch statistic`, the
    /// variance unbiased (`var * M / (M - 1)`, M = N * H * W) as PyTorch does. Gradients flow
    /// to `self`, `weight` and `bias`.
    pub fn batch_norm_train(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        eps: f32,
    ) -> Result<Tensor> {
        batch_norm_train(
            self,
            weight,
            bias,
            running_mean,
            running_var,
            momentum,
            eps,
            false,
        )
    }

    /// `batch_norm_train(...)` followed by ReLU, in one pass over the data (forward and
    /// backward): the training-mode `bn` + `relu` pair of ResNet's blocks.
    pub fn batch_norm_train_relu(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        eps: f32,
    ) -> Result<Tensor> {
        batch_norm_train(
            self,
            weight,
            bias,
            running_mean,
            running_var,
            momentum,
            eps,
            true,
        )
    }

    /// Batch normalisation in evaluation mode, as PyTorch's `BatchNorm2d` in `eval()`: each
    /// channel normalised by `running_mean` and `running_var` (left unchanged), then scaled
    /// and shifted. Gradients still flow to `self`, `weight` and `bias` (fine-tuning through
    /// a frozen encoder).
    pub fn batch_norm_eval(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        batch_norm_eval(self, weight, bias, running_mean, running_var, eps, false)
    }

    /// `batch_norm_eval(...)` followed by ReLU, in one pass over the data (forward and
    /// backward): the evaluation-mode `bn` + `relu` pair of ResNet's blocks.
    pub fn batch_norm_eval_relu(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        batch_norm_eval(self, weight, bias, running_mean, running_var, eps, true)
    }
}

/// `Tensor::batch_norm_train`, followed by ReLU in the same passes when `relu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    x_in: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f32,
    eps: f32,
    relu: bool,
) -> Result<Tensor> {
    let p = params(x_in, weight, bias, running_mean, running_var, eps)?;
    if p.m < 2 {
        return Err(Error::Invalid {
            op: "batch_norm",
            why: format!(
                "training needs more than one value per channel, got input shape {:?}",
                x_in.shape()
            ),
        });
    }
    let stats = Tensor::uninit(x_in.gpu(), &[2, p.c as usize], DType::F32, "batch_norm")?;
    launch(
        x_in,
        "stats",
        &[
            ("WG", reduction_wg(x_in.gpu(), &p) as f64),
            ("SPAN", span(&p) as f64),
        ],
        &p,
        &[
            (x_in.buffer(), Access::Read),
            (stats.buffer(), Access::ReadWrite),
        ],
        p.c,
        // One pass: x read once; a subtraction and two accumulations per element.
        3 * p.n as u64,
        4 * p.n as u64 + 8 * p.c as u64,
    )?;
    let unbias = p.m as f32 / (p.m - 1) as f32;
    update_row(&stats, running_mean, &p, 0, 1.0, Some(momentum))?;
    update_row(&stats, running_var, &p, 1, unbias, Some(momentum))?;
    let y = normalize(x_in, &Stats::batch(&stats, &p), weight, bias, &p, relu)?;
    let (x, w, b) = (x_in.detach(), weight.detach(), bias.detach());
    Ok(record(
        if relu {
            "batch_norm_train_relu"
        } else {
            "batch_norm_train"
        },
        y,
        &[x_in, weight, bias],
        move |g, needs| {
            let st = Stats::batch(&stats, &p);
            let sums = backward_reduce(&x, g, &st, &w, &b, &p, relu)?;
            let dx = needs[0]
                .then(|| backward_input(&x, g, &st, &w, &b, Some(&sums), &p, relu))
                .transpose()?;
            let (dw, db) = split_sums(&sums, &p, (needs[1], needs[2]))?;
            Ok(vec![dx, dw, db])
        },
    ))
}

/// `Tensor::batch_norm_eval`, followed by ReLU in the same passes when `relu`.
pub(crate) fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<Tensor> {
    let p = params(x, weight, bias, running_mean, running_var, eps)?;
    let y = normalize(
        x,
        &Stats::running(running_mean, running_var),
        weight,
        bias,
        &p,
        relu,
    )?;
    let inputs = [x, weight, bias];
    if !(grad_enabled() && inputs.iter().any(|t| t.requires_grad_flag())) {
        return Ok(y);
    }
    // Backward reads the statistics as they were now, even if a training step updates the
    // running tensors in place before it runs.
    let rm = unary_raw(running_mean, Unary::Copy, 0.0, 0.0)?;
    let rv = unary_raw(running_var, Unary::Copy, 0.0, 0.0)?;
    let (xd, w, b) = (x.detach(), weight.detach(), bias.detach());
    let op = if relu {
        "batch_norm_eval_relu"
    } else {
        "batch_norm_eval"
    };
    Ok(record(op, y, &inputs, move |g, needs| {
        let st = Stats::running(&rm, &rv);
        let dx = needs[0]
            .then(|| backward_input(&xd, g, &st, &w, &b, None, &p, relu))
            .transpose()?;
        let (dw, db) = if needs[1] || needs[2] {
            let sums = backward_reduce(&xd, g, &st, &w, &b, &p, relu)?;
            split_sums(&sums, &p, (needs[1], needs[2]))?
        } else {
            (None, None)
        };
        Ok(vec![dx, dw, db])
    }))
}

//! Layer normalisation over the last axis (`shaders/layernorm.wgsl`), PyTorch's `LayerNorm`,
//! as BERT uses it after every attention and feed-forward block, with backward.

use super::{one_subgroup_on_cpu, u32_len};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "layernorm",
    wgsl: concat!(
        include_str!("../../shaders/layernorm.wgsl"),
        include_str!("../../shaders/common/workgroup_sum.wgsl")
    ),
};

const WG: u32 = 64;
/// Rows one `param_grads` invocation sums before the chunks are summed by `sum(0)`: enough
/// chunks to fill a large GPU on BERT's [B * T, 768] without a long second pass.
const CHUNK_ROWS: u32 = 64;
/// At most this many chunks (the grid's y dimension and the second pass stay small).
const MAX_CHUNKS: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,
    _pad0: u32,
    eps: f32,
    _pad1: [f32; 3],
}

fn params(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Params> {
    let op = "layer_norm";
    let Some(&cols) = x.shape().last() else {
        return Err(Error::Shape {
            op,
            lhs: x.shape().to_vec(),
            rhs: weight.shape().to_vec(),
            why: "the input needs at least one axis to normalise over".into(),
        });
    };
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.shape() != [cols] {
            return Err(Error::Shape {
                op,
                lhs: x.shape().to_vec(),
                rhs: t.shape().to_vec(),
                why: format!("{name} must have shape [{cols}], the length of the last axis"),
            });
        }
        t.expect_dtype(op, DType::F32)?;
    }
    x.expect_dtype(op, DType::F32)?;
    if eps.is_nan() || eps < 0.0 {
        return Err(Error::Invalid {
            op,
            why: format!("eps must be a non-negative number, got {eps}"),
        });
    }
    Ok(Params {
        rows: u32_len(op, x.numel() / cols.max(1))?,
        cols: u32_len(op, cols)?,
        chunk: 0,
        _pad0: 0,
        eps,
        _pad1: [0.0; 3],
    })
}

/// Elements per access of the kernels (the shader's `SPAN`): a vec4 where rows hold whole
/// groups of 4.
fn span(p: &Params) -> u32 {
    if p.cols.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// Invocations per workgroup. The row kernels take one subgroup per row on CPU adapters (see
/// `one_subgroup_on_cpu`; every barrier of a row's sums switches the fibres): BERT's layer
/// norms at [1024, 768], 89 -> 57 ms forward and 46 -> 31 ms backward against 64 invocations.
fn wg(gpu: &Gpu, entry: &str) -> u32 {
    if entry == "param_grads" {
        WG
    } else {
        one_subgroup_on_cpu(gpu, WG)
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    t: &Tensor,
    entry: &'static str,
    name: &str,
    p: &Params,
    buffers: &[(&wgpu::Buffer, Access)],
    workgroups: [u32; 3],
    flops: u64,
    bytes: u64,
) -> Result<()> {
    t.gpu().dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            // Rows of whole vec4s are read 4 elements at a time (see the shader).
            overrides: &[("WG", wg(t.gpu(), entry) as f64), ("SPAN", span(p) as f64)],
        },
        name,
        params: bytemuck::bytes_of(p),
        buffers,
        workgroups,
        flops,
        bytes,
    })
}

impl Tensor {
    /// Layer normalisation over the last axis, as PyTorch's `LayerNorm(D, eps)`: each row of
    /// D values is normalised by its mean and biased variance, `(x - mean) / sqrt(var + eps)`,
    /// then scaled by `weight` and shifted by `bias` (both `[D]`). BERT and MiniLM use
    /// `eps = 1e-12`. The per-row mean and `1 / sqrt(var + eps)` are saved for the backward;
    /// gradients flow to `self`, `weight` and `bias`.
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        let p = params(self, weight, bias, eps)?;
        let name = "layer_norm";
        let (rows, cols) = (p.rows as usize, p.cols as usize);
        let y = Tensor::uninit(self.gpu(), self.shape(), DType::F32, name)?;
        let stats = Tensor::uninit(self.gpu(), &[rows, 2], DType::F32, name)?;
        let n = self.numel() as u64;
        launch(
            self,
            "forward",
            name,
            &p,
            &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
                (stats.buffer(), Access::ReadWrite),
                (weight.buffer(), Access::Read),
                (bias.buffer(), Access::Read),
            ],
            self.gpu().grid(p.rows),
            8 * n,
            12 * n + 8 * cols as u64,
        )?;
        let (x, w) = (self.detach(), weight.detach());
        Ok(record(name, y, &[self, weight, bias], move |g, needs| {
            let dx = if needs[0] {
                let dx = Tensor::uninit(g.gpu(), x.shape(), DType::F32, "layer_norm_backward")?;
                launch(
                    &x,
                    "backward",
                    "layer_norm_backward",
                    &p,
                    &[
                        (x.buffer(), Access::Read),
                        (dx.buffer(), Access::ReadWrite),
                        (stats.buffer(), Access::ReadWrite),
                        (w.buffer(), Access::Read),
                        // The bias slot is not read by the backward; the weight stands in.
                        (w.buffer(), Access::Read),
                        (g.buffer(), Access::Read),
                    ],
                    g.gpu().grid(p.rows),
                    11 * n,
                    16 * n + 8 * cols as u64,
                )?;
                Some(dx)
            } else {
                None
            };
            let (dw, db) = if needs[1] || needs[2] {
                let (dw, db) = param_grads(&x, g, &stats, &w, p)?;
                (needs[1].then_some(dw), needs[2].then_some(db))
            } else {
                (None, None)
            };
            Ok(vec![dx, dw, db])
        }))
    }
}

/// `(dweight, dbias)`: per-chunk column sums of `g * xhat` and `g` by one kernel, then the
/// chunks summed by the `sum(0)` reduction; fixed orders throughout, so deterministic.
fn param_grads(
    x: &Tensor,
    g: &Tensor,
    stats: &Tensor,
    w: &Tensor,
    p: Params,
) -> Result<(Tensor, Tensor)> {
    let name = "layer_norm_param_grads";
    let cols = p.cols as usize;
    let chunks = p.rows.div_ceil(CHUNK_ROWS).clamp(1, MAX_CHUNKS);
    let p = Params {
        chunk: p.rows.div_ceil(chunks).max(1),
        ..p
    };
    let chunks = p.rows.div_ceil(p.chunk).max(1);
    let shape = [chunks as usize, cols];
    let dw = Tensor::uninit(g.gpu(), &shape, DType::F32, name)?;
    let db = Tensor::uninit(g.gpu(), &shape, DType::F32, name)?;
    let n = x.numel() as u64;
    launch(
        x,
        "param_grads",
        name,
        &p,
        &[
            (x.buffer(), Access::Read),
            (dw.buffer(), Access::ReadWrite),
            (stats.buffer(), Access::ReadWrite),
            // Neither the weight nor the bias slot is read here.
            (w.buffer(), Access::Read),
            (w.buffer(), Access::Read),
            (g.buffer(), Access::Read),
            (db.buffer(), Access::ReadWrite),
        ],
        [p.cols.div_ceil(span(&p)).div_ceil(WG), chunks, 1],
        5 * n,
        8 * n + 8 * (p.rows as u64 + chunks as u64 * cols as u64),
    )?;
    if chunks == 1 {
        Ok((dw.reshape(&[cols])?, db.reshape(&[cols])?))
    } else {
        Ok((dw.sum(0)?, db.sum(0)?))
    }
}

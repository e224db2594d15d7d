//! Masked pooling over tokens (`shaders/token_pool.wgsl`): hidden states `[B, T, D]` and a
//! padding mask `[B, T]` to one sentence vector `[B, D]`, by maximum (ConVIRT's text encoder)
//! or mean (Sentence-Transformers), with backward.

use super::u32_len;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "token_pool",
    wgsl: include_str!("../../shaders/token_pool.wgsl"),
};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    d: u32,
    _pad: u32,
}

fn params(x: &Tensor, mask: &Tensor, op: &'static str) -> Result<Params> {
    let &[b, t, d] = x.shape() else {
        return Err(Error::Shape {
            op,
            lhs: x.shape().to_vec(),
            rhs: mask.shape().to_vec(),
            why: "the hidden states must be [B, T, D]".into(),
        });
    };
    if mask.shape() != [b, t] {
        return Err(Error::Shape {
            op,
            lhs: x.shape().to_vec(),
            rhs: mask.shape().to_vec(),
            why: format!("the mask must be [B, T] = [{b}, {t}], one value per token"),
        });
    }
    x.expect_dtype(op, DType::F32)?;
    mask.expect_dtype(op, DType::F32)?;
    u32_len(op, x.numel())?;
    Ok(Params {
        b: u32_len(op, b)?,
        t: u32_len(op, t)?,
        d: u32_len(op, d)?,
        _pad: 0,
    })
}

fn launch(
    t: &Tensor,
    entry: &'static str,
    name: &str,
    p: &Params,
    buffers: &[(&wgpu::Buffer, Access)],
    flops: u64,
    bytes: u64,
) -> Result<()> {
    t.gpu().dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides: &[("WG", WG as f64)],
        },
        name,
        params: bytemuck::bytes_of(p),
        buffers,
        // x over blocks of D, y over the batch: no index division in the kernels.
        workgroups: [p.d.div_ceil(WG), p.b, 1],
        flops,
        bytes,
    })
}

impl Tensor {
    /// Maximum over the real tokens of hidden states `[B, T, D]`, with `mask` `[B, T]` (1 a
    /// real token, 0 padding; any nonzero value counts as real): `[B, D]`. Padded tokens are
    /// ignored whatever their values; a sequence with no real token gives 0. This is how
    /// ConVIRT's text encoder pools BERT's token outputs. The gradient goes to the first
    /// maximal real token of each (sequence, feature), and flows to `self` only (the mask is
    /// data).
    pub fn masked_max_pool(&self, mask: &Tensor) -> Result<Tensor> {
        let p = params(self, mask, "masked_max_pool")?;
        let out = [p.b as usize, p.d as usize];
        let y = Tensor::uninit(self.gpu(), &out, DType::F32, "masked_max_pool")?;
        let idx = Tensor::uninit(self.gpu(), &out, DType::U32, "masked_max_pool")?;
        let n = self.numel() as u64;
        launch(
            self,
            "max_forward",
            "token_pool.max_forward",
            &p,
            &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
                (mask.buffer(), Access::Read),
                (idx.buffer(), Access::ReadWrite),
            ],
            n,
            4 * n + 4 * (p.b * p.t) as u64 + 8 * (p.b * p.d) as u64,
        )?;
        let (x_shape, mask) = (self.shape().to_vec(), mask.detach());
        Ok(record("masked_max_pool", y, &[self], move |g, _| {
            let dx = Tensor::uninit(g.gpu(), &x_shape, DType::F32, "masked_max_pool_backward")?;
            let n = dx.numel() as u64;
            launch(
                g,
                "max_backward",
                "token_pool.max_backward",
                &p,
                &[
                    (g.buffer(), Access::Read),
                    (dx.buffer(), Access::ReadWrite),
                    (mask.buffer(), Access::Read),
                    (idx.buffer(), Access::ReadWrite),
                ],
                0,
                4 * n + 8 * g.numel() as u64,
            )?;
            Ok(vec![Some(dx)])
        }))
    }

    /// Mean over the real tokens of hidden states `[B, T, D]`, with `mask` `[B, T]` as in
    /// [`Tensor::masked_max_pool`]: the sum over real tokens divided by their number, as
    /// Sentence-Transformers' mean pooling; a sequence with no real token gives 0. The
    /// gradient, `g / count` on every real token, flows to `self` only.
    pub fn masked_mean_pool(&self, mask: &Tensor) -> Result<Tensor> {
        let p = params(self, mask, "masked_mean_pool")?;
        let y = Tensor::uninit(
            self.gpu(),
            &[p.b as usize, p.d as usize],
            DType::F32,
            "masked_mean_pool",
        )?;
        let n = self.numel() as u64;
        launch(
            self,
            "mean_forward",
            "token_pool.mean_forward",
            &p,
            &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
                (mask.buffer(), Access::Read),
            ],
            n,
            4 * n + 4 * (p.b * p.t) as u64 + 4 * (p.b * p.d) as u64,
        )?;
        let (x_shape, mask) = (self.shape().to_vec(), mask.detach());
        Ok(record("masked_mean_pool", y, &[self], move |g, _| {
            let dx = Tensor::uninit(g.gpu(), &x_shape, DType::F32, "masked_mean_pool_backward")?;
            let n = dx.numel() as u64;
            launch(
                g,
                "mean_backward",
                "token_pool.mean_backward",
                &p,
                &[
                    (g.buffer(), Access::Read),
                    (dx.buffer(), Access::ReadWrite),
                    (mask.buffer(), Access::Read),
                ],
                n,
                4 * n + 4 * g.numel() as u64,
            )?;
            Ok(vec![Some(dx)])
        }))
    }
}

//! Softmax and log-softmax along the last axis (`shaders/softmax.wgsl`), with backward.

use super::u32_len;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "softmax",
    wgsl: include_str!("../../shaders/softmax.wgsl"),
};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

fn params(t: &Tensor, op: &'static str) -> Result<Params> {
    let cols = *t.shape().last().ok_or(Error::Invalid {
        op,
        why: "needs at least one axis".into(),
    })?;
    Ok(Params {
        rows: u32_len(op, t.numel() / cols.max(1))?,
        cols: u32_len(op, cols)?,
        _pad: [0; 2],
    })
}

fn softmax_impl(x: &Tensor, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    x.expect_dtype(name, DType::F32)?;
    let p = params(x, name)?;
    let y = Tensor::uninit(x.gpu(), x.shape(), DType::F32, name)?;
    let n = x.numel() as u64;
    x.gpu().dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry: "forward",
            overrides: &[("WG", WG as f64), ("LOG", log as u8 as f64)],
        },
        name,
        params: bytemuck::bytes_of(&p),
        buffers: &[(x.buffer(), Access::Read), (y.buffer(), Access::ReadWrite)],
        workgroups: x.gpu().grid(p.rows),
        flops: 5 * n,
        bytes: 12 * n,
    })?;
    let out = y.detach();
    Ok(record(name, y, &[x], move |g, _| {
        let dx = Tensor::uninit(g.gpu(), g.shape(), DType::F32, "softmax_backward")?;
        g.gpu().dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry: "backward",
                overrides: &[("WG", WG as f64), ("LOG", log as u8 as f64)],
            },
            name: if log {
                "log_softmax_backward"
            } else {
                "softmax_backward"
            },
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (out.buffer(), Access::Read),
                (dx.buffer(), Access::ReadWrite),
                (g.buffer(), Access::Read),
            ],
            workgroups: g.gpu().grid(p.rows),
            flops: 4 * n,
            bytes: 16 * n,
        })?;
        Ok(vec![Some(dx)])
    }))
}

impl Tensor {
    /// Softmax along the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        softmax_impl(self, false)
    }

    /// Log-softmax along the last axis (stable: shifted by the row maximum).
    pub fn log_softmax(&self) -> Result<Tensor> {
        softmax_impl(self, true)
    }
}

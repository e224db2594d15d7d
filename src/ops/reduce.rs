//! Reductions along one axis (`shaders/reduce.wgsl`): sum, mean, max, argmax, and the spread
//! and pick kernels of their backward rules.

use super::{check_axis, one_subgroup_on_cpu, u32_len};
use crate::autograd::{grad_enabled, record};
use crate::error::Result;
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "reduce",
    wgsl: include_str!("../../shaders/reduce.wgsl"),
};

const WG: u32 = 64;
/// Axes up to this long are reduced by one invocation per output (see `reduce_raw`).
const SHORT_AXIS: u32 = 4 * WG;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    axis: u32,
    inner: u32,
    _pad0: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// `[outer, axis, inner]` view of `t` around `axis`.
fn split(t: &Tensor, axis: usize) -> (usize, usize, usize) {
    let s = t.shape();
    (
        s[..axis].iter().product(),
        s[axis],
        s[axis + 1..].iter().product(),
    )
}

fn reduced_shape(t: &Tensor, axis: usize) -> Vec<usize> {
    let mut s = t.shape().to_vec();
    s.remove(axis);
    s
}

#[derive(Clone, Copy)]
enum Op {
    Sum = 0,
    Mean = 1,
    Max = 2,
}

fn params(t: &Tensor, axis: usize, scale: f32) -> Result<Params> {
    let (outer, len, inner) = split(t, axis);
    Ok(Params {
        outer: u32_len("reduce", outer)?,
        axis: u32_len("reduce", len)?,
        inner: u32_len("reduce", inner)?,
        _pad0: 0,
        scale,
        _pad: [0; 3],
    })
}

fn reduce_raw(x: &Tensor, axis: usize, op: Op, name: &'static str) -> Result<Tensor> {
    check_axis(name, x, axis)?;
    x.expect_dtype(name, DType::F32)?;
    let p = params(x, axis, 1.0)?;
    let y = Tensor::uninit(x.gpu(), &reduced_shape(x, axis), DType::F32, name)?;
    let outputs = p.outer * p.inner;
    // One invocation per output looping over the axis where the inner axis is contiguous and
    // wide (neighbours read side by side) or the axis is short: a workgroup's reduction tree
    // then costs more than the loop (global average pooling, 4 to 49 elements for each of
    // B x C outputs, took 19 ms at 64 px on llvmpipe as a workgroup per output). A workgroup
    // per output splits long axes.
    let gpu = x.gpu();
    let per_output = p.inner >= WG || p.axis <= SHORT_AXIS;
    let (entry, wg, workgroups) = if per_output && p.inner.is_multiple_of(4) {
        // Four outputs per invocation, in workgroups of one subgroup on CPU adapters, so a
        // bias gradient's few hundred invocations still make work for every thread.
        let wg = one_subgroup_on_cpu(gpu, WG);
        ("reduce_columns4", wg, gpu.grid((outputs / 4).div_ceil(wg)))
    } else if per_output {
        ("reduce_columns", WG, gpu.grid(outputs.div_ceil(WG)))
    } else {
        ("reduce", WG, gpu.grid(outputs))
    };
    gpu.dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides: &[("WG", wg as f64), ("OP", op as u32 as f64)],
        },
        name,
        params: bytemuck::bytes_of(&p),
        // x and y, then y standing in for argmax's indices (not read here), then x and y again
        // as the vec4 arrays of reduce_columns4.
        buffers: &[
            (x.buffer(), Access::Read),
            (y.buffer(), Access::ReadWrite),
            (y.buffer(), Access::ReadWrite),
            (x.buffer(), Access::Read),
            (y.buffer(), Access::ReadWrite),
        ],
        workgroups,
        flops: x.numel() as u64,
        bytes: 4 * (x.numel() + outputs as usize) as u64,
    })?;
    Ok(y)
}

/// Backward of sum and mean: `dx[o, k, i] = scale * g[o, i]`.
fn spread(g: &Tensor, like: &[usize], axis: usize, scale: f32, gpu_src: &Tensor) -> Result<Tensor> {
    let dx = Tensor::uninit(g.gpu(), like, DType::F32, "reduce.spread")?;
    let p = params(gpu_src, axis, scale)?;
    let n = u32_len("reduce.spread", dx.numel())?;
    g.gpu().dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry: "spread",
            overrides: &[("WG", WG as f64)],
        },
        name: "reduce.spread",
        params: bytemuck::bytes_of(&p),
        buffers: &[(g.buffer(), Access::Read), (dx.buffer(), Access::ReadWrite)],
        workgroups: g.gpu().grid(n.div_ceil(WG)),
        flops: n as u64,
        bytes: 4 * (n as u64 + g.numel() as u64),
    })?;
    Ok(dx)
}

impl Tensor {
    /// Sum along `axis` (the axis disappears from the shape).
    pub fn sum(&self, axis: usize) -> Result<Tensor> {
        let y = reduce_raw(self, axis, Op::Sum, "reduce.sum")?;
        let x = self.detach();
        Ok(record("sum", y, &[self], move |g, _| {
            Ok(vec![Some(spread(g, x.shape(), axis, 1.0, &x)?)])
        }))
    }

    /// Mean along `axis`.
    pub fn mean(&self, axis: usize) -> Result<Tensor> {
        let y = reduce_raw(self, axis, Op::Mean, "reduce.mean")?;
        let x = self.detach();
        let scale = 1.0 / self.shape()[axis] as f32;
        Ok(record("mean", y, &[self], move |g, _| {
            Ok(vec![Some(spread(g, x.shape(), axis, scale, &x)?)])
        }))
    }

    /// Sum of all elements, as a scalar (shape `[]`).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])?.sum(0)
    }

    /// Mean of all elements, as a scalar (shape `[]`).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])?.mean(0)
    }

    /// Maximum along `axis`; the gradient goes to the first maximal element.
    pub fn max(&self, axis: usize) -> Result<Tensor> {
        if !(grad_enabled() && self.requires_grad_flag()) {
            // No backward: the plain reduction, without indices.
            return reduce_raw(self, axis, Op::Max, "reduce.max");
        }
        let (values, idx) = self.max_with_index(axis)?;
        let x_shape = self.shape().to_vec();
        let p = params(self, axis, 1.0)?;
        Ok(record("max", values, &[self], move |g, _| {
            let dx = Tensor::uninit(g.gpu(), &x_shape, DType::F32, "reduce.pick")?;
            let n = u32_len("reduce.pick", dx.numel())?;
            g.gpu().dispatch(&Dispatch {
                kernel: Kernel {
                    shader: SHADER,
                    entry: "pick",
                    overrides: &[("WG", WG as f64)],
                },
                name: "reduce.pick",
                params: bytemuck::bytes_of(&p),
                buffers: &[
                    (g.buffer(), Access::Read),
                    (dx.buffer(), Access::ReadWrite),
                    (idx.buffer(), Access::ReadWrite),
                ],
                workgroups: g.gpu().grid(n.div_ceil(WG)),
                flops: 0,
                bytes: 4 * (n as u64 + 2 * g.numel() as u64),
            })?;
            Ok(vec![Some(dx)])
        }))
    }

    /// Index of the first maximum along `axis`, as a u32 tensor.
    pub fn argmax(&self, axis: usize) -> Result<Tensor> {
        Ok(self.max_with_index(axis)?.1)
    }

    fn max_with_index(&self, axis: usize) -> Result<(Tensor, Tensor)> {
        let name = "reduce.argmax";
        check_axis(name, self, axis)?;
        self.expect_dtype(name, DType::F32)?;
        let p = params(self, axis, 1.0)?;
        let shape = reduced_shape(self, axis);
        let values = Tensor::uninit(self.gpu(), &shape, DType::F32, name)?;
        let idx = Tensor::uninit(self.gpu(), &shape, DType::U32, name)?;
        let outputs = p.outer * p.inner;
        self.gpu().dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry: "argmax",
                overrides: &[("WG", WG as f64)],
            },
            name,
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (self.buffer(), Access::Read),
                (values.buffer(), Access::ReadWrite),
                (idx.buffer(), Access::ReadWrite),
            ],
            workgroups: self.gpu().grid(outputs),
            flops: self.numel() as u64,
            bytes: 4 * (self.numel() + 2 * outputs as usize) as u64,
        })?;
        Ok((values, idx))
    }
}

//! Elementwise maps (`shaders/elementwise.wgsl`): unary functions, binary arithmetic, the
//! broadcast bias add, fill and copy, with their backward rules.

use super::{same_shape, u32_len};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

pub const SHADER: ShaderSource = ShaderSource {
    name: "elementwise",
    wgsl: concat!(
        include_str!("../../shaders/elementwise.wgsl"),
        include_str!("../../shaders/common/erf.wgsl")
    ),
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    /// bias_add: elements per bias value, and the bias length.
    inner: u32,
    channels: u32,
    _pad: u32,
    a: f32,
    b: f32,
    _pad1: [f32; 2],
}

/// Unary maps; the discriminant is the shader's `OP` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Copy = 0,
    /// `a * x + b`
    Affine = 1,
    Relu = 2,
    Gelu = 3,
    Exp = 4,
    Log = 5,
    Sqrt = 6,
    Recip = 7,
    Tanh = 8,
}

/// Binary maps; the discriminant is the shader's `OP` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    /// `grad * (input > 0)`
    ReluBackward = 4,
    /// `grad * gelu'(input)`
    GeluBackward = 5,
    /// `grad * (1 - output^2)`
    TanhBackward = 6,
    /// `max(x + z, 0)`: a residual block's sum and its ReLU in one pass
    AddRelu = 7,
}

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Copy => "copy",
            Unary::Affine => "unary.affine",
            Unary::Relu => "unary.relu",
            Unary::Gelu => "unary.gelu",
            Unary::Exp => "unary.exp",
            Unary::Log => "unary.log",
            Unary::Sqrt => "unary.sqrt",
            Unary::Recip => "unary.recip",
            Unary::Tanh => "unary.tanh",
        }
    }

    /// Flops per element, for the profiler.
    fn cost(self) -> u64 {
        match self {
            Unary::Copy => 0,
            Unary::Affine => 2,
            Unary::Gelu => 20,
            Unary::Exp | Unary::Log | Unary::Tanh => 8,
            _ => 1,
        }
    }
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Add => "binary.add",
            Binary::Sub => "binary.sub",
            Binary::Mul => "binary.mul",
            Binary::Div => "binary.div",
            Binary::ReluBackward => "binary.relu_backward",
            Binary::GeluBackward => "binary.gelu_backward",
            Binary::TanhBackward => "binary.tanh_backward",
            Binary::AddRelu => "binary.add_relu",
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Arc<Gpu>,
    entry: &'static str,
    op: u32,
    name: &str,
    params: Params,
    buffers: &[(&wgpu::Buffer, Access)],
    flops: u64,
    bytes: u64,
) -> Result<()> {
    gpu.dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides: &[("WG", WG as f64), ("OP", op as f64)],
        },
        name,
        params: bytemuck::bytes_of(&params),
        buffers,
        // Four elements per invocation (see the shader).
        workgroups: gpu.grid(params.n.div_ceil(4).div_ceil(WG)),
        flops,
        bytes,
    })
}

/// `op(x)` without autograd: the building block of forward and backward rules.
pub(crate) fn unary_raw(x: &Tensor, op: Unary, a: f32, b: f32) -> Result<Tensor> {
    x.expect_dtype(op.name(), DType::F32)?;
    let n = u32_len(op.name(), x.numel())?;
    let y = Tensor::uninit(x.gpu(), x.shape(), DType::F32, op.name())?;
    let params = Params {
        n,
        inner: 1,
        channels: 1,
        _pad: 0,
        a,
        b,
        _pad1: [0.0; 2],
    };
    launch(
        x.gpu(),
        "unary",
        op as u32,
        op.name(),
        params,
        &[(x.buffer(), Access::Read), (y.buffer(), Access::ReadWrite)],
        op.cost() * n as u64,
        8 * n as u64,
    )?;
    Ok(y)
}

/// `op(x, z)` without autograd.
pub(crate) fn binary_raw(x: &Tensor, z: &Tensor, op: Binary) -> Result<Tensor> {
    same_shape(op.name(), x, z)?;
    x.expect_dtype(op.name(), DType::F32)?;
    z.expect_dtype(op.name(), DType::F32)?;
    let n = u32_len(op.name(), x.numel())?;
    let y = Tensor::uninit(x.gpu(), x.shape(), DType::F32, op.name())?;
    let params = Params {
        n,
        inner: 1,
        channels: 1,
        _pad: 0,
        a: 0.0,
        b: 0.0,
        _pad1: [0.0; 2],
    };
    launch(
        x.gpu(),
        "binary",
        op as u32,
        op.name(),
        params,
        &[
            (x.buffer(), Access::Read),
            (y.buffer(), Access::ReadWrite),
            (z.buffer(), Access::Read),
        ],
        n as u64,
        12 * n as u64,
    )?;
    Ok(y)
}

impl Tensor {
    /// A tensor of `shape` with every element `value`.
    pub fn full(gpu: &Arc<Gpu>, shape: &[usize], value: f32) -> Result<Tensor> {
        let n = u32_len("fill", crate::tensor::numel(shape))?;
        let y = Tensor::uninit(gpu, shape, DType::F32, "fill")?;
        let params = Params {
            n,
            inner: 1,
            channels: 1,
            _pad: 0,
            a: value,
            b: 0.0,
            _pad1: [0.0; 2],
        };
        // `fill` reads nothing but shares the unary layout: a one-element pooled buffer stands
        // in for the input.
        let dummy = Tensor::uninit(gpu, &[1], DType::F32, "fill")?;
        launch(
            gpu,
            "fill",
            0,
            "fill",
            params,
            &[
                (dummy.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
            ],
            0,
            4 * n as u64,
        )?;
        Ok(y)
    }

    pub fn zeros(gpu: &Arc<Gpu>, shape: &[usize]) -> Result<Tensor> {
        Tensor::full(gpu, shape, 0.0)
    }

    /// `self + other`, same shapes.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        let y = binary_raw(self, other, Binary::Add)?;
        Ok(record("add", y, &[self, other], |g, _| {
            Ok(vec![Some(g.clone()), Some(g.clone())])
        }))
    }

    /// `relu(self + other)`, same shapes, in one pass (a residual block's output).
    pub fn add_relu(&self, other: &Tensor) -> Result<Tensor> {
        let y = binary_raw(self, other, Binary::AddRelu)?;
        let out = y.detach();
        Ok(record("add_relu", y, &[self, other], move |g, _| {
            // The output is positive exactly where the sum is.
            let d = binary_raw(g, &out, Binary::ReluBackward)?;
            Ok(vec![Some(d.clone()), Some(d)])
        }))
    }

    /// `self - other`, same shapes.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        let y = binary_raw(self, other, Binary::Sub)?;
        Ok(record("sub", y, &[self, other], |g, needs| {
            let dz = if needs[1] {
                Some(unary_raw(g, Unary::Affine, -1.0, 0.0)?)
            } else {
                None
            };
            Ok(vec![Some(g.clone()), dz])
        }))
    }

    /// `self * other` elementwise, same shapes.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        let y = binary_raw(self, other, Binary::Mul)?;
        let (x, z) = (self.detach(), other.detach());
        Ok(record("mul", y, &[self, other], move |g, needs| {
            let dx = if needs[0] {
                Some(binary_raw(g, &z, Binary::Mul)?)
            } else {
                None
            };
            let dz = if needs[1] {
                Some(binary_raw(g, &x, Binary::Mul)?)
            } else {
                None
            };
            Ok(vec![dx, dz])
        }))
    }

    /// `self / other` elementwise, same shapes.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        let y = binary_raw(self, other, Binary::Div)?;
        let (z, out) = (other.detach(), y.detach());
        Ok(record("div", y, &[self, other], move |g, needs| {
            let dx = binary_raw(g, &z, Binary::Div)?;
            let dz = if needs[1] {
                Some(unary_raw(
                    &binary_raw(&dx, &out, Binary::Mul)?,
                    Unary::Affine,
                    -1.0,
                    0.0,
                )?)
            } else {
                None
            };
            Ok(vec![Some(dx), dz])
        }))
    }

    /// `a * self + b`.
    pub fn affine(&self, a: f32, b: f32) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Affine, a, b)?;
        Ok(record("affine", y, &[self], move |g, _| {
            Ok(vec![Some(unary_raw(g, Unary::Affine, a, 0.0)?)])
        }))
    }

    /// `s * self`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        self.affine(s, 0.0)
    }

    /// A copy into a new buffer (same shape, cut from nothing: gradients flow through).
    pub fn copy(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Copy, 0.0, 0.0)?;
        Ok(record("copy", y, &[self], |g, _| Ok(vec![Some(g.clone())])))
    }

    pub fn relu(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Relu, 0.0, 0.0)?;
        let x = self.detach();
        Ok(record("relu", y, &[self], move |g, _| {
            Ok(vec![Some(binary_raw(g, &x, Binary::ReluBackward)?)])
        }))
    }

    /// GELU in its exact (erf) form, as BERT uses it.
    pub fn gelu(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Gelu, 0.0, 0.0)?;
        let x = self.detach();
        Ok(record("gelu", y, &[self], move |g, _| {
            Ok(vec![Some(binary_raw(g, &x, Binary::GeluBackward)?)])
        }))
    }

    pub fn tanh(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Tanh, 0.0, 0.0)?;
        let out = y.detach();
        Ok(record("tanh", y, &[self], move |g, _| {
            Ok(vec![Some(binary_raw(g, &out, Binary::TanhBackward)?)])
        }))
    }

    pub fn exp(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Exp, 0.0, 0.0)?;
        let out = y.detach();
        Ok(record("exp", y, &[self], move |g, _| {
            Ok(vec![Some(binary_raw(g, &out, Binary::Mul)?)])
        }))
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Log, 0.0, 0.0)?;
        let x = self.detach();
        Ok(record("log", y, &[self], move |g, _| {
            Ok(vec![Some(binary_raw(g, &x, Binary::Div)?)])
        }))
    }

    pub fn sqrt(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Sqrt, 0.0, 0.0)?;
        let out = y.detach();
        Ok(record("sqrt", y, &[self], move |g, _| {
            Ok(vec![Some(unary_raw(
                &binary_raw(g, &out, Binary::Div)?,
                Unary::Affine,
                0.5,
                0.0,
            )?)])
        }))
    }

    /// `1 / self`.
    pub fn recip(&self) -> Result<Tensor> {
        let y = unary_raw(self, Unary::Recip, 0.0, 0.0)?;
        let out = y.detach();
        Ok(record("recip", y, &[self], move |g, _| {
            let y2 = binary_raw(&out, &out, Binary::Mul)?;
            Ok(vec![Some(unary_raw(
                &binary_raw(g, &y2, Binary::Mul)?,
                Unary::Affine,
                -1.0,
                0.0,
            )?)])
        }))
    }

    /// `self + bias`, with `bias` (shape `[n]`) broadcast along the last axis (of length n).
    pub fn bias_add(&self, bias: &Tensor) -> Result<Tensor> {
        self.bias_add_axis(bias, self.rank().max(1) - 1)
    }

    /// `self + bias`, with `bias` (shape `[C]`) broadcast along `axis` (of length C): axis 1 of
    /// an NCHW tensor is a per-channel bias.
    pub fn bias_add_axis(&self, bias: &Tensor, axis: usize) -> Result<Tensor> {
        let op = "bias_add";
        super::check_axis(op, self, axis)?;
        let channels = self.shape()[axis];
        if bias.shape() != [channels] {
            return Err(Error::Shape {
                op,
                lhs: self.shape().to_vec(),
                rhs: bias.shape().to_vec(),
                why: format!("the bias must have shape [{channels}], the length of axis {axis}"),
            });
        }
        self.expect_dtype(op, DType::F32)?;
        let n = u32_len(op, self.numel())?;
        let inner: usize = self.shape()[axis + 1..].iter().product();
        let y = Tensor::uninit(self.gpu(), self.shape(), DType::F32, op)?;
        let params = Params {
            n,
            inner: inner as u32,
            channels: channels as u32,
            _pad: 0,
            a: 0.0,
            b: 0.0,
            _pad1: [0.0; 2],
        };
        launch(
            self.gpu(),
            "bias_add",
            0,
            op,
            params,
            &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
                (bias.buffer(), Access::Read),
            ],
            n as u64,
            8 * n as u64 + 4 * channels as u64,
        )?;
        let outer = self.numel() / (channels * inner).max(1);
        Ok(record(op, y, &[self, bias], move |g, needs| {
            let db = if needs[1] {
                let per_channel = g.reshape(&[outer, channels, inner])?.sum(2)?;
                Some(per_channel.sum(0)?)
            } else {
                None
            };
            Ok(vec![Some(g.clone()), db])
        }))
    }
}

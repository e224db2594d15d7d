//! Pooling over NCHW planes: max pooling (`shaders/pool.wgsl`) with its backward, and global
//! average pooling (a mean over the flattened plane, no kernel of its own).

use super::u32_len;
use crate::autograd::{grad_enabled, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "pool",
    wgsl: include_str!("../../shaders/pool.wgsl"),
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    /// N * C.
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    _pad: u32,
    pad: u32,
}

/// `[N, C, H, W]` of a rank-4 tensor.
fn nchw(t: &Tensor, op: &'static str) -> Result<[usize; 4]> {
    match *t.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::Invalid {
            op,
            why: format!("expects an [N, C, H, W] input, got shape {:?}", t.shape()),
        }),
    }
}

/// One invocation per `span` elements of a plane of `plane_len` (x), over all planes (y, and z
/// past the grid's limit).
#[allow(clippy::too_many_arguments)]
fn launch(
    t: &Tensor,
    entry: &'static str,
    name: &str,
    p: &Params,
    (stride, span): (u32, u32),
    plane_len: u32,
    buffers: &[(&wgpu::Buffer, Access)],
    flops: u64,
    bytes: u64,
) -> Result<()> {
    let gpu = t.gpu();
    let [y, z, _] = gpu.grid(p.planes);
    gpu.dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides: &[
                ("WG", WG as f64),
                ("STRIDE", stride as f64),
                ("SPAN", span as f64),
            ],
        },
        name,
        params: bytemuck::bytes_of(p),
        buffers,
        workgroups: [plane_len.div_ceil(span).div_ceil(WG), y, z],
        flops,
        bytes,
    })
}

impl Tensor {
    /// Max pooling of each H x W plane of an `[N, C, H, W]` tensor with a `kernel` x `kernel`
    /// window, as PyTorch's `max_pool2d`: padding counts as -infinity (at most `kernel / 2`),
    /// the output is `floor((H + 2 padding - kernel) / stride) + 1` high (and likewise wide),
    /// and the gradient goes to the first maximum of each window in row-major order.
    /// torchvision's ResNet stem uses `max_pool2d(3, 2, 1)`.
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        let op = "max_pool2d";
        self.expect_dtype(op, DType::F32)?;
        let [n, c, h, w] = nchw(self, op)?;
        let invalid = |why: String| Err(Error::Invalid { op, why });
        if kernel == 0 || stride == 0 {
            return invalid(format!(
                "kernel ({kernel}) and stride ({stride}) must be at least 1"
            ));
        }
        if padding > kernel / 2 {
            return invalid(format!(
                "padding {padding} exceeds half the kernel size {kernel}"
            ));
        }
        if h + 2 * padding < kernel || w + 2 * padding < kernel {
            return invalid(format!(
                "a {kernel}x{kernel} window does not fit in the {h}x{w} input padded by {padding}"
            ));
        }
        let (oh, ow) = (
            (h + 2 * padding - kernel) / stride + 1,
            (w + 2 * padding - kernel) / stride + 1,
        );
        let out_shape = [n, c, oh, ow];
        let outputs = n * c * oh * ow;
        let p = Params {
            planes: u32_len(op, n * c)?,
            h: u32_len(op, h)?,
            w: u32_len(op, w)?,
            oh: u32_len(op, oh)?,
            ow: u32_len(op, ow)?,
            k: u32_len(op, kernel)?,
            _pad: 0,
            pad: u32_len(op, padding)?,
        };
        let stride = u32_len(op, stride)?;
        // Element indices stay within u32.
        u32_len(op, self.numel().max(outputs))?;
        let y = Tensor::uninit(self.gpu(), &out_shape, DType::F32, op)?;
        let flops = (outputs * kernel * kernel) as u64;
        let bytes = 4 * (self.numel() + outputs) as u64;
        if !(grad_enabled() && self.requires_grad_flag()) {
            launch(
                self,
                "forward",
                op,
                &p,
                (stride, 1),
                p.oh * p.ow,
                &[
                    (self.buffer(), Access::Read),
                    (y.buffer(), Access::ReadWrite),
                ],
                flops,
                bytes,
            )?;
            return Ok(y);
        }
        let idx = Tensor::uninit(self.gpu(), &out_shape, DType::U32, op)?;
        launch(
            self,
            "forward_index",
            op,
            &p,
            (stride, 1),
            p.oh * p.ow,
            &[
                (self.buffer(), Access::Read),
                (y.buffer(), Access::ReadWrite),
                (idx.buffer(), Access::ReadWrite),
            ],
            flops,
            bytes + 4 * outputs as u64,
        )?;
        let x_shape = self.shape().to_vec();
        Ok(record(op, y, &[self], move |g, _| {
            let dx = Tensor::uninit(g.gpu(), &x_shape, DType::F32, "max_pool2d_backward")?;
            // Four elements of a row per invocation where rows hold whole groups of 4.
            let span = if p.w.is_multiple_of(4) { 4 } else { 1 };
            launch(
                g,
                "backward",
                "max_pool2d_backward",
                &p,
                (stride, span),
                p.h * p.w,
                &[
                    (g.buffer(), Access::Read),
                    (dx.buffer(), Access::ReadWrite),
                    (idx.buffer(), Access::ReadWrite),
                    (dx.buffer(), Access::ReadWrite),
                ],
                outputs as u64,
                4 * (dx.numel() + 2 * outputs) as u64,
            )?;
            Ok(vec![Some(dx)])
        }))
    }

    /// Mean over each H x W plane: `[N, C, H, W]` to `[N, C]` (ResNet's `avgpool` + flatten).
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        let [n, c, h, w] = nchw(self, "global_avg_pool2d")?;
        self.reshape(&[n, c, h * w])?.mean(2)
    }
}

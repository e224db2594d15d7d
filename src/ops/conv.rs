//! 2-D convolution (`shaders/conv.wgsl` + the GEMM): NCHW input, OIHW weight, square stride and
//! padding, optional bias. Forward: `im2col` lays the batch's columns side by side,
//! `cols[C*KH*KW, N*OH*OW]`, then one GEMM `W[O, C*KH*KW] x cols` that writes its
//! `[O, N*OH*OW]` result straight into NCHW (see `ops::gemm::Columns`).
//! Backward: the columns are kept from the forward where they are small (up to
//! `KEEP_COLUMNS_MAX_BYTES`; they are KH*KW times the input) and recomputed otherwise, then
//! `dW = dY cols^T` (dY permuted to `[O, N*OH*OW]`) and `dx = col2im(W^T dY)` (dY read as it
//! is); at stride 1 (kernels above 1x1), dx is instead the adjoint convolution of dY, through
//! im2col and one GEMM.
//! 1x1 stride-1 convolutions over large maps skip im2col: the input already holds the columns
//! of each image, read image-major by the forward and the input gradient, and the weight
//! gradient is a batched GEMM per image, summed. Batches whose
//! columns would exceed a storage binding (ResNet-50 at batch 32, 224 px) run in image chunks.

use super::u32_len;
use crate::autograd::{grad_enabled, no_grad, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Kernel, ShaderSource};
use crate::ops::{Columns, GemmOptions};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "conv",
    wgsl: include_str!("../../shaders/conv.wgsl"),
};

/// Invocations write a whole row each, so there are few of them: a small workgroup keeps
/// late-stage maps (8 images x 7 rows) from leaving most lanes idle.
const WG: u32 = 64;
/// Output positions per image from which a 1x1 convolution reads its input as its columns:
/// ResNet's stage 1 (56^2) but not stages 2 to 4 (28^2, 14^2, 7^2), whose per-image weight
/// gradients would be narrow GEMMs (and [O, C] each, summed).
/// Measured, kernel time of a ResNet-50 training step at batch 8 on llvmpipe: 13.2 s with
/// every 1x1 convolution per image, 11.5 s from 512 positions, 12.2 s from 1000.
const PER_IMAGE_MIN_POSITIONS: usize = 512;

/// The forward keeps a convolution's columns for its weight gradient when they take at most
/// this many bytes, instead of unfolding the input again in the backward. Kept columns live
/// until the backward: all the small ones of a network at once, so the cap bounds what the
/// memory peak gains (ResNet-50 at batch 32: the columns of stages 3 and 4 are kept, those of
/// stages 1 and 2 and the stem are not).
const KEEP_COLUMNS_MAX_BYTES: u64 = 64 << 20;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    pad: u32,
    _pad: [u32; 3],
}

/// The geometry of one convolution, checked.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn new(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Geometry> {
        let shape_err = |why: String| Error::Shape {
            op: "conv2d",
            lhs: x.shape().to_vec(),
            rhs: weight.shape().to_vec(),
            why,
        };
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (x.shape(), weight.shape()) else {
            return Err(shape_err(
                "the input must be [N, C, H, W] and the weight [O, C, KH, KW]".into(),
            ));
        };
        if wc != c {
            return Err(shape_err(format!(
                "the input has {c} channels, the weight expects {wc}"
            )));
        }
        if stride == 0 {
            return Err(Error::Invalid {
                op: "conv2d",
                why: "stride must be at least 1".into(),
            });
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(shape_err(format!(
                "a {kh}x{kw} kernel does not fit a {h}x{w} input padded by {pad}"
            )));
        }
        let (oh, ow) = (
            (h + 2 * pad - kh) / stride + 1,
            (w + 2 * pad - kw) / stride + 1,
        );
        Ok(Geometry {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            stride,
            pad,
        })
    }

    /// A 1x1 stride-1 convolution over a large map reads its input as its columns (image-major;
    /// its weight gradient per image); over a small map, per-image weight gradients would be
    /// too narrow, so it takes im2col's side-by-side columns like any other convolution.
    fn reads_input_as_columns(&self) -> bool {
        let pointwise = self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0;
        pointwise && self.oh * self.ow >= PER_IMAGE_MIN_POSITIONS
    }

    /// At stride 1 the input gradient is itself a convolution of dY, with the kernel flipped
    /// and its two channel axes swapped, padded by KH - 1 - pad: im2col of dY and one GEMM of
    /// depth O KH KW instead of W^T dY (depth O, 64 in ResNet's stage 1) and col2im. Measured
    /// on llvmpipe, it pays over large maps (ResNet-50's stage 1: the GEMM 82 -> 40 ms) and
    /// loses over small ones (ResNet-18 at 64 px: the step's kernels 33.5 -> 38.7 s), whose
    /// GEMMs it makes few-tiled; the threshold is the per-image path's. 1x1 kernels gain
    /// nothing from it.
    fn backward_is_a_convolution(&self) -> bool {
        self.stride == 1
            && self.oh * self.ow >= PER_IMAGE_MIN_POSITIONS
            && self.kh == self.kw
            && self.kh > 1
            && self.pad < self.kh
    }

    /// The geometry of that convolution: dY in, dx out.
    fn adjoint(&self) -> Geometry {
        Geometry {
            c: self.o,
            h: self.oh,
            w: self.ow,
            o: self.c,
            oh: self.h,
            ow: self.w,
            pad: self.kh - 1 - self.pad,
            ..*self
        }
    }

    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn params(&self) -> Result<Params> {
        let u = |v: usize| u32_len("conv2d", v);
        Ok(Params {
            n: u(self.n)?,
            c: u(self.c)?,
            h: u(self.h)?,
            w: u(self.w)?,
            oh: u(self.oh)?,
            ow: u(self.ow)?,
            kh: u(self.kh)?,
            kw: u(self.kw)?,
            pad: u(self.pad)?,
            _pad: [0; 3],
        })
    }
}

fn launch(entry: &'static str, g: &Geometry, src: &Tensor, dst: &Tensor) -> Result<()> {
    let p = g.params()?;
    // x: (image, output row) for im2col, (image, pixel) for col2im; y: column rows or channels.
    let (invocations, rows, row_len) = if entry == "im2col" {
        (g.n * g.oh, g.ckk(), g.ow)
    } else {
        (g.n * g.h, g.c, g.w)
    };
    let workgroups = [
        u32_len("conv2d", invocations.div_ceil(WG as usize))?,
        u32_len("conv2d", rows)?,
        1,
    ];
    // Both walk rows as vec4s where rows hold whole groups of 4, at stride 1; col2im at
    // stride 2 as well.
    let vec4_stride = g.stride == 1 || (g.stride == 2 && entry == "col2im");
    let vec4_rows = vec4_stride && row_len.is_multiple_of(4);
    // Both also write 16 bytes at a time through a vec4 view of dst.
    let buffers = [
        (src.buffer(), Access::Read),
        (dst.buffer(), Access::ReadWrite),
        (dst.buffer(), Access::ReadWrite),
    ];
    src.gpu().dispatch(&Dispatch {
        kernel: Kernel {
            shader: SHADER,
            entry,
            overrides: &[
                ("WG", WG as f64),
                ("STRIDE", g.stride as f64),
                ("VEC4_ROWS", vec4_rows as u8 as f64),
            ],
        },
        name: if entry == "im2col" {
            "conv.im2col"
        } else {
            "conv.col2im"
        },
        params: bytemuck::bytes_of(&p),
        buffers: &buffers,
        workgroups,
        flops: 0,
        bytes: 8 * dst.numel() as u64,
    })
}

/// The column matrix `[C*KH*KW, N*OH*OW]` of `x` (not where the input is its own columns).
fn columns(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    let cols = Tensor::uninit(
        x.gpu(),
        &[g.ckk(), g.n * g.oh * g.ow],
        DType::F32,
        "conv2d im2col",
    )?;
    launch("im2col", g, x, &cols)?;
    Ok(cols)
}

/// The columns the forward kept, or `x`'s unfolded anew.
fn columns_or_kept(x: &Tensor, g: &Geometry, kept: Option<&Tensor>) -> Result<Tensor> {
    match kept {
        Some(cols) => Ok(cols.clone()),
        None => columns(x, g),
    }
}

/// The input gradient from column gradients `[C*KH*KW, N*OH*OW]`.
fn fold(dcols: Tensor, g: &Geometry) -> Result<Tensor> {
    let dx = Tensor::uninit(
        dcols.gpu(),
        &[g.n, g.c, g.h, g.w],
        DType::F32,
        "conv2d col2im",
    )?;
    launch("col2im", g, &dcols, &dx)?;
    Ok(dx)
}

/// y `[n, O, OH, OW]` of a chunk of images; `cols` are its columns where the caller has them.
fn forward_images(x: &Tensor, g: &Geometry, w2d: &Tensor, cols: Option<&Tensor>) -> Result<Tensor> {
    let images = Columns::Images {
        positions: g.oh * g.ow,
    };
    let y = if g.reads_input_as_columns() {
        w2d.matmul_columns(false, &x.reshape(&[g.n, g.c, g.oh * g.ow])?, images, images)?
    } else {
        let cols = columns_or_kept(x, g, cols)?;
        w2d.matmul_columns(false, &cols, Columns::Matrix, images)?
    };
    y.reshape(&[g.n, g.o, g.oh, g.ow])
}

/// dW `[O, C*KH*KW]` of a chunk of images, from its dY `[n, O, OH*OW]`; `cols` are the
/// chunk's columns where the forward kept them.
fn weight_grad_images(
    x: &Tensor,
    dy: &Tensor,
    g: &Geometry,
    cols: Option<&Tensor>,
) -> Result<Tensor> {
    let ohw = g.oh * g.ow;
    let nt = GemmOptions {
        trans_b: true,
        ..Default::default()
    };
    if g.reads_input_as_columns() {
        return dy.gemm(&x.reshape(&[g.n, g.c, ohw])?, &nt)?.sum(0);
    }
    let dy2d = dy.permute(&[1, 0, 2])?.reshape(&[g.o, g.n * ohw])?;
    dy2d.gemm(&columns_or_kept(x, g, cols)?, &nt)
}

/// The weight of the adjoint convolution (see `backward_is_a_convolution`), `[C, O*KH*KW]`:
/// W'[c, o, i, j] = W[o, c, KH-1-i, KW-1-j]. Reversing the kernel axis is a product with the
/// anti-identity, exact in f32.
fn adjoint_weight(w2d: &Tensor, g: &Geometry) -> Result<Tensor> {
    let kk = g.kh * g.kw;
    let mut reverse = vec![0.0f32; kk * kk];
    for i in 0..kk {
        reverse[i * kk + kk - 1 - i] = 1.0;
    }
    let reverse = Tensor::from_slice(w2d.gpu(), &reverse, &[kk, kk])?;
    w2d.reshape(&[g.o, g.c, kk])?
        .permute(&[1, 0, 2])?
        .reshape(&[g.c * g.o, kk])?
        .matmul(&reverse)?
        .reshape(&[g.c, g.o * kk])
}

/// dx `[n, C, H, W]` of a chunk of images, from its dY `[n, O, OH*OW]`; `adjoint` is the
/// adjoint convolution's weight where the backward is one.
fn input_grad_images(
    dy: &Tensor,
    g: &Geometry,
    w2d: &Tensor,
    adjoint: Option<&Tensor>,
) -> Result<Tensor> {
    if let Some(w_adj) = adjoint {
        let a = g.adjoint();
        return forward_images(&dy.reshape(&[a.n, a.c, a.h, a.w])?, &a, w_adj, None);
    }
    let images = Columns::Images {
        positions: g.oh * g.ow,
    };
    if g.reads_input_as_columns() {
        return w2d
            .matmul_columns(true, dy, images, images)?
            .reshape(&[g.n, g.c, g.h, g.w]);
    }
    fold(w2d.matmul_columns(true, dy, images, Columns::Matrix)?, g)
}

/// Images per chunk so that one chunk's temporaries stay within the device's scratch budget:
/// its columns [C*KH*KW, OH*OW], its per-image weight gradients [O, C*KH*KW] and its
/// output [O, OH*OW].
fn chunk_images(x: &Tensor, g: &Geometry) -> usize {
    // The adjoint convolution's columns [O*KH*KW, H*W] where the backward is one.
    let adjoint_columns = if g.backward_is_a_convolution() {
        g.o * g.kh * g.kw * g.h * g.w
    } else {
        0
    };
    let per_image = 4
        * (g.ckk() * g.oh * g.ow)
            .max(g.o * g.ckk())
            .max(g.o * g.oh * g.ow)
            .max(adjoint_columns) as u64;
    let budget = x.gpu().scratch_bytes();
    ((budget / per_image.max(1)) as usize).clamp(1, g.n)
}

/// Images `n0 .. n0 + count` of an [N, ...] tensor, copied on the device.
fn images(t: &Tensor, n0: usize, count: usize) -> Result<Tensor> {
    if n0 == 0 && count == t.shape()[0] {
        return Ok(t.detach());
    }
    let mut shape = t.shape().to_vec();
    let per_image = t.numel() / shape[0];
    shape[0] = count;
    let out = Tensor::uninit(t.gpu(), &shape, DType::F32, "conv2d chunk")?;
    t.gpu().copy(
        t.buffer(),
        (4 * n0 * per_image) as u64,
        out.buffer(),
        0,
        (4 * count * per_image) as u64,
    );
    Ok(out)
}

/// `f` on chunks of images, each result written into its place of one [N, ...] output.
fn per_chunk(
    x: &Tensor,
    g: &Geometry,
    out_shape: &[usize],
    f: impl Fn(&Tensor, &Geometry) -> Result<Tensor>,
) -> Result<Tensor> {
    let chunk = chunk_images(x, g);
    if chunk == g.n {
        return f(x, g);
    }
    let out = Tensor::uninit(x.gpu(), out_shape, DType::F32, "conv2d")?;
    let per_image = out.numel() / g.n;
    let mut n0 = 0;
    while n0 < g.n {
        let count = chunk.min(g.n - n0);
        let part = f(&images(x, n0, count)?, &Geometry { n: count, ..*g })?;
        x.gpu().copy(
            part.buffer(),
            0,
            out.buffer(),
            (4 * n0 * per_image) as u64,
            (4 * count * per_image) as u64,
        );
        n0 += count;
    }
    Ok(out)
}

impl Tensor {
    /// Cross-correlation as `torch.nn.functional.conv2d`: input `[N, C, H, W]`, weight
    /// `[O, C, KH, KW]`, optional bias `[O]`, the same stride and zero padding on both axes.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        let g = Geometry::new(self, weight, stride, padding)?;
        self.expect_dtype("conv2d", DType::F32)?;
        let w2d = weight.detach().reshape(&[g.o, g.ckk()])?;
        // The columns, kept for the weight gradient where they are small enough (see
        // KEEP_COLUMNS_MAX_BYTES); otherwise the backward unfolds the input again.
        let kept = if grad_enabled()
            && weight.requires_grad_flag()
            && !g.reads_input_as_columns()
            && chunk_images(self, &g) == g.n
            && 4 * (g.ckk() * g.n * g.oh * g.ow) as u64 <= KEEP_COLUMNS_MAX_BYTES
        {
            Some(columns(self, &g)?)
        } else {
            None
        };
        let y = no_grad(|| {
            per_chunk(self, &g, &[g.n, g.o, g.oh, g.ow], |x, g| {
                forward_images(x, g, &w2d, kept.as_ref())
            })
        })?;
        let x = self.detach();
        let out = record("conv2d", y, &[self, weight], move |dy, needs| {
            let dy = dy.reshape(&[g.n, g.o, g.oh * g.ow])?;
            let mut dw: Option<Tensor> = None;
            if needs[1] {
                let chunk = chunk_images(&x, &g);
                for n0 in (0..g.n).step_by(chunk) {
                    let count = chunk.min(g.n - n0);
                    let part = Geometry { n: count, ..g };
                    let grad = weight_grad_images(
                        &images(&x, n0, count)?,
                        &images(&dy, n0, count)?,
                        &part,
                        kept.as_ref(),
                    )?;
                    dw = Some(match dw {
                        Some(acc) => acc.add(&grad)?,
                        None => grad,
                    });
                }
            }
            let dw = dw.map(|d| d.reshape(&[g.o, g.c, g.kh, g.kw])).transpose()?;
            let dx = if needs[0] {
                let w_adj = if g.backward_is_a_convolution() {
                    Some(adjoint_weight(&w2d, &g)?)
                } else {
                    None
                };
                Some(per_chunk(&dy, &g, &[g.n, g.c, g.h, g.w], |dy, g| {
                    input_grad_images(dy, g, &w2d, w_adj.as_ref())
                })?)
            } else {
                None
            };
            Ok(vec![dx, dw])
        });
        match bias {
            Some(b) => out.bias_add_axis(b, 1),
            None => Ok(out),
        }
    }
}

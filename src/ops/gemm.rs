//! GEMM (`shaders/gemm.wgsl`): `C = alpha * op(A) op(B) + beta * C0 (+ bias)`, then ReLU or
//! GELU, batched, with any combination of transposes, and its backward rule.

use super::u32_len;
use crate::autograd::{grad_enabled, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource};
use crate::ops::elementwise::{binary_raw, Binary};
use crate::ops::unroll::{unrolled, Unroll};
use crate::tensor::{DType, Tensor};

/// The GEMM template (the 1 x 1 block kernel); [`shader`] unrolls it for a tiling.
const TEMPLATE: &str = include_str!("../../shaders/gemm.wgsl");
/// The same with `gemm_subgroup`, the form for CPU adapters with subgroups of 8 lanes
/// (`shaders/gemm_subgroup.wgsl`, which needs the subgroup feature to compile).
const SUBGROUP_TEMPLATE: &str = concat!(
    include_str!("../../shaders/gemm.wgsl"),
    include_str!("../../shaders/gemm_subgroup.wgsl")
);
/// What the unrolled GEMM calls: the epilogue's GELU and the block multiply-accumulate.
const SUFFIX: &str = concat!(
    include_str!("../../shaders/common/erf.wgsl"),
    include_str!("../../shaders/common/mac.wgsl")
);

/// Activation applied in the GEMM's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Gelu,
}

/// Options of [`Tensor::gemm`]; `Default` is a plain `A B`.
#[derive(Debug, Clone, Default)]
pub struct GemmOptions {
    /// Use `A^T` (A stored as `[.., K, M]`).
    pub trans_a: bool,
    /// Use `B^T` (B stored as `[.., N, K]`).
    pub trans_b: bool,
    /// Scale of the product (1 when `None`).
    pub alpha: Option<f32>,
    /// `(beta, C0)`: adds `beta * C0` (C0 has the output's shape).
    pub accumulate: Option<(f32, Tensor)>,
    /// Added to every row (shape `[N]`).
    pub bias: Option<Tensor>,
    pub activation: Activation,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_sm: u32,
    a_sk: u32,
    b_sk: u32,
    b_sn: u32,
    a_sb: u32,
    b_sb: u32,
    c_sb: u32,
    k0: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad: u32,
    b_group: u32,
    b_sg: u32,
    c_group: u32,
    c_sg: u32,
}

/// How a convolution's matrix `[rows, images * positions]` (positions = H * W) lies in
/// memory: as that matrix, or as the NCHW tensor `[images, rows, positions]` it stands for,
/// which [`Tensor::matmul_columns`] reads and writes without permuting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    Matrix,
    Images { positions: usize },
}

impl Columns {
    fn group(self) -> Option<usize> {
        match self {
            Columns::Matrix => None,
            Columns::Images { positions } => Some(positions),
        }
    }
}

/// Register blocking: a workgroup of `wg` invocations along N; each invocation owns
/// `4 block_r` rows by `4 block_c` columns of C. Software adapters want big blocks (their loads
/// are expensive and they have no register file to exhaust), tall ones where the subgroup form
/// shares the loads of A (16 x 2: 52 GFLOP/s at 1024^3 on lavapipe against 41-47 with 8 x 4),
/// in workgroups of one 8-lane subgroup, whose 64 columns waste less of narrow problems than
/// 128 would (ResNet-50's stage 4 has 392; measured, a training step at batch 8 in 5.6-6.5 s
/// against 5.7-6.9 s with 16 invocations, alternating runs). GPUs want more invocations with
/// fewer registers each. Small problems get a small block so little work is masked off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmTiling {
    pub wg: u32,
    pub block_r: u32,
    pub block_c: u32,
}

impl GemmTiling {
    /// The tilings of CPU adapters: big blocks, and small ones for small problems.
    pub const CPU: [GemmTiling; 2] = [
        GemmTiling {
            wg: 8,
            block_r: 16,
            block_c: 2,
        },
        GemmTiling {
            wg: 8,
            block_r: 2,
            block_c: 2,
        },
    ];
    /// The tiling of every other adapter.
    pub const GPU: GemmTiling = GemmTiling {
        wg: 64,
        block_r: 4,
        block_c: 1,
    };
    /// Tilings this build uses (all validated by the shader tests).
    pub const ALL: [GemmTiling; 3] = [Self::CPU[0], Self::CPU[1], Self::GPU];

    pub fn choose(gpu: &Gpu, m: usize, n: usize) -> GemmTiling {
        let [big, small] = GemmTiling::CPU;
        if !gpu.is_cpu() {
            GemmTiling::GPU
        } else if m >= big.tile_m() as usize && n >= big.tile_n() as usize {
            big
        } else {
            small
        }
    }

    pub fn tile_m(self) -> u32 {
        4 * self.block_r
    }

    pub fn tile_n(self) -> u32 {
        4 * self.block_c * self.wg
    }
}

/// The GEMM shader unrolled for `t` (see `ops::unroll`), generated once per tiling.
pub fn shader(t: GemmTiling) -> ShaderSource {
    unrolled(Unroll {
        template: TEMPLATE,
        suffix: SUFFIX,
        name: format!("gemm_{}x{}", t.block_r, t.block_c),
        rows: ("BLOCK_R", t.block_r),
        cols: ("BLOCK_C", t.block_c),
    })
}

/// The subgroup form of the GEMM for `t`, where this tiling has one (an even `block_r`: its
/// blocks of rows go in pairs); its `BLOCK_R` counts the pairs.
pub fn subgroup_shader(t: GemmTiling) -> Option<ShaderSource> {
    t.block_r.is_multiple_of(2).then(|| {
        unrolled(Unroll {
            template: SUBGROUP_TEMPLATE,
            suffix: SUFFIX,
            name: format!("gemm_subgroup_{}x{}", t.block_r, t.block_c),
            rows: ("BLOCK_R", t.block_r / 2),
            cols: ("BLOCK_C", t.block_c),
        })
    })
}

/// The logical problem after shape checks; `b_group` and `c_group` are the image-major
/// layouts' group sizes (see [`Columns`]).
struct Problem {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a_batched: bool,
    b_batched: bool,
    out_shape: Vec<usize>,
    b_group: Option<usize>,
    c_group: Option<usize>,
}

fn shape_error(a: &Tensor, b: &Tensor, why: String) -> Error {
    Error::Shape {
        op: "gemm",
        lhs: a.shape().to_vec(),
        rhs: b.shape().to_vec(),
        why,
    }
}

fn problem(a: &Tensor, b: &Tensor, o: &GemmOptions) -> Result<Problem> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(shape_error(
            a,
            b,
            "both operands need at least 2 axes".into(),
        ));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (a_rows, a_cols) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (b_rows, b_cols) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    let (m, ka) = if o.trans_a {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (kb, n) = if o.trans_b {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    if ka != kb {
        return Err(shape_error(
            a,
            b,
            format!("inner dimensions differ: op(A) is {m} x {ka}, op(B) is {kb} x {n}"),
        ));
    }
    let (a_batch, b_batch) = (&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
    let batch_dims = match (a_batch.is_empty(), b_batch.is_empty()) {
        (_, true) => a_batch,
        (true, false) => b_batch,
        (false, false) if a_batch == b_batch => a_batch,
        _ => return Err(shape_error(a, b, "batch axes differ".into())),
    };
    let mut out_shape = batch_dims.to_vec();
    out_shape.extend([m, n]);
    Ok(Problem {
        batch: batch_dims.iter().product(),
        m,
        n,
        k: ka,
        a_batched: !a_batch.is_empty(),
        b_batched: !b_batch.is_empty(),
        out_shape,
        b_group: None,
        c_group: None,
    })
}

/// Records the GEMM kernel writing into `c` (which holds C0 when beta != 0): one dispatch,
/// or, where K would take an invocation past the adapter's loop budget (llvmpipe's limit, see
/// [`Gpu::loop_budget`]), one per slice of K, each adding to the last (`beta` 1), with the
/// bias and the activation on the last slice only.
fn launch(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    p: &Problem,
    o: &GemmOptions,
    act: Activation,
) -> Result<()> {
    let gpu = a.gpu();
    let t = GemmTiling::choose(gpu, p.m, p.n);
    let (m, n, k) = (
        u32_len("gemm", p.m)?,
        u32_len("gemm", p.n)?,
        u32_len("gemm", p.k)?,
    );
    let (a_sm, a_sk) = if o.trans_a { (1, m) } else { (k, 1) };
    let (b_sk, b_sn) = if o.trans_b { (1, k) } else { (n, 1) };
    let group = |g: Option<usize>| g.map(|g| u32_len("gemm", g)).transpose();
    let (b_group, c_group) = (group(p.b_group)?, group(p.c_group)?);
    // Image-major op(B) is [images, K, positions]: rows are a group apart.
    let b_sk = b_group.unwrap_or(b_sk);
    let params = Params {
        m,
        n,
        k,
        batch: p.batch as u32,
        a_sm,
        a_sk,
        b_sk,
        b_sn,
        a_sb: if p.a_batched { m * k } else { 0 },
        b_sb: if p.b_batched { k * n } else { 0 },
        c_sb: m * n,
        k0: 0,
        alpha: o.alpha.unwrap_or(1.0),
        beta: o.accumulate.as_ref().map_or(0.0, |(beta, _)| *beta),
        has_bias: o.bias.is_some() as u32,
        _pad: 0,
        b_group: b_group.unwrap_or(n),
        b_sg: b_group.map_or(0, |g| g * k),
        c_group: c_group.unwrap_or(n),
        c_sg: c_group.map_or(0, |g| g * m),
    };
    let bias = o.bias.as_ref().unwrap_or(a);
    // 16-byte reads need every 4-group aligned and inside its matrix (see gemm.wgsl), and
    // inside one image where columns are image-major.
    let whole_fours = |g: Option<u32>| g.is_none_or(|g| g % 4 == 0);
    let vec4 = k % 4 == 0
        && (!o.trans_a || m % 4 == 0)
        && (o.trans_b || n % 4 == 0)
        && whole_fours(b_group);
    let vec4_c = n % 4 == 0 && whole_fours(c_group);
    let name = match (o.trans_a, o.trans_b) {
        (false, false) => "gemm_nn",
        (false, true) => "gemm_nt",
        (true, false) => "gemm_tn",
        (true, true) => "gemm_tt",
    };
    // On CPU adapters with subgroups of 8 lanes the subgroup form shares the loads of A.
    let (shader, entry) = match subgroup_shader(t) {
        Some(s) if super::subgroup_forms(gpu) => (s, "gemm_subgroup"),
        _ => (shader(t), "gemm"),
    };
    let slice = k_slice(gpu, p.k);
    // K = 0 still writes C (beta C0, the bias, the activation).
    for k0 in (0..p.k.max(1)).step_by(slice) {
        let len = slice.min(p.k - k0);
        let last = k0 + len == p.k;
        let sp = Params {
            k: len as u32,
            k0: k0 as u32,
            beta: if k0 == 0 { params.beta } else { 1.0 },
            has_bias: params.has_bias * last as u32,
            ..params
        };
        let act = if last { act } else { Activation::None };
        let flops = 2 * (p.batch * p.m * p.n * len) as u64;
        let bytes = 4 * (p.batch * (p.m * len + len * p.n + p.m * p.n)) as u64;
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader,
                entry,
                overrides: &[
                    ("WG", t.wg as f64),
                    ("VEC4", vec4 as u8 as f64),
                    ("VEC4_C", vec4_c as u8 as f64),
                    ("A_T", o.trans_a as u8 as f64),
                    ("B_T", o.trans_b as u8 as f64),
                    ("ACT", act as u32 as f64),
                ],
            },
            name,
            params: bytemuck::bytes_of(&sp),
            buffers: &[
                (a.buffer(), Access::Read),
                (b.buffer(), Access::Read),
                (bias.buffer(), Access::Read),
                (c.buffer(), Access::ReadWrite),
                (a.buffer(), Access::Read),
                (b.buffer(), Access::Read),
                (c.buffer(), Access::ReadWrite),
            ],
            workgroups: [n.div_ceil(t.tile_n()), m.div_ceil(t.tile_m()), params.batch],
            flops,
            bytes,
        })?;
    }
    Ok(())
}

/// The longest slice of K one dispatch takes: all of it unless an invocation's loop over K
/// (K / 4 steps, plus at most a few hundred in the epilogue) would pass the loop budget.
/// A multiple of 4, so every slice but the last keeps 16-byte reads aligned.
fn k_slice(gpu: &Gpu, k: usize) -> usize {
    let steps = gpu.loop_budget().saturating_sub(1024);
    if k / 4 <= steps {
        k.max(1)
    } else {
        4 * steps
    }
}

impl Tensor {
    /// Matrix product over the last two axes, batched over the leading ones (a 2-D operand is
    /// shared by every batch).
    ///
    /// ```no_run
    /// # use convirt::{Gpu, Tensor};
    /// # let gpu = Gpu::shared()?;
    /// let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Tensor::from_slice(&gpu, &[1.0, 0.0, 0.0, 1.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec()?, vec![1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), convirt::Error>(())
    /// ```
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        self.gemm(b, &GemmOptions::default())
    }

    /// `op(self) B` for a convolution's column algebra, where B and the result may be NCHW
    /// tensors standing for `[channels, images * positions]` matrices (see [`Columns`]): B is
    /// `[images, K, positions]` or `[K, N]`, the result `[images, M, positions]` or `[M, N]`.
    /// `self` is `[M, K]`, or `[K, M]` with `trans_a`. Not recorded for autograd: convolution
    /// records its own backward.
    ///
    /// ```no_run
    /// # use convirt::{Gpu, Tensor, ops::gemm::Columns};
    /// # let gpu = Gpu::shared()?;
    /// // A 1x1 convolution of two 2-pixel images: W [2, 2] times x [images 2, channels 2, 2].
    /// let w = Tensor::from_slice(&gpu, &[1.0, 0.0, 0.0, 2.0], &[2, 2])?;
    /// let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 2, 2])?;
    /// let images = Columns::Images { positions: 2 };
    /// let y = w.matmul_columns(false, &x, images, images)?;
    /// assert_eq!(y.to_vec()?, vec![1.0, 2.0, 6.0, 8.0, 5.0, 6.0, 14.0, 16.0]);
    /// # Ok::<(), convirt::Error>(())
    /// ```
    pub fn matmul_columns(
        &self,
        trans_a: bool,
        b: &Tensor,
        b_layout: Columns,
        out_layout: Columns,
    ) -> Result<Tensor> {
        let a = self;
        a.expect_dtype("gemm", DType::F32)?;
        b.expect_dtype("gemm", DType::F32)?;
        let &[ar, ac] = a.shape() else {
            return Err(shape_error(a, b, "A must be a matrix".into()));
        };
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (k_b, n) = match (b_layout, b.shape()) {
            (Columns::Matrix, &[k_b, n]) => (k_b, n),
            (Columns::Images { positions }, &[images, k_b, p]) if p == positions => {
                (k_b, images * p)
            }
            _ => {
                return Err(shape_error(
                    a,
                    b,
                    format!("B must be {b_layout:?}: [K, N] or [images, K, positions]"),
                ))
            }
        };
        if k_b != k {
            return Err(shape_error(
                a,
                b,
                format!("inner dimensions differ: op(A) is {m} x {k}, B has {k_b} rows"),
            ));
        }
        let out_shape = match out_layout {
            Columns::Matrix => vec![m, n],
            Columns::Images { positions } if positions > 0 && n % positions == 0 => {
                vec![n / positions, m, positions]
            }
            Columns::Images { positions } => {
                return Err(shape_error(
                    a,
                    b,
                    format!("{n} columns are not whole images of {positions} positions"),
                ))
            }
        };
        let p = Problem {
            batch: 1,
            m,
            n,
            k,
            a_batched: false,
            b_batched: false,
            out_shape,
            b_group: b_layout.group(),
            c_group: out_layout.group(),
        };
        let c = Tensor::uninit(a.gpu(), &p.out_shape, DType::F32, "gemm")?;
        let o = GemmOptions {
            trans_a,
            ..Default::default()
        };
        launch(a, b, &c, &p, &o, Activation::None)?;
        Ok(c)
    }

    /// The full GEMM: transposes, alpha, `beta * C0`, bias and activation (see [`GemmOptions`]).
    pub fn gemm(&self, b: &Tensor, o: &GemmOptions) -> Result<Tensor> {
        let a = self;
        a.expect_dtype("gemm", DType::F32)?;
        b.expect_dtype("gemm", DType::F32)?;
        let p = problem(a, b, o)?;
        if let Some(bias) = &o.bias {
            if bias.shape() != [p.n] {
                return Err(Error::Shape {
                    op: "gemm bias",
                    lhs: p.out_shape.clone(),
                    rhs: bias.shape().to_vec(),
                    why: format!("the bias must have shape [{}]", p.n),
                });
            }
        }
        let c = match &o.accumulate {
            Some((_, c0)) if c0.shape() != p.out_shape.as_slice() => {
                return Err(Error::Shape {
                    op: "gemm accumulate",
                    lhs: p.out_shape.clone(),
                    rhs: c0.shape().to_vec(),
                    why: "C0 must have the output's shape".into(),
                })
            }
            Some((_, c0)) => super::elementwise::unary_raw(c0, super::Unary::Copy, 0.0, 0.0)?,
            None => Tensor::uninit(a.gpu(), &p.out_shape, DType::F32, "gemm")?,
        };
        let inputs: Vec<&Tensor> = [
            Some(a),
            Some(b),
            o.bias.as_ref(),
            o.accumulate.as_ref().map(|(_, c0)| c0),
        ]
        .into_iter()
        .flatten()
        .collect();
        let needs_grad = grad_enabled() && inputs.iter().any(|t| t.requires_grad_flag());
        // GELU's backward needs the pre-activation: with a graph, stop the fused epilogue
        // before GELU and apply it as its own (differentiable) op.
        let fused_act = match o.activation {
            Activation::Gelu if needs_grad => Activation::None,
            act => act,
        };
        launch(a, b, &c, &p, o, fused_act)?;
        let out = self.gemm_record(b, c, p, o, fused_act, inputs)?;
        if fused_act != o.activation {
            return out.gelu();
        }
        Ok(out)
    }

    fn gemm_record(
        &self,
        b: &Tensor,
        c: Tensor,
        p: Problem,
        o: &GemmOptions,
        act: Activation,
        inputs: Vec<&Tensor>,
    ) -> Result<Tensor> {
        let (a, b) = (self.detach(), b.detach());
        let out = c.detach();
        let (trans_a, trans_b, alpha) = (o.trans_a, o.trans_b, o.alpha.unwrap_or(1.0));
        let has_bias = o.bias.is_some();
        let beta = o.accumulate.as_ref().map(|(beta, _)| *beta);
        let (a_shape, b_shape) = (a.shape().to_vec(), b.shape().to_vec());
        Ok(record("gemm", c, &inputs, move |g, needs| {
            let dz = match act {
                Activation::Relu => binary_raw(g, &out, Binary::ReluBackward)?,
                _ => g.clone(),
            };
            let scaled = |x: Option<f32>| GemmOptions {
                alpha: x,
                ..Default::default()
            };
            let mut grads = Vec::new();
            // dA: trans_a = false: alpha dZ op(B)^T; trans_a = true: alpha op(B) dZ^T.
            grads.push(if needs[0] {
                let da = if trans_a {
                    b.gemm(
                        &dz,
                        &GemmOptions {
                            trans_a: trans_b,
                            trans_b: true,
                            ..scaled(Some(alpha))
                        },
                    )?
                } else {
                    dz.gemm(
                        &b,
                        &GemmOptions {
                            trans_b: !trans_b,
                            ..scaled(Some(alpha))
                        },
                    )?
                };
                Some(sum_broadcast(da, &a_shape)?)
            } else {
                None
            });
            // dB: trans_b = false: alpha op(A)^T dZ; trans_b = true: alpha dZ^T op(A).
            grads.push(if needs[1] {
                let db = if trans_b {
                    dz.gemm(
                        &a,
                        &GemmOptions {
                            trans_a: true,
                            trans_b: trans_a,
                            ..scaled(Some(alpha))
                        },
                    )?
                } else {
                    a.gemm(
                        &dz,
                        &GemmOptions {
                            trans_a: !trans_a,
                            ..scaled(Some(alpha))
                        },
                    )?
                };
                Some(sum_broadcast(db, &b_shape)?)
            } else {
                None
            });
            let mut i = 2;
            if has_bias {
                grads.push(if needs[i] {
                    Some(dz.reshape(&[p.batch * p.m, p.n])?.sum(0)?)
                } else {
                    None
                });
                i += 1;
            }
            if let Some(beta) = beta {
                grads.push(if needs[i] {
                    Some(dz.scale(beta)?)
                } else {
                    None
                });
            }
            Ok(grads)
        }))
    }
}

/// A gradient computed per batch for an operand that was shared by every batch is summed.
fn sum_broadcast(grad: Tensor, shape: &[usize]) -> Result<Tensor> {
    if grad.shape() == shape {
        return Ok(grad);
    }
    let (r, c) = (grad.shape()[grad.rank() - 2], grad.shape()[grad.rank() - 1]);
    grad.reshape(&[grad.numel() / (r * c), r * c])?
        .sum(0)?
        .reshape(shape)
}

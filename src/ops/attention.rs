//! Fused multi-head attention (`shaders/attention.wgsl`): `softmax(scale Q K^T + mask) V` per
//! (batch, head) in one kernel that never writes the T x T matrix (online softmax over key
//! blocks), and its backward by recomputation (FlashAttention-2): `D = rowsum(dO * O)`, then dQ
//! from a kernel per query block and dK, dV from a kernel per key block, without atomics.

use super::u32_len;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource};
use crate::ops::unroll::{unrolled, Unroll};
use crate::tensor::{DType, Tensor};

/// The attention template (the 1 x 1 block kernel); [`shader`] unrolls it for a tiling.
const TEMPLATE: &str = include_str!("../../shaders/attention.wgsl");

/// Register blocking: each invocation owns `r` blocks of 4 rows by `c` blocks of 4 columns
/// (keys while computing scores, elements of the head dimension while accumulating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionTiling {
    pub r: u32,
    pub c: u32,
}

impl AttentionTiling {
    /// Tilings this build uses (all validated by the shader tests): those the passes pick on
    /// software adapters and on GPUs, and the narrower ones taken when `Dh / 4` is not a
    /// multiple of `c`.
    pub const ALL: [AttentionTiling; 7] = [
        AttentionTiling { r: 4, c: 4 },
        AttentionTiling { r: 4, c: 2 },
        AttentionTiling { r: 4, c: 1 },
        AttentionTiling { r: 2, c: 2 },
        AttentionTiling { r: 2, c: 1 },
        AttentionTiling { r: 1, c: 2 },
        AttentionTiling { r: 1, c: 1 },
    ];
}

/// The three blocked kernels of the family, which want different shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Dq,
    Dkdv,
}

impl Pass {
    /// The tiling and the rows of a workgroup's block (when the sequence is that long).
    /// Software adapters pay per load instruction rather than per flop, so they want many
    /// blocks per load: at B = 32, H = 12, T = 128, Dh = 64 on llvmpipe, 16 x 16 blocks
    /// (r = c = 4) ran about 20% faster than 8 x 16. GPUs want fewer registers per invocation
    /// and more invocations: on an H100 the forward and dQ ran best with 8 x 8, dK/dV (twice
    /// the accumulators) with 4 x 8 and 32 rows, by 10 to 25% over the next best.
    fn choose(self, gpu: &Gpu, dh: usize) -> (AttentionTiling, u32) {
        let (r, mut c, rows) = match (gpu.is_cpu(), self) {
            (true, _) => (4, 4, 64),
            (false, Pass::Forward | Pass::Dq) => (2, 2, 64),
            (false, Pass::Dkdv) => (1, 2, 32),
        };
        while !(dh / 4).is_multiple_of(c as usize) {
            c /= 2;
        }
        (AttentionTiling { r, c }, rows)
    }

    /// Score tiles in workgroup memory, and whether the per-chunk row statistics are too.
    fn memory(self) -> (u32, bool) {
        match self {
            Pass::Forward => (1, true),
            Pass::Dq => (1, false),
            Pass::Dkdv => (2, false),
        }
    }
}

/// The attention shader unrolled for `t` (see `ops::unroll` and the header of
/// `shaders/attention.wgsl`), generated once per tiling.
pub fn shader(t: AttentionTiling) -> ShaderSource {
    unrolled(Unroll {
        template: TEMPLATE,
        suffix: include_str!("../../shaders/common/mac.wgsl"),
        name: format!("attention_{}x{}", t.r, t.c),
        rows: ("R", t.r),
        cols: ("C", t.c),
    })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    heads: u32,
    nblk: u32,
    blocks: u32,
    scale: f32,
    bs4: u32,
    hs4: u32,
    rs4: u32,
}

/// How Q, K, V, the output and their gradients lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[B, H, T, Dh]`.
    Heads,
    /// `[B, T, H * Dh]`: the projections' output as it is, so neither side permutes.
    Tokens { heads: usize },
}

/// The problem after shape checks, and what the backward needs to relaunch it.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    t: usize,
    dh: usize,
    scale: f32,
    layout: Layout,
    /// A tiling imposed on every pass instead of the adapter's choice (tests).
    forced: Option<AttentionTiling>,
}

impl Dims {
    fn rows(&self) -> usize {
        self.b * self.h * self.t
    }

    /// `mult` T x T x Dh matrix products per (b, h): `4 B H T^2 Dh` for the forward's two.
    fn products(&self, mult: usize) -> u64 {
        (2 * mult * self.b * self.h * self.t * self.t * self.dh) as u64
    }
}

/// One blocked kernel's shape for these dims.
struct Launch {
    tiling: AttentionTiling,
    /// Row groups per workgroup.
    g: u32,
    /// Row blocks per (b, h), and workgroups in all.
    nblk: u32,
    blocks: u32,
}

/// The pass's tiling, then as many row groups as make its target rows (fewer for a short
/// sequence; powers of two, so few pipelines are compiled whatever the lengths), then fewer
/// until its tiles fit the adapter's workgroup memory and its invocations a workgroup.
fn plan(gpu: &Gpu, d: &Dims, pass: Pass) -> Result<Launch> {
    let (chosen, target) = pass.choose(gpu, d.dh);
    let tiling = d.forced.unwrap_or(chosen);
    let (tiles, stats) = pass.memory();
    let AttentionTiling { r, c } = tiling;
    let dh = d.dh as u32;
    let n = dh / (4 * c);
    let limits = gpu.limits();
    let max_invocations = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x);
    let max_bytes = limits.max_compute_workgroup_storage_size;
    let bytes = |g: u32| {
        let rows = 4 * r * g;
        4 * (tiles * rows * dh + if stats { 2 * n * rows } else { 0 })
    };
    let t = d.t as u32;
    let mut g = (target / (4 * r))
        .min(t.div_ceil(4 * r).next_power_of_two())
        .max(1);
    while g > 1 && (g * n > max_invocations || bytes(g) > max_bytes) {
        g /= 2;
    }
    if g * n > max_invocations || bytes(g) > max_bytes {
        return Err(Error::Invalid {
            op: "attention",
            why: format!(
                "a head dimension of {} needs {} invocations and {} bytes of workgroup memory \
                 per workgroup; this adapter allows {max_invocations} and {max_bytes}",
                d.dh,
                g * n,
                bytes(g),
            ),
        });
    }
    let nblk = t.div_ceil(4 * r * g);
    let blocks = u32_len("attention", d.b * d.h * nblk as usize)?;
    Ok(Launch {
        tiling,
        g,
        nblk,
        blocks,
    })
}

fn params(d: &Dims, nblk: u32, blocks: u32) -> Params {
    // check() bounded every tensor's length by u32, so these strides fit.
    let (h, t, dh4) = (d.h as u32, d.t as u32, d.dh as u32 / 4);
    let (hs4, rs4) = match d.layout {
        Layout::Heads => (t * dh4, dh4),
        Layout::Tokens { .. } => (dh4, h * dh4),
    };
    Params {
        t,
        heads: h,
        nblk,
        blocks,
        scale: d.scale,
        bs4: h * t * dh4,
        hs4,
        rs4,
    }
}

/// Shape checks; `(B, H, T, Dh)`.
fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    layout: Layout,
) -> Result<(usize, usize, usize, usize)> {
    let op = "attention";
    for t in [q, k, v].into_iter().chain(mask) {
        t.expect_dtype(op, DType::F32)?;
    }
    let expected = match layout {
        Layout::Heads => "[batch, heads, tokens, head dim]",
        Layout::Tokens { .. } => "[batch, tokens, heads * head dim]",
    };
    let shape_error = |other: &Tensor, why: String| Error::Shape {
        op,
        lhs: q.shape().to_vec(),
        rhs: other.shape().to_vec(),
        why,
    };
    let dims = match (layout, q.shape()) {
        (Layout::Heads, &[b, h, t, dh]) => Some((b, h, t, dh)),
        (Layout::Tokens { heads }, &[b, t, d]) if heads > 0 && d % heads == 0 => {
            Some((b, heads, t, d / heads))
        }
        _ => None,
    };
    let Some((b, h, t, dh)) = dims else {
        let heads = match layout {
            Layout::Heads => String::new(),
            Layout::Tokens { heads } => format!(" with {heads} heads"),
        };
        return Err(shape_error(
            k,
            format!("q, k and v must be {expected}{heads}"),
        ));
    };
    for (name, other) in [("k", k), ("v", v)] {
        if other.shape() != q.shape() {
            return Err(shape_error(
                other,
                format!("{name} must have q's shape {expected}"),
            ));
        }
    }
    if let Some(m) = mask {
        if m.shape() != [b, t] {
            return Err(Error::Shape {
                op: "attention mask",
                lhs: q.shape().to_vec(),
                rhs: m.shape().to_vec(),
                why: format!("the key mask must be [batch, tokens] = [{b}, {t}]"),
            });
        }
    }
    if dh == 0 || !dh.is_multiple_of(4) || dh > 256 {
        return Err(Error::Invalid {
            op,
            why: format!(
                "head dimension {dh} (q shape {:?}) is not supported: it must be a multiple of \
                 4, at most 256",
                q.shape()
            ),
        });
    }
    u32_len(op, q.numel())?;
    Ok((b, h, t, dh))
}

fn kernel<'a>(
    tiling: AttentionTiling,
    entry: &'static str,
    overrides: &'a [(&'static str, f64)],
) -> Kernel<'a> {
    Kernel {
        shader: shader(tiling),
        entry,
        overrides,
    }
}

/// Fused multi-head attention: `softmax(scale Q K^T + mask) V` for every batch element and
/// head, with its backward rule (gradients for `q`, `k` and `v`; the mask gets none).
///
/// `q`, `k`, `v` are `[B, H, T, Dh]` f32 (Dh a multiple of 4, at most 256; T any length).
/// `key_mask` is `[B, T]`: 0 marks a padded key, any other value a real token (Hugging Face's
/// attention mask), so padded keys get no weight. A query row whose keys are all padding
/// has no softmax; its output is defined as 0 (and its gradients as 0), never NaN.
///
/// ```no_run
/// # use convirt::{Gpu, Tensor};
/// # let gpu = Gpu::shared()?;
/// let q = Tensor::zeros(&gpu, &[2, 12, 128, 64])?;
/// let mask = Tensor::full(&gpu, &[2, 128], 1.0)?;
/// let ctx = convirt::ops::attention::attention(&q, &q, &q, Some(&mask), 0.125)?;
/// assert_eq!(ctx.shape(), [2, 12, 128, 64]);
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    attention_impl(q, k, v, key_mask, scale, None, Layout::Heads)
}

/// [`attention`] on `q`, `k`, `v` as the projections give them, `[B, T, H * Dh]` with
/// `heads` = H, and the output the same: what a transformer layer wants, with no permutation
/// of Q, K, V or the output forward, nor of their gradients backward.
///
/// ```no_run
/// # use convirt::{Gpu, Tensor};
/// # let gpu = Gpu::shared()?;
/// let q = Tensor::zeros(&gpu, &[2, 128, 768])?;
/// let ctx = convirt::ops::attention::attention_tokens(&q, &q, &q, 12, None, 0.125)?;
/// assert_eq!(ctx.shape(), [2, 128, 768]);
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn attention_tokens(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    key_mask: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    attention_impl(q, k, v, key_mask, scale, None, Layout::Tokens { heads })
}

/// [`attention`] with `tiling` for every kernel instead of the adapter's choice, so the tests
/// run the GPU tilings on a software adapter and the other way round. `4 c` must divide Dh.
#[doc(hidden)]
pub fn attention_with_tiling(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    scale: f32,
    tiling: AttentionTiling,
) -> Result<Tensor> {
    attention_impl(q, k, v, key_mask, scale, Some(tiling), Layout::Heads)
}

fn attention_impl(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    scale: f32,
    forced: Option<AttentionTiling>,
    layout: Layout,
) -> Result<Tensor> {
    let (b, h, t, dh) = check(q, k, v, key_mask, layout)?;
    if let Some(AttentionTiling { r, c }) = forced {
        if !AttentionTiling::ALL.contains(&AttentionTiling { r, c })
            || !dh.is_multiple_of(4 * c as usize)
        {
            return Err(Error::Invalid {
                op: "attention",
                why: format!("tiling {r} x {c} is not built or does not divide Dh = {dh}"),
            });
        }
    }
    let gpu = q.gpu();
    let d = Dims {
        b,
        h,
        t,
        dh,
        scale,
        layout,
        forced,
    };
    let out = Tensor::uninit(gpu, q.shape(), DType::F32, "attention")?;
    let lse = Tensor::uninit(gpu, &[b, h, t], DType::F32, "attention")?;
    if d.rows() > 0 {
        let l = plan(gpu, &d, Pass::Forward)?;
        let p = params(&d, l.nblk, l.blocks);
        let mask = key_mask.unwrap_or(q);
        let qkv = 3 * q.bytes();
        gpu.dispatch(&Dispatch {
            kernel: kernel(l.tiling, "forward", &overrides(&d, l.g, key_mask.is_some())),
            name: "attention",
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (q.buffer(), Access::Read),
                (k.buffer(), Access::Read),
                (v.buffer(), Access::Read),
                (mask.buffer(), Access::Read),
                (out.buffer(), Access::ReadWrite),
                (lse.buffer(), Access::ReadWrite),
            ],
            workgroups: gpu.grid(l.blocks),
            flops: d.products(2),
            bytes: qkv + out.bytes() + lse.bytes() + key_mask.map_or(0, |m| m.bytes()),
        })?;
    }
    let saved = Saved {
        q: q.detach(),
        k: k.detach(),
        v: v.detach(),
        mask: key_mask.map(|m| m.detach()),
        out: out.detach(),
        lse,
        d,
    };
    Ok(record("attention", out, &[q, k, v], move |g, needs| {
        saved.backward(g, needs)
    }))
}

fn overrides(d: &Dims, g: u32, has_mask: bool) -> [(&'static str, f64); 3] {
    [
        ("DH", d.dh as f64),
        ("G", g as f64),
        ("HAS_MASK", has_mask as u8 as f64),
    ]
}

/// What the backward rule keeps from the forward: the inputs, the output and the rows' L.
struct Saved {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Tensor>,
    out: Tensor,
    lse: Tensor,
    d: Dims,
}

impl Saved {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let d = &self.d;
        let gpu = g.gpu();
        let (need_q, need_kv) = (needs[0], needs[1] || needs[2]);
        if d.rows() == 0 || !(need_q || need_kv) {
            let zeros = |t: &Tensor| Tensor::zeros(gpu, t.shape());
            return Ok(vec![
                Some(zeros(&self.q)?).filter(|_| needs[0]),
                Some(zeros(&self.k)?).filter(|_| needs[1]),
                Some(zeros(&self.v)?).filter(|_| needs[2]),
            ]);
        }
        let shape = self.q.shape();
        let has_mask = self.mask.is_some();
        let mask = self.mask.as_ref().unwrap_or(&self.q);
        let (b, h, t) = (d.b, d.h, d.t);
        let big = self.q.bytes();
        let small = self.lse.bytes();
        let mask_bytes = self.mask.as_ref().map_or(0, |m| m.bytes());

        // D = rowsum(dO * O), read by both gradient kernels.
        let dd = Tensor::uninit(gpu, &[b, h, t], DType::F32, "attention_backward")?;
        let rows = u32_len("attention_backward", d.rows())?;
        let p = params(d, 0, rows);
        gpu.dispatch(&Dispatch {
            // Any tiling's module holds rowdot; the forward's is compiled already.
            kernel: kernel(
                d.forced.unwrap_or(Pass::Forward.choose(gpu, d.dh).0),
                "rowdot",
                &[("DH", d.dh as f64)],
            ),
            name: "attention_rowdot",
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (self.q.buffer(), Access::Read),
                (self.k.buffer(), Access::Read),
                (self.v.buffer(), Access::Read),
                (mask.buffer(), Access::Read),
                (self.out.buffer(), Access::ReadWrite),
                (self.lse.buffer(), Access::ReadWrite),
                (g.buffer(), Access::Read),
                (dd.buffer(), Access::ReadWrite),
            ],
            workgroups: gpu.grid(rows.div_ceil(64)),
            flops: 2 * (d.rows() * d.dh) as u64,
            bytes: 2 * big + small,
        })?;

        let dq = if need_q {
            let dq = Tensor::uninit(gpu, shape, DType::F32, "attention_backward")?;
            let l = plan(gpu, d, Pass::Dq)?;
            let p = params(d, l.nblk, l.blocks);
            gpu.dispatch(&Dispatch {
                kernel: kernel(l.tiling, "backward_dq", &overrides(d, l.g, has_mask)),
                name: "attention_backward_dq",
                params: bytemuck::bytes_of(&p),
                buffers: &[
                    (self.q.buffer(), Access::Read),
                    (self.k.buffer(), Access::Read),
                    (self.v.buffer(), Access::Read),
                    (mask.buffer(), Access::Read),
                    (self.out.buffer(), Access::ReadWrite),
                    (self.lse.buffer(), Access::ReadWrite),
                    (g.buffer(), Access::Read),
                    (dd.buffer(), Access::ReadWrite),
                    (dq.buffer(), Access::ReadWrite),
                ],
                workgroups: gpu.grid(l.blocks),
                flops: d.products(3),
                bytes: 5 * big + 2 * small + mask_bytes,
            })?;
            Some(dq)
        } else {
            None
        };

        let (dk, dv) = if need_kv {
            let dk = Tensor::uninit(gpu, shape, DType::F32, "attention_backward")?;
            let dv = Tensor::uninit(gpu, shape, DType::F32, "attention_backward")?;
            let l = plan(gpu, d, Pass::Dkdv)?;
            let p = params(d, l.nblk, l.blocks);
            gpu.dispatch(&Dispatch {
                kernel: kernel(l.tiling, "backward_dkdv", &overrides(d, l.g, has_mask)),
                name: "attention_backward_dkdv",
                params: bytemuck::bytes_of(&p),
                buffers: &[
                    (self.q.buffer(), Access::Read),
                    (self.k.buffer(), Access::Read),
                    (self.v.buffer(), Access::Read),
                    (mask.buffer(), Access::Read),
                    (self.out.buffer(), Access::ReadWrite),
                    (self.lse.buffer(), Access::ReadWrite),
                    (g.buffer(), Access::Read),
                    (dd.buffer(), Access::ReadWrite),
                    (dk.buffer(), Access::ReadWrite),
                    (dv.buffer(), Access::ReadWrite),
                ],
                workgroups: gpu.grid(l.blocks),
                flops: d.products(4),
                bytes: 6 * big + 2 * small + mask_bytes,
            })?;
            (Some(dk), Some(dv))
        } else {
            (None, None)
        };
        Ok(vec![dq, dk.filter(|_| needs[1]), dv.filter(|_| needs[2])])
    }
}

impl Tensor {
    /// Fused multi-head attention with `self` as the queries; see [`attention`].
    pub fn attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        key_mask: Option<&Tensor>,
        scale: f32,
    ) -> Result<Tensor> {
        attention(self, k, v, key_mask, scale)
    }
}

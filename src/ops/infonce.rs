//! ConVIRT's cross-modal softmax-InfoNCE loss (`shaders/infonce.wgsl`), fused: the forward
//! computes the loss and, when autograd will ask, both gradients through the L2
//! normalisation; the backward only scales them by the incoming gradient (one small dispatch),
//! and as the root of a backward (`loss.backward()`, incoming gradient 1) does nothing at all.

use super::u32_len;
use crate::autograd::{grad_enabled, record};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, Kernel, ShaderSource, LLVMPIPE_LOOP_LIMIT};
use crate::tensor::{DType, Tensor};

pub const SHADER: ShaderSource = ShaderSource {
    name: "infonce",
    wgsl: include_str!("../../shaders/infonce.wgsl"),
};

/// The same kernels plus the fused path for CPU adapters with subgroups of 8 lanes
/// (`shaders/infonce_subgroup.wgsl`, which needs the subgroup feature to compile).
pub const SUBGROUP_SHADER: ShaderSource = ShaderSource {
    name: "infonce_subgroup",
    wgsl: concat!(
        include_str!("../../shaders/infonce.wgsl"),
        include_str!("../../shaders/infonce_subgroup.wgsl")
    ),
};

/// Invocations per workgroup of the tiled path (the shader's `WG` at its default `SIDE` of 16:
/// 16 x 16, a 4 x 4 block each of a 64 x 64 tile).
const WG: u32 = 256;
/// Elements of each gradient one invocation of the backward scales (the shader's
/// `SCALE_PER_INVOCATION`).
const SCALE_PER_INVOCATION: u32 = 16;
/// Invocations that share a row in the row-wise kernels (the shader's `LANES`).
const LANES: u32 = 32;
/// Rows and columns of a tile of S (the shader's `TILE`).
const TILE: usize = 64;
/// Largest batch that [`infonce`] computes in one dispatch (two workgroups). Above it the
/// tiled path spreads the O(N^2 d) work over many workgroups.
///
/// The fused path runs on two compute units at most, so this trades launches for parallelism.
/// Measured forward + backward at d = 512 (kernel time): on llvmpipe the fused path (subgroup
/// form) beats the tiled one at N = 32 (0.37-0.40 vs 4.3-4.9 ms) and at N = 256 (11.5-11.8
/// vs 41-48 ms). On an H100 the tiled path was ahead at N = 32 (0.18 vs 0.25 ms, equal in wall
/// time) and 16x ahead at N = 256 (0.27 vs 4.2 ms), measured with the fused path's earlier
/// one-workgroup form. 1024 is the limit the engine was asked for; GPU runs with large
/// batches want it lower.
pub const FUSED_MAX_N: usize = 1024;

/// Which kernels compute the loss: [`infonce`] takes `Auto`; the others force a path (tests
/// compare them, profiles time them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoNcePath {
    /// `Fused` for N <= [`FUSED_MAX_N`] where the adapter can run it (llvmpipe limits the
    /// loop iterations of an invocation), else `Tiled`.
    Auto,
    /// One dispatch of two workgroups (one without gradients): any N, but slow for large N
    /// (S is 2 N^2 floats of scratch per workgroup and the products run on two compute units).
    Fused,
    /// A few dispatches over many workgroups; S is recomputed, never stored whole.
    Tiled,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    nt: u32,
    rows: u32,
    r0: u32,
    nrm: u32,
    lse: u32,
    term: u32,
    diag: u32,
    prow: u32,
    pcol: u32,
    mat: u32,
    inv_tau: f32,
    lambda: f32,
    grad_scale: f32,
    dots: u32,
    region: u32,
    _pad: [u32; 3],
}

/// The cross-modal softmax-InfoNCE loss of ConVIRT, a scalar (shape `[]`).
///
/// `v` and `u` are `[N, d]` f32 image and text embeddings; row `i` of each is a positive
/// pair. Both are L2-normalised by rows (`v / max(|v|, 1e-12)`, as `F.normalize`), then
/// `S = v' u'^T / tau` and
///
/// `L = (1/N) sum_i [lambda * -log softmax_row(S)_ii + (1 - lambda) * -log softmax_col(S)_ii]`
///
/// (image-to-text and text-to-image; the paper uses `tau = 0.1`, `lambda = 0.75`).
///
/// One dispatch computes everything for `N <=` [`FUSED_MAX_N`], a few for larger `N`; the
/// gradients with respect to `v` and `u` are computed in the same pass when autograd records
/// (grad mode on and an input requiring a gradient), and `backward` only scales them.
/// Accumulation is f32; the log-sum-exps track their maximum on the fly, so any `tau > 0`
/// is stable (0.01 is tested).
///
/// Errors: shapes that are not the same `[N, d]` ([`Error::Shape`]), `N` or `d` zero,
/// `tau <= 0` or not finite, `lambda` outside `[0, 1]`, non-f32 inputs ([`Error::Invalid`]).
///
/// ```no_run
/// # use convirt::{Gpu, Tensor};
/// # let gpu = Gpu::shared()?;
/// let v = Tensor::param(&gpu, &[1.0, 0.0, 0.0, 1.0], &[2, 2])?;
/// let u = Tensor::param(&gpu, &[1.0, 0.1, 0.2, 1.0], &[2, 2])?;
/// let loss = convirt::ops::infonce::infonce(&v, &u, 0.1, 0.75)?;
/// loss.backward()?;
/// assert!(v.grad().is_some() && u.grad().is_some());
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn infonce(v: &Tensor, u: &Tensor, tau: f32, lambda: f32) -> Result<Tensor> {
    infonce_with(v, u, tau, lambda, InfoNcePath::Auto)
}

/// [`infonce`] on a chosen path (same results up to f32 rounding).
pub fn infonce_with(
    v: &Tensor,
    u: &Tensor,
    tau: f32,
    lambda: f32,
    path: InfoNcePath,
) -> Result<Tensor> {
    let op = "infonce";
    v.expect_dtype(op, DType::F32)?;
    u.expect_dtype(op, DType::F32)?;
    if v.rank() != 2 || v.shape() != u.shape() {
        return Err(Error::Shape {
            op,
            lhs: v.shape().to_vec(),
            rhs: u.shape().to_vec(),
            why: "image and text embeddings must both be [N, d] with the same N and d".into(),
        });
    }
    let (n, d) = (v.shape()[0], v.shape()[1]);
    if n == 0 || d == 0 {
        return Err(Error::Invalid {
            op,
            why: format!("needs at least one pair of non-empty embeddings, got [{n}, {d}]"),
        });
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::Invalid {
            op,
            why: format!("the temperature must be positive and finite, got {tau}"),
        });
    }
    if !(0.0..=1.0).contains(&lambda) {
        return Err(Error::Invalid {
            op,
            why: format!("lambda weighs the two directions and must be in [0, 1], got {lambda}"),
        });
    }
    let want_grad = grad_enabled() && (v.requires_grad_flag() || u.requires_grad_flag());
    let gpu = v.gpu();
    let side = fused_side(gpu, n, d);
    let fused = match path {
        InfoNcePath::Auto => n <= FUSED_MAX_N && side.is_some(),
        InfoNcePath::Fused if side.is_none() => {
            return Err(Error::Invalid {
                op,
                why: format!(
                    "the fused path at N = {n}, d = {d} would run more loop iterations per \
                     invocation than the adapter {:?} allows ({}; llvmpipe's limit is \
                     {LLVMPIPE_LOOP_LIMIT}); use the tiled path",
                    gpu.adapter_info().name,
                    gpu.loop_budget()
                ),
            })
        }
        InfoNcePath::Fused => true,
        InfoNcePath::Tiled => false,
    };
    let nt = n.div_ceil(TILE);

    // Scratch layout (elements). Tiled: v', u' | inverse norms | lr, lc | loss terms | S_ii |
    // partial row and column statistics | a chunk of dC rows. Fused, per workgroup (two with
    // gradients, one without; see the shader's Layout): inverse norms | lr, lc | loss terms
    // of rows and columns | c_i, r_j | P | W (with gradients).
    let fused_workgroups = if want_grad { 2 } else { 1 };
    let (nrm, lse, term, diag, prow, pcol, dots, mat, rows) = if fused {
        // Rows of N: P, and W with gradients.
        let matrix_rows = if want_grad { 2 * n } else { n };
        (0, 2 * n, 4 * n, 0, 0, 0, 6 * n, 8 * n, matrix_rows)
    } else {
        let stats = 2 * nt * n;
        let nrm = 2 * n * d;
        let (lse, term) = (nrm + 2 * n, nrm + 4 * n);
        let (diag, prow) = (term + n, term + 2 * n);
        let (pcol, mat) = (prow + stats, prow + 2 * stats);
        let rows = if want_grad {
            chunk_rows(gpu, n, mat)
        } else {
            0
        };
        (nrm, lse, term, diag, prow, pcol, 0, mat, rows)
    };
    let region = mat + rows * n;
    let total = if fused {
        fused_workgroups * region
    } else {
        region
    };
    u32_len(op, total)?;
    let scratch = Tensor::uninit(gpu, &[total], DType::F32, op)?;
    let loss = Tensor::uninit(gpu, &[], DType::F32, op)?;
    // Without gradients the kernels still declare gv and gu: one-element stand-ins.
    let grad_shape = if want_grad { vec![n, d] } else { vec![1] };
    let gv = Tensor::uninit(gpu, &grad_shape, DType::F32, op)?;
    let gu = Tensor::uninit(gpu, &grad_shape, DType::F32, op)?;

    let params = Params {
        n: n as u32,
        d: d as u32,
        nt: nt as u32,
        rows: rows as u32,
        r0: 0,
        nrm: nrm as u32,
        lse: lse as u32,
        term: term as u32,
        diag: diag as u32,
        prow: prow as u32,
        pcol: pcol as u32,
        mat: mat as u32,
        inv_tau: 1.0 / tau,
        lambda,
        grad_scale: 1.0 / (n as f32 * tau),
        dots: dots as u32,
        region: region as u32,
        _pad: [0; 3],
    };
    let buffers = [
        (gv.buffer(), Access::ReadWrite),
        (gu.buffer(), Access::ReadWrite),
        (loss.buffer(), Access::ReadWrite),
        (v.buffer(), Access::Read),
        (u.buffer(), Access::Read),
        (scratch.buffer(), Access::ReadWrite),
        (v.buffer(), Access::Read),
        (u.buffer(), Access::Read),
    ];
    let tk = k_step(gpu);
    let subgroups = super::subgroup_forms(gpu);
    let launch = |entry: &'static str,
                  name: &'static str,
                  p: &Params,
                  extra: &[(&'static str, f64)],
                  workgroups: [u32; 3],
                  flops: usize,
                  bytes: usize| {
        let mut overrides = vec![("TK", tk as f64)];
        overrides.extend_from_slice(extra);
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader: if subgroups { SUBGROUP_SHADER } else { SHADER },
                entry,
                overrides: &overrides,
            },
            name,
            params: bytemuck::bytes_of(p),
            buffers: &buffers,
            workgroups,
            flops: flops as u64,
            bytes: bytes as u64,
        })
    };
    let (nd, nn) = (n * d, n * n);
    let tiles = |len: usize| len.div_ceil(TILE) as u32;
    if fused {
        let products = if want_grad { 3 } else { 1 };
        launch(
            if subgroups { "fused_subgroup" } else { "fused" },
            "infonce_fused",
            &params,
            &[
                ("GRAD", want_grad as u8 as f64),
                ("SIDE", side.unwrap_or(16) as f64),
                ("VEC4", (d % 4 == 0) as u8 as f64),
            ],
            [fused_workgroups as u32, 1, 1],
            2 * products * nn * d + 10 * nn,
            4 * (4 * nd + 2 * nn),
        )?;
    } else {
        // The row-wise kernels: a workgroup per batch of WG / LANES rows.
        let rows_grid = gpu.grid((2 * n).div_ceil((WG / LANES) as usize) as u32);
        launch(
            "normalize_embeddings",
            "infonce_normalize",
            &params,
            &[],
            rows_grid,
            4 * nd,
            16 * nd,
        )?;
        launch(
            "lse_tiles",
            "infonce_lse_tiles",
            &params,
            &[],
            [nt as u32, nt as u32, 1],
            2 * nn * d + 4 * nn,
            4 * (2 * nd * nt + 4 * nt * n),
        )?;
        launch(
            "lse_combine",
            "infonce_lse_combine",
            &params,
            &[],
            gpu.grid(n.div_ceil(WG as usize) as u32),
            2 * nd + 10 * nt * n,
            4 * (4 * nt * n + 2 * nd + 3 * n),
        )?;
        launch(
            "loss_sum",
            "infonce_loss_sum",
            &params,
            &[],
            [1, 1, 1],
            n,
            4 * n,
        )?;
        if want_grad {
            for r0 in (0..n).step_by(rows) {
                let rc = rows.min(n - r0);
                let p = Params {
                    r0: r0 as u32,
                    rows: rc as u32,
                    ..params
                };
                let products = 2 * rc * n * d;
                launch(
                    "dscores",
                    "infonce_dscores",
                    &p,
                    &[],
                    [nt as u32, tiles(rc), 1],
                    products + 8 * rc * n,
                    4 * (rc * n + 2 * rc * d * nt),
                )?;
                launch(
                    "grad_v",
                    "infonce_grad_v",
                    &p,
                    &[],
                    [tiles(d), tiles(rc), 1],
                    products,
                    4 * (rc * n + rc * d),
                )?;
                launch(
                    "grad_u",
                    "infonce_grad_u",
                    &p,
                    &[("ACCUMULATE", (r0 > 0) as u8 as f64)],
                    [tiles(d), nt as u32, 1],
                    products,
                    4 * (rc * n + rc * d + 2 * nd),
                )?;
            }
            launch(
                "project",
                "infonce_project",
                &params,
                &[],
                rows_grid,
                8 * nd,
                4 * 6 * nd,
            )?;
        }
    }
    // Back to the pool: the dispatches that use it are recorded, and whatever takes it next
    // is recorded after them.
    drop(scratch);
    if !want_grad {
        return Ok(loss);
    }
    let p = params;
    Ok(record("infonce", loss, &[v, u], move |g, needs| {
        // As the root of a backward (the usual case) the incoming gradient is 1: the kept
        // gradients are the answer, and the backward dispatches nothing.
        if crate::autograd::is_unit_seed(g) {
            return Ok(vec![needs[0].then_some(gv), needs[1].then_some(gu)]);
        }
        let gpu = g.gpu();
        // The kept gradients belong to this closure alone: scaled in place, then handed over.
        gpu.dispatch(&Dispatch {
            kernel: Kernel {
                shader: SHADER,
                entry: "scale_grads",
                overrides: &[],
            },
            name: "infonce_backward",
            params: bytemuck::bytes_of(&p),
            buffers: &[
                (gv.buffer(), Access::ReadWrite),
                (gu.buffer(), Access::ReadWrite),
                (g.buffer(), Access::ReadWrite),
            ],
            workgroups: gpu.grid(nd.div_ceil((WG * SCALE_PER_INVOCATION) as usize) as u32),
            flops: 2 * nd as u64,
            bytes: 16 * nd as u64,
        })?;
        Ok(vec![needs[0].then_some(gv), needs[1].then_some(gu)])
    }))
}

/// The shader's `SIDE` for the fused path (its workgroups have `SIDE^2` invocations), or None
/// where the fused path cannot run within the adapter's loop budget. On a CPU adapter, whose
/// loops run every invocation's trip count, the smallest workgroup that fits: 16 invocations
/// leave the fewest idle (measured on llvmpipe, the fused dispatch at N = 32, d = 512: 0.75 ms
/// against 1.2 ms with 64 invocations). 16 elsewhere (256 invocations).
fn fused_side(gpu: &Gpu, n: usize, d: usize) -> Option<u32> {
    let sides: &[usize] = if gpu.is_cpu() { &[4, 8, 16] } else { &[16] };
    let subgroups = super::subgroup_forms(gpu);
    sides
        .iter()
        .find(|&&side| fused_loop_iterations(n, d, side * side, subgroups) <= gpu.loop_budget())
        .map(|&side| side as u32)
}

/// Loop iterations of one invocation of the fused kernel with `wg` invocations per workgroup
/// (every loop, inner ones included, phase by phase as in the shader; the workgroup that
/// computes the loss adds the serial sum), in its portable or its subgroup form.
fn fused_loop_iterations(n: usize, d: usize, wg: usize, subgroups: bool) -> usize {
    let rounds = |items: usize| items.div_ceil(wg);
    let d4 = d.div_ceil(4);
    let lse_weights = 2 * rounds(2 * n) * n + 2 * n;
    if subgroups {
        // Each subgroup of 8 takes 16 x 16 blocks of P (the norms on the way), then 16 rows by
        // 32 columns of a gradient (a step of its loop per 8 summed indices); a block's stores
        // loop 2 x (4 + 16) + 4 times, a gradient tile's 4 x (4 + 16).
        let per_subgroup = |items: usize| items.div_ceil(wg / 8);
        let blocks = n.div_ceil(16);
        return lse_weights
            + per_subgroup(blocks * blocks) * (d4 + 44)
            + per_subgroup(blocks * d.div_ceil(32)) * (n.div_ceil(8) + 80);
    }
    let blocks = n.div_ceil(4);
    // A block's stores: 4 columns x 4 rows (and the outer loop's own iterations).
    let store = 20;
    rounds(2 * n) * d4
        + lse_weights
        + rounds(blocks * blocks) * (d4 + store)
        + rounds(blocks * d4) * (n + store)
}

/// Rows of dC per chunk of the tiled path: as many as the scratch budget allows (whole tiles),
/// all `n` when they fit.
fn chunk_rows(gpu: &Gpu, n: usize, fixed_elems: usize) -> usize {
    let fixed = 4 * fixed_elems as u64;
    let budget = gpu
        .scratch_bytes()
        .min(gpu.max_binding_bytes().saturating_sub(fixed));
    let rows = (budget / (4 * n as u64)) as usize / TILE * TILE;
    rows.max(TILE).min(n)
}

/// The shader's `TK`: K-slices of 32 when two 32 x 64 tiles and the reduction array fit the
/// adapter's workgroup memory (half the barriers), else 16 (10 KiB, within the 16 KiB that
/// every adapter has).
fn k_step(gpu: &Gpu) -> u32 {
    let need = |tk: u32| 2 * tk * TILE as u32 * 4 + WG * 8;
    if gpu.limits().max_compute_workgroup_storage_size >= need(32) {
        32
    } else {
        16
    }
}

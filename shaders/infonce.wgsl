// The fused cross-modal softmax-InfoNCE loss of ConVIRT, forward and gradients.
//
// v, u: [N, d] image and text embeddings; row i of each is a positive pair.
//   v' = v / max(|v|, 1e-12), u' likewise           (torch.nn.functional.normalize)
//   S  = v' u'^T / tau
//   lr_i = log sum_j exp S_ij   (image-to-text),   lc_j = log sum_i exp S_ij   (text-to-image)
//   L  = (1/N) sum_i [lambda (lr_i - S_ii) + (1 - lambda) (lc_i - S_ii)]
// and, when GRAD, the gradients, kept by the forward for the backward to scale:
//   dC_ij = (lambda (exp(S_ij - lr_i) - [i = j]) + (1 - lambda) (exp(S_ij - lc_j) - [i = j])) / (N tau)
//   dv' = dC u',  du' = dC^T v',  dv = (dv' - v' (v'.dv')) / |v|,  du likewise.
// (dC is dL/d(v'_i.u'_j): the 1/tau of S is folded into it.)
//
// Two paths:
// - `fused`, for N <= 1024: one dispatch (see its section below). S is kept in the scratch
//   buffer (4 MiB at N = 1024, cache-resident); storageBarrier orders the phases, as each
//   workgroup computes everything it reads.
// - tiled, for any N: `normalize_embeddings`; `lse_tiles` (S tile by tile, partial row and column
//   log-sum-exps); `lse_combine` (the log-sum-exps and the loss term of each i); `loss_sum`;
//   then per chunk of rows `dscores` (S recomputed, dC stored), `grad_v`, `grad_u`; `project`.
//   S is never stored whole: at N = 8192 it would be 256 MiB.
//
// Stability: |S| <= 1/tau, which suggests a fixed shift of 1/tau instead of a max pass; it is
// NOT used, because exp(S - 1/tau) >= exp(-2/tau) underflows f32 (exp(-87) is the smallest
// normal; GPUs flush denormals) for tau < 0.023: at tau = 0.01 a row whose best cosine is
// below 0.13 (typical of random 512-d embeddings) would sum to 0 and its log to -inf. A shift of 0
// overflows at S > 88 instead. So the maximum is tracked on the fly (online log-sum-exp, one
// pass, one exp per element), which costs no extra pass and is stable for any tau.
//
// Buffers: the gradient outputs gv, gu; `scalar` (the loss in the forward, its incoming
// gradient in `scale_grads`, so both layouts agree); the inputs v, u (and v4, u4, the same as
// vec4s); `scratch`, whose layout the host computes (offsets in Params). Tiled: v' then u'
// ([2N, d] from 0), inverse norms [2N], log-sum-exps (lr [N] then lc [N]), loss terms [N],
// S_ii [N], partial row and column statistics [nt, N] (max, sum) pairs each, a chunk of dC
// rows. Fused, per workgroup: see Layout.

struct Params {
    n: u32, d: u32,
    // Tiles of TILE along N.
    nt: u32,
    // The current chunk of rows of dC: rows r0 .. r0 + rows.
    rows: u32, r0: u32,
    // Offsets in scratch (elements).
    nrm: u32, lse: u32, term: u32, diag: u32, prow: u32, pcol: u32, mat: u32,
    inv_tau: f32, lambda: f32,
    // 1 / (N tau): the common factor of dC.
    grad_scale: f32,
    // The fused path: offset in scratch of c_i and r_j ([2N]), and the elements of scratch
    // that each workgroup owns.
    dots: u32,
    region: u32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// The parameters as the kernels read them: a copy that lavapipe cannot trace back to the
// uniform. lavapipe specialises a shader to the values of uniforms that bound its loops
// ("uniform inlining"), and for these kernels it kept doing so at every dispatch: a new LLVM
// compile each time (10 ms per fused dispatch at N = 32 with Mesa's shader cache warm, 440 ms
// per tiled dispatch with it off; the fused path then ran 10-100x slower than it does).
var<private> p: Params;

// Every entry point starts here. The condition always holds (a dispatch has a workgroup), but
// no compiler can know it, so p is not a plain uniform load.
fn load_params(nwg: vec3<u32>) {
    if (nwg.x != 0u) {
        p = params;
    }
}

@group(0) @binding(1) var<storage, read_write> gv: array<f32>;
@group(0) @binding(2) var<storage, read_write> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> scalar: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> u: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
// The same buffers as v and u, read 16 bytes at a time when VEC4 (the fused path).
@group(0) @binding(7) var<storage, read> v4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> u4: array<vec4<f32>>;

// Compute the gradients in the forward (set when autograd will ask for them).
override GRAD: bool = true;
// d % 4 == 0: rows of v and u are read through v4 and u4.
override VEC4: bool = false;
// grad_u adds to gu instead of storing: every chunk of rows after the first.
override ACCUMULATE: bool = false;
// Step along K of a tile product: 32 where the adapter's workgroup memory holds two 32 x 64
// tiles (half the barriers), else 16 (16 KiB is all that is guaranteed).
override TK: u32 = 16u;
// (TK >= SIDE: lse_tiles reuses the K-slices as a SIDE x SIDE scratch.)

// Invocations along each side of the square workgroup. The tiled path keeps 16, each
// invocation owning a 4 x 4 block of a TILE x TILE = 64 x 64 tile (at least 8: its row-wise
// phases give LANES = 32 invocations to a row); the fused path takes 4 on CPU adapters.
override SIDE: u32 = 16u;
override WG: u32 = SIDE * SIDE;
override TILE: u32 = 4u * SIDE;
// Invocations that share one row in the row-wise phases (normalise, log-sum-exps of rows,
// project), so neighbours read neighbouring elements: a row per invocation strides d * 4
// bytes between lanes and made these phases over 10x slower on an H100. (llvmpipe, which
// gathers lane by lane either way, timed the same with 1 and 32.)
const LANES: u32 = 32u;
// An empty online log-sum-exp: (max so far, sum of exp(x - max)). Finite, so merging two
// empty ones never computes inf - inf.
const EMPTY: vec2<f32> = vec2<f32>(-3.0e38, 0.0);

// The K-slices of a tile product: a_tile[k * 16 + g] holds rows 4g .. 4g + 3 at k, so an
// invocation's 4 x 4 block is one vec4 of each per k.
var<workgroup> a_tile: array<vec4<f32>, TK * SIDE>;
var<workgroup> b_tile: array<vec4<f32>, TK * SIDE>;
// Reductions: sums in x, or online log-sum-exp pairs.
var<workgroup> red: array<vec2<f32>, WG>;

// Rows of a matrix in scratch: element (r, k) at off + r * rs + k * cs, for r < rows.
struct Operand {
    off: u32, rs: u32, cs: u32, rows: u32,
}

fn operand(o: Operand, r: u32, k: u32, k_len: u32) -> f32 {
    if (r < o.rows && k < k_len) {
        return scratch[o.off + r * o.rs + k * o.cs];
    }
    return 0.0;
}

// The 4 x 4 block of invocation `lid` in the tile (m0, n0) of C = A B^T (both operands given
// by rows, K = k_len): column c of the result is output column n0 + 4 (lid % 16) + c, its
// component i output row m0 + 4 (lid / 16) + i. Every invocation of the workgroup must call it
// (barriers); rows and columns past the operands read as zero.
fn tile_product(a: Operand, b: Operand, k_len: u32, m0: u32, n0: u32, lid: u32) -> mat4x4<f32> {
    let tr = lid / SIDE;
    let tc = lid % SIDE;
    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < k_len; k0 += TK) {
        workgroupBarrier();
        // Neighbouring invocations take neighbouring k: contiguous when K is the fast axis.
        for (var e = lid; e < TK * SIDE; e += WG) {
            let k = e % TK;
            let g = e / TK;
            let kk = k0 + k;
            let ra = m0 + 4u * g;
            a_tile[k * SIDE + g] = vec4<f32>(operand(a, ra, kk, k_len), operand(a, ra + 1u, kk, k_len),
                                            operand(a, ra + 2u, kk, k_len), operand(a, ra + 3u, kk, k_len));
            let rb = n0 + 4u * g;
            b_tile[k * SIDE + g] = vec4<f32>(operand(b, rb, kk, k_len), operand(b, rb + 1u, kk, k_len),
                                            operand(b, rb + 2u, kk, k_len), operand(b, rb + 3u, kk, k_len));
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let x = a_tile[k * SIDE + tr];
            let y = b_tile[k * SIDE + tc];
            acc[0] += x * y.x;
            acc[1] += x * y.y;
            acc[2] += x * y.z;
            acc[3] += x * y.w;
        }
    }
    return acc;
}

// The operands, as rows: v' and u' (K = d), and their transposes (rows indexed by the
// embedding dimension, K = N) for the gradient products.
fn rows_v(first: u32, count: u32) -> Operand {
    return Operand(first * p.d, p.d, 1u, count);
}

fn rows_u() -> Operand {
    return Operand(p.n * p.d, p.d, 1u, p.n);
}

fn cols_v(first: u32) -> Operand {
    return Operand(first * p.d, 1u, p.d, p.d);
}

fn cols_u() -> Operand {
    return Operand(p.n * p.d, 1u, p.d, p.d);
}

fn lse_push(ms: vec2<f32>, x: f32) -> vec2<f32> {
    // exp(x - max) when x does not raise the maximum, else exp(old max - x) rescales the sum.
    let e = exp(-abs(x - ms.x));
    return select(vec2<f32>(ms.x, ms.y + e), vec2<f32>(x, ms.y * e + 1.0), x > ms.x);
}

fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

fn lse_value(ms: vec2<f32>) -> f32 {
    return ms.x + log(ms.y);
}

// The row-wise phases take rows in batches of WG / LANES, LANES invocations to a row.
fn row_batches(rows: u32) -> u32 {
    let per = WG / LANES;
    return (rows + per - 1u) / per;
}

fn batch_row(b: u32, lid: u32) -> u32 {
    return b * (WG / LANES) + lid / LANES;
}

// Sum over the LANES invocations of lid's row; every invocation must call it.
fn lane_sum(lid: u32, x: f32) -> f32 {
    red[lid].x = x;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lid % LANES < s) {
            red[lid].x += red[lid + s].x;
        }
        workgroupBarrier();
    }
    let r = red[lid - lid % LANES].x;
    workgroupBarrier();
    return r;
}

// The same for online log-sum-exps.
fn lane_lse(lid: u32, ms: vec2<f32>) -> vec2<f32> {
    red[lid] = ms;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lid % LANES < s) {
            red[lid] = lse_merge(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[lid - lid % LANES];
    workgroupBarrier();
    return r;
}

fn embedding(r: u32, c: u32) -> f32 {
    if (r < p.n) {
        return v[r * p.d + c];
    }
    return u[(r - p.n) * p.d + c];
}

// Batches first, first + step, ... of the 2N rows of [v; u]: v' and u' into scratch with
// their inverse norms. O(N d) work, small beside the O(N^2 d) products.
fn normalize_rows(lid: u32, first: u32, step: u32) {
    let d = p.d;
    let lane = lid % LANES;
    for (var b = first; b < row_batches(2u * p.n); b += step) {
        let r = batch_row(b, lid);
        let valid = r < 2u * p.n;
        var ss = 0.0;
        if (valid) {
            for (var c = lane; c < d; c += LANES) {
                let x = embedding(r, c);
                ss += x * x;
            }
        }
        ss = lane_sum(lid, ss);
        if (valid) {
            // F.normalize's clamp: a zero row stays zero instead of becoming NaN.
            let inv = 1.0 / max(sqrt(ss), 1e-12);
            if (lane == 0u) {
                scratch[p.nrm + r] = inv;
            }
            for (var c = lane; c < d; c += LANES) {
                scratch[r * d + c] = embedding(r, c) * inv;
            }
        }
    }
}

// dC_ij from S_ij and the log-sum-exps (lr at scratch[lse], lc after it).
fn dscore(lse: u32, i: u32, j: u32, s: f32) -> f32 {
    let diag = select(0.0, 1.0, i == j);
    let row = exp(s - scratch[lse + i]) - diag;
    let col = exp(s - scratch[lse + p.n + j]) - diag;
    return (p.lambda * row + (1.0 - p.lambda) * col) * p.grad_scale;
}

// Output element (row, col) of an invocation's block: component i of column c.
fn block_row(m0: u32, lid: u32, i: u32) -> u32 {
    return m0 + 4u * (lid / SIDE) + i;
}

fn block_col(n0: u32, lid: u32, c: u32) -> u32 {
    return n0 + 4u * (lid % SIDE) + c;
}

// Rows r0 + m of dv' from a tile of dC[chunk] u' (m < p.rows).
fn store_grad_v(acc: mat4x4<f32>, m0: u32, n0: u32, lid: u32) {
    for (var c = 0u; c < 4u; c++) {
        let col = block_col(n0, lid, c);
        for (var i = 0u; i < 4u; i++) {
            let m = block_row(m0, lid, i);
            if (m < p.rows && col < p.d) {
                gv[(p.r0 + m) * p.d + col] = acc[c][i];
            }
        }
    }
}

// Rows of du' from a tile of dC[chunk]^T v'[chunk]; later chunks add to the earlier ones.
fn store_grad_u(acc: mat4x4<f32>, m0: u32, n0: u32, lid: u32) {
    for (var c = 0u; c < 4u; c++) {
        let col = block_col(n0, lid, c);
        for (var i = 0u; i < 4u; i++) {
            let m = block_row(m0, lid, i);
            if (m < p.n && col < p.d) {
                let o = m * p.d + col;
                if (ACCUMULATE) {
                    gu[o] += acc[c][i];
                } else {
                    gu[o] = acc[c][i];
                }
            }
        }
    }
}

fn grad_at(r: u32, c: u32) -> f32 {
    if (r < p.n) {
        return gv[r * p.d + c];
    }
    return gu[(r - p.n) * p.d + c];
}

fn grad_set(r: u32, c: u32, x: f32) {
    if (r < p.n) {
        gv[r * p.d + c] = x;
    } else {
        gu[(r - p.n) * p.d + c] = x;
    }
}

// Through the normalisation, in place: dv = (dv' - v' (v'.dv')) / |v| for the batches
// first, first + step, ... of the rows of [gv; gu].
fn project_rows(lid: u32, first: u32, step: u32) {
    let d = p.d;
    let lane = lid % LANES;
    for (var b = first; b < row_batches(2u * p.n); b += step) {
        let r = batch_row(b, lid);
        let valid = r < 2u * p.n;
        var dp = 0.0;
        if (valid) {
            for (var c = lane; c < d; c += LANES) {
                dp += scratch[r * d + c] * grad_at(r, c);
            }
        }
        dp = lane_sum(lid, dp);
        if (valid) {
            let inv = scratch[p.nrm + r];
            for (var c = lane; c < d; c += LANES) {
                grad_set(r, c, (grad_at(r, c) - scratch[r * d + c] * dp) * inv);
            }
        }
    }
}

// Sum over the workgroup; every invocation must call it.
fn workgroup_sum(lid: u32, x: f32) -> f32 {
    red[lid].x = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid].x += red[lid + s].x;
        }
        workgroupBarrier();
    }
    let r = red[0].x;
    workgroupBarrier();
    return r;
}

fn tiles(len: u32) -> u32 {
    return (len + TILE - 1u) / TILE;
}

// Where the fused path keeps its vectors and matrices: p's offsets moved to the workgroup's
// region of scratch. Inverse norms [2N] (v then u), log-sum-exps [2N] (lr then lc), loss
// terms of rows then columns [2N], c_i then r_j [2N], P [N, N], then W [N, N] with gradients.
struct Layout {
    nrm: u32, lse: u32, term: u32, dots: u32, mat: u32,
}

var<private> at: Layout;

// ---- The fused path: everything in one dispatch. ----
//
// No phase stages operands through workgroup memory or reduces across invocations: each
// invocation owns whole dot products (all of K) of a 4 x 4 block, and the only barriers are
// the four between phases. This is the path for CPU adapters such as llvmpipe, which run a
// workgroup's invocations as fibres of 8 SIMD lanes on one core, gather every load lane by
// lane, and pay per fibre at each barrier (the tiled path's staged tiles and lane sums cost
// 2.4 ms at N = 32). Measured there, and kept for that reason:
// - every loop runs the same trip count in all invocations (indices clamped, stores masked),
//   and blocks are 4 x 4: variants with per-invocation trip counts, or with 8 x 8 blocks
//   (fewer loads per product), ran up to 50x slower and erratically when tried, before the
//   per-dispatch recompiles that load_params prevents were found (the likely cause; they
//   were not retried since);
// - the hot loops read rows through offsets computed outside them: no integer division or
//   choice of buffer per load;
// - llvmpipe ends all loops of an invocation, silently, once they have run 65535 iterations
//   together: the host picks the workgroup size that keeps each invocation under that, or
//   the tiled path (fused_loop_iterations in infonce.rs counts them, phase by phase).
//
// v' and u' are never stored: the products use v and u with the inverse norms folded in,
//   P = v' u'^T = diag(1/|v|) v u^T diag(1/|u|),   S = P / tau,
//   dv = sum_j W_ij u_j - c_i v_i / |v_i|^2,   W_ij = dC_ij / (|v_i| |u_j|),   c_i = sum_j dC_ij P_ij
// (c_i is v'_i . dv'_i, the projection that the normalisation removes), and du likewise with
// the columns of W and r_j = sum_i dC_ij P_ij.
//
// With gradients the dispatch has two workgroups, one per core of a 2-core CPU adapter: both
// compute the norms, P, the log-sum-exps and W in their own region of scratch (neither waits
// for the other), then workgroup 0 computes dv and workgroup 1 du, two thirds of the products.

// Elements k .. k + 3 of the row of v (or u) that starts at element o (zeros past d). Row
// offsets are computed outside the loops: an integer division per load costs more than the
// products on a CPU adapter. No loop either: see fused_loop_iterations in infonce.rs.
fn v_at4(o: u32, k: u32) -> vec4<f32> {
    if (VEC4) {
        return v4[(o + k) / 4u];
    }
    let e = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u);
    let c = o + min(e, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(), vec4<f32>(v[c.x], v[c.y], v[c.z], v[c.w]), e < vec4<u32>(p.d));
}

fn u_at4(o: u32, k: u32) -> vec4<f32> {
    if (VEC4) {
        return u4[(o + k) / 4u];
    }
    let e = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u);
    let c = o + min(e, vec4<u32>(p.d - 1u));
    return select(vec4<f32>(), vec4<f32>(u[c.x], u[c.y], u[c.z], u[c.w]), e < vec4<u32>(p.d));
}

// Row r of [v; u] at k .. k + 3 (a branch between the buffers: outside the hot loops only).
fn embedding4(r: u32, k: u32) -> vec4<f32> {
    if (r < p.n) {
        return v_at4(r * p.d, k);
    }
    return u_at4((r - p.n) * p.d, k);
}

// Element offsets of rows r .. r + 3 of v or u, the rows past N clamped to the last.
fn row_offsets(r: u32) -> vec4<u32> {
    return min(vec4<u32>(r) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) * p.d;
}

// Inverse norms of the 2N rows of [v; u], a row per invocation.
fn inverse_norms(lid: u32) {
    for (var r0 = 0u; r0 < 2u * p.n; r0 += WG) {
        let r = min(r0 + lid, 2u * p.n - 1u);
        var ss = vec4<f32>();
        for (var k = 0u; k < p.d; k += 4u) {
            let x = embedding4(r, k);
            ss += x * x;
        }
        if (r0 + lid < 2u * p.n) {
            // F.normalize's clamp: a zero row stays zero instead of becoming NaN.
            scratch[at.nrm + r] = 1.0 / max(sqrt(ss.x + ss.y + ss.z + ss.w), 1e-12);
        }
    }
}

// P = v' u'^T into the matrix region, a 4 x 4 block per invocation at a time.
fn cosines(lid: u32) {
    let n = p.n;
    let nb = (n + 3u) / 4u;
    for (var t0 = 0u; t0 < nb * nb; t0 += WG) {
        let t = min(t0 + lid, nb * nb - 1u);
        let i0 = (t / nb) * 4u;
        let j0 = (t % nb) * 4u;
        // Rows past N repeat the last one; their results are not stored.
        let i = min(vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(n - 1u));
        let ov = row_offsets(i0);
        let ou = row_offsets(j0);
        var acc = mat4x4<f32>();
        for (var k = 0u; k < p.d; k += 4u) {
            let x = mat4x4<f32>(v_at4(ov.x, k), v_at4(ov.y, k), v_at4(ov.z, k), v_at4(ov.w, k));
            // y * x: component a is the dot product of column a of x (row i.a of v) with y.
            acc[0] += u_at4(ou.x, k) * x;
            acc[1] += u_at4(ou.y, k) * x;
            acc[2] += u_at4(ou.z, k) * x;
            acc[3] += u_at4(ou.w, k) * x;
        }
        if (t0 + lid < nb * nb) {
            let nv = vec4<f32>(scratch[at.nrm + i.x], scratch[at.nrm + i.y], scratch[at.nrm + i.z], scratch[at.nrm + i.w]);
            for (var c = 0u; c < 4u; c++) {
                let col = j0 + c;
                let scaled = acc[c] * nv * scratch[at.nrm + n + min(col, n - 1u)];
                for (var a = 0u; a < 4u; a++) {
                    if (i0 + a < n && col < n) {
                        scratch[at.mat + (i0 + a) * n + col] = scaled[a];
                    }
                }
            }
        }
    }
}

// For e < N row e of S, else column e - N: its log-sum-exp, and its term of the loss.
fn row_and_column_lse(lid: u32) {
    let n = p.n;
    for (var e0 = 0u; e0 < 2u * n; e0 += WG) {
        let e = min(e0 + lid, 2u * n - 1u);
        let is_row = e < n;
        let line = e % n;
        // Element m of the line at base + m * step.
        let base = at.mat + select(line, line * n, is_row);
        let step = select(n, 1u, is_row);
        var ms = EMPTY;
        for (var m = 0u; m < n; m++) {
            ms = lse_push(ms, scratch[base + m * step] * p.inv_tau);
        }
        if (e0 + lid < 2u * n) {
            let lse = lse_value(ms);
            let weight = select(1.0 - p.lambda, p.lambda, is_row);
            scratch[at.lse + e] = lse;
            scratch[at.term + e] = weight * (lse - scratch[at.mat + line * n + line] * p.inv_tau);
        }
    }
}

// The loss, and for e < N row e of W and c_e, else r_(e - N) (dC recomputed by columns).
fn weights_and_projections(lid: u32, first: bool) {
    let n = p.n;
    if (lid == 0u && first) {
        var total = 0.0;
        for (var e = 0u; e < 2u * n; e++) {
            total += scratch[at.term + e];
        }
        scalar[0] = total / f32(n);
    }
    if (!GRAD) {
        return;
    }
    let w = at.mat + n * n;
    for (var e0 = 0u; e0 < 2u * n; e0 += WG) {
        let e = min(e0 + lid, 2u * n - 1u);
        let live = e0 + lid < 2u * n;
        let is_row = e < n;
        let line = e % n;
        let inv_norm = scratch[at.nrm + e];
        var dot = 0.0;
        for (var m = 0u; m < n; m++) {
            let i = select(m, line, is_row);
            let j = select(line, m, is_row);
            let cosine = scratch[at.mat + i * n + j];
            let dc = dscore(at.lse, i, j, cosine * p.inv_tau);
            dot += dc * cosine;
            if (live && is_row) {
                scratch[w + i * n + j] = dc * inv_norm * scratch[at.nrm + n + j];
            }
        }
        if (live) {
            scratch[at.dots + e] = dot;
        }
    }
}

// dv (side 0) and du (side 1): rows of 4 at a time, a vec4 of columns per invocation.
fn gradients(lid: u32, side: u32) {
    let n = p.n;
    let nb = (n + 3u) / 4u;
    let nc = (p.d + 3u) / 4u;
    let w = at.mat + n * n;
    for (var t0 = 0u; t0 < nb * nc; t0 += WG) {
        let t = min(t0 + lid, nb * nc - 1u);
        let i0 = (t / nc) * 4u;
        let k = (t % nc) * 4u;
        let i = min(vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(n - 1u));
        // W element (output row a, summed index m) at w + i.a * rs + m * cs; the summed rows
        // are u's for dv and v's for du.
        let rs = select(1u, n, side == 0u);
        let cs = select(n, 1u, side == 0u);
        var acc = mat4x4<f32>();
        for (var m = 0u; m < n; m++) {
            // Both loads run on a CPU adapter whichever the side: a select costs no more.
            let y = select(v_at4(m * p.d, k), u_at4(m * p.d, k), side == 0u);
            let wm = w + m * cs;
            acc[0] += y * scratch[wm + i.x * rs];
            acc[1] += y * scratch[wm + i.y * rs];
            acc[2] += y * scratch[wm + i.z * rs];
            acc[3] += y * scratch[wm + i.w * rs];
        }
        if (t0 + lid < nb * nc) {
            store_gradient_rows(side, i0, k, acc);
        }
    }
}

// Rows i0 .. i0 + 3 of dv or du at columns k .. k + 3 (column a of acc is row i0 + a):
// sum_m W u_m minus the projection that the normalisation removes.
fn store_gradient_rows(side: u32, i0: u32, k: u32, acc: mat4x4<f32>) {
    let n = p.n;
    let own = side * n;
    for (var a = 0u; a < 4u; a++) {
        let i = i0 + a;
        if (i < n) {
            let inv_norm = scratch[at.nrm + own + i];
            let g = acc[a] - embedding4(own + i, k) * (scratch[at.dots + own + i] * inv_norm * inv_norm);
            for (var c = 0u; c < 4u; c++) {
                if (k + c < p.d) {
                    let o = i * p.d + k + c;
                    if (side == 0u) {
                        gv[o] = g[c];
                    } else {
                        gu[o] = g[c];
                    }
                }
            }
        }
    }
}

// Every fused entry point starts here: the parameters, and workgroup wid's region of scratch.
fn begin_fused(wid: vec3<u32>, nwg: vec3<u32>) {
    load_params(nwg);
    let base = wid.x * p.region;
    at = Layout(base + p.nrm, base + p.lse, base + p.term, base + p.dots, base + p.mat);
}

@compute @workgroup_size(WG)
fn fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    begin_fused(wid, nwg);
    inverse_norms(lid);
    storageBarrier();
    cosines(lid);
    storageBarrier();
    row_and_column_lse(lid);
    storageBarrier();
    weights_and_projections(lid, wid.x == 0u);
    if (GRAD) {
        storageBarrier();
        for (var side = wid.x; side < 2u; side += nwg.x) {
            gradients(lid, side);
        }
    }
}

// ---- The tiled path: a grid per phase. ----

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn normalize_embeddings(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    normalize_rows(lid, wid.x + wid.y * nwg.x, nwg.x * nwg.y);
}

// Grid (column tile, row tile) of S: partial log-sum-exps of each row over this tile's
// columns into prow[column tile], of each column over its rows into pcol[row tile].
@compute @workgroup_size(WG)
fn lse_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let n = p.n;
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(rows_v(0u, n), rows_u(), p.d, m0, n0, lid) * p.inv_tau;
    // S_ii, for the loss terms, from the tiles on the diagonal.
    if (wid.x == wid.y) {
        for (var c = 0u; c < 4u; c++) {
            let i = block_row(m0, lid, c);
            if (i < n && i == block_col(n0, lid, c)) {
                scratch[p.diag + i] = acc[c][c];
            }
        }
    }
    // Each invocation's 4 rows over its 4 columns, then the SIDE invocations of a row combine
    // through workgroup memory (the K-slices are free again).
    var rows = array<vec2<f32>, 4>(EMPTY, EMPTY, EMPTY, EMPTY);
    var cols = array<vec2<f32>, 4>(EMPTY, EMPTY, EMPTY, EMPTY);
    for (var c = 0u; c < 4u; c++) {
        for (var i = 0u; i < 4u; i++) {
            if (block_row(m0, lid, i) < n && block_col(n0, lid, c) < n) {
                rows[i] = lse_push(rows[i], acc[c][i]);
                cols[c] = lse_push(cols[c], acc[c][i]);
            }
        }
    }
    let tr = lid / SIDE;
    let tc = lid % SIDE;
    combine_partials(lid, rows, tr * SIDE + tc, lid < TILE && m0 + lid < n,
                     p.prow + 2u * (wid.x * n + m0 + lid));
    combine_partials(lid, cols, tc * SIDE + tr, lid < TILE && n0 + lid < n,
                     p.pcol + 2u * (wid.y * n + n0 + lid));
}

// One row (or column) of a tile's partial log-sum-exps: each invocation parks its four in the
// K-slices at `slot`, then invocation lid < TILE merges the SIDE of row lid and, if `valid`,
// stores (max, sum) at scratch[out]. Every invocation must call it (barriers).
fn combine_partials(lid: u32, parts: array<vec2<f32>, 4>, slot: u32, valid: bool, out: u32) {
    workgroupBarrier();
    a_tile[slot] = vec4<f32>(parts[0].x, parts[1].x, parts[2].x, parts[3].x);
    b_tile[slot] = vec4<f32>(parts[0].y, parts[1].y, parts[2].y, parts[3].y);
    workgroupBarrier();
    if (valid) {
        var ms = EMPTY;
        for (var k = 0u; k < SIDE; k++) {
            let o = (lid / 4u) * SIDE + k;
            ms = lse_merge(ms, vec2<f32>(a_tile[o][lid % 4u], b_tile[o][lid % 4u]));
        }
        scratch[out] = ms.x;
        scratch[out + 1u] = ms.y;
    }
}

// An invocation per i: lr_i and lc_i from the partials, and the loss term of pair i.
@compute @workgroup_size(WG)
fn lse_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let n = p.n;
    let i = linear_id(wid, nwg, lid);
    if (i >= n) {
        return;
    }
    var row = EMPTY;
    var col = EMPTY;
    for (var t = 0u; t < p.nt; t++) {
        let o = 2u * (t * n + i);
        row = lse_merge(row, vec2<f32>(scratch[p.prow + o], scratch[p.prow + o + 1u]));
        col = lse_merge(col, vec2<f32>(scratch[p.pcol + o], scratch[p.pcol + o + 1u]));
    }
    let sii = scratch[p.diag + i];
    let lr = lse_value(row);
    let lc = lse_value(col);
    scratch[p.lse + i] = lr;
    scratch[p.lse + n + i] = lc;
    scratch[p.term + i] = p.lambda * (lr - sii) + (1.0 - p.lambda) * (lc - sii);
}

// One workgroup: the mean of the loss terms.
@compute @workgroup_size(WG)
fn loss_sum(@builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    var total = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        total += scratch[p.term + i];
    }
    total = workgroup_sum(lid, total);
    if (lid == 0u) {
        scalar[0] = total / f32(p.n);
    }
}

// Grid (column tile, row tile of the chunk): dC for rows r0 .. r0 + rows, S recomputed.
@compute @workgroup_size(WG)
fn dscores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let n = p.n;
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(rows_v(p.r0, p.rows), rows_u(), p.d, m0, n0, lid);
    for (var c = 0u; c < 4u; c++) {
        let j = block_col(n0, lid, c);
        for (var i = 0u; i < 4u; i++) {
            let m = block_row(m0, lid, i);
            if (m < p.rows && j < n) {
                scratch[p.mat + m * n + j] = dscore(p.lse, p.r0 + m, j, acc[c][i] * p.inv_tau);
            }
        }
    }
}

// Grid (column tile of d, row tile of the chunk): dv' = dC[chunk] u'.
@compute @workgroup_size(WG)
fn grad_v(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(Operand(p.mat, p.n, 1u, p.rows), cols_u(), p.n, m0, n0, lid);
    store_grad_v(acc, m0, n0, lid);
}

// Grid (column tile of d, row tile of N): du' (+)= dC[chunk]^T v'[chunk].
@compute @workgroup_size(WG)
fn grad_u(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(Operand(p.mat, 1u, p.n, p.n), cols_v(p.r0), p.rows, m0, n0, lid);
    store_grad_u(acc, m0, n0, lid);
}

@compute @workgroup_size(WG)
fn project(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    project_rows(lid, wid.x + wid.y * nwg.x, nwg.x * nwg.y);
}

// Elements of each gradient that one invocation of scale_grads scales: few workgroups, whose
// start-up costs more than the work on a CPU adapter.
const SCALE_PER_INVOCATION: u32 = 16u;

// The backward: the kept gradients times the loss's incoming gradient (in `scalar`), in place.
@compute @workgroup_size(WG)
fn scale_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    load_params(nwg);
    let g = scalar[0];
    let first = (wid.x + wid.y * nwg.x) * WG * SCALE_PER_INVOCATION + lid;
    for (var i = 0u; i < SCALE_PER_INVOCATION; i++) {
        let e = first + i * WG;
        if (e < p.n * p.d) {
            gv[e] *= g;
            gu[e] *= g;
        }
    }
}

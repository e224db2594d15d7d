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
// Two paths over the same functions:
// - `fused`, for N <= 1024: ONE workgroup does everything in one dispatch. S is kept in the
//   scratch buffer (4 MiB at N = 1024, cache-resident) rather than in workgroup memory, which
//   only ever holds the 64 x 64 tile being computed: storageBarrier orders the phases, as they
//   all run in the one workgroup.
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
// gradient in `scale_grads`, so both layouts agree); the inputs v, u; `scratch`, whose layout
// the host computes (offsets in Params): v' then u' ([2N, d] from 0), inverse norms [2N],
// log-sum-exps (lr [N] then lc [N]), loss terms [N], S_ii [N], partial row and column statistics
// [nt, N] (max, sum) pairs each, and the matrix region (S in `fused`, a chunk of dC rows in
// the tiled path).

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
    _pad1: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gv: array<f32>;
@group(0) @binding(2) var<storage, read_write> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> scalar: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> u: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;

// Compute the gradients in the forward (set when autograd will ask for them).
override GRAD: bool = true;
// grad_u adds to gu instead of storing: every chunk of rows after the first.
override ACCUMULATE: bool = false;
// Step along K of a tile product: 32 where the adapter's workgroup memory holds two 32 x 64
// tiles (half the barriers), else 16 (16 KiB is all that is guaranteed).
override TK: u32 = 16u;
// (TK >= SIDE: lse_tiles reuses the K-slices as a SIDE x SIDE scratch.)

// Invocations along each side of the square workgroup, each owning a 4 x 4 block of a
// TILE x TILE tile: 16 (a 64 x 64 tile) everywhere but the one-workgroup path at N <= 32, where
// 8 (32 x 32) leaves no invocation idle and synchronises 64 invocations instead of 256 (llvmpipe
// runs a workgroup's invocations as fibres on one core, so its barriers cost per invocation).
// At least 8: the row-wise phases give LANES = 32 invocations to a row.
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

// dC_ij from S_ij and the log-sum-exps.
fn dscore(i: u32, j: u32, s: f32) -> f32 {
    let diag = select(0.0, 1.0, i == j);
    let row = exp(s - scratch[p.lse + i]) - diag;
    let col = exp(s - scratch[p.lse + p.n + j]) - diag;
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

// ---- The single-workgroup path: everything in one dispatch of one workgroup. ----

@compute @workgroup_size(WG)
fn fused(@builtin(local_invocation_index) lid: u32) {
    let n = p.n;
    normalize_rows(lid, 0u, 1u);
    storageBarrier();
    // S = v' u'^T / tau, tile by tile.
    let t = tiles(n);
    for (var tile = 0u; tile < t * t; tile++) {
        let m0 = (tile / t) * TILE;
        let n0 = (tile % t) * TILE;
        let acc = tile_product(rows_v(0u, n), rows_u(), p.d, m0, n0, lid);
        for (var c = 0u; c < 4u; c++) {
            let j = block_col(n0, lid, c);
            for (var i = 0u; i < 4u; i++) {
                let r = block_row(m0, lid, i);
                if (r < n && j < n) {
                    scratch[p.mat + r * n + j] = acc[c][i] * p.inv_tau;
                }
            }
        }
    }
    storageBarrier();
    // Log-sum-exps of the rows of S (LANES invocations to a row) and of its columns (an
    // invocation per column: neighbours read neighbouring columns).
    for (var b = 0u; b < row_batches(n); b++) {
        let i = batch_row(b, lid);
        var row = EMPTY;
        if (i < n) {
            for (var j = lid % LANES; j < n; j += LANES) {
                row = lse_push(row, scratch[p.mat + i * n + j]);
            }
        }
        row = lane_lse(lid, row);
        if (i < n && lid % LANES == 0u) {
            scratch[p.lse + i] = lse_value(row);
        }
    }
    for (var j = lid; j < n; j += WG) {
        var col = EMPTY;
        for (var i = 0u; i < n; i++) {
            col = lse_push(col, scratch[p.mat + i * n + j]);
        }
        scratch[p.lse + n + j] = lse_value(col);
    }
    storageBarrier();
    var total = 0.0;
    for (var i = lid; i < n; i += WG) {
        let sii = scratch[p.mat + i * n + i];
        total += p.lambda * (scratch[p.lse + i] - sii) + (1.0 - p.lambda) * (scratch[p.lse + n + i] - sii);
    }
    total = workgroup_sum(lid, total);
    if (lid == 0u) {
        scalar[0] = total / f32(n);
    }
    if (GRAD) {
        storageBarrier();
        // S becomes dC in place.
        for (var e = lid; e < n * n; e += WG) {
            scratch[p.mat + e] = dscore(e / n, e % n, scratch[p.mat + e]);
        }
        storageBarrier();
        let td = tiles(p.d);
        for (var tile = 0u; tile < t * td; tile++) {
            let m0 = (tile / td) * TILE;
            let n0 = (tile % td) * TILE;
            // dv' = dC u': rows of dC against columns of u'.
            let acc_v = tile_product(Operand(p.mat, n, 1u, n), cols_u(), n, m0, n0, lid);
            store_grad_v(acc_v, m0, n0, lid);
            // du' = dC^T v': columns of dC against columns of v'.
            let acc_u = tile_product(Operand(p.mat, 1u, n, n), cols_v(0u), n, m0, n0, lid);
            store_grad_u(acc_u, m0, n0, lid);
        }
        storageBarrier();
        project_rows(lid, 0u, 1u);
    }
}

// ---- The tiled path: a grid per phase. ----

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn normalize_embeddings(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    normalize_rows(lid, wid.x + wid.y * nwg.x, nwg.x * nwg.y);
}

// Grid (column tile, row tile) of S: partial log-sum-exps of each row over this tile's
// columns into prow[column tile], of each column over its rows into pcol[row tile].
@compute @workgroup_size(WG)
fn lse_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
fn loss_sum(@builtin(local_invocation_index) lid: u32) {
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
fn dscores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = p.n;
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(rows_v(p.r0, p.rows), rows_u(), p.d, m0, n0, lid);
    for (var c = 0u; c < 4u; c++) {
        let j = block_col(n0, lid, c);
        for (var i = 0u; i < 4u; i++) {
            let m = block_row(m0, lid, i);
            if (m < p.rows && j < n) {
                scratch[p.mat + m * n + j] = dscore(p.r0 + m, j, acc[c][i] * p.inv_tau);
            }
        }
    }
}

// Grid (column tile of d, row tile of the chunk): dv' = dC[chunk] u'.
@compute @workgroup_size(WG)
fn grad_v(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(Operand(p.mat, p.n, 1u, p.rows), cols_u(), p.n, m0, n0, lid);
    store_grad_v(acc, m0, n0, lid);
}

// Grid (column tile of d, row tile of N): du' (+)= dC[chunk]^T v'[chunk].
@compute @workgroup_size(WG)
fn grad_u(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let acc = tile_product(Operand(p.mat, 1u, p.n, p.n), cols_v(p.r0), p.rows, m0, n0, lid);
    store_grad_u(acc, m0, n0, lid);
}

@compute @workgroup_size(WG)
fn project(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    project_rows(lid, wid.x + wid.y * nwg.x, nwg.x * nwg.y);
}

// The backward: the kept gradients times the loss's incoming gradient (in `scalar`), in place.
@compute @workgroup_size(WG)
fn scale_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid);
    if (e < p.n * p.d) {
        let g = scalar[0];
        gv[e] *= g;
        gu[e] *= g;
    }
}

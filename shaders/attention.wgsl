// Fused multi-head attention, forward and backward (FlashAttention-2 style): for every (b, h),
// O = softmax(scale Q K^T + mask) V over rows of Dh, without ever writing the T x T matrix.
//
// forward        O, and per query row L = max + log(sum) of its scores (for backward)
// rowdot         D = rowsum(dO * O) per query row
// backward_dq    dQ = scale dS K           over the keys, with P = exp(S - L), dS = P (dP - D)
// backward_dkdv  dK = scale dS^T Q, dV = P^T dO   over the queries (no atomics: deterministic)
//
// Work split. A workgroup owns BR rows of one (b, h) (queries; keys in backward_dkdv) and walks
// the other side in blocks of Dh columns. Its WG = G * N invocations form G groups of 4R rows;
// the N = Dh / 4C invocations of a group split the block's columns (when computing scores, a
// product over Dh) and the head dimension (when accumulating, a product over the block) into
// chunks of 4C. So every invocation holds R x C mat4x4 score blocks and R x C mat4x4
// accumulators whatever Dh is: Dh is an override constant that only sets loop counts and the
// workgroup size. Scores go from the phase that computes them to the phase that uses them
// through workgroup memory (`tile`), two barriers per block.
//
// Drivers such as llvmpipe do not unroll loops, keep any dynamically indexed private array in
// memory, and pay per load instruction rather than per flop; so the blocks are plain variables
// (the line after an `// unroll i`, `// unroll j` or `// unroll i j` comment is repeated by the
// host for every row block i < R and/or column block j < C, names ending in _i_j, _i or _j and
// the constants I, J renamed, as in gemm.wgsl), every load is a vec4, and the host picks large
// R x C on software adapters (more flops per load) and small ones on GPUs (fewer registers).
// As written, this file is the R = C = 1 kernel; mac() comes from common/mac.wgsl, appended by
// the host.
//
// Layout of the blocks: a score block's column r is row r of its four rows, its components four
// columns (keys, or queries in backward_dkdv); an accumulator block's column r is row r, its
// components four consecutive elements of the head dimension. Then `transpose(K) * Q` gives
// scores and `V * P` accumulates, with no shuffles (transposes cost nothing in registers).
//
// Masking. A padded key (mask 0) and a key past T get the score MASKED, far below any real
// score and below the floor M_FLOOR of the running max, so its exp underflows (to 0, or to about
// 1e-38 on drivers that clamp exp's argument, as llvmpipe does). A row none of whose keys is
// real keeps its max at M_FLOOR: its output is defined as 0 and its L as LSE_EMPTY, so every P
// recomputed from it in backward underflows the same way and its gradients are 0, never NaN.
// Rows past T are clamped to row T - 1 on load (finite, in bounds) and never stored.

struct Params {
    // Sequence length T; heads H (the mask row of (b, h) is b = bh / H).
    t: u32, heads: u32,
    // Row blocks per (b, h); workgroups in all (the grid is folded, see Gpu::grid). For rowdot,
    // `blocks` is the number of rows.
    nblk: u32, blocks: u32,
    scale: f32,
    // Strides in vec4s of Q, K, V, O and their gradients per batch element, head and row:
    // [B, H, T, Dh] as heads-major tensors, [B, T, H * Dh] as the projections give them (then
    // no permutation is needed on either side). L and D are [B, H, T] either way.
    bs4: u32, hs4: u32, rs4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v4: array<vec4<f32>>;
// [B, T]: 0 = padding, anything else a real token (read when HAS_MASK).
@group(0) @binding(4) var<storage, read> mask: array<f32>;
// forward writes the output O; rowdot reads it back.
@group(0) @binding(5) var<storage, read_write> o4: array<vec4<f32>>;
// [B, H, T] log-sum-exp of each query row's scores: forward writes it, backward reads it.
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
// The gradient of the output, dO.
@group(0) @binding(7) var<storage, read> dout4: array<vec4<f32>>;
// [B, H, T] D = rowsum(dO * O): rowdot writes it, the gradient kernels read it.
@group(0) @binding(8) var<storage, read_write> dd: array<f32>;
// backward_dq: dQ; backward_dkdv: dK.
@group(0) @binding(9) var<storage, read_write> g1: array<vec4<f32>>;
// backward_dkdv: dV.
@group(0) @binding(10) var<storage, read_write> g2: array<vec4<f32>>;

// The head dimension, a multiple of 4C.
override DH: u32 = 64u;
// Row groups per workgroup (the host fits the workgroup memory and invocation limits).
override G: u32 = 4u;
override HAS_MASK: bool = false;

// Rows blocks (of 4) and column blocks (of 4) per invocation: set by the host.
const R: u32 = 1u;
const C: u32 = 1u;
// Block indices of the unrolled lines (renamed by the host).
const I: u32 = 0u;
const J: u32 = 0u;

const MASKED: f32 = -1e30;
const M_FLOOR: f32 = -1e29;
const LSE_EMPTY: f32 = 1e30;

override DH4: u32 = DH / 4u;
// Invocations sharing a row group; a column block is N chunks of 4C, so it is Dh wide.
override N: u32 = DH4 / C;
override WG: u32 = G * N;
// Rows of the workgroup, and the same in vec4s.
override BR: u32 = 4u * R * G;
override BR4: u32 = R * G;

// [BR][Dh / 4]: scores, probabilities or their gradients of the current column block.
var<workgroup> tile: array<vec4<f32>, BR * DH4>;
// backward_dkdv: the score gradients beside the probabilities in `tile`.
var<workgroup> tile2: array<vec4<f32>, BR * DH4>;
// forward: each chunk's maxima and sums of its rows' scores, [N][BR / 4].
var<workgroup> part_max: array<vec4<f32>, N * BR4>;
var<workgroup> part_sum: array<vec4<f32>, N * BR4>;

// vec4 offset of row 0 of (b, h) = bh in Q, K, V, O and their gradients.
fn base4(bh: u32) -> u32 {
    let b = bh / p.heads;
    return b * p.bs4 + (bh - b * p.heads) * p.hs4;
}

// vec4 offsets of rows first..first+3 of the (b, h) whose row 0 is at `at`, clamped to T.
fn rows4(at: u32, first: u32) -> vec4<u32> {
    let r = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.t - 1u));
    return vec4<u32>(at) + r * p.rs4;
}

// Columns: the four rows at offsets `o`, elements 4d..4d+3.
fn load_q(o: vec4<u32>, d: u32) -> mat4x4<f32> {
    return mat4x4<f32>(q4[o.x + d], q4[o.y + d], q4[o.z + d], q4[o.w + d]);
}

fn load_k(o: vec4<u32>, d: u32) -> mat4x4<f32> {
    return mat4x4<f32>(k4[o.x + d], k4[o.y + d], k4[o.z + d], k4[o.w + d]);
}

fn load_v(o: vec4<u32>, d: u32) -> mat4x4<f32> {
    return mat4x4<f32>(v4[o.x + d], v4[o.y + d], v4[o.z + d], v4[o.w + d]);
}

fn load_dout(o: vec4<u32>, d: u32) -> mat4x4<f32> {
    return mat4x4<f32>(dout4[o.x + d], dout4[o.y + d], dout4[o.z + d], dout4[o.w + d]);
}

// 0 for the real keys among key..key+3, MASKED for padding and keys past T.
fn key_bias(mrow: u32, key: u32) -> vec4<f32> {
    let keys = vec4<u32>(key) + vec4<u32>(0u, 1u, 2u, 3u);
    var real = keys < vec4<u32>(p.t);
    if (HAS_MASK) {
        let i = vec4<u32>(mrow) + min(keys, vec4<u32>(p.t - 1u));
        real = real & (vec4<f32>(mask[i.x], mask[i.y], mask[i.z], mask[i.w]) != vec4<f32>(0.0));
    }
    return select(vec4<f32>(MASKED), vec4<f32>(0.0), real);
}

// L of rows row..row+3 (clamped); for a query past T, LSE_EMPTY so its probabilities vanish.
fn load_lse(seq: u32, row: u32, past_t_empty: bool) -> vec4<f32> {
    let rows = vec4<u32>(row) + vec4<u32>(0u, 1u, 2u, 3u);
    let i = vec4<u32>(seq) + min(rows, vec4<u32>(p.t - 1u));
    let l = vec4<f32>(lse[i.x], lse[i.y], lse[i.z], lse[i.w]);
    return select(l, vec4<f32>(LSE_EMPTY), vec4<bool>(past_t_empty) & (rows >= vec4<u32>(p.t)));
}

fn load_dd(seq: u32, row: u32) -> vec4<f32> {
    let i = vec4<u32>(seq) + min(vec4<u32>(row) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.t - 1u));
    return vec4<f32>(dd[i.x], dd[i.y], dd[i.z], dd[i.w]);
}

fn hmax(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

// Per row (column): the maximum and the sum of its four scores.
fn col_max(s: mat4x4<f32>) -> vec4<f32> {
    return vec4<f32>(hmax(s[0]), hmax(s[1]), hmax(s[2]), hmax(s[3]));
}

fn col_sum(s: mat4x4<f32>) -> vec4<f32> {
    let one = vec4<f32>(1.0);
    return vec4<f32>(dot(s[0], one), dot(s[1], one), dot(s[2], one), dot(s[3], one));
}

// Row r scaled by a[r].
fn scale_cols(s: mat4x4<f32>, a: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(s[0] * a.x, s[1] * a.y, s[2] * a.z, s[3] * a.w);
}

// scale * (q . k) + the keys' bias.
fn scores(s: mat4x4<f32>, bias: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(p.scale * s[0] + bias, p.scale * s[1] + bias, p.scale * s[2] + bias,
                       p.scale * s[3] + bias);
}

// exp(s - m[r]) per row r.
fn exp_cols(s: mat4x4<f32>, m: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(exp(s[0] - m.x), exp(s[1] - m.y), exp(s[2] - m.z), exp(s[3] - m.w));
}

// dS = P (dP - D) with P = exp(scale s + bias - L): rows are queries (backward_dq).
fn dscores(s: mat4x4<f32>, dp: mat4x4<f32>, bias: vec4<f32>, l: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    let pr = exp_cols(scores(s, bias), l);
    return mat4x4<f32>(pr[0] * (dp[0] - d.x), pr[1] * (dp[1] - d.y), pr[2] * (dp[2] - d.z),
                       pr[3] * (dp[3] - d.w));
}

// P^T: rows are keys with their bias, components queries with their L (backward_dkdv).
fn probs_t(s: mat4x4<f32>, bias: vec4<f32>, l: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(exp(p.scale * s[0] + bias.x - l), exp(p.scale * s[1] + bias.y - l),
                       exp(p.scale * s[2] + bias.z - l), exp(p.scale * s[3] + bias.w - l));
}

// dS^T = P^T (dP^T - D), components queries.
fn dscores_t(pt: mat4x4<f32>, dpt: mat4x4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(pt[0] * (dpt[0] - d), pt[1] * (dpt[1] - d), pt[2] * (dpt[2] - d),
                       pt[3] * (dpt[3] - d));
}

// Rows row..row+3 of the block in `tile`, vec4 column `c`.
fn store_tile(row: u32, c: u32, s: mat4x4<f32>) {
    let i = row * DH4 + c;
    tile[i] = s[0];
    tile[i + DH4] = s[1];
    tile[i + 2u * DH4] = s[2];
    tile[i + 3u * DH4] = s[3];
}

fn load_tile(row: u32, c: u32) -> mat4x4<f32> {
    let i = row * DH4 + c;
    return mat4x4<f32>(tile[i], tile[i + DH4], tile[i + 2u * DH4], tile[i + 3u * DH4]);
}

fn store_tile2(row: u32, c: u32, s: mat4x4<f32>) {
    let i = row * DH4 + c;
    tile2[i] = s[0];
    tile2[i + DH4] = s[1];
    tile2[i + 2u * DH4] = s[2];
    tile2[i + 3u * DH4] = s[3];
}

fn load_tile2(row: u32, c: u32) -> mat4x4<f32> {
    let i = row * DH4 + c;
    return mat4x4<f32>(tile2[i], tile2[i + DH4], tile2[i + 2u * DH4], tile2[i + 3u * DH4]);
}

// Rows row..row+3 (those before T) of an output of the (b, h) at `at`, vec4 column `c`, row
// r scaled by a[r].
fn store_o(at: u32, row: u32, c: u32, s: mat4x4<f32>, a: vec4<f32>) {
    let i = at + row * p.rs4 + c;
    if (row < p.t) { o4[i] = s[0] * a.x; }
    if (row + 1u < p.t) { o4[i + p.rs4] = s[1] * a.y; }
    if (row + 2u < p.t) { o4[i + 2u * p.rs4] = s[2] * a.z; }
    if (row + 3u < p.t) { o4[i + 3u * p.rs4] = s[3] * a.w; }
}

fn store_g1(at: u32, row: u32, c: u32, s: mat4x4<f32>, a: f32) {
    let i = at + row * p.rs4 + c;
    if (row < p.t) { g1[i] = s[0] * a; }
    if (row + 1u < p.t) { g1[i + p.rs4] = s[1] * a; }
    if (row + 2u < p.t) { g1[i + 2u * p.rs4] = s[2] * a; }
    if (row + 3u < p.t) { g1[i + 3u * p.rs4] = s[3] * a; }
}

fn store_g2(at: u32, row: u32, c: u32, s: mat4x4<f32>) {
    let i = at + row * p.rs4 + c;
    if (row < p.t) { g2[i] = s[0]; }
    if (row + 1u < p.t) { g2[i + p.rs4] = s[1]; }
    if (row + 2u < p.t) { g2[i + 2u * p.rs4] = s[2]; }
    if (row + 3u < p.t) { g2[i + 3u * p.rs4] = s[3]; }
}

fn store_lse(seq: u32, row: u32, l: vec4<f32>) {
    let i = seq + row;
    if (row < p.t) { lse[i] = l.x; }
    if (row + 1u < p.t) { lse[i + 1u] = l.y; }
    if (row + 2u < p.t) { lse[i + 2u] = l.z; }
    if (row + 3u < p.t) { lse[i + 3u] = l.w; }
}

// One workgroup per (b, h, block of BR query rows); keys in blocks of Dh with an online softmax:
// per block, (1) each invocation's chunk of scores and their row maxima, (2) the new running
// max of each row from all chunks' maxima, the chunk's probabilities and their sums, (3) the
// accumulators rescaled by exp(old max - new max) and P V added. part_max is reused by (1) of
// the next block only after everyone passed the barrier that ends (2), and tile and part_sum
// are rewritten in (2) of the next block only after the barrier that ends its (1), so two
// barriers per block suffice.
@compute @workgroup_size(WG)
fn forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = wid.x + wid.y * nwg.x;
    if (blk >= p.blocks) { return; }
    let bh = blk / p.nblk;
    let row0 = (blk - bh * p.nblk) * BR;
    let grp = lid / N;
    let ch = lid - grp * N;
    let lrow = 4u * R * grp;
    let seq = bh * p.t;
    let at = base4(bh);
    let mrow = (bh / p.heads) * p.t;
    // unroll i
    let qo_i = rows4(at, row0 + lrow + 4u * I);
    // unroll i j
    var o_i_j = mat4x4<f32>();
    // unroll i
    var m_i = vec4<f32>(M_FLOOR);
    // unroll i
    var l_i = vec4<f32>(0.0);
    for (var kb = 0u; kb < p.t; kb += DH) {
        let k0 = kb + 4u * C * ch;
        // unroll j
        let ko_j = rows4(at, k0 + 4u * J);
        // unroll i j
        var s_i_j = mat4x4<f32>();
        for (var d = 0u; d < DH4; d++) {
            // unroll i
            let q_i = load_q(qo_i, d);
            // unroll j
            let k_j = transpose(load_k(ko_j, d));
            // unroll i j
            s_i_j = mac(s_i_j, k_j, q_i);
        }
        // unroll j
        let bias_j = key_bias(mrow, k0 + 4u * J);
        // unroll i j
        s_i_j = scores(s_i_j, bias_j);
        // unroll i
        var mx_i = vec4<f32>(MASKED);
        // unroll i j
        mx_i = max(mx_i, col_max(s_i_j));
        // unroll i
        part_max[ch * BR4 + R * grp + I] = mx_i;
        workgroupBarrier();
        // unroll i
        var mn_i = m_i;
        for (var c = 0u; c < N; c++) {
            // unroll i
            mn_i = max(mn_i, part_max[c * BR4 + R * grp + I]);
        }
        // unroll i j
        s_i_j = exp_cols(s_i_j, mn_i);
        // unroll i
        var sm_i = vec4<f32>(0.0);
        // unroll i j
        sm_i += col_sum(s_i_j);
        // unroll i
        part_sum[ch * BR4 + R * grp + I] = sm_i;
        // unroll i j
        store_tile(lrow + 4u * I, C * ch + J, s_i_j);
        workgroupBarrier();
        // unroll i
        let al_i = exp(m_i - mn_i);
        // unroll i
        m_i = mn_i;
        // unroll i
        l_i *= al_i;
        for (var c = 0u; c < N; c++) {
            // unroll i
            l_i += part_sum[c * BR4 + R * grp + I];
        }
        // unroll i j
        o_i_j = scale_cols(o_i_j, al_i);
        // Key groups past T hold no probability: skip them.
        let groups = (min(DH, p.t - kb) + 3u) / 4u;
        for (var kg = 0u; kg < groups; kg++) {
            let vo = rows4(at, kb + 4u * kg);
            // unroll i
            let p_i = load_tile(lrow + 4u * I, kg);
            // unroll j
            let v_j = load_v(vo, C * ch + J);
            // unroll i j
            o_i_j = mac(o_i_j, v_j, p_i);
        }
    }
    // unroll i
    let real_i = m_i > vec4<f32>(M_FLOOR);
    // unroll i
    let inv_i = select(vec4<f32>(0.0), 1.0 / l_i, real_i);
    // unroll i j
    store_o(at, row0 + lrow + 4u * I, C * ch + J, o_i_j, inv_i);
    if (ch == 0u) {
        // unroll i
        store_lse(seq, row0 + lrow + 4u * I, select(vec4<f32>(LSE_EMPTY), m_i + log(l_i), real_i));
    }
}

// D = rowsum(dO * O), one invocation per row of [B * H * T, Dh].
@compute @workgroup_size(64)
fn rowdot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.blocks) { return; }
    let bh = row / p.t;
    let o = base4(bh) + (row - bh * p.t) * p.rs4;
    var acc = vec4<f32>(0.0);
    for (var d = 0u; d < DH4; d++) {
        acc += dout4[o + d] * o4[o + d];
    }
    dd[row] = dot(acc, vec4<f32>(1.0));
}

// dQ: one workgroup per (b, h, block of BR query rows), keys in blocks of Dh: (1) S and dP of
// the invocation's chunk, dS into `tile`; (2) dQ += dS K over the block.
@compute @workgroup_size(WG)
fn backward_dq(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = wid.x + wid.y * nwg.x;
    if (blk >= p.blocks) { return; }
    let bh = blk / p.nblk;
    let row0 = (blk - bh * p.nblk) * BR;
    let grp = lid / N;
    let ch = lid - grp * N;
    let lrow = 4u * R * grp;
    let seq = bh * p.t;
    let at = base4(bh);
    let mrow = (bh / p.heads) * p.t;
    // unroll i
    let qo_i = rows4(at, row0 + lrow + 4u * I);
    // unroll i
    let ls_i = load_lse(seq, row0 + lrow + 4u * I, false);
    // unroll i
    let dd_i = load_dd(seq, row0 + lrow + 4u * I);
    // unroll i j
    var g_i_j = mat4x4<f32>();
    for (var kb = 0u; kb < p.t; kb += DH) {
        let k0 = kb + 4u * C * ch;
        // unroll j
        let ko_j = rows4(at, k0 + 4u * J);
        // unroll i j
        var s_i_j = mat4x4<f32>();
        // unroll i j
        var dp_i_j = mat4x4<f32>();
        for (var d = 0u; d < DH4; d++) {
            // unroll i
            let q_i = load_q(qo_i, d);
            // unroll i
            let go_i = load_dout(qo_i, d);
            // unroll j
            let k_j = transpose(load_k(ko_j, d));
            // unroll j
            let v_j = transpose(load_v(ko_j, d));
            // unroll i j
            s_i_j = mac(s_i_j, k_j, q_i);
            // unroll i j
            dp_i_j = mac(dp_i_j, v_j, go_i);
        }
        // unroll j
        let bias_j = key_bias(mrow, k0 + 4u * J);
        // unroll i j
        store_tile(lrow + 4u * I, C * ch + J, dscores(s_i_j, dp_i_j, bias_j, ls_i, dd_i));
        workgroupBarrier();
        let groups = (min(DH, p.t - kb) + 3u) / 4u;
        for (var kg = 0u; kg < groups; kg++) {
            let ko = rows4(at, kb + 4u * kg);
            // unroll i
            let ds_i = load_tile(lrow + 4u * I, kg);
            // unroll j
            let k_j = load_k(ko, C * ch + J);
            // unroll i j
            g_i_j = mac(g_i_j, k_j, ds_i);
        }
        // The next block rewrites `tile`.
        workgroupBarrier();
    }
    // unroll i j
    store_g1(at, row0 + lrow + 4u * I, C * ch + J, g_i_j, p.scale);
}

// dK and dV: one workgroup per (b, h, block of BR key rows), queries in blocks of Dh: (1) S^T
// and dP^T of the invocation's chunk, P^T into `tile` and dS^T into `tile2`; (2) dV += P^T dO
// and dK += dS^T Q over the block.
@compute @workgroup_size(WG)
fn backward_dkdv(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = wid.x + wid.y * nwg.x;
    if (blk >= p.blocks) { return; }
    let bh = blk / p.nblk;
    let row0 = (blk - bh * p.nblk) * BR;
    let grp = lid / N;
    let ch = lid - grp * N;
    let lrow = 4u * R * grp;
    let seq = bh * p.t;
    let at = base4(bh);
    let mrow = (bh / p.heads) * p.t;
    // unroll i
    let ko_i = rows4(at, row0 + lrow + 4u * I);
    // unroll i
    let bias_i = key_bias(mrow, row0 + lrow + 4u * I);
    // unroll i j
    var gk_i_j = mat4x4<f32>();
    // unroll i j
    var gv_i_j = mat4x4<f32>();
    for (var qb = 0u; qb < p.t; qb += DH) {
        let q0 = qb + 4u * C * ch;
        // unroll j
        let qo_j = rows4(at, q0 + 4u * J);
        // unroll j
        let ls_j = load_lse(seq, q0 + 4u * J, true);
        // unroll j
        let dd_j = load_dd(seq, q0 + 4u * J);
        // unroll i j
        var st_i_j = mat4x4<f32>();
        // unroll i j
        var dpt_i_j = mat4x4<f32>();
        for (var d = 0u; d < DH4; d++) {
            // unroll i
            let k_i = load_k(ko_i, d);
            // unroll i
            let v_i = load_v(ko_i, d);
            // unroll j
            let q_j = transpose(load_q(qo_j, d));
            // unroll j
            let go_j = transpose(load_dout(qo_j, d));
            // unroll i j
            st_i_j = mac(st_i_j, q_j, k_i);
            // unroll i j
            dpt_i_j = mac(dpt_i_j, go_j, v_i);
        }
        // unroll i j
        st_i_j = probs_t(st_i_j, bias_i, ls_j);
        // unroll i j
        store_tile(lrow + 4u * I, C * ch + J, st_i_j);
        // unroll i j
        store_tile2(lrow + 4u * I, C * ch + J, dscores_t(st_i_j, dpt_i_j, dd_j));
        workgroupBarrier();
        let groups = (min(DH, p.t - qb) + 3u) / 4u;
        for (var qg = 0u; qg < groups; qg++) {
            let qo = rows4(at, qb + 4u * qg);
            // unroll i
            let pt_i = load_tile(lrow + 4u * I, qg);
            // unroll i
            let ds_i = load_tile2(lrow + 4u * I, qg);
            // unroll j
            let go_j = load_dout(qo, C * ch + J);
            // unroll j
            let q_j = load_q(qo, C * ch + J);
            // unroll i j
            gv_i_j = mac(gv_i_j, go_j, pt_i);
            // unroll i j
            gk_i_j = mac(gk_i_j, q_j, ds_i);
        }
        // The next block rewrites `tile` and `tile2`.
        workgroupBarrier();
    }
    // unroll i j
    store_g1(at, row0 + lrow + 4u * I, C * ch + J, gk_i_j, p.scale);
    // unroll i j
    store_g2(at, row0 + lrow + 4u * I, C * ch + J, gv_i_j);
}

// GEMM: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] (+ bias[n]), then an optional ReLU or
// GELU epilogue. op(A) is M x K, op(B) is K x N; a transpose is only a swap of strides, so all
// four layouts and any batch stride share this one kernel.
//
// Register blocking: a workgroup of WG invocations covers TILE_M rows of C; each invocation
// owns a TILE_M x (4 BLOCK_C) block held as BLOCK_R x BLOCK_C mat4x4 accumulators (TILE_M =
// 4 BLOCK_R), its 4-column groups WG groups apart so neighbours read neighbouring addresses.
// Per step of 4 along K it loads BLOCK_R + BLOCK_C 4x4 blocks of A and B and does
// BLOCK_R * BLOCK_C 4x4 products: big blocks amortise the loads, which are what software
// adapters pay most for. Rows are the same for the whole workgroup, so A reads broadcast.
//
// Drivers such as llvmpipe do not unroll loops, and accumulators in an indexed array would live
// in memory, so the block is written out: the line after an `// unroll ...` comment is
// repeated by the host for every block row i and/or column j (names ending in _i_j, _i or _j
// and the constants I, J renamed). As written, this file is the 1 x 1 block kernel.
//
// Edges: rows and columns past M and N are clamped on load and masked on store; the last,
// partial step along K reads zeros past K, so M, N and K need not be multiples of anything.
//
// Image-major columns: a convolution's matrices [channels, N * H * W] are NCHW tensors,
// [N, channels, H * W], in memory. Read and written through that layout (op(B)'s and C's
// columns in groups of H * W, one group per image), they need no permutation. A plain matrix
// is one group of N columns. Runtime parameters rather than pipeline constants: the divisions
// cost an invocation little (once per block of columns), while every pipeline variant of the
// big tiling costs llvmpipe seconds to compile on a fresh machine.

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    // Element strides of op(A) along m and k, of op(B) along k and n.
    a_sm: u32, a_sk: u32, b_sk: u32, b_sn: u32,
    // Batch strides of A, B and C (C is dense: rows c_group long, n unless image-major).
    a_sb: u32, b_sb: u32, c_sb: u32,
    // Where this dispatch's slice of K starts (the host splits a long K into dispatches that
    // accumulate, to stay within a software adapter's loop budget; k is the slice's length).
    k0: u32,
    alpha: f32, beta: f32, has_bias: u32, _pad: u32,
    // Columns per group and the stride between groups, of op(B) (where b_sk is the group size
    // when there are several) and of C (a row of C is c_group long).
    b_group: u32, b_sg: u32, c_group: u32, c_sg: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// The same buffers as a and b, read 16 bytes at a time on the VEC4 path.
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
// The same buffer as c, written 16 bytes at a time when VEC4_C.
@group(0) @binding(7) var<storage, read_write> c4: array<vec4<f32>>;

// Invocations per workgroup, all along N.
override WG: u32 = 16u;
// Read operands as vec4 (4x fewer loads, which software adapters need most). The host sets it
// when K % 4 == 0, and M % 4 == 0 if A is transposed, N % 4 == 0 if B is not: then every
// 4-element group read is aligned and inside its matrix.
override VEC4: bool = false;
// Write C as vec4: set when N % 4 == 0, so every 4-group of a row is aligned.
override VEC4_C: bool = false;
// The layout, fixed per pipeline so no branch is left in the loop over K: A stored [K, M]
// (op = transpose), B stored [N, K].
override A_T: bool = false;
override B_T: bool = false;
// Epilogue activation, 0 none, 1 ReLU, 2 GELU (erf form): a pipeline constant, since a
// software adapter would pay for every case of a runtime switch.
override ACT: u32 = 0u;

const BLOCK_R: u32 = 1u;
const BLOCK_C: u32 = 1u;
const TILE_M: u32 = 4u * BLOCK_R;
// Block indices of the unrolled lines (renamed by the host).
const I: u32 = 0u;
const J: u32 = 0u;

// Offsets of rows m..m+3 of op(A) and of columns n..n+3 of op(B), clamped to the matrix:
// computed once per block, outside the loop over K. Where a 4-group is read as one vec4
// (A transposed, B not), the group is clamped whole so it stays aligned.
fn a_rows(base: u32, m: u32) -> vec4<u32> {
    if (VEC4 && A_T) {
        return vec4<u32>(base + min(m, p.m - 4u));
    }
    let last = p.m - 1u;
    return base + min(vec4<u32>(m, m + 1u, m + 2u, m + 3u), vec4<u32>(last)) * p.a_sm;
}

fn b_col(j: u32) -> u32 {
    let group = j / p.b_group;
    return group * p.b_sg + (j - group * p.b_group) * p.b_sn;
}

fn b_cols(base: u32, n: u32) -> vec4<u32> {
    if (VEC4 && !B_T) {
        return vec4<u32>(base + b_col(min(n, p.n - 4u)));
    }
    let j = min(vec4<u32>(n, n + 1u, n + 2u, n + 3u), vec4<u32>(p.n - 1u));
    return base + vec4<u32>(b_col(j.x), b_col(j.y), b_col(j.z), b_col(j.w));
}

// op(A)[row, k..k+3] and op(B)[k..k+3, col] with every k < K (the steady state).
fn a_row(row: u32, k: u32) -> vec4<f32> {
    let o = row + k * p.a_sk;
    return vec4<f32>(a[o], a[o + p.a_sk], a[o + 2u * p.a_sk], a[o + 3u * p.a_sk]);
}

fn b_row(cols: vec4<u32>, k: u32) -> vec4<f32> {
    let o = k * p.b_sk;
    return vec4<f32>(b[cols.x + o], b[cols.y + o], b[cols.z + o], b[cols.w + o]);
}

// Columns are rows m..m+3 of op(A) over k..k+3: the transposed 4x4 block of A.
fn load_a(rows: vec4<u32>, k: u32) -> mat4x4<f32> {
    if (VEC4) {
        if (!A_T) {
            return mat4x4<f32>(a4[(rows.x + k) / 4u], a4[(rows.y + k) / 4u], a4[(rows.z + k) / 4u], a4[(rows.w + k) / 4u]);
        }
        // A stored transposed: a vec4 holds rows m..m+3 at one k.
        let o = (rows.x + k * p.a_sk) / 4u;
        let s = p.a_sk / 4u;
        return transpose(mat4x4<f32>(a4[o], a4[o + s], a4[o + 2u * s], a4[o + 3u * s]));
    }
    return mat4x4<f32>(a_row(rows.x, k), a_row(rows.y, k), a_row(rows.z, k), a_row(rows.w, k));
}

// Columns are rows k..k+3 of op(B) over n..n+3: the transposed 4x4 block of B.
fn load_b(cols: vec4<u32>, k: u32) -> mat4x4<f32> {
    if (VEC4) {
        if (!B_T) {
            let o = (cols.x + k * p.b_sk) / 4u;
            let s = p.b_sk / 4u;
            return mat4x4<f32>(b4[o], b4[o + s], b4[o + 2u * s], b4[o + 3u * s]);
        }
        // B stored transposed: a vec4 holds k..k+3 of one column.
        return transpose(mat4x4<f32>(b4[(cols.x + k) / 4u], b4[(cols.y + k) / 4u], b4[(cols.z + k) / 4u], b4[(cols.w + k) / 4u]));
    }
    return mat4x4<f32>(b_row(cols, k), b_row(cols, k + 1u), b_row(cols, k + 2u), b_row(cols, k + 3u));
}

// The last, partial step along K: elements at k >= K read as zero.
fn a_row_tail(row: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var e = 0u; k + e < p.k; e++) {
        v[e] = a[row + (k + e) * p.a_sk];
    }
    return v;
}

fn load_a_tail(rows: vec4<u32>, k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(a_row_tail(rows.x, k), a_row_tail(rows.y, k), a_row_tail(rows.z, k), a_row_tail(rows.w, k));
}

fn load_b_tail(cols: vec4<u32>, k: u32) -> mat4x4<f32> {
    var m = mat4x4<f32>();
    for (var e = 0u; k + e < p.k; e++) {
        m[e] = b_row(cols, k + e);
    }
    return m;
}

fn activate4(v: vec4<f32>) -> vec4<f32> {
    switch ACT {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        // gelu() comes from common/erf.wgsl, appended by the host.
        case 2u: { return vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w)); }
        default: { return v; }
    }
}

// Where a block of columns n..n+3 goes and what it adds: computed once per block of columns,
// since llvmpipe compiles each of the block's many stores separately (loading the bias in
// every store made the big tiling's pipelines take 17 s to compile instead of 9).
struct Cols {
    // Offsets of the four columns within a row of C.
    at: vec4<u32>,
    // The bias of the four columns (zero without one).
    bias: vec4<f32>,
}

fn c_cols(n: u32) -> Cols {
    let j = vec4<u32>(n, n + 1u, n + 2u, n + 3u);
    let group = j / p.c_group;
    var b = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        let last = p.n - 1u;
        b = vec4<f32>(bias[min(n, last)], bias[min(n + 1u, last)], bias[min(n + 2u, last)], bias[min(n + 3u, last)]);
    }
    return Cols(group * p.c_sg + j - group * p.c_group, b);
}

// Row m of C over columns n..n+3 gets alpha * v (+ beta * C) + bias, then the activation.
fn store_row(base: u32, m: u32, n: u32, cols: Cols, v: vec4<f32>) {
    if (m >= p.m || n >= p.n) { return; }
    let row = base + m * p.c_group;
    var out = p.alpha * v;
    if (VEC4_C) {
        let ci = row + cols.at.x;
        if (p.beta != 0.0) { out += p.beta * c4[ci / 4u]; }
        c4[ci / 4u] = activate4(out + cols.bias);
        return;
    }
    let count = min(p.n - n, 4u);
    for (var e = 0u; e < count; e++) {
        let ci = row + cols.at[e];
        var o = out[e];
        if (p.beta != 0.0) { o += p.beta * c[ci]; }
        c[ci] = activate4(vec4<f32>(o + cols.bias[e])).x;
    }
}

// acc holds (B^T A^T) = (A B)^T for the block: column r is row m + r of C over n..n+3.
// Only constant indices into acc: a dynamic one would move every accumulator to memory.
fn store(base: u32, m: u32, n: u32, cols: Cols, acc: mat4x4<f32>) {
    store_row(base, m, n, cols, acc[0]);
    store_row(base, m + 1u, n, cols, acc[1]);
    store_row(base, m + 2u, n, cols, acc[2]);
    store_row(base, m + 3u, n, cols, acc[3]);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let a_base = wid.z * p.a_sb + p.k0 * p.a_sk;
    let b_base = wid.z * p.b_sb + p.k0 * p.b_sk;
    let c_base = wid.z * p.c_sb;
    let m0 = wid.y * TILE_M;
    let n0 = (wid.x * WG * BLOCK_C + lid.x) * 4u;
    // unroll i
    let ra_i = a_rows(a_base, m0 + 4u * I);
    // unroll j
    let cb_j = b_cols(b_base, n0 + 4u * WG * J);
    // unroll i j
    var acc_i_j = mat4x4<f32>();
    let k_full = p.k & ~3u;
    for (var k = 0u; k < k_full; k += 4u) {
        // unroll i
        let a_i = load_a(ra_i, k);
        // unroll j
        let b_j = load_b(cb_j, k);
        // unroll i j
        acc_i_j = mac(acc_i_j, b_j, a_i);   // from common/mac.wgsl
    }
    if (k_full < p.k) {
        // unroll i
        let a_i = load_a_tail(ra_i, k_full);
        // unroll j
        let b_j = load_b_tail(cb_j, k_full);
        // unroll i j
        acc_i_j = mac(acc_i_j, b_j, a_i);
    }
    // unroll j
    let cc_j = c_cols(n0 + 4u * WG * J);
    // unroll i j
    store(c_base, m0 + 4u * I, n0 + 4u * WG * J, cc_j, acc_i_j);
}

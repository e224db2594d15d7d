
// ---- The GEMM on CPU adapters with subgroups of 8 lanes. ----
//
// The host appends this to gemm.wgsl, unrolls the pair, and compiles it only where the adapter
// runs subgroups of exactly 8 lanes (llvmpipe: one lane per element of its SIMD registers).
// Here BLOCK_R counts pairs of 4-row blocks: a workgroup covers 8 BLOCK_R rows of C.
//
// Why: a workgroup's rows are the same for all its invocations, so in `gemm` every lane loads
// the same blocks of A. llvmpipe gathers loads lane by lane (a vec4 load costs about as much as
// eight vec4 FMAs) while a subgroup broadcast is a register permute, so here each lane loads one
// vec4 of A per pair of blocks and the subgroup hands them round: per step of 4 along K a lane
// loads BLOCK_R + 4 BLOCK_C vec4s instead of 4 (2 BLOCK_R + BLOCK_C).
//
// Pair i covers rows m0 + 8i .. m0 + 8i + 7. As stored, lane l reads row m0 + 8i + l at
// k .. k + 3; transposed (A stored [K, M]), rows m0 + 8i + 4 (l / 4) .. + 3 at k + l % 4. Either
// way lanes 0-3 hold the first block of the pair and lanes 4-7 the second.

// Offsets of what `lane` reads for the pair starting at row m (clamped as a_rows clamps).
fn a_share_rows(base: u32, m: u32, lane: u32) -> vec4<u32> {
    if (A_T) {
        return a_rows(base, m + 4u * (lane / 4u));
    }
    return vec4<u32>(base + min(m + lane, p.m - 1u) * p.a_sm);
}

// The vec4 that `lane` reads at step k (every k < K).
fn a_share(rows: vec4<u32>, k: u32, lane: u32) -> vec4<f32> {
    if (A_T) {
        let o = (k + lane % 4u) * p.a_sk;
        if (VEC4) {
            return a4[(rows.x + o) / 4u];
        }
        return vec4<f32>(a[rows.x + o], a[rows.y + o], a[rows.z + o], a[rows.w + o]);
    }
    if (VEC4) {
        return a4[(rows.x + k) / 4u];
    }
    return a_row(rows.x, k);
}

// A 4 x 4 block of A in load_a's layout (columns are rows of op(A) over k .. k + 3) from the
// vec4s of four lanes: columns already when A is as stored, rows when it is transposed.
fn a_block(c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) -> mat4x4<f32> {
    let m = mat4x4<f32>(c0, c1, c2, c3);
    if (A_T) {
        return transpose(m);
    }
    return m;
}

fn first_block(s: vec4<f32>) -> mat4x4<f32> {
    return a_block(subgroupBroadcast(s, 0u), subgroupBroadcast(s, 1u), subgroupBroadcast(s, 2u), subgroupBroadcast(s, 3u));
}

fn second_block(s: vec4<f32>) -> mat4x4<f32> {
    return a_block(subgroupBroadcast(s, 4u), subgroupBroadcast(s, 5u), subgroupBroadcast(s, 6u), subgroupBroadcast(s, 7u));
}

@compute @workgroup_size(WG)
fn gemm_subgroup(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(subgroup_invocation_id) lane: u32) {
    let a_base = wid.z * p.a_sb + p.k0 * p.a_sk;
    let b_base = wid.z * p.b_sb + p.k0 * p.b_sk;
    let c_base = wid.z * p.c_sb;
    let m0 = wid.y * 8u * BLOCK_R;
    let n0 = (wid.x * WG * BLOCK_C + lid.x) * 4u;
    // unroll i
    let rs_i = a_share_rows(a_base, m0 + 8u * I, lane);
    // unroll j
    let cb_j = b_cols(b_base, n0 + 4u * WG * J);
    // unroll i j
    var lo_i_j = mat4x4<f32>();
    // unroll i j
    var hi_i_j = mat4x4<f32>();
    let k_full = p.k & ~3u;
    for (var k = 0u; k < k_full; k += 4u) {
        // unroll i
        let s_i = a_share(rs_i, k, lane);
        // unroll i
        let lo_a_i = first_block(s_i);
        // unroll i
        let hi_a_i = second_block(s_i);
        // unroll j
        let b_j = load_b(cb_j, k);
        // unroll i j
        lo_i_j = mac(lo_i_j, b_j, lo_a_i);
        // unroll i j
        hi_i_j = mac(hi_i_j, b_j, hi_a_i);
    }
    if (k_full < p.k) {
        // The last, partial step: every lane reads its blocks itself, as gemm does.
        // unroll i
        let lo_a_i = load_a_tail(a_rows(a_base, m0 + 8u * I), k_full);
        // unroll i
        let hi_a_i = load_a_tail(a_rows(a_base, m0 + 8u * I + 4u), k_full);
        // unroll j
        let b_j = load_b_tail(cb_j, k_full);
        // unroll i j
        lo_i_j = mac(lo_i_j, b_j, lo_a_i);
        // unroll i j
        hi_i_j = mac(hi_i_j, b_j, hi_a_i);
    }
    // unroll j
    let cc_j = c_cols(n0 + 4u * WG * J);
    // unroll i j
    store(c_base, m0 + 8u * I, n0 + 4u * WG * J, cc_j, lo_i_j);
    // unroll i j
    store(c_base, m0 + 8u * I + 4u, n0 + 4u * WG * J, cc_j, hi_i_j);
}


// ---- The fused path on CPU adapters with subgroups of 8 lanes. ----
//
// The host appends this to infonce.wgsl and compiles the pair only where the adapter runs
// subgroups of exactly 8 lanes (llvmpipe: one lane per element of its 256-bit SIMD registers),
// so the portable kernels above never need the subgroup feature. The log-sum-exps and weights
// phases are the portable ones; the two O(N^2 d) product phases are rewritten, and the first
// of them computes the inverse norms too.
//
// Why: llvmpipe gathers every load lane by lane. Measured there, a loop of eight vec4 FMAs and
// one vec4 load runs at half the speed of the same loop without the load, while a subgroup
// broadcast is a register permute and costs next to nothing. So the 8 lanes of a subgroup load
// disjoint rows once and hand them to each other: the cosines load 4x fewer vec4s per product
// than the portable phase, the gradients about 7x fewer.
//
// Control flow stays uniform in every subgroup (trip counts depend on subgroup ids only,
// indices are clamped and stores masked), so all 8 lanes take part in every broadcast.

const SUBGROUP: u32 = 8u;

// P = v' u'^T into the matrix region, a 16 x 16 block per subgroup at a time, and the inverse
// norms on the way (no separate pass over v and u). Lane l loads rows i0 + l and i0 + 8 + l of
// v and j0 + l and j0 + 8 + l of u (4 vec4 per step of 4 along d) and computes its two rows of
// the block against all 16 columns, the u rows broadcast.
fn cosines_sg(lane: u32, sg: u32, groups: u32) {
    let n = p.n;
    let nb = (n + 15u) / 16u;
    for (var t0 = 0u; t0 < nb * nb; t0 += groups) {
        let t = min(t0 + sg, nb * nb - 1u);
        let i0 = (t / nb) * 16u;
        let j0 = (t % nb) * 16u;
        let ov = min(vec2<u32>(i0 + lane, i0 + 8u + lane), vec2<u32>(n - 1u)) * p.d;
        let ou = min(vec2<u32>(j0 + lane, j0 + 8u + lane), vec2<u32>(n - 1u)) * p.d;
        // lo_g / hi_g: this lane's first / second row against columns j0 + 4g .. j0 + 4g + 3.
        var lo_0 = vec4<f32>(); var lo_1 = vec4<f32>(); var lo_2 = vec4<f32>(); var lo_3 = vec4<f32>();
        var hi_0 = vec4<f32>(); var hi_1 = vec4<f32>(); var hi_2 = vec4<f32>(); var hi_3 = vec4<f32>();
        // Sums of squares of the four rows this lane loads.
        var ss = mat4x4<f32>();
        for (var k = 0u; k < p.d; k += 4u) {
            let x0 = v_at4(ov.x, k);
            let x1 = v_at4(ov.y, k);
            let y0 = u_at4(ou.x, k);
            let y1 = u_at4(ou.y, k);
            ss += mat4x4<f32>(x0 * x0, x1 * x1, y0 * y0, y1 * y1);
            // x * c: component a is the dot product of x with column a of c (a row of u).
            var c = mat4x4<f32>(subgroupBroadcast(y0, 0u), subgroupBroadcast(y0, 1u), subgroupBroadcast(y0, 2u), subgroupBroadcast(y0, 3u));
            lo_0 += x0 * c;
            hi_0 += x1 * c;
            c = mat4x4<f32>(subgroupBroadcast(y0, 4u), subgroupBroadcast(y0, 5u), subgroupBroadcast(y0, 6u), subgroupBroadcast(y0, 7u));
            lo_1 += x0 * c;
            hi_1 += x1 * c;
            c = mat4x4<f32>(subgroupBroadcast(y1, 0u), subgroupBroadcast(y1, 1u), subgroupBroadcast(y1, 2u), subgroupBroadcast(y1, 3u));
            lo_2 += x0 * c;
            hi_2 += x1 * c;
            c = mat4x4<f32>(subgroupBroadcast(y1, 4u), subgroupBroadcast(y1, 5u), subgroupBroadcast(y1, 6u), subgroupBroadcast(y1, 7u));
            lo_3 += x0 * c;
            hi_3 += x1 * c;
        }
        // F.normalize's clamp: a zero row stays zero instead of becoming NaN.
        let ones = vec4<f32>(1.0);
        let inv = 1.0 / max(sqrt(ones * ss), vec4<f32>(1e-12));
        // The inverse norms of the 16 columns, from the lanes that loaded them.
        let cu = mat4x4<f32>(
            vec4<f32>(subgroupBroadcast(inv.z, 0u), subgroupBroadcast(inv.z, 1u), subgroupBroadcast(inv.z, 2u), subgroupBroadcast(inv.z, 3u)),
            vec4<f32>(subgroupBroadcast(inv.z, 4u), subgroupBroadcast(inv.z, 5u), subgroupBroadcast(inv.z, 6u), subgroupBroadcast(inv.z, 7u)),
            vec4<f32>(subgroupBroadcast(inv.w, 0u), subgroupBroadcast(inv.w, 1u), subgroupBroadcast(inv.w, 2u), subgroupBroadcast(inv.w, 3u)),
            vec4<f32>(subgroupBroadcast(inv.w, 4u), subgroupBroadcast(inv.w, 5u), subgroupBroadcast(inv.w, 6u), subgroupBroadcast(inv.w, 7u)));
        if (t0 + sg < nb * nb) {
            store_cosines(i0 + lane, j0, inv.x * mat4x4<f32>(lo_0 * cu[0], lo_1 * cu[1], lo_2 * cu[2], lo_3 * cu[3]));
            store_cosines(i0 + 8u + lane, j0, inv.y * mat4x4<f32>(hi_0 * cu[0], hi_1 * cu[1], hi_2 * cu[2], hi_3 * cu[3]));
            // The inverse norms for the later phases: v's from the first column of blocks,
            // u's from the first row, so each is written once.
            let rows = vec4<u32>(i0 + lane, i0 + 8u + lane, n + j0 + lane, n + j0 + 8u + lane);
            let owner = vec4<bool>(j0 == 0u, j0 == 0u, i0 == 0u, i0 == 0u);
            let inside = vec4<u32>(i0 + lane, i0 + 8u + lane, j0 + lane, j0 + 8u + lane) < vec4<u32>(n);
            for (var r = 0u; r < 4u; r++) {
                if (owner[r] && inside[r]) {
                    scratch[at.nrm + rows[r]] = inv[r];
                }
            }
        }
    }
}

// Row i of P over columns j0 .. j0 + 15 (column 4g + c of the block in cosines[g][c]).
fn store_cosines(i: u32, j0: u32, cosines: mat4x4<f32>) {
    let n = p.n;
    if (i >= n) {
        return;
    }
    for (var g = 0u; g < 4u; g++) {
        for (var c = 0u; c < 4u; c++) {
            let j = j0 + 4u * g + c;
            if (j < n) {
                scratch[at.mat + i * n + j] = cosines[g][c];
            }
        }
    }
}

// One summed index m of the gradients: the row of the summed operand (u for dv, v for du) at
// columns k .. k + 3 times the broadcast weights of the subgroup's 16 output rows, four at a
// time in w0 .. w3: 16 vec4 FMAs per gathered load.
fn gradient_step(side: u32, m: u32, k: u32, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
                 acc0: ptr<function, mat4x4<f32>>, acc1: ptr<function, mat4x4<f32>>,
                 acc2: ptr<function, mat4x4<f32>>, acc3: ptr<function, mat4x4<f32>>) {
    var y: vec4<f32>;
    // Uniform in the workgroup: one load, not both.
    if (side == 0u) {
        y = u_at4(m * p.d, k);
    } else {
        y = v_at4(m * p.d, k);
    }
    *acc0 += mat4x4<f32>(y * w0.x, y * w0.y, y * w0.z, y * w0.w);
    *acc1 += mat4x4<f32>(y * w1.x, y * w1.y, y * w1.z, y * w1.w);
    *acc2 += mat4x4<f32>(y * w2.x, y * w2.y, y * w2.z, y * w2.w);
    *acc3 += mat4x4<f32>(y * w3.x, y * w3.y, y * w3.z, y * w3.w);
}

// The weights of the four output rows at offsets r (clamped rows), summed index at wm; zeros
// for a summed index past N.
fn weights4(wm: u32, r: vec4<u32>, live: bool) -> vec4<f32> {
    return select(vec4<f32>(), vec4<f32>(scratch[wm + r.x], scratch[wm + r.y], scratch[wm + r.z], scratch[wm + r.w]), live);
}

// Offsets of rows i .. i + 3 of W (clamped to the last row) along its row stride rs.
fn weight_rows(i: u32, rs: u32) -> vec4<u32> {
    return min(vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) * rs;
}

// dv (side 0) and du (side 1), 16 rows by 32 columns per subgroup at a time: lane l owns
// columns k .. k + 3 with k = 4l, and loads the weights of the 16 rows for summed index
// m0 + l; the weights of every m reach all lanes by broadcast.
fn gradients_sg(lane: u32, sg: u32, groups: u32, side: u32) {
    let n = p.n;
    let nb = (n + 15u) / 16u;
    let nc = (p.d + 31u) / 32u;
    let w = at.mat + n * n;
    // W element (output row i, summed index m) at w + i * rs + m * cs.
    let rs = select(1u, n, side == 0u);
    let cs = select(n, 1u, side == 0u);
    // The last step of 4 inside a row: lanes past d read it (and store nothing).
    let k_last = ((p.d - 1u) / 4u) * 4u;
    for (var t0 = 0u; t0 < nb * nc; t0 += groups) {
        let t = min(t0 + sg, nb * nc - 1u);
        let i0 = (t / nc) * 16u;
        let k = (t % nc) * 32u + 4u * lane;
        let kl = min(k, k_last);
        let r0 = weight_rows(i0, rs);
        let r1 = weight_rows(i0 + 4u, rs);
        let r2 = weight_rows(i0 + 8u, rs);
        let r3 = weight_rows(i0 + 12u, rs);
        var acc0 = mat4x4<f32>();
        var acc1 = mat4x4<f32>();
        var acc2 = mat4x4<f32>();
        var acc3 = mat4x4<f32>();
        for (var m0 = 0u; m0 < n; m0 += SUBGROUP) {
            let wm = w + min(m0 + lane, n - 1u) * cs;
            let live = m0 + lane < n;
            let w0 = weights4(wm, r0, live);
            let w1 = weights4(wm, r1, live);
            let w2 = weights4(wm, r2, live);
            let w3 = weights4(wm, r3, live);
            // Summed indices past N have zero weights; their rows are clamped to the last.
            // Written out: a broadcast takes a constant lane, and llvmpipe unrolls no loops.
            let last = n - 1u;
            gradient_step(side, min(m0, last), kl, subgroupBroadcast(w0, 0u), subgroupBroadcast(w1, 0u),
                          subgroupBroadcast(w2, 0u), subgroupBroadcast(w3, 0u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 1u, last), kl, subgroupBroadcast(w0, 1u), subgroupBroadcast(w1, 1u),
                          subgroupBroadcast(w2, 1u), subgroupBroadcast(w3, 1u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 2u, last), kl, subgroupBroadcast(w0, 2u), subgroupBroadcast(w1, 2u),
                          subgroupBroadcast(w2, 2u), subgroupBroadcast(w3, 2u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 3u, last), kl, subgroupBroadcast(w0, 3u), subgroupBroadcast(w1, 3u),
                          subgroupBroadcast(w2, 3u), subgroupBroadcast(w3, 3u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 4u, last), kl, subgroupBroadcast(w0, 4u), subgroupBroadcast(w1, 4u),
                          subgroupBroadcast(w2, 4u), subgroupBroadcast(w3, 4u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 5u, last), kl, subgroupBroadcast(w0, 5u), subgroupBroadcast(w1, 5u),
                          subgroupBroadcast(w2, 5u), subgroupBroadcast(w3, 5u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 6u, last), kl, subgroupBroadcast(w0, 6u), subgroupBroadcast(w1, 6u),
                          subgroupBroadcast(w2, 6u), subgroupBroadcast(w3, 6u), &acc0, &acc1, &acc2, &acc3);
            gradient_step(side, min(m0 + 7u, last), kl, subgroupBroadcast(w0, 7u), subgroupBroadcast(w1, 7u),
                          subgroupBroadcast(w2, 7u), subgroupBroadcast(w3, 7u), &acc0, &acc1, &acc2, &acc3);
        }
        if (t0 + sg < nb * nc && k < p.d) {
            store_gradient_rows(side, i0, k, acc0);
            store_gradient_rows(side, i0 + 4u, k, acc1);
            store_gradient_rows(side, i0 + 8u, k, acc2);
            store_gradient_rows(side, i0 + 12u, k, acc3);
        }
    }
}

@compute @workgroup_size(WG)
fn fused_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_id) sg: u32,
                  @builtin(num_subgroups) groups: u32) {
    begin_fused(wid, nwg);
    cosines_sg(lane, sg, groups);
    storageBarrier();
    row_and_column_lse(lid);
    storageBarrier();
    weights_and_projections(lid, wid.x == 0u);
    if (GRAD) {
        storageBarrier();
        for (var side = wid.x; side < 2u; side += nwg.x) {
            gradients_sg(lane, sg, groups, side);
        }
    }
}

// Convolution lowered onto the GEMM: `im2col` unfolds every receptive field of an NCHW input
// into a column, so a convolution is W[O, C*KH*KW] x cols[n] for each image n and keeps the
// GEMM's register blocking; `col2im` is its adjoint, folding column gradients back onto the
// input. col2im gathers (each input pixel sums the columns that read it) instead of scattering
// with atomics, so it is deterministic and needs no optional feature.
//
// im2col   cols[n, (c KH + i) KW + j, oy OW + ox] = x[n, c, oy s - p + i, ox s - p + j]  (0 outside)
// col2im   dx[n, c, y, x] = sum over (i, j, oy, ox) with oy s - p + i = y, ox s - p + j = x

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, total: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 256u;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = element(wid, nwg, lid);
    if (e >= p.total) { return; }
    let ohw = p.oh * p.ow;
    let kk = p.kh * p.kw;
    let pos = e % ohw;
    let row = (e / ohw) % (p.c * kk);
    let n = e / (ohw * p.c * kk);
    let c = row / kk;
    let i = (row / p.kw) % p.kh;
    let j = row % p.kw;
    // Signed: padding reaches before the first row and column.
    let y = i32((pos / p.ow) * p.stride + i) - i32(p.pad);
    let x = i32((pos % p.ow) * p.stride + j) - i32(p.pad);
    var v = 0.0;
    if (y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w)) {
        v = src[((n * p.c + c) * p.h + u32(y)) * p.w + u32(x)];
    }
    dst[e] = v;
}

@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = element(wid, nwg, lid);
    if (e >= p.total) { return; }
    let x = e % p.w;
    let y = (e / p.w) % p.h;
    let c = (e / (p.w * p.h)) % p.c;
    let n = e / (p.w * p.h * p.c);
    let ohw = p.oh * p.ow;
    let kk = p.kh * p.kw;
    let base = (n * p.c * kk + c * kk) * ohw;
    var acc = 0.0;
    for (var i = 0u; i < p.kh; i++) {
        // Output row oy reads input row y through kernel row i when oy s - p + i = y.
        let t = i32(y + p.pad) - i32(i);
        if (t < 0 || t % i32(p.stride) != 0) { continue; }
        let oy = u32(t) / p.stride;
        if (oy >= p.oh) { continue; }
        for (var j = 0u; j < p.kw; j++) {
            let u = i32(x + p.pad) - i32(j);
            if (u < 0 || u % i32(p.stride) != 0) { continue; }
            let ox = u32(u) / p.stride;
            if (ox >= p.ow) { continue; }
            acc += src[base + (i * p.kw + j) * ohw + oy * p.ow + ox];
        }
    }
    dst[e] = acc;
}

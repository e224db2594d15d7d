// Convolution lowered onto the GEMM: `im2col` unfolds every receptive field of an NCHW input
// into a column, so a convolution is W[O, C*KH*KW] x cols[n] for each image n and keeps the
// GEMM's register blocking; `col2im` is its adjoint, folding column gradients back onto the
// input. col2im gathers (each input pixel sums the columns that read it) instead of scattering
// with atomics, so it is deterministic and needs no optional feature.
//
// im2col   cols[(c KH + i) KW + j, n, oy OW + ox] = x[n, c, oy s - p + i, ox s - p + j]  (0 outside)
//          (images side by side along the columns: one GEMM W x cols serves the whole batch,
//          which keeps small late-stage feature maps efficient)
// col2im   dx[n, c, y, x] = sum over (i, j, oy, ox) with oy s - p + i = y, ox s - p + j = x

// Grids are 2-D: x over (image, output position) (im2col) or (image, input pixel) (col2im),
// y over the column row (c, i, j) or the channel, so small late-stage maps still fill whole
// workgroups, and the row costs no division per element. Integer division is the dominant
// cost of these kernels on CPU adapters, so the rest is divided by float reciprocals (split).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    pad: u32, _pad0: u32,
    // 1 / OW, 1 / W, 1 / (OH OW), 1 / (H W), for divisions by multiplication (see split).
    inv_ow: f32, inv_w: f32, inv_ohw: f32, inv_hw: f32,
    _pad1: u32, _pad2: u32, _pad3: u32, _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// The same buffer as dst, written 16 bytes at a time by im2col when SPAN = 4 (software
// adapters pay per store instruction).
@group(0) @binding(3) var<storage, read_write> dst4: array<vec4<f32>>;

override WG: u32 = 256u;
// The stride, fixed per pipeline so the divisibility tests of col2im compile to masks.
override STRIDE: u32 = 1u;

// (a / d, a % d) for a < 2^24: a float reciprocal and one correction step. CPU adapters have
// no vector integer division, and a scalar one per lane dominated these kernels.
fn split(a: u32, d: u32, inv_d: f32) -> vec2<u32> {
    var q = i32(f32(a) * inv_d);
    var r = i32(a) - q * i32(d);
    if (r < 0) { q -= 1; r += i32(d); }
    if (r >= i32(d)) { q += 1; r -= i32(d); }
    return vec2<u32>(u32(q), u32(r));
}

// Each invocation writes SPAN consecutive positions of one column row: the index arithmetic
// is shared by SPAN elements (the host sets SPAN = 4 when OW % 4 == 0, so the four positions
// share one image and one output row y, and are stored as one vec4; else 1). At most 4.
override SPAN: u32 = 1u;

@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ohw = p.oh * p.ow;
    let flat = (wid.x * WG + lid.x) * SPAN;
    if (flat >= p.n * ohw) { return; }
    let np = split(flat, ohw, p.inv_ohw);
    let n = np.x;
    let pos = np.y;
    let row = wid.y;
    let kk = p.kh * p.kw;
    let c = row / kk;
    let i = (row / p.kw) % p.kh;
    let j = row % p.kw;
    let yx = split(pos, p.ow, p.inv_ow);
    // Signed: padding reaches before the first row and column.
    let y = i32(yx.x * STRIDE + i) - i32(p.pad);
    let x0 = i32(yx.y * STRIDE + j) - i32(p.pad);
    let y_inside = y >= 0 && y < i32(p.h);
    let src_row = ((n * p.c + c) * p.h + u32(max(y, 0))) * p.w;
    let out = (row * p.n + n) * ohw + pos;
    var v = vec4<f32>();
    for (var e = 0u; e < SPAN; e++) {
        let x = x0 + i32(e * STRIDE);
        if (y_inside && x >= 0 && x < i32(p.w)) {
            v[e] = src[src_row + u32(x)];
        }
    }
    if (SPAN == 4u) {
        // OW % 4 == 0, so OH OW and pos are multiples of 4: out is aligned.
        dst4[out / 4u] = v;
    } else {
        dst[out] = v.x;
    }
}

@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let hw = p.h * p.w;
    let flat = wid.x * WG + lid.x;
    if (flat >= p.n * hw) { return; }
    let np = split(flat, hw, p.inv_hw);
    let n = np.x;
    let pixel = np.y;
    let c = wid.y;
    let yx = split(pixel, p.w, p.inv_w);
    let y = yx.x;
    let x = yx.y;
    let ohw = p.oh * p.ow;
    let kk = p.kh * p.kw;
    // Column row (c, i, j) of image n starts at ((c KK + i KW + j) N + n) OHW.
    let base = (c * kk * p.n + n) * ohw;
    let row_stride = p.n * ohw;
    var acc = 0.0;
    for (var i = 0u; i < p.kh; i++) {
        // Output row oy reads input row y through kernel row i when oy s - p + i = y.
        let t = i32(y + p.pad) - i32(i);
        if (t < 0 || t % i32(STRIDE) != 0) { continue; }
        let oy = u32(t) / STRIDE;
        if (oy >= p.oh) { continue; }
        for (var j = 0u; j < p.kw; j++) {
            let u = i32(x + p.pad) - i32(j);
            if (u < 0 || u % i32(STRIDE) != 0) { continue; }
            let ox = u32(u) / STRIDE;
            if (ox >= p.ow) { continue; }
            acc += src[base + (i * p.kw + j) * row_stride + oy * p.ow + ox];
        }
    }
    dst[(n * p.c + c) * p.h * p.w + pixel] = acc;
}

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

// Grids are 2-D: x over (image, output row) (im2col) or (image, input row) (col2im), y over
// the column row (c, i, j) or the channel, so the row costs no division, and an invocation
// walks a whole row: integer division is scalar on CPU adapters, so it is done once per row,
// not per element.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    pad: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Read as vec4s along rows where the kernels can (VEC4_ROWS), else one component at a time.
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// The same buffer as dst, written 16 bytes at a time along rows (VEC4_ROWS).
@group(0) @binding(3) var<storage, read_write> dst4: array<vec4<f32>>;

override WG: u32 = 256u;
// The stride, fixed per pipeline so the divisibility tests of col2im compile to masks.
override STRIDE: u32 = 1u;
// Rows of whole groups of 4 (im2col: output rows, col2im: input rows), at stride 1 (both) or
// 2 (col2im).
override VEC4_ROWS: bool = false;

// The four elements after lo's first r (0 to 3) of lo, hi: consecutive elements read as two
// aligned vec4s.
fn shifted(lo: vec4<f32>, hi: vec4<f32>, r: i32) -> vec4<f32> {
    var v = lo;
    v = select(v, vec4<f32>(lo.yzw, hi.x), r == 1);
    v = select(v, vec4<f32>(lo.zw, hi.xy), r == 2);
    v = select(v, vec4<f32>(lo.w, hi.xyz), r == 3);
    return v;
}

// An invocation per (column row, image, output row): it writes the output row's OW positions,
// with the index arithmetic done once for all of them. With stride 1 and OW % 4 == 0
// (VEC4_ROWS), it reads the input row as aligned vec4s, each once, and writes vec4s: software
// adapters pay per load and store instruction, not per byte.
@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wid.x * WG + lid.x;
    if (t >= p.n * p.oh) { return; }
    let n = t / p.oh;
    let oy = t % p.oh;
    let row = wid.y;
    let kk = p.kh * p.kw;
    let c = row / kk;
    let i = (row / p.kw) % p.kh;
    let j = row % p.kw;
    // Signed: padding reaches before the first row and column.
    let y = i32(oy * STRIDE + i) - i32(p.pad);
    let y_inside = y >= 0 && y < i32(p.h);
    let src_row = i32(((n * p.c + c) * p.h + u32(max(y, 0))) * p.w);
    let x0 = i32(j) - i32(p.pad);
    let out = ((row * p.n + n) * p.oh + oy) * p.ow;
    if (VEC4_ROWS) {
        // Input elements src_row + x0 + 4 q .. + 3 for output quad q: r past an aligned vec4.
        // Before the buffer's start (padding) the index is clamped; what lies outside the
        // input row is zeroed below either way.
        let s0 = src_row + x0;
        let r = ((s0 % 4) + 4) % 4;
        var a = (s0 - r) / 4;
        var lo = src[u32(max(a, 0))];
        for (var q = 0u; q < p.ow / 4u; q++) {
            let hi = src[u32(max(a + 1, 0))];
            let x = vec4<i32>(x0 + 4 * i32(q)) + vec4<i32>(0, 1, 2, 3);
            let inside = (x >= vec4<i32>(0)) & (x < vec4<i32>(i32(p.w))) & vec4<bool>(y_inside);
            dst4[out / 4u + q] = select(vec4<f32>(0.0), shifted(lo, hi, r), inside);
            lo = hi;
            a += 1;
        }
    } else {
        for (var ox = 0u; ox < p.ow; ox++) {
            let x = x0 + i32(ox * STRIDE);
            var v = 0.0;
            if (y_inside && x >= 0 && x < i32(p.w)) {
                let e = u32(src_row + x);
                v = src[e / 4u][e % 4u];
            }
            dst[out + ox] = v;
        }
    }
}

// Element e of the column gradients, held as vec4s.
fn src_at(e: u32) -> f32 {
    return src[e / 4u][e % 4u];
}

// col2im: an invocation per (channel, image, input row y): it writes the row's W pixels. With
// W % 4 == 0 (VEC4_ROWS), four pixels at a time: at stride 1 each column row's four elements
// read as two aligned vec4s; at stride 2 two of the four pixels read a column row, at
// consecutive positions.
@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wid.x * WG + lid.x;
    if (t >= p.n * p.h) { return; }
    let n = t / p.h;
    let y = t % p.h;
    let c = wid.y;
    let ohw = p.oh * p.ow;
    let kk = p.kh * p.kw;
    // Column row (c, i, j) of image n starts at ((c KK + i KW + j) N + n) OHW.
    let base = (c * kk * p.n + n) * ohw;
    let row_stride = p.n * ohw;
    let out = ((n * p.c + c) * p.h + y) * p.w;
    if (VEC4_ROWS && STRIDE == 1u) {
        for (var q = 0u; q < p.w / 4u; q++) {
            var acc = vec4<f32>(0.0);
            for (var i = 0u; i < p.kh; i++) {
                // Output row oy reads input row y through kernel row i when oy - p + i = y.
                let oy = i32(y + p.pad) - i32(i);
                if (oy < 0 || oy >= i32(p.oh)) { continue; }
                for (var j = 0u; j < p.kw; j++) {
                    // Output positions ox0 .. ox0 + 3 read pixels 4 q .. 4 q + 3.
                    let ox0 = i32(4u * q + p.pad) - i32(j);
                    let s = i32(base + (i * p.kw + j) * row_stride) + oy * i32(p.ow) + ox0;
                    let r = ((s % 4) + 4) % 4;
                    let a = (s - r) / 4;
                    let v = shifted(src[u32(max(a, 0))], src[u32(max(a + 1, 0))], r);
                    let ox = vec4<i32>(ox0) + vec4<i32>(0, 1, 2, 3);
                    acc += select(vec4<f32>(0.0), v, (ox >= vec4<i32>(0)) & (ox < vec4<i32>(i32(p.ow))));
                }
            }
            dst4[out / 4u + q] = acc;
        }
        return;
    }
    if (VEC4_ROWS && STRIDE == 2u) {
        for (var q = 0u; q < p.w / 4u; q++) {
            var acc = vec4<f32>(0.0);
            for (var i = 0u; i < p.kh; i++) {
                let ty = i32(y + p.pad) - i32(i);
                if (ty < 0 || ty % 2 != 0) { continue; }
                let oy = u32(ty) / 2u;
                if (oy >= p.oh) { continue; }
                for (var j = 0u; j < p.kw; j++) {
                    // Pixel 4 q + e reads output position (4 q + e + p - j) / 2 where that is
                    // whole: pixels e0 and e0 + 2 (e0 is 0 or 1), at ox and ox + 1.
                    let t = i32(4u * q + p.pad) - i32(j);
                    let e0 = t & 1;
                    let ox = vec2<i32>((t + e0) / 2) + vec2<i32>(0, 1);
                    let ok = (ox >= vec2<i32>(0)) & (ox < vec2<i32>(i32(p.ow)));
                    let at = vec2<u32>(clamp(ox, vec2<i32>(0), vec2<i32>(i32(p.ow) - 1)));
                    let row = base + (i * p.kw + j) * row_stride + oy * p.ow;
                    let v = select(vec2<f32>(0.0), vec2<f32>(src_at(row + at.x), src_at(row + at.y)), ok);
                    acc += select(vec4<f32>(v.x, 0.0, v.y, 0.0), vec4<f32>(0.0, v.x, 0.0, v.y), e0 == 1);
                }
            }
            dst4[out / 4u + q] = acc;
        }
        return;
    }
    for (var x = 0u; x < p.w; x++) {
        var acc = 0.0;
        for (var i = 0u; i < p.kh; i++) {
            // Output row oy reads input row y through kernel row i when oy s - p + i = y.
            let ty = i32(y + p.pad) - i32(i);
            if (ty < 0 || ty % i32(STRIDE) != 0) { continue; }
            let oy = u32(ty) / STRIDE;
            if (oy >= p.oh) { continue; }
            for (var j = 0u; j < p.kw; j++) {
                let tx = i32(x + p.pad) - i32(j);
                if (tx < 0 || tx % i32(STRIDE) != 0) { continue; }
                let ox = u32(tx) / STRIDE;
                if (ox >= p.ow) { continue; }
                let e = base + (i * p.kw + j) * row_stride + oy * p.ow + ox;
                acc += src[e / 4u][e % 4u];
            }
        }
        dst[out + x] = acc;
    }
}

// Max pooling over the H x W planes of [N, C, H, W] (PyTorch's max_pool2d: square window k,
// stride s, padding that counts as -infinity), forward and backward. One invocation per
// element, of the output (forward) or of the input (backward); the grid's x runs over a
// plane's elements and y (with z past the grid's limit) over the N C planes, and the stride is
// an override constant, so no element divides by a runtime value (scalar integer division
// per lane dominated these kernels on CPU adapters).
//
// forward         y = the window's maximum
// forward_index   the same, and idx = its position in the H x W plane: the first maximum in
//                 row-major window order, as PyTorch picks it (what backward routes by)
// backward        dx[e] = sum of g over the windows whose idx is e. Each input element
//                 gathers from the few windows that contain it: no atomics, and the same
//                 summation order on every run. An invocation takes SPAN elements of a row
//                 (4 where rows hold whole groups of 4), which share most of their windows.
//
// Bindings: 1 x (forward: the input; backward: the output's gradient), 2 y (forward: the
// output; backward: dx), 3 idx, 4 y4 (backward: dx again, written 16 bytes at a time).

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, k: u32, _pad0: u32, pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;

override WG: u32 = 256u;
override STRIDE: u32 = 1u;
// Input elements per invocation in backward: 4 when W % 4 == 0, else 1.
override SPAN: u32 = 1u;

fn plane_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y + wid.z * nwg.y;
}

struct Best {
    value: f32,
    pos: u32,
}

// Rows (or columns) of the window starting at `start` that lie inside [0, len): the padding
// is skipped rather than compared, and the host keeps padding <= k / 2, so no window is empty.
fn window(start: i32, len: u32) -> vec2<u32> {
    return vec2<u32>(u32(max(-start, 0)), u32(clamp(i32(len) - start, 0, i32(p.k))));
}

// The maximum of output element r of the plane.
fn window_max(plane: u32, r: u32) -> Best {
    let oy = r / p.ow;
    let ox = r - oy * p.ow;
    let y0 = i32(oy * STRIDE) - i32(p.pad);
    let x0 = i32(ox * STRIDE) - i32(p.pad);
    let rows = window(y0, p.h);
    let cols = window(x0, p.w);
    let base = plane * p.h * p.w;
    var best = Best(0.0, 0xffffffffu);
    for (var ky = rows.x; ky < rows.y; ky++) {
        let row = u32(y0 + i32(ky)) * p.w;
        for (var kx = cols.x; kx < cols.y; kx++) {
            let pos = row + u32(x0 + i32(kx));
            let v = x[base + pos];
            // Strictly greater keeps the first maximum; a NaN wins, as in PyTorch.
            if (best.pos == 0xffffffffu || v > best.value || v != v) {
                best = Best(v, pos);
            }
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let plane = plane_index(wid, nwg);
    let r = wid.x * WG + lid.x;
    if (plane >= p.planes || r >= p.oh * p.ow) { return; }
    y[plane * p.oh * p.ow + r] = window_max(plane, r).value;
}

@compute @workgroup_size(WG)
fn forward_index(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let plane = plane_index(wid, nwg);
    let r = wid.x * WG + lid.x;
    if (plane >= p.planes || r >= p.oh * p.ow) { return; }
    let best = window_max(plane, r);
    let o = plane * p.oh * p.ow + r;
    y[o] = best.value;
    idx[o] = best.pos;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let plane = plane_index(wid, nwg);
    let pos = (wid.x * WG + lid.x) * SPAN;
    if (plane >= p.planes || pos >= p.h * p.w) { return; }
    let iy = pos / p.w;
    let ix = pos - iy * p.w;
    // Windows o with o * s - pad <= i <= o * s - pad + k - 1, clipped to the output, for
    // i from ix to ix + SPAN - 1.
    let lo_y = i32(iy + p.pad) - i32(p.k) + 1;
    let lo_x = i32(ix + p.pad) - i32(p.k) + 1;
    let oy0 = u32(max(lo_y + i32(STRIDE) - 1, 0)) / STRIDE;
    let ox0 = u32(max(lo_x + i32(STRIDE) - 1, 0)) / STRIDE;
    let oy1 = min((iy + p.pad) / STRIDE + 1u, p.oh);
    let ox1 = min((ix + SPAN - 1u + p.pad) / STRIDE + 1u, p.ow);
    let base = plane * p.oh * p.ow;
    let mine = vec4<u32>(pos, pos + 1u, pos + 2u, pos + 3u);
    var acc = vec4<f32>(0.0);
    for (var oy = oy0; oy < oy1; oy++) {
        for (var ox = ox0; ox < ox1; ox++) {
            let o = base + oy * p.ow + ox;
            acc += select(vec4<f32>(0.0), vec4<f32>(x[o]), vec4<u32>(idx[o]) == mine);
        }
    }
    let out = plane * p.h * p.w + pos;
    if (SPAN == 4u) {
        y4[out / 4u] = acc;
    } else {
        y[out] = acc.x;
    }
}

// Reductions along one axis of a tensor seen as [outer, axis, inner], and their backward
// kernels. Two schedules: `reduce` gives each output a workgroup whose invocations stride over
// the axis and combine in workgroup memory (few outputs, long axes: a full sum);
// `reduce_columns` gives each output one invocation looping over the axis (many outputs along a
// contiguous inner axis, neighbours reading neighbouring addresses: bias gradients; or short
// axes: global average pooling).
//
// reduce, reduce_columns(4) y[o, i] = sum | mean | max over k of x[o, k, i]   (OP 0, 1, 2)
// argmax   y[o, i] = max, idx[o, i] = first k reaching it
// spread   dx[o, k, i] = scale * g[o, i]                          (sum and mean backward)
// pick     dx[o, k, i] = (k == idx[o, i]) ? g[o, i] : 0            (max backward)

struct Params {
    outer: u32, axis: u32, inner: u32, _pad: u32,
    scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A power of two, at most WG_MAX.
override WG: u32 = 64u;
// 0 sum, 1 mean, 2 max: a pipeline constant, so no branch is left per element.
override OP: u32 = 0u;
const WG_MAX: u32 = 256u;

var<workgroup> sh_val: array<f32, WG_MAX>;
var<workgroup> sh_idx: array<u32, WG_MAX>;

fn output_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let out = output_index(wid, nwg);
    let valid = out < p.outer * p.inner;
    let o = out / p.inner;
    let i = out % p.inner;
    let is_max = OP == 2u;
    var acc = select(0.0, -3.4028235e38, is_max);
    if (valid) {
        for (var k = lid.x; k < p.axis; k += WG) {
            let v = x[(o * p.axis + k) * p.inner + i];
            acc = select(acc + v, max(acc, v), is_max);
        }
    }
    sh_val[lid.x] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            let other = sh_val[lid.x + s];
            sh_val[lid.x] = select(sh_val[lid.x] + other, max(sh_val[lid.x], other), is_max);
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && valid) {
        y[out] = select(sh_val[0], sh_val[0] / f32(p.axis), OP == 1u);
    }
}

@compute @workgroup_size(WG)
fn reduce_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let out = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (out >= p.outer * p.inner) { return; }
    let o = out / p.inner;
    let i = out % p.inner;
    let is_max = OP == 2u;
    var acc = select(0.0, -3.4028235e38, is_max);
    for (var k = 0u; k < p.axis; k++) {
        let v = x[(o * p.axis + k) * p.inner + i];
        acc = select(acc + v, max(acc, v), is_max);
    }
    y[out] = select(acc, acc / f32(p.axis), OP == 1u);
}

// reduce_columns where the inner axis is a multiple of 4: four neighbouring outputs per
// invocation, read 16 bytes at a time (a software adapter pays per load, not per byte). The
// same order of additions as reduce_columns.
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn reduce_columns4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let inner4 = p.inner / 4u;
    let out = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (out >= p.outer * inner4) { return; }
    let o = out / inner4;
    let i = out % inner4;
    let is_max = OP == 2u;
    var acc = vec4<f32>(select(0.0, -3.4028235e38, is_max));
    for (var k = 0u; k < p.axis; k++) {
        let v = x4[(o * p.axis + k) * inner4 + i];
        acc = select(acc + v, max(acc, v), is_max);
    }
    y4[out] = select(acc, acc / f32(p.axis), OP == 1u);
}

@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let out = output_index(wid, nwg);
    let valid = out < p.outer * p.inner;
    let o = out / p.inner;
    let i = out % p.inner;
    var best = -3.4028235e38;
    var best_k = 0xffffffffu;
    if (valid) {
        for (var k = lid.x; k < p.axis; k += WG) {
            let v = x[(o * p.axis + k) * p.inner + i];
            // Strictly greater: each invocation keeps its first maximum.
            if (v > best || best_k == 0xffffffffu) {
                best = v;
                best_k = k;
            }
        }
    }
    sh_val[lid.x] = best;
    sh_idx[lid.x] = best_k;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            let v = sh_val[lid.x + s];
            let k = sh_idx[lid.x + s];
            let mine = sh_idx[lid.x];
            // Ties go to the smaller index, as in PyTorch and NumPy.
            if (k != 0xffffffffu && (mine == 0xffffffffu || v > sh_val[lid.x] || (v == sh_val[lid.x] && k < mine))) {
                sh_val[lid.x] = v;
                sh_idx[lid.x] = k;
            }
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && valid) {
        y[out] = sh_val[0];
        idx[out] = sh_idx[0];
    }
}

// Backward kernels: one invocation per element of dx. `pick` reads the argmax indices from
// the `idx` binding above.

fn dx_element(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn spread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = dx_element(wid, nwg, lid);
    if (e >= p.outer * p.axis * p.inner) { return; }
    let i = e % p.inner;
    let o = e / (p.axis * p.inner);
    y[e] = p.scale * x[o * p.inner + i];
}

@compute @workgroup_size(WG)
fn pick(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = dx_element(wid, nwg, lid);
    if (e >= p.outer * p.axis * p.inner) { return; }
    let i = e % p.inner;
    let k = (e / p.inner) % p.axis;
    let o = e / (p.axis * p.inner);
    let oi = o * p.inner + i;
    y[e] = select(0.0, x[oi], idx[oi] == k);
}

// Softmax and log-softmax along the last axis, forward and backward. One workgroup per row:
// invocations stride over the row, maxima and sums combine in workgroup memory.
//
// forward    y = softmax(x) or log_softmax(x)   (LOG = true)
// backward   softmax:      dx = y * (g - sum(g * y))
//            log-softmax:  dx = g - exp(y) * sum(g)      (LOG = true)

struct Params {
    rows: u32, cols: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A power of two, at most 256.
override WG: u32 = 64u;
// Log-softmax instead of softmax: a pipeline constant, so neither path pays for the other.
override LOG: bool = false;

var<workgroup> sh: array<f32, 256>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn combine_max(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sh[lid] = max(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

fn combine_sum(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sh[lid] += sh[lid + s];
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wid, nwg);
    let valid = row < p.rows;
    let base = row * p.cols;
    var m = -3.4028235e38;
    if (valid) {
        for (var c = lid.x; c < p.cols; c += WG) {
            m = max(m, x[base + c]);
        }
    }
    sh[lid.x] = m;
    m = combine_max(lid.x);
    var s = 0.0;
    if (valid) {
        for (var c = lid.x; c < p.cols; c += WG) {
            s += exp(x[base + c] - m);
        }
    }
    sh[lid.x] = s;
    s = combine_sum(lid.x);
    if (!valid) { return; }
    let log_s = log(s);
    for (var c = lid.x; c < p.cols; c += WG) {
        let shifted = x[base + c] - m;
        y[base + c] = select(exp(shifted) / s, shifted - log_s, LOG);
    }
}

// Backward: x holds the forward output y, g the incoming gradient, dx the result.
@group(0) @binding(3) var<storage, read> g: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wid, nwg);
    let valid = row < p.rows;
    let base = row * p.cols;
    var s = 0.0;
    if (valid) {
        for (var c = lid.x; c < p.cols; c += WG) {
            let gc = g[base + c];
            s += select(gc * x[base + c], gc, LOG);
        }
    }
    sh[lid.x] = s;
    s = combine_sum(lid.x);
    if (!valid) { return; }
    for (var c = lid.x; c < p.cols; c += WG) {
        let yc = x[base + c];
        let gc = g[base + c];
        y[base + c] = select(yc * (gc - s), gc - exp(yc) * s, LOG);
    }
}

// Layer normalisation over the last axis of x seen as [rows, cols] (torch.nn.LayerNorm, biased
// variance), forward and backward. Row kernels give each row a workgroup whose invocations
// stride over its cols and combine in workgroup memory; the parameter-gradient kernel gives
// each column one invocation per chunk of rows.
//
// forward      y = (x - mean) * rstd * weight + bias,  rstd = 1 / sqrt(var + eps);
//              stats[2 row] = mean, stats[2 row + 1] = rstd, saved for the backward. Two
//              passes over the row: the variance sums squared deviations from the mean, which
//              E[x^2] - mean^2 would lose to cancellation when the mean is large.
// backward     dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),  gw = g * weight,
//              xhat = (x - mean) * rstd, the means over the row
// param_grads  y[chunk, c] = sum(g * xhat), y2[chunk, c] = sum(g) over the rows of one chunk
//              (workgroup grid: x over column blocks, y over chunks of p.chunk rows); the host
//              sums the chunks, in a fixed order, so the result is deterministic
//
// Bindings: 1 x (the forward input), 2 y (output: y, dx or the weight partials), 3 stats,
// 4 weight, 5 bias, 6 g (the incoming gradient), 7 y2 (the bias partials); each entry binds a
// prefix, with stand-ins for slots it does not read.

struct Params {
    rows: u32, cols: u32, chunk: u32, _pad0: u32,
    eps: f32, _pad1: f32, _pad2: f32, _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> y2: array<f32>;

// A power of two, at most WG_MAX.
override WG: u32 = 64u;
const WG_MAX: u32 = 256u;

var<workgroup> sh: array<vec2<f32>, WG_MAX>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Sums sh over the workgroup; called by every invocation (it holds barriers).
fn combine(lid: u32) -> vec2<f32> {
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
    let inv_n = 1.0 / f32(p.cols);
    var s = 0.0;
    if (valid) {
        for (var c = lid.x; c < p.cols; c += WG) {
            s += x[base + c];
        }
    }
    sh[lid.x] = vec2<f32>(s, 0.0);
    let mu = combine(lid.x).x * inv_n;
    var q = 0.0;
    if (valid) {
        for (var c = lid.x; c < p.cols; c += WG) {
            let d = x[base + c] - mu;
            q += d * d;
        }
    }
    sh[lid.x] = vec2<f32>(q, 0.0);
    let variance = combine(lid.x).x * inv_n;
    if (!valid) { return; }
    let r = inverseSqrt(variance + p.eps);
    for (var c = lid.x; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mu) * r * weight[c] + bias[c];
    }
    if (lid.x == 0u) {
        stats[2u * row] = mu;
        stats[2u * row + 1u] = r;
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wid, nwg);
    let valid = row < p.rows;
    let base = row * p.cols;
    var mu = 0.0;
    var r = 0.0;
    var acc = vec2<f32>(0.0);
    if (valid) {
        mu = stats[2u * row];
        r = stats[2u * row + 1u];
        for (var c = lid.x; c < p.cols; c += WG) {
            let gw = g[base + c] * weight[c];
            acc += vec2<f32>(gw, gw * (x[base + c] - mu) * r);
        }
    }
    sh[lid.x] = acc;
    let m = combine(lid.x) * (1.0 / f32(p.cols));
    if (!valid) { return; }
    for (var c = lid.x; c < p.cols; c += WG) {
        let gw = g[base + c] * weight[c];
        let xhat = (x[base + c] - mu) * r;
        y[base + c] = r * (gw - m.x - xhat * m.y);
    }
}

@compute @workgroup_size(WG)
fn param_grads(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wid.x * WG + lid.x;
    if (col >= p.cols) { return; }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    var dw = 0.0;
    var db = 0.0;
    // Neighbouring invocations read neighbouring columns of the same row.
    for (var r = r0; r < r1; r++) {
        let i = r * p.cols + col;
        let gi = g[i];
        dw += gi * (x[i] - stats[2u * r]) * stats[2u * r + 1u];
        db += gi;
    }
    y[wid.y * p.cols + col] = dw;
    y2[wid.y * p.cols + col] = db;
}

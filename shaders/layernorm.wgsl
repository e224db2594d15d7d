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
// x, y, weight, bias, g and y2 are read and written as vec4 (software adapters pay per load
// instruction, not per byte): SPAN = 4 elements per access where cols % 4 == 0, else one
// component at a time. Indices below count accesses.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> y2: array<vec4<f32>>;

// A power of two, at most WG_MAX.
override WG: u32 = 64u;
override SPAN: u32 = 1u;
const WG_MAX: u32 = 256u;

var<workgroup> sh: array<vec2<f32>, WG_MAX>;

// Access i: a whole vec4, or element i in every lane (only .x is used).
fn x_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) { return x[i]; }
    return vec4<f32>(x[i / 4u][i % 4u]);
}

fn g_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) { return g[i]; }
    return vec4<f32>(g[i / 4u][i % 4u]);
}

fn weight_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) { return weight[i]; }
    return vec4<f32>(weight[i / 4u][i % 4u]);
}

fn bias_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) { return bias[i]; }
    return vec4<f32>(bias[i / 4u][i % 4u]);
}

fn y_put(i: u32, v: vec4<f32>) {
    if (SPAN == 4u) { y[i] = v; } else { y[i / 4u][i % 4u] = v.x; }
}

fn y2_put(i: u32, v: vec4<f32>) {
    if (SPAN == 4u) { y2[i] = v; } else { y2[i / 4u][i % 4u] = v.x; }
}

// The sum of the elements an access holds.
fn total(v: vec4<f32>) -> f32 {
    if (SPAN == 4u) { return v.x + v.y + v.z + v.w; }
    return v.x;
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// combine(lid), the workgroup sum of sh, is in common/workgroup_sum.wgsl (appended by the
// host).

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wid, nwg);
    let valid = row < p.rows;
    let accesses = p.cols / SPAN;
    let base = row * accesses;
    let inv_n = 1.0 / f32(p.cols);
    var s = 0.0;
    if (valid) {
        for (var c = lid.x; c < accesses; c += WG) {
            s += total(x_at(base + c));
        }
    }
    sh[lid.x] = vec2<f32>(s, 0.0);
    let mu = combine(lid.x).x * inv_n;
    var q = 0.0;
    if (valid) {
        for (var c = lid.x; c < accesses; c += WG) {
            let d = x_at(base + c) - mu;
            q += total(d * d);
        }
    }
    sh[lid.x] = vec2<f32>(q, 0.0);
    let variance = combine(lid.x).x * inv_n;
    if (!valid) { return; }
    let r = inverseSqrt(variance + p.eps);
    for (var c = lid.x; c < accesses; c += WG) {
        y_put(base + c, (x_at(base + c) - mu) * r * weight_at(c) + bias_at(c));
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
    let accesses = p.cols / SPAN;
    let base = row * accesses;
    var mu = 0.0;
    var r = 0.0;
    var acc = vec2<f32>(0.0);
    if (valid) {
        mu = stats[2u * row];
        r = stats[2u * row + 1u];
        for (var c = lid.x; c < accesses; c += WG) {
            let gw = g_at(base + c) * weight_at(c);
            acc += vec2<f32>(total(gw), total(gw * (x_at(base + c) - mu)) * r);
        }
    }
    sh[lid.x] = acc;
    let m = combine(lid.x) * (1.0 / f32(p.cols));
    if (!valid) { return; }
    for (var c = lid.x; c < accesses; c += WG) {
        let gw = g_at(base + c) * weight_at(c);
        let xhat = (x_at(base + c) - mu) * r;
        y_put(base + c, r * (gw - m.x - xhat * m.y));
    }
}

// An invocation per column access (SPAN columns) and chunk of rows.
@compute @workgroup_size(WG)
fn param_grads(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let accesses = p.cols / SPAN;
    let col = wid.x * WG + lid.x;
    if (col >= accesses) { return; }
    let r0 = wid.y * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    var dw = vec4<f32>(0.0);
    var db = vec4<f32>(0.0);
    // Neighbouring invocations read neighbouring columns of the same row.
    for (var r = r0; r < r1; r++) {
        let i = r * accesses + col;
        let gi = g_at(i);
        dw += gi * (x_at(i) - stats[2u * r]) * stats[2u * r + 1u];
        db += gi;
    }
    y_put(wid.y * accesses + col, dw);
    y2_put(wid.y * accesses + col, db);
}

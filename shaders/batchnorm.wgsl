// Batch normalisation of x seen as [N, C, HW] (PyTorch's BatchNorm2d; [N, C] is HW = 1),
// forward and backward. Per-channel reductions give each channel a workgroup whose
// invocations stride over its M = N * HW elements and combine in workgroup memory; the maps
// are one invocation per access of SPAN elements (below), of channel (i / HW) % C.
//
// stats            y[c] = mean, y[C + c] = biased variance of channel c, in one pass over x:
//                  each invocation sums its elements' deviations from its own first element
//                  and their squares, from which its mean and squared deviations follow
//                  (E[x^2] - mean^2 would lose the variance to cancellation when the mean is
//                  large); the workgroup then merges them as Chan et al. do, the mean first.
// update_row       y[c] = scale * x[row + c], or blended into y, (1 - momentum) y + momentum
//                  scale x (BLEND): the running-statistics update, and one row of a [2, C]
//                  result copied out as a tensor of its own
// normalize        y = (x - mean) * invstd * weight + bias, then ReLU (RELU);
//                  invstd = 1 / sqrt(var + eps)
// backward_reduce  y[c] = sum(g * xhat), y[C + c] = sum(g) over channel c, xhat the normalised
//                  input; with RELU, g is first masked where the forward output was clamped
// backward_train   dx = weight * invstd * (g - sum(g) / M - xhat * sum(g * xhat) / M), g masked
//                  as in backward_reduce (RELU)
// backward_eval    dx = g * weight * invstd, g masked as in backward_reduce (RELU)
//
// Bindings: 1 x (the forward input), 2 y (the output), 3 mean, 4 var, 5 weight, 6 bias,
// 7 g (the incoming gradient), 8 sums (backward_reduce's result); each entry binds a prefix.
// Training binds its [2, C] batch statistics as both mean and var, the variance at
// var_off = C; evaluation binds the running tensors, var_off = 0. Keeping the variance rather
// than invstd lets both modes share every kernel, for one inverseSqrt per element.

struct Params {
    n: u32, c: u32, hw: u32, m: u32,
    var_off: u32, row: u32, _pad0: u32, _pad1: u32,
    eps: f32, momentum: f32, scale: f32, _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x, y and g are read and written as vec4 (software adapters pay per load instruction, not
// per byte): SPAN = 4 elements at a time where rows hold whole groups of 4, else one component
// at a time. Pooled buffers come in whole 16-byte groups, so every vec4 lies inside one.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> variance: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(7) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> sums: array<f32>;

// A power of two, at most WG_MAX.
override WG: u32 = 256u;
// Fused ReLU after the normalisation (evaluation mode), forward and backward.
override RELU: bool = false;
// update_row blends into y instead of overwriting it.
override BLEND: bool = false;
// Elements per access: 4 (one vec4) when HW % 4 == 0, so 4 consecutive elements share one
// (image, channel) row and its channel's parameters; else 1. Indices below count accesses.
override SPAN: u32 = 1u;
// Accesses per invocation of the maps, consecutive ones of one (image, channel) row, so the
// channel's parameters are loaded once for them (the host sets 4 where rows hold whole groups
// of 4 accesses, else 1).
override REPEAT: u32 = 1u;
const WG_MAX: u32 = 256u;

var<workgroup> sh: array<vec2<f32>, WG_MAX>;

// Access i of x, g: a whole vec4, or element i in .x (the other lanes are not used).
fn x_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) {
        return x[i];
    }
    return vec4<f32>(x[i / 4u][i % 4u]);
}

fn g_at(i: u32) -> vec4<f32> {
    if (SPAN == 4u) {
        return g[i];
    }
    return vec4<f32>(g[i / 4u][i % 4u]);
}

fn y_put(i: u32, v: vec4<f32>) {
    if (SPAN == 4u) {
        y[i] = v;
    } else {
        y[i / 4u][i % 4u] = v.x;
    }
}

// One f32 of y, as [2, C] results and running statistics are.
fn y_put_one(i: u32, v: f32) {
    y[i / 4u][i % 4u] = v;
}

// The sum of the elements an access holds.
fn total(v: vec4<f32>) -> f32 {
    if (SPAN == 4u) {
        return v.x + v.y + v.z + v.w;
    }
    return v.x;
}

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn access_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return group_index(wid, nwg) * WG + lid.x;
}

// The channel of access i.
fn channel(i: u32) -> u32 {
    return (i * SPAN / p.hw) % p.c;
}

// A walk over channel c's M / SPAN accesses, WG apart: image n, access j of its row. CPU
// adapters have no vector integer division, so the position is advanced by additions rather
// than divided out of the access's rank every time (which made the reductions twice as slow).
struct Walk {
    n: u32, j: u32,
    // Accesses per (image, channel) row.
    row: u32,
    // Images and accesses one step of WG accesses moves by.
    dn: u32, dj: u32,
}

fn walk_from(k: u32) -> Walk {
    let row = p.hw / SPAN;
    return Walk(k / row, k % row, row, WG / row, WG % row);
}

fn walk_index(w: Walk, c: u32) -> u32 {
    return (w.n * p.c + c) * w.row + w.j;
}

fn walk_next(w: Walk) -> Walk {
    var next = w;
    next.n += w.dn;
    next.j += w.dj;
    if (next.j >= w.row) {
        next.j -= w.row;
        next.n += 1u;
    }
    return next;
}

fn invstd(c: u32) -> f32 {
    return inverseSqrt(variance[p.var_off + c] + p.eps);
}

// Channel c's statistics and affine parameters, loaded once per invocation.
struct Channel {
    mean: f32, invstd: f32, weight: f32, bias: f32,
}

// (The bias slot holds some other [C] tensor where a kernel does not read the bias.)
fn channel_params(c: u32) -> Channel {
    return Channel(mean[c], invstd(c), weight[c], bias[c]);
}

// The normalised, scaled and shifted input before any ReLU. The backward kernels recompute
// it through this same function for the ReLU mask, so the mask agrees with the forward.
fn pre_activation(i: u32, ch: Channel) -> vec4<f32> {
    return (x_at(i) - ch.mean) * ch.invstd * ch.weight + ch.bias;
}

// The gradient reaching the normalisation: g, zeroed where the fused ReLU clamped.
fn upstream(i: u32, ch: Channel) -> vec4<f32> {
    if (RELU) {
        return select(g_at(i), vec4<f32>(0.0), pre_activation(i, ch) <= vec4<f32>(0.0));
    }
    return g_at(i);
}

// combine(lid), the workgroup sum of sh, is in common/workgroup_sum.wgsl (appended by the
// host).

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = group_index(wid, nwg);
    let accesses = p.m / SPAN;
    // This invocation's element count, and sums of deviations from `shift` and their squares.
    var count = 0.0;
    var shift = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    if (c < p.c && lid.x < accesses) {
        var w = walk_from(lid.x);
        shift = x_at(walk_index(w, c)).x;
        for (var k = lid.x; k < accesses; k += WG) {
            let d = x_at(walk_index(w, c)) - shift;
            s1 += total(d);
            s2 += total(d * d);
            w = walk_next(w);
        }
        count = f32(SPAN * ((accesses - 1u - lid.x) / WG + 1u));
    }
    let mean_k = shift + s1 / max(count, 1.0);
    let m2_k = max(s2 - s1 * s1 / max(count, 1.0), 0.0);
    sh[lid.x] = vec2<f32>(count * mean_k, 0.0);
    let mu = combine(lid.x).x / f32(p.m);
    sh[lid.x] = vec2<f32>(m2_k + count * (mean_k - mu) * (mean_k - mu), 0.0);
    let v = combine(lid.x).x / f32(p.m);
    let valid = c < p.c;
    if (valid && lid.x == 0u) {
        y_put_one(c, mu);
        y_put_one(p.c + c, v);
    }
}

// (Reads x one element at a time, whatever SPAN is: the host fixes SPAN = 1 here.)
@compute @workgroup_size(WG)
fn update_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = access_index(wid, nwg, lid);
    if (c >= p.c) { return; }
    let v = p.scale * x_at(p.row + c).x;
    if (BLEND) {
        y_put_one(c, (1.0 - p.momentum) * y[c / 4u][c % 4u] + p.momentum * v);
    } else {
        y_put_one(c, v);
    }
}

@compute @workgroup_size(WG)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = access_index(wid, nwg, lid) * REPEAT;
    if (i0 * SPAN >= p.n) { return; }
    let ch = channel_params(channel(i0));
    for (var i = i0; i < i0 + REPEAT; i++) {
        let v = pre_activation(i, ch);
        y_put(i, select(v, max(v, vec4<f32>(0.0)), RELU));
    }
}

@compute @workgroup_size(WG)
fn backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = group_index(wid, nwg);
    let valid = c < p.c;
    let accesses = p.m / SPAN;
    var acc = vec2<f32>(0.0);
    if (valid) {
        let ch = channel_params(c);
        var w = walk_from(lid.x);
        for (var k = lid.x; k < accesses; k += WG) {
            let i = walk_index(w, c);
            let gi = upstream(i, ch);
            acc += vec2<f32>(total(gi * (x_at(i) - ch.mean)) * ch.invstd, total(gi));
            w = walk_next(w);
        }
    }
    sh[lid.x] = acc;
    let s = combine(lid.x);
    if (valid && lid.x == 0u) {
        y_put_one(c, s.x);
        y_put_one(p.c + c, s.y);
    }
}

@compute @workgroup_size(WG)
fn backward_train(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = access_index(wid, nwg, lid) * REPEAT;
    if (i0 * SPAN >= p.n) { return; }
    let c = channel(i0);
    let ch = channel_params(c);
    let inv_m = 1.0 / f32(p.m);
    let scale = ch.weight * ch.invstd;
    let mean_g = sums[p.c + c] * inv_m;
    let mean_gxhat = sums[c] * inv_m;
    for (var i = i0; i < i0 + REPEAT; i++) {
        let xhat = (x_at(i) - ch.mean) * ch.invstd;
        y_put(i, scale * (upstream(i, ch) - mean_g - xhat * mean_gxhat));
    }
}

@compute @workgroup_size(WG)
fn backward_eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = access_index(wid, nwg, lid) * REPEAT;
    if (i0 * SPAN >= p.n) { return; }
    let ch = channel_params(channel(i0));
    for (var i = i0; i < i0 + REPEAT; i++) {
        y_put(i, upstream(i, ch) * ch.weight * ch.invstd);
    }
}

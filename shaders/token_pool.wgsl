// Masked pooling over the tokens of hidden states x [B, T, D] with a mask [B, T] (nonzero: a
// real token, 0: padding), to one vector per sequence [B, D], and the backward kernels. One
// invocation per (b, d): workgroups along x cover d, the grid's y is b, so neighbouring
// invocations read neighbouring addresses and no index is divided; each loops over the T
// tokens in order. A sequence without a real token pools to 0 and gets no gradient.
//
// max_forward    y[b, d] = max over real t of x[b, t, d], idx[b, d] = the first such t
//                (T when there is none)
// mean_forward   y[b, d] = sum over real t of x[b, t, d] / max(count(b), 1)
// max_backward   dx[b, t, d] = (t == idx[b, d]) ? g[b, d] : 0     (a gather: deterministic)
// mean_backward  dx[b, t, d] = real(b, t) ? g[b, d] / count(b) : 0
//
// Bindings: 1 src (x, or g in the backward), 2 y (the output, or dx), 3 mask, 4 idx (max only).

struct Params {
    b: u32, t: u32, d: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> idx: array<u32>;

override WG: u32 = 64u;

fn is_real(b: u32, t: u32) -> bool {
    return mask[b * p.t + t] != 0.0;
}

fn real_count(b: u32) -> f32 {
    var n = 0.0;
    for (var t = 0u; t < p.t; t++) {
        n += select(0.0, 1.0, is_real(b, t));
    }
    return n;
}

@compute @workgroup_size(WG)
fn max_forward(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = wid.x * WG + lid.x;
    let b = wid.y;
    if (d >= p.d) { return; }
    var best = 0.0;
    var arg = p.t;
    for (var t = 0u; t < p.t; t++) {
        if (is_real(b, t)) {
            let v = src[(b * p.t + t) * p.d + d];
            // Strictly greater: ties keep the first token, as the backward's gather assumes.
            if (arg == p.t || v > best) {
                best = v;
                arg = t;
            }
        }
    }
    y[b * p.d + d] = best;
    idx[b * p.d + d] = arg;
}

@compute @workgroup_size(WG)
fn mean_forward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = wid.x * WG + lid.x;
    let b = wid.y;
    if (d >= p.d) { return; }
    var s = 0.0;
    var n = 0.0;
    for (var t = 0u; t < p.t; t++) {
        if (is_real(b, t)) {
            s += src[(b * p.t + t) * p.d + d];
            n += 1.0;
        }
    }
    y[b * p.d + d] = s / max(n, 1.0);
}

@compute @workgroup_size(WG)
fn max_backward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = wid.x * WG + lid.x;
    let b = wid.y;
    if (d >= p.d) { return; }
    let gv = src[b * p.d + d];
    let arg = idx[b * p.d + d];
    for (var t = 0u; t < p.t; t++) {
        y[(b * p.t + t) * p.d + d] = select(0.0, gv, t == arg);
    }
}

@compute @workgroup_size(WG)
fn mean_backward(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let d = wid.x * WG + lid.x;
    let b = wid.y;
    if (d >= p.d) { return; }
    let share = src[b * p.d + d] / max(real_count(b), 1.0);
    for (var t = 0u; t < p.t; t++) {
        y[(b * p.t + t) * p.d + d] = select(0.0, share, is_real(b, t));
    }
}

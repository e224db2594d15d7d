// Adam (torch.optim.Adam semantics, L2 weight decay added to the gradient), one parameter
// tensor per dispatch, p, m and v updated in place:
//   g = grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= step_size m / (sqrt(v) / sqrt(bc2) + eps),  step_size = lr / bc1
// with bc1 = 1 - b1^t, bc2 = 1 - b2^t computed by the host in f64: the order of torch's
// single-tensor path, so results agree to rounding. m moves by lerp, as torch's does.
//
// Four elements per invocation, loaded and stored as vec4 (software adapters pay per load
// instruction); pooled buffers come in whole 16-byte groups, so the last vec4 may update the
// slack past a tensor's end, which nothing reads.
//
// sumsq: per-workgroup sums of squares of a gradient into the partial sums (at an offset per
// tensor), for the global norm of clip_grad_norm; the host reads them all back at once.

struct Params {
    n: u32,
    // sumsq: where this tensor's partial sums start in `partials`.
    offset: u32,
    _pad0: u32, _pad1: u32,
    beta1: f32, beta2: f32, eps: f32, weight_decay: f32,
    step_size: f32,
    // sqrt(1 - beta2^t)
    bc2_sqrt: f32,
    // 1 - beta1 and 1 - beta2 from the f64 betas, as torch's host arithmetic has them:
    // 1 - f32(0.999) would be 1.3e-5 off.
    one_minus_beta1: f32, one_minus_beta2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
// Elements each invocation of sumsq adds up: fewer partials to read back.
const PER_INVOCATION: u32 = 16u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// step binds (grad, param, m, v); sumsq binds (grad, partials) on the first two, so both
// entry points share these declarations: `param` is where sumsq writes its partial sums.
@group(0) @binding(1) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q = linear_id(wid, nwg) * WG + lid;
    if (4u * q >= p.n) {
        return;
    }
    let x = param[q];
    let g = grad[q] + p.weight_decay * x;
    let m0 = m[q];
    let m1 = m0 + p.one_minus_beta1 * (g - m0);
    let v1 = p.beta2 * v[q] + p.one_minus_beta2 * g * g;
    m[q] = m1;
    v[q] = v1;
    // addcdiv's order: step_size * (m / denom).
    param[q] = x - p.step_size * (m1 / (sqrt(v1) / p.bc2_sqrt + p.eps));
}

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn sumsq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let w = linear_id(wid, nwg);
    let start = w * WG * PER_INVOCATION;
    let end = min(start + WG * PER_INVOCATION, p.n);
    var acc = 0.0;
    for (var e = start + lid; e < end; e += WG) {
        let x = grad[e / 4u][e % 4u];
        acc += x * x;
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let k = p.offset + w;
        param[k / 4u][k % 4u] = red[0];
    }
}

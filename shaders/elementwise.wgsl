// Elementwise kernels, four elements per invocation, loaded and stored as one vec4: software
// adapters pay per load instruction, not per byte, so this moves 2-3x the bytes per second of
// one f32 per invocation. Buffers come from the pool in whole 16-byte groups, so the last
// vec4 may run past the tensor's end into its buffer's slack (never into another tensor).
// Which function is applied is the override constant OP, so each op is its own specialised
// pipeline: a runtime switch would cost every case's arithmetic on software adapters, which
// execute all branches under a mask.
//
// unary   y = f(x):        0 copy, 1 affine (a*x + b), 2 ReLU, 3 GELU, 4 exp, 5 log, 6 sqrt,
//                          7 reciprocal, 8 tanh
// binary  y = f(x, z):     0 add, 1 sub, 2 mul, 3 div,
//                          4 ReLU backward (x = grad, z = input), 5 GELU backward (same),
//                          6 tanh backward (x = grad, z = output), 7 ReLU(x + z)
// bias    y = x + z[(i / inner) % channels]   (z broadcast along one axis)
// fill    y = a

struct Params {
    n: u32, inner: u32, channels: u32, _pad: u32,
    a: f32, b: f32, _pad1: f32, _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256u;
override OP: u32 = 0u;

// The invocation's vec4: elements 4 q .. 4 q + 3.
fn quad(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn unary_op(x: f32) -> f32 {
    switch OP {
        case 0u: { return x; }
        case 1u: { return p.a * x + p.b; }
        case 2u: { return max(x, 0.0); }
        case 3u: { return gelu(x); }
        case 4u: { return exp(x); }
        case 5u: { return log(x); }
        case 6u: { return sqrt(x); }
        case 7u: { return 1.0 / x; }
        case 8u: { return tanh(x); }
        default: { return x; }
    }
}

fn unary4(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unary_op(x.x), unary_op(x.y), unary_op(x.z), unary_op(x.w));
}

fn binary_op(x: f32, z: f32) -> f32 {
    switch OP {
        case 0u: { return x + z; }
        case 1u: { return x - z; }
        case 2u: { return x * z; }
        case 3u: { return x / z; }
        case 4u: { return select(0.0, x, z > 0.0); }
        case 5u: { return x * gelu_grad(z); }
        case 6u: { return x * (1.0 - z * z); }
        case 7u: { return max(x + z, 0.0); }
        default: { return x; }
    }
}

fn binary4(x: vec4<f32>, z: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(binary_op(x.x, z.x), binary_op(x.y, z.y), binary_op(x.z, z.z), binary_op(x.w, z.w));
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = quad(wid, nwg, lid);
    if (4u * q < p.n) {
        y[q] = unary4(x[q]);
    }
}

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = quad(wid, nwg, lid);
    if (4u * q < p.n) {
        y[q] = vec4<f32>(p.a);
    }
}

// Binary kernels read a second operand at binding 3 (bias_add: the [channels] bias, read one
// component at a time).
@group(0) @binding(3) var<storage, read> z: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = quad(wid, nwg, lid);
    if (4u * q < p.n) {
        y[q] = binary4(x[q], z[q]);
    }
}

fn bias_of(i: u32) -> f32 {
    let c = (i / p.inner) % p.channels;
    return z[c / 4u][c % 4u];
}

@compute @workgroup_size(WG)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = quad(wid, nwg, lid);
    let i = 4u * q;
    if (i < p.n) {
        y[q] = x[q] + vec4<f32>(bias_of(i), bias_of(i + 1u), bias_of(i + 2u), bias_of(i + 3u));
    }
}

// Inverted dropout with a counter-based generator: element i is kept when a keyed hash of i
// reaches the threshold, and kept values are scaled by 1 / (1 - p). The mask is a pure
// function of (key, i), with no generator state, so the backward regenerates it from the same
// key instead of storing it; and as dropout is linear in x, the backward is this same kernel
// applied to the incoming gradient.
//
// forward   y[i] = keep(i) ? x[i] * scale : 0,   keep(i) = bits(i) >= threshold
//
// bits(i) = mix(mix(i ^ k0) ^ k1), mix a 32-bit integer finaliser (Wellons' lowbias32: xor-
// shifts and odd multiplies, a bijection with full avalanche), k0 and k1 the two halves of the
// seed run through splitmix64 on the host. Per seed, i -> bits(i) is a bijection of u32.
// threshold = round(p * 2^32), so P(keep) = 1 - p to within 2^-32.

struct Params {
    n: u32, threshold: u32, k0: u32, k1: u32,
    scale: f32, _pad0: f32, _pad1: f32, _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Four elements per invocation, loaded and stored as one vec4 (software adapters pay per load
// instruction); pooled buffers come in whole 16-byte groups, so the last vec4 may run into
// the tensor's slack.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

override WG: u32 = 256u;

fn mix(v: vec4<u32>) -> vec4<u32> {
    var h = v;
    h ^= h >> vec4<u32>(16u);
    h *= 0x7feb352du;
    h ^= h >> vec4<u32>(15u);
    h *= 0x846ca68bu;
    h ^= h >> vec4<u32>(16u);
    return h;
}

fn bits(i: vec4<u32>) -> vec4<u32> {
    return mix(mix(i ^ vec4<u32>(p.k0)) ^ vec4<u32>(p.k1));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (4u * q >= p.n) { return; }
    let i = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u);
    y[q] = select(vec4<f32>(0.0), x[q] * p.scale, bits(i) >= vec4<u32>(p.threshold));
}

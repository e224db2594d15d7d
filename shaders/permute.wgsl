// Permutation of up to 4 axes (transposes included): one invocation per output element,
// which finds its source through the input strides listed in output-axis order.

struct Params {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    // Output shape, padded with leading 1s to 4 axes.
    out_shape: vec4<u32>,
    // Input stride of the input axis that becomes each output axis.
    src_stride: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (e >= p.n) { return; }
    var rest = e;
    var src = 0u;
    for (var d = 3i; d >= 0i; d--) {
        let extent = p.out_shape[d];
        src += (rest % extent) * p.src_stride[d];
        rest /= extent;
    }
    y[e] = x[src];
}

// Permutation of up to 4 axes (transposes included): each output element finds its source
// through the input strides listed in output-axis order.
// - permute_rows: a workgroup per row of the last output axis, its invocations striding along
//   it; the row's other indices are found once per invocation. Integer division is scalar on
//   CPU adapters (eight per element made the flat kernel run at a third of the copy bandwidth
//   on llvmpipe), so this is the kernel for rows of 32 or more.
// - permute: one invocation per element, for short rows.
// - permute_vec4: where the last axis stays last in rows of whole groups of 4, one invocation
//   per vec4 (software adapters pay per load instruction, not per byte), its indices divided
//   out by float reciprocals (split). BERT's head splits move rows of 64.
// x and y are bound as vec4 arrays for that copy; element accesses pick one component.

struct Params {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    // Output shape, padded with leading 1s to 4 axes.
    out_shape: vec4<u32>,
    // Input stride of the input axis that becomes each output axis.
    src_stride: vec4<u32>,
    // permute_vec4: 1 / (vec4s per row), 1 / out_shape.z, 1 / out_shape.y.
    inv: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn permute_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let len = p.out_shape.w;
    if (row >= p.n / len) { return; }
    let i2 = row % p.out_shape.z;
    let i01 = row / p.out_shape.z;
    let i1 = i01 % p.out_shape.y;
    let i0 = i01 / p.out_shape.y;
    let src = i0 * p.src_stride.x + i1 * p.src_stride.y + i2 * p.src_stride.z;
    for (var i3 = lid.x; i3 < len; i3 += WG) {
        let s = src + i3 * p.src_stride.w;
        let d = row * len + i3;
        y[d / 4u][d % 4u] = x[s / 4u][s % 4u];
    }
}

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
    y[e / 4u][e % 4u] = x[src / 4u][src % 4u];
}

// (a / d, a % d) for a < 2^24: a float reciprocal and one correction step, as CPU adapters
// have no vector integer division.
fn split(a: u32, d: u32, inv_d: f32) -> vec2<u32> {
    var q = i32(f32(a) * inv_d);
    var r = i32(a) - q * i32(d);
    if (r < 0) { q -= 1; r += i32(d); }
    if (r >= i32(d)) { q += 1; r -= i32(d); }
    return vec2<u32>(u32(q), u32(r));
}

@compute @workgroup_size(WG)
fn permute_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (e >= p.n / 4u) { return; }
    let row_k = split(e, p.out_shape.w / 4u, p.inv.x);
    let i01_i2 = split(row_k.x, p.out_shape.z, p.inv.y);
    let i0_i1 = split(i01_i2.x, p.out_shape.y, p.inv.z);
    // A multiple of 4: every stride but the last includes the last axis.
    let src = i0_i1.x * p.src_stride.x + i0_i1.y * p.src_stride.y + i01_i2.y * p.src_stride.z;
    y[e] = x[src / 4u + row_k.y];
}

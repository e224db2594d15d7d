// Permutation of up to 4 axes (transposes included): each output element finds its source
// through the input strides listed in output-axis order.
// - permute_rows: a workgroup per row of the last output axis, its invocations striding along
//   it; the row's other indices are found once per invocation. Integer division is scalar on
//   CPU adapters (eight per element made the flat kernel run at a third of the copy bandwidth
//   on llvmpipe), so this is the kernel for rows of 32 or more.
//   Where the last axis stays last and its rows hold whole groups of 4 (ROWS_OF_VEC4), rows
//   are copied a vec4 at a time: software adapters pay per load instruction, not per byte.
// - permute: one invocation per element, for short rows.
// x and y are bound as vec4 arrays for that copy; element accesses pick one component.

struct Params {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    // Output shape, padded with leading 1s to 4 axes.
    out_shape: vec4<u32>,
    // Input stride of the input axis that becomes each output axis.
    src_stride: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

override WG: u32 = 256u;
override ROWS_OF_VEC4: bool = false;

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
    if (ROWS_OF_VEC4) {
        // src and row * len are multiples of 4: every stride includes the last axis.
        for (var k = lid.x; k < len / 4u; k += WG) {
            y[row * len / 4u + k] = x[src / 4u + k];
        }
        return;
    }
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

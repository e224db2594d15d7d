// Embedding lookup: rows of a [V, D] table gathered by token id, and its backward, a
// scatter-add made deterministic without atomics. One workgroup per output row, invocations
// striding over its D values (no per-element division to find the row).
//
// gather    y[n, d] = src[idx[n], d]                      (src the table, idx the token ids)
// scatter   y[v, d] = sum over k in [idx[v], idx[v + 1]) of src[pos[k], d]
//           (src the output gradient [N, D]; idx and pos the CSR of token positions grouped
//           by id, built on the host by a stable counting sort, so each row sums its positions
//           in increasing order, and rows of ids that never occur are written as zero).
//           One dispatch takes occurrences first .. first + cap of each row; where one id
//           occurs more often than a software adapter's loop budget allows in one invocation
//           (padding, token type 0), the host adds further dispatches that ACCUMULATE.
//
// Bindings: 1 src, 2 y, 3 idx (token ids or CSR offsets), 4 pos (scatter only).

struct Params {
    rows: u32, cols: u32,
    // scatter: the slice of each row's occurrences this dispatch sums.
    first: u32, cap: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<u32>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;

override WG: u32 = 64u;
// scatter adds to y (every dispatch after a row's first slice).
override ACCUMULATE: bool = false;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) { return; }
    let src_base = idx[row] * p.cols;
    let dst_base = row * p.cols;
    for (var d = lid.x; d < p.cols; d += WG) {
        y[dst_base + d] = src[src_base + d];
    }
}

@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let v = row_index(wid, nwg);
    if (v >= p.rows) { return; }
    let end = idx[v + 1u];
    let k0 = min(idx[v] + p.first, end);
    // (k0 + cap could wrap where the cap is unlimited: count what is left instead.)
    let k1 = k0 + min(end - k0, p.cap);
    if (ACCUMULATE && k0 >= k1) { return; }
    for (var d = lid.x; d < p.cols; d += WG) {
        var s = 0.0;
        for (var k = k0; k < k1; k++) {
            s += src[pos[k] * p.cols + d];
        }
        if (ACCUMULATE) {
            y[v * p.cols + d] += s;
        } else {
            y[v * p.cols + d] = s;
        }
    }
}

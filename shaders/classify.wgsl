// Classification losses fused with their gradient (linear probes and fine-tuning heads), one
// invocation per row of the logits z [N, C]. Each row writes its share of the loss and its
// row of dz, so the loss is the sum of row_loss and the backward only scales dz.
//
// softmax cross-entropy (SIGMOID false), t [N, C] a distribution per row (one-hot for a label):
//   loss_r = scale * (logsumexp(z_r) - sum_c t_rc z_rc)
//   dz_rc  = scale * (softmax(z_r)_c - t_rc)            (rows of t sum to 1)
// sigmoid binary cross-entropy (SIGMOID true), t_rc in [0, 1], or negative for "no label":
//   loss_rc = scale * (softplus(z_rc) - t_rc z_rc),  softplus(z) = max(z, 0) + log(1 + e^-|z|)
//   dz_rc   = scale * (sigmoid(z_rc) - t_rc), 0 where unlabelled
// scale is 1 / N (softmax) or 1 / (labelled entries) (sigmoid), from the host, so the sum is
// the mean loss as torch's cross_entropy / masked binary_cross_entropy_with_logits give it.
// Unlabelled entries are negative rather than NaN: WGSL lets implementations assume no NaNs.

struct Params {
    n: u32, c: u32, scale: f32, _pad: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dz: array<f32>;
@group(0) @binding(5) var<storage, read> upstream: array<f32>;

override WG: u32 = 64u;
override SIGMOID: bool = false;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

@compute @workgroup_size(WG)
fn loss_and_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = linear_id(wid, nwg, lid);
    if (r >= p.n) { return; }
    let base = r * p.c;
    var loss = 0.0;
    if (SIGMOID) {
        for (var c = 0u; c < p.c; c++) {
            let x = z[base + c];
            let y = t[base + c];
            if (y < 0.0) {
                dz[base + c] = 0.0;
            } else {
                loss += softplus(x) - y * x;
                dz[base + c] = p.scale * (1.0 / (1.0 + exp(-x)) - y);
            }
        }
    } else {
        var m = z[base];
        for (var c = 1u; c < p.c; c++) { m = max(m, z[base + c]); }
        var sum = 0.0;
        var dot = 0.0;
        for (var c = 0u; c < p.c; c++) {
            sum += exp(z[base + c] - m);
            dot += t[base + c] * z[base + c];
        }
        loss = m + log(sum) - dot;
        for (var c = 0u; c < p.c; c++) {
            dz[base + c] = p.scale * (exp(z[base + c] - m) / sum - t[base + c]);
        }
    }
    row_loss[r] = p.scale * loss;
}

// dz *= the incoming gradient of the (scalar) loss.
@compute @workgroup_size(WG)
fn scale_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid);
    if (e < p.n * p.c) {
        dz[e] *= upstream[0];
    }
}

//! The CPU reference of every op, in f64: plain loops that say what each kernel computes.
//! Used by `kernels_tests` (forward comparisons and finite-difference gradients) and by nothing
//! at run time.

use crate::ops::{Binary, Unary};

/// Geometry of a (batched) GEMM as the kernel sees it.
#[derive(Debug, Clone, Copy)]
pub struct GemmDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Whether A (resp. B) has one matrix per batch or one shared by all.
    pub a_batched: bool,
    pub b_batched: bool,
}

/// `alpha * op(A) op(B) + beta * c0 + bias`, then `act` (0 none, 1 ReLU, 2 GELU).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    d: GemmDims,
    a: &[f64],
    b: &[f64],
    alpha: f64,
    beta_c0: Option<(f64, &[f64])>,
    bias: Option<&[f64]>,
    act: u32,
) -> Vec<f64> {
    let GemmDims {
        batch,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batched,
        b_batched,
    } = d;
    let mut c = vec![0.0; batch * m * n];
    for z in 0..batch {
        let ao = if a_batched { z * m * k } else { 0 };
        let bo = if b_batched { z * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if trans_a {
                        a[ao + p * m + i]
                    } else {
                        a[ao + i * k + p]
                    };
                    let bv = if trans_b {
                        b[bo + j * k + p]
                    } else {
                        b[bo + p * n + j]
                    };
                    s += av * bv;
                }
                let ci = z * m * n + i * n + j;
                let mut v = alpha * s;
                if let Some((beta, c0)) = beta_c0 {
                    v += beta * c0[ci];
                }
                if let Some(bias) = bias {
                    v += bias[j];
                }
                c[ci] = match act {
                    1 => v.max(0.0),
                    2 => gelu(v),
                    _ => v,
                };
            }
        }
    }
    c
}

/// The error function, to about 1e-15: Taylor series near 0, a continued fraction for erfc
/// in the tails.
pub fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let z = x.abs();
        // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...))))
        let mut f = z;
        for n in (1..100).rev() {
            f = z + (n as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc).copysign(x)
    }
}

pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub fn gelu_grad(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
        + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// `op(x)`, with `a`, `b` the affine coefficients.
pub fn unary(op: Unary, x: f64, a: f64, b: f64) -> f64 {
    match op {
        Unary::Copy => x,
        Unary::Affine => a * x + b,
        Unary::Relu => x.max(0.0),
        Unary::Gelu => gelu(x),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Recip => 1.0 / x,
        Unary::Tanh => x.tanh(),
    }
}

/// `op(x, z)`.
pub fn binary(op: Binary, x: f64, z: f64) -> f64 {
    match op {
        Binary::Add => x + z,
        Binary::AddRelu => (x + z).max(0.0),
        Binary::Sub => x - z,
        Binary::Mul => x * z,
        Binary::Div => x / z,
        Binary::ReluBackward => {
            if z > 0.0 {
                x
            } else {
                0.0
            }
        }
        Binary::GeluBackward => x * gelu_grad(z),
        Binary::TanhBackward => x * (1.0 - z * z),
    }
}

/// `x + bias[i % bias.len()]`.
pub fn bias_add(x: &[f64], bias: &[f64]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % bias.len()])
        .collect()
}

/// Splits `shape` around `axis` into `(outer, axis length, inner)`.
pub fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Sum (`mean = false`) or mean along `axis`.
pub fn sum(x: &[f64], shape: &[usize], axis: usize, mean: bool) -> Vec<f64> {
    let (outer, len, inner) = split(shape, axis);
    let mut y = vec![0.0; outer * inner];
    for o in 0..outer {
        for k in 0..len {
            for i in 0..inner {
                y[o * inner + i] += x[(o * len + k) * inner + i];
            }
        }
    }
    if mean {
        y.iter_mut().for_each(|v| *v /= len as f64);
    }
    y
}

/// Maximum along `axis` and the index of its first occurrence.
pub fn max(x: &[f64], shape: &[usize], axis: usize) -> (Vec<f64>, Vec<u32>) {
    let (outer, len, inner) = split(shape, axis);
    let mut y = vec![f64::NEG_INFINITY; outer * inner];
    let mut idx = vec![0u32; outer * inner];
    for o in 0..outer {
        for k in 0..len {
            for i in 0..inner {
                let v = x[(o * len + k) * inner + i];
                if v > y[o * inner + i] {
                    y[o * inner + i] = v;
                    idx[o * inner + i] = k as u32;
                }
            }
        }
    }
    (y, idx)
}

/// Softmax (or log-softmax) of each row of `cols` elements.
pub fn softmax(x: &[f64], cols: usize, log: bool) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        y.extend(row.iter().map(|v| {
            if log {
                v - m - s.ln()
            } else {
                (v - m).exp() / s
            }
        }));
    }
    y
}

/// `torch.permute`: output axis `i` is input axis `dims[i]`.
pub fn permute(x: &[f64], shape: &[usize], dims: &[usize]) -> Vec<f64> {
    let rank = shape.len();
    let mut stride = vec![1; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let mut y = Vec::with_capacity(x.len());
    for e in 0..x.len() {
        let (mut rest, mut src) = (e, 0);
        for o in (0..rank).rev() {
            src += (rest % out_shape[o]) * stride[dims[o]];
            rest /= out_shape[o];
        }
        y.push(x[src]);
    }
    y
}

/// `torch.nn.functional.conv2d` on NCHW / OIHW, square stride and zero padding; returns the
/// output and its shape.
pub fn conv2d(
    x: &[f64],
    x_shape: [usize; 4],
    w: &[f64],
    w_shape: [usize; 4],
    bias: Option<&[f64]>,
    stride: usize,
    pad: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = x_shape;
    let [o, _, kh, kw] = w_shape;
    let (oh, ow) = (
        (h + 2 * pad - kh) / stride + 1,
        (wd + 2 * pad - kw) / stride + 1,
    );
    let mut y = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for f in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bias| bias[f]);
                    for ch in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let (yy, xx) = (
                                    (oy * stride + i) as isize - pad as isize,
                                    (ox * stride + j) as isize - pad as isize,
                                );
                                if yy < 0 || xx < 0 || yy >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                s += x[((b * c + ch) * h + yy as usize) * wd + xx as usize]
                                    * w[((f * c + ch) * kh + i) * kw + j];
                            }
                        }
                    }
                    y[((b * o + f) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    (y, [n, o, oh, ow])
}

/// Training-mode batch norm of `[N, C, H, W]` or `[N, C]`: `(y, batch mean, unbiased variance)`.
pub fn batch_norm_train(
    x: &[f64],
    shape: &[usize],
    weight: &[f64],
    bias: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, hw) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let m = (n * hw) as f64;
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    for b in 0..n {
        for ch in 0..c {
            for s in 0..hw {
                mean[ch] += x[(b * c + ch) * hw + s] / m;
            }
        }
    }
    for b in 0..n {
        for ch in 0..c {
            for s in 0..hw {
                var[ch] += (x[(b * c + ch) * hw + s] - mean[ch]).powi(2) / m;
            }
        }
    }
    let y = batch_norm_eval(x, shape, weight, bias, &mean, &var, eps, false);
    let unbiased = var.iter().map(|v| v * m / (m - 1.0)).collect();
    (y, mean, unbiased)
}

/// Evaluation-mode batch norm with the given (running) mean and variance, then ReLU if `relu`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval(
    x: &[f64],
    shape: &[usize],
    weight: &[f64],
    bias: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    relu: bool,
) -> Vec<f64> {
    let (c, hw) = (shape[1], shape[2..].iter().product::<usize>());
    let mut y = Vec::with_capacity(x.len());
    for (i, v) in x.iter().enumerate() {
        let ch = (i / hw) % c;
        let out = (v - mean[ch]) / (var[ch] + eps).sqrt() * weight[ch] + bias[ch];
        y.push(if relu { out.max(0.0) } else { out });
    }
    y
}

/// Max pooling of the planes of `[N, C, H, W]`, padding as -infinity: `(y, output shape)`.
pub fn max_pool2d(
    x: &[f64],
    shape: &[usize],
    k: usize,
    s: usize,
    p: usize,
) -> (Vec<f64>, Vec<usize>) {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f64::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            best = best.max(x[(plane * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    (y, vec![n, c, oh, ow])
}

/// `torch.nn.LayerNorm` over rows of `cols` elements (biased variance), scaled and shifted.
pub fn layer_norm(x: &[f64], cols: usize, weight: &[f64], bias: &[f64], eps: f64) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (c, v) in row.iter().enumerate() {
            y.push((v - mean) * rstd * weight[c] + bias[c]);
        }
    }
    y
}

/// Rows `ids[n]` of the `[V, dim]` table `weight`, concatenated.
pub fn embedding(weight: &[f64], dim: usize, ids: &[u32]) -> Vec<f64> {
    let mut y = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        y.extend_from_slice(&weight[id as usize * dim..(id as usize + 1) * dim]);
    }
    y
}

/// The 32-bit finaliser of the dropout hash (lowbias32: xor-shifts and odd multiplies).
fn dropout_mix(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Whether `Tensor::dropout(p, seed)` keeps element `i`: a two-round hash keyed by the seed.
pub fn dropout_keeps(p: f64, seed: u64, i: u32) -> bool {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let bits = dropout_mix(dropout_mix(i ^ z as u32) ^ (z >> 32) as u32);
    let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    bits >= threshold
}

/// Inverted dropout: kept elements (see `dropout_keeps`) divided by `1 - p`, the others 0.
pub fn dropout(x: &[f64], p: f64, seed: u64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            if p == 0.0 || dropout_keeps(p, seed, i as u32) {
                v / (1.0 - p)
            } else {
                0.0
            }
        })
        .collect()
}

/// Maximum over the real tokens (`mask != 0`) of `[b, t, d]`: `[b, d]`, 0 where none is real.
pub fn masked_max_pool(x: &[f64], mask: &[f64], b: usize, t: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * d];
    for s in 0..b {
        for f in 0..d {
            let mut best: Option<f64> = None;
            for k in 0..t {
                if mask[s * t + k] != 0.0 {
                    let v = x[(s * t + k) * d + f];
                    best = Some(best.map_or(v, |m| m.max(v)));
                }
            }
            y[s * d + f] = best.unwrap_or(0.0);
        }
    }
    y
}

/// Mean over the real tokens (`mask != 0`) of `[b, t, d]`: `[b, d]`, 0 where none is real.
pub fn masked_mean_pool(x: &[f64], mask: &[f64], b: usize, t: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * d];
    for s in 0..b {
        let count = (0..t).filter(|&k| mask[s * t + k] != 0.0).count();
        for f in 0..d {
            let sum: f64 = (0..t)
                .filter(|&k| mask[s * t + k] != 0.0)
                .map(|k| x[(s * t + k) * d + f])
                .sum();
            y[s * d + f] = sum / count.max(1) as f64;
        }
    }
    y
}

/// Multi-head attention `softmax(scale Q K^T + mask) V` with an explicit softmax: `q`, `k`,
/// `v` are `[b, h, t, dh]`, `mask` `[b, t]` with 0 for a padded key (it gets no weight). A
/// query row whose keys are all padding has output 0.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    b: usize,
    h: usize,
    t: usize,
    dh: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; b * h * t * dh];
    for z in 0..b * h {
        let base = z * t * dh;
        for i in 0..t {
            let Some(p) = attention_probs(q, k, mask, z / h, base, i, t, dh, scale) else {
                continue;
            };
            let o = &mut out[base + i * dh..base + (i + 1) * dh];
            for (j, pj) in p.iter().enumerate() {
                for (e, oe) in o.iter_mut().enumerate() {
                    *oe += pj * v[base + j * dh + e];
                }
            }
        }
    }
    out
}

/// Row `i` of the attention probabilities of the (b, h) slice at `base` (`None` when every key
/// is padding).
#[allow(clippy::too_many_arguments)]
fn attention_probs(
    q: &[f64],
    k: &[f64],
    mask: Option<&[f64]>,
    batch: usize,
    base: usize,
    i: usize,
    t: usize,
    dh: usize,
    scale: f64,
) -> Option<Vec<f64>> {
    let qi = &q[base + i * dh..base + (i + 1) * dh];
    let mut s: Vec<f64> = (0..t)
        .map(|j| {
            if mask.is_some_and(|m| m[batch * t + j] == 0.0) {
                return f64::NEG_INFINITY;
            }
            let kj = &k[base + j * dh..base + (j + 1) * dh];
            scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
        })
        .collect();
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return None;
    }
    let mut sum = 0.0;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    s.iter_mut().for_each(|x| *x /= sum);
    Some(s)
}

/// Gradients `(dq, dk, dv)` of [`attention`] for the output gradient `dout`, from the explicit
/// probabilities P: dV = P^T dO, dS = P (dO V^T - rowsum(dO * O)), dQ = scale dS K,
/// dK = scale dS^T Q.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    dout: &[f64],
    b: usize,
    h: usize,
    t: usize,
    dh: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = b * h * t * dh;
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for z in 0..b * h {
        let base = z * t * dh;
        let row =
            |x: &[f64], r: usize| -> Vec<f64> { x[base + r * dh..base + (r + 1) * dh].to_vec() };
        for i in 0..t {
            let Some(p) = attention_probs(q, k, mask, z / h, base, i, t, dh, scale) else {
                continue;
            };
            let doi = row(dout, i);
            let dp: Vec<f64> = (0..t).map(|j| dot(&doi, &row(v, j))).collect();
            let di: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            let qi = row(q, i);
            for j in 0..t {
                let ds = p[j] * (dp[j] - di);
                for e in 0..dh {
                    dq[base + i * dh + e] += scale * ds * k[base + j * dh + e];
                    dk[base + j * dh + e] += scale * ds * qi[e];
                    dv[base + j * dh + e] += p[j] * doi[e];
                }
            }
        }
    }
    (dq, dk, dv)
}

/// ConVIRT's cross-modal InfoNCE loss of the `[n, d]` embeddings `v` (images) and `u` (texts):
/// rows L2-normalised (`x / max(|x|, 1e-12)`), `S = v' u'^T / tau`, and
/// `(1/n) sum_i [lambda (lse_j S_ij - S_ii) + (1 - lambda) (lse_j S_ji - S_ii)]`.
/// S is streamed a row at a time (columns keep running log-sum-exps), so memory is O(n d).
pub fn infonce(v: &[f64], u: &[f64], n: usize, d: usize, tau: f64, lambda: f64) -> f64 {
    let normalise = |x: &[f64]| -> Vec<f64> {
        x.chunks(d)
            .flat_map(|r| {
                let norm = r.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                r.iter().map(move |a| a / norm)
            })
            .collect()
    };
    let (a, b) = (normalise(v), normalise(u));
    // Per column: (running max, sum of exp(S - max)).
    let mut cols = vec![(f64::NEG_INFINITY, 0.0f64); n];
    let mut total = 0.0;
    let mut diag = vec![0.0; n];
    let mut row = vec![0.0; n];
    for i in 0..n {
        let ai = &a[i * d..(i + 1) * d];
        for (j, s) in row.iter_mut().enumerate() {
            let bj = &b[j * d..(j + 1) * d];
            *s = ai.iter().zip(bj).map(|(x, y)| x * y).sum::<f64>() / tau;
        }
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse_row = m + row.iter().map(|s| (s - m).exp()).sum::<f64>().ln();
        diag[i] = row[i];
        total += lambda * (lse_row - row[i]);
        for (c, &s) in cols.iter_mut().zip(&row) {
            if s > c.0 {
                c.1 = c.1 * (c.0 - s).exp() + 1.0;
                c.0 = s;
            } else {
                c.1 += (s - c.0).exp();
            }
        }
    }
    for (c, s) in cols.iter().zip(&diag) {
        total += (1.0 - lambda) * (c.0 + c.1.ln() - s);
    }
    total / n as f64
}

/// One torch.optim.Adam step on `p` with gradient `g` at step `t` (1-based), updating the
/// moments `m`, `v` in place: L2 weight decay added to the gradient, bias-corrected moments.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    t: u64,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
) {
    let bc1 = 1.0 - b1.powf(t as f64);
    let bc2 = 1.0 - b2.powf(t as f64);
    for i in 0..p.len() {
        let gi = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}

/// Mean classification loss of logits `z` (`[n, c]`): softmax cross-entropy against one class
/// per row (`classes`), or, with `labels` (`[n, c]`, NaN unlabelled), sigmoid binary
/// cross-entropy averaged over the labelled entries (`classification_loss`).
pub fn classification_loss(
    z: &[f64],
    n: usize,
    c: usize,
    classes: Option<&[usize]>,
    labels: Option<&[f64]>,
) -> f64 {
    match (classes, labels) {
        (Some(classes), _) => {
            let mut total = 0.0;
            for (r, &k) in classes.iter().enumerate().take(n) {
                let row = &z[r * c..(r + 1) * c];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                total += lse - row[k];
            }
            total / n as f64
        }
        (None, Some(labels)) => {
            let (mut total, mut count) = (0.0, 0usize);
            for (x, y) in z.iter().zip(labels) {
                if !y.is_nan() {
                    // softplus(x) - y x, with softplus(x) = ln(1 + e^x)
                    total += x.max(0.0) + (-x.abs()).exp().ln_1p() - y * x;
                    count += 1;
                }
            }
            total / count as f64
        }
        (None, None) => panic!("classification_loss: give classes or labels"),
    }
}

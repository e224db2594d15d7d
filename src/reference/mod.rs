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

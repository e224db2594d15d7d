//! Shared test helpers: the test device, random data, error measures, and the gradient check.

use convirt::{Gpu, GpuOptions, Tensor};
use std::sync::{Arc, OnceLock};

/// The device the op tests share. Every buffer it hands out starts as NaN, so an element a
/// kernel forgets to write fails the comparison.
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let opts = GpuOptions {
            poison: true,
            ..GpuOptions::from_env()
        };
        Gpu::new(opts).unwrap_or_else(|e| panic!("the kernel tests need a GPU adapter: {e}"))
    })
    .clone()
}

/// A device of its own whose kernels plan for at most `budget` loop iterations per invocation
/// (see `Gpu::loop_budget`): small budgets split work at small sizes, `usize::MAX` takes the
/// unsplit path a GPU takes, whatever the adapter.
pub fn gpu_with_loop_budget(budget: usize) -> Arc<Gpu> {
    Gpu::new(GpuOptions {
        poison: true,
        quiet: true,
        loop_budget: Some(budget),
        ..GpuOptions::from_env()
    })
    .expect("a device with a loop budget")
}

/// A device of its own with subgroup operations off, so kernels that have a subgroup form
/// (on adapters such as llvmpipe) run their portable one.
pub fn gpu_without_subgroups() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(GpuOptions {
            poison: true,
            quiet: true,
            no_subgroups: true,
            ..GpuOptions::from_env()
        })
        .expect("a device without subgroups")
    })
    .clone()
}

/// A device of the test's own, for tests that count allocations or profile.
pub fn private_gpu(profile: bool) -> Arc<Gpu> {
    let opts = GpuOptions {
        profile,
        quiet: true,
        ..GpuOptions::from_env()
    };
    Gpu::new(opts).unwrap_or_else(|e| panic!("the kernel tests need a GPU adapter: {e}"))
}

/// xorshift64*: deterministic data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    /// `n` values uniform in [lo, hi), already rounded to f32 so the reference sees exactly
    /// what the GPU sees.
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|_| ((lo + (hi - lo) * (self.uniform() + 1.0) / 2.0) as f32) as f64)
            .collect()
    }
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn upload(v: &[f64], shape: &[usize]) -> Tensor {
    upload_to(&gpu(), v, shape)
}

/// [`upload`] to a device of the test's own.
pub fn upload_to(gpu: &Arc<Gpu>, v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, &to_f32(v), shape).expect("upload")
}

/// Relative Frobenius error ||got - want|| / ||want|| (absolute when `want` is all zeros).
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    if got.iter().any(|g| !g.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(
        e < tol,
        "{what}: relative error {e:.3e} over tolerance {tol:.0e} (first values: got {:?}, want {:?})",
        &got[..got.len().min(6)],
        &want[..want.len().min(6)]
    );
}

/// One differentiable input of a gradient check.
pub struct Input {
    pub data: Vec<f64>,
    pub shape: Vec<usize>,
}

pub fn input(data: Vec<f64>, shape: &[usize]) -> Input {
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "test input size"
    );
    Input {
        data,
        shape: shape.to_vec(),
    }
}

/// Checks the GPU backward of `gpu_op` against central finite differences of `reference`.
///
/// The loss is `L = sum(w * op(inputs))` with fixed random weights `w`, so every output
/// element contributes with a different weight. The GPU computes dL/d input by autograd in
/// f32; the reference derivative is `(L(x + h) - L(x - h)) / 2h` in f64 with h = 1e-6, whose
/// truncation and rounding errors (about 1e-10) are far below f32's, so the tolerance measures
/// the GPU alone. 1e-4 leaves room for f32 accumulation over the longer reductions.
#[track_caller]
pub fn check_grad(
    what: &str,
    inputs: &[Input],
    gpu_op: impl Fn(&[Tensor]) -> convirt::Result<Tensor>,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    tol: f64,
) {
    let params: Vec<Tensor> = inputs
        .iter()
        .map(|i| Tensor::param(&gpu(), &to_f32(&i.data), &i.shape).expect("param"))
        .collect();
    let y = gpu_op(&params).expect("forward");
    let mut rng = Rng::new(0xC0FFEE ^ y.numel() as u64);
    let w = rng.vec(y.numel(), -1.0, 1.0);
    let loss = y
        .mul(&upload(&w, y.shape()))
        .expect("mul")
        .sum_all()
        .expect("sum");
    loss.backward().expect("backward");

    let datas: Vec<Vec<f64>> = inputs.iter().map(|i| i.data.clone()).collect();
    let loss_at = |d: &[Vec<f64>]| -> f64 { reference(d).iter().zip(&w).map(|(y, w)| y * w).sum() };
    let h = 1e-6;
    for (n, p) in params.iter().enumerate() {
        let mut fd = Vec::with_capacity(inputs[n].data.len());
        let mut d = datas.clone();
        for e in 0..inputs[n].data.len() {
            let x0 = d[n][e];
            d[n][e] = x0 + h;
            let lp = loss_at(&d);
            d[n][e] = x0 - h;
            let lm = loss_at(&d);
            d[n][e] = x0;
            fd.push((lp - lm) / (2.0 * h));
        }
        let grad = p
            .grad()
            .unwrap_or_else(|| panic!("{what}: input {n} received no gradient"));
        assert_eq!(
            grad.shape(),
            p.shape(),
            "{what}: gradient shape of input {n}"
        );
        assert_close(
            &format!("{what}: d/d input {n}"),
            &grad.to_vec().expect("download"),
            &fd,
            tol,
        );
    }
}

/// The shared fixtures folder: `CONVIRT_FIXTURES`, else `../shared/fixtures` beside the
/// repository (where CI puts it).
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CONVIRT_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
        });
    dir.join(name)
}

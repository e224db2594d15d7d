//! Fused multi-head attention: forward against the f64 reference with and without a key mask
//! (fully padded rows included), backward by finite differences on small shapes and against
//! the analytic reference on shapes of several blocks, the token-major layout against the same
//! references, and the shape errors.

use crate::common::*;
use convirt::ops::attention::{
    attention, attention_tokens, attention_with_tiling, AttentionTiling,
};
use convirt::{reference, Error, Tensor};

struct Case {
    b: usize,
    h: usize,
    t: usize,
    dh: usize,
    scale: f64,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    mask: Option<Vec<f64>>,
    /// Imposed on every kernel instead of the adapter's choice.
    tiling: Option<AttentionTiling>,
    /// Run through `attention_tokens` on [B, T, H * Dh]; the data and the references stay
    /// [B, H, T, Dh] and are permuted on the way in and out.
    tokens: bool,
}

impl Case {
    /// Random q, k, v in [-1, 1) and, when `lens` is given, a mask whose batch element `i` has
    /// `lens[i]` real keys (a suffix of padding, plus a hole at key 1 when long enough).
    fn new(b: usize, h: usize, t: usize, dh: usize, lens: Option<&[usize]>, seed: u64) -> Case {
        let n = b * h * t * dh;
        let mut rng = Rng::new(seed);
        let mask = lens.map(|lens| {
            assert_eq!(lens.len(), b);
            let mut m = vec![0.0; b * t];
            for (i, &len) in lens.iter().enumerate() {
                m[i * t..i * t + len].fill(1.0);
                if len > 3 {
                    m[i * t + 1] = 0.0;
                }
            }
            m
        });
        Case {
            b,
            h,
            t,
            dh,
            scale: 1.0 / (dh as f64).sqrt(),
            q: rng.vec(n, -1.0, 1.0),
            k: rng.vec(n, -1.0, 1.0),
            v: rng.vec(n, -1.0, 1.0),
            mask,
            tiling: None,
            tokens: false,
        }
    }

    fn shape(&self) -> [usize; 4] {
        [self.b, self.h, self.t, self.dh]
    }

    fn name(&self) -> String {
        format!(
            "attention {:?} mask {} tiling {:?} tokens {}",
            self.shape(),
            self.mask.is_some(),
            self.tiling,
            self.tokens
        )
    }

    /// The shape the kernels see.
    fn io_shape(&self) -> Vec<usize> {
        match self.tokens {
            false => self.shape().to_vec(),
            true => vec![self.b, self.t, self.h * self.dh],
        }
    }

    /// [B, H, T, Dh] data in the layout the kernels see.
    fn in_kernel_layout(&self, x: &[f64]) -> Vec<f64> {
        match self.tokens {
            false => x.to_vec(),
            true => reference::permute(x, &self.shape(), &[0, 2, 1, 3]),
        }
    }

    /// The kernels' output in their layout, as [B, H, T, Dh].
    fn in_case_layout(&self, x: &[f32]) -> Vec<f32> {
        if !self.tokens {
            return x.to_vec();
        }
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let tokens = [self.b, self.t, self.h, self.dh];
        to_f32(&reference::permute(&x, &tokens, &[0, 2, 1, 3]))
    }

    fn run(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> convirt::Result<Tensor> {
        let mask = self.mask_tensor();
        let scale = self.scale as f32;
        match (self.tiling, self.tokens) {
            (_, true) => attention_tokens(q, k, v, self.h, mask.as_ref(), scale),
            (Some(t), false) => attention_with_tiling(q, k, v, mask.as_ref(), scale, t),
            (None, false) => attention(q, k, v, mask.as_ref(), scale),
        }
    }

    fn mask_tensor(&self) -> Option<Tensor> {
        self.mask.as_ref().map(|m| upload(m, &[self.b, self.t]))
    }

    fn reference(&self, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
        reference::attention(
            q,
            k,
            v,
            self.mask.as_deref(),
            self.b,
            self.h,
            self.t,
            self.dh,
            self.scale,
        )
    }

    fn forward(&self) -> Vec<f32> {
        let s = self.io_shape();
        let (q, k, v) = (
            upload(&self.in_kernel_layout(&self.q), &s),
            upload(&self.in_kernel_layout(&self.k), &s),
            upload(&self.in_kernel_layout(&self.v), &s),
        );
        let out = self.run(&q, &k, &v).unwrap();
        assert_eq!(out.shape(), s);
        self.in_case_layout(&out.to_vec().unwrap())
    }

    fn check_forward(&self) {
        let got = self.forward();
        let want = self.reference(&self.q, &self.k, &self.v);
        assert_close(&self.name(), &got, &want, 1e-5);
    }

    /// The GPU gradients for the output gradient `dout` (the loss `sum(dout * O)`).
    fn gradients(&self, dout: &[f64]) -> [Vec<f32>; 3] {
        let s = self.io_shape();
        let g = gpu();
        let params: Vec<Tensor> = [&self.q, &self.k, &self.v]
            .iter()
            .map(|x| Tensor::param(&g, &to_f32(&self.in_kernel_layout(x)), &s).unwrap())
            .collect();
        let out = self.run(&params[0], &params[1], &params[2]).unwrap();
        let loss = out
            .mul(&upload(&self.in_kernel_layout(dout), &s))
            .unwrap()
            .sum_all()
            .unwrap();
        loss.backward().unwrap();
        [0, 1, 2].map(|i| self.in_case_layout(&params[i].grad().unwrap().to_vec().unwrap()))
    }

    /// Backward against the analytic f64 gradients.
    fn check_backward(&self, seed: u64) {
        let dout = Rng::new(seed).vec(self.q.len(), -1.0, 1.0);
        let got = self.gradients(&dout);
        let (dq, dk, dv) = reference::attention_backward(
            &self.q,
            &self.k,
            &self.v,
            self.mask.as_deref(),
            &dout,
            self.b,
            self.h,
            self.t,
            self.dh,
            self.scale,
        );
        for (name, got, want) in [
            ("dq", &got[0], dq),
            ("dk", &got[1], dk),
            ("dv", &got[2], dv),
        ] {
            assert_close(&format!("{} {name}", self.name()), got, &want, 1e-4);
        }
    }
}

#[test]
fn attention_forward_matches_the_reference() {
    let shapes: [(usize, usize, usize, usize, &[usize]); 4] = [
        (1, 1, 1, 32, &[1]),
        (2, 3, 7, 64, &[5, 1]),
        (1, 2, 130, 32, &[97]),
        (2, 12, 33, 64, &[33, 1]),
    ];
    for (i, (b, h, t, dh, lens)) in shapes.into_iter().enumerate() {
        Case::new(b, h, t, dh, None, i as u64).check_forward();
        Case::new(b, h, t, dh, Some(lens), 10 + i as u64).check_forward();
    }
}

#[test]
fn attention_forward_large_scores_and_other_head_dims() {
    // Scores up to +-30 across three key blocks: the running max must be rescaled correctly.
    let mut c = Case::new(2, 2, 150, 32, Some(&[150, 61]), 20);
    c.scale = 5.0;
    c.check_forward();
    // Head dimensions whose quarter is odd or small take narrower tilings; 128 a wide one.
    for (dh, t) in [(4, 9), (8, 70), (36, 19), (128, 45)] {
        Case::new(2, 2, t, dh, Some(&[t, t / 2]), dh as u64).check_forward();
    }
}

#[test]
fn attention_forward_long_sequence() {
    Case::new(1, 2, 512, 64, Some(&[475]), 30).check_forward();
}

#[test]
fn attention_fully_padded_rows_are_zero_without_nan() {
    let c = Case::new(3, 2, 9, 32, Some(&[9, 0, 4]), 40);
    let got = c.forward();
    assert!(
        got.iter().all(|x| x.is_finite()),
        "NaN or inf in the output"
    );
    let per_batch = c.h * c.t * c.dh;
    assert!(
        got[per_batch..2 * per_batch].iter().all(|&x| x == 0.0),
        "a batch element with every key padded must give 0"
    );
    assert_close(&c.name(), &got, &c.reference(&c.q, &c.k, &c.v), 1e-5);
    let dout = Rng::new(41).vec(c.q.len(), -1.0, 1.0);
    for (i, grad) in c.gradients(&dout).iter().enumerate() {
        assert!(
            grad.iter().all(|x| x.is_finite()),
            "input {i}: NaN gradient"
        );
        assert!(
            grad[per_batch..2 * per_batch]
                .iter()
                .all(|&x| x.abs() < 1e-30),
            "input {i}: a fully padded batch element must get no gradient"
        );
    }
    c.check_backward(42);
}

#[test]
fn attention_backward_by_finite_differences() {
    for (b, h, t, dh, lens) in [(1, 2, 5, 32, Some(&[3][..])), (2, 1, 9, 64, None)] {
        let c = Case::new(b, h, t, dh, lens, (t * dh) as u64);
        let mask = c.mask_tensor();
        let scale = c.scale as f32;
        check_grad(
            &c.name(),
            &[
                input(c.q.clone(), &c.shape()),
                input(c.k.clone(), &c.shape()),
                input(c.v.clone(), &c.shape()),
            ],
            |x| attention(&x[0], &x[1], &x[2], mask.as_ref(), scale),
            |d| c.reference(&d[0], &d[1], &d[2]),
            1e-4,
        );
    }
}

#[test]
fn attention_backward_over_several_blocks() {
    Case::new(2, 3, 130, 32, Some(&[130, 77]), 50).check_backward(51);
    Case::new(1, 2, 200, 64, None, 52).check_backward(53);
}

#[test]
fn attention_every_tiling_forward_and_backward() {
    // Each adapter kind runs only its own tilings; impose the others (Dh = 48 fits them all).
    for tiling in AttentionTiling::ALL {
        let mut c = Case::new(2, 3, 37, 48, Some(&[37, 12]), 70);
        c.tiling = Some(tiling);
        c.check_forward();
        c.check_backward(71);
    }
}

#[test]
fn attention_on_token_major_inputs_forward_and_backward() {
    // [B, T, H * Dh] as the projections give it: the same results as [B, H, T, Dh], with
    // awkward lengths, a single token, a padded batch element and several blocks of rows.
    let shapes = [
        (1, 1, 1, 32, None),
        (2, 3, 37, 48, Some(&[37, 12][..])),
        (3, 2, 9, 32, Some(&[9, 0, 4][..])),
        (2, 12, 70, 64, Some(&[70, 33][..])),
    ];
    for (i, (b, h, t, dh, lens)) in shapes.into_iter().enumerate() {
        let mut c = Case::new(b, h, t, dh, lens, 90 + i as u64);
        c.tokens = true;
        c.check_forward();
        c.check_backward(95 + i as u64);
    }
    let g = gpu();
    let q = Tensor::zeros(&g, &[2, 5, 24]).unwrap();
    let err = attention_tokens(&q, &q, &q, 5, None, 1.0).unwrap_err();
    assert!(
        err.to_string()
            .contains("[batch, tokens, heads * head dim] with 5 heads"),
        "{err}"
    );
}

#[test]
fn attention_backward_is_deterministic() {
    let c = Case::new(2, 2, 70, 32, Some(&[70, 40]), 60);
    let dout = Rng::new(61).vec(c.q.len(), -1.0, 1.0);
    assert_eq!(c.gradients(&dout), c.gradients(&dout));
}

#[test]
fn attention_rejects_bad_shapes() {
    let g = gpu();
    let q = Tensor::zeros(&g, &[2, 3, 5, 8]).unwrap();
    let k = Tensor::zeros(&g, &[2, 3, 6, 8]).unwrap();
    let err = attention(&q, &k, &q, None, 1.0).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "attention", lhs, rhs, .. }
            if lhs == &[2, 3, 5, 8] && rhs == &[2, 3, 6, 8]),
        "{err}"
    );
    let err = attention(&q, &q, &k, None, 1.0).unwrap_err();
    assert!(err.to_string().contains("v must have q's shape"), "{err}");
    let mask = Tensor::zeros(&g, &[2, 6]).unwrap();
    let err = attention(&q, &q, &q, Some(&mask), 1.0).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "attention mask", rhs, .. } if rhs == &[2, 6]),
        "{err}"
    );
    let flat = Tensor::zeros(&g, &[6, 5, 8]).unwrap();
    let err = attention(&flat, &flat, &flat, None, 1.0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                op: "attention",
                ..
            }
        ),
        "{err}"
    );
    let odd = Tensor::zeros(&g, &[1, 1, 4, 6]).unwrap();
    let err = attention(&odd, &odd, &odd, None, 1.0).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { op: "attention", why } if why.contains("head dimension 6")),
        "{err}"
    );
}

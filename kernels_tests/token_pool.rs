//! Masked max and mean pooling over tokens, forward and backward.

use crate::common::*;
use convirt::{reference, Error, Tensor};

/// A mask for `[b, t]`: sequence `s` has `len(s)` real tokens then padding; with `b >= 3`,
/// sequence 1 is all padding.
fn padding_mask(b: usize, t: usize) -> Vec<f64> {
    let mut m = vec![0.0; b * t];
    for s in 0..b {
        let len = if b >= 3 && s == 1 { 0 } else { t - (s * 3) % t };
        for k in 0..len {
            m[s * t + k] = 1.0;
        }
    }
    m
}

/// `n` distinct values in [-1, 1), at least 2 / n apart, in random order: no tie is crossed by
/// the finite differences.
fn distinct(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(f64, usize)> = (0..n).map(|i| (rng.uniform(), i)).collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed
        .iter()
        .map(|&(_, i)| ((i as f64 / n as f64 * 2.0 - 1.0) as f32) as f64)
        .collect()
}

#[test]
fn masked_pooling_forward_awkward_shapes() {
    for (b, t, d) in [
        (1, 1, 1),
        (1, 1, 7),
        (2, 5, 384),
        (3, 7, 768),
        (4, 9, 1000),
        (1, 128, 64),
        (33, 4, 3),
    ] {
        let mut rng = Rng::new((b * 100 + t * 10 + d) as u64);
        // Negative real values and huge padded ones: a max that counted padding, or started
        // from 0, would be wrong.
        let mask = padding_mask(b, t);
        let x: Vec<f64> = rng
            .vec(b * t * d, -3.0, -1.0)
            .iter()
            .enumerate()
            .map(|(i, &v)| if mask[i / d] != 0.0 { v } else { 1e30 })
            .collect();
        let (xt, mt) = (upload(&x, &[b, t, d]), upload(&mask, &[b, t]));
        let what = format!("[{b}, {t}, {d}]");
        let mx = xt.masked_max_pool(&mt).unwrap();
        assert_eq!(mx.shape(), [b, d]);
        let mx = mx.to_vec().unwrap();
        assert_close(
            &format!("masked_max_pool {what}"),
            &mx,
            &reference::masked_max_pool(&x, &mask, b, t, d),
            1e-7,
        );
        let mean = xt.masked_mean_pool(&mt).unwrap().to_vec().unwrap();
        assert_close(
            &format!("masked_mean_pool {what}"),
            &mean,
            &reference::masked_mean_pool(&x, &mask, b, t, d),
            1e-6,
        );
        if b >= 3 {
            // Sequence 1 has no real token: zeros, not NaN or -inf.
            assert!(mx[d..2 * d].iter().all(|&v| v == 0.0), "max {what}");
            assert!(mean[d..2 * d].iter().all(|&v| v == 0.0), "mean {what}");
        }
    }
}

#[test]
fn masked_max_pool_backward() {
    for (b, t, d) in [(1, 1, 1), (3, 5, 7), (2, 4, 70)] {
        let mask = padding_mask(b, t);
        let m = upload(&mask, &[b, t]);
        check_grad(
            &format!("masked_max_pool [{b}, {t}, {d}]"),
            &[input(distinct(b * t * d, d as u64), &[b, t, d])],
            |x| x[0].masked_max_pool(&m),
            |x| reference::masked_max_pool(&x[0], &mask, b, t, d),
            1e-4,
        );
    }
}

#[test]
fn masked_max_pool_ties_send_the_gradient_to_the_first_token() {
    let g = gpu();
    // One sequence, 3 tokens (the last padding, and larger), 2 features tied at 5.
    let x = Tensor::param(&g, &[5.0, 1.0, 5.0, 2.0, 9.0, 9.0], &[1, 3, 2]).unwrap();
    let m = upload(&[1.0, 1.0, 0.0], &[1, 3]);
    let y = x.masked_max_pool(&m).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![5.0, 2.0]);
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        x.grad().unwrap().to_vec().unwrap(),
        vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn masked_mean_pool_backward() {
    for (b, t, d) in [(1, 1, 1), (3, 5, 7), (2, 4, 70)] {
        let mask = padding_mask(b, t);
        let m = upload(&mask, &[b, t]);
        check_grad(
            &format!("masked_mean_pool [{b}, {t}, {d}]"),
            &[input(Rng::new(3).vec(b * t * d, -1.0, 1.0), &[b, t, d])],
            |x| x[0].masked_mean_pool(&m),
            |x| reference::masked_mean_pool(&x[0], &mask, b, t, d),
            1e-4,
        );
    }
}

#[test]
fn masked_pooling_rejects_mismatched_masks() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4]).unwrap();
    let bad = Tensor::zeros(&g, &[2, 4]).unwrap();
    for err in [
        x.masked_max_pool(&bad).unwrap_err(),
        x.masked_mean_pool(&bad).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Shape { lhs, rhs, .. } if lhs == &[2, 3, 4] && rhs == &[2, 4]),
            "{err}"
        );
        assert!(err.to_string().contains("masked_"), "{err}");
    }
    let flat = Tensor::zeros(&g, &[6, 4]).unwrap();
    let err = flat.masked_max_pool(&bad).unwrap_err();
    assert!(err.to_string().contains("[B, T, D]"), "{err}");
}

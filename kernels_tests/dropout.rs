//! Inverted dropout with a counter-based mask: statistics, reproducibility, exact scaling and
//! the regenerated mask of the backward.

use crate::common::*;
use convirt::{reference, Error, Tensor};

const N: usize = 100_000;

/// Whether each element was kept (dropout of all-nonzero data).
fn kept(p: f32, seed: u64, x: &Tensor) -> Vec<bool> {
    let y = x.dropout(p, seed).unwrap().to_vec().unwrap();
    y.iter().map(|&v| v != 0.0).collect()
}

fn ones(n: usize) -> Tensor {
    Tensor::full(&gpu(), &[n], 1.0).unwrap()
}

#[test]
fn dropout_keeps_about_one_minus_p() {
    let x = ones(N);
    for p in [0.1f32, 0.5, 0.9] {
        for seed in [0, 1, 0xDEAD_BEEF] {
            let k = kept(p, seed, &x).iter().filter(|&&b| b).count() as f64 / N as f64;
            let q = 1.0 - p as f64;
            let sigma = (q * (1.0 - q) / N as f64).sqrt();
            assert!(
                (k - q).abs() < 5.0 * sigma,
                "p {p} seed {seed}: kept {k}, expected {q} +- {sigma:.1e}"
            );
        }
    }
}

#[test]
fn dropout_mask_matches_the_reference_hash() {
    let x = ones(10_007);
    for (p, seed) in [(0.1f32, 42u64), (0.5, 0), (0.3, u64::MAX)] {
        let want: Vec<bool> = (0..10_007u32)
            .map(|i| reference::dropout_keeps(p as f64, seed, i))
            .collect();
        assert_eq!(kept(p, seed, &x), want, "p {p} seed {seed}");
    }
}

#[test]
fn dropout_same_seed_same_mask_other_seed_independent() {
    let x = ones(N);
    let p = 0.5;
    let a = kept(p, 7, &x);
    assert_eq!(a, kept(p, 7, &x), "the same seed must give the same mask");
    // Nearby seeds give unrelated masks: dropped in both about p^2 of the time.
    for other in [8, 7 + (1 << 32), 1 << 63] {
        let b = kept(p, other, &x);
        assert_ne!(a, b, "seeds 7 and {other}");
        let both = a.iter().zip(&b).filter(|(x, y)| !**x && !**y).count() as f64 / N as f64;
        let q = (p * p) as f64;
        let sigma = (q * (1.0 - q) / N as f64).sqrt();
        assert!(
            (both - q).abs() < 5.0 * sigma,
            "seeds 7 and {other}: dropped in both {both}, expected {q}"
        );
    }
}

#[test]
fn dropout_kept_values_are_scaled_exactly() {
    let xs = Rng::new(5).vec(4099, 0.5, 1.5);
    let x = upload(&xs, &[4099]);
    for p in [0.5f32, 0.75, 0.1, 0.3] {
        let y = x.dropout(p, 11).unwrap().to_vec().unwrap();
        let scale = 1.0 / (1.0 - p);
        for (i, (&got, &v)) in y.iter().zip(&xs).enumerate() {
            if got != 0.0 {
                // What the kernel computes, bit for bit...
                assert_eq!(got, v as f32 * scale, "p {p}, element {i}");
                // ... which is x / (1 - p), exactly so when 1 - p is a power of two.
                if p == 0.5 || p == 0.75 {
                    assert_eq!(got as f64, v / (1.0 - p as f64), "p {p}, element {i}");
                }
            }
        }
        assert_close(
            &format!("dropout p {p}"),
            &y,
            &reference::dropout(&xs, p as f64, 11),
            1e-6,
        );
    }
}

#[test]
fn dropout_with_p_zero_is_the_identity() {
    let xs = Rng::new(6).vec(37, -1.0, 1.0);
    let x = upload(&xs, &[37]);
    assert_eq!(x.dropout(0.0, 3).unwrap().to_vec().unwrap(), to_f32(&xs));
    check_grad(
        "dropout p 0",
        &[input(xs.clone(), &[37])],
        |t| t[0].dropout(0.0, 3),
        |d| d[0].clone(),
        1e-4,
    );
}

#[test]
fn dropout_backward_regenerates_the_mask() {
    for (p, seed) in [(0.3f32, 7u64), (0.5, 123_456_789)] {
        let xs = Rng::new(seed).vec(4 * 37, -1.0, 1.0);
        check_grad(
            &format!("dropout p {p}"),
            &[input(xs, &[4, 37])],
            |t| t[0].dropout(p, seed),
            |d| reference::dropout(&d[0], p as f64, seed),
            1e-4,
        );
    }
}

#[test]
fn dropout_rejects_probabilities_outside_zero_one() {
    let x = ones(4);
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        let err = x.dropout(p, 0).unwrap_err();
        assert!(matches!(err, Error::Invalid { op: "dropout", .. }), "{err}");
    }
}

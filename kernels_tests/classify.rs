//! The fused classification losses of linear probes (softmax cross-entropy, masked sigmoid
//! binary cross-entropy): forward against the f64 reference, gradients by central finite
//! differences, errors.

use crate::common::*;
use convirt::ops::classify::{classification_loss, Targets};
use convirt::{reference, Error};

/// Logits spread over [-6, 6] (saturated sigmoids included), rounded to f32.
fn logits(n: usize, c: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    rng.vec(n * c, -6.0, 6.0)
        .iter()
        .map(|&x| (x as f32) as f64)
        .collect()
}

fn classes(n: usize, c: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.uniform() * c as f64) as usize % c)
        .collect()
}

/// 0, 1 or NaN (unlabelled, about one in five).
fn labels(n: usize, c: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n * c)
        .map(|_| match (rng.uniform() + 1.0) / 2.0 {
            u if u < 0.2 => f64::NAN,
            u if u < 0.6 => 1.0,
            _ => 0.0,
        })
        .collect()
}

// (N, C): a single row, binary, awkward sizes, more rows than a workgroup, many workgroups.
const SHAPES: [(usize, usize); 6] = [(1, 1), (1, 3), (5, 2), (63, 7), (65, 5), (1000, 9)];

#[test]
fn softmax_cross_entropy_matches_reference() {
    for (i, &(n, c)) in SHAPES.iter().enumerate() {
        let z = logits(n, c, i as u64);
        let k = classes(n, c, 100 + i as u64);
        let got = classification_loss(&upload(&z, &[n, c]), Targets::Classes(&k))
            .unwrap()
            .item()
            .unwrap();
        let want = reference::classification_loss(&z, n, c, Some(&k), None);
        assert_close(&format!("softmax CE {n}x{c}"), &[got], &[want], 1e-5);
    }
}

#[test]
fn sigmoid_cross_entropy_matches_reference() {
    for (i, &(n, c)) in SHAPES.iter().enumerate().skip(1) {
        let z = logits(n, c, 10 + i as u64);
        let mut y = labels(n, c, 200 + i as u64);
        y[0] = 1.0; // at least one labelled entry
        let got = classification_loss(&upload(&z, &[n, c]), Targets::MultiLabel(&to_f32(&y)))
            .unwrap()
            .item()
            .unwrap();
        let want = reference::classification_loss(&z, n, c, None, Some(&y));
        assert_close(&format!("sigmoid BCE {n}x{c}"), &[got], &[want], 1e-5);
    }
}

#[test]
fn classification_loss_gradients_match_finite_differences() {
    for &(n, c) in &[(1, 3), (7, 5), (70, 4)] {
        let z = logits(n, c, 7);
        let k = classes(n, c, 8);
        check_grad(
            &format!("softmax CE {n}x{c}"),
            &[input(z.clone(), &[n, c])],
            |x| classification_loss(&x[0], Targets::Classes(&k)),
            |d| vec![reference::classification_loss(&d[0], n, c, Some(&k), None)],
            1e-4,
        );
        let mut y = labels(n, c, 9);
        y[0] = 0.0;
        let y32 = to_f32(&y);
        check_grad(
            &format!("sigmoid BCE {n}x{c}"),
            &[input(z, &[n, c])],
            |x| classification_loss(&x[0], Targets::MultiLabel(&y32)),
            |d| vec![reference::classification_loss(&d[0], n, c, None, Some(&y))],
            1e-4,
        );
    }
}

#[test]
fn classification_loss_rejects_bad_targets() {
    let z = upload(&logits(4, 3, 1), &[4, 3]);
    let invalid = |r: convirt::Result<convirt::Tensor>| matches!(r, Err(Error::Invalid { .. }));
    let shape = |r: convirt::Result<convirt::Tensor>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape(classification_loss(&z, Targets::Classes(&[0, 1]))));
    assert!(invalid(classification_loss(
        &z,
        Targets::Classes(&[0, 1, 2, 3])
    )));
    assert!(invalid(classification_loss(
        &z,
        Targets::MultiLabel(&[0.5; 12])
    )));
    assert!(invalid(classification_loss(
        &z,
        Targets::MultiLabel(&[f32::NAN; 12])
    )));
    assert!(shape(classification_loss(
        &z,
        Targets::MultiLabel(&[1.0; 11])
    )));
}

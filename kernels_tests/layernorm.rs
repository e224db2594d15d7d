//! Layer normalisation over the last axis, forward and backward.

use crate::common::*;
use convirt::{no_grad, reference, Error, Tensor};

#[test]
fn layer_norm_forward_awkward_rows() {
    // Rows of 1 (zero variance: the output is the bias), 7, 384, 768 and 1000 elements; one
    // row, a few, and many; an offset mean that E[x^2] - mean^2 would cancel.
    for (rows, cols, offset) in [
        (1, 1, 0.0),
        (5, 1, 3.0),
        (3, 7, 0.0),
        (1000, 7, 10.0),
        (1, 384, 0.0),
        (4, 768, 10.0),
        (257, 768, 0.0),
        (2, 1000, -5.0),
    ] {
        let mut rng = Rng::new((rows * 31 + cols) as u64);
        let x = rng.vec(rows * cols, offset - 2.0, offset + 2.0);
        let w = rng.vec(cols, 0.5, 1.5);
        let b = rng.vec(cols, -0.5, 0.5);
        for eps in [1e-12, 1e-5] {
            let y = upload(&x, &[rows, cols])
                .layer_norm(&upload(&w, &[cols]), &upload(&b, &[cols]), eps as f32)
                .unwrap();
            assert_eq!(y.shape(), [rows, cols]);
            assert_close(
                &format!("layer_norm {rows}x{cols} offset {offset} eps {eps}"),
                &y.to_vec().unwrap(),
                &reference::layer_norm(&x, cols, &w, &b, (eps as f32) as f64),
                2e-5,
            );
        }
    }
}

#[test]
fn layer_norm_normalises_the_last_axis_of_any_rank() {
    let (shape, cols) = ([2, 3, 5, 11], 11);
    let x = Rng::new(9).vec(2 * 3 * 5 * 11, -3.0, 3.0);
    let w = Rng::new(10).vec(cols, -1.0, 1.0);
    let b = Rng::new(11).vec(cols, -1.0, 1.0);
    let y = no_grad(|| {
        upload(&x, &shape).layer_norm(&upload(&w, &[cols]), &upload(&b, &[cols]), 1e-12)
    })
    .unwrap();
    assert_eq!(y.shape(), shape);
    assert_close(
        "layer_norm rank 4",
        &y.to_vec().unwrap(),
        &reference::layer_norm(&x, cols, &w, &b, 1e-12f32 as f64),
        1e-5,
    );
}

#[test]
fn layer_norm_backward() {
    // [130, 5] and [130, 8] split the weight and bias gradients over several row chunks, read
    // one element and one vec4 at a time; [2, 100] has rows longer than a workgroup.
    for (rows, cols) in [(3, 7), (130, 5), (130, 8), (2, 100), (4, 1)] {
        let mut rng = Rng::new((rows * 7 + cols) as u64);
        let x = rng.vec(rows * cols, -2.0, 2.0);
        let w = rng.vec(cols, 0.5, 1.5);
        let b = rng.vec(cols, -0.5, 0.5);
        check_grad(
            &format!("layer_norm {rows}x{cols}"),
            &[
                input(x, &[rows, cols]),
                input(w, &[cols]),
                input(b, &[cols]),
            ],
            |t| t[0].layer_norm(&t[1], &t[2], 1e-5),
            |d| reference::layer_norm(&d[0], cols, &d[1], &d[2], 1e-5f32 as f64),
            1e-4,
        );
    }
}

#[test]
fn layer_norm_backward_with_frozen_parameters() {
    let (rows, cols) = (6, 9);
    let x = Rng::new(1).vec(rows * cols, -2.0, 2.0);
    let w = Rng::new(2).vec(cols, 0.5, 1.5);
    let b = Rng::new(3).vec(cols, -0.5, 0.5);
    let (wt, bt) = (upload(&w, &[cols]), upload(&b, &[cols]));
    check_grad(
        "layer_norm, weight and bias frozen",
        &[input(x, &[rows, cols])],
        |t| t[0].layer_norm(&wt, &bt, 1e-5),
        |d| reference::layer_norm(&d[0], cols, &w, &b, 1e-5f32 as f64),
        1e-4,
    );
}

#[test]
fn layer_norm_rejects_mismatched_weight_and_bias() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 4]).unwrap();
    let ok = Tensor::zeros(&g, &[4]).unwrap();
    let bad = Tensor::zeros(&g, &[3]).unwrap();
    let err = x.layer_norm(&bad, &ok, 1e-12).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "layer_norm", lhs, rhs, .. } if lhs == &[2, 4] && rhs == &[3]),
        "{err}"
    );
    assert!(err.to_string().contains("weight"), "{err}");
    let err = x.layer_norm(&ok, &bad, 1e-12).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

//! Batch normalisation: training and evaluation forward on awkward shapes, the in-place
//! running-statistics update, every backward by finite differences, and the shape errors.

use crate::common::*;
use convirt::{reference, Error, Tensor};

/// N = 1 and C = 1 with an odd plane; a channel of 969 values, several trips of the
/// reduction's stride loop; `[N, C]` input; a 1 x 1 plane; planes of a multiple of 4 (the
/// maps take 4 elements per invocation), one smaller than the reduction's stride (its walk
/// crosses images in one step), and planes of a multiple of 16 (the maps take four vec4s per
/// invocation).
const SHAPES: [&[usize]; 8] = [
    &[1, 1, 7, 5],
    &[3, 5, 17, 19],
    &[6, 4],
    &[4, 3, 1, 1],
    &[2, 3, 33, 31],
    &[2, 3, 12, 10],
    &[5, 2, 2, 3],
    &[3, 2, 8, 6],
];
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

struct Case {
    x: Vec<f64>,
    weight: Vec<f64>,
    bias: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
}

fn case(shape: &[usize], seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let c = shape[1];
    Case {
        // Off-centre data: a mean of about 1 against a spread of 2.
        x: rng.vec(n, -0.5, 2.5),
        weight: rng.vec(c, 0.5, 1.5),
        bias: rng.vec(c, -0.5, 0.5),
        running_mean: rng.vec(c, -0.5, 0.5),
        running_var: rng.vec(c, 0.5, 2.0),
    }
}

#[test]
fn train_forward_and_running_statistics() {
    for (s, shape) in SHAPES.iter().enumerate() {
        let k = case(shape, s as u64);
        let c = shape[1];
        let rm = upload(&k.running_mean, &[c]);
        let rv = upload(&k.running_var, &[c]);
        let y = upload(&k.x, shape)
            .batch_norm_train(
                &upload(&k.weight, &[c]),
                &upload(&k.bias, &[c]),
                &rm,
                &rv,
                MOMENTUM as f32,
                EPS as f32,
            )
            .unwrap();
        let (want, mean, var) = reference::batch_norm_train(&k.x, shape, &k.weight, &k.bias, EPS);
        assert_close(
            &format!("train y {shape:?}"),
            &y.to_vec().unwrap(),
            &want,
            1e-5,
        );
        // The fused ReLU: the same normalisation, clamped (its running statistics are
        // updated on copies, so the checks below still see one update).
        let (rm2, rv2) = (upload(&k.running_mean, &[c]), upload(&k.running_var, &[c]));
        let y_relu = upload(&k.x, shape)
            .batch_norm_train_relu(
                &upload(&k.weight, &[c]),
                &upload(&k.bias, &[c]),
                &rm2,
                &rv2,
                MOMENTUM as f32,
                EPS as f32,
            )
            .unwrap();
        let want_relu: Vec<f64> = want.iter().map(|v| v.max(0.0)).collect();
        assert_close(
            &format!("train relu y {shape:?}"),
            &y_relu.to_vec().unwrap(),
            &want_relu,
            1e-5,
        );
        let blend = |old: &[f64], new: &[f64]| -> Vec<f64> {
            old.iter()
                .zip(new)
                .map(|(o, n)| (1.0 - MOMENTUM) * o + MOMENTUM * n)
                .collect()
        };
        assert_close(
            &format!("running mean {shape:?}"),
            &rm.to_vec().unwrap(),
            &blend(&k.running_mean, &mean),
            1e-6,
        );
        assert_close(
            &format!("running var {shape:?}"),
            &rv.to_vec().unwrap(),
            &blend(&k.running_var, &var),
            1e-6,
        );
    }
}

#[test]
fn train_statistics_survive_a_large_mean_and_an_outlier() {
    // A mean of 50 against a spread of 0.6: E[x^2] - mean^2 would lose the variance to
    // cancellation (about 5e-4 of it in f32), and the first element of channel 0, from which
    // the one-pass sums measure their deviations, lies 30 away from the rest.
    for shape in [&[3, 2, 17, 20][..], &[2, 2, 9, 7]] {
        let mut k = case(shape, 11);
        for v in k.x.iter_mut() {
            *v = (50.0 + (*v - 1.0) / 2.0) as f32 as f64;
        }
        k.x[0] = 80.0;
        let c = shape[1];
        let y = upload(&k.x, shape)
            .batch_norm_train(
                &upload(&k.weight, &[c]),
                &upload(&k.bias, &[c]),
                &upload(&k.running_mean, &[c]),
                &upload(&k.running_var, &[c]),
                MOMENTUM as f32,
                EPS as f32,
            )
            .unwrap();
        let (want, _, _) = reference::batch_norm_train(&k.x, shape, &k.weight, &k.bias, EPS);
        assert_close(
            &format!("train y, mean 50, {shape:?}"),
            &y.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }
}

#[test]
fn eval_forward_with_and_without_relu() {
    for (s, shape) in SHAPES.iter().enumerate() {
        let k = case(shape, 10 + s as u64);
        let c = shape[1];
        let t = upload(&k.x, shape);
        let args = [&k.weight, &k.bias, &k.running_mean, &k.running_var].map(|v| upload(v, &[c]));
        for relu in [false, true] {
            let y = if relu {
                t.batch_norm_eval_relu(&args[0], &args[1], &args[2], &args[3], EPS as f32)
            } else {
                t.batch_norm_eval(&args[0], &args[1], &args[2], &args[3], EPS as f32)
            }
            .unwrap();
            let want = reference::batch_norm_eval(
                &k.x,
                shape,
                &k.weight,
                &k.bias,
                &k.running_mean,
                &k.running_var,
                EPS,
                relu,
            );
            assert_close(
                &format!("eval relu={relu} {shape:?}"),
                &y.to_vec().unwrap(),
                &want,
                1e-5,
            );
        }
        // Evaluation leaves the running statistics alone.
        assert_eq!(args[2].to_vec().unwrap(), to_f32(&k.running_mean));
        assert_eq!(args[3].to_vec().unwrap(), to_f32(&k.running_var));
    }
}

#[test]
fn train_backward() {
    // With the fused ReLU too: the mask moves only if a pre-activation is within about 1e-6
    // of zero, which these fixed inputs are not (the check would fail loudly if it were).
    for relu in [false, true] {
        for shape in [&[2, 3, 4, 5][..], &[6, 4], &[3, 2, 7, 9], &[2, 2, 4, 4]] {
            let k = case(shape, 20);
            let c = shape[1];
            let (rm, rv) = (upload(&k.running_mean, &[c]), upload(&k.running_var, &[c]));
            let shape_ = shape.to_vec();
            check_grad(
                &format!("batch_norm_train relu={relu} {shape:?}"),
                &[
                    input(k.x, shape),
                    input(k.weight, &[c]),
                    input(k.bias, &[c]),
                ],
                |t| {
                    let (m, e) = (MOMENTUM as f32, EPS as f32);
                    if relu {
                        t[0].batch_norm_train_relu(&t[1], &t[2], &rm, &rv, m, e)
                    } else {
                        t[0].batch_norm_train(&t[1], &t[2], &rm, &rv, m, e)
                    }
                },
                |d| {
                    let y = reference::batch_norm_train(&d[0], &shape_, &d[1], &d[2], EPS).0;
                    y.into_iter()
                        .map(|v| if relu { v.max(0.0) } else { v })
                        .collect()
                },
                1e-4,
            );
        }
    }
}

#[test]
fn eval_backward_with_and_without_relu() {
    // Planes of 20 and 32 elements: one vec4 and four vec4s per invocation.
    for shape in [[2, 3, 4, 5], [2, 3, 4, 8]] {
        let c = shape[1];
        let mut k = case(&shape, 30);
        // Finite differences cannot cross the ReLU's kink: move every pre-activation at least
        // 0.1 away from it (weights are at least 0.5, so the nudge stays small).
        let pre = reference::batch_norm_eval(
            &k.x,
            &shape,
            &k.weight,
            &k.bias,
            &k.running_mean,
            &k.running_var,
            EPS,
            false,
        );
        for (i, v) in pre.iter().enumerate() {
            if v.abs() < 0.1 {
                let ch = (i / (shape[2] * shape[3])) % c;
                let step = 0.2 * (k.running_var[ch] + EPS).sqrt() / k.weight[ch];
                k.x[i] = ((k.x[i] + step.copysign(*v)) as f32) as f64;
            }
        }
        let (rm, rv) = (upload(&k.running_mean, &[c]), upload(&k.running_var, &[c]));
        for relu in [false, true] {
            check_grad(
                &format!("batch_norm_eval relu={relu} {shape:?}"),
                &[
                    input(k.x.clone(), &shape),
                    input(k.weight.clone(), &[c]),
                    input(k.bias.clone(), &[c]),
                ],
                |t| {
                    if relu {
                        t[0].batch_norm_eval_relu(&t[1], &t[2], &rm, &rv, EPS as f32)
                    } else {
                        t[0].batch_norm_eval(&t[1], &t[2], &rm, &rv, EPS as f32)
                    }
                },
                |d| {
                    reference::batch_norm_eval(
                        &d[0],
                        &shape,
                        &d[1],
                        &d[2],
                        &k.running_mean,
                        &k.running_var,
                        EPS,
                        relu,
                    )
                },
                1e-4,
            );
        }
    }
}

#[test]
fn eval_backward_to_the_input_alone() {
    // A frozen affine: only dx is asked for, the per-channel reduction is skipped.
    let shape = [3, 2, 5, 3];
    let k = case(&shape, 40);
    let args = [&k.weight, &k.bias, &k.running_mean, &k.running_var].map(|v| upload(v, &[2]));
    check_grad(
        "batch_norm_eval, frozen weight and bias",
        &[input(k.x.clone(), &shape)],
        |t| t[0].batch_norm_eval(&args[0], &args[1], &args[2], &args[3], EPS as f32),
        |d| {
            reference::batch_norm_eval(
                &d[0],
                &shape,
                &k.weight,
                &k.bias,
                &k.running_mean,
                &k.running_var,
                EPS,
                false,
            )
        },
        1e-4,
    );
}

#[test]
fn wrong_shapes_name_batch_norm_and_both_shapes() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4, 4]).unwrap();
    let ok = Tensor::zeros(&g, &[3]).unwrap();
    let bad = Tensor::zeros(&g, &[4]).unwrap();
    let err = x
        .batch_norm_train(&bad, &ok, &ok, &ok, 0.1, 1e-5)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "batch_norm", lhs, rhs, .. } if lhs == &[2, 3, 4, 4] && rhs == &[4]),
        "{err}"
    );
    assert!(err.to_string().contains("weight"), "{err}");
    let err = x.batch_norm_eval(&ok, &ok, &ok, &bad, 1e-5).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "batch_norm", rhs, .. } if rhs == &[4]),
        "{err}"
    );
    let x3 = Tensor::zeros(&g, &[2, 3, 4]).unwrap();
    let err = x3
        .batch_norm_eval_relu(&ok, &ok, &ok, &ok, 1e-5)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "batch_norm", lhs, .. } if lhs == &[2, 3, 4]),
        "{err}"
    );
    // One value per channel has no variance to normalise by (PyTorch refuses it too).
    let one = Tensor::zeros(&g, &[1, 3]).unwrap();
    let err = one
        .batch_norm_train(&ok, &ok, &ok, &ok, 0.1, 1e-5)
        .unwrap_err();
    assert!(err.to_string().contains("batch_norm"), "{err}");
}

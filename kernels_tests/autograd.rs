//! The tape: accumulation, shared subexpressions, frozen parameters, no_grad, buffer reuse.

use crate::common::*;
use convirt::{no_grad, Error, Tensor};

#[test]
fn gradients_accumulate_across_backward_calls() {
    let g = gpu();
    let x = Tensor::param(&g, &[1.0, -2.0, 3.0], &[3]).unwrap();
    for _ in 0..2 {
        x.scale(2.0).unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![4.0, 4.0, 4.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn a_tensor_used_twice_gets_both_gradients() {
    // L = sum(x * x + x)  =>  dL/dx = 2x + 1
    check_grad(
        "x * x + x",
        &[input(vec![0.5, -1.5, 2.0, 0.25], &[4])],
        |t| t[0].mul(&t[0])?.add(&t[0]),
        |d| d[0].iter().map(|v| v * v + v).collect(),
        1e-5,
    );
}

#[test]
fn frozen_parameters_get_no_gradient_and_backward_stops_there() {
    let g = gpu();
    let frozen = Tensor::param(&g, &[1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    frozen.set_requires_grad(false);
    let w = Tensor::param(&g, &[0.5, -0.5, 1.0, 2.0], &[2, 2]).unwrap();
    let x = Tensor::from_slice(&g, &[1.0, 1.0, 2.0, 0.0], &[2, 2]).unwrap();
    let h = x.matmul(&frozen).unwrap(); // nothing below needs a gradient: no graph node
    assert!(!h.requires_grad_flag());
    let loss = h.matmul(&w).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    assert!(
        frozen.grad().is_none(),
        "a frozen parameter must not store a gradient"
    );
    // dL/dW = h^T 1: column sums of h per row of W.
    let hv = h.to_vec().unwrap();
    let want = [hv[0] + hv[2], hv[0] + hv[2], hv[1] + hv[3], hv[1] + hv[3]];
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), want);
}

#[test]
fn no_grad_records_nothing() {
    let g = gpu();
    let w = Tensor::param(&g, &[1.0, 2.0], &[2]).unwrap();
    let y = no_grad(|| w.scale(3.0)).unwrap();
    assert!(!y.requires_grad_flag());
    let err = y.sum_all().unwrap().backward().unwrap_err();
    assert!(
        matches!(err, Error::Invalid { op: "backward", .. }),
        "{err}"
    );
}

#[test]
fn backward_twice_through_a_freed_graph_is_an_error() {
    let g = gpu();
    let w = Tensor::param(&g, &[1.0, 2.0], &[2]).unwrap();
    let loss = w.relu().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err();
    assert!(matches!(err, Error::GraphFreed { .. }), "{err}");
    assert!(
        err.to_string().contains("run the forward pass again"),
        "{err}"
    );
}

#[test]
fn backward_needs_a_scalar() {
    let g = gpu();
    let w = Tensor::param(&g, &[1.0, 2.0], &[2]).unwrap();
    let err = w.relu().unwrap().backward().unwrap_err();
    assert_eq!(err, Error::NotScalar { shape: vec![2] });
}

#[test]
fn pool_stays_flat_over_repeated_training_steps() {
    // A device of its own so parallel tests do not disturb the count.
    let g = private_gpu(false);
    let mut rng = Rng::new(1);
    let w1 = Tensor::param(&g, &to_f32(&rng.vec(64 * 32, -0.1, 0.1)), &[64, 32]).unwrap();
    let w2 = Tensor::param(&g, &to_f32(&rng.vec(32 * 10, -0.1, 0.1)), &[32, 10]).unwrap();
    let x = Tensor::from_slice(&g, &to_f32(&rng.vec(16 * 64, -1.0, 1.0)), &[16, 64]).unwrap();
    let step = || {
        let h = x.matmul(&w1).unwrap().relu().unwrap();
        let loss = h
            .matmul(&w2)
            .unwrap()
            .log_softmax()
            .unwrap()
            .mean_all()
            .unwrap();
        w1.zero_grad();
        w2.zero_grad();
        loss.backward().unwrap();
        g.sync().unwrap();
    };
    step();
    let after_first = g.pool_stats();
    for _ in 0..99 {
        step();
    }
    let after_100 = g.pool_stats();
    assert_eq!(
        after_100.allocated_bytes, after_first.allocated_bytes,
        "pool grew: {after_first:?} -> {after_100:?}"
    );
    assert_eq!(after_100.buffers_created, after_first.buffers_created);
}

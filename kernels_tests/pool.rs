//! Max pooling (forward, with and without the argmax indices, ties, backward) and global
//! average pooling.

use crate::common::*;
use convirt::{reference, Error, Tensor};

/// (shape, kernel, stride, padding): ResNet's stem pool on odd planes and on a stem-sized
/// plane, non-overlapping windows, stride 1, a 1 x 1 kernel, and a single window.
const CASES: [(&[usize], usize, usize, usize); 7] = [
    (&[1, 1, 7, 5], 3, 2, 1),
    (&[2, 3, 17, 19], 3, 2, 1),
    (&[2, 4, 112, 112], 3, 2, 1),
    (&[1, 2, 8, 8], 2, 2, 0),
    (&[1, 1, 5, 6], 3, 1, 1),
    (&[2, 1, 6, 7], 1, 1, 0),
    (&[1, 1, 3, 3], 3, 3, 1),
];

/// `n` distinct values 0.01 apart in random order: no tie for finite differences to cross.
fn distinct(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.01 - 1.0).collect();
    for i in (1..n).rev() {
        let j = ((rng.uniform() + 1.0) / 2.0 * (i + 1) as f64) as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

#[test]
fn max_pool_forward() {
    for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
        let x = Rng::new(i as u64).vec(shape.iter().product(), -2.0, 2.0);
        let (want, out_shape) = reference::max_pool2d(&x, shape, k, s, p);
        // Without a gradient the plain kernel runs; with one, the kernel that also writes the
        // argmax indices.
        for grad in [false, true] {
            let t = upload(&x, shape).requires_grad(grad);
            let y = t.max_pool2d(k, s, p).unwrap();
            assert_eq!(y.shape(), &out_shape[..], "{shape:?} k{k} s{s} p{p}");
            assert_close(
                &format!("max_pool2d {shape:?} k{k} s{s} p{p} grad={grad}"),
                &y.to_vec().unwrap(),
                &want,
                1e-7,
            );
        }
    }
}

#[test]
fn max_pool_backward() {
    // Rows of whole groups of 4 (W 8, 12) take four elements per invocation, the others one.
    for &(shape, k, s, p) in &[
        (&[2, 2, 7, 5][..], 3, 2, 1),
        (&[1, 3, 9, 9], 3, 2, 1),
        (&[1, 2, 6, 8], 2, 2, 0),
        (&[1, 1, 5, 6], 3, 1, 1),
        (&[2, 2, 7, 12], 3, 2, 1),
        (&[1, 1, 5, 8], 3, 1, 1),
    ] {
        let x = distinct(shape.iter().product(), k as u64 + shape[3] as u64);
        check_grad(
            &format!("max_pool2d {shape:?} k{k} s{s} p{p}"),
            &[input(x, shape)],
            |t| t[0].max_pool2d(k, s, p),
            |d| reference::max_pool2d(&d[0], shape, k, s, p).0,
            1e-4,
        );
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum_in_row_major_order() {
    for (h, w) in [(5, 6), (5, 8)] {
        ties_in(h, w);
    }
}

fn ties_in(h: usize, w: usize) {
    let (k, s, p) = (3, 2, 1);
    let x = Tensor::param(&gpu(), &vec![1.0; h * w], &[1, 1, h, w]).unwrap();
    let y = x.max_pool2d(k, s, p).unwrap();
    let (oh, ow) = (y.shape()[2], y.shape()[3]);
    y.sum_all().unwrap().backward().unwrap();
    // Every window's first element inside the input takes the whole gradient.
    let mut want = vec![0.0; h * w];
    for oy in 0..oh {
        for ox in 0..ow {
            let (iy, ix) = ((oy * s).saturating_sub(p), (ox * s).saturating_sub(p));
            want[iy * w + ix] += 1.0;
        }
    }
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), to_f32(&want));
}

#[test]
fn global_avg_pool() {
    let shape = [3, 4, 7, 5];
    let x = Rng::new(5).vec(shape.iter().product(), -1.0, 1.0);
    let y = upload(&x, &shape).global_avg_pool2d().unwrap();
    assert_eq!(y.shape(), &[3, 4]);
    let want = reference::sum(&x, &[3, 4, 35], 2, true);
    assert_close("global_avg_pool2d", &y.to_vec().unwrap(), &want, 1e-6);
    check_grad(
        "global_avg_pool2d",
        &[input(x, &shape)],
        |t| t[0].global_avg_pool2d(),
        |d| reference::sum(&d[0], &[3, 4, 35], 2, true),
        1e-4,
    );
}

#[test]
fn pooling_errors_name_the_op() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[1, 2, 4, 4]).unwrap();
    for (k, s, p, says) in [
        (3, 2, 2, "padding"),
        (0, 1, 0, "kernel"),
        (2, 0, 0, "stride"),
        (7, 1, 1, "does not fit"),
    ] {
        let err = x.max_pool2d(k, s, p).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    op: "max_pool2d",
                    ..
                }
            ) && err.to_string().contains(says),
            "k{k} s{s} p{p}: {err}"
        );
    }
    let flat = Tensor::zeros(&g, &[2, 16]).unwrap();
    let err = flat.max_pool2d(3, 2, 1).unwrap_err();
    assert!(err.to_string().contains("[N, C, H, W]"), "{err}");
    let err = flat.global_avg_pool2d().unwrap_err();
    assert!(err.to_string().contains("global_avg_pool2d"), "{err}");
}

//! Convolution: the kernel sizes, strides and paddings of ResNet on awkward shapes, forward and
//! both backwards.

use crate::common::*;
use convirt::reference;

/// (N, C, H, W, O, K, stride, padding).
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

/// ResNet's 7x7/2, 3x3/1, 3x3/2, 1x1/1 (over a small map, through im2col, and over one of 575
/// positions, per image), 1x1/2, odd sizes, and stride 1 with output rows of whole groups of
/// four (im2col's two-vec4 reads) over input rows that are not, with padding 0 and 2, a map
/// of 552 positions, whose input gradient is the adjoint convolution, and stride 2 over input
/// rows of whole groups of four (col2im's four pixels at a time), odd and even heights.
const CASES: [Case; 13] = [
    (2, 3, 23, 19, 5, 7, 2, 3),
    (1, 4, 9, 9, 6, 3, 1, 1),
    (3, 5, 11, 8, 4, 3, 2, 1),
    (2, 6, 7, 5, 3, 1, 1, 0),
    (2, 3, 23, 25, 4, 1, 1, 0),
    (2, 6, 9, 7, 3, 1, 2, 0),
    (1, 1, 1, 1, 1, 1, 1, 0),
    (1, 2, 4, 4, 2, 3, 1, 0),
    (2, 3, 6, 10, 4, 3, 1, 0),
    (1, 2, 5, 12, 3, 5, 1, 2),
    (2, 2, 24, 23, 3, 3, 1, 1),
    (2, 3, 7, 12, 4, 1, 2, 0),
    (1, 2, 10, 16, 3, 3, 2, 1),
];

#[test]
fn conv2d_forward() {
    for (t, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
        let mut rng = Rng::new(t as u64);
        let x = rng.vec(n * c * h * w, -1.0, 1.0);
        let wt = rng.vec(o * c * k * k, -1.0, 1.0);
        let b = rng.vec(o, -1.0, 1.0);
        for bias in [false, true] {
            let bt = upload(&b, &[o]);
            let y = upload(&x, &[n, c, h, w])
                .conv2d(&upload(&wt, &[o, c, k, k]), bias.then_some(&bt), s, p)
                .unwrap();
            let (want, shape) = reference::conv2d(
                &x,
                [n, c, h, w],
                &wt,
                [o, c, k, k],
                bias.then_some(&b[..]),
                s,
                p,
            );
            assert_eq!(y.shape(), shape.as_slice());
            assert_close(
                &format!("conv2d case {t} bias {bias}"),
                &y.to_vec().unwrap(),
                &want,
                1e-5,
            );
        }
    }
}

#[test]
fn conv2d_many_channels_uses_many_workgroups() {
    // ResNet stage-1 sized channels on a small image: long reductions (K = 576) in the GEMM.
    let (n, c, h, w, o) = (2, 64, 10, 9, 64);
    let mut rng = Rng::new(5);
    let x = rng.vec(n * c * h * w, -1.0, 1.0);
    let wt = rng.vec(o * c * 9, -0.1, 0.1);
    let y = upload(&x, &[n, c, h, w])
        .conv2d(&upload(&wt, &[o, c, 3, 3]), None, 1, 1)
        .unwrap();
    let (want, _) = reference::conv2d(&x, [n, c, h, w], &wt, [o, c, 3, 3], None, 1, 1);
    assert_close("conv2d 64->64 3x3", &y.to_vec().unwrap(), &want, 1e-5);
}

#[test]
fn conv2d_backward() {
    for (t, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
        let mut rng = Rng::new(100 + t as u64);
        let inputs = [
            input(rng.vec(n * c * h * w, -1.0, 1.0), &[n, c, h, w]),
            input(rng.vec(o * c * k * k, -1.0, 1.0), &[o, c, k, k]),
            input(rng.vec(o, -1.0, 1.0), &[o]),
        ];
        check_grad(
            &format!("conv2d case {t}"),
            &inputs,
            |x| x[0].conv2d(&x[1], Some(&x[2]), s, p),
            |d| reference::conv2d(&d[0], [n, c, h, w], &d[1], [o, c, k, k], Some(&d[2]), s, p).0,
            1e-4,
        );
    }
}

#[test]
fn conv2d_shape_errors_name_both_shapes() {
    let x = upload(&[0.5; 2 * 3 * 4 * 4], &[2, 3, 4, 4]);
    let err = x
        .conv2d(&upload(&[0.5; 5 * 2 * 9], &[5, 2, 3, 3]), None, 1, 1)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("conv2d") && msg.contains("[2, 3, 4, 4]") && msg.contains("[5, 2, 3, 3]"),
        "{msg}"
    );
    let err = x
        .conv2d(&upload(&[0.5; 5 * 3 * 49], &[5, 3, 7, 7]), None, 1, 0)
        .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn conv2d_in_image_chunks_matches_the_whole_batch() {
    // A scratch budget of one image's columns forces one chunk per image, forward and backward.
    let opts = convirt::GpuOptions {
        scratch_bytes: Some(4096),
        poison: true,
        quiet: true,
        ..convirt::GpuOptions::from_env()
    };
    let small = convirt::Gpu::new(opts).unwrap();
    let (n, c, h, w, o, k, s, p) = (3, 4, 9, 7, 5, 3, 2, 1);
    let mut rng = Rng::new(77);
    let (x, wt) = (
        rng.vec(n * c * h * w, -1.0, 1.0),
        rng.vec(o * c * k * k, -1.0, 1.0),
    );
    let (want, out_shape) = reference::conv2d(&x, [n, c, h, w], &wt, [o, c, k, k], None, s, p);
    let run = |g: &std::sync::Arc<convirt::Gpu>| {
        let xt = convirt::Tensor::param(g, &to_f32(&x), &[n, c, h, w]).unwrap();
        let wtt = convirt::Tensor::param(g, &to_f32(&wt), &[o, c, k, k]).unwrap();
        let y = xt.conv2d(&wtt, None, s, p).unwrap();
        let weights = convirt::Tensor::from_slice(
            g,
            &to_f32(&Rng::new(1).vec(y.numel(), -1.0, 1.0)),
            y.shape(),
        )
        .unwrap();
        y.mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (
            y.to_vec().unwrap(),
            xt.grad().unwrap().to_vec().unwrap(),
            wtt.grad().unwrap().to_vec().unwrap(),
        )
    };
    let (y, dx, dw) = run(&small);
    assert_eq!(out_shape, [n, o, 5, 4]);
    assert_close("chunked conv2d forward", &y, &want, 1e-5);
    let (_, dx_whole, dw_whole) = run(&gpu());
    let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert_close("chunked conv2d d/dx", &dx, &as_f64(&dx_whole), 1e-6);
    assert_close("chunked conv2d d/dw", &dw, &as_f64(&dw_whole), 1e-5);
}

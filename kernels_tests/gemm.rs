//! GEMM: every layout, batching, epilogues, awkward sizes, and the backward rule.

use crate::common::*;
use convirt::ops::Columns;
use convirt::reference::{self, GemmDims};
use convirt::{Activation, GemmOptions, Gpu};
use std::sync::Arc;

fn dims(batch: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GemmDims {
    GemmDims {
        batch,
        m,
        n,
        k,
        trans_a: ta,
        trans_b: tb,
        a_batched: batch > 1,
        b_batched: batch > 1,
    }
}

fn shape(batch: usize, rows: usize, cols: usize, batched: bool) -> Vec<usize> {
    if batched && batch > 1 {
        vec![batch, rows, cols]
    } else {
        vec![rows, cols]
    }
}

/// op(A) op(B) on the GPU and in the reference; returns the relative error.
fn run(d: GemmDims, seed: u64) -> f64 {
    run_on(&gpu(), d, seed)
}

fn run_on(gpu: &Arc<Gpu>, d: GemmDims, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let a = rng.vec(if d.a_batched { d.batch } else { 1 } * d.m * d.k, -1.0, 1.0);
    let b = rng.vec(if d.b_batched { d.batch } else { 1 } * d.k * d.n, -1.0, 1.0);
    let (ar, ac) = if d.trans_a { (d.k, d.m) } else { (d.m, d.k) };
    let (br, bc) = if d.trans_b { (d.n, d.k) } else { (d.k, d.n) };
    let ta = upload_to(gpu, &a, &shape(d.batch, ar, ac, d.a_batched));
    let tb = upload_to(gpu, &b, &shape(d.batch, br, bc, d.b_batched));
    let o = GemmOptions {
        trans_a: d.trans_a,
        trans_b: d.trans_b,
        ..Default::default()
    };
    let c = ta.gemm(&tb, &o).expect("gemm");
    let want = reference::gemm(d, &a, &b, 1.0, None, None, 0);
    rel_err(&c.to_vec().expect("download"), &want)
}

#[test]
fn gemm_all_layouts_awkward_sizes() {
    // 1, primes, non-multiples of every tile, several workgroups in both grids, shapes that
    // take the vec4 path (K % 4 == 0 ...) and shapes that do not, small and large tilings.
    let sizes = [
        (1, 1, 1),
        (7, 513, 129),
        (33, 65, 17),
        (64, 64, 64),
        (130, 257, 300),
        (40, 300, 12),
        (128, 512, 64),
        (5, 3, 1031),
    ];
    for (i, &(m, n, k)) in sizes.iter().enumerate() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let e = run(dims(1, m, n, k, ta, tb), i as u64);
            assert!(
                e < 1e-5,
                "gemm {m}x{n}x{k} trans_a={ta} trans_b={tb}: relative error {e:.2e}"
            );
        }
    }
}

/// `[images, rows, positions]` <-> `[rows, images * positions]`, on the host.
fn image_major(
    v: &[f64],
    images: usize,
    rows: usize,
    positions: usize,
    to_matrix: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for n in 0..images {
        for r in 0..rows {
            for q in 0..positions {
                let (im, mat) = (
                    (n * rows + r) * positions + q,
                    r * images * positions + n * positions + q,
                );
                if to_matrix {
                    out[mat] = v[im];
                } else {
                    out[im] = v[mat];
                }
            }
        }
    }
    out
}

#[test]
fn gemm_image_major_columns_of_b_and_c() {
    // Positions per image that are and are not whole groups of 4 (the vec4 and scalar paths),
    // one image and several, tiles that straddle images, both layouts of A. Small shapes: the
    // big tiling is the same template unrolled further, and each of its pipelines takes
    // llvmpipe about 15 s to compile (ResNet's tests run it on these layouts).
    let gpu = gpu();
    let cases = [(7, 5, 3, 49), (9, 8, 5, 12), (33, 17, 1, 1)];
    for (i, &(m, k, images, positions)) in cases.iter().enumerate() {
        let n = images * positions;
        let mut rng = Rng::new(40 + i as u64);
        let a = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(k * n, -1.0, 1.0);
        for trans_a in [false, true] {
            let d = GemmDims {
                trans_b: false,
                ..dims(1, m, n, k, trans_a, false)
            };
            let want = reference::gemm(d, &a, &b, 1.0, None, None, 0);
            let ta = upload_to(&gpu, &a, &if trans_a { [k, m] } else { [m, k] });
            let b_images = upload_to(
                &gpu,
                &image_major(&b, images, k, positions, false),
                &[images, k, positions],
            );
            let b_matrix = upload_to(&gpu, &b, &[k, n]);
            let layout = Columns::Images { positions };
            // (The plain layouts are every other test's.)
            let combinations = [
                (&b_images, layout, layout),
                (&b_images, layout, Columns::Matrix),
                (&b_matrix, Columns::Matrix, layout),
            ];
            for (b_t, b_layout, out_layout) in combinations {
                {
                    let c = ta
                        .matmul_columns(trans_a, b_t, b_layout, out_layout)
                        .expect("gemm");
                    let got = c.to_vec().expect("download");
                    let got: Vec<f32> = if out_layout == Columns::Matrix {
                        assert_eq!(c.shape(), [m, n]);
                        got
                    } else {
                        assert_eq!(c.shape(), [images, m, positions]);
                        let g: Vec<f64> = got.iter().map(|&x| x as f64).collect();
                        image_major(&g, images, m, positions, true)
                            .iter()
                            .map(|&x| x as f32)
                            .collect()
                    };
                    let e = rel_err(&got, &want);
                    assert!(
                        e < 1e-5,
                        "gemm {m}x{n}x{k}, {images} images of {positions}, trans_a={trans_a}, B {b_layout:?}, C {out_layout:?}: relative error {e:.2e}"
                    );
                }
            }
        }
    }
    let a = upload_to(&gpu, &[1.0; 6], &[2, 3]);
    let b = upload_to(&gpu, &[1.0; 12], &[2, 3, 2]);
    let err = a.matmul_columns(
        false,
        &b,
        Columns::Images { positions: 2 },
        Columns::Images { positions: 3 },
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("not whole images of 3 positions"));
}

#[test]
fn gemm_portable_form_where_a_subgroup_form_exists() {
    // The test device takes the subgroup form on llvmpipe (every test here checks it); the
    // portable one, every GPU's, is checked on a device with subgroups off: both tilings,
    // every layout, vec4 and scalar reads, a partial last step along K.
    let gpu = gpu_without_subgroups();
    for (i, &(m, n, k)) in [(7, 513, 129), (130, 257, 300), (33, 65, 17)]
        .iter()
        .enumerate()
    {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let e = run_on(&gpu, dims(1, m, n, k, ta, tb), i as u64);
            assert!(
                e < 1e-5,
                "portable gemm {m}x{n}x{k} trans_a={ta} trans_b={tb}: relative error {e:.2e}"
            );
        }
    }
}

#[test]
fn gemm_1000_cubed() {
    let e = run(dims(1, 1000, 1000, 1000, false, false), 7);
    // f32 sums of 1000 products: about sqrt(K) * 6e-8 expected.
    assert!(e < 1e-5, "gemm 1000^3: relative error {e:.2e}");
}

#[test]
fn gemm_batched_and_shared_operand() {
    for (ta, tb) in [(false, false), (true, true)] {
        let e = run(dims(3, 17, 19, 23, ta, tb), 11);
        assert!(e < 1e-5, "batched gemm: {e:.2e}");
        let shared_b = GemmDims {
            b_batched: false,
            ..dims(4, 9, 300, 12, ta, tb)
        };
        let e = run(shared_b, 12);
        assert!(e < 1e-5, "batched gemm with shared B: {e:.2e}");
    }
}

#[test]
fn gemm_alpha_beta_bias_epilogues() {
    let (m, n, k) = (37, 300, 20);
    let d = dims(1, m, n, k, false, true);
    let mut rng = Rng::new(3);
    let (a, b) = (rng.vec(m * k, -1.0, 1.0), rng.vec(n * k, -1.0, 1.0));
    let (c0, bias) = (rng.vec(m * n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
    for (act, code) in [
        (Activation::None, 0),
        (Activation::Relu, 1),
        (Activation::Gelu, 2),
    ] {
        let o = GemmOptions {
            trans_b: true,
            alpha: Some(0.7),
            accumulate: Some((-0.3, upload(&c0, &[m, n]))),
            bias: Some(upload(&bias, &[n])),
            activation: act,
            ..Default::default()
        };
        let c = upload(&a, &[m, k])
            .gemm(&upload(&b, &[n, k]), &o)
            .expect("gemm");
        let want = reference::gemm(d, &a, &b, 0.7, Some((-0.3, &c0)), Some(&bias), code);
        assert_close(
            &format!("gemm epilogue {act:?}"),
            &c.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }
}

#[test]
fn gemm_long_k_splits_within_the_loop_budget() {
    // K / 4 steps per invocation would pass llvmpipe's limit of 65535 loop iterations (its
    // loops then end early and silently: C misses most of the sum), so the host splits K into
    // dispatches that accumulate; alpha, beta, the bias and the activation still apply once.
    // K = 300_002 is not a multiple of 4 (the last slice's tail); the vec4 path is taken by
    // 280_000 with A transposed. (As the stem convolution's weight gradient at batch 32 would be.)
    let mut rng = Rng::new(21);
    for (m, n, k, ta) in [(3, 5, 300_002, false), (4, 6, 280_000, true)] {
        let d = dims(1, m, n, k, ta, true);
        let (a, b) = (rng.vec(m * k, -1.0, 1.0), rng.vec(n * k, -1.0, 1.0));
        let (c0, bias) = (rng.vec(m * n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
        let o = GemmOptions {
            trans_a: ta,
            trans_b: true,
            alpha: Some(0.01),
            accumulate: Some((0.5, upload(&c0, &[m, n]))),
            bias: Some(upload(&bias, &[n])),
            activation: Activation::Relu,
        };
        let a_shape = if ta { [k, m] } else { [m, k] };
        let c = upload(&a, &a_shape)
            .gemm(&upload(&b, &[n, k]), &o)
            .expect("gemm");
        let want = reference::gemm(d, &a, &b, 0.01, Some((0.5, &c0)), Some(&bias), 1);
        // Sums of 3e5 products: f32 rounding grows with K (about sqrt(K) * 6e-8 = 3e-5).
        assert_close(&format!("gemm K = {k}"), &c.to_vec().unwrap(), &want, 1e-4);
    }
}

#[test]
fn gemm_k_slices_under_a_small_budget() {
    // A budget of 1034 iterations leaves 10 steps of 4 along K per dispatch: K = 150 goes in 4
    // slices (the last with a tail), and every layout, alpha, beta, the bias and the
    // activation must come out as from one dispatch.
    let gpu = gpu_with_loop_budget(1034);
    let (m, n, k) = (9, 13, 150);
    let mut rng = Rng::new(4);
    let (a, b) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
    let (c0, bias) = (rng.vec(m * n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
    let up = |v: &[f64], shape: &[usize]| upload_to(&gpu, v, shape);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let o = GemmOptions {
            trans_a: ta,
            trans_b: tb,
            alpha: Some(0.7),
            accumulate: Some((-0.3, up(&c0, &[m, n]))),
            bias: Some(up(&bias, &[n])),
            activation: Activation::Relu,
        };
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let c = up(&a, &a_shape).gemm(&up(&b, &b_shape), &o).expect("gemm");
        let want = reference::gemm(
            dims(1, m, n, k, ta, tb),
            &a,
            &b,
            0.7,
            Some((-0.3, &c0)),
            Some(&bias),
            1,
        );
        assert_close(
            &format!("gemm in K slices, trans {ta} {tb}"),
            &c.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }
}

#[test]
fn gemm_backward_every_layout() {
    let (m, n, k) = (5, 7, 6);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let d = dims(1, m, n, k, ta, tb);
        let mut rng = Rng::new(21);
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let inputs = [
            input(rng.vec(m * k, -1.0, 1.0), &a_shape),
            input(rng.vec(k * n, -1.0, 1.0), &b_shape),
            input(rng.vec(n, -1.0, 1.0), &[n]),
            input(rng.vec(m * n, -1.0, 1.0), &[m, n]),
        ];
        check_grad(
            &format!("gemm trans_a={ta} trans_b={tb}"),
            &inputs,
            |t| {
                t[0].gemm(
                    &t[1],
                    &GemmOptions {
                        trans_a: ta,
                        trans_b: tb,
                        alpha: Some(1.3),
                        accumulate: Some((0.5, t[3].clone())),
                        bias: Some(t[2].clone()),
                        ..Default::default()
                    },
                )
            },
            |x| reference::gemm(d, &x[0], &x[1], 1.3, Some((0.5, &x[3])), Some(&x[2]), 0),
            1e-4,
        );
    }
}

#[test]
fn gemm_backward_activations_and_batch() {
    let (m, n, k) = (4, 6, 5);
    let d = dims(1, m, n, k, false, false);
    for (act, code) in [(Activation::Relu, 1), (Activation::Gelu, 2)] {
        let mut rng = Rng::new(5);
        // Keep pre-activations away from ReLU's kink: finite differences cannot cross it.
        let a: Vec<f64> = rng.vec(m * k, 0.2, 1.0);
        let b: Vec<f64> = rng.vec(k * n, -1.0, 1.0);
        let bias: Vec<f64> = rng.vec(n, -1.0, 1.0);
        let z = reference::gemm(d, &a, &b, 1.0, None, Some(&bias), 0);
        if z.iter().any(|v| v.abs() < 1e-3) {
            continue;
        }
        check_grad(
            &format!("gemm epilogue {act:?}"),
            &[input(a, &[m, k]), input(b, &[k, n]), input(bias, &[n])],
            |t| {
                t[0].gemm(
                    &t[1],
                    &GemmOptions {
                        bias: Some(t[2].clone()),
                        activation: act,
                        ..Default::default()
                    },
                )
            },
            |x| reference::gemm(d, &x[0], &x[1], 1.0, None, Some(&x[2]), code),
            1e-4,
        );
    }
    // A batched [3, 4, 5] times a shared [5, 6]: B's gradient sums over the batch.
    let shared = GemmDims {
        a_batched: true,
        b_batched: false,
        ..dims(3, m, n, k, false, false)
    };
    let mut rng = Rng::new(9);
    check_grad(
        "batched gemm with shared B",
        &[
            input(rng.vec(3 * m * k, -1.0, 1.0), &[3, m, k]),
            input(rng.vec(k * n, -1.0, 1.0), &[k, n]),
        ],
        |t| t[0].matmul(&t[1]),
        |x| reference::gemm(shared, &x[0], &x[1], 1.0, None, None, 0),
        1e-4,
    );
}

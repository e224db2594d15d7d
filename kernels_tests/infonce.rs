//! The fused cross-modal InfoNCE loss: forward against the f64 reference on both paths (one
//! workgroup, tiled), gradients by central finite differences, stability at tau = 0.01, errors.

use crate::common::*;
use convirt::ops::infonce::{infonce, infonce_with, InfoNcePath};
use convirt::{no_grad, reference, Error, Gpu, GpuOptions, Tensor};
use std::sync::Arc;

/// Embeddings where positives correlate (u = 0.6 v + noise), as after some training: the loss
/// is then neither at chance nor zero. Rounded to f32 so the reference sees the GPU's data.
fn pairs(n: usize, d: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let v = rng.vec(n * d, -1.0, 1.0);
    let noise = rng.vec(n * d, -1.0, 1.0);
    let u = v
        .iter()
        .zip(&noise)
        .map(|(a, b)| ((0.6 * a + b) as f32) as f64)
        .collect();
    (v, u)
}

fn loss_on(
    v: &[f64],
    u: &[f64],
    n: usize,
    d: usize,
    tau: f32,
    lambda: f32,
    path: InfoNcePath,
) -> f32 {
    infonce_with(&upload(v, &[n, d]), &upload(u, &[n, d]), tau, lambda, path)
        .unwrap()
        .item()
        .unwrap()
}

#[test]
fn infonce_forward_matches_reference() {
    // (N, d, tau, lambda): single pair, awkward sizes, the paper's batch, stiff tau, several
    // tiles, past the one-workgroup limit.
    let cases = [
        (1, 1, 0.1, 0.75),
        (3, 5, 0.5, 0.3),
        (32, 512, 0.1, 0.75),
        (33, 7, 0.01, 0.75),
        (257, 64, 0.07, 0.5),
        (1100, 16, 0.1, 0.75),
        (40, 9, 0.2, 0.0),
        (40, 9, 0.2, 1.0),
    ];
    for (n, d, tau, lambda) in cases {
        let (v, u) = pairs(n, d, (n * 31 + d) as u64);
        let want = reference::infonce(&v, &u, n, d, tau as f64, lambda as f64);
        for path in [InfoNcePath::Auto, InfoNcePath::Fused, InfoNcePath::Tiled] {
            let got = loss_on(&v, &u, n, d, tau, lambda, path);
            assert_close(
                &format!("infonce {path:?} N={n} d={d} tau={tau} lambda={lambda}"),
                &[got],
                &[want],
                1e-5,
            );
        }
    }
}

#[test]
fn infonce_forward_large_tiled() {
    // The reference is O(N^2 d) in f64: 8192^2 x 512 would take minutes, so d = 32 at the
    // largest N (a 128 x 128 grid of tiles), and a wider d at N = 2048.
    for (n, d) in [(2048, 128), (8192, 32)] {
        let (v, u) = pairs(n, d, n as u64);
        let want = reference::infonce(&v, &u, n, d, 0.1, 0.75);
        let got = no_grad(|| loss_on(&v, &u, n, d, 0.1, 0.75, InfoNcePath::Auto));
        assert_close(&format!("infonce N={n} d={d}"), &[got], &[want], 2e-5);
    }
}

#[test]
fn infonce_stable_at_small_tau() {
    // Orthogonal embeddings: S = 0 everywhere, so the loss is exactly ln N. A fixed shift of
    // 1/tau = 100 would sum exp(-100) = 0 in f32 and return inf.
    let (n, d) = (32, 64);
    let mut v = vec![0.0; n * d];
    let mut u = vec![0.0; n * d];
    for i in 0..n {
        v[i * d + i] = 1.0;
        u[i * d + n + i] = 2.0;
    }
    for path in [InfoNcePath::Fused, InfoNcePath::Tiled] {
        let got = loss_on(&v, &u, n, d, 0.01, 0.75, path);
        assert_close(
            &format!("orthogonal {path:?}"),
            &[got],
            &[(n as f64).ln()],
            1e-6,
        );
    }
    // Random 512-d embeddings at tau = 0.01: every cosine is small (no row reaches 0.13).
    let v = Rng::new(5).vec(16 * 512, -1.0, 1.0);
    let u = Rng::new(6).vec(16 * 512, -1.0, 1.0);
    let want = reference::infonce(&v, &u, 16, 512, 0.01, 0.75);
    for path in [InfoNcePath::Fused, InfoNcePath::Tiled] {
        let got = loss_on(&v, &u, 16, 512, 0.01, 0.75, path);
        assert_close(
            &format!("uncorrelated tau 0.01 {path:?}"),
            &[got],
            &[want],
            1e-5,
        );
    }
}

#[test]
fn infonce_backward() {
    // At tau = 0.01 the loss is stiff (third derivatives ~ 1/tau^3 = 1e6), but check_grad's
    // h = 1e-6 keeps the central difference's truncation error near 1e-7 relative, and the
    // f32 rounding of S (|S| up to 100) stays below the 1e-4 tolerance.
    for (n, d, tau, lambda) in [(5, 4, 0.5, 0.75), (32, 16, 0.1, 0.75), (9, 3, 0.01, 0.75)] {
        let (v, u) = pairs(n, d, (7 * n + d) as u64);
        for path in [InfoNcePath::Fused, InfoNcePath::Tiled] {
            check_grad(
                &format!("infonce {path:?} N={n} d={d} tau={tau}"),
                &[input(v.clone(), &[n, d]), input(u.clone(), &[n, d])],
                |t| infonce_with(&t[0], &t[1], tau, lambda, path),
                |x| {
                    vec![reference::infonce(
                        &x[0],
                        &x[1],
                        n,
                        d,
                        tau as f64,
                        lambda as f64,
                    )]
                },
                1e-4,
            );
        }
    }
}

/// Central differences of the reference at a few sampled elements of each input (the full
/// check_grad would cost 2 N d reference evaluations of O(N^2 d) each).
fn sampled_grad_check(
    gpu: &Arc<Gpu>,
    path: InfoNcePath,
    what: &str,
    n: usize,
    d: usize,
    tau: f32,
    lambda: f32,
) {
    let (v, u) = pairs(n, d, (n + d) as u64);
    let tv = Tensor::param(gpu, &to_f32(&v), &[n, d]).unwrap();
    let tu = Tensor::param(gpu, &to_f32(&u), &[n, d]).unwrap();
    let loss = infonce_with(&tv, &tu, tau, lambda, path).unwrap();
    // A non-unit incoming gradient, so the backward's scaling is checked too.
    loss.scale(-1.5).unwrap().backward().unwrap();
    let mut data = [v, u];
    let h = 1e-6;
    for (k, t) in [&tv, &tu].into_iter().enumerate() {
        let grad = t.grad().unwrap().to_vec().unwrap();
        let (mut got, mut fd) = (Vec::new(), Vec::new());
        for s in 0..12 {
            // Spread over rows and columns, including the first and last element.
            let e = (s * (n * d - 1)) / 11;
            let x0 = data[k][e];
            data[k][e] = x0 + h;
            let lp = reference::infonce(&data[0], &data[1], n, d, tau as f64, lambda as f64);
            data[k][e] = x0 - h;
            let lm = reference::infonce(&data[0], &data[1], n, d, tau as f64, lambda as f64);
            data[k][e] = x0;
            fd.push(-1.5 * (lp - lm) / (2.0 * h));
            got.push(grad[e]);
        }
        assert!(
            grad.iter().all(|g| g.is_finite()),
            "{what}: input {k} has an unwritten gradient"
        );
        assert_close(&format!("{what}: d/d input {k}"), &got, &fd, 1e-4);
    }
}

#[test]
fn infonce_backward_tiled_sampled() {
    sampled_grad_check(
        &gpu(),
        InfoNcePath::Tiled,
        "infonce tiled 1100x4",
        1100,
        4,
        0.1,
        0.75,
    );
}

/// The devices whose fused path differs: the test device (the subgroup form where the adapter
/// runs subgroups of 8, as llvmpipe does) and one with subgroups off (the portable form).
fn fused_devices() -> [(&'static str, Arc<Gpu>); 2] {
    [("", gpu()), (" without subgroups", gpu_without_subgroups())]
}

#[test]
fn infonce_backward_fused_sampled() {
    // Many blocks per invocation and ragged edges: N not a multiple of 4, 8 or 16, d a
    // multiple of 4 (rows read as vec4s) and not, d past and short of a subgroup's 32 columns.
    for (device, gpu) in fused_devices() {
        for (n, d) in [(70, 36), (45, 10), (19, 100)] {
            let what = format!("infonce fused{device} {n}x{d}");
            sampled_grad_check(&gpu, InfoNcePath::Fused, &what, n, d, 0.1, 0.75);
        }
    }
}

#[test]
fn infonce_portable_fused_path_matches_reference() {
    // The test device takes the subgroup form on llvmpipe; the portable one (every GPU's) is
    // checked here on any adapter.
    let gpu = gpu_without_subgroups();
    for (n, d, tau, lambda) in [(1, 1, 0.1, 0.75), (3, 5, 0.5, 0.3), (33, 512, 0.01, 0.75)] {
        let (v, u) = pairs(n, d, (n * 17 + d) as u64);
        let up = |x: &[f64]| upload_to(&gpu, x, &[n, d]);
        let want = reference::infonce(&v, &u, n, d, tau as f64, lambda as f64);
        let got = infonce_with(&up(&v), &up(&u), tau, lambda, InfoNcePath::Fused)
            .unwrap()
            .item()
            .unwrap();
        assert_close(
            &format!("portable fused N={n} d={d} tau={tau}"),
            &[got],
            &[want],
            1e-5,
        );
    }
}

#[test]
fn infonce_fused_and_tiled_agree_where_loops_are_long() {
    // Large enough that the fused path needs its bigger workgroups to stay within llvmpipe's
    // shared loop-iteration limit (past it, loops end early and silently); the tiled path is
    // checked against the reference on its own above.
    let (n, d) = (300, 200);
    let (v, u) = pairs(n, d, 3);
    for (device, gpu) in fused_devices() {
        fused_agrees_with_tiled(&gpu, device, n, d, &v, &u);
    }
}

fn fused_agrees_with_tiled(gpu: &Arc<Gpu>, device: &str, n: usize, d: usize, v: &[f64], u: &[f64]) {
    let run = |path| {
        let tv = Tensor::param(gpu, &to_f32(v), &[n, d]).unwrap();
        let tu = Tensor::param(gpu, &to_f32(u), &[n, d]).unwrap();
        let loss = infonce_with(&tv, &tu, 0.1, 0.75, path).unwrap();
        loss.backward().unwrap();
        let grads = [&tv, &tu].map(|t| {
            let g = t.grad().unwrap().to_vec().unwrap();
            g.iter().map(|&x| x as f64).collect::<Vec<f64>>()
        });
        (loss.item().unwrap() as f64, grads)
    };
    let (fused_loss, fused) = run(InfoNcePath::Fused);
    let (tiled_loss, tiled) = run(InfoNcePath::Tiled);
    assert_close(
        &format!("loss, fused{device} vs tiled"),
        &[fused_loss as f32],
        &[tiled_loss],
        1e-5,
    );
    for k in 0..2 {
        let got: Vec<f32> = fused[k].iter().map(|&x| x as f32).collect();
        assert_close(
            &format!("d/d input {k}, fused{device} vs tiled"),
            &got,
            &tiled[k],
            1e-4,
        );
    }
}

#[test]
fn infonce_takes_the_tiled_path_where_the_fused_one_exceeds_the_loop_budget() {
    // 300 iterations per invocation is too few for the fused kernel at N = 32, d = 512 with
    // any workgroup size, in either form: Auto computes the loss on the tiled path, and forcing the fused one
    // is an error that says why.
    let gpu = gpu_with_loop_budget(300);
    let (n, d) = (32, 512);
    let (v, u) = pairs(n, d, 9);
    let up = |x: &[f64]| upload_to(&gpu, x, &[n, d]);
    let want = reference::infonce(&v, &u, n, d, 0.1, 0.75);
    let got = infonce(&up(&v), &up(&u), 0.1, 0.75)
        .unwrap()
        .item()
        .unwrap();
    assert_close("infonce under a small loop budget", &[got], &[want], 1e-5);
    match infonce_with(&up(&v), &up(&u), 0.1, 0.75, InfoNcePath::Fused) {
        Err(Error::Invalid { op: "infonce", why }) => assert!(why.contains("loop"), "{why}"),
        other => panic!("the fused path should refuse: {other:?}"),
    }
}

#[test]
fn infonce_backward_tiled_in_chunks() {
    // A scratch budget of 64 rows of dC forces five chunks of rows at N = 300: grad_u then
    // accumulates over chunks.
    let n = 300;
    let gpu = Gpu::new(GpuOptions {
        poison: true,
        quiet: true,
        scratch_bytes: Some(64 * n as u64 * 4),
        ..GpuOptions::from_env()
    })
    .unwrap();
    sampled_grad_check(
        &gpu,
        InfoNcePath::Tiled,
        "infonce tiled in chunks 300x8",
        n,
        8,
        0.1,
        0.75,
    );
}

#[test]
fn infonce_gradient_to_one_input_only() {
    let (n, d) = (6, 5);
    let (v, u) = pairs(n, d, 11);
    let tv = Tensor::param(&gpu(), &to_f32(&v), &[n, d]).unwrap();
    let tu = upload(&u, &[n, d]);
    infonce(&tv, &tu, 0.1, 0.75).unwrap().backward().unwrap();
    assert!(tu.grad().is_none());
    let h = 1e-6;
    let mut vv = v.clone();
    let fd: Vec<f64> = (0..n * d)
        .map(|e| {
            vv[e] = v[e] + h;
            let lp = reference::infonce(&vv, &u, n, d, 0.1, 0.75);
            vv[e] = v[e] - h;
            let lm = reference::infonce(&vv, &u, n, d, 0.1, 0.75);
            vv[e] = v[e];
            (lp - lm) / (2.0 * h)
        })
        .collect();
    assert_close(
        "infonce d/dv",
        &tv.grad().unwrap().to_vec().unwrap(),
        &fd,
        1e-4,
    );
    // Without grad mode nothing is recorded (and no gradient is computed).
    let y = no_grad(|| infonce(&tv, &tu, 0.1, 0.75)).unwrap();
    assert!(!y.requires_grad_flag());
    assert_eq!(y.shape(), &[] as &[usize]);
}

#[test]
fn infonce_errors() {
    let g = gpu();
    let a = Tensor::zeros(&g, &[4, 3]).unwrap();
    let b = Tensor::zeros(&g, &[4, 2]).unwrap();
    match infonce(&a, &b, 0.1, 0.75) {
        Err(Error::Shape { op: "infonce", .. }) => {}
        other => panic!("shape mismatch: {other:?}"),
    }
    let flat = Tensor::zeros(&g, &[12]).unwrap();
    assert!(matches!(
        infonce(&flat, &flat, 0.1, 0.75),
        Err(Error::Shape { op: "infonce", .. })
    ));
    for empty in [[0, 3], [4, 0]] {
        let e = Tensor::zeros(&g, &empty).unwrap();
        assert!(matches!(
            infonce(&e, &e, 0.1, 0.75),
            Err(Error::Invalid { op: "infonce", .. })
        ));
    }
    for tau in [0.0, -0.1, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(
                infonce(&a, &a, tau, 0.75),
                Err(Error::Invalid { op: "infonce", .. })
            ),
            "tau {tau}"
        );
    }
    for lambda in [-0.1, 1.01, f32::NAN] {
        assert!(
            matches!(
                infonce(&a, &a, 0.1, lambda),
                Err(Error::Invalid { op: "infonce", .. })
            ),
            "lambda {lambda}"
        );
    }
    // Zero rows are normalised to zero (F.normalize's clamp), not NaN: the loss is ln N.
    let y = infonce(&a, &a, 0.1, 0.75).unwrap().item().unwrap();
    assert!((y - 4f32.ln()).abs() < 1e-6, "zero embeddings: {y}");
}

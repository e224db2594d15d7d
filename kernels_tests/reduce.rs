//! Reductions along each axis, including a long axis that spans many loop trips.

use crate::common::*;
use convirt::reference;

// [7, 3, 36] and [1000, 772] take the four-column path along their first axes (a bias
// gradient's shape: 193 invocations of 1000 steps each).
const SHAPES: [&[usize]; 6] = [
    &[1],
    &[3, 1, 37],
    &[5, 300, 7],
    &[100_003],
    &[7, 3, 36],
    &[1000, 772],
];

#[test]
fn sum_mean_max_argmax_forward() {
    for (s, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = Rng::new(s as u64).vec(n, -1.0, 1.0);
        let t = upload(&x, shape);
        for axis in 0..shape.len() {
            let what = format!("shape {shape:?} axis {axis}");
            // Long sums accumulate in f32 over many terms: 1e-5 relative is still strict.
            assert_close(
                &format!("sum {what}"),
                &t.sum(axis).unwrap().to_vec().unwrap(),
                &reference::sum(&x, shape, axis, false),
                1e-5,
            );
            assert_close(
                &format!("mean {what}"),
                &t.mean(axis).unwrap().to_vec().unwrap(),
                &reference::sum(&x, shape, axis, true),
                1e-5,
            );
            let (mx, idx) = reference::max(&x, shape, axis);
            assert_close(
                &format!("max {what}"),
                &t.max(axis).unwrap().to_vec().unwrap(),
                &mx,
                1e-7,
            );
            assert_eq!(
                t.argmax(axis).unwrap().to_vec_u32().unwrap(),
                idx,
                "argmax {what}"
            );
        }
    }
}

#[test]
fn argmax_ties_take_the_first_index() {
    let x = [1.0, 3.0, 3.0, -1.0, 2.0, 2.0, 2.0, 0.0];
    let t = upload(&x, &[2, 4]);
    assert_eq!(t.argmax(1).unwrap().to_vec_u32().unwrap(), vec![1, 0]);
}

#[test]
fn reductions_backward() {
    let shape = [3, 4, 5];
    for axis in 0..3 {
        let mut rng = Rng::new(axis as u64);
        let x = rng.vec(60, -1.0, 1.0);
        check_grad(
            &format!("sum axis {axis}"),
            &[input(x.clone(), &shape)],
            |t| t[0].sum(axis),
            |d| reference::sum(&d[0], &shape, axis, false),
            1e-4,
        );
        check_grad(
            &format!("mean axis {axis}"),
            &[input(x.clone(), &shape)],
            |t| t[0].mean(axis),
            |d| reference::sum(&d[0], &shape, axis, true),
            1e-4,
        );
        // Distinct values 0.01 apart: no tie for finite differences to cross.
        let mut perm: Vec<f64> = (0..60).map(|i| i as f64 * 0.01).collect();
        for i in (1..60).rev() {
            let j = ((rng.uniform() + 1.0) / 2.0 * (i + 1) as f64) as usize % (i + 1);
            perm.swap(i, j);
        }
        check_grad(
            &format!("max axis {axis}"),
            &[input(perm, &shape)],
            |t| t[0].max(axis),
            |d| reference::max(&d[0], &shape, axis).0,
            1e-4,
        );
    }
    check_grad(
        "sum_all",
        &[input(Rng::new(1).vec(17, -1.0, 1.0), &[17])],
        |t| t[0].sum_all(),
        |d| vec![d[0].iter().sum()],
        1e-4,
    );
}

//! Axis permutations of 1 to 4 axes.

use crate::common::*;
use convirt::reference;

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for pos in 0..=p.len() {
            let mut q = p.clone();
            q.insert(pos, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn permute_every_order() {
    for shape in [
        vec![7],
        vec![3, 130],
        vec![2, 3, 5],
        vec![2, 3, 4, 5],
        vec![1, 17, 1, 9],
        // Rows of 32 or more take the row kernel: long last axes in every position.
        vec![3, 5, 2, 70],
        vec![2, 40, 33],
        // ... and where the last axis stays last in rows of whole vec4s, the vec4 copy.
        vec![3, 5, 36],
        vec![2, 3, 2, 44],
    ] {
        let n: usize = shape.iter().product();
        let x = Rng::new(n as u64).vec(n, -1.0, 1.0);
        let t = upload(&x, &shape);
        for dims in permutations(shape.len()) {
            let y = t.permute(&dims).unwrap();
            let want_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
            assert_eq!(y.shape(), want_shape.as_slice());
            assert_eq!(
                y.to_vec().unwrap(),
                crate::common::to_f32(&reference::permute(&x, &shape, &dims)),
                "permute {shape:?} by {dims:?}"
            );
        }
    }
}

#[test]
fn permute_backward() {
    let shape = [2, 3, 4];
    let dims = [2, 0, 1];
    check_grad(
        "permute",
        &[input(Rng::new(2).vec(24, -1.0, 1.0), &shape)],
        |t| t[0].permute(&dims),
        |d| reference::permute(&d[0], &shape, &dims),
        1e-5,
    );
    check_grad(
        "transpose",
        &[input(Rng::new(3).vec(24, -1.0, 1.0), &shape)],
        |t| t[0].transpose(0, 2),
        |d| reference::permute(&d[0], &shape, &[2, 1, 0]),
        1e-5,
    );
}

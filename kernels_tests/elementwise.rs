//! Elementwise maps: forward on awkward sizes, backward by finite differences.

use crate::common::*;
use convirt::ops::{Binary, Unary};
use convirt::{reference, Tensor};

/// 1 element, a prime, and more elements than one row of workgroups holds.
const SIZES: [usize; 3] = [1, 257, 100_003];

/// Input range where the op is defined and smooth enough for finite differences.
fn domain(op: Unary) -> (f64, f64) {
    match op {
        Unary::Log | Unary::Sqrt | Unary::Recip => (0.1, 3.0),
        Unary::Exp => (-3.0, 3.0),
        _ => (-4.0, 4.0),
    }
}

fn apply(op: Unary, t: &Tensor) -> convirt::Result<Tensor> {
    match op {
        Unary::Copy => t.copy(),
        Unary::Affine => t.affine(-1.5, 0.25),
        Unary::Relu => t.relu(),
        Unary::Gelu => t.gelu(),
        Unary::Exp => t.exp(),
        Unary::Log => t.log(),
        Unary::Sqrt => t.sqrt(),
        Unary::Recip => t.recip(),
        Unary::Tanh => t.tanh(),
    }
}

const UNARY: [Unary; 9] = [
    Unary::Copy,
    Unary::Affine,
    Unary::Relu,
    Unary::Gelu,
    Unary::Exp,
    Unary::Log,
    Unary::Sqrt,
    Unary::Recip,
    Unary::Tanh,
];

#[test]
fn unary_forward() {
    for op in UNARY {
        let (lo, hi) = domain(op);
        for (s, &n) in SIZES.iter().enumerate() {
            let x = Rng::new(s as u64 + 100).vec(n, lo, hi);
            let y = apply(op, &upload(&x, &[n]))
                .expect("op")
                .to_vec()
                .expect("download");
            let want: Vec<f64> = x
                .iter()
                .map(|&v| reference::unary(op, v, -1.5, 0.25))
                .collect();
            // GELU's erfc approximation has 1.2e-7 relative error; the others are libm-grade.
            assert_close(&format!("{op:?} n={n}"), &y, &want, 1e-5);
        }
    }
}

#[test]
fn unary_backward() {
    for op in UNARY {
        let (lo, hi) = domain(op);
        let mut x = Rng::new(7).vec(37, lo, hi);
        if op == Unary::Relu {
            // Finite differences cannot cross the kink at 0.
            x.iter_mut()
                .filter(|v| v.abs() < 0.05)
                .for_each(|v| *v = 0.5);
        }
        check_grad(
            &format!("{op:?}"),
            &[input(x, &[37])],
            |t| apply(op, &t[0]),
            |d| {
                d[0].iter()
                    .map(|&v| reference::unary(op, v, -1.5, 0.25))
                    .collect()
            },
            1e-4,
        );
    }
}

type BinaryOp = fn(&Tensor, &Tensor) -> convirt::Result<Tensor>;
const BINARY: [(Binary, BinaryOp); 5] = [
    (Binary::Add, Tensor::add),
    (Binary::AddRelu, Tensor::add_relu),
    (Binary::Sub, Tensor::sub),
    (Binary::Mul, Tensor::mul),
    (Binary::Div, Tensor::div),
];

#[test]
fn binary_forward_and_backward() {
    for (op, f) in BINARY {
        for (s, &n) in SIZES.iter().enumerate() {
            let mut rng = Rng::new(s as u64);
            let x = rng.vec(n, -2.0, 2.0);
            let z = rng.vec(n, 0.5, 2.0); // keeps Div away from 0
            let y = f(&upload(&x, &[n]), &upload(&z, &[n]))
                .expect("op")
                .to_vec()
                .unwrap();
            let want: Vec<f64> = x
                .iter()
                .zip(&z)
                .map(|(&a, &b)| reference::binary(op, a, b))
                .collect();
            assert_close(&format!("{op:?} n={n}"), &y, &want, 1e-5);
        }
        let mut rng = Rng::new(99);
        let (mut x, z) = (rng.vec(23, -2.0, 2.0), rng.vec(23, 0.5, 2.0));
        if op == Binary::AddRelu {
            // Finite differences cannot cross the kink where x + z = 0.
            for (a, &b) in x.iter_mut().zip(&z) {
                if (*a + b).abs() < 0.05 {
                    *a += 0.5;
                }
            }
            assert!(
                x.iter().zip(&z).any(|(a, b)| a + b < 0.0),
                "both sides of the kink"
            );
        }
        check_grad(
            &format!("{op:?}"),
            &[input(x, &[23]), input(z, &[23])],
            |t| f(&t[0], &t[1]),
            |d| {
                d[0].iter()
                    .zip(&d[1])
                    .map(|(&a, &b)| reference::binary(op, a, b))
                    .collect()
            },
            1e-4,
        );
    }
}

#[test]
fn bias_add_forward_and_backward() {
    for (rows, cols) in [(1, 1), (3, 7), (300, 129)] {
        let mut rng = Rng::new(rows as u64);
        let (x, b) = (rng.vec(rows * cols, -1.0, 1.0), rng.vec(cols, -1.0, 1.0));
        let y = upload(&x, &[rows, cols])
            .bias_add(&upload(&b, &[cols]))
            .unwrap();
        assert_close(
            "bias_add",
            &y.to_vec().unwrap(),
            &reference::bias_add(&x, &b),
            1e-6,
        );
    }
    let mut rng = Rng::new(4);
    check_grad(
        "bias_add",
        &[
            input(rng.vec(2 * 3 * 5, -1.0, 1.0), &[2, 3, 5]),
            input(rng.vec(5, -1.0, 1.0), &[5]),
        ],
        |t| t[0].bias_add(&t[1]),
        |d| reference::bias_add(&d[0], &d[1]),
        1e-4,
    );
}

#[test]
fn fill_writes_every_element() {
    for n in SIZES {
        let t = Tensor::full(&gpu(), &[n], -2.5).unwrap().to_vec().unwrap();
        assert!(t.iter().all(|&v| v == -2.5), "fill n={n}");
    }
}

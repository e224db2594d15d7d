//! Softmax and log-softmax along the last axis.

use crate::common::*;
use convirt::reference;

#[test]
fn softmax_forward_awkward_rows() {
    for (rows, cols, scale) in [(1, 1, 1.0), (3, 1000, 1.0), (130, 7, 1.0), (4, 33, 80.0)] {
        // scale 80 gives logits up to +-80: exp overflows without the max shift.
        let x: Vec<f64> = Rng::new(cols as u64).vec(rows * cols, -scale, scale);
        let t = upload(&x, &[rows, cols]);
        for log in [false, true] {
            let y = if log { t.log_softmax() } else { t.softmax() }
                .unwrap()
                .to_vec()
                .unwrap();
            assert_close(
                &format!("softmax log={log} {rows}x{cols} scale {scale}"),
                &y,
                &reference::softmax(&x, cols, log),
                1e-5,
            );
        }
    }
}

#[test]
fn softmax_backward() {
    for log in [false, true] {
        let x = Rng::new(3).vec(3 * 11, -2.0, 2.0);
        check_grad(
            &format!("softmax log={log}"),
            &[input(x, &[3, 11])],
            |t| {
                if log {
                    t[0].log_softmax()
                } else {
                    t[0].softmax()
                }
            },
            |d| reference::softmax(&d[0], 11, log),
            1e-4,
        );
    }
}

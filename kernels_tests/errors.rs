//! Bad input gets an error that names the op and the shapes, never a panic.

use crate::common::*;
use convirt::{Error, Tensor};

#[test]
fn mismatched_shapes_name_the_op_and_both_shapes() {
    let g = gpu();
    let a = Tensor::zeros(&g, &[2, 3]).unwrap();
    let b = Tensor::zeros(&g, &[3, 2]).unwrap();
    let err = a.add(&b).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "binary.add", lhs, rhs, .. } if lhs == &[2, 3] && rhs == &[3, 2]),
        "{err}"
    );
    let err = a.matmul(&a).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("gemm") && msg.contains("[2, 3]") && msg.contains("inner dimensions"),
        "{msg}"
    );
    let err = Tensor::from_slice(&g, &[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(err.to_string().contains("Tensor::from_slice"), "{err}");
    let err = a.bias_add(&Tensor::zeros(&g, &[2]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("bias_add"), "{err}");
    let err = a.sum(2).unwrap_err();
    assert!(err.to_string().contains("axis 2"), "{err}");
    let err = a.permute(&[0, 0]).unwrap_err();
    assert!(err.to_string().contains("permutation"), "{err}");
}

#[test]
fn a_tensor_larger_than_a_storage_binding_is_refused() {
    let g = gpu();
    let limit = g.max_binding_bytes();
    let elements = (limit / 4 + 1) as usize;
    let err = Tensor::zeros(&g, &[elements]).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { op: "fill", bytes, .. } if bytes > limit),
        "{err}"
    );
    assert!(err.to_string().contains("largest storage binding"), "{err}");
}

//! Embedding lookup and its deterministic scatter-add backward.

use crate::common::*;
use convirt::ops::embedding::embedding;
use convirt::{reference, Error, Tensor};

fn random_ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (((rng.uniform() + 1.0) / 2.0 * vocab as f64) as usize).min(vocab - 1) as u32)
        .collect()
}

#[test]
fn embedding_forward_gathers_rows() {
    for (vocab, dim, shape) in [
        (1, 1, vec![1]),
        (10, 7, vec![2, 5]),
        (30, 384, vec![1, 1]),
        (50, 768, vec![4, 33]),
        (1000, 1000, vec![3, 7]),
        (5, 3, vec![700]),
    ] {
        let mut rng = Rng::new((vocab * 13 + dim) as u64);
        let w = rng.vec(vocab * dim, -1.0, 1.0);
        let ids = random_ids(&mut rng, shape.iter().product(), vocab);
        let y = embedding(&upload(&w, &[vocab, dim]), &ids, &shape).unwrap();
        let mut want_shape = shape.clone();
        want_shape.push(dim);
        assert_eq!(y.shape(), want_shape);
        // A gather copies bits: exact.
        assert_eq!(
            y.to_vec().unwrap(),
            to_f32(&reference::embedding(&w, dim, &ids)),
            "embedding V={vocab} D={dim} shape {shape:?}"
        );
    }
}

#[test]
fn embedding_backward_finite_differences() {
    // Repeated ids (1 three times, 4 twice) and ids that never occur (3, 5): their rows of
    // the gradient must be written as zeros.
    let (vocab, dim) = (6, 5);
    let ids = [1u32, 4, 1, 1, 0, 4, 2];
    let w = Rng::new(4).vec(vocab * dim, -1.0, 1.0);
    check_grad(
        "embedding",
        &[input(w, &[vocab, dim])],
        |t| embedding(&t[0], &ids, &[1, 7]),
        |d| reference::embedding(&d[0], dim, &ids),
        1e-4,
    );
}

/// dweight of `L = sum(g * embedding(w, ids))`, from the GPU.
/// The table's gradient by the definition: each position's row of `g` added to its id's row.
fn table_grad_reference(ids: &[u32], g: &[f64], vocab: usize, dim: usize) -> Vec<f64> {
    let mut want = vec![0.0; vocab * dim];
    for (k, &id) in ids.iter().enumerate() {
        for d in 0..dim {
            want[id as usize * dim + d] += g[k * dim + d];
        }
    }
    want
}

fn table_grad(w: &[f64], vocab: usize, dim: usize, ids: &[u32], g: &[f64]) -> Vec<f32> {
    let wt = Tensor::param(&gpu(), &to_f32(w), &[vocab, dim]).unwrap();
    let y = embedding(&wt, ids, &[ids.len()]).unwrap();
    y.mul(&upload(g, y.shape()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    wt.grad().unwrap().to_vec().unwrap()
}

#[test]
fn embedding_backward_is_deterministic_with_many_repeats() {
    // 3000 tokens over a vocabulary of 40, mostly the first few ids (as real text is), rows of
    // 768: every row sums many positions.
    let (vocab, dim, n) = (40, 768, 3000);
    let mut rng = Rng::new(77);
    let ids: Vec<u32> = (0..n)
        .map(|_| {
            let u = (rng.uniform() + 1.0) / 2.0;
            ((u * u * u * 36.0) as u32).min(35)
        })
        .collect();
    let w = rng.vec(vocab * dim, -1.0, 1.0);
    let g = rng.vec(n * dim, -1.0, 1.0);
    let want = table_grad_reference(&ids, &g, vocab, dim);
    let first = table_grad(&w, vocab, dim, &ids, &g);
    assert_close("embedding dweight, many repeats", &first, &want, 1e-5);
    // Ids 36..40 never occur: exact zeros, not NaN from the poisoned buffer.
    assert!(first[36 * dim..].iter().all(|&v| v == 0.0));
    for _ in 0..2 {
        let again = table_grad(&w, vocab, dim, &ids, &g);
        assert!(
            first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "the embedding gradient differs between identical runs"
        );
    }
}

#[test]
fn embedding_backward_of_an_id_repeated_past_the_loop_budget() {
    // One id at 7000 positions with rows of 640 (10 column rounds per invocation): 70000 loop
    // iterations, past llvmpipe's limit of 65535, so the rows' sums are split over dispatches
    // that accumulate. (As token type 0 is at batch 32 x 512 tokens.)
    let (vocab, dim, n) = (3, 640, 7003);
    let mut rng = Rng::new(5);
    let ids: Vec<u32> = (0..n).map(|k| if k % 2333 == 7 { 2 } else { 1 }).collect();
    let w = rng.vec(vocab * dim, -1.0, 1.0);
    let g = rng.vec(n * dim, -1.0, 1.0);
    let want = table_grad_reference(&ids, &g, vocab, dim);
    let got = table_grad(&w, vocab, dim, &ids, &g);
    assert_close("embedding dweight, one id 7000 times", &got, &want, 1e-5);
}

#[test]
fn embedding_backward_split_and_unsplit() {
    // Rows of 70 take 2 column rounds per invocation: a budget of 50 caps a slice at 24
    // occurrences, so id 1's 80 go in 4 accumulating dispatches; an unlimited budget is one
    // dispatch whose slice length must not wrap around.
    let (vocab, dim) = (5, 70);
    let ids: Vec<u32> = (0..100)
        .map(|k| if k % 5 == 0 { k % 3 } else { 1 })
        .collect();
    let mut rng = Rng::new(8);
    let g = rng.vec(ids.len() * dim, -1.0, 1.0);
    let want = table_grad_reference(&ids, &g, vocab, dim);
    for budget in [50, usize::MAX] {
        let gpu = gpu_with_loop_budget(budget);
        let wt = Tensor::param(&gpu, &vec![0.5; vocab * dim], &[vocab, dim]).unwrap();
        let y = embedding(&wt, &ids, &[ids.len()]).unwrap();
        let up = upload_to(&gpu, &g, y.shape());
        y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let got = wt.grad().unwrap().to_vec().unwrap();
        assert_close(
            &format!("embedding dweight, budget {budget}"),
            &got,
            &want,
            1e-5,
        );
    }
}

#[test]
fn embedding_rejects_bad_ids_and_shapes() {
    let g = gpu();
    let w = Tensor::zeros(&g, &[10, 4]).unwrap();
    let err = embedding(&w, &[3, 10, 2], &[3]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Invalid {
                op: "embedding",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("token id 10") && msg.contains("V = 10"),
        "{msg}"
    );
    let err = embedding(&w, &[3, 999], &[2]).unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
    let err = embedding(&w, &[1, 2, 3], &[2, 2]).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "embedding", lhs, rhs, .. } if lhs == &[3] && rhs == &[2, 2]),
        "{err}"
    );
    let flat = Tensor::zeros(&g, &[40]).unwrap();
    let err = embedding(&flat, &[1], &[1]).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { op: "embedding", lhs, .. } if lhs == &[40]),
        "{err}"
    );
}

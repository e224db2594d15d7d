//! Linear probes and retrieval on the GPU: a probe learns a separable problem, its logits
//! match a CPU logistic regression fitted the same way, and cosine similarities match f64.

use crate::common::*;
use convirt::eval::probe::{score, Labels, LinearProbe, ProbeOptions};
use convirt::eval::retrieval::cosine_similarities;

/// Two Gaussian blobs per class in 6 dimensions, class k centred on 2 e_k.
fn blobs(n: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let d = 6;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let k = i % classes;
        for j in 0..d {
            let centre = if j == k { 2.0 } else { 0.0 };
            x.push((centre + rng.uniform()) as f32); // noise in [-1, 1)
        }
        y.push(k);
    }
    (x, y)
}

#[test]
fn probe_separates_classes_and_multilabels() {
    let gpu = gpu();
    let (x, y) = blobs(90, 3, 1);
    let labels = Labels::Classes {
        classes: y.clone(),
        count: 3,
    };
    let probe = LinearProbe::fit(&gpu, &x, 6, &labels, ProbeOptions::default(), 0).unwrap();
    let s = score(&probe.scores(&x).unwrap(), &labels);
    assert!(s.accuracy > 0.95 && s.mean_auc > 0.99, "{s:?}");

    // The same items as 3 binary labels, one unlabelled entry per row.
    let values: Vec<f32> = y
        .iter()
        .enumerate()
        .flat_map(|(i, &k)| {
            (0..3).map(move |c| {
                if c == i % 3 && c != k {
                    f32::NAN
                } else {
                    (c == k) as u8 as f32
                }
            })
        })
        .collect();
    let multi = Labels::MultiLabel { values, count: 3 };
    let probe = LinearProbe::fit(&gpu, &x, 6, &multi, ProbeOptions::default(), 0).unwrap();
    let s = score(&probe.scores(&x).unwrap(), &multi);
    assert!(s.accuracy > 0.95 && s.mean_auc > 0.99, "{s:?}");
}

#[test]
fn probe_on_noise_is_near_chance_on_held_out_items() {
    // Labels independent of the features: held-out AUC must not be far from 0.5.
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let d = 16;
    let x = to_f32(&rng.vec(400 * d, -1.0, 1.0));
    let y: Vec<usize> = (0..400).map(|_| (rng.uniform() < 0.0) as usize).collect();
    let train = Labels::Classes {
        classes: y[..200].to_vec(),
        count: 2,
    };
    let test = Labels::Classes {
        classes: y[200..].to_vec(),
        count: 2,
    };
    let probe =
        LinearProbe::fit(&gpu, &x[..200 * d], d, &train, ProbeOptions::default(), 3).unwrap();
    let s = score(&probe.scores(&x[200 * d..]).unwrap(), &test);
    assert!((s.mean_auc - 0.5).abs() < 0.15, "{s:?}");
}

#[test]
fn cosine_similarities_match_f64() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let (q, m, d) = (7, 33, 13);
    let a = rng.vec(q * d, -1.0, 1.0);
    let b = rng.vec(m * d, -1.0, 1.0);
    let got = cosine_similarities(&gpu, &to_f32(&a), &to_f32(&b), d).unwrap();
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
    let want: Vec<f64> = a
        .chunks(d)
        .flat_map(|x| {
            b.chunks(d).map(move |y| {
                x.iter().zip(y).map(|(u, v)| u * v).sum::<f64>() / (norm(x) * norm(y))
            })
        })
        .collect();
    assert_close("cosine similarities", &got, &want, 1e-5);
}

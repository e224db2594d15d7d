//! Zero-shot retrieval as in the paper's CheXpert 8x200 protocol: every query (an image, by
//! its encoder features; or a sentence, by its projected text embedding against the images'
//! projected embeddings) ranks the candidate images by cosine similarity, and a candidate is a
//! hit when it carries the query's category. Precision@k is averaged over the queries of each
//! category, then over the categories.

use super::metrics::{precision_at_k, top_k};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::GemmOptions;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Cosine similarities `[Q, M]` between the rows of `queries` (`[Q, d]`) and `candidates`
/// (`[M, d]`): rows L2-normalised on the host, the products by the engine's GEMM.
///
/// ```no_run
/// # use convirt::Gpu;
/// # let gpu = Gpu::shared()?;
/// let s = convirt::eval::retrieval::cosine_similarities(&gpu, &[1.0, 0.0], &[2.0, 0.0, 0.0, 3.0], 2)?;
/// assert_eq!(s, vec![1.0, 0.0]);
/// # Ok::<(), convirt::Error>(())
/// ```
pub fn cosine_similarities(
    gpu: &Arc<Gpu>,
    queries: &[f32],
    candidates: &[f32],
    d: usize,
) -> Result<Vec<f32>> {
    if d == 0 || !queries.len().is_multiple_of(d) || !candidates.len().is_multiple_of(d) {
        return Err(Error::Invalid {
            op: "cosine_similarities",
            why: format!(
                "{} query and {} candidate values are not rows of dimension {d}",
                queries.len(),
                candidates.len()
            ),
        });
    }
    let normalised = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter().map(move |v| v / norm)
            })
            .collect()
    };
    let q = Tensor::from_slice(gpu, &normalised(queries), &[queries.len() / d, d])?;
    let c = Tensor::from_slice(gpu, &normalised(candidates), &[candidates.len() / d, d])?;
    no_grad(|| {
        q.gemm(
            &c,
            &GemmOptions {
                trans_b: true,
                ..GemmOptions::default()
            },
        )?
        .to_vec()
    })
}

/// Precision@k of a set of queries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalScores {
    pub ks: Vec<usize>,
    /// `[category][k]`: mean over that category's queries (NaN for a category without one).
    pub per_category: Vec<Vec<f64>>,
    /// `[k]`: mean over the categories that have queries.
    pub mean: Vec<f64>,
    /// Each query's best candidates, best first (as many as the largest k).
    pub top: Vec<Vec<usize>>,
}

/// Scores similarities `sim` (`[Q, M]`, from [`cosine_similarities`]) of queries of categories
/// `query_categories` against candidates of `candidate_categories` (both `< categories`).
pub fn precision_at(
    sim: &[f32],
    query_categories: &[usize],
    candidate_categories: &[usize],
    categories: usize,
    ks: &[usize],
) -> RetrievalScores {
    let m = candidate_categories.len();
    let deepest = ks.iter().copied().max().unwrap_or(0);
    let mut sums = vec![vec![0.0f64; ks.len()]; categories];
    let mut counts = vec![0usize; categories];
    let mut top = Vec::with_capacity(query_categories.len());
    for (row, &cat) in sim.chunks(m.max(1)).zip(query_categories) {
        let best = top_k(row, deepest);
        let hits: Vec<bool> = best
            .iter()
            .map(|&j| candidate_categories[j] == cat)
            .collect();
        for (s, &k) in sums[cat].iter_mut().zip(ks) {
            *s += precision_at_k(&hits, k);
        }
        counts[cat] += 1;
        top.push(best);
    }
    let per_category: Vec<Vec<f64>> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| s.iter().map(|v| v / n as f64).collect())
        .collect();
    let mean = (0..ks.len())
        .map(|i| {
            let present: Vec<f64> = per_category
                .iter()
                .zip(&counts)
                .filter(|(_, &n)| n > 0)
                .map(|(p, _)| p[i])
                .collect();
            present.iter().sum::<f64>() / present.len().max(1) as f64
        })
        .collect();
    RetrievalScores {
        ks: ks.to_vec(),
        per_category,
        mean,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_by_hand() {
        // Two categories, four candidates [0, 1, 0, 1]; similarities chosen so that query 0
        // (category 0) ranks 2, 1, 0, 3 and query 1 (category 1) ranks 3, 1, 2, 0.
        let sim = [0.5, 0.7, 0.9, 0.1, 0.0, 0.8, 0.3, 0.9];
        let r = precision_at(&sim, &[0, 1], &[0, 1, 0, 1], 2, &[1, 2, 4]);
        // Query 0: hits [yes, no, yes, no] -> P@1 1, P@2 1/2, P@4 1/2.
        assert_eq!(r.per_category[0], vec![1.0, 0.5, 0.5]);
        // Query 1: hits [yes, yes, no, no] -> P@1 1, P@2 1, P@4 1/2.
        assert_eq!(r.per_category[1], vec![1.0, 1.0, 0.5]);
        assert_eq!(r.mean, vec![1.0, 0.75, 0.5]);
        assert_eq!(r.top, vec![vec![2, 1, 0, 3], vec![3, 1, 2, 0]]);
    }

    #[test]
    fn categories_without_queries_do_not_count() {
        let r = precision_at(&[0.9, 0.1], &[2], &[2, 0], 3, &[1]);
        assert_eq!(r.mean, vec![1.0]);
        assert!(r.per_category[0][0].is_nan());
    }
}

//! The scores the paper reports, computed on the host: ROC AUC (RSNA, CheXpert, MURA),
//! accuracy (COVIDx), Precision@k (the CheXpert 8x200 retrieval) and the mean and standard
//! deviation over seeds. Plain functions over slices, so a probe or a retrieval run can feed
//! them whatever it collected, and a test can check them by hand.

use std::cmp::Ordering;

/// ROC AUC of `scores` against `labels` (true = positive), computed exactly as the
/// Mann-Whitney U statistic: the probability that a random positive scores above a random
/// negative, where a positive and a negative with the same score count one half. Ties get
/// their average rank, so the result does not depend on the order of the items, and no
/// threshold sweep (with its interpolation) is involved.
///
/// `None` when there are no positives or no negatives (the AUC is undefined, and a task
/// averaging AUCs over findings must say so rather than count it as 0 or 1), and also when a
/// score is NaN (a diverged model has no ranking to measure).
///
/// # Panics
/// When `scores` and `labels` differ in length: that is a bug in the caller, not bad data.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "auc: {} scores but {} labels",
        scores.len(),
        labels.len()
    );
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    // Without NaN, partial_cmp is total; -0.0 and 0.0 compare equal and so share a rank.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(Ordering::Equal));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Items start..end hold ranks start+1 ..= end; their average is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        let positives = order[start..end].iter().filter(|&&i| labels[i]).count();
        rank_sum += rank * positives as f64;
        start = end;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * n))
}

/// [`auc`] over the items whose label is known, for label matrices read with
/// [`Uncertain::Ignore`](super::queries::Uncertain::Ignore): a label of NaN leaves the item
/// out, 1 is a positive, 0 a negative. This is how a multi-label task (CheXpert) scores each
/// finding on the studies that were labelled for it.
///
/// # Panics
/// When the lengths differ, or a label is anything but NaN, 0 or 1: the readers produce only
/// those, so another value is a bug upstream that must not be scored silently.
pub fn masked_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "masked_auc: {} scores but {} labels",
        scores.len(),
        labels.len()
    );
    let mut kept_scores = Vec::with_capacity(scores.len());
    let mut kept_labels = Vec::with_capacity(labels.len());
    for (i, (&s, &l)) in scores.iter().zip(labels).enumerate() {
        if l.is_nan() {
            continue;
        }
        let positive = if l == 1.0 {
            true
        } else if l == 0.0 {
            false
        } else {
            panic!("masked_auc: label {l} at item {i} is not NaN, 0 or 1");
        };
        kept_scores.push(s);
        kept_labels.push(positive);
    }
    auc(&kept_scores, &kept_labels)
}

/// The fraction of `predicted` equal to `truth` (COVIDx's metric). NaN for no items: there is
/// nothing to be right about, and a NaN in a report is more honest than a 0 or a 1.
///
/// # Panics
/// When the lengths differ.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    assert_eq!(
        predicted.len(),
        truth.len(),
        "accuracy: {} predictions but {} true classes",
        predicted.len(),
        truth.len()
    );
    let right = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    right as f64 / predicted.len() as f64
}

/// Precision@k: the fraction of the first `k` retrieved candidates that are hits, where
/// `ranked_labels_match[i]` says whether the i-th best candidate has the query's category.
///
/// When there are fewer than `k` candidates the count of hits is still divided by `k`, as if
/// the missing ones were misses: Precision@k then stays comparable across queries and with the
/// paper's numbers, instead of silently turning into a precision over fewer items.
///
/// # Panics
/// When `k` is 0 (there is no precision at zero).
pub fn precision_at_k(ranked_labels_match: &[bool], k: usize) -> f64 {
    assert!(k > 0, "precision_at_k: k must be at least 1");
    let hits = ranked_labels_match.iter().take(k).filter(|&&m| m).count();
    hits as f64 / k as f64
}

/// Indices of the `k` largest `scores`, best first (all of them, ranked, when there are fewer
/// than `k`). Ties go to the lower index and NaN ranks below every number, so a ranking is
/// deterministic and a NaN score never counts as a retrieval.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let better = |&a: &usize, &b: &usize| -> Ordering {
        let (x, y) = (scores[a], scores[b]);
        let by_score = match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // Descending; -0.0 and 0.0 are a tie.
            (false, false) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
        };
        by_score.then(a.cmp(&b))
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    // The order is total (the index breaks ties), so selecting, then sorting, is exact.
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, better);
        order.truncate(k);
    }
    order.sort_unstable_by(better);
    order
}

/// Mean and sample standard deviation (divisor n - 1) of `values`, for results over several
/// seeds; the deviation is 0 for a single value, and both are NaN for none.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_by_hand() {
        // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs (pos > neg): 0.35 > 0.1, 0.8 > 0.1,
        // 0.8 > 0.4; 0.35 < 0.4. Three of four: 0.75.
        let a = auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert_eq!(a, Some(0.75));
        // Perfect and inverted rankings.
        assert_eq!(auc(&[0.1, 0.2, 0.3], &[false, true, true]), Some(1.0));
        assert_eq!(auc(&[0.3, 0.2, 0.1], &[false, true, true]), Some(0.0));
        // Every score tied: every pair counts one half.
        assert_eq!(
            auc(&[0.5; 5], &[true, false, true, false, false]),
            Some(0.5)
        );
    }

    #[test]
    fn auc_ties_across_classes() {
        // scores 0.3 0.5 0.5 0.5 0.8 0.1, labels - + - + + -.
        // By pairs: positive 0.5 vs negatives (0.3, 0.5, 0.1) = 1 + 1/2 + 1 = 2.5, twice;
        // positive 0.8 beats all three = 3. Total 8 of 3 x 3 = 9 pairs: 8/9.
        // By ranks: ascending 0.1 (1), 0.3 (2), three 0.5s (3, 4, 5 -> 4 each), 0.8 (6);
        // positives' ranks 4 + 4 + 6 = 14, minus 3 * 4 / 2 = 6 gives U = 8; 8 / 9.
        let scores = [0.3, 0.5, 0.5, 0.5, 0.8, 0.1];
        let labels = [false, true, false, true, true, false];
        let a = auc(&scores, &labels).expect("both classes present");
        assert!(close(a, 8.0 / 9.0), "{a}");
        // -0.0 and 0.0 are the same score.
        assert_eq!(auc(&[-0.0, 0.0], &[true, false]), Some(0.5));
    }

    #[test]
    fn auc_matches_pair_counting_and_ignores_order() {
        let mut rng = Rng::new(11);
        for trial in 0..20 {
            let n = 5 + trial * 3;
            // Scores on a coarse grid, so ties are frequent.
            let scores: Vec<f32> = (0..n).map(|_| rng.below(6) as f32 / 5.0).collect();
            let mut labels: Vec<bool> = (0..n).map(|_| rng.bernoulli(0.4)).collect();
            labels[0] = true;
            labels[1] = false;
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..n {
                for j in 0..n {
                    if labels[i] && !labels[j] {
                        den += 1.0;
                        num += match scores[i].partial_cmp(&scores[j]) {
                            Some(Ordering::Greater) => 1.0,
                            Some(Ordering::Equal) => 0.5,
                            _ => 0.0,
                        };
                    }
                }
            }
            let a = auc(&scores, &labels).expect("both classes present");
            assert!(close(a, num / den), "trial {trial}: {a} vs {}", num / den);
            let mut perm: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut perm);
            let s2: Vec<f32> = perm.iter().map(|&i| scores[i]).collect();
            let l2: Vec<bool> = perm.iter().map(|&i| labels[i]).collect();
            let a2 = auc(&s2, &l2).expect("both classes present");
            assert!(close(a, a2), "{a} vs {a2} after shuffling");
        }
    }

    #[test]
    fn auc_undefined() {
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(auc(&[], &[]), None);
        assert_eq!(auc(&[0.1, f32::NAN], &[true, false]), None);
    }

    #[test]
    fn masked_auc_skips_nan() {
        let nan = f32::NAN;
        // Without the NaN items this is the 0.75 case above; the masked items would break it.
        let scores = [0.1, 0.9, 0.4, 0.35, 0.0, 0.8];
        let labels = [0.0, nan, 0.0, 1.0, nan, 1.0];
        assert_eq!(masked_auc(&scores, &labels), Some(0.75));
        assert_eq!(masked_auc(&[0.1, 0.2], &[nan, 1.0]), None);
    }

    #[test]
    #[should_panic(expected = "not NaN, 0 or 1")]
    fn masked_auc_refuses_other_labels() {
        masked_auc(&[0.1, 0.2], &[-1.0, 1.0]);
    }

    #[test]
    fn accuracy_by_hand() {
        assert_eq!(accuracy(&[0, 1, 2, 1], &[0, 1, 1, 1]), 0.75);
        assert!(accuracy(&[], &[]).is_nan());
    }

    #[test]
    fn precision_by_hand() {
        let m = [true, false, true, true, false];
        assert_eq!(precision_at_k(&m, 1), 1.0);
        assert_eq!(precision_at_k(&m, 2), 0.5);
        assert!(close(precision_at_k(&m, 3), 2.0 / 3.0));
        assert_eq!(precision_at_k(&m, 5), 0.6);
        // Fewer candidates than k: 3 hits over k = 10, not over 5.
        assert_eq!(precision_at_k(&m, 10), 0.3);
        assert_eq!(precision_at_k(&[], 5), 0.0);
    }

    #[test]
    fn top_k_order_ties_and_nan() {
        let s = [0.5, 0.9, 0.5, f32::NAN, 0.1, 0.5];
        assert_eq!(top_k(&s, 1), vec![1]);
        assert_eq!(top_k(&s, 3), vec![1, 0, 2]);
        assert_eq!(top_k(&s, 4), vec![1, 0, 2, 5]);
        assert_eq!(top_k(&s, 10), vec![1, 0, 2, 5, 4, 3]);
        assert!(top_k(&s, 0).is_empty());
        assert!(top_k(&[], 3).is_empty());
        // Selection agrees with a full sort on a larger input with many ties.
        let mut rng = Rng::new(5);
        let big: Vec<f32> = (0..500).map(|_| rng.below(20) as f32).collect();
        let full = top_k(&big, big.len());
        for k in [1, 7, 50, 499] {
            assert_eq!(top_k(&big, k), full[..k].to_vec());
        }
        for w in full.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(big[a] > big[b] || (big[a] == big[b] && a < b));
        }
    }

    #[test]
    fn mean_std_by_hand() {
        // Mean 5; squared deviations 9 1 1 1 0 0 4 16 = 32; sample variance 32 / 7.
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!(close(m, 5.0));
        assert!(close(s, (32.0f64 / 7.0).sqrt()));
        assert_eq!(mean_std(&[3.5]), (3.5, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }
}

//! The paper's label fractions (linear probes and fine-tuning with 1%, 10% and 100% of the
//! training labels): a stratified subset, so that a rare class is not lost at 1%, drawn from
//! a seed, so that each of the several seeds a result is averaged over sees its own subset and
//! a rerun sees the same one.

use crate::data::Rng;
use std::collections::BTreeMap;

/// A stratified, seeded subset of the items `0..strata.len()`, where `strata[i]` is item i's
/// stratum (its class, or [`strata_of_multilabel`]'s key). From each non-empty stratum of size
/// n it takes `round(fraction * n)` items, but at least one and at most n, chosen by a
/// shuffle seeded from `seed` and the stratum's key. The result is sorted.
///
/// Each stratum draws from its own stream ([`Rng::fork`] of the key), so its choice does not
/// depend on which other strata exist. The subset for a smaller fraction is not promised to lie
/// inside the subset for a larger one.
///
/// # Panics
/// When `fraction` is not in [0, 1] (NaN included); a command line should check it first and
/// say which flag was wrong.
pub fn label_fraction(strata: &[usize], fraction: f64, seed: u64) -> Vec<usize> {
    assert!(
        (0.0..=1.0).contains(&fraction),
        "label_fraction: the fraction must be in [0, 1], got {fraction}"
    );
    let mut by_stratum: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (item, &key) in strata.iter().enumerate() {
        by_stratum.entry(key).or_default().push(item);
    }
    let root = Rng::new(seed);
    let mut chosen = Vec::new();
    for (key, mut items) in by_stratum {
        let n = items.len();
        let take = ((fraction * n as f64).round() as usize).clamp(1, n);
        root.fork(key as u64).shuffle(&mut items);
        chosen.extend_from_slice(&items[..take]);
    }
    chosen.sort_unstable();
    chosen
}

/// The stratum of each row of a multi-label matrix, for [`label_fraction`]: the index of its
/// first positive label (a value above one half), or, for a row with none, the width of the
/// widest row, a key of its own that no label index can take. NaN (unknown) is not positive.
pub fn strata_of_multilabel(labels: &[Vec<f32>]) -> Vec<usize> {
    let none = labels.iter().map(Vec::len).max().unwrap_or(0);
    labels
        .iter()
        .map(|row| row.iter().position(|&v| v > 0.5).unwrap_or(none))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three strata of sizes 100, 30 and 2, interleaved.
    fn strata() -> Vec<usize> {
        let mut s = Vec::new();
        for i in 0..132 {
            s.push(match i % 66 {
                0 => 2,
                j if j % 4 == 1 && j < 61 => 1,
                _ => 0,
            });
        }
        s
    }

    fn count(strata: &[usize], chosen: &[usize], key: usize) -> usize {
        chosen.iter().filter(|&&i| strata[i] == key).count()
    }

    #[test]
    fn stratified_shares() {
        let s = strata();
        let sizes: Vec<usize> = (0..3)
            .map(|k| s.iter().filter(|&&v| v == k).count())
            .collect();
        assert_eq!(sizes, vec![100, 30, 2]);
        // (fraction, expected count per stratum): round(f * n), at least 1.
        let cases = [
            (0.01, [1, 1, 1]),   // 1.0, 0.3 -> 1, 0.02 -> 1
            (0.1, [10, 3, 1]),   // 10, 3, 0.2 -> 1
            (0.25, [25, 8, 1]),  // 25, 7.5 -> 8, 0.5 -> 1 (away from zero)
            (0.5, [50, 15, 1]),  // 50, 15, 1
            (1.0, [100, 30, 2]), // everything
            (0.0, [1, 1, 1]),    // at least one per stratum
        ];
        for (f, want) in cases {
            let chosen = label_fraction(&s, f, 3);
            for (k, &w) in want.iter().enumerate() {
                assert_eq!(count(&s, &chosen, k), w, "fraction {f}, stratum {k}");
            }
            assert!(chosen.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            assert!(chosen.iter().all(|&i| i < s.len()));
        }
        assert_eq!(label_fraction(&s, 1.0, 9), (0..s.len()).collect::<Vec<_>>());
        assert!(label_fraction(&[], 0.1, 1).is_empty());
    }

    #[test]
    fn deterministic_per_seed_and_different_across_seeds() {
        let s = strata();
        let a = label_fraction(&s, 0.1, 42);
        assert_eq!(a, label_fraction(&s, 0.1, 42));
        let b = label_fraction(&s, 0.1, 43);
        assert_ne!(a, b);
        // A stratum's choice does not depend on the others: drop stratum 2 entirely (give its
        // items a key no one else has, then ignore them) and stratum 0's picks are unchanged.
        let only0: Vec<usize> = a.iter().copied().filter(|&i| s[i] == 0).collect();
        let s2: Vec<usize> = s.iter().map(|&k| if k == 2 { 7 } else { k }).collect();
        let again: Vec<usize> = label_fraction(&s2, 0.1, 42)
            .into_iter()
            .filter(|&i| s2[i] == 0)
            .collect();
        assert_eq!(only0, again);
    }

    #[test]
    #[should_panic(expected = "must be in [0, 1]")]
    fn fraction_out_of_range() {
        label_fraction(&[0, 1], 1.5, 0);
    }

    #[test]
    fn multilabel_strata() {
        let nan = f32::NAN;
        let labels = vec![
            vec![0.0, 1.0, 1.0],
            vec![0.0, 0.0, 0.0],
            vec![nan, 0.0, 1.0],
            vec![1.0, nan, 0.0],
            vec![nan, nan, nan],
        ];
        assert_eq!(strata_of_multilabel(&labels), vec![1, 3, 2, 0, 3]);
        assert!(strata_of_multilabel(&[]).is_empty());
    }
}

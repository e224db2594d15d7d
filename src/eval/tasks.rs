//! The two evaluation tasks as data: a linear-probe task (labelled training and test images)
//! and a retrieval task (candidates, image queries and text queries with categories), made
//! from the embedded synthetic corpus or read from CheXpert-style CSV files.

use super::features::ImageItem;
use super::probe::Labels;
use super::queries::{read_images, read_labels, read_onehot_images, read_texts, Uncertain};
use crate::data::synthetic::{finding_sentences, labels_of, FINDINGS};
use crate::error::{Error, Result};
use std::path::Path;

/// Images with multi-label targets for probes and fine-tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTask {
    pub label_names: Vec<String>,
    pub train: Vec<ImageItem>,
    pub train_labels: Labels,
    pub test: Vec<ImageItem>,
    pub test_labels: Labels,
}

/// Candidates and queries for zero-shot retrieval; categories index `categories`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalTask {
    pub categories: Vec<String>,
    pub candidates: Vec<(ImageItem, usize)>,
    pub image_queries: Vec<(ImageItem, usize)>,
    pub text_queries: Vec<(String, usize)>,
}

/// Seeds of the evaluation corpora: apart from the training corpus (`seed`) and its
/// validation corpus, so no evaluated picture was trained on.
fn probe_seed(seed: u64) -> u64 {
    seed.wrapping_add(0xE7A1_0001)
}

fn retrieval_seed(seed: u64) -> u64 {
    seed.wrapping_add(0xE7A1_0002)
}

impl ProbeTask {
    /// `train` + `test` samples of a fresh synthetic corpus, labelled with its eight findings
    /// (multi-label, as CheXpert).
    pub fn synthetic(train: usize, test: usize, seed: u64) -> ProbeTask {
        let seed = probe_seed(seed);
        let items = |range: std::ops::Range<u64>| -> (Vec<ImageItem>, Labels) {
            let items: Vec<ImageItem> = range
                .clone()
                .map(|index| ImageItem::Synthetic { index, seed })
                .collect();
            let values = range
                .flat_map(|i| labels_of(i, seed).map(|l| l as u8 as f32))
                .collect();
            (
                items,
                Labels::MultiLabel {
                    values,
                    count: FINDINGS.len(),
                },
            )
        };
        let (train_items, train_labels) = items(0..train as u64);
        let (test_items, test_labels) = items(train as u64..(train + test) as u64);
        ProbeTask {
            label_names: FINDINGS.iter().map(|s| s.to_string()).collect(),
            train: train_items,
            train_labels,
            test: test_items,
            test_labels,
        }
    }

    /// Two CheXpert-style label CSVs (`Path` + label columns), image paths under `root`.
    /// `columns` picks the labels (empty: all of them), `uncertain` what -1 becomes.
    pub fn from_csv<S: AsRef<str>>(
        train_csv: &Path,
        test_csv: &Path,
        root: &Path,
        columns: &[S],
        uncertain: Uncertain,
    ) -> Result<ProbeTask> {
        let train = read_labels(train_csv, root, columns, uncertain)?;
        let test = read_labels(test_csv, root, &train.names, uncertain)?;
        let labels = |t: &super::queries::LabelTable| Labels::MultiLabel {
            values: t.labels.iter().flatten().copied().collect(),
            count: t.names.len(),
        };
        Ok(ProbeTask {
            label_names: train.names.clone(),
            train_labels: labels(&train),
            test_labels: labels(&test),
            train: train.paths.into_iter().map(ImageItem::File).collect(),
            test: test.paths.into_iter().map(ImageItem::File).collect(),
        })
    }

    /// Drops the items whose images could not be read (`kept` lists those that were).
    pub fn keep_train(&mut self, kept: &[usize]) {
        self.train = kept.iter().map(|&i| self.train[i].clone()).collect();
        self.train_labels = self.train_labels.subset(kept);
    }

    pub fn keep_test(&mut self, kept: &[usize]) {
        self.test = kept.iter().map(|&i| self.test[i].clone()).collect();
        self.test_labels = self.test_labels.subset(kept);
    }
}

impl RetrievalTask {
    /// The CheXpert 8x200 protocol on the synthetic corpus, with its eight findings as the
    /// categories: `per_category` candidates and `image_queries` image queries of each, all
    /// pictures showing that finding alone, and `text_queries` report sentences describing it.
    pub fn synthetic(
        per_category: usize,
        image_queries: usize,
        text_queries: usize,
        seed: u64,
    ) -> RetrievalTask {
        let rseed = retrieval_seed(seed);
        let k = FINDINGS.len();
        let (mut candidates, mut queries) = (Vec::new(), Vec::new());
        let (mut have_c, mut have_q) = (vec![0usize; k], vec![0usize; k]);
        let mut index = 0u64;
        // About a third of the samples show exactly one finding: this ends after ~3x8x(c+q)
        // label draws (cheap: no picture is drawn here).
        while have_c.iter().any(|&c| c < per_category) || have_q.iter().any(|&q| q < image_queries)
        {
            let labels = labels_of(index, rseed);
            let shown: Vec<usize> = (0..k).filter(|&c| labels[c]).collect();
            if let [cat] = shown[..] {
                let item = ImageItem::Synthetic { index, seed: rseed };
                if have_q[cat] < image_queries {
                    have_q[cat] += 1;
                    queries.push((item, cat));
                } else if have_c[cat] < per_category {
                    have_c[cat] += 1;
                    candidates.push((item, cat));
                }
            }
            index += 1;
        }
        let text_queries = (0..k)
            .flat_map(|cat| {
                finding_sentences(cat, text_queries, rseed)
                    .into_iter()
                    .map(move |s| (s, cat))
            })
            .collect();
        RetrievalTask {
            categories: FINDINGS.iter().map(|s| s.to_string()).collect(),
            candidates,
            image_queries: queries,
            text_queries,
        }
    }

    /// The public CheXpert 8x200 files: `candidates` one-hot over `categories` (e.g.
    /// [`super::queries::CHEXPERT_8X200`]), image queries (`Path`, `Variable`) and text queries
    /// (`Variable`, `Text`); image paths under `root`.
    pub fn from_csv<S: AsRef<str>>(
        candidates: &Path,
        image_queries: &Path,
        text_queries: &Path,
        root: &Path,
        categories: &[S],
    ) -> Result<RetrievalTask> {
        let c = read_onehot_images(candidates, root, categories)?;
        let q = read_images(image_queries, root, &c.categories)?;
        let t = read_texts(text_queries, &c.categories)?;
        if c.items.is_empty() {
            return Err(Error::Invalid {
                op: "retrieval",
                why: format!("{}: no candidates", candidates.display()),
            });
        }
        Ok(RetrievalTask {
            categories: c.categories,
            candidates: c
                .items
                .into_iter()
                .map(|i| (ImageItem::File(i.path), i.category))
                .collect(),
            image_queries: q
                .items
                .into_iter()
                .map(|i| (ImageItem::File(i.path), i.category))
                .collect(),
            text_queries: t.items.into_iter().map(|i| (i.text, i.category)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_retrieval_is_balanced_single_finding_and_disjoint() {
        let t = RetrievalTask::synthetic(6, 2, 3, 0);
        assert_eq!(t.candidates.len(), 6 * FINDINGS.len());
        assert_eq!(t.image_queries.len(), 2 * FINDINGS.len());
        assert_eq!(t.text_queries.len(), 3 * FINDINGS.len());
        for cat in 0..FINDINGS.len() {
            assert_eq!(t.candidates.iter().filter(|c| c.1 == cat).count(), 6);
        }
        for (item, cat) in t.candidates.iter().chain(&t.image_queries) {
            let ImageItem::Synthetic { index, seed } = item else {
                panic!("synthetic items expected")
            };
            let labels = labels_of(*index, *seed);
            assert!(labels[*cat] && labels.iter().filter(|&&l| l).count() == 1);
            assert!(
                !t.image_queries.iter().any(|q| &q.0 == item)
                    || !t.candidates.iter().any(|c| &c.0 == item)
            );
        }
        assert_eq!(t, RetrievalTask::synthetic(6, 2, 3, 0), "deterministic");
    }

    #[test]
    fn synthetic_probe_labels_match_the_corpus() {
        let t = ProbeTask::synthetic(5, 3, 1);
        assert_eq!((t.train.len(), t.test.len()), (5, 3));
        let Labels::MultiLabel { values, count } = &t.test_labels else {
            panic!("multi-label expected")
        };
        let ImageItem::Synthetic { index, seed } = &t.test[1] else {
            panic!()
        };
        assert_eq!(*index, 6);
        let want: Vec<f32> = labels_of(6, *seed)
            .iter()
            .map(|&l| l as u8 as f32)
            .collect();
        assert_eq!(&values[*count..2 * *count], want.as_slice());
    }
}

//! Batches of augmented (image, sentence) pairs for contrastive training, prepared by
//! background threads.
//!
//! Each epoch visits the items in a shuffled order drawn from (seed, epoch). Worker `w` of `W`
//! prepares the items at positions `w, w + W, w + 2W, ...` of that order and sends them down its
//! own bounded channel; the batches are assembled by reading the channels in turn, so they come
//! in order. Each item's augmentation and sentence are drawn from its own stream,
//! `Rng::new(seed).fork(epoch).fork(index)`: the batches are the same whatever the number of
//! workers and however the threads are scheduled.
//!
//! An item the dataset cannot read is skipped with a warning on stderr and counted; the batch
//! is filled from the next items. Too many of them stop the epoch with an error.

use super::augment::Augment;
use super::image::Image;
use super::report::{sample_sentence, sections};
use super::rng::Rng;
use super::synthetic::generate;
use crate::error::{Error, Result};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A source of image-report pairs: item `i` is an image and the candidate sentences of its
/// report (for ConVIRT, the FINDINGS and IMPRESSION sentences: [`sections`]).
pub trait Dataset: Send + Sync {
    /// The number of items.
    fn len(&self) -> usize;

    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i` (`i < len()`); an error (naming the file, if any) for an unreadable item.
    fn get(&self, i: usize) -> Result<(Image, Vec<String>)>;
}

/// The embedded synthetic corpus ([`generate`]), made on the fly: `n` items of `size` px
/// pictures from `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticDataset {
    pub n: usize,
    pub size: usize,
    pub seed: u64,
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.n
    }

    fn get(&self, i: usize) -> Result<(Image, Vec<String>)> {
        if i >= self.n {
            return Err(Error::Invalid {
                op: "SyntheticDataset",
                why: format!("item {i} of a corpus of {}", self.n),
            });
        }
        let sample = generate(i as u64, self.size, self.seed);
        Ok((sample.image, sections(&sample.report)))
    }
}

/// One batch: `images` holds `len()` planar `[3, S, S]` augmented, normalised images one after
/// the other (`[B, 3, S, S]`), `texts[b]` the sentence drawn for image `b` and `indices[b]` its
/// dataset index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairBatch {
    pub images: Vec<f32>,
    pub texts: Vec<String>,
    pub indices: Vec<u64>,
}

impl PairBatch {
    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch holds no pair.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Makes the batches of a [`Dataset`]: see the module documentation.
pub struct PairLoader {
    dataset: Arc<dyn Dataset>,
    augment: Arc<Augment>,
    batch_size: usize,
    seed: u64,
    workers: usize,
    max_skip: f64,
    drop_last: bool,
}

/// Below this many items seen, the skip limit counts as if this many had been seen, so that
/// one bad file among the first few does not stop a run.
const MIN_SEEN: usize = 100;

impl PairLoader {
    /// A loader of batches of `batch_size` pairs, augmented by `augment`, drawn from `seed`.
    /// Defaults: `available_parallelism - 1` workers (at least 1), at most 5% of the items
    /// skipped, and an incomplete last batch dropped.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        augment: Augment,
        batch_size: usize,
        seed: u64,
    ) -> Result<PairLoader> {
        augment.validate()?;
        if batch_size == 0 {
            return Err(Error::Invalid {
                op: "PairLoader",
                why: "the batch size must be at least 1".into(),
            });
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(PairLoader {
            dataset,
            augment: Arc::new(augment),
            batch_size,
            seed,
            workers: cores.saturating_sub(1).max(1),
            max_skip: 0.05,
            drop_last: true,
        })
    }

    /// Uses `n` worker threads (at least 1).
    pub fn with_workers(mut self, n: usize) -> PairLoader {
        self.workers = n.max(1);
        self
    }

    /// Stops an epoch with an error once more than `fraction` of the items seen were skipped
    /// (counted over at least 100 items).
    pub fn with_max_skip_fraction(mut self, fraction: f64) -> PairLoader {
        self.max_skip = fraction;
        self
    }

    /// Whether an epoch's last, incomplete batch is dropped (the default: a contrastive loss
    /// over a smaller batch is not comparable) or delivered.
    pub fn with_drop_last(mut self, drop_last: bool) -> PairLoader {
        self.drop_last = drop_last;
        self
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The side of the square images.
    pub fn image_size(&self) -> usize {
        self.augment.out_size
    }

    /// The batches of epoch `epoch`, in order; worker threads start at once and stop when the
    /// iterator is dropped.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let base = Rng::new(self.seed).fork(epoch);
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        base.fork(u64::MAX).shuffle(&mut order);
        let order = Arc::new(order);
        let workers = self.workers.min(order.len()).max(1);
        let capacity = (2 * self.batch_size).div_ceil(workers);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(capacity);
            let (dataset, augment, order) = (
                Arc::clone(&self.dataset),
                Arc::clone(&self.augment),
                Arc::clone(&order),
            );
            let base = base.clone();
            handles.push(std::thread::spawn(move || {
                for &index in order.iter().skip(w).step_by(workers) {
                    let item = prepare(dataset.as_ref(), &augment, index, base.fork(index as u64));
                    if tx.send(item).is_err() {
                        return; // the epoch was dropped
                    }
                }
            }));
            receivers.push(rx);
        }
        Epoch {
            receivers,
            handles,
            total: order.len(),
            next: 0,
            seen: 0,
            skipped: 0,
            batch_size: self.batch_size,
            max_skip: self.max_skip,
            drop_last: self.drop_last,
            stopped: false,
        }
    }
}

/// One prepared pair: the augmented image, the sentence, the index.
type Prepared = Result<(Vec<f32>, String, u64)>;

/// Reads item `index`, augments the image and draws the sentence, all from `rng`.
fn prepare(dataset: &dyn Dataset, augment: &Augment, index: usize, mut rng: Rng) -> Prepared {
    let (image, sentences) = dataset.get(index)?;
    let bad = |why: String| Error::Invalid {
        op: "PairLoader",
        why: format!("item {index}: {why}"),
    };
    if sentences.is_empty() {
        return Err(bad("its report has no sentence to draw".into()));
    }
    let planes_ok = image.channels == 1 || image.channels == 3;
    if !planes_ok || image.data.len() != image.width * image.height * image.channels {
        return Err(bad(format!(
            "{} values are not {} plane(s) of {} x {}",
            image.data.len(),
            image.channels,
            image.width,
            image.height
        )));
    }
    if image.width == 0 || image.height == 0 {
        return Err(bad("the image has no pixels".into()));
    }
    let (pixels, _) = augment.apply(&image, &mut rng);
    let text = sample_sentence(&sentences, &mut rng).to_string();
    Ok((pixels, text, index as u64))
}

/// The batches of one epoch ([`PairLoader::epoch`]).
pub struct Epoch {
    receivers: Vec<Receiver<Prepared>>,
    handles: Vec<JoinHandle<()>>,
    total: usize,
    next: usize,
    seen: usize,
    skipped: usize,
    batch_size: usize,
    max_skip: f64,
    drop_last: bool,
    stopped: bool,
}

impl Epoch {
    /// Items skipped so far because they could not be read.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Items taken from the dataset so far (skipped ones included).
    pub fn seen(&self) -> usize {
        self.seen
    }

    fn fail(&mut self, why: String) -> Option<Result<PairBatch>> {
        self.stopped = true;
        Some(Err(Error::Invalid {
            op: "PairLoader",
            why,
        }))
    }
}

impl Iterator for Epoch {
    type Item = Result<PairBatch>;

    fn next(&mut self) -> Option<Result<PairBatch>> {
        if self.stopped {
            return None;
        }
        let mut batch = PairBatch::default();
        while batch.len() < self.batch_size && self.next < self.total {
            let rx = &self.receivers[self.next % self.receivers.len()];
            self.next += 1;
            self.seen += 1;
            match rx.recv() {
                Err(_) => {
                    return self.fail(
                        "a worker thread stopped unexpectedly (did the dataset panic?)".into(),
                    )
                }
                Ok(Err(e)) => {
                    self.skipped += 1;
                    eprintln!("convirt: skipping an unreadable item: {e}");
                    let allowed = self.max_skip * self.seen.max(MIN_SEEN) as f64;
                    if self.skipped as f64 > allowed {
                        return self.fail(format!(
                            "{} of the {} items seen so far could not be read, more than {}%; \
                             the last one: {e}",
                            self.skipped,
                            self.seen,
                            self.max_skip * 100.0
                        ));
                    }
                }
                Ok(Ok((pixels, text, index))) => {
                    batch.images.extend_from_slice(&pixels);
                    batch.texts.push(text);
                    batch.indices.push(index);
                }
            }
        }
        let incomplete = batch.len() < self.batch_size;
        if batch.is_empty() || (incomplete && self.drop_last) {
            return None;
        }
        Some(Ok(batch))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channels makes every worker's next send fail, so it returns.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_augment() -> Augment {
        Augment {
            out_size: 24,
            ..Augment::default()
        }
    }

    fn loader(dataset: Arc<dyn Dataset>, workers: usize) -> PairLoader {
        PairLoader::new(dataset, small_augment(), 8, 42)
            .unwrap()
            .with_workers(workers)
    }

    fn synthetic(n: usize) -> Arc<dyn Dataset> {
        Arc::new(SyntheticDataset {
            n,
            size: 40,
            seed: 7,
        })
    }

    #[test]
    fn deterministic_across_runs_and_worker_counts() {
        let data = synthetic(37);
        let run = |workers, epoch| -> Vec<PairBatch> {
            loader(data.clone(), workers)
                .epoch(epoch)
                .collect::<Result<_>>()
                .unwrap()
        };
        let one = run(1, 0);
        assert_eq!(one.len(), 4, "37 items, batches of 8, the last 5 dropped");
        assert!(one
            .iter()
            .all(|b| b.len() == 8 && b.images.len() == 8 * 3 * 24 * 24));
        assert_eq!(one, run(3, 0));
        assert_eq!(one, run(1, 0));
        let other = run(2, 1);
        assert_ne!(
            one[0].indices, other[0].indices,
            "each epoch has its own order"
        );

        // Every item once per epoch; its sentence comes from its own report.
        let all: Vec<PairBatch> = loader(data.clone(), 2)
            .with_drop_last(false)
            .epoch(0)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(all.last().map(PairBatch::len), Some(5));
        let mut indices: Vec<u64> = all.iter().flat_map(|b| b.indices.clone()).collect();
        for b in &all {
            for (text, &i) in b.texts.iter().zip(&b.indices) {
                let (_, sentences) = data.get(i as usize).unwrap();
                assert!(sentences.contains(text), "{text:?} is not from item {i}");
            }
        }
        indices.sort_unstable();
        assert_eq!(indices, (0..37).collect::<Vec<u64>>());
    }

    /// The synthetic corpus with every `every`-th item unreadable.
    struct Flaky {
        inner: SyntheticDataset,
        every: usize,
    }

    impl Dataset for Flaky {
        fn len(&self) -> usize {
            self.inner.len()
        }

        fn get(&self, i: usize) -> Result<(Image, Vec<String>)> {
            if i % self.every == 3 % self.every {
                return Err(Error::Invalid {
                    op: "load_image",
                    why: format!("files/p10/s{i}.jpg: cannot decode it"),
                });
            }
            self.inner.get(i)
        }
    }

    #[test]
    fn unreadable_items_are_skipped_and_counted() {
        let inner = SyntheticDataset {
            n: 60,
            size: 32,
            seed: 1,
        };
        let flaky = Arc::new(Flaky { inner, every: 20 });
        let mut epoch = loader(flaky, 3).with_drop_last(false).epoch(0);
        let mut indices = Vec::new();
        for batch in epoch.by_ref() {
            indices.extend(batch.unwrap().indices);
        }
        assert_eq!(epoch.skipped(), 3, "items 3, 23 and 43");
        assert_eq!(epoch.seen(), 60);
        assert_eq!(indices.len(), 57);
        assert!(indices.iter().all(|i| i % 20 != 3));

        // One in two unreadable: the epoch stops with an error, then ends.
        let inner = SyntheticDataset {
            n: 300,
            size: 16,
            seed: 1,
        };
        let flaky = Arc::new(Flaky { inner, every: 2 });
        let mut epoch = loader(flaky, 2).epoch(0);
        let err = epoch
            .by_ref()
            .find_map(|b| b.err())
            .expect("too many unreadable items is an error");
        assert!(err.to_string().contains("could not be read"), "{err}");
        assert!(err.to_string().contains("cannot decode"), "{err}");
        assert!(epoch.next().is_none());
        assert!(epoch.skipped() > 5);
    }

    #[test]
    fn dropping_an_epoch_early_stops_the_workers() {
        let mut epoch = loader(synthetic(200), 3).epoch(5);
        assert!(epoch.next().is_some_and(|b| b.is_ok()));
        drop(epoch); // joins the workers: returns only if they stop
        assert!(PairLoader::new(synthetic(4), small_augment(), 0, 1).is_err());
    }
}

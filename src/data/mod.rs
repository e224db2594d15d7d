//! The data layer, on the host only (no GPU, no tensors): decoding images and tokenising
//! text into the arrays the encoders take. Everything that can meet bad input returns an error
//! naming the file, so a loader can skip and count a corrupt item instead of stopping.
//!
//! For training: [`synthetic`] makes the embedded default corpus, [`report`] picks the
//! sentences of a report, [`augment`] holds the paper's image augmentations and [`loader`]
//! batches augmented pairs on background threads, all drawn from [`rng`] so that a run is a
//! pure function of its seed. Real pairs come from [`manifest`]: a CSV / JSON-lines manifest or
//! the MIMIC-CXR-JPG tree.

pub mod augment;
pub mod image;
pub mod loader;
pub mod manifest;
pub mod report;
pub mod rng;
pub mod synthetic;
pub mod text;

pub use self::augment::Augment;
pub use self::image::{eval_transform, load_image, Image, IMAGENET_MEAN, IMAGENET_STD};
pub use self::loader::{Dataset, PairBatch, PairLoader, SyntheticDataset};
pub use self::manifest::{ManifestDataset, MimicDataset, ReportSource, Split};
pub use self::rng::Rng;
pub use self::text::{TokenBatch, Tokenizer};

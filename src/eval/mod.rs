//! The paper's evaluation, the host-side parts: the metrics it reports (ROC AUC, accuracy,
//! Precision@k, mean and deviation over seeds), the stratified label fractions of the linear
//! probes (1%, 10%, 100%), and readers for the retrieval query sets (CheXpert 8x200) and the
//! CheXpert-style label tables. No GPU and no tensors here: features come from the encoders,
//! and what is computed on them is plain arithmetic that a test can check by hand.
//!
//! [`metrics`] holds the scores, [`sampling`] the label fractions, [`queries`] the readers.

pub mod metrics;
pub mod queries;
pub mod sampling;

pub use self::metrics::{accuracy, auc, masked_auc, mean_std, precision_at_k, top_k};
pub use self::queries::{
    read_images, read_labels, read_onehot_images, read_texts, ImageQuery, ImageSet, LabelTable,
    TextQuery, TextSet, Uncertain, CHEXPERT_8X200, CHEXPERT_COMPETITION,
};
pub use self::sampling::{label_fraction, strata_of_multilabel};

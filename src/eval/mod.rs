//! The paper's evaluation: the metrics it reports (ROC AUC, accuracy, Precision@k, mean and
//! deviation over seeds), the stratified label fractions of the linear probes (1%, 10%,
//! 100%), readers for the retrieval query sets (CheXpert 8x200) and the CheXpert-style label
//! tables, all plain host arithmetic that a test can check by hand; and the two parts that run
//! on the GPU, over features the encoders computed once.
//!
//! [`metrics`] holds the scores, [`sampling`] the label fractions, [`queries`] the readers;
//! [`probe`] fits logistic regressions on the GPU and [`retrieval`] ranks candidates by cosine
//! similarity with the engine's GEMM.

pub mod features;
pub mod finetune;
pub mod metrics;
pub mod probe;
pub mod queries;
pub mod report;
pub mod retrieval;
pub mod sampling;
pub mod tasks;

pub use self::metrics::{accuracy, auc, masked_auc, mean_std, precision_at_k, top_k};
pub use self::queries::{
    read_images, read_labels, read_onehot_images, read_texts, ImageQuery, ImageSet, LabelTable,
    TextQuery, TextSet, Uncertain, CHEXPERT_8X200, CHEXPERT_COMPETITION,
};
pub use self::sampling::{label_fraction, strata_of_multilabel};

//! Layers: small structs holding their parameters, each knowing its tensor names in the
//! PyTorch state-dict layout (`<prefix>.weight`, `<prefix>.running_mean`, ...), so weights load
//! from and save to torchvision / Hugging Face safetensors files unchanged.

mod batchnorm;
mod conv;
mod embedding;
mod layernorm;
mod linear;
mod weights;

pub use batchnorm::BatchNorm2d;
pub use conv::Conv2d;
pub use embedding::Embedding;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use weights::{Init, StateDict, WeightSource};

use crate::tensor::Tensor;

/// `prefix.name`, or `name` at the top level.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Named tensors in state-dict order: what a layer saves, and what an optimiser updates when
/// filtered to those that require a gradient.
pub type Named = Vec<(String, Tensor)>;

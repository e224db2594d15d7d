//! `Embedding`, as torch.nn.Embedding: a `weight` table [V, D] gathered by token ids.

use super::{join, Init, Named, WeightSource};
use crate::error::Result;
use crate::ops::embedding::embedding;
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct Embedding {
    pub weight: Tensor,
    prefix: String,
}

impl Embedding {
    pub fn new(
        src: &mut WeightSource,
        prefix: &str,
        count: usize,
        dim: usize,
    ) -> Result<Embedding> {
        // BERT initialises embeddings with std 0.02; uniform of the same spread.
        let bound = 0.02 * 3f32.sqrt();
        let weight = src
            .tensor(&join(prefix, "weight"), &[count, dim], Init::Uniform(bound))?
            .requires_grad(true);
        Ok(Embedding {
            weight,
            prefix: prefix.to_string(),
        })
    }

    /// Rows for `ids` (host token ids) of `shape`: `[shape.., D]`.
    pub fn forward(&self, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
        embedding(&self.weight, ids, shape)
    }

    pub fn named(&self, out: &mut Named) {
        out.push((join(&self.prefix, "weight"), self.weight.clone()));
    }
}

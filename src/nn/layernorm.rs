//! `LayerNorm`, as torch.nn.LayerNorm over the last axis: `weight`, `bias` (Hugging Face's BERT
//! names the module `LayerNorm`).

use super::{join, Init, Named, WeightSource};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
    prefix: String,
}

impl LayerNorm {
    pub fn new(src: &mut WeightSource, prefix: &str, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: src
                .tensor(&join(prefix, "weight"), &[dim], Init::Constant(1.0))?
                .requires_grad(true),
            bias: src
                .tensor(&join(prefix, "bias"), &[dim], Init::Constant(0.0))?
                .requires_grad(true),
            eps,
            prefix: prefix.to_string(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.weight, &self.bias, self.eps)
    }

    pub fn named(&self, out: &mut Named) {
        out.push((join(&self.prefix, "weight"), self.weight.clone()));
        out.push((join(&self.prefix, "bias"), self.bias.clone()));
    }
}

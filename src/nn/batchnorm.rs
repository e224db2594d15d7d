//! `BatchNorm2d`, as torch.nn.BatchNorm2d: `weight`, `bias` (trained), `running_mean`,
//! `running_var` (buffers, updated in training mode with momentum), eps 1e-5, momentum 0.1.

use super::{join, Init, Named, WeightSource};
use crate::error::Result;
use crate::ops::batchnorm::{batch_norm_eval, batch_norm_train};
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub eps: f32,
    pub momentum: f32,
    prefix: String,
}

impl BatchNorm2d {
    pub fn new(src: &mut WeightSource, prefix: &str, channels: usize) -> Result<BatchNorm2d> {
        let c = [channels];
        let running_mean = src.tensor(&join(prefix, "running_mean"), &c, Init::Constant(0.0))?;
        let running_var = src.tensor(&join(prefix, "running_var"), &c, Init::Constant(1.0))?;
        Ok(BatchNorm2d {
            weight: src
                .tensor(&join(prefix, "weight"), &c, Init::Constant(1.0))?
                .requires_grad(true),
            bias: src
                .tensor(&join(prefix, "bias"), &c, Init::Constant(0.0))?
                .requires_grad(true),
            running_mean,
            running_var,
            eps: 1e-5,
            momentum: 0.1,
            prefix: prefix.to_string(),
        })
    }

    /// Training mode normalises with the batch's statistics and updates the running ones;
    /// evaluation mode uses the running statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.apply(x, train, false)
    }

    /// `forward` followed by ReLU, fused into the normalisation's passes (forward and
    /// backward) in both modes.
    pub fn forward_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.apply(x, train, true)
    }

    fn apply(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (w, b, rm, rv) = (
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        );
        if train {
            batch_norm_train(x, w, b, rm, rv, self.momentum, self.eps, relu)
        } else {
            batch_norm_eval(x, w, b, rm, rv, self.eps, relu)
        }
    }

    /// Parameters then buffers, in torch's state-dict order.
    pub fn named(&self, out: &mut Named) {
        out.push((join(&self.prefix, "weight"), self.weight.clone()));
        out.push((join(&self.prefix, "bias"), self.bias.clone()));
        out.push((
            join(&self.prefix, "running_mean"),
            self.running_mean.clone(),
        ));
        out.push((join(&self.prefix, "running_var"), self.running_var.clone()));
    }
}

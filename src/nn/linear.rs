//! `Linear`, as torch.nn.Linear: `weight` [out, in], `bias` [out]; y = x W^T + b as one GEMM
//! with the bias in its epilogue.

use super::{join, Init, Named, WeightSource};
use crate::error::Result;
use crate::ops::{Activation, GemmOptions};
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    prefix: String,
}

impl Linear {
    pub fn new(
        src: &mut WeightSource,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = src
            .tensor(
                &join(prefix, "weight"),
                &[out_features, in_features],
                Init::UniformFanIn { gain: 1.0 },
            )?
            .requires_grad(true);
        let bias = if bias {
            let bound = 1.0 / (in_features as f32).sqrt();
            Some(
                src.tensor(&join(prefix, "bias"), &[out_features], Init::Uniform(bound))?
                    .requires_grad(true),
            )
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            prefix: prefix.to_string(),
        })
    }

    /// `x` is `[.., in]`; leading axes are flattened into rows.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Activation::None)
    }

    /// The same with an activation fused into the GEMM's epilogue.
    pub fn forward_with(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        let in_features = self.weight.shape()[1];
        let lead = &x.shape()[..x.rank().saturating_sub(1)];
        let rows: usize = lead.iter().product();
        let x2 = x.reshape(&[rows, *x.shape().last().unwrap_or(&0)])?;
        let opts = GemmOptions {
            trans_b: true,
            bias: self.bias.clone(),
            activation,
            ..Default::default()
        };
        let y = x2.gemm(&self.weight, &opts).map_err(|e| match e {
            crate::Error::Shape { lhs, .. } => crate::Error::Shape {
                op: "Linear",
                lhs,
                rhs: self.weight.shape().to_vec(),
                why: format!(
                    "{} expects inputs whose last axis is {in_features}",
                    self.prefix
                ),
            },
            other => other,
        })?;
        let mut out_shape = lead.to_vec();
        out_shape.push(self.weight.shape()[0]);
        y.reshape(&out_shape)
    }

    /// This layer's tensors under their names.
    pub fn named_tensors(&self) -> Named {
        let mut out = Vec::new();
        self.named(&mut out);
        out
    }

    pub fn named(&self, out: &mut Named) {
        out.push((join(&self.prefix, "weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((join(&self.prefix, "bias"), b.clone()));
        }
    }
}

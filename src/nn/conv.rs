//! `Conv2d`, as torch.nn.Conv2d: `weight` [O, C, KH, KW] and an optional `bias` [O].

use super::{join, Init, Named, WeightSource};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    prefix: String,
}

impl Conv2d {
    /// A square `kernel` x `kernel` convolution named `prefix` (e.g. `layer1.0.conv1`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: &mut WeightSource,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Conv2d> {
        let weight = src
            .tensor(
                &join(prefix, "weight"),
                &[out_channels, in_channels, kernel, kernel],
                Init::UniformFanIn { gain: 1.0 },
            )?
            .requires_grad(true);
        let fan_in = (in_channels * kernel * kernel) as f32;
        let bias = if bias {
            Some(
                src.tensor(
                    &join(prefix, "bias"),
                    &[out_channels],
                    Init::Uniform(1.0 / fan_in.sqrt()),
                )?
                .requires_grad(true),
            )
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride,
            padding,
            prefix: prefix.to_string(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    pub fn named(&self, out: &mut Named) {
        out.push((join(&self.prefix, "weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((join(&self.prefix, "bias"), b.clone()));
        }
    }
}

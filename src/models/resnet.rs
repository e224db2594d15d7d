//! ResNet-18, -34 and -50 in torchvision's layout (BasicBlock and Bottleneck, the stride on the
//! Bottleneck's 3x3 convolution, "V1.5"), with torchvision's tensor names, so ImageNet weights
//! published as safetensors (timm's `resnet50.tv_in1k`, converted torchvision checkpoints) load
//! unchanged.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{join, BatchNorm2d, Conv2d, Linear, Named, StateDict, WeightSource};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The depths we build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
}

impl Arch {
    /// Blocks per stage.
    fn layers(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        self == Arch::ResNet50
    }

    /// Width of the pooled features: 512, or 2048 for the Bottleneck nets.
    pub fn features(self) -> usize {
        if self.bottleneck() {
            2048
        } else {
            512
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Arch> {
        match s.to_ascii_lowercase().as_str() {
            "resnet18" => Ok(Arch::ResNet18),
            "resnet34" => Ok(Arch::ResNet34),
            "resnet50" => Ok(Arch::ResNet50),
            other => Err(Error::Invalid {
                op: "resnet",
                why: format!("unknown architecture '{other}': use resnet18, resnet34 or resnet50"),
            }),
        }
    }
}

/// conv-bn(-relu) pairs of one residual block, and the projection of its shortcut.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(
        src: &mut WeightSource,
        prefix: &str,
        arch: Arch,
        inplanes: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Block> {
        let expansion = if arch.bottleneck() { 4 } else { 1 };
        let out = planes * expansion;
        let pair = |src: &mut WeightSource,
                    i: usize,
                    cin,
                    cout,
                    k,
                    s,
                    p|
         -> Result<(Conv2d, BatchNorm2d)> {
            Ok((
                Conv2d::new(
                    src,
                    &join(prefix, &format!("conv{i}")),
                    cin,
                    cout,
                    k,
                    s,
                    p,
                    false,
                )?,
                BatchNorm2d::new(src, &join(prefix, &format!("bn{i}")), cout)?,
            ))
        };
        let convs = if arch.bottleneck() {
            vec![
                pair(src, 1, inplanes, planes, 1, 1, 0)?,
                pair(src, 2, planes, planes, 3, stride, 1)?,
                pair(src, 3, planes, out, 1, 1, 0)?,
            ]
        } else {
            vec![
                pair(src, 1, inplanes, planes, 3, stride, 1)?,
                pair(src, 2, planes, planes, 3, 1, 1)?,
            ]
        };
        let downsample = if stride != 1 || inplanes != out {
            let ds = join(prefix, "downsample");
            Some((
                Conv2d::new(src, &join(&ds, "0"), inplanes, out, 1, stride, 0, false)?,
                BatchNorm2d::new(src, &join(&ds, "1"), out)?,
            ))
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let z = conv.forward(&h)?;
            // The last one's ReLU comes after the shortcut is added.
            h = if i < last {
                bn.forward_relu(&z, train)?
            } else {
                bn.forward(&z, train)?
            };
        }
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        h.add_relu(&shortcut)
    }

    fn named(&self, out: &mut Named) {
        for (conv, bn) in &self.convs {
            conv.named(out);
            bn.named(out);
        }
        if let Some((conv, bn)) = &self.downsample {
            conv.named(out);
            bn.named(out);
        }
    }
}

/// A torchvision ResNet: stem (7x7/2 conv, batch norm, ReLU, 3x3/2 max pool), four stages of
/// residual blocks, global average pool, and the `fc` classifier.
#[derive(Debug, Clone)]
pub struct ResNet {
    pub arch: Arch,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Block>>,
    pub fc: Linear,
}

/// How to treat the classification head when loading: ConVIRT replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `fc` must be in the file with `num_classes` outputs.
    Required,
    /// `fc` may be missing or of another size; it is then initialised afresh.
    Replaceable,
}

impl ResNet {
    /// Builds the network drawing every tensor from `src` (a file or an initialiser).
    pub fn new(src: &mut WeightSource, arch: Arch, num_classes: usize) -> Result<ResNet> {
        let conv1 = Conv2d::new(src, "conv1", 3, 64, 7, 2, 3, false)?;
        let bn1 = BatchNorm2d::new(src, "bn1", 64)?;
        let expansion = if arch.bottleneck() { 4 } else { 1 };
        let mut inplanes = 64;
        let mut stages = Vec::new();
        for (s, &blocks) in arch.layers().iter().enumerate() {
            let planes = 64 << s;
            let mut stage = Vec::new();
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                stage.push(Block::new(
                    src,
                    &format!("layer{}.{b}", s + 1),
                    arch,
                    inplanes,
                    planes,
                    stride,
                )?);
                inplanes = planes * expansion;
            }
            stages.push(stage);
        }
        let fc = Linear::new(src, "fc", arch.features(), num_classes, true)?;
        Ok(ResNet {
            arch,
            conv1,
            bn1,
            stages,
            fc,
        })
    }

    /// Freshly initialised (torch's default initialisers), deterministic in `seed`.
    pub fn random(gpu: &Arc<Gpu>, arch: Arch, num_classes: usize, seed: u64) -> Result<ResNet> {
        ResNet::new(&mut WeightSource::random(gpu, seed), arch, num_classes)
    }

    /// Loads a torchvision / timm state dict from safetensors: every tensor must be there with
    /// its shape, and none may be left over, except the head when `head` allows replacing it.
    pub fn load(
        gpu: &Arc<Gpu>,
        path: &Path,
        arch: Arch,
        num_classes: usize,
        head: Head,
    ) -> Result<ResNet> {
        let mut src = WeightSource::from_file(gpu, path)?;
        if head == Head::Replaceable {
            src = src.allow_replacing("fc.");
        }
        let net = ResNet::new(&mut src, arch, num_classes)?;
        src.finish()?;
        Ok(net)
    }

    /// Writes the state dict (torchvision names) to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([("arch".to_string(), self.arch.name().to_string())]);
        StateDict::write(path, &self.named(), meta)
    }

    /// The device the weights live on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        self.conv1.weight.gpu()
    }

    /// The 512- or 2048-d globally average-pooled features of `x` ([N, 3, H, W]).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[1] != 3 {
            return Err(Error::Shape {
                op: "resnet",
                lhs: x.shape().to_vec(),
                rhs: vec![0, 3, 0, 0],
                why: "the input must be a batch of 3-channel images [N, 3, H, W]".into(),
            });
        }
        let mut h = self
            .bn1
            .forward_relu(&self.conv1.forward(x)?, train)?
            .max_pool2d(3, 2, 1)?;
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h, train)?;
            }
        }
        h.global_avg_pool2d()
    }

    /// Replaces every batch norm's running statistics by their mean over `batches` (each
    /// [N, 3, H, W]), computed with the current weights: "precise BN" (Wu and Johnson,
    /// *Rethinking "Batch" in BatchNorm*, 2021). The running averages kept in training mode
    /// trail weights that move fast, so a model evaluated mid-training with them is judged with
    /// the statistics of earlier weights. Each batch runs the encoder forward in training mode
    /// without a graph, with momentum `1 / (k + 1)` for the k-th (torch's cumulative average);
    /// the momentum is restored afterwards.
    ///
    /// ```no_run
    /// # use convirt::{Gpu, Tensor, models::resnet::{Arch, ResNet}};
    /// # let gpu = Gpu::shared()?;
    /// let mut net = ResNet::random(&gpu, Arch::ResNet18, 10, 0)?;
    /// let images = Tensor::full(&gpu, &[4, 3, 32, 32], 0.5)?;
    /// net.recompute_batch_norm_statistics(&[images])?;
    /// # Ok::<(), convirt::Error>(())
    /// ```
    pub fn recompute_batch_norm_statistics(&mut self, batches: &[Tensor]) -> Result<()> {
        let kept: Vec<f32> = self
            .batch_norms_mut()
            .iter()
            .map(|bn| bn.momentum)
            .collect();
        let mut result = Ok(());
        for (k, x) in batches.iter().enumerate() {
            for bn in self.batch_norms_mut() {
                bn.momentum = 1.0 / (k + 1) as f32;
            }
            result = no_grad(|| self.features(x, true)).map(drop);
            if result.is_err() {
                break;
            }
        }
        for (bn, m) in self.batch_norms_mut().into_iter().zip(kept) {
            bn.momentum = m;
        }
        result
    }

    /// Every batch norm, the stem's first.
    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let mut out = vec![&mut self.bn1];
        for block in self.stages.iter_mut().flatten() {
            out.extend(block.convs.iter_mut().map(|(_, bn)| bn));
            out.extend(block.downsample.iter_mut().map(|(_, bn)| bn));
        }
        out
    }

    /// Class logits (`fc` applied to the pooled features).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.fc.forward(&self.features(x, train)?)
    }

    /// Every tensor in torchvision's state-dict order (num_batches_tracked excepted).
    pub fn named(&self) -> Named {
        let mut out = Vec::new();
        self.conv1.named(&mut out);
        self.bn1.named(&mut out);
        for stage in &self.stages {
            for block in stage {
                block.named(&mut out);
            }
        }
        self.fc.named(&mut out);
        out
    }

    /// The trainable parameters (frozen ones and running statistics excluded).
    pub fn parameters(&self) -> Named {
        self.named()
            .into_iter()
            .filter(|(_, t)| t.requires_grad_flag())
            .collect()
    }
}

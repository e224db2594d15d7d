//! ConVIRT (Zhang et al. 2020): an image encoder and a text encoder, each followed by a
//! projection head (Linear(d, d), ReLU, Linear(d, 512)), trained so that an image and a
//! sentence of its own report land close together in the shared space (the loss is
//! `ops::infonce`).

use crate::error::Result;
use crate::models::bert::{BertConfig, BertModel, Mode, TokenBatch};
use crate::models::resnet::{Arch, ResNet};
use crate::nn::{join, Linear, Named, WeightSource};
use crate::ops::Activation;
use crate::tensor::Tensor;

/// Width of the shared embedding space.
pub const EMBEDDING_DIM: usize = 512;

/// Linear(d, d) -> ReLU -> Linear(d, 512), the ReLU fused into the first GEMM.
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    hidden: Linear,
    out: Linear,
}

impl ProjectionHead {
    pub fn new(src: &mut WeightSource, prefix: &str, dim: usize) -> Result<ProjectionHead> {
        Ok(ProjectionHead {
            hidden: Linear::new(src, &join(prefix, "0"), dim, dim, true)?,
            out: Linear::new(src, &join(prefix, "2"), dim, EMBEDDING_DIM, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out
            .forward(&self.hidden.forward_with(x, Activation::Relu)?)
    }

    pub fn named(&self, out: &mut Named) {
        self.hidden.named(out);
        self.out.named(out);
    }
}

/// The two encoders and their heads. Tensor names: `image.<torchvision names>`,
/// `text.<Hugging Face names>`, `image_head.{0,2}.*`, `text_head.{0,2}.*`.
#[derive(Debug, Clone)]
pub struct ConVirt {
    pub image: ResNet,
    pub text: BertModel,
    pub image_head: ProjectionHead,
    pub text_head: ProjectionHead,
}

impl ConVirt {
    /// Builds all parts from `src` (initialised, or a checkpoint written by `named`). The
    /// ResNet's ImageNet classifier `fc` is not part of ConVIRT: it is frozen, left out of
    /// `named`, and not required in a checkpoint.
    pub fn new(src: &mut WeightSource, arch: Arch, text: &BertConfig) -> Result<ConVirt> {
        src.allow_replacing_mut("image.fc.");
        let image = src.scoped("image", |s| ResNet::new(s, arch, 1000))?;
        for (_, t) in image.fc.named_tensors() {
            t.set_requires_grad(false);
        }
        let text_model = src.scoped("text", |s| BertModel::new(s, text, false))?;
        Ok(ConVirt {
            image_head: ProjectionHead::new(src, "image_head", arch.features())?,
            text_head: ProjectionHead::new(src, "text_head", text.hidden_size)?,
            image,
            text: text_model,
        })
    }

    /// Image embeddings [N, 512] of images [N, 3, H, W] (not normalised: the loss does that).
    pub fn embed_images(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.image_head
            .forward(&self.image.features(images, train)?)
    }

    /// Image embeddings [N, 512] of pooled encoder features [N, d]: what retrieval compares
    /// text queries with, from features computed once.
    pub fn project_image_features(&self, features: &Tensor) -> Result<Tensor> {
        self.image_head.forward(features)
    }

    /// Text embeddings [N, 512]: BERT's token outputs max-pooled over the real tokens.
    pub fn embed_texts(&self, tokens: &TokenBatch, mode: Mode) -> Result<Tensor> {
        let hidden = self.text.forward(tokens, mode)?;
        let gpu = hidden.gpu().clone();
        let mask = Tensor::from_slice(&gpu, &tokens.mask, &[tokens.batch, tokens.seq])?;
        self.text_head.forward(&hidden.masked_max_pool(&mask)?)
    }

    /// Every tensor (parameters and batch-norm statistics) under its checkpoint name.
    pub fn named(&self) -> Named {
        let mut out = Vec::new();
        out.extend(
            self.image
                .named()
                .into_iter()
                .filter(|(n, _)| !n.starts_with("fc."))
                .map(|(n, t)| (join("image", &n), t)),
        );
        out.extend(
            self.text
                .named()
                .into_iter()
                .map(|(n, t)| (join("text", &n), t)),
        );
        self.image_head.named(&mut out);
        self.text_head.named(&mut out);
        out
    }

    /// The trainable parameters (frozen ones excluded).
    pub fn parameters(&self) -> Named {
        self.named()
            .into_iter()
            .filter(|(_, t)| t.requires_grad_flag())
            .collect()
    }
}

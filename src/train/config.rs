//! What a training run is: encoders, data, optimisation. Saved in every checkpoint (as JSON in
//! its metadata) so `--resume` continues the same run.

use crate::data::augment::Augmentation;
use crate::error::{Error, Result};
use crate::models::bert::BertConfig;
use crate::models::resnet::Arch;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// `small` (the embedded default) or `paper`.
    pub name: String,
    pub arch: Arch,
    pub image_size: usize,
    /// How training images are augmented (validation never is).
    pub augment: Augmentation,
    pub text: BertConfig,
    /// Embeddings and this many first BERT layers get no gradient.
    pub frozen_layers: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub tau: f32,
    pub lambda: f32,
    pub steps: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub max_tokens: usize,
    pub clip_grad_norm: Option<f32>,
    pub seed: u64,
    /// Synthetic corpus sizes (ignored for real data).
    pub train_samples: usize,
    pub val_samples: usize,
    pub vocab_size: usize,
    pub plateau_factor: f32,
    pub plateau_patience: usize,
    /// Training batches on which the image encoder's batch-norm statistics are re-estimated
    /// with the current weights before each validation and so before the checkpoint the run
    /// ends with (see `Trainer::recompute_batch_norm_statistics`); 0 keeps the running
    /// averages of training.
    pub bn_batches: usize,
}

impl TrainConfig {
    /// The embedded default: ResNet-18 at 64 px and a 2-layer BERT of width 256, both from
    /// scratch, on the synthetic corpus with mild augmentation, sized to finish within ten
    /// minutes on a 2-core CPU through lavapipe.
    pub fn small() -> TrainConfig {
        TrainConfig {
            name: "small".into(),
            arch: Arch::ResNet18,
            image_size: 64,
            augment: Augmentation::Mild,
            text: BertConfig {
                vocab_size: 0, // set from the trained vocabulary
                hidden_size: 256,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                intermediate_size: 1024,
                max_position_embeddings: 64,
                type_vocab_size: 2,
                layer_norm_eps: 1e-12,
                hidden_dropout_prob: 0.1,
                attention_probs_dropout_prob: 0.1,
            },
            frozen_layers: 0,
            batch: 32,
            // From scratch, 3e-4 learns fastest: the paper's 1e-4 (for pretrained encoders)
            // barely moves in the steps that fit, and 1e-3 collapses both embeddings to a
            // constant (loss ln N), here and in a PyTorch replica alike.
            lr: 3e-4,
            weight_decay: 1e-6,
            tau: 0.1,
            lambda: 0.75,
            steps: 200,
            eval_every: 20,
            checkpoint_every: 100,
            max_tokens: 48,
            clip_grad_norm: None,
            seed: 0,
            // Drawn fresh rather than repeated: 200 steps see 6400 pairs.
            train_samples: 8192,
            val_samples: 128,
            vocab_size: 1000,
            plateau_factor: 0.5,
            plateau_patience: 5,
            // 64 images: the running averages trail weights that move fast from scratch (the
            // default run's validation loss jumped from 3.34 to 3.51 between its last two
            // evaluations with them, with the training loss falling). Each batch costs a
            // forward pass of the image encoder per validation.
            bn_batches: 2,
        }
    }

    /// The paper's configuration: ResNet-50 at 224 px, BERT-base with the embeddings and 6
    /// layers frozen, batch 32, Adam 1e-4 with weight decay 1e-6, tau 0.1, lambda 0.75.
    pub fn paper() -> TrainConfig {
        TrainConfig {
            name: "paper".into(),
            arch: Arch::ResNet50,
            image_size: 224,
            augment: Augmentation::Paper,
            text: BertConfig::base(28996),
            frozen_layers: 6,
            lr: 1e-4,
            steps: 10_000,
            eval_every: 500,
            checkpoint_every: 500,
            max_tokens: 128,
            ..TrainConfig::small()
        }
    }

    pub fn to_json(&self) -> String {
        let t = &self.text;
        json!({
            "name": self.name, "arch": self.arch.name(), "image_size": self.image_size, "augment": self.augment.name(),
            "text": {"vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "num_hidden_layers": t.num_hidden_layers,
                     "num_attention_heads": t.num_attention_heads, "intermediate_size": t.intermediate_size,
                     "max_position_embeddings": t.max_position_embeddings, "type_vocab_size": t.type_vocab_size,
                     "layer_norm_eps": t.layer_norm_eps, "hidden_dropout_prob": t.hidden_dropout_prob,
                     "attention_probs_dropout_prob": t.attention_probs_dropout_prob},
            "frozen_layers": self.frozen_layers, "batch": self.batch, "lr": self.lr, "weight_decay": self.weight_decay,
            "tau": self.tau, "lambda": self.lambda, "steps": self.steps, "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every, "max_tokens": self.max_tokens, "clip_grad_norm": self.clip_grad_norm,
            "seed": self.seed, "train_samples": self.train_samples, "val_samples": self.val_samples,
            "vocab_size": self.vocab_size, "plateau_factor": self.plateau_factor, "plateau_patience": self.plateau_patience,
            "bn_batches": self.bn_batches,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let bad = |why: String| Error::Invalid {
            op: "TrainConfig",
            why,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let get = |v: &Value, k: &str| {
            v.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing '{k}'")))
        };
        let int = |v: &Value, k: &str| {
            get(v, k)?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("'{k}' is not an integer")))
        };
        let float = |v: &Value, k: &str| {
            get(v, k)?
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| bad(format!("'{k}' is not a number")))
        };
        let t = get(&v, "text")?;
        Ok(TrainConfig {
            name: get(&v, "name")?.as_str().unwrap_or("custom").to_string(),
            arch: get(&v, "arch")?.as_str().unwrap_or_default().parse()?,
            image_size: int(&v, "image_size")?,
            // Checkpoints from before the setting existed were trained with the paper's.
            augment: match v.get("augment").and_then(Value::as_str) {
                Some(name) => name.parse()?,
                None => Augmentation::Paper,
            },
            text: BertConfig {
                vocab_size: int(&t, "vocab_size")?,
                hidden_size: int(&t, "hidden_size")?,
                num_hidden_layers: int(&t, "num_hidden_layers")?,
                num_attention_heads: int(&t, "num_attention_heads")?,
                intermediate_size: int(&t, "intermediate_size")?,
                max_position_embeddings: int(&t, "max_position_embeddings")?,
                type_vocab_size: int(&t, "type_vocab_size")?,
                layer_norm_eps: float(&t, "layer_norm_eps")?,
                hidden_dropout_prob: float(&t, "hidden_dropout_prob")?,
                attention_probs_dropout_prob: float(&t, "attention_probs_dropout_prob")?,
            },
            frozen_layers: int(&v, "frozen_layers")?,
            batch: int(&v, "batch")?,
            lr: float(&v, "lr")?,
            weight_decay: float(&v, "weight_decay")?,
            tau: float(&v, "tau")?,
            lambda: float(&v, "lambda")?,
            steps: int(&v, "steps")?,
            eval_every: int(&v, "eval_every")?,
            checkpoint_every: int(&v, "checkpoint_every")?,
            max_tokens: int(&v, "max_tokens")?,
            clip_grad_norm: v
                .get("clip_grad_norm")
                .and_then(Value::as_f64)
                .map(|x| x as f32),
            seed: int(&v, "seed")? as u64,
            train_samples: int(&v, "train_samples")?,
            val_samples: int(&v, "val_samples")?,
            vocab_size: int(&v, "vocab_size")?,
            plateau_factor: float(&v, "plateau_factor")?,
            plateau_patience: int(&v, "plateau_patience")?,
            // Checkpoints from before the setting existed kept the running averages.
            bn_batches: match v.get("bn_batches") {
                Some(_) => int(&v, "bn_batches")?,
                None => 0,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        for c in [TrainConfig::small(), TrainConfig::paper()] {
            assert_eq!(TrainConfig::from_json(&c.to_json()).unwrap(), c);
        }
    }

    #[test]
    fn configs_saved_before_the_augment_setting_read_as_the_papers() {
        let mut v: Value = serde_json::from_str(&TrainConfig::small().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("augment");
        let c = TrainConfig::from_json(&v.to_string()).unwrap();
        assert_eq!(c.augment, Augmentation::Paper);
        v["augment"] = "wild".into();
        assert!(TrainConfig::from_json(&v.to_string()).is_err());
    }

    #[test]
    fn configs_saved_before_the_bn_setting_keep_the_running_averages() {
        let mut v: Value = serde_json::from_str(&TrainConfig::small().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("bn_batches");
        assert_eq!(
            TrainConfig::from_json(&v.to_string()).unwrap().bn_batches,
            0
        );
        v["bn_batches"] = "four".into();
        assert!(TrainConfig::from_json(&v.to_string()).is_err());
    }
}

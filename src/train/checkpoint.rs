//! Checkpoints: one safetensors file with the model (`model.*`), Adam's moments (`adam.m.*`,
//! `adam.v.*`), and in its metadata the step, learning rate, schedule state and the run's
//! config; the tokenizer beside it. Written atomically (temporary file, then rename), so an
//! interrupted save leaves the previous checkpoint intact.

use super::{Plateau, TrainConfig, Trainer};
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::convirt::ConVirt;
use crate::nn::{StateDict, WeightSource};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";

pub fn save_checkpoint(t: &Trainer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Invalid {
        op: "checkpoint",
        why: format!("{}: {e}", dir.display()),
    })?;
    let mut tensors: Vec<(String, crate::Tensor)> = t
        .model
        .named()
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    let (adam_step, moments) = t.adam.state();
    for ((name, _), (m, v)) in t.model.parameters().into_iter().zip(moments) {
        tensors.push((format!("adam.m.{name}"), m));
        tensors.push((format!("adam.v.{name}"), v));
    }
    let meta = HashMap::from([
        ("format".to_string(), "convirt-checkpoint-1".to_string()),
        ("step".to_string(), t.step.to_string()),
        ("adam_step".to_string(), adam_step.to_string()),
        ("lr".to_string(), t.adam.lr().to_string()),
        ("plateau_best".to_string(), t.plateau.best.to_string()),
        (
            "plateau_bad".to_string(),
            t.plateau.bad_evaluations.to_string(),
        ),
        ("config".to_string(), t.config.to_json()),
    ]);
    // The tokenizer first: a checkpoint file never refers to a tokenizer not yet written.
    let tok_tmp = dir.join(format!("{TOKENIZER_FILE}.tmp"));
    t.tokenizer.save(&tok_tmp)?;
    std::fs::rename(&tok_tmp, dir.join(TOKENIZER_FILE)).map_err(|e| Error::Invalid {
        op: "checkpoint",
        why: format!("{}: {e}", dir.display()),
    })?;
    StateDict::write(&dir.join(CHECKPOINT_FILE), &tensors, meta)
}

/// Resumes the run saved in `dir`: same config, weights, optimiser state, step and schedule.
pub fn load_checkpoint(gpu: &Arc<Gpu>, dir: &Path) -> Result<Trainer> {
    let path = dir.join(CHECKPOINT_FILE);
    let bad = |why: String| Error::Invalid {
        op: "checkpoint",
        why: format!("{}: {why}", path.display()),
    };
    let dict = StateDict::read(&path)?;
    let meta = |k: &str| {
        dict.metadata
            .get(k)
            .cloned()
            .ok_or_else(|| bad(format!("no '{k}' in its metadata")))
    };
    let config = TrainConfig::from_json(&meta("config")?)?;
    let number = |k: &str| -> Result<f64> {
        meta(k)?
            .parse::<f64>()
            .map_err(|e| bad(format!("'{k}': {e}")))
    };
    let tokenizer = Tokenizer::from_file(&dir.join(TOKENIZER_FILE), config.max_tokens)?;

    let mut src = WeightSource::from_file(gpu, &path)?.ignore("adam.");
    let model = src.scoped("model", |s| ConVirt::new(s, config.arch, &config.text))?;
    src.finish()?;
    model.text.freeze(config.frozen_layers);
    let mut trainer = Trainer::from_parts(config, tokenizer, model)?;
    let mut moments = Vec::new();
    for (name, p) in trainer.model.parameters() {
        let get = |kind: &str| -> Result<crate::Tensor> {
            let key = format!("adam.{kind}.{name}");
            let (shape, data) = dict
                .tensors
                .get(&key)
                .ok_or_else(|| bad(format!("missing optimiser state '{key}'")))?;
            if shape.as_slice() != p.shape() {
                return Err(bad(format!(
                    "'{key}' has shape {shape:?}, the parameter {:?}",
                    p.shape()
                )));
            }
            crate::Tensor::from_slice(gpu, data, shape)
        };
        moments.push((get("m")?, get("v")?));
    }
    trainer.adam.restore(number("adam_step")? as u64, moments)?;
    trainer.adam.set_lr(number("lr")? as f32);
    trainer.step = number("step")? as usize;
    trainer.plateau = Plateau {
        best: number("plateau_best")? as f32,
        bad_evaluations: number("plateau_bad")? as usize,
        ..trainer.plateau
    };
    Ok(trainer)
}

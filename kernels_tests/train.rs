//! Training: a resumed run continues exactly (same next-step loss), and a checkpoint written
//! mid-run is complete (model, optimiser moments, step, schedule, config, tokenizer).

use crate::common::*;
use convirt::data::augment::Augment;
use convirt::data::loader::{Dataset, PairLoader, SyntheticDataset};
use convirt::data::Tokenizer;
use convirt::models::bert::BertConfig;
use convirt::models::resnet::Arch;
use convirt::nn::WeightSource;
use convirt::train::{load_checkpoint, save_checkpoint, TrainConfig, Trainer};
use std::sync::Arc;

fn tiny() -> (
    TrainConfig,
    Tokenizer,
    Vec<convirt::data::loader::PairBatch>,
) {
    let mut c = TrainConfig::small();
    c.arch = Arch::ResNet18;
    c.image_size = 32;
    c.batch = 4;
    c.text = BertConfig {
        vocab_size: 0,
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        intermediate_size: 64,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
    };
    let data: Arc<dyn Dataset> = Arc::new(SyntheticDataset {
        n: 16,
        size: 40,
        seed: 3,
    });
    let mut sentences = Vec::new();
    for i in 0..data.len() {
        sentences.extend(data.get(i).unwrap().1);
    }
    let tokenizer = Tokenizer::train_wordpiece(&sentences, 200, true, 32).unwrap();
    c.text.vocab_size = tokenizer.vocab_size();
    let augment = Augment {
        out_size: 32,
        ..Augment::default()
    };
    let batches = PairLoader::new(data, augment, 4, 5)
        .unwrap()
        .epoch(0)
        .collect::<convirt::Result<Vec<_>>>()
        .unwrap();
    (c, tokenizer, batches)
}

#[test]
fn a_resumed_run_gives_the_same_next_step_loss() {
    let (c, tokenizer, batches) = tiny();
    let dir = std::env::temp_dir().join(format!("convirt-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut run =
        Trainer::new(c.clone(), tokenizer, &mut WeightSource::random(&gpu(), 11)).unwrap();
    for b in &batches[..2] {
        run.train_step(b).unwrap();
    }
    run.schedule(3.0);
    save_checkpoint(&run, &dir).unwrap();
    let uninterrupted = run.train_step(&batches[2]).unwrap();

    let mut resumed = load_checkpoint(&gpu(), &dir).unwrap();
    assert_eq!(resumed.step, 2);
    assert_eq!(resumed.config, c);
    assert_eq!(resumed.plateau, run.plateau);
    assert_eq!(resumed.adam.lr(), run.adam.lr());
    let again = resumed.train_step(&batches[2]).unwrap();
    assert_eq!(
        again, uninterrupted,
        "the resumed run diverged at its first step"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

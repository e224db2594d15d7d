//! `cargo run --release --example train`: ConVIRT pretraining.
//!
//! With no arguments: the embedded default — a deterministic synthetic corpus of chest-X-ray-
//! like images with reports, a WordPiece vocabulary built on it, ResNet-18 at 64 px and a
//! 2-layer BERT of width 256, trained from scratch with the paper's loss (tau 0.1, lambda 0.75)
//! and milder augmentations; minutes on a CPU through lavapipe. `--manifest FILE` or
//! `--mimic ROOT` trains on real pairs instead. `--help` lists everything.

use convirt::data::augment::Augment;
use convirt::data::loader::{Dataset, PairBatch, PairLoader, SyntheticDataset};
use convirt::data::manifest::{ManifestDataset, MimicDataset};
use convirt::data::report::sections;
use convirt::data::synthetic::{corpus_size, report_of};
use convirt::data::Tokenizer;
use convirt::models::bert::{BertConfig, BertModel};
use convirt::models::convirt::ConVirt;
use convirt::models::resnet::{Head, ResNet};
use convirt::nn::WeightSource;
use convirt::train::{load_checkpoint, save_checkpoint, Metrics, TrainConfig, Trainer};
use convirt::{Error, Gpu, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo run --release --example train -- [options]

ConVIRT: contrastive pretraining of an image encoder (ResNet) and a text encoder (BERT) on
image-report pairs. Without options it trains the small configuration on the embedded
synthetic corpus (no download), writing to runs/convirt-small.

  --config small|paper     small (default): ResNet-18 at 64 px, 2-layer BERT of width 256,
                           vocabulary built on the training reports, mild augmentation;
                           paper: ResNet-50 at 224 px, BERT-base with 6 frozen layers, batch 32,
                           Adam 1e-4, weight decay 1e-6 (give --text-tokenizer for real text)
  --steps N                optimiser steps in total (a resumed run continues up to N)
  --batch N                pairs per batch (default 32)
  --lr X                   Adam learning rate        --weight-decay X
  --tau X                  temperature (0.1)         --lambda X   image-to-text weight (0.75)
  --image-size N           training image side       --seed N     everything derives from it
  --augment paper|mild|none  the paper's augmentations (--config paper), milder ones without
                           flips, or none (small: encoders from scratch learn faster)
  --manifest FILE          real pairs from a CSV or JSON-lines manifest: columns image (or
                           path), report (or text) or report_path, optional split (train,
                           validate / val, test) and labels; paths relative to the manifest.
                           Trains on the train split (all rows without a split column) and
                           validates on the validate rows
  --mimic ROOT             real pairs from the MIMIC-CXR-JPG tree: ROOT/files/pXX/pXXXXXXXX/
                           sXXXXXXXX/*.jpg, each with its study's report sXXXXXXXX.txt beside
                           the study folder (studies without one are skipped); --manifest
                           and --mimic exclude each other, neither means the synthetic corpus
  --train-samples N        synthetic corpus size
  --val-samples N          synthetic validation size (128); with real data and no validation
                           rows, the last N training items are held out for validation
  --eval-every N           validation every N steps  --checkpoint-every N
  --bn-batches N           before each validation, re-estimate the image encoder's batch-norm
                           statistics on N training batches with the current weights (2;
                           0 keeps training's running averages, which trail moving weights)
  --clip-grad X            clip the global gradient norm to X
  --text-tokenizer FILE    a tokenizer.json instead of training a vocabulary
  --image-weights FILE     start the image encoder from torchvision-named weights (ImageNet
                           ResNet-50 for --config paper; see weights/README.md)
  --text-weights FILE      start the text encoder from Hugging Face BERT weights (ClinicalBERT
                           for --config paper), with --text-config config.json and
                           --text-tokenizer; heads always start fresh
  --text-config FILE       the text encoder's config.json (sizes; default: the config's own)
  --frozen-layers N        BERT layers frozen above the frozen embeddings (paper: 6)
  --out DIR                where checkpoints, metrics.jsonl and loss_curve.png go
  --resume DIR             continue the run saved in DIR (same config, weights, optimiser,
                           step and schedule); the data is not saved with it: give
                           --manifest or --mimic again
  --contact-sheet FILE     also write a PNG of the first 16 synthetic samples
  --help                   this text

Outputs in DIR: checkpoint.safetensors + tokenizer.json (every --checkpoint-every steps and at
the end, written atomically), metrics.jsonl (one JSON object per step: step, train_loss,
val_loss when evaluated, lr, images_per_s), loss_curve.png.
Set CONVIRT_PROFILE=1 for a per-kernel table and a trace at the end.";

#[derive(Debug, Default)]
struct Args {
    config: Option<String>,
    overrides: Vec<(String, String)>,
    tokenizer: Option<PathBuf>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    contact_sheet: Option<PathBuf>,
    manifest: Option<PathBuf>,
    mimic: Option<PathBuf>,
    image_weights: Option<PathBuf>,
    text_weights: Option<PathBuf>,
    text_config: Option<PathBuf>,
}

fn parse_args() -> std::result::Result<Option<Args>, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => args.config = Some(value()?),
            "--text-tokenizer" => args.tokenizer = Some(value()?.into()),
            "--out" => args.out = Some(value()?.into()),
            "--resume" => args.resume = Some(value()?.into()),
            "--contact-sheet" => args.contact_sheet = Some(value()?.into()),
            "--manifest" => args.manifest = Some(value()?.into()),
            "--mimic" => args.mimic = Some(value()?.into()),
            "--image-weights" => args.image_weights = Some(value()?.into()),
            "--text-weights" => args.text_weights = Some(value()?.into()),
            "--text-config" => args.text_config = Some(value()?.into()),
            "--steps" | "--batch" | "--lr" | "--weight-decay" | "--tau" | "--lambda"
            | "--image-size" | "--seed" | "--train-samples" | "--val-samples" | "--eval-every"
            | "--checkpoint-every" | "--clip-grad" | "--frozen-layers" | "--augment"
            | "--bn-batches" => args
                .overrides
                .push((flag.trim_start_matches("--").to_string(), value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.text_weights.is_some() && args.tokenizer.is_none() {
        return Err(
            "--text-weights needs the encoder's own --text-tokenizer (its vocabulary)".into(),
        );
    }
    if args.text_weights.is_some()
        && args.text_config.is_none()
        && args.config.as_deref() != Some("paper")
    {
        return Err("--text-weights needs the encoder's --text-config (config.json) unless --config paper (BERT-base)".into());
    }
    if args.manifest.is_some() && args.mimic.is_some() {
        return Err("give --manifest or --mimic, not both".into());
    }
    Ok(Some(args))
}

fn apply_overrides(c: &mut TrainConfig, overrides: &[(String, String)]) -> Result<()> {
    for (k, v) in overrides {
        let bad = |e: &dyn std::fmt::Display| Error::Invalid {
            op: "train",
            why: format!("--{k} {v}: {e}"),
        };
        let int = || v.parse::<usize>().map_err(|e| bad(&e));
        let float = || v.parse::<f32>().map_err(|e| bad(&e));
        match k.as_str() {
            "steps" => c.steps = int()?,
            "batch" => c.batch = int()?,
            "lr" => c.lr = float()?,
            "weight-decay" => c.weight_decay = float()?,
            "tau" => c.tau = float()?,
            "lambda" => c.lambda = float()?,
            "image-size" => c.image_size = int()?,
            "seed" => c.seed = int()? as u64,
            "train-samples" => c.train_samples = int()?,
            "val-samples" => c.val_samples = int()?,
            "eval-every" => c.eval_every = int()?.max(1),
            "checkpoint-every" => c.checkpoint_every = int()?.max(1),
            "clip-grad" => c.clip_grad_norm = Some(float()?),
            "frozen-layers" => c.frozen_layers = int()?,
            "augment" => c.augment = v.parse()?,
            "bn-batches" => c.bn_batches = int()?,
            _ => unreachable!("parse_args lists the flags"),
        }
    }
    // (A NaN tau fails the first test.)
    if c.tau.is_nan() || c.tau <= 0.0 || !(0.0..=1.0).contains(&c.lambda) || c.batch < 2 {
        return Err(Error::Invalid {
            op: "train",
            why: "need tau > 0, lambda in [0, 1] and a batch of at least 2".into(),
        });
    }
    Ok(())
}

/// The pairs a run trains and validates on.
struct Datasets {
    train: Arc<dyn Dataset>,
    val: Arc<dyn Dataset>,
    /// The sentences of training item `i`'s report without decoding its image (for the
    /// vocabulary).
    sentences: Box<dyn Fn(usize) -> Result<Vec<String>>>,
}

/// What the example needs of a real dataset beyond [`Dataset`]: a slice of it (to hold out
/// validation items) and its reports alone (for the vocabulary).
trait RealData: Dataset + Sized + 'static {
    fn subset(&self, range: Range<usize>) -> Self;
    fn sentences(&self, i: usize) -> Result<Vec<String>>;
}

impl RealData for ManifestDataset {
    fn subset(&self, range: Range<usize>) -> Self {
        ManifestDataset::subset(self, range)
    }
    fn sentences(&self, i: usize) -> Result<Vec<String>> {
        ManifestDataset::sentences(self, i)
    }
}

impl RealData for MimicDataset {
    fn subset(&self, range: Range<usize>) -> Self {
        MimicDataset::subset(self, range)
    }
    fn sentences(&self, i: usize) -> Result<Vec<String>> {
        MimicDataset::sentences(self, i)
    }
}

fn data_error(why: String) -> Error {
    Error::Invalid { op: "train", why }
}

/// Real pairs: `train`, validated on `val` or, when there is none, on the last `--val-samples`
/// items of `train` (a fixed tail, so every run and every resume validates on the same items).
fn real<D: RealData>(name: &str, train: D, val: Option<D>, c: &TrainConfig) -> Result<Datasets> {
    let (train, val) = match val {
        Some(val) => (train, val),
        None => {
            let n = c.val_samples;
            if train.len() <= n {
                return Err(data_error(format!(
                    "{name}: {} training items, too few to hold out --val-samples {n} for \
                     validation and train on the rest",
                    train.len()
                )));
            }
            let cut = train.len() - n;
            eprintln!(
                "{name}: no validation items; validating on the last {n} of the {} training items \
                 (--val-samples), training on the other {cut}",
                train.len()
            );
            (train.subset(0..cut), train.subset(cut..train.len()))
        }
    };
    for (what, set) in [("training", train.len()), ("validation", val.len())] {
        if set < c.batch {
            return Err(data_error(format!(
                "{name}: {set} {what} items, fewer than a batch of {} (lower --batch)",
                c.batch
            )));
        }
    }
    eprintln!(
        "{name}: {} training pairs, {} validation pairs",
        train.len(),
        val.len()
    );
    let train = Arc::new(train);
    let reports = Arc::clone(&train);
    Ok(Datasets {
        train,
        val: Arc::new(val),
        sentences: Box::new(move |i| reports.sentences(i)),
    })
}

fn datasets(c: &TrainConfig, args: &Args) -> Result<Datasets> {
    let synthetic_only = args.overrides.iter().any(|(k, _)| k == "train-samples");
    if synthetic_only && (args.manifest.is_some() || args.mimic.is_some()) {
        eprintln!("--train-samples sizes the synthetic corpus; ignored with real data");
    }
    if let Some(file) = &args.manifest {
        let all = ManifestDataset::open(file)?;
        let name = file.display().to_string();
        if !all.has_splits() {
            return real(&name, all, None, c);
        }
        let train = all.split("train");
        let val = all.split("validate");
        let unsplit = (0..all.len())
            .filter(|&i| all.item_split(i).is_none())
            .count();
        if unsplit > 0 {
            eprintln!("{name}: {unsplit} rows have no split and are left out");
        }
        if train.is_empty() {
            return Err(data_error(format!("{name}: no row of the train split")));
        }
        return real(&name, train, (!val.is_empty()).then_some(val), c);
    }
    if let Some(root) = &args.mimic {
        let all = MimicDataset::open(root)?;
        return real(&root.display().to_string(), all, None, c);
    }
    let size = corpus_size(c.image_size);
    let train = Arc::new(SyntheticDataset {
        n: c.train_samples,
        size,
        seed: c.seed,
    });
    let val = SyntheticDataset {
        n: c.val_samples,
        size,
        seed: c.seed.wrapping_add(0x5EED),
    };
    let seed = c.seed;
    Ok(Datasets {
        train,
        val: Arc::new(val),
        sentences: Box::new(move |i| Ok(sections(&report_of(i as u64, seed)))),
    })
}

fn new_run(gpu: &Arc<Gpu>, args: &Args) -> Result<(Trainer, Datasets)> {
    let mut config = match args.config.as_deref().unwrap_or("small") {
        "small" => TrainConfig::small(),
        "paper" => TrainConfig::paper(),
        other => {
            return Err(Error::Invalid {
                op: "train",
                why: format!("--config {other}: use small or paper"),
            })
        }
    };
    if let Some(path) = &args.text_config {
        config.text = BertConfig::from_file(path)?;
    }
    apply_overrides(&mut config, &args.overrides)?;
    let data = datasets(&config, args)?;
    let tokenizer = match &args.tokenizer {
        Some(path) => Tokenizer::from_file(path, config.max_tokens)?,
        None => {
            eprintln!(
                "training a WordPiece vocabulary on the training reports ({})...",
                data.train.len()
            );
            let (mut sentences, mut unreadable) = (Vec::new(), 0usize);
            for i in 0..data.train.len() {
                match (data.sentences)(i) {
                    Ok(s) => sentences.extend(s),
                    // The loader skips and counts these items too; one line here says how many.
                    Err(e) if unreadable == 0 => {
                        unreadable += 1;
                        eprintln!("skipping an unreadable report: {e}");
                    }
                    Err(_) => unreadable += 1,
                }
            }
            if unreadable > 0 {
                eprintln!("{unreadable} reports could not be read for the vocabulary");
            }
            Tokenizer::train_wordpiece(&sentences, config.vocab_size, true, config.max_tokens)?
        }
    };
    config.text = BertConfig {
        vocab_size: tokenizer.vocab_size(),
        ..config.text
    };
    // Encoders from pretrained weights where given (heads always fresh), else the initialiser.
    let mut model = ConVirt::new(
        &mut WeightSource::random(gpu, config.seed),
        config.arch,
        &config.text,
    )?;
    if let Some(path) = &args.image_weights {
        model.image = ResNet::load(gpu, path, config.arch, 1000, Head::Replaceable)?;
        for (_, t) in model.image.fc.named_tensors() {
            t.set_requires_grad(false);
        }
        eprintln!("image encoder from {}", path.display());
    }
    if let Some(path) = &args.text_weights {
        model.text = BertModel::load(gpu, path, &config.text, false)?;
        eprintln!("text encoder from {}", path.display());
    }
    let trainer = Trainer::from_model(config, tokenizer, model)?;
    Ok((trainer, data))
}

/// A fixed validation set: the same crops every time (no augmentation).
fn validation_batches(c: &TrainConfig, val: Arc<dyn Dataset>) -> Result<Vec<PairBatch>> {
    PairLoader::new(
        val,
        Augment::identity(c.image_size),
        c.batch,
        c.seed ^ 0xDA7A,
    )?
    .epoch(0)
    .collect()
}

fn run(args: Args) -> Result<()> {
    let gpu = Gpu::shared()?;
    let (mut trainer, data) = match &args.resume {
        Some(dir) => {
            let mut t = load_checkpoint(&gpu, dir)?;
            apply_overrides(&mut t.config, &args.overrides)?;
            eprintln!("resuming {} at step {}", dir.display(), t.step);
            let data = datasets(&t.config, &args)?;
            (t, data)
        }
        None => new_run(&gpu, &args)?,
    };
    let c = trainer.config.clone();
    let out = args
        .out
        .clone()
        .or(args.resume.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/convirt-{}", c.name)));
    std::fs::create_dir_all(&out).map_err(|e| Error::Invalid {
        op: "train",
        why: format!("{}: {e}", out.display()),
    })?;
    if let Some(path) = &args.contact_sheet {
        let samples: Vec<_> = (0..16)
            .map(|i| convirt::data::synthetic::generate(i, corpus_size(c.image_size), c.seed))
            .collect();
        convirt::data::synthetic::contact_sheet(&samples, path)?;
        eprintln!("contact sheet written to {}", path.display());
    }
    eprintln!(
        "config {}: {} at {} px ({} augmentation), BERT {} layers x {} ({} frozen), batch {}, lr {:e}, tau {}, lambda {}, {} steps -> {}",
        c.name,
        c.arch.name(),
        c.image_size,
        c.augment.name(),
        c.text.num_hidden_layers,
        c.text.hidden_size,
        c.frozen_layers,
        c.batch,
        c.lr,
        c.tau,
        c.lambda,
        c.steps,
        out.display()
    );
    let val = validation_batches(&c, Arc::clone(&data.val))?;
    if val.is_empty() {
        return Err(data_error(format!(
            "{} validation items give no whole batch of {} (raise --val-samples or lower --batch)",
            data.val.len(),
            c.batch
        )));
    }
    let mut metrics = Metrics::open(&out, trainer.step)?;
    let augment = c.augment.settings(c.image_size);
    let per_epoch = (data.train.len() / c.batch).max(1);
    let loader = PairLoader::new(data.train, augment, c.batch, c.seed)?;

    // The training batches batch norm's statistics are re-estimated on before every
    // validation: the first of epoch 0 (the same in a resumed run).
    let bn_batches = loader
        .epoch(0)
        .take(c.bn_batches)
        .collect::<Result<Vec<_>>>()?;
    let validate = |trainer: &mut Trainer| -> Result<f32> {
        trainer.recompute_batch_norm_statistics(&bn_batches)?;
        trainer.validation_loss(&val)
    };
    let first_val = validate(&mut trainer)?;
    if trainer.step == 0 {
        metrics.record(0, f32::NAN, Some(first_val), trainer.adam.lr(), 0.0)?;
    }
    eprintln!(
        "validation loss at step {}: {first_val:.4} (chance: ln {} = {:.4})",
        trainer.step,
        c.batch,
        (c.batch as f32).ln()
    );

    let bar = ProgressBar::new(c.steps as u64).with_position(trainer.step as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let start_step = trainer.step;
    let mut last_val = first_val;
    let mut epoch = (trainer.step / per_epoch) as u64;
    let mut skip = trainer.step % per_epoch;
    while trainer.step < c.steps {
        let before = trainer.step;
        for batch in loader.epoch(epoch).skip(skip) {
            let batch = batch?;
            let t0 = Instant::now();
            let loss = trainer.train_step(&batch)?;
            let images_per_s = batch.len() as f64 / t0.elapsed().as_secs_f64();
            let step = trainer.step;
            let evaluate = step % c.eval_every == 0 || step == c.steps;
            let val_loss = if evaluate {
                let v = validate(&mut trainer)?;
                trainer.schedule(v);
                last_val = v;
                Some(v)
            } else {
                None
            };
            metrics.record(step, loss, val_loss, trainer.adam.lr(), images_per_s)?;
            let status = format!(
                "loss {loss:.3}  val {last_val:.3}  lr {:.1e}  {images_per_s:.1} img/s",
                trainer.adam.lr()
            );
            bar.set_position(step as u64);
            bar.set_message(status.clone());
            if bar.is_hidden() && evaluate {
                // No terminal (CI, a log file): a plain line per evaluation instead of the bar.
                eprintln!("step {step}/{}: {status}", c.steps);
            }
            if step % c.checkpoint_every == 0 || step == c.steps {
                save_checkpoint(&trainer, &out)?;
            }
            if step >= c.steps {
                break;
            }
        }
        // Unreadable items can leave an epoch a batch or two short of `per_epoch`: go on with
        // the next one rather than asking this one again for batches it does not have.
        if trainer.step == before && skip == 0 {
            return Err(data_error(format!("epoch {epoch} gave no batch")));
        }
        epoch += 1;
        skip = 0;
    }
    bar.finish();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    convirt::train::plot_loss_curve(&metrics.curve, &out.join("loss_curve.png"))?;
    eprintln!(
        "done: {} steps in {minutes:.1} min; validation loss {first_val:.4} -> {last_val:.4} ({:.0}% of where it started); \
         outputs in {}",
        trainer.step - start_step,
        100.0 * last_val / first_val,
        out.display()
    );
    gpu.report_profile()?;
    Ok(())
}

fn main() {
    match parse_args() {
        Ok(Some(args)) => {
            if let Err(e) = run(args) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        Ok(None) => println!("{USAGE}"),
        Err(why) => {
            eprintln!("train: {why}\n(--help lists the options)");
            std::process::exit(2);
        }
    }
}

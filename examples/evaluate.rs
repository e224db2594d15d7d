//! `cargo run --release --example evaluate -- --checkpoint runs/convirt-small`: the paper's
//! evaluation of a ConVIRT checkpoint beside a randomly initialised encoder (and an ImageNet
//! one when given): linear probes and fine-tuning at 1%, 10% and 100% of the labels over
//! several seeds, and zero-shot retrieval (image and text queries, Precision@k). Without data
//! flags it runs on fresh samples of the embedded synthetic corpus. `--help` lists everything.

use convirt::data::Tokenizer;
use convirt::eval::features::{
    image_features, load_features, save_features, Features, ImageInit, ImageItem,
};
use convirt::eval::finetune::{fine_tune, FineTuneOptions, PixelSet};
use convirt::eval::probe::{score, Labels, LinearProbe, ProbeOptions, ProbeScore};
use convirt::eval::queries::{Uncertain, CHEXPERT_8X200, CHEXPERT_COMPETITION};
use convirt::eval::report::{
    finite, markdown, plot_auc, retrieval_sheet, ProbeResult, RetrievalResult,
};
use convirt::eval::retrieval::{cosine_similarities, precision_at, RetrievalScores};
use convirt::eval::tasks::{ProbeTask, RetrievalTask};
use convirt::eval::{label_fraction, strata_of_multilabel};
use convirt::models::bert::Mode;
use convirt::models::convirt::ConVirt;
use convirt::nn::WeightSource;
use convirt::train::{load_checkpoint, TrainConfig, CHECKPOINT_FILE};
use convirt::{no_grad, Error, Gpu, Result, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo run --release --example evaluate -- --checkpoint DIR [options]

The paper's evaluation of a ConVIRT image encoder, beside a randomly initialised one (and an
ImageNet-initialised one with --imagenet):
  - linear probe: encoder frozen, heads removed, features computed once (cached in the output
    folder); a logistic regression trained on the GPU on 1%, 10% and 100% of the labels
    (stratified, one draw per seed); per-class and mean AUC, accuracy, mean +- std over seeds;
  - fine-tuning: the encoder trained with a new linear head (encoder at a lower learning rate);
  - zero-shot retrieval (CheXpert 8x200 protocol): image queries ranked against candidates by
    encoder features, text queries by the projected text and image embeddings; Precision@k.

  --checkpoint DIR        a folder written by examples/train (checkpoint.safetensors and
                          tokenizer.json); its config gives the architecture and image size
  --imagenet FILE         also evaluate an ImageNet-initialised encoder (torchvision names, the
                          checkpoint's architecture); see weights/README.md
  --out DIR               results folder (default: DIR/eval of the checkpoint)
  --seeds N               probe seeds (default 5)       --fractions 0.01,0.1,1
  --probe-steps N         full-batch Adam steps of each probe (200)
  --finetune-steps N      steps of each fine-tuning run (10; 0 skips fine-tuning)
  --finetune-seeds N      fine-tuning seeds (1)
  --batch N               images per forward (64)

Synthetic data (the default):
  --probe-train N         labelled training pool (600)   --probe-test N   test items (300)
  --candidates N          retrieval candidates per category (25; the paper: 200)
  --image-queries N       image queries per category (10)   --text-queries N (5)

Real data (CheXpert-style CSVs; image paths relative to --root):
  --labels TRAIN.csv --test-labels TEST.csv   Path + label columns (1, 0, -1 uncertain, blank)
  --label-columns A,B,..  which labels (default: the five CheXpert competition findings when
                          present, else every label column)
  --uncertain ignore|positive|negative        what -1 becomes (default ignore)
  --retrieval-candidates C.csv --retrieval-image-queries Q.csv --retrieval-text-queries T.csv
                          the public CheXpert 8x200 files (one-hot candidates; Variable,Path;
                          Variable,Text) or the generic forms (path,category; category,text)
  --root DIR              where image paths are resolved

Outputs in the results folder: results.json, results.md (tables shaped like the paper's),
auc_vs_fraction.png, retrieval_examples.png, and the feature cache (features-*.safetensors).
";

#[derive(Default)]
struct Args {
    checkpoint: Option<PathBuf>,
    imagenet: Option<PathBuf>,
    out: Option<PathBuf>,
    seeds: usize,
    fractions: Vec<f64>,
    probe_steps: usize,
    finetune_steps: usize,
    finetune_seeds: usize,
    batch: usize,
    probe_train: usize,
    probe_test: usize,
    candidates: usize,
    image_queries: usize,
    text_queries: usize,
    labels: Option<PathBuf>,
    test_labels: Option<PathBuf>,
    label_columns: Vec<String>,
    uncertain: Option<Uncertain>,
    retrieval: [Option<PathBuf>; 3],
    root: Option<PathBuf>,
}

fn parse_args() -> std::result::Result<Option<Args>, String> {
    let mut a = Args {
        seeds: 5,
        fractions: vec![0.01, 0.1, 1.0],
        probe_steps: 200,
        finetune_steps: 10,
        finetune_seeds: 1,
        batch: 64,
        probe_train: 600,
        probe_test: 300,
        candidates: 25,
        image_queries: 10,
        text_queries: 5,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let int = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--checkpoint" => a.checkpoint = Some(value()?.into()),
            "--imagenet" => a.imagenet = Some(value()?.into()),
            "--out" => a.out = Some(value()?.into()),
            "--seeds" => a.seeds = int(value()?)?.max(1),
            "--probe-steps" => a.probe_steps = int(value()?)?,
            "--finetune-steps" => a.finetune_steps = int(value()?)?,
            "--finetune-seeds" => a.finetune_seeds = int(value()?)?.max(1),
            "--batch" => a.batch = int(value()?)?.max(1),
            "--probe-train" => a.probe_train = int(value()?)?,
            "--probe-test" => a.probe_test = int(value()?)?,
            "--candidates" => a.candidates = int(value()?)?,
            "--image-queries" => a.image_queries = int(value()?)?,
            "--text-queries" => a.text_queries = int(value()?)?,
            "--fractions" => {
                let v = value()?;
                a.fractions = v
                    .split(',')
                    .map(|f| match f.trim().parse::<f64>() {
                        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
                        _ => Err(format!("--fractions {v}: each must be in (0, 1]")),
                    })
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--labels" => a.labels = Some(value()?.into()),
            "--test-labels" => a.test_labels = Some(value()?.into()),
            "--label-columns" => {
                a.label_columns = value()?.split(',').map(|s| s.trim().to_string()).collect()
            }
            "--uncertain" => {
                a.uncertain = Some(match value()?.as_str() {
                    "ignore" => Uncertain::Ignore,
                    "positive" => Uncertain::Positive,
                    "negative" => Uncertain::Negative,
                    other => {
                        return Err(format!("--uncertain {other}: ignore, positive or negative"))
                    }
                })
            }
            "--retrieval-candidates" => a.retrieval[0] = Some(value()?.into()),
            "--retrieval-image-queries" => a.retrieval[1] = Some(value()?.into()),
            "--retrieval-text-queries" => a.retrieval[2] = Some(value()?.into()),
            "--root" => a.root = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.checkpoint.is_none() {
        return Err("--checkpoint DIR is required (a folder written by examples/train)".into());
    }
    if a.labels.is_some() != a.test_labels.is_some() {
        return Err("give both --labels and --test-labels".into());
    }
    let given = a.retrieval.iter().filter(|p| p.is_some()).count();
    if given != 0 && given != 3 {
        return Err("the retrieval CSVs come as three: --retrieval-candidates, --retrieval-image-queries, --retrieval-text-queries".into());
    }
    Ok(Some(a))
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} {bar:30} {pos}/{len} [{elapsed}, ETA {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Features of `items` under `init`, from the cache in `out` when it holds them.
fn features(
    gpu: &Arc<Gpu>,
    init: &ImageInit,
    config: &TrainConfig,
    items: &[ImageItem],
    set: &str,
    out: &Path,
    batch: usize,
) -> Result<Features> {
    // The cache key: the encoder's weights (file, size, time) and the exact item list.
    let mut h = DefaultHasher::new();
    format!(
        "{init:?}{items:?}{}{}",
        config.image_size,
        config.arch.name()
    )
    .hash(&mut h);
    let weights = match init {
        ImageInit::ConVirt(dir) => Some(dir.join(CHECKPOINT_FILE)),
        ImageInit::ImageNet(p) => Some(p.clone()),
        ImageInit::Random { .. } => None,
    };
    if let Some(meta) = weights.and_then(|p| std::fs::metadata(p).ok()) {
        meta.len().hash(&mut h);
        format!("{:?}", meta.modified().ok()).hash(&mut h);
    }
    let path = out.join(format!(
        "features-{}-{set}-{:016x}.safetensors",
        init.name(),
        h.finish()
    ));
    let dim = config.arch.features();
    if let Some(f) = load_features(&path, items.len(), dim) {
        return Ok(f);
    }
    let net = init.load(gpu, config.arch)?;
    let bar = progress(items.len(), &format!("{} features: {set}", init.name()));
    let f = image_features(&net, items, config.image_size, batch, &mut |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    for (i, why) in &f.skipped {
        eprintln!("warning: {set} item {i} skipped: {why}");
    }
    save_features(gpu, &f, &path)?;
    Ok(f)
}

fn rows(f: &Features, items: &[usize]) -> Vec<f32> {
    items
        .iter()
        .flat_map(|&i| f.data[i * f.dim..(i + 1) * f.dim].iter().copied())
        .collect()
}

/// One result per label fraction, over `seeds` seeds each: `run(subset, seed)` trains on the
/// stratified `subset` of the task's training items and scores the test items.
fn over_fractions(
    init: &'static str,
    method: &'static str,
    task: &ProbeTask,
    fractions: &[f64],
    seeds: usize,
    mut run: impl FnMut(&[usize], u64) -> Result<ProbeScore>,
) -> Result<Vec<ProbeResult>> {
    let strata = strata_of_multilabel(&label_rows(&task.train_labels));
    let bar = progress(fractions.len() * seeds, &format!("{init} {method}"));
    let mut out = Vec::new();
    for &fraction in fractions {
        let mut r = ProbeResult {
            init,
            method,
            fraction,
            aucs: vec![],
            accuracies: vec![],
            class_aucs: vec![],
        };
        for seed in 0..seeds as u64 {
            let s = run(&label_fraction(&strata, fraction, seed), seed)?;
            r.aucs.push(s.mean_auc);
            r.accuracies.push(s.accuracy);
            r.class_aucs.push(s.class_auc);
            bar.inc(1);
        }
        out.push(r);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn linear_probes(
    gpu: &Arc<Gpu>,
    init: &'static str,
    task: &ProbeTask,
    train: &Features,
    test: &Features,
    args: &Args,
) -> Result<Vec<ProbeResult>> {
    let test_x = rows(test, &(0..task.test.len()).collect::<Vec<_>>());
    let opts = ProbeOptions {
        steps: args.probe_steps,
        ..ProbeOptions::default()
    };
    over_fractions(
        init,
        "linear",
        task,
        &args.fractions,
        args.seeds,
        |subset, seed| {
            let probe = LinearProbe::fit(
                gpu,
                &rows(train, subset),
                train.dim,
                &task.train_labels.subset(subset),
                opts,
                seed,
            )?;
            Ok(score(&probe.scores(&test_x)?, &task.test_labels))
        },
    )
}

fn label_rows(labels: &Labels) -> Vec<Vec<f32>> {
    match labels {
        Labels::MultiLabel { values, count } => values.chunks(*count).map(|r| r.to_vec()).collect(),
        Labels::Classes { classes, count } => classes
            .iter()
            .map(|&k| (0..*count).map(|c| (c == k) as u8 as f32).collect())
            .collect(),
    }
}

fn fine_tunes(
    gpu: &Arc<Gpu>,
    init: &ImageInit,
    config: &TrainConfig,
    task: &ProbeTask,
    test: &PixelSet,
    args: &Args,
) -> Result<Vec<ProbeResult>> {
    let opts = FineTuneOptions {
        steps: args.finetune_steps,
        batch: 16.min(args.batch),
        ..FineTuneOptions::default()
    };
    let seeds = args.finetune_seeds;
    over_fractions(
        init.name(),
        "fine-tune",
        task,
        &args.fractions,
        seeds,
        |subset, seed| {
            let items: Vec<ImageItem> = subset.iter().map(|&i| task.train[i].clone()).collect();
            let train =
                PixelSet::read(&items, task.train_labels.subset(subset), config.image_size)?;
            fine_tune(init.load(gpu, config.arch)?, &train, test, opts, seed)
        },
    )
}

/// Text query embeddings and candidate image embeddings of a ConVIRT model, in the joint space.
fn joint_embeddings(
    gpu: &Arc<Gpu>,
    model: &ConVirt,
    tokenizer: &Tokenizer,
    texts: &[(String, usize)],
    candidates: &Features,
) -> Result<(Vec<f32>, Vec<f32>)> {
    no_grad(|| {
        let sentences: Vec<&str> = texts.iter().map(|(s, _)| s.as_str()).collect();
        let tokens = tokenizer.encode(&sentences)?;
        let u = model.embed_texts(&tokens, Mode::Eval)?.to_vec()?;
        let f = Tensor::from_slice(
            gpu,
            &candidates.data,
            &[candidates.kept.len(), candidates.dim],
        )?;
        let v = model.project_image_features(&f)?.to_vec()?;
        Ok((u, v))
    })
}

fn retrieval_scores(
    gpu: &Arc<Gpu>,
    query_x: &[f32],
    cand_x: &[f32],
    dim: usize,
    query_cats: &[usize],
    cand_cats: &[usize],
    categories: usize,
) -> Result<RetrievalScores> {
    let sim = cosine_similarities(gpu, query_x, cand_x, dim)?;
    Ok(precision_at(
        &sim,
        query_cats,
        cand_cats,
        categories,
        &[5, 10, 50],
    ))
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let gpu = Gpu::shared()?;
    let ckpt = args.checkpoint.clone().unwrap_or_default();
    let trainer = load_checkpoint(&gpu, &ckpt)?;
    let config = trainer.config.clone();
    let out = args.out.clone().unwrap_or_else(|| ckpt.join("eval"));
    std::fs::create_dir_all(&out).map_err(|e| Error::Invalid {
        op: "evaluate",
        why: format!("{}: {e}", out.display()),
    })?;
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("."));

    let mut probe_task = match (&args.labels, &args.test_labels) {
        (Some(train), Some(test)) => {
            let columns: Vec<String> = if args.label_columns.is_empty() {
                let header = std::fs::read_to_string(train).unwrap_or_default();
                let first = header.lines().next().unwrap_or_default().to_lowercase();
                if CHEXPERT_COMPETITION
                    .iter()
                    .all(|c| first.contains(&c.to_lowercase()))
                {
                    CHEXPERT_COMPETITION.iter().map(|s| s.to_string()).collect()
                } else {
                    Vec::new()
                }
            } else {
                args.label_columns.clone()
            };
            ProbeTask::from_csv(
                train,
                test,
                &root,
                &columns,
                args.uncertain.unwrap_or(Uncertain::Ignore),
            )?
        }
        _ => ProbeTask::synthetic(args.probe_train, args.probe_test, config.seed),
    };
    let retrieval = match &args.retrieval {
        [Some(c), Some(q), Some(t)] => RetrievalTask::from_csv(c, q, t, &root, &CHEXPERT_8X200)?,
        _ => RetrievalTask::synthetic(
            args.candidates,
            args.image_queries,
            args.text_queries,
            config.seed,
        ),
    };
    eprintln!(
        "evaluating {} ({} at {} px): probes on {} + {} images, retrieval over {} candidates, \
         {} image and {} text queries -> {}",
        ckpt.display(),
        config.arch.name(),
        config.image_size,
        probe_task.train.len(),
        probe_task.test.len(),
        retrieval.candidates.len(),
        retrieval.image_queries.len(),
        retrieval.text_queries.len(),
        out.display()
    );

    let mut inits = vec![
        ImageInit::Random {
            seed: config.seed ^ 0x5EED,
        },
        ImageInit::ConVirt(ckpt.clone()),
    ];
    if let Some(p) = &args.imagenet {
        inits.push(ImageInit::ImageNet(p.clone()));
    }
    let cand_items: Vec<ImageItem> = retrieval.candidates.iter().map(|c| c.0.clone()).collect();
    let query_items: Vec<ImageItem> = retrieval
        .image_queries
        .iter()
        .map(|c| c.0.clone())
        .collect();

    // Features first (for every init), so that unreadable images are dropped consistently.
    let mut feats = Vec::new();
    for init in &inits {
        let f = [
            features(
                &gpu,
                init,
                &config,
                &probe_task.train,
                "probe-train",
                &out,
                args.batch,
            )?,
            features(
                &gpu,
                init,
                &config,
                &probe_task.test,
                "probe-test",
                &out,
                args.batch,
            )?,
            features(
                &gpu,
                init,
                &config,
                &cand_items,
                "candidates",
                &out,
                args.batch,
            )?,
            features(
                &gpu,
                init,
                &config,
                &query_items,
                "image-queries",
                &out,
                args.batch,
            )?,
        ];
        feats.push(f);
    }
    let common = |k: usize| -> Vec<usize> {
        let first = &feats[0][k].kept;
        first
            .iter()
            .copied()
            .filter(|i| feats.iter().all(|f| f[k].kept.binary_search(i).is_ok()))
            .collect()
    };
    let (train_kept, test_kept, cand_kept, query_kept) =
        (common(0), common(1), common(2), common(3));
    let dropped = probe_task.train.len() - train_kept.len() + probe_task.test.len()
        - test_kept.len()
        + cand_items.len()
        - cand_kept.len()
        + query_items.len()
        - query_kept.len();
    if dropped > 0 {
        eprintln!("warning: {dropped} unreadable images left out of the evaluation");
    }
    let select = |f: &Features, kept: &[usize]| Features {
        data: kept
            .iter()
            .flat_map(|&i| f.row(i).unwrap_or(&[]).to_vec())
            .collect(),
        dim: f.dim,
        kept: (0..kept.len()).collect(),
        skipped: vec![],
    };
    probe_task.keep_train(&train_kept);
    probe_task.keep_test(&test_kept);
    let cand_cats: Vec<usize> = cand_kept
        .iter()
        .map(|&i| retrieval.candidates[i].1)
        .collect();
    let query_cats: Vec<usize> = query_kept
        .iter()
        .map(|&i| retrieval.image_queries[i].1)
        .collect();
    let text_cats: Vec<usize> = retrieval.text_queries.iter().map(|t| t.1).collect();
    let ncat = retrieval.categories.len();

    let mut probes = Vec::new();
    let mut retrievals = Vec::new();
    let test_pixels = if args.finetune_steps > 0 {
        Some(PixelSet::read(
            &probe_task.test,
            probe_task.test_labels.clone(),
            config.image_size,
        )?)
    } else {
        None
    };
    // A whole random ConVIRT (text encoder and heads too): the chance level of text queries.
    let random_model = ConVirt::new(
        &mut WeightSource::random(&gpu, config.seed ^ 0x5EED),
        config.arch,
        &config.text,
    )?;
    for (init, f) in inits.iter().zip(&feats) {
        let (train, test) = (select(&f[0], &train_kept), select(&f[1], &test_kept));
        let (cand, query) = (select(&f[2], &cand_kept), select(&f[3], &query_kept));
        probes.extend(linear_probes(
            &gpu,
            init.name(),
            &probe_task,
            &train,
            &test,
            &args,
        )?);
        if let Some(test_pixels) = &test_pixels {
            probes.extend(fine_tunes(
                &gpu,
                init,
                &config,
                &probe_task,
                test_pixels,
                &args,
            )?);
        }
        retrievals.push(RetrievalResult {
            init: init.name(),
            query: "image",
            scores: retrieval_scores(
                &gpu,
                &query.data,
                &cand.data,
                cand.dim,
                &query_cats,
                &cand_cats,
                ncat,
            )?,
            query_categories: query_cats.clone(),
        });
        let model = match init {
            ImageInit::ConVirt(_) => Some(&trainer.model),
            ImageInit::Random { .. } => Some(&random_model),
            ImageInit::ImageNet(_) => None, // no text encoder
        };
        if let Some(model) = model {
            let (u, v) = joint_embeddings(
                &gpu,
                model,
                &trainer.tokenizer,
                &retrieval.text_queries,
                &cand,
            )?;
            retrievals.push(RetrievalResult {
                init: init.name(),
                query: "text",
                scores: retrieval_scores(
                    &gpu,
                    &u,
                    &v,
                    convirt::models::convirt::EMBEDDING_DIM,
                    &text_cats,
                    &cand_cats,
                    ncat,
                )?,
                query_categories: text_cats.clone(),
            });
        }
    }

    let names = &probe_task.label_names;
    let results = json!({
        "checkpoint": ckpt.display().to_string(),
        "config": serde_json::from_str::<Value>(&config.to_json()).unwrap_or(Value::Null),
        "labels": names,
        "categories": retrieval.categories,
        "linear_probe": probes.iter().filter(|p| p.method == "linear").map(|p| p.json(names)).collect::<Vec<_>>(),
        "fine_tune": probes.iter().filter(|p| p.method == "fine-tune").map(|p| p.json(names)).collect::<Vec<_>>(),
        "retrieval": retrievals.iter().flat_map(|r| {
            r.scores.ks.iter().enumerate().map(move |(i, k)| json!({
                "init": r.init, "query": r.query, "k": k, "precision": finite(r.scores.mean[i]),
                "per_category": r.scores.per_category.iter().map(|c| finite(c[i])).collect::<Vec<_>>(),
            }))
        }).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    write(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&results).unwrap_or_default(),
    )?;
    write(
        &out.join("results.md"),
        &markdown(
            &probes,
            &retrievals,
            &retrieval.categories,
            &args.fractions,
            (args.seeds, args.finetune_seeds),
            &ckpt,
        ),
    )?;
    plot_auc(&probes, &out.join("auc_vs_fraction.png"))?;
    retrieval_sheet(
        &retrieval,
        &cand_kept,
        &query_kept,
        &retrievals,
        config.image_size,
        &out.join("retrieval_examples.png"),
    )?;
    print!(
        "{}",
        markdown(
            &probes,
            &retrievals,
            &retrieval.categories,
            &args.fractions,
            (args.seeds, args.finetune_seeds),
            &ckpt
        )
    );
    eprintln!(
        "evaluation done in {:.1} min; results in {}",
        started.elapsed().as_secs_f64() / 60.0,
        out.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Invalid {
        op: "evaluate",
        why: format!("{}: {e}", path.display()),
    })
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
            eprintln!("evaluate: {why}\n(--help lists the options)");
            std::process::exit(2);
        }
    }
}

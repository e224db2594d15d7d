//! `cargo run --release --example export_corpus -- OUT_DIR [--train N] [--val N] [--size S]
//! [--seed N]`: writes the embedded synthetic corpus as `train` and `val` (the same items
//! `train` draws for its default run and its validation) in a form any framework reads:
//! `NAME.f32` holds the pictures, grey `S x S`, little-endian f32 in [0, 1], one after the
//! other; `NAME.json` holds, per item, its report sentences (FINDINGS and IMPRESSION, as the
//! loader samples them) and its labels.
//!
//! For `examples/peers/pytorch_replica.py`, which trains the same model in PyTorch on it: a
//! check that how fast the default run learns is the task's doing, not the engine's.

use convirt::data::report::sections;
use convirt::data::synthetic::{corpus_size, generate};
use convirt::train::TrainConfig;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo run --release --example export_corpus -- OUT_DIR \
[--train N] [--val N] [--size S] [--seed N]
  --train N   training items (default: the small config's 8192)
  --val N     validation items (default 256; the run validates on the first 128)
  --size S    picture side (default: the corpus size the small config crops from, 80)
  --seed N    corpus seed (default 0); validation uses seed + 0x5EED, as train does";

fn export(dir: &Path, name: &str, n: usize, size: usize, seed: u64) -> std::io::Result<()> {
    let mut pictures =
        std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{name}.f32")))?);
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let sample = generate(i as u64, size, seed);
        pictures.write_all(bytemuck::cast_slice(sample.image.plane(0)))?;
        items.push(serde_json::json!({
            "sentences": sections(&sample.report),
            "labels": sample.labels,
        }));
    }
    pictures.flush()?;
    let meta = serde_json::json!({"size": size, "seed": seed, "items": items});
    std::fs::write(dir.join(format!("{name}.json")), meta.to_string())
}

fn main() {
    let small = TrainConfig::small();
    let (mut train, mut val, mut size, mut seed) = (
        small.train_samples,
        256,
        corpus_size(small.image_size),
        small.seed,
    );
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> usize {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("{flag} needs a whole number\n{USAGE}");
                    std::process::exit(2)
                }
            }
        };
        match arg.as_str() {
            "--train" => train = number("--train"),
            "--val" => val = number("--val"),
            "--size" => size = number("--size"),
            "--seed" => seed = number("--seed") as u64,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other if out.is_none() && !other.starts_with('-') => out = Some(other.into()),
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let Some(dir) = out else {
        eprintln!("{USAGE}");
        std::process::exit(2)
    };
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| export(&dir, "train", train, size, seed))
        .and_then(|()| export(&dir, "val", val, size, seed.wrapping_add(0x5EED)));
    match written {
        Ok(()) => println!(
            "{train} training and {val} validation items at {size} px in {}",
            dir.display()
        ),
        Err(e) => {
            eprintln!("writing {}: {e}", dir.display());
            std::process::exit(1)
        }
    }
}

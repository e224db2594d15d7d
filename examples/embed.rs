//! `embed`: encoder outputs written to safetensors, so they can be probed, retrieved from, or
//! compared with other frameworks. `embed image` runs a torchvision ResNet in eval mode on
//! image files or on a raw input tensor; `embed text` runs a Hugging Face BERT on sentences.
//!
//! Run `cargo run --release --example embed -- --help` for the options.

use convirt::data::{eval_transform, load_image, Tokenizer};
use convirt::models::bert::{BertConfig, BertModel, Mode};
use convirt::models::resnet::{Arch, Head, ResNet};
use convirt::nn::StateDict;
use convirt::{Gpu, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

const HELP: &str = "\
embed: encoder outputs of convirt's models, written to a safetensors file

USAGE
  cargo run --release --example embed -- image --weights W.safetensors
        (--images FILE... | --input-tensor X.safetensors) --out OUT.safetensors
        [--arch resnet50] [--logits] [--batch N]
  cargo run --release --example embed -- text --weights model.safetensors --config config.json
        --tokenizer tokenizer.json (--texts FILE | --sentence \"...\") --pool max|mean|cls
        --out OUT.safetensors [--hidden] [--max-len N] [--batch N]

IMAGE ENCODER (embed image)
  Runs a torchvision-layout ResNet (resnet18, resnet34 or resnet50) in eval mode: batch norm
  uses the running statistics stored in the weights, nothing is trained, no gradient is kept.

  --weights W.safetensors  the network's state dict with torchvision's tensor names
                           (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, ...,
                           fc.weight). ImageNet ResNet-50 weights: timm's resnet50.tv_in1k
                           (model.safetensors) loads as is; torchvision's .pth checkpoints go
                           through weights/convert_torchvision.py. See weights/README.md.
  --arch NAME              resnet18, resnet34 or resnet50; default: the file's \"arch\" metadata
                           (written by convirt's checkpoints and weights/convert_torchvision.py),
                           else resnet50.
  --images FILE...         PNG or JPEG files (8 or 16 bit, grey or RGB, any size), each
                           preprocessed as torchvision's ImageNet evaluation transform:
                           shorter side resized to 256 (bilinear, antialiased), centre crop
                           224 x 224, values in [0, 1], grey replicated to 3 channels,
                           normalised with ImageNet mean (0.485, 0.456, 0.406) and std
                           (0.229, 0.224, 0.225). A file that cannot be read is reported by
                           name and skipped; the last line counts them.
  --input-tensor X         instead of images: a safetensors file whose float tensor \"input\"
                           [N, 3, H, W] is fed to the network unchanged (no preprocessing), so
                           outputs can be compared exactly with another framework's.
  --out OUT.safetensors    where to write the outputs (atomically: a temporary file, then a
                           rename).
  --logits                 also write the classifier's logits; needs fc.weight in the file.
  --batch N                images per forward pass (default 16).

OUTPUT (OUT.safetensors, float32)
  features  [N, D]  global-average-pooled features before the classifier, D = 2048 for
                    resnet50, 512 for resnet18/34: the image representation ConVIRT uses.
  logits    [N, C]  with --logits: fc applied to those features (C = rows of fc.weight).
  metadata          \"arch\", \"weights\", \"mode\", \"preprocessing\", and \"images\" (the files
                    embedded, one per line, in the order of the rows) or \"input\".

  Without --logits the file may lack the classifier (fc.*), as ConVIRT's encoders do.

TEXT ENCODER (embed text)
  Runs a BERT in Hugging Face's layout (safetensors weights, config.json; a \"bert.\" prefix
  is accepted) in eval mode on sentences tokenised by tokenizer.json (truncated to --max-len
  tokens, default 128, padded to the longest in a batch).

  --texts FILE             one sentence per line (empty lines skipped)
  --sentence \"...\"         a single sentence instead
  --pool max|mean|cls      one vector per sentence: the maximum or the mean over its real
                           tokens (padding masked out; ConVIRT max-pools, Sentence-Transformers
                           mean-pools), or the first ([CLS]) token's output
  --hidden                 also write the last hidden states [N, T, D] (all sentences in
                           one batch, so T is the longest sentence)

  OUTPUT: \"embeddings\" [N, D] (and \"hidden\" [N, T, D]); metadata \"texts\", \"pool\".

EXIT STATUS
  0 done, 1 error (printed as `error: ...`).

EXAMPLE
  cargo run --release --example embed -- image --weights weights/resnet50.tv_in1k/model.safetensors \\
      --images ../shared/fixtures/chest_xray_rg1.png --out xray.safetensors --logits
";

/// Short side after resizing, and the centre crop: torchvision's ImageNet evaluation sizes.
const RESIZE: usize = 256;
const CROP: usize = 224;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

enum Input {
    Images(Vec<PathBuf>),
    Tensor(PathBuf),
}

struct ImageArgs {
    arch: Option<String>,
    weights: PathBuf,
    input: Input,
    out: PathBuf,
    logits: bool,
    batch: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            0
        }
        Some("image") => match parse_image(&args[1..]) {
            Ok(None) => {
                print!("{HELP}");
                0
            }
            Ok(Some(a)) => match run_image(a) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Some("text") => match run_text(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Some(other) => {
            eprintln!("error: unknown command '{other}': use `embed image ...` (see --help)");
            1
        }
        None => {
            eprint!("{HELP}");
            eprintln!("error: a command is needed: image (or text)");
            1
        }
    };
    std::process::exit(code);
}

/// `None` when help was asked for.
fn parse_image(args: &[String]) -> Res<Option<ImageArgs>> {
    let (mut arch, mut weights, mut out, mut tensor) = (None, None, None, None);
    let (mut images, mut images_given, mut logits, mut batch) = (Vec::new(), false, false, 16usize);
    let mut i = 0;
    while i < args.len() {
        // `--flag value` or `--flag=value`.
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (args[i].as_str(), None),
        };
        i += 1;
        let value = |i: &mut usize| -> Res<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            match args.get(*i) {
                Some(v) if !v.starts_with("--") => {
                    *i += 1;
                    Ok(v.clone())
                }
                _ => Err(format!("{flag} needs a value (see `embed image --help`)").into()),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--arch" => arch = Some(value(&mut i)?),
            "--weights" => weights = Some(PathBuf::from(value(&mut i)?)),
            "--out" => out = Some(PathBuf::from(value(&mut i)?)),
            "--input-tensor" => tensor = Some(PathBuf::from(value(&mut i)?)),
            "--logits" => logits = true,
            "--batch" => {
                let v = value(&mut i)?;
                batch = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(
                            format!("--batch needs a positive whole number, not '{v}'").into()
                        )
                    }
                };
            }
            "--images" => {
                images_given = true;
                if let Some(v) = inline {
                    images.push(PathBuf::from(v));
                }
                while i < args.len() && !args[i].starts_with("--") {
                    images.push(PathBuf::from(&args[i]));
                    i += 1;
                }
            }
            other => {
                return Err(format!("unknown argument '{other}' (see `embed image --help`)").into())
            }
        }
    }
    let weights = weights.ok_or("--weights W.safetensors is needed (see weights/README.md)")?;
    let out = out.ok_or("--out OUT.safetensors is needed")?;
    let input = match (images_given, tensor) {
        (true, Some(_)) => return Err("give either --images or --input-tensor, not both".into()),
        (true, None) if images.is_empty() => return Err("--images needs at least one file".into()),
        (true, None) => Input::Images(images),
        (false, Some(t)) => Input::Tensor(t),
        (false, None) => {
            return Err(
                "nothing to embed: give --images FILE... or --input-tensor X.safetensors".into(),
            )
        }
    };
    if out == weights {
        return Err(format!("--out {} would overwrite the weights", out.display()).into());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!(
                "--out {}: the folder {} does not exist",
                out.display(),
                dir.display()
            )
            .into());
        }
    }
    Ok(Some(ImageArgs {
        arch,
        weights,
        input,
        out,
        logits,
        batch,
    }))
}

/// What one forward pass appends to.
struct Outputs {
    features: Vec<f32>,
    logits: Vec<f32>,
    rows: usize,
}

fn run_image(a: ImageArgs) -> Res<()> {
    // The head's size comes from the file; without --logits the head may be missing.
    let (arch, arch_from, num_classes) = {
        let dict = StateDict::read(&a.weights)?;
        let (arch_name, arch_from) = match (&a.arch, dict.metadata.get("arch")) {
            (Some(name), _) => (name.clone(), None),
            (None, Some(name)) => (name.clone(), Some("the weights file's \"arch\" metadata")),
            (None, None) => ("resnet50".to_string(), Some("the default")),
        };
        let arch: Arch = arch_name.parse()?;
        let classes = match dict.tensors.get("fc.weight") {
            Some((shape, _)) if shape.len() == 2 && shape[0] > 0 => shape[0],
            Some((shape, _)) => {
                return Err(format!("{}: fc.weight has shape {shape:?}, not [classes, features]", a.weights.display()).into())
            }
            None if a.logits => {
                return Err(format!(
                    "--logits needs the classifier, but {} has no fc.weight (an encoder without its head?)",
                    a.weights.display()
                )
                .into())
            }
            None => 1000,
        };
        (arch, arch_from, classes)
    };
    let gpu = Gpu::shared()?;
    let head = if a.logits {
        Head::Required
    } else {
        Head::Replaceable
    };
    let net =
        ResNet::load(&gpu, &a.weights, arch, num_classes, head).map_err(|e| match arch_from {
            // The architecture was not asked for: say where it came from.
            Some(from) => format!(
                "{e} ({} is {from}; pass --arch if the file holds another)",
                arch.name()
            ),
            None => e.to_string(),
        })?;
    let dim = arch.features();
    let mut outs = Outputs {
        features: Vec::new(),
        logits: Vec::new(),
        rows: 0,
    };
    let mut meta = HashMap::from([
        ("arch".to_string(), arch.name().to_string()),
        ("weights".to_string(), a.weights.display().to_string()),
        (
            "mode".to_string(),
            "eval (batch norm with running statistics)".to_string(),
        ),
    ]);

    let mut skipped = None;
    match &a.input {
        Input::Images(files) => {
            let per_image = 3 * CROP * CROP;
            let (mut pending, mut embedded, mut bad) = (Vec::new(), Vec::new(), 0usize);
            for (k, file) in files.iter().enumerate() {
                match load_image(file) {
                    Ok(img) => {
                        pending.extend(eval_transform(&img, RESIZE, CROP));
                        embedded.push(file.display().to_string());
                    }
                    Err(e) => {
                        eprintln!("skipped: {e}");
                        bad += 1;
                    }
                }
                let n = pending.len() / per_image;
                if n == a.batch || (k + 1 == files.len() && n > 0) {
                    forward(
                        &net,
                        &gpu,
                        &pending,
                        [n, 3, CROP, CROP],
                        a.logits,
                        &mut outs,
                    )?;
                    pending.clear();
                    if files.len() > a.batch {
                        eprintln!(
                            "embed: {} of {} files read, {} embedded",
                            k + 1,
                            files.len(),
                            outs.rows
                        );
                    }
                }
            }
            if embedded.is_empty() {
                return Err(format!(
                    "none of the {} image file(s) could be read (see above)",
                    files.len()
                )
                .into());
            }
            meta.insert("images".into(), embedded.join("\n"));
            meta.insert(
                "preprocessing".into(),
                format!(
                    "torchvision ImageNet eval transform: shorter side resized to {RESIZE} (bilinear, \
                     antialiased), centre crop {CROP}, [0, 1], grey to 3 channels, ImageNet mean/std"
                ),
            );
            skipped = Some((bad, files.len()));
        }
        Input::Tensor(path) => {
            let dict = StateDict::read(path)?;
            let Some((shape, data)) = dict.tensors.get("input") else {
                let names: Vec<&str> = dict.tensors.keys().map(String::as_str).collect();
                return Err(format!(
                    "{} has no float tensor named \"input\" (it holds: {}); --input-tensor takes the \
                     NCHW batch as \"input\"",
                    path.display(),
                    match names.len() {
                        0 => "no float tensors".to_string(),
                        n if n <= 6 => names.join(", "),
                        n => format!("{}, ... ({n} tensors)", names[..6].join(", ")),
                    }
                )
                .into());
            };
            if shape.len() != 4 || shape[1] != 3 || shape.contains(&0) {
                return Err(format!(
                    "{}: \"input\" has shape {shape:?}; it must be a non-empty batch of RGB images [N, 3, H, W]",
                    path.display()
                )
                .into());
            }
            let (n, h, w) = (shape[0], shape[2], shape[3]);
            let per_image = 3 * h * w;
            for (b, chunk) in data.chunks(a.batch * per_image).enumerate() {
                forward(
                    &net,
                    &gpu,
                    chunk,
                    [chunk.len() / per_image, 3, h, w],
                    a.logits,
                    &mut outs,
                )?;
                if n > a.batch {
                    eprintln!("embed: {} of {n} embedded", (b * a.batch + a.batch).min(n));
                }
            }
            meta.insert("input".into(), path.display().to_string());
            meta.insert(
                "preprocessing".into(),
                "none: the tensor \"input\" used unchanged".into(),
            );
        }
    }

    let rows = outs.rows;
    let mut tensors = vec![(
        "features".to_string(),
        Tensor::from_slice(&gpu, &outs.features, &[rows, dim])?,
    )];
    let mut shown = format!("features [{rows}, {dim}]");
    if a.logits {
        tensors.push((
            "logits".to_string(),
            Tensor::from_slice(&gpu, &outs.logits, &[rows, num_classes])?,
        ));
        shown.push_str(&format!(", logits [{rows}, {num_classes}]"));
    }
    StateDict::write(&a.out, &tensors, meta)?;
    println!(
        "embedded {rows} {} with {} ({}, eval mode): {shown} -> {}",
        if matches!(a.input, Input::Images(_)) {
            "image(s)"
        } else {
            "input(s)"
        },
        arch.name(),
        a.weights.display(),
        a.out.display()
    );
    if let Some((bad, total)) = skipped {
        println!(
            "skipped {bad} of {total} image file(s) that could not be read{}",
            if bad > 0 { " (named above)" } else { "" }
        );
    }
    Ok(())
}

/// One eval-mode forward pass of `data` (shape `shape`), appending features (and logits).
fn forward(
    net: &ResNet,
    gpu: &Arc<Gpu>,
    data: &[f32],
    shape: [usize; 4],
    logits: bool,
    outs: &mut Outputs,
) -> Res<()> {
    convirt::no_grad(|| -> Res<()> {
        let x = Tensor::from_slice(gpu, data, &shape)?;
        let features = net.features(&x, false)?;
        let dim = net.arch.features();
        if features.shape() != [shape[0], dim] {
            return Err(format!(
                "the network returned features of shape {:?}, expected [{}, {dim}]",
                features.shape(),
                shape[0]
            )
            .into());
        }
        if logits {
            // From the features already computed: the convolutions run once.
            outs.logits.extend(net.fc.forward(&features)?.to_vec()?);
        }
        outs.features.extend(features.to_vec()?);
        outs.rows += shape[0];
        Ok(())
    })
}

/// `embed text`: sentences through a BERT, pooled per sentence.
fn run_text(args: &[String]) -> Res<()> {
    let mut flags: HashMap<&str, String> = HashMap::new();
    let mut hidden = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            "--hidden" => hidden = true,
            "--weights" | "--config" | "--tokenizer" | "--texts" | "--sentence" | "--pool"
            | "--out" | "--max-len" | "--batch" => {
                let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                flags.insert(flag.trim_start_matches("--"), value.clone());
            }
            other => {
                return Err(
                    format!("unknown argument '{other}' for embed text (see --help)").into(),
                )
            }
        }
    }
    let need = |k: &str| {
        flags
            .get(k)
            .cloned()
            .ok_or_else(|| format!("embed text needs --{k} (see --help)"))
    };
    let texts: Vec<String> = match (flags.get("texts"), flags.get("sentence")) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("{path}: {e}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        (None, Some(sentence)) => vec![sentence.clone()],
        _ => return Err("give exactly one of --texts FILE or --sentence \"...\"".into()),
    };
    if texts.is_empty() {
        return Err("no sentence to embed".into());
    }
    let pool = need("pool")?;
    if !["max", "mean", "cls"].contains(&pool.as_str()) {
        return Err(format!("--pool {pool}: use max, mean or cls").into());
    }
    let max_len: usize = flags
        .get("max-len")
        .map_or(Ok(128), |v| v.parse())
        .map_err(|e| format!("--max-len: {e}"))?;
    let batch: usize = flags
        .get("batch")
        .map_or(Ok(32), |v| v.parse())
        .map_err(|e| format!("--batch: {e}"))?;
    let batch = if hidden { texts.len() } else { batch.max(1) };
    let out = PathBuf::from(need("out")?);

    let gpu = Gpu::shared()?;
    let tokenizer = Tokenizer::from_file(std::path::Path::new(&need("tokenizer")?), max_len)?;
    let config = BertConfig::from_file(std::path::Path::new(&need("config")?))?;
    let model = BertModel::load(
        &gpu,
        std::path::Path::new(&need("weights")?),
        &config,
        false,
    )?;
    let d = config.hidden_size;
    let (mut embeddings, mut last) = (Vec::with_capacity(texts.len() * d), None);
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let tokens = tokenizer.encode(&refs)?;
        let states = convirt::no_grad(|| model.forward(&tokens, Mode::Eval))?;
        let mask = Tensor::from_slice(&gpu, &tokens.mask, &[tokens.batch, tokens.seq])?;
        let pooled = match pool.as_str() {
            "max" => states.masked_max_pool(&mask)?.to_vec()?,
            "mean" => states.masked_mean_pool(&mask)?.to_vec()?,
            _ => {
                let all = states.to_vec()?;
                (0..tokens.batch)
                    .flat_map(|b| all[b * tokens.seq * d..b * tokens.seq * d + d].to_vec())
                    .collect()
            }
        };
        embeddings.extend(pooled);
        last = Some(states);
    }
    let mut tensors = vec![(
        "embeddings".to_string(),
        Tensor::from_slice(&gpu, &embeddings, &[texts.len(), d])?,
    )];
    if let (true, Some(states)) = (hidden, last) {
        tensors.push(("hidden".to_string(), states));
    }
    let meta = HashMap::from([
        ("texts".to_string(), texts.join("\n")),
        ("pool".to_string(), pool.clone()),
    ]);
    StateDict::write(&out, &tensors, meta)?;
    println!(
        "embedded {} sentence(s) ({pool} pooling, {d}-d) into {}",
        texts.len(),
        out.display()
    );
    Ok(())
}

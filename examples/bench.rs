//! Kernel benchmark: times the engine's kernels on the chosen adapter and compares each to a
//! ceiling measured on the same adapter in the same run.
//!
//! ```text
//! cargo run --release --example bench -- [gemm|elementwise|softmax|reduce|all|resnet|bert|infonce] [--json] [--quick]
//! ```
//!
//! Method. Every case allocates three sets of pseudo-random inputs and cycles through them, so
//! no repetition reads the inputs that the one before it just left in the caches. A case runs twice to
//! warm up (which also compiles its pipelines), then 10 times (3 with `--quick`, or when one run
//! takes over half a second); the table reports the median. Each repetition is timed with GPU
//! timestamps when the adapter has them (the sum of the kernels that repetition dispatched),
//! otherwise with the wall clock from recording the op to the end of a `sync()`. The device is
//! idle (`sync()`) between repetitions.
//!
//! Ceilings. The compute ceiling is the fastest repetition of the largest square GEMM (GFLOP/s),
//! the bandwidth ceiling the fastest repetition of a 64 MiB copy (GB/s, read plus write). They
//! are measured first; each row then gives its throughput as a percentage of one of them: GEMM
//! rows of the compute ceiling, the other rows of the bandwidth ceiling.
//!
//! Adapter choice follows `CONVIRT_BACKEND` and `CONVIRT_ADAPTER` (see `convirt::GpuOptions`).

use convirt::ops::infonce::{infonce_with, InfoNcePath};
use convirt::{GemmOptions, Gpu, Result, Tensor};
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo run --release --example bench -- [gemm|elementwise|softmax|reduce|all|resnet|bert|infonce] [--json] [--quick]

  gemm         square f32 GEMMs (256, 512, 1024, and 2048 on hardware adapters), awkward
               shapes 1000x1000x1000 and 7x513x129, and 1024^3 with A or B transposed
  elementwise  ReLU, GELU and add on 4M elements, bias_add on [4096, 1024]
  softmax      softmax over the rows of [4096, 1024]
  reduce       sum of [4096, 1024] over axis 0 and over axis 1
  all          everything above (the default)
  resnet       ResNet-50's convolutions at batch 8, 224 px (forward, and forward + both
               backwards), a whole ResNet-50 training step (forward, backward) at batch 8,
               timed by wall clock, and the buffer pool's peak for one step at batch 32
  bert         fused attention (B 32, 12 heads, T 128, Dh 64) forward and forward + backward,
               and BERT-base training steps (6 layers frozen, batch 32, 32 and 128 tokens)
  infonce      ConVIRT's loss forward + backward at d = 512, N = 32 and 256: the one-dispatch
               fused kernel, the tiled multi-workgroup path, and the same loss chained from
               the engine's separate kernels (GEMMs,
               reductions, log-softmax, elementwise) with autograd; GFLOP/s count 6 N^2 d

  --json       one JSON object per line instead of a table (the first line names the adapter)
  --quick      3 timed repetitions instead of 10
  --help       this text

columns:
  kernel     the op timed
  shape      GEMM: M x N x K (C is M x N); other ops: the input's shape
  median ms  median time of one repetition (GPU timestamps when the adapter has them,
             otherwise wall clock up to the end of a sync)
  GFLOP/s    useful floating-point operations per second (GEMM: 2 M N K)
  GB/s       compulsory bytes per second: each input read once, each output written once
  % ceil     throughput as a percentage of a ceiling measured in the same run:
             gemm = fastest repetition of the largest square GEMM (GFLOP/s),
             copy = fastest repetition of a 64 MiB copy (GB/s, read + write)

Cases that set a ceiling run first. Each case cycles through 3 input sets after 2 warm-up runs.";

/// Input sets allocated per case and cycled through, so caches do not flatter.
const INPUT_SETS: usize = 3;
const WARMUP_RUNS: usize = 2;
const REPS: usize = 10;
const QUICK_REPS: usize = 3;
/// A warm-up run slower than this gets the quick repetition count.
const SLOW_RUN_MS: f64 = 500.0;
/// Elements of the elementwise cases (4M) and of the copy (16M f32 = 64 MiB).
const ELEMENTWISE_LEN: usize = 4 << 20;
const COPY_LEN: usize = 16 << 20;
/// Rows and columns of the bias_add, softmax and reduce inputs.
const ROWS: usize = 4096;
const COLS: usize = 1024;

/// Which families the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Gemm,
    Elementwise,
    Softmax,
    Reduce,
    All,
    Resnet,
    Bert,
    InfoNce,
}

struct Args {
    group: Group,
    json: bool,
    quick: bool,
}

/// What the command line asks for: a run, or the usage text.
enum Command {
    Run(Args),
    Help,
}

/// Which measured ceiling a row is compared to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    Gemm,
    Copy,
}

impl Ceiling {
    fn name(self) -> &'static str {
        match self {
            Ceiling::Gemm => "gemm",
            Ceiling::Copy => "copy",
        }
    }
}

/// The op a case times, on its inputs.
type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One benchmark: the op, the shapes of its inputs, and its work for the throughput columns.
struct Case {
    kernel: &'static str,
    /// Reported shape: M, N, K for GEMMs, the (first) input's shape otherwise.
    shape: Vec<usize>,
    /// Shapes of the tensors `run` receives, in order.
    inputs: Vec<Vec<usize>>,
    run: Op,
    flops: f64,
    bytes: f64,
    ceiling: Ceiling,
    /// Whether this case measures its ceiling (it then runs before the cases compared to it).
    sets_ceiling: bool,
}

/// A case's timings, in milliseconds.
struct Timing {
    median_ms: f64,
    best_ms: f64,
    reps: usize,
}

/// The ceilings measured so far: GFLOP/s of the GEMM ceiling case, GB/s of the copy.
#[derive(Default)]
struct Ceilings {
    gemm_gflops: Option<f64>,
    copy_gbps: Option<f64>,
}

impl Ceilings {
    /// Records `t` as the ceiling `case` measures (its fastest repetition).
    fn record(&mut self, case: &Case, t: &Timing) {
        match case.ceiling {
            Ceiling::Gemm => self.gemm_gflops = Some(gflops(case.flops, t.best_ms)),
            Ceiling::Copy => self.copy_gbps = Some(gbps(case.bytes, t.best_ms)),
        }
    }

    /// `case`'s median throughput as a percentage of its ceiling, once that is measured.
    fn percent(&self, case: &Case, t: &Timing) -> Option<f64> {
        match case.ceiling {
            Ceiling::Gemm => self
                .gemm_gflops
                .map(|c| 100.0 * gflops(case.flops, t.median_ms) / c),
            Ceiling::Copy => self
                .copy_gbps
                .map(|c| 100.0 * gbps(case.bytes, t.median_ms) / c),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            // Ignore a closed pipe (`--help | head`).
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            let synopsis = USAGE.lines().next().unwrap_or_default();
            eprintln!(
                "bench: {why}\n{synopsis}\n(--help lists the groups and explains the columns)"
            );
            return ExitCode::from(2);
        }
    };
    let gpu = match Gpu::shared() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&gpu, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> std::result::Result<Command, String> {
    let mut parsed = Args {
        group: Group::All,
        json: false,
        quick: false,
    };
    let mut group_given = false;
    for arg in args {
        let group = match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--json" => {
                parsed.json = true;
                continue;
            }
            "--quick" => {
                parsed.quick = true;
                continue;
            }
            "gemm" => Group::Gemm,
            "elementwise" => Group::Elementwise,
            "softmax" => Group::Softmax,
            "reduce" => Group::Reduce,
            "all" => Group::All,
            "resnet" => Group::Resnet,
            "bert" => Group::Bert,
            "infonce" => Group::InfoNce,
            other => return Err(format!("unknown argument {other:?}")),
        };
        if group_given {
            return Err(format!(
                "only one group may be given; {arg:?} is a second one"
            ));
        }
        parsed.group = group;
        group_given = true;
    }
    Ok(Command::Run(parsed))
}

fn run(gpu: &Arc<Gpu>, args: &Args) -> Result<()> {
    let timestamps = gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    // Recording per dispatch (CONVIRT_PROFILE=1) would distort wall-clock timings.
    gpu.set_profiling(false)?;
    let timer = if timestamps {
        "GPU timestamps"
    } else {
        "wall clock"
    };
    if args.json {
        println!(
            "{{\"adapter\": {}, \"timer\": \"{timer}\"}}",
            json_string(&gpu.describe())
        );
    } else {
        println!("adapter: {}", gpu.describe());
        println!(
            "timer: {timer}; median of {} repetitions",
            reps_label(args.quick)
        );
        print_header();
    }
    let mut ceilings = Ceilings::default();
    for case in plan(gpu, args.group) {
        let t = measure(gpu, &case, args.quick, timestamps)?;
        if case.sets_ceiling {
            ceilings.record(&case, &t);
        }
        let pct = ceilings.percent(&case, &t);
        if args.json {
            println!("{}", json_row(&case, &t, pct));
        } else {
            println!("{}", table_row(&case, &t, pct));
        }
        gpu.trim_pool();
    }
    if !args.json {
        print_ceilings(&ceilings);
    }
    if args.group == Group::Resnet {
        resnet_steps(gpu, args)?;
    }
    if args.group == Group::Bert {
        bert_steps(gpu, args)?;
    }
    if args.group == Group::InfoNce && !args.json {
        // The chain is only a fair baseline if it computes the same loss.
        let mut rng = XorShift(7);
        let data: Vec<f32> = (0..2 * 32 * 512).map(|_| rng.next_f32()).collect();
        let v = Tensor::from_slice(gpu, &data[..32 * 512], &[32, 512])?;
        let u = Tensor::from_slice(gpu, &data[32 * 512..], &[32, 512])?;
        let fused = convirt::ops::infonce::infonce(&v, &u, 0.1, 0.75)?.item()?;
        let chain = infonce_chain(&v, &u, 0.1, 0.75)?.item()?;
        println!("loss at N = 32: fused {fused:.6}, chain {chain:.6}");
    }
    Ok(())
}

/// The cases of `group`, ceiling cases first.
fn plan(gpu: &Gpu, group: Group) -> Vec<Case> {
    let mut cases = Vec::new();
    if group == Group::Bert {
        let mut ceiling = gemm_case("gemm", [1024; 3], GemmOptions::default());
        ceiling.sets_ceiling = true;
        return vec![ceiling, attention_case(false), attention_case(true)];
    }
    if group == Group::InfoNce {
        let mut ceiling = gemm_case("gemm", [1024; 3], GemmOptions::default());
        ceiling.sets_ceiling = true;
        let mut cases = vec![ceiling];
        for n in [32, 256] {
            for path in [Some(InfoNcePath::Fused), Some(InfoNcePath::Tiled), None] {
                cases.push(infonce_case(n, path));
            }
        }
        return cases;
    }
    if group == Group::Resnet {
        // Convolutions are GEMMs: the GEMM ceiling is theirs.
        let mut ceiling = gemm_case("gemm", [1024; 3], GemmOptions::default());
        ceiling.sets_ceiling = true;
        cases.push(ceiling);
        cases.extend(conv_cases());
        return cases;
    }
    if group != Group::Gemm {
        cases.push(copy_case());
    }
    if matches!(group, Group::Gemm | Group::All) {
        cases.extend(gemm_cases(gpu));
    }
    if matches!(group, Group::Elementwise | Group::All) {
        cases.extend(elementwise_cases());
    }
    if matches!(group, Group::Softmax | Group::All) {
        cases.push(softmax_case());
    }
    if matches!(group, Group::Reduce | Group::All) {
        cases.extend(reduce_cases());
    }
    cases
}

fn copy_case() -> Case {
    Case {
        kernel: "copy",
        shape: vec![COPY_LEN],
        inputs: vec![vec![COPY_LEN]],
        run: Box::new(|t| t[0].copy()),
        flops: 0.0,
        bytes: 8.0 * COPY_LEN as f64,
        ceiling: Ceiling::Copy,
        sets_ceiling: true,
    }
}

/// Square GEMMs (the largest first: it sets the ceiling), awkward shapes, then transposes.
fn gemm_cases(gpu: &Gpu) -> Vec<Case> {
    let largest = if gpu.is_cpu() { 1024 } else { 2048 };
    let plain = GemmOptions::default;
    let mut ceiling = gemm_case("gemm", [largest; 3], plain());
    ceiling.sets_ceiling = true;
    let mut cases = vec![ceiling];
    for size in [256, 512, 1024, 2048].into_iter().filter(|&s| s < largest) {
        cases.push(gemm_case("gemm", [size; 3], plain()));
    }
    cases.push(gemm_case("gemm", [1000, 1000, 1000], plain()));
    cases.push(gemm_case("gemm", [7, 513, 129], plain()));
    let trans_a = GemmOptions {
        trans_a: true,
        ..plain()
    };
    cases.push(gemm_case("gemm_tn", [1024; 3], trans_a));
    let trans_b = GemmOptions {
        trans_b: true,
        ..plain()
    };
    cases.push(gemm_case("gemm_nt", [1024; 3], trans_b));
    cases
}

/// `op(A) op(B)` with `op(A)` M x K and `op(B)` K x N, stored transposed as `opts` says.
fn gemm_case(kernel: &'static str, [m, n, k]: [usize; 3], opts: GemmOptions) -> Case {
    let a = if opts.trans_a { vec![k, m] } else { vec![m, k] };
    let b = if opts.trans_b { vec![n, k] } else { vec![k, n] };
    Case {
        kernel,
        shape: vec![m, n, k],
        inputs: vec![a, b],
        run: Box::new(move |t| t[0].gemm(&t[1], &opts)),
        flops: 2.0 * (m * n * k) as f64,
        bytes: 4.0 * (m * k + k * n + m * n) as f64,
        ceiling: Ceiling::Gemm,
        sets_ceiling: false,
    }
}

/// A bandwidth-bound case on `inputs`, whose first shape is the one reported.
fn memory_case(
    kernel: &'static str,
    inputs: Vec<Vec<usize>>,
    run: fn(&[Tensor]) -> Result<Tensor>,
    flops: usize,
    bytes: usize,
) -> Case {
    Case {
        kernel,
        shape: inputs[0].clone(),
        inputs,
        run: Box::new(run),
        flops: flops as f64,
        bytes: bytes as f64,
        ceiling: Ceiling::Copy,
        sets_ceiling: false,
    }
}

fn elementwise_cases() -> Vec<Case> {
    let n = ELEMENTWISE_LEN;
    let (rows, cols) = (ROWS, COLS);
    vec![
        memory_case("relu", vec![vec![n]], |t| t[0].relu(), n, 8 * n),
        // GELU costs about 20 flops per element (erf), as the engine's profiler counts it.
        memory_case("gelu", vec![vec![n]], |t| t[0].gelu(), 20 * n, 8 * n),
        memory_case(
            "add",
            vec![vec![n], vec![n]],
            |t| t[0].add(&t[1]),
            n,
            12 * n,
        ),
        memory_case(
            "bias_add",
            vec![vec![rows, cols], vec![cols]],
            |t| t[0].bias_add(&t[1]),
            rows * cols,
            4 * (2 * rows * cols + cols),
        ),
    ]
}

fn softmax_case() -> Case {
    let n = ROWS * COLS;
    // max, subtract, exp, sum, divide: about 5 flops per element.
    memory_case(
        "softmax",
        vec![vec![ROWS, COLS]],
        |t| t[0].softmax(),
        5 * n,
        8 * n,
    )
}

fn reduce_cases() -> Vec<Case> {
    let n = ROWS * COLS;
    vec![
        memory_case(
            "sum_axis0",
            vec![vec![ROWS, COLS]],
            |t| t[0].sum(0),
            n,
            4 * (n + COLS),
        ),
        memory_case(
            "sum_axis1",
            vec![vec![ROWS, COLS]],
            |t| t[0].sum(1),
            n,
            4 * (n + ROWS),
        ),
    ]
}

/// A convolution's shape: (label, N, C, H = W, O, K, stride, pad).
type ConvShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// ResNet-50's convolution shapes at batch 8, 224 px.
const RESNET50_CONVS: [ConvShape; 6] = [
    ("stem7x7/2", 8, 3, 224, 64, 7, 2, 3),
    ("s1 3x3", 8, 64, 56, 64, 3, 1, 1),
    ("s2 3x3", 8, 128, 28, 128, 3, 1, 1),
    ("s3 3x3", 8, 256, 14, 256, 3, 1, 1),
    ("s4 3x3", 8, 512, 7, 512, 3, 1, 1),
    ("s1 1x1", 8, 256, 56, 64, 1, 1, 0),
];

/// Each ResNet-50 convolution forward, and forward + backward (data and weight gradients).
fn conv_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (label, n, c, h, o, k, s, p) in RESNET50_CONVS {
        let oh = (h + 2 * p - k) / s + 1;
        let flops = 2.0 * (n * o * oh * oh * c * k * k) as f64;
        let bytes = 4.0 * (n * c * h * h + o * c * k * k + n * o * oh * oh) as f64;
        let inputs = vec![vec![n, c, h, h], vec![o, c, k, k]];
        cases.push(Case {
            kernel: Box::leak(format!("conv {label} fwd").into_boxed_str()),
            shape: vec![n, c, h, h, o],
            inputs: inputs.clone(),
            run: Box::new(move |t| t[0].conv2d(&t[1], None, s, p)),
            flops,
            bytes,
            ceiling: Ceiling::Gemm,
            sets_ceiling: false,
        });
        cases.push(Case {
            kernel: Box::leak(format!("conv {label} f+b").into_boxed_str()),
            shape: vec![n, c, h, h, o],
            inputs,
            run: Box::new(move |t| {
                let (x, w) = (
                    t[0].detach().requires_grad(true),
                    t[1].detach().requires_grad(true),
                );
                let y = x.conv2d(&w, None, s, p)?;
                y.sum_all()?.backward()?;
                Ok(y)
            }),
            // Forward, data gradient and weight gradient: three GEMMs of the same size.
            flops: 3.0 * flops,
            bytes: 3.0 * bytes,
            ceiling: Ceiling::Gemm,
            sets_ceiling: false,
        });
    }
    cases
}

/// Fused attention at BERT-base's shape, T = 128: 4 B H T^2 Dh flops forward; the backward
/// (dQ 6, dK and dV 8, recomputation included) 3.5 times that.
fn attention_case(backward: bool) -> Case {
    let (b, h, t, dh) = (32, 12, 128, 64);
    let shape = vec![b, h, t, dh];
    let forward = 4.0 * (b * h * t * t * dh) as f64;
    Case {
        kernel: if backward {
            "attention f+b"
        } else {
            "attention fwd"
        },
        shape: shape.clone(),
        inputs: vec![shape.clone(), shape.clone(), shape],
        run: Box::new(move |x| {
            let grad = |t: &Tensor| t.detach().requires_grad(backward);
            let (q, k, v) = (grad(&x[0]), grad(&x[1]), grad(&x[2]));
            let o = convirt::ops::attention::attention(&q, &k, &v, None, 0.125)?;
            if backward {
                o.sum_all()?.backward()?;
            }
            Ok(o)
        }),
        flops: if backward { 4.5 * forward } else { forward },
        bytes: 4.0 * 4.0 * (b * h * t * dh) as f64,
        ceiling: Ceiling::Gemm,
        sets_ceiling: false,
    }
}

/// ConVIRT's loss (tau 0.1, lambda 0.75) and both gradients, fused or chained from separate
/// kernels. The flop count is the three N x N x d products (S, dV, dU) either way.
/// `path` None is the chain.
fn infonce_case(n: usize, path: Option<InfoNcePath>) -> Case {
    let d = 512;
    Case {
        kernel: match path {
            Some(InfoNcePath::Fused) => "infonce fused f+b",
            Some(_) => "infonce tiled f+b",
            None => "infonce chain f+b",
        },
        shape: vec![n, d],
        inputs: vec![vec![n, d], vec![n, d]],
        run: Box::new(move |x| {
            let (v, u) = (
                x[0].detach().requires_grad(true),
                x[1].detach().requires_grad(true),
            );
            let loss = match path {
                Some(path) => infonce_with(&v, &u, 0.1, 0.75, path)?,
                None => infonce_chain(&v, &u, 0.1, 0.75)?,
            };
            loss.backward()?;
            Ok(loss)
        }),
        flops: 6.0 * (n * n * d) as f64,
        bytes: 4.0 * 4.0 * (n * d) as f64,
        ceiling: Ceiling::Gemm,
        sets_ceiling: false,
    }
}

/// The InfoNCE loss from separate kernels: S = v u^T / (|v| |u|^T tau) by two GEMMs and an
/// elementwise divide, row and column log-softmax, the diagonal picked by a mask.
fn infonce_chain(v: &Tensor, u: &Tensor, tau: f32, lambda: f32) -> Result<Tensor> {
    let (n, gpu) = (v.shape()[0], v.gpu().clone());
    let norm = |x: &Tensor| -> Result<Tensor> { x.mul(x)?.sum(1)?.sqrt()?.reshape(&[n, 1]) };
    let t = GemmOptions {
        trans_b: true,
        ..GemmOptions::default()
    };
    let s = v
        .gemm(u, &t)?
        .div(&norm(v)?.gemm(&norm(u)?, &t)?)?
        .scale(1.0 / tau)?;
    let eye: Vec<f32> = (0..n * n)
        .map(|i| (i % (n + 1) == 0) as u8 as f32)
        .collect();
    let eye = Tensor::from_slice(&gpu, &eye, &[n, n])?;
    let diagonal = |x: Tensor| -> Result<Tensor> { x.mul(&eye)?.sum_all() };
    let rows = diagonal(s.log_softmax()?)?;
    let cols = diagonal(s.transpose(0, 1)?.log_softmax()?)?;
    rows.scale(-lambda / n as f32)?
        .add(&cols.scale(-(1.0 - lambda) / n as f32)?)
}

/// BERT-base training steps with the embeddings and 6 layers frozen (the paper's text
/// encoder), by wall clock.
fn bert_steps(gpu: &Arc<Gpu>, args: &Args) -> Result<()> {
    use convirt::data::TokenBatch;
    use convirt::models::bert::{BertConfig, BertModel, Mode};
    let config = BertConfig::base(28996);
    let model = BertModel::random(gpu, &config, false, 0)?;
    model.freeze(6);
    let mut rng = XorShift(0xBE27);
    for seq in [32, 128] {
        let batch = 32;
        let tokens = TokenBatch {
            ids: (0..batch * seq)
                .map(|_| ((rng.next_f32() + 1.0) * 14000.0) as u32)
                .collect(),
            type_ids: vec![0; batch * seq],
            mask: vec![1.0; batch * seq],
            batch,
            seq,
        };
        let w: Vec<f32> = (0..batch * seq * 768).map(|_| rng.next_f32()).collect();
        let w = Tensor::from_slice(gpu, &w, &[batch, seq, 768])?;
        let step = || -> Result<f64> {
            gpu.sync()?;
            let start = Instant::now();
            let loss = model
                .forward(&tokens, Mode::Train { seed: 1 })?
                .mul(&w)?
                .sum_all()?;
            loss.backward()?;
            for (_, p) in model.parameters() {
                p.zero_grad();
            }
            gpu.sync()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        step()?;
        let reps = if args.quick { 1 } else { 3 };
        let mut times = (0..reps).map(|_| step()).collect::<Result<Vec<f64>>>()?;
        times.sort_by(f64::total_cmp);
        let ms = median(&times);
        if args.json {
            println!(
                "{{\"kernel\": \"bert_base_train_step\", \"shape\": [{batch}, {seq}], \"median_ms\": {}, \"reps\": {reps}}}",
                json_number(ms)
            );
        } else {
            println!("bert-base train step (6 frozen layers), batch {batch}, {seq} tokens: {ms:.0} ms (median of {reps})");
        }
    }
    Ok(())
}

/// Whole ResNet-50 training steps (forward in training mode, a weighted sum of the logits,
/// backward), by wall clock: what a user waits for, CPU-side recording included.
fn resnet_steps(gpu: &Arc<Gpu>, args: &Args) -> Result<()> {
    use convirt::models::resnet::{Arch, ResNet};
    let net = ResNet::random(gpu, Arch::ResNet50, 1000, 0)?;
    let mut rng = XorShift(0x5EED);
    let mut step = |batch: usize| -> Result<f64> {
        let x: Vec<f32> = (0..batch * 3 * 224 * 224).map(|_| rng.next_f32()).collect();
        let w: Vec<f32> = (0..batch * 1000).map(|_| rng.next_f32()).collect();
        let x = Tensor::from_slice(gpu, &x, &[batch, 3, 224, 224])?;
        let w = Tensor::from_slice(gpu, &w, &[batch, 1000])?;
        gpu.sync()?;
        let start = Instant::now();
        let loss = net.forward(&x, true)?.mul(&w)?.sum_all()?;
        loss.backward()?;
        for (_, p) in net.parameters() {
            p.zero_grad();
        }
        gpu.sync()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    // 4.1 GMAC per 224 px image forward; backward costs twice the forward.
    let flops_per_image = 3.0 * 2.0 * 4.1e9;
    let batch = 8;
    step(batch)?; // warm-up: compiles every pipeline
    let reps = if args.quick { 1 } else { 3 };
    let mut times = (0..reps)
        .map(|_| step(batch))
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let ms = median(&times);
    gpu.trim_pool();
    gpu.reset_pool_peak();
    let big = 32;
    let big_ms = step(big)?;
    let peak = gpu.pool_stats().peak_in_use_bytes as f64 / (1u64 << 30) as f64;
    let ips = batch as f64 / (ms * 1e-3);
    if args.json {
        println!(
            "{{\"kernel\": \"resnet50_train_step\", \"shape\": [{batch}, 3, 224, 224], \"median_ms\": {}, \"reps\": {reps}, \"images_per_s\": {}, \"gflops\": {}}}",
            json_number(ms),
            json_number(ips),
            json_number(gflops(flops_per_image * batch as f64, ms))
        );
        println!(
            "{{\"kernel\": \"resnet50_train_step\", \"shape\": [{big}, 3, 224, 224], \"median_ms\": {}, \"reps\": 1, \"pool_peak_gib\": {}}}",
            json_number(big_ms),
            json_number(peak)
        );
    } else {
        println!(
            "resnet50 train step, batch {batch}, 224 px: {ms:.0} ms (median of {reps}), {ips:.2} images/s, {:.1} GFLOP/s",
            gflops(flops_per_image * batch as f64, ms)
        );
        println!("resnet50 train step, batch {big}, 224 px: {big_ms:.0} ms, buffer pool peak {peak:.2} GiB");
    }
    Ok(())
}

/// Warms `case` up, then times its repetitions, cycling through its input sets.
fn measure(gpu: &Arc<Gpu>, case: &Case, quick: bool, timestamps: bool) -> Result<Timing> {
    let sets = input_sets(gpu, case)?;
    gpu.sync()?;
    let mut last_ms = 0.0;
    for i in 0..WARMUP_RUNS {
        last_ms = time_once(gpu, case, &sets[i % INPUT_SETS], timestamps)?;
    }
    let reps = if quick || last_ms > SLOW_RUN_MS {
        QUICK_REPS
    } else {
        REPS
    };
    let mut times = (0..reps)
        .map(|i| time_once(gpu, case, &sets[(WARMUP_RUNS + i) % INPUT_SETS], timestamps))
        .collect::<Result<Vec<f64>>>()?;
    gpu.set_profiling(false)?;
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: median(&times),
        best_ms: times[0],
        reps,
    })
}

/// `INPUT_SETS` distinct sets of pseudo-random inputs for `case`.
fn input_sets(gpu: &Arc<Gpu>, case: &Case) -> Result<Vec<Vec<Tensor>>> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..INPUT_SETS)
        .map(|_| {
            case.inputs
                .iter()
                .map(|shape| {
                    let data: Vec<f32> = (0..shape.iter().product())
                        .map(|_| rng.next_f32())
                        .collect();
                    Tensor::from_slice(gpu, &data, shape)
                })
                .collect()
        })
        .collect()
}

/// One repetition of `case` on `inputs`, in milliseconds; the device is idle afterwards.
fn time_once(gpu: &Gpu, case: &Case, inputs: &[Tensor], timestamps: bool) -> Result<f64> {
    if timestamps {
        // Starting the profiler clears what the previous repetition recorded.
        gpu.set_profiling(true)?;
        let out = (case.run)(inputs)?;
        let ns: f64 = gpu.profile()?.kernels.iter().map(|k| k.dur_ns).sum();
        drop(out);
        gpu.sync()?;
        Ok(ns * 1e-6)
    } else {
        gpu.sync()?;
        let start = Instant::now();
        let out = (case.run)(inputs)?;
        gpu.sync()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        Ok(ms)
    }
}

/// Median of sorted, non-empty `v` (the mean of the two middle values for an even count).
fn median(v: &[f64]) -> f64 {
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

fn gflops(flops: f64, ms: f64) -> f64 {
    flops / (ms * 1e-3) * 1e-9
}

fn gbps(bytes: f64, ms: f64) -> f64 {
    bytes / (ms * 1e-3) * 1e-9
}

/// Deterministic pseudo-random inputs (xorshift64), uniform in [-1, 1).
struct XorShift(u64);

impl XorShift {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn reps_label(quick: bool) -> String {
    if quick {
        format!("{QUICK_REPS}")
    } else {
        format!("{REPS} ({QUICK_REPS} when a run takes over {SLOW_RUN_MS} ms)")
    }
}

fn print_header() {
    println!(
        "{:<18} {:<16} {:>5} {:>10} {:>9} {:>8} {:>7} {:<7}",
        "kernel", "shape", "reps", "median ms", "GFLOP/s", "GB/s", "% ceil", "ceiling"
    );
}

fn table_row(case: &Case, t: &Timing, pct: Option<f64>) -> String {
    let shape = case
        .shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x");
    let flops = if case.flops > 0.0 {
        format!("{:.1}", gflops(case.flops, t.median_ms))
    } else {
        "-".into()
    };
    let pct = pct.map_or("-".into(), |p| format!("{p:.1}"));
    let mark = if case.sets_ceiling { " (sets it)" } else { "" };
    format!(
        "{:<18} {:<16} {:>5} {:>10.3} {:>9} {:>8.2} {:>7} {}{mark}",
        case.kernel,
        shape,
        t.reps,
        t.median_ms,
        flops,
        gbps(case.bytes, t.median_ms),
        pct,
        case.ceiling.name()
    )
}

fn print_ceilings(c: &Ceilings) {
    if let Some(g) = c.gemm_gflops {
        println!("gemm ceiling: {g:.1} GFLOP/s (fastest repetition of the largest square GEMM)");
    }
    if let Some(b) = c.copy_gbps {
        println!("copy ceiling: {b:.2} GB/s (fastest repetition of the 64 MiB copy, read + write)");
    }
}

fn json_row(case: &Case, t: &Timing, pct: Option<f64>) -> String {
    let shape = case
        .shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{\"kernel\": {}, \"shape\": [{shape}], \"median_ms\": {}, \"best_ms\": {}, \"reps\": {}, \
         \"gflops\": {}, \"gbps\": {}, \"pct_of_ceiling\": {}, \"ceiling\": \"{}\", \
         \"sets_ceiling\": {}}}",
        json_string(case.kernel),
        json_number(t.median_ms),
        json_number(t.best_ms),
        t.reps,
        json_number(gflops(case.flops, t.median_ms)),
        json_number(gbps(case.bytes, t.median_ms)),
        pct.map_or("null".into(), json_number),
        case.ceiling.name(),
        case.sets_ceiling
    )
}

/// A finite number as JSON; `null` otherwise (JSON has no infinity or NaN).
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

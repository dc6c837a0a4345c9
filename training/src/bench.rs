//! `pdl bench`: training and inference throughput of the classic MNIST net (pytorch/examples
//! `mnist/main.py`) on each compiled backend, the figure the README's backend table quotes;
//! `--model resnet` and `--model vit`: the same for `fashion-resnet`'s ResNet and `mnist-vit`'s
//! ViT; `--model gpt` and `--model lstm`: the same for `shakespeare-gpt`'s and
//! `shakespeare-lstm`'s character models; `--model gpt-generation`: characters/s of
//! `shakespeare-gpt` generation with and without its KV cache; `--model gcn`: see `bench_gnn`.
//!
//! `--model all`: the five course models above (the CNN with this project's convolution), a row
//! each per backend, with `--reference FILE` the ratios against the JSON that
//! `training/reference/pytorch_bench.py --model all --json FILE` writes.
//!
//! Every figure is the median of a step's repeated timings (two warm-up steps, then at least 3
//! and for at least `--seconds`), turned into items/s. Beside it is the memory the model's
//! timing took: the process's peak resident set while it ran, less its resident set when it
//! started (Linux only). Before each model the freed heap is handed back with `malloc_trim` and
//! the high-water mark is reset, so a row does not carry the last one's peak or the libraries'
//! size; on a GPU it counts host memory only.
//!
//! Images: batches of 64 through forward, cross-entropy, backward and an AdamW step; inference in
//! batches of 1000 through `forward` without autodiff. Character
//! models: their preset's batch of windows (64 of 64 characters for the GPT, 64 of 128 for the
//! LSTM), loss at every position, backward, and the preset's optimiser step (AdamW with its decay
//! and gradient clipping); inference is the same batch's forward and loss without autodiff. The
//! inputs are seeded noise (pixels, or characters drawn uniformly from Tiny Shakespeare's 65):
//! throughput does not depend on them. Pass `--reference-train` / `--reference-infer` (e.g.
//! PyTorch's figures from `training/reference/pytorch_bench.py` for the same net and batch sizes)
//! to print ratios against them.

use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use crate::experiments::ExperimentConfig;
use crate::experiments::language_model::LanguageModelConfig;
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use clap::Args;
use pdl_datasets::SplitMix64;
use pdl_datasets::batcher::ImageBatch;
use pdl_datasets::text::chars::CharBatch;
use pdl_kernels::{AdamWConfig, ConvImplementation};
use pdl_models::sampling::{Generate, Sampling};
use pdl_models::transformer::CharGptConfig;
use pdl_models::{ClassicCnnConfig, ImageClassifier, ResNetConfig, VitConfig};
use std::time::{Duration, Instant};

/// What `pdl bench` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BenchModel {
    /// Training and inference images/s of the classic MNIST net.
    #[default]
    Cnn,
    /// Training and inference images/s of `fashion-resnet`'s ResNet.
    Resnet,
    /// Training and inference images/s of `mnist-vit`'s Vision Transformer.
    Vit,
    /// One full-graph GCN training epoch on a large synthetic graph: time and peak memory.
    Gcn,
    /// Training and inference windows/s of `shakespeare-gpt`'s GPT.
    Gpt,
    /// Training and inference windows/s of `shakespeare-lstm`'s LSTM.
    Lstm,
    /// Characters/s of `shakespeare-gpt` generation, with and without the KV cache.
    GptGeneration,
    /// The CNN, ResNet, ViT, GPT and LSTM, a row each per backend.
    All,
    /// What averaging the gradients across processes costs (burn-collective's all-reduce, each
    /// strategy, 2 floats to 4 M) and a model of N machines for the CNN (see bench_nodes.rs).
    AllReduce,
}

/// Options of `pdl bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum, default_value_t = BenchModel::Cnn)]
    pub model: BenchModel,
    /// GCN: nodes of the synthetic graph.
    #[arg(long, default_value_t = 100_000)]
    pub nodes: usize,
    /// GCN: undirected links drawn (edge_index holds both directions).
    #[arg(long, default_value_t = 1_000_000)]
    pub links: usize,
    /// GCN: features per node.
    #[arg(long, default_value_t = 128)]
    pub features: usize,
    /// GPT: characters to generate per timing (the first `block_size - 1` fill the context, the
    /// rest slide it).
    #[arg(long, default_value_t = 512)]
    pub length: usize,
    /// GCN: timed epochs (after one warm-up epoch).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// CNN and ResNet: whose convolution to time, `pdl` (the custom backward), `burn`, or both (the default);
    /// max pooling and dropout are pdl's either way.
    #[arg(long, value_delimiter = ',', default_values = ["burn", "pdl"])]
    pub conv: Vec<String>,
    /// Backends to measure (default: every compiled CPU backend).
    #[arg(long, value_delimiter = ',')]
    pub backend: Vec<String>,
    /// Seconds to time each figure for (at least 3 steps are always timed).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Training images/s of a reference (e.g. PyTorch) to compare against.
    #[arg(long)]
    pub reference_train: Option<f64>,
    /// Inference images/s of a reference to compare against.
    #[arg(long)]
    pub reference_infer: Option<f64>,
    /// With `--model all`: the JSON of `pytorch_bench.py --model all --json FILE`, whose figures
    /// each row is compared with.
    #[arg(long)]
    pub reference: Option<std::path::PathBuf>,
    /// all-reduce: processes to start on this machine.
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// all-reduce: the orchestrator's port (the ranks take 8 x ranks ports after it).
    #[arg(long, default_value_t = 29600)]
    pub port: u16,
    /// all-reduce: the rank of a process the benchmark started (internal).
    #[arg(long, hide = true)]
    pub rank: Option<usize>,
    /// all-reduce: where rank 0 writes its figures (internal).
    #[arg(long, hide = true)]
    pub out: Option<std::path::PathBuf>,
}

/// Training batch size of the benchmark (pytorch/examples' default).
pub const TRAIN_BATCH: usize = 64;
/// Inference batch size of the benchmark (pytorch/examples' test batch).
pub const INFER_BATCH: usize = 1000;

/// Throughput of one backend.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Training images per second at batch 64.
    pub train: f64,
    /// Inference images per second at batch 1000.
    pub infer: f64,
}

/// What [`measure`] gives for one model on one backend.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// Training and inference speed.
    pub speed: Throughput,
    /// Memory the timing took: the peak resident set while the model was timed, over the
    /// resident set it started from, where the OS tells it.
    pub memory_bytes: Option<u64>,
}

fn batch<B: Backend>(n: usize, seed: u64, device: &B::Device) -> ImageBatch<B> {
    let mut rng = SplitMix64::new(seed);
    let pixels: Vec<f32> = (0..n * 28 * 28).map(|_| rng.symmetric(1.0)).collect();
    let targets: Vec<i64> = (0..n).map(|_| rng.below(10) as i64).collect();
    ImageBatch {
        images: Tensor::from_data(TensorData::new(pixels, [n, 1, 28, 28]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
    }
}

/// Runs `step` twice untimed, then at least 3 times and for at least `budget`; returns steps/s
/// of the median step.
fn steps_per_second(budget: Duration, mut step: impl FnMut()) -> f64 {
    step();
    step();
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || started.elapsed() < budget {
        let t = Instant::now();
        step();
        times.push(t.elapsed().as_secs_f64());
    }
    1.0 / median(&mut times).max(1e-9)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Hands freed heap back to the OS and resets the process's high-water resident mark, so that
/// [`crate::bench_gnn::peak_rss`] then reads the peak of what runs from here on; returns the
/// resident set it starts from (Linux; `None` elsewhere).
fn reset_peak_memory() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's heap to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    // "5" resets VmHWM to the current resident set (Linux 4.0 on).
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    crate::bench_gnn::status_bytes("VmRSS:")
}

impl BenchModel {
    /// The registry experiment whose character model this times, if it times one.
    fn language_experiment(self) -> Option<&'static str> {
        match self {
            BenchModel::Gpt => Some("shakespeare-gpt"),
            BenchModel::Lstm => Some("shakespeare-lstm"),
            _ => None,
        }
    }

    /// Whether `--conv` picks anything for this model.
    fn has_conv_choice(self) -> bool {
        matches!(self, BenchModel::Cnn | BenchModel::Resnet)
    }
}

struct BenchTask<'a> {
    budget: Duration,
    model: BenchModel,
    conv: ConvImplementation,
    /// A character model's preset: it is timed instead of `model`'s image network.
    text: Option<&'a LanguagePreset>,
}

impl BackendTask for BenchTask<'_> {
    type Output = Throughput;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Throughput {
        let device = &devices[0];
        let conv = Some(self.conv);
        if let Some(preset) = self.text {
            return match &preset.model {
                LanguageModelConfig::Gpt(c) => text_throughput(
                    self.budget,
                    pdl_models::seeded::<B, _>(device, 0, |d| c.init::<B>(d)),
                    preset,
                    device,
                ),
                LanguageModelConfig::Rnn(c) => text_throughput(
                    self.budget,
                    pdl_models::seeded::<B, _>(device, 0, |d| c.init::<B>(d)),
                    preset,
                    device,
                ),
            };
        }
        match self.model {
            BenchModel::Resnet => image_throughput(
                self.budget,
                pdl_models::seeded::<B, _>(device, 0, |device| {
                    ResNetConfig::fashion().with_conv(conv).init::<B>(device)
                }),
                device,
            ),
            BenchModel::Vit => image_throughput(
                self.budget,
                pdl_models::seeded::<B, _>(device, 0, |device| {
                    VitConfig::mnist().init::<B>(device)
                }),
                device,
            ),
            _ => image_throughput(
                self.budget,
                pdl_models::seeded::<B, _>(device, 0, |device| {
                    ClassicCnnConfig::mnist().with_conv(conv).init::<B>(device)
                }),
                device,
            ),
        }
    }
}

/// Characters of Tiny Shakespeare, the vocabulary the character models are timed with.
const CHARACTERS: usize = 65;

/// A character model's preset, as the registry holds it, with Tiny Shakespeare's vocabulary.
pub struct LanguagePreset {
    /// The model.
    pub model: LanguageModelConfig,
    /// Its training settings (batch, learning rate, decay, clipping).
    pub training: crate::settings::TrainingSettings,
    /// Characters per window.
    pub seq_len: usize,
}

/// The preset of the registry's language-model experiment `name`.
pub fn language_preset(name: &str) -> Result<LanguagePreset> {
    match (crate::experiments::find(name)?.preset)() {
        ExperimentConfig::Language(c) => Ok(LanguagePreset {
            model: c.model.with_vocab(CHARACTERS),
            training: c.training,
            seq_len: c.data.seq_len,
        }),
        other => anyhow::bail!("{name} is not a language model: {other:?}"),
    }
}

fn char_batch<B: Backend>(n: usize, len: usize, seed: u64, device: &B::Device) -> CharBatch<B> {
    let mut rng = SplitMix64::new(seed);
    let mut ids = |_| rng.below(CHARACTERS) as i64;
    let inputs: Vec<i64> = (0..n * len).map(&mut ids).collect();
    let targets: Vec<i64> = (0..n * len).map(&mut ids).collect();
    CharBatch {
        inputs: Tensor::from_data(TensorData::new(inputs, [n, len]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n, len]), device),
    }
}

/// Times `model`'s training steps (the preset's batch of windows and its AdamW, decay and
/// clipping) and its inference (forward and loss on the same batch shape), in windows/s.
fn text_throughput<B, M>(
    budget: Duration,
    mut model: M,
    preset: &LanguagePreset,
    device: &B::Device,
) -> Throughput
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + TrainStep<Input = CharBatch<B>, Output = ClassificationOutput<B>>,
    M::InnerModule: InferenceStep<
            Input = CharBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let (batch, len) = (preset.training.batch_size, preset.seq_len);
    let lr = preset.training.learning_rate;
    let mut optim = preset.training.adamw().init::<B, M>();
    let train_batch = char_batch::<B>(batch, len, 1, device);
    let train = steps_per_second(budget, || {
        let out = model.step(train_batch.clone());
        model = optim.step(lr, model.clone(), out.grads);
        let _ = out.item.loss.into_scalar();
    }) * batch as f64;
    let inner = model.valid();
    let infer_batch = char_batch::<B::InnerBackend>(batch, len, 2, device);
    let infer = steps_per_second(budget, || {
        let _ = inner.step(infer_batch.clone()).loss.into_scalar();
    }) * batch as f64;
    Throughput { train, infer }
}

/// Times `model`'s training steps (AdamW, batch 64) and inference (batch 1000).
fn image_throughput<B, M>(budget: Duration, mut model: M, device: &B::Device) -> Throughput
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let train_batch = batch::<B>(TRAIN_BATCH, 1, device);
    let train = steps_per_second(budget, || {
        let out = model.step(train_batch.clone());
        model = optim.step(1e-3, model.clone(), out.grads);
        let _ = out.item.loss.into_scalar();
    }) * TRAIN_BATCH as f64;

    let inner = model.valid();
    let infer_batch = batch::<B::InnerBackend>(INFER_BATCH, 2, device);
    let infer = steps_per_second(budget, || {
        let _ = inner.logits(infer_batch.images.clone()).into_data();
    }) * INFER_BATCH as f64;
    Throughput { train, infer }
}

/// Measures one model on one backend with one convolution: `text`'s character model where given,
/// else `model`'s image network.
pub fn measure(
    kind: BackendKind,
    model: BenchModel,
    conv: ConvImplementation,
    seconds: f64,
    text: Option<&LanguagePreset>,
) -> Result<Measurement> {
    let start = reset_peak_memory();
    let speed = run_on(
        kind,
        &DeviceSpec::Count(1),
        BenchTask {
            budget: Duration::from_secs_f64(seconds.max(0.0)),
            model,
            conv,
            text,
        },
    )?;
    let memory_bytes = start
        .zip(crate::bench_gnn::peak_rss())
        .map(|(start, peak)| peak.saturating_sub(start));
    Ok(Measurement {
        speed,
        memory_bytes,
    })
}

/// Bytes as MiB, or "-" where unknown.
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.0}", b as f64 / (1u64 << 20) as f64)
    })
}

/// `value` against `reference` as " (0.42x)", or nothing without a reference.
fn ratio(value: f64, reference: Option<f64>) -> String {
    match reference {
        Some(r) if r > 0.0 => format!(" ({:.2}x)", value / r),
        _ => String::new(),
    }
}

/// A reference's figures for one model, as `pytorch_bench.py --json` writes them.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct ReferenceFigures {
    /// Training items/s.
    pub train: f64,
    /// Inference items/s.
    pub infer: f64,
    /// Peak resident memory over the start, MiB.
    pub memory_mib: Option<f64>,
}

/// A reference run of every model (`pytorch_bench.py --model all --json FILE`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Reference {
    /// What was run, e.g. "torch 2.15.0, 2 threads".
    pub name: String,
    /// Figures by model: cnn, resnet, vit, gpt, lstm.
    pub models: std::collections::BTreeMap<String, ReferenceFigures>,
}

impl Reference {
    /// Reads `path`; a missing or malformed file is an error naming it.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --reference {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "--reference {} is not the JSON of pytorch_bench.py --json: {e}",
                path.display()
            )
        })
    }
}

/// The models `--model all` times, by the names the reference script uses.
const ALL_MODELS: [(&str, BenchModel); 5] = [
    ("cnn", BenchModel::Cnn),
    ("resnet", BenchModel::Resnet),
    ("vit", BenchModel::Vit),
    ("gpt", BenchModel::Gpt),
    ("lstm", BenchModel::Lstm),
];

/// `pdl bench --model all`: one table, a row per model and backend.
fn bench_all(kinds: &[BackendKind], args: &BenchArgs) -> Result<()> {
    let reference = args.reference.as_deref().map(Reference::read).transpose()?;
    println!(
        "every course model, median step, {} threads available{}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        reference
            .as_ref()
            .map_or(String::new(), |r| format!("; ratios against {}", r.name))
    );
    println!(
        "| model | shape (train / infer) | backend | train items/s | infer items/s | memory MiB |{}",
        if reference.is_some() {
            " reference memory MiB |"
        } else {
            ""
        }
    );
    println!(
        "|---|---|---|---:|---:|---:|{}",
        if reference.is_some() { "---:|" } else { "" }
    );
    for (name, model) in ALL_MODELS {
        let text = model
            .language_experiment()
            .map(language_preset)
            .transpose()?;
        let shape = match &text {
            Some(p) => format!("{}x{} windows", p.training.batch_size, p.seq_len),
            None => format!("{TRAIN_BATCH} / {INFER_BATCH} images"),
        };
        let figures = reference.as_ref().and_then(|r| r.models.get(name).copied());
        for &kind in kinds {
            let m = measure(
                kind,
                model,
                ConvImplementation::Pdl,
                args.seconds,
                text.as_ref(),
            )?;
            let t = m.speed;
            println!(
                "| {name} | {shape} | {} | {:.1}{} | {:.1}{} | {} |{}",
                kind.name(),
                t.train,
                ratio(t.train, figures.map(|f| f.train)),
                t.infer,
                ratio(t.infer, figures.map(|f| f.infer)),
                mib(m.memory_bytes),
                match (&reference, figures.and_then(|f| f.memory_mib)) {
                    (None, _) => String::new(),
                    (Some(_), Some(m)) => format!(" {m:.0} |"),
                    (Some(_), None) => " - |".into(),
                }
            );
        }
    }
    Ok(())
}

fn parse_conv(name: &str) -> Result<ConvImplementation> {
    match name.trim().to_ascii_lowercase().as_str() {
        "pdl" => Ok(ConvImplementation::Pdl),
        "burn" => Ok(ConvImplementation::Burn),
        other => anyhow::bail!("unknown --conv '{other}': choose pdl or burn"),
    }
}

/// `pdl bench`: prints a table row per backend.
pub fn run(args: &BenchArgs) -> Result<()> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0 && args.seconds <= 3600.0) {
        anyhow::bail!("--seconds must be between 0 and 3600, got {}", args.seconds);
    }
    let kinds = if args.backend.is_empty() {
        BackendKind::compiled()
            .into_iter()
            .filter(|b| b.is_cpu())
            .collect()
    } else {
        args.backend
            .iter()
            .map(|b| BackendKind::parse(b))
            .collect::<Result<Vec<_>>>()?
    };
    if args.model == BenchModel::AllReduce {
        return crate::bench_nodes::run(args);
    }
    if args.model == BenchModel::GptGeneration {
        return bench_generation(kinds, args.length);
    }
    if args.model == BenchModel::All {
        if args.reference_train.is_some() || args.reference_infer.is_some() {
            anyhow::bail!(
                "--reference-train and --reference-infer go with one model; with --model all, \
                 pass --reference FILE (pytorch_bench.py --model all --json FILE)"
            );
        }
        return bench_all(&kinds, args);
    }
    if args.reference.is_some() {
        anyhow::bail!(
            "--reference FILE goes with --model all; for one model pass --reference-train and \
             --reference-infer"
        );
    }
    if args.model == BenchModel::Gcn {
        let size = crate::bench_gnn::GraphBenchSize {
            nodes: args.nodes,
            links: args.links,
            features: args.features,
            epochs: args.epochs,
        };
        for kind in kinds {
            crate::bench_gnn::run(kind, size)?;
        }
        return Ok(());
    }
    let title = match args.model {
        BenchModel::Resnet => "fashion-resnet's ResNet",
        BenchModel::Vit => "mnist-vit's ViT",
        BenchModel::Gpt => "shakespeare-gpt's GPT",
        BenchModel::Lstm => "shakespeare-lstm's LSTM",
        _ => "classic MNIST net (pytorch/examples)",
    };
    let text = args
        .model
        .language_experiment()
        .map(language_preset)
        .transpose()?;
    let (items, train_batch, infer_batch) = match &text {
        Some(preset) => {
            let shape = format!("{}x{}", preset.training.batch_size, preset.seq_len);
            ("windows", shape.clone(), shape)
        }
        None => ("img", TRAIN_BATCH.to_string(), INFER_BATCH.to_string()),
    };
    println!(
        "{title}, {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // The convolution choice means nothing to a model without one: time it once.
    let convs = match args.model.has_conv_choice() {
        false => vec![ConvImplementation::Pdl],
        true => args
            .conv
            .iter()
            .map(|c| parse_conv(c))
            .collect::<Result<Vec<_>>>()?,
    };
    println!(
        "{:<8}  {:<5}  {:>22}  {:>24}  {:>8}",
        "backend",
        "conv",
        format!("train {items}/s (b={train_batch})"),
        format!("infer {items}/s (b={infer_batch})"),
        "mem MiB"
    );
    for kind in kinds {
        for &conv in &convs {
            let m = measure(kind, args.model, conv, args.seconds, text.as_ref())?;
            let t = m.speed;
            println!(
                "{:<8}  {:<5}  {:>22}  {:>24}  {:>8}",
                kind.name(),
                match args.model.has_conv_choice() {
                    true => format!("{conv:?}").to_lowercase(),
                    false => "-".to_string(),
                },
                format!("{:.1}{}", t.train, ratio(t.train, args.reference_train)),
                format!("{:.1}{}", t.infer, ratio(t.infer, args.reference_infer)),
                mib(m.memory_bytes),
            );
        }
    }
    Ok(())
}

/// Generation speed, characters/s.
#[derive(Debug, Clone, Copy)]
pub struct GenerationSpeed {
    /// Filling the context (`block_size - 1` characters after a one-character prompt), cached.
    pub fill_cached: f64,
    /// The same without the cache: every character is a full pass over the context so far.
    pub fill_uncached: f64,
    /// `length` characters, past the block size for the most part, cached.
    pub long_cached: f64,
    /// The same without the cache.
    pub long_uncached: f64,
}

/// The `shakespeare-gpt` preset's architecture over Tiny Shakespeare's 65 characters.
fn gpt_preset() -> Result<CharGptConfig> {
    match language_preset("shakespeare-gpt")?.model {
        LanguageModelConfig::Gpt(g) => Ok(g),
        other => anyhow::bail!("shakespeare-gpt is not a GPT: {other:?}"),
    }
}

struct GenerationTask {
    config: CharGptConfig,
    length: usize,
}

impl BackendTask for GenerationTask {
    type Output = GenerationSpeed;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> GenerationSpeed {
        let device = &devices[0];
        // Random weights: the speed does not depend on them, and no trained run is needed.
        let model = pdl_models::seeded::<B::InnerBackend, _>(device, 0, |device| {
            self.config.init::<B::InnerBackend>(device)
        });
        let sampling = Sampling {
            temperature: 1.0,
            top_k: None,
        };
        let prompt = [0u32];
        let rate = |length: usize, cached: bool| {
            let started = Instant::now();
            let out = model.generate(&prompt, length, sampling, 1, cached, device);
            out.len() as f64 / started.elapsed().as_secs_f64()
        };
        rate(8, true); // warm-up
        let fill = self.config.block_size.saturating_sub(1).max(1);
        GenerationSpeed {
            fill_cached: rate(fill, true),
            fill_uncached: rate(fill, false),
            long_cached: rate(self.length, true),
            long_uncached: rate(self.length, false),
        }
    }
}

/// `pdl bench --model gpt-generation`: a row per backend.
fn bench_generation(kinds: Vec<BackendKind>, length: usize) -> Result<()> {
    if length == 0 {
        anyhow::bail!("--length must be at least 1");
    }
    let config = gpt_preset()?;
    println!(
        "shakespeare-gpt generation (random weights, {} blocks of {}, context {}), characters/s, \
         one sequence, temperature 1",
        config.n_layers, config.d_model, config.block_size
    );
    let fill = config.block_size.saturating_sub(1).max(1);
    println!(
        "{:<8}  {:>28}  {:>28}",
        "backend",
        format!("first {fill}: cached / uncached"),
        format!("first {length}: cached / uncached"),
    );
    for kind in kinds {
        let task = GenerationTask {
            config: config.clone(),
            length,
        };
        let s = run_on(kind, &DeviceSpec::Count(1), task)?;
        println!(
            "{:<8}  {:>28}  {:>28}",
            kind.name(),
            format!(
                "{:.0} / {:.0} ({:.1}x)",
                s.fill_cached,
                s.fill_uncached,
                s.fill_cached / s.fill_uncached
            ),
            format!(
                "{:.0} / {:.0} ({:.1}x)",
                s.long_cached,
                s.long_uncached,
                s.long_cached / s.long_uncached
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use pdl_models::{CharGptConfig, CharRnnConfig};

    #[test]
    fn a_figure_is_the_median_step() {
        assert_eq!(median(&mut [3.0, 1.0, 100.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 100.0]), 3.0);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn a_reference_is_read_from_the_scripts_json_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torch.json");
        std::fs::write(
            &path,
            r#"{"name": "torch 2.15.0, 2 threads", "models": {
                "cnn": {"train": 1000.5, "infer": 4000.0, "memory_mib": 312.4},
                "lstm": {"train": 157.2, "infer": 600.0, "memory_mib": null}}}"#,
        )
        .unwrap();
        let r = Reference::read(&path).unwrap();
        assert_eq!(r.name, "torch 2.15.0, 2 threads");
        assert_eq!(r.models["cnn"].train, 1000.5);
        assert_eq!(r.models["lstm"].memory_mib, None);
        // Every model `--model all` times has the reference script's name.
        let names: Vec<_> = ALL_MODELS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["cnn", "resnet", "vit", "gpt", "lstm"]);

        std::fs::write(&path, "train img/s (b=64): 1000.5").unwrap();
        let err = Reference::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("torch.json") && err.contains("pytorch_bench.py"),
            "{err}"
        );
        let err = Reference::read(&dir.path().join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read --reference"), "{err}");
    }

    #[test]
    fn a_reference_flag_for_the_other_mode_is_an_error_before_anything_is_timed() {
        use clap::Parser;
        let bench = |line: &str| {
            let cli = crate::cli::Cli::try_parse_from(line.split(' ')).unwrap();
            match cli.command {
                crate::cli::Command::Bench(args) => run(&args).unwrap_err().to_string(),
                other => panic!("not bench: {other:?}"),
            }
        };
        let err = bench("pdl bench --model cnn --backend flex --reference torch.json");
        assert!(
            err.contains("--reference FILE goes with --model all"),
            "{err}"
        );
        let err = bench("pdl bench --model all --backend flex --reference-train 900");
        assert!(err.contains("pass --reference FILE"), "{err}");
    }

    #[test]
    fn the_character_models_are_timed_at_their_presets_shapes() {
        let gpt = language_preset("shakespeare-gpt").unwrap();
        assert!(matches!(&gpt.model, LanguageModelConfig::Gpt(c) if c.vocab_size == 65));
        assert_eq!((gpt.training.batch_size, gpt.seq_len), (64, 64));
        assert_eq!(gpt.training.grad_clip_norm, Some(1.0));
        let lstm = language_preset("shakespeare-lstm").unwrap();
        assert!(matches!(&lstm.model, LanguageModelConfig::Rnn(c) if c.vocab_size == 65));
        assert_eq!((lstm.training.batch_size, lstm.seq_len), (64, 128));
        assert!(language_preset("mnist-cnn").is_err());
    }

    #[test]
    fn a_character_model_is_timed_training_and_inferring() {
        type A = Autodiff<NdArray>;
        let device = Default::default();
        let small = |model| LanguagePreset {
            model,
            training: crate::settings::TrainingSettings::new(1, 4, 1e-3),
            seq_len: 8,
        };
        let gpt = CharGptConfig::new(CHARACTERS)
            .with_block_size(8)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(1);
        let preset = small(LanguageModelConfig::Gpt(gpt.clone()));
        let t = text_throughput(Duration::ZERO, gpt.init::<A>(&device), &preset, &device);
        assert!(t.train > 0.0 && t.infer > 0.0, "{t:?}");
        let rnn = CharRnnConfig::new(CHARACTERS)
            .with_d_embed(8)
            .with_d_hidden(16);
        let preset = small(LanguageModelConfig::Rnn(rnn.clone()));
        let t = text_throughput(Duration::ZERO, rnn.init::<A>(&device), &preset, &device);
        assert!(t.train > 0.0 && t.infer > 0.0, "{t:?}");
    }
}

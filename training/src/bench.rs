//! `pdl bench`: training and inference throughput of the classic MNIST net (pytorch/examples
//! `mnist/main.py`) on each compiled backend, the figure the README's backend table quotes.
//!
//! Training: batches of 64 through forward, cross-entropy, backward and an AdamW step, timed after
//! two warm-up steps. Inference: batches of 1000 through `forward` without autodiff. The images are
//! seeded noise: throughput does not depend on pixel values. Pass `--reference-train` /
//! `--reference-infer` (e.g. PyTorch's images/s for the same net and batch sizes) to print ratios
//! against them.

use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use clap::Args;
use pdl_datasets::SplitMix64;
use pdl_datasets::batcher::ImageBatch;
use pdl_models::ClassicCnnConfig;
use std::time::{Duration, Instant};

/// What `pdl bench` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BenchModel {
    /// Training and inference images/s of the classic MNIST net.
    #[default]
    Cnn,
    /// One full-graph GCN training epoch on a large synthetic graph: time and peak memory.
    Gcn,
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
    /// GCN: timed epochs (after one warm-up epoch).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
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

fn batch<B: Backend>(n: usize, seed: u64, device: &B::Device) -> ImageBatch<B> {
    let mut rng = SplitMix64::new(seed);
    let pixels: Vec<f32> = (0..n * 28 * 28).map(|_| rng.symmetric(1.0)).collect();
    let targets: Vec<i64> = (0..n).map(|_| rng.below(10) as i64).collect();
    ImageBatch {
        images: Tensor::from_data(TensorData::new(pixels, [n, 1, 28, 28]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
    }
}

/// Runs `step` twice untimed, then at least 3 times and for at least `budget`; returns steps/s.
fn steps_per_second(budget: Duration, mut step: impl FnMut()) -> f64 {
    step();
    step();
    let started = Instant::now();
    let mut steps = 0;
    while steps < 3 || started.elapsed() < budget {
        step();
        steps += 1;
    }
    steps as f64 / started.elapsed().as_secs_f64()
}

struct BenchTask {
    budget: Duration,
}

impl BackendTask for BenchTask {
    type Output = Throughput;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Throughput {
        let device = &devices[0];
        B::seed(device, 0);
        let mut model = ClassicCnnConfig::mnist().init::<B>(device);
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
        let train_batch = batch::<B>(TRAIN_BATCH, 1, device);
        let train = steps_per_second(self.budget, || {
            let out = model.step(train_batch.clone());
            model = optim.step(1e-3, model.clone(), out.grads);
            let _ = out.item.loss.into_scalar();
        }) * TRAIN_BATCH as f64;

        let inner = model.valid();
        let infer_batch = batch::<B::InnerBackend>(INFER_BATCH, 2, device);
        let infer = steps_per_second(self.budget, || {
            let _ = inner.forward(infer_batch.images.clone()).into_data();
        }) * INFER_BATCH as f64;
        Throughput { train, infer }
    }
}

/// Measures one backend.
pub fn measure(kind: BackendKind, seconds: f64) -> Result<Throughput> {
    run_on(
        kind,
        &DeviceSpec::Count(1),
        BenchTask {
            budget: Duration::from_secs_f64(seconds.max(0.0)),
        },
    )
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
    println!(
        "classic MNIST net (pytorch/examples), {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<8}  {:>22}  {:>24}",
        "backend",
        format!("train img/s (b={TRAIN_BATCH})"),
        format!("infer img/s (b={INFER_BATCH})")
    );
    let ratio = |value: f64, reference: Option<f64>| match reference {
        Some(r) if r > 0.0 => format!(" ({:.2}x ref)", value / r),
        _ => String::new(),
    };
    for kind in kinds {
        let t = measure(kind, args.seconds)?;
        println!(
            "{:<8}  {:>22}  {:>24}",
            kind.name(),
            format!("{:.1}{}", t.train, ratio(t.train, args.reference_train)),
            format!("{:.1}{}", t.infer, ratio(t.infer, args.reference_infer)),
        );
    }
    Ok(())
}

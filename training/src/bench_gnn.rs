//! `pdl bench --model gcn`: one full-graph training epoch of a GCN on a large synthetic graph, the
//! figure that shows message passing scales with edges rather than `num_nodes^2`.
//!
//! The graph is a seeded stochastic block model ([`SbmConfig`]); an epoch is one forward pass over
//! every node, cross-entropy on every node, backward, and one Adam step. Peak memory is the
//! process's high-water resident set (`VmHWM` in `/proc/self/status`), so it counts the graph
//! itself, Burn's buffers and everything else the process holds.

use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use pdl_datasets::graph::GraphBatch;
use pdl_datasets::graph::synthetic::SbmConfig;
use pdl_models::GcnConfig;
use std::time::Instant;

/// The size of the benchmark graph and how long to measure.
#[derive(Debug, Clone, Copy)]
pub struct GraphBenchSize {
    /// Nodes.
    pub nodes: usize,
    /// Undirected links drawn; `edge_index` holds both directions.
    pub links: usize,
    /// Features per node.
    pub features: usize,
    /// Timed epochs, after one untimed warm-up epoch.
    pub epochs: usize,
}

/// What one backend measured.
#[derive(Debug, Clone, Copy)]
pub struct GraphBench {
    /// Directed edges in `edge_index`.
    pub edges: usize,
    /// Seconds to draw the graph.
    pub generate_seconds: f64,
    /// Mean seconds per timed epoch.
    pub epoch_seconds: f64,
    /// Peak resident memory of the process, bytes (None where `/proc` is missing).
    pub peak_bytes: Option<u64>,
}

struct Task(GraphBenchSize);

impl BackendTask for Task {
    type Output = Result<GraphBench>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let size = self.0;
        let device = &devices[0];
        let started = Instant::now();
        let graph = SbmConfig {
            num_nodes: size.nodes,
            num_links: size.links,
            num_features: size.features,
            num_classes: 10,
            homophily: 0.8,
            seed: 1,
        }
        .generate()
        .map_err(anyhow::Error::msg)?;
        let generate_seconds = started.elapsed().as_secs_f64();
        let all: Vec<i64> = (0..graph.num_nodes as i64).collect();
        let batch = GraphBatch::<B>::new(&graph, &all, device);
        let edges = graph.num_edges();
        drop(graph);
        let mut model = pdl_models::seeded::<B, _>(device, 0, |device| {
            GcnConfig::new(size.features, 10).init::<B>(device)
        });
        let mut optim = AdamConfig::new().init();
        let mut epoch = || {
            let out = model.step(batch.clone());
            let _ = out.item.loss.clone().into_scalar();
            model = optim.step(0.01, model.clone(), out.grads);
        };
        epoch();
        let started = Instant::now();
        for _ in 0..size.epochs {
            epoch();
        }
        let _ = model.valid();
        Ok(GraphBench {
            edges,
            generate_seconds,
            epoch_seconds: started.elapsed().as_secs_f64() / size.epochs as f64,
            peak_bytes: peak_rss(),
        })
    }
}

/// The process's peak resident set, from `/proc/self/status`.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// A size field of `/proc/self/status` (e.g. `VmRSS:`), in bytes.
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the benchmark on `kind` and prints one line.
pub fn run(kind: BackendKind, size: GraphBenchSize) -> Result<GraphBench> {
    if size.nodes < 10 || size.epochs == 0 || size.features == 0 {
        bail!("the GCN benchmark needs --nodes >= 10, --features >= 1 and --epochs >= 1");
    }
    let result = run_on(kind, &DeviceSpec::Count(1), Task(size))??;
    let peak = match result.peak_bytes {
        Some(b) => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        None => "n/a".into(),
    };
    println!(
        "GCN (2 layers, 16 hidden), {} nodes, {} edges ({} links), {} features, 10 classes, {}: \
         {:.3} s per training epoch (mean of {}), peak memory {peak}; graph drawn in {:.1} s",
        size.nodes,
        result.edges,
        size.links,
        size.features,
        kind.name(),
        result.epoch_seconds,
        size.epochs,
        result.generate_seconds,
    );
    Ok(result)
}

//! wgpu (software Vulkan in CI) agrees with ndarray, and an experiment runs on it. Compiled with
//! `--features wgpu`; needs a Vulkan driver (lavapipe: `apt-get install mesa-vulkan-drivers`).

use crate::common::tiny_data_dir;
use burn::backend::{NdArray, Wgpu};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::TensorData;
use pdl_datasets::SplitMix64;
use pdl_datasets::graph::GraphBatch;
use pdl_datasets::graph::synthetic::SbmConfig;
use pdl_models::{BnCnnConfig, ClassicCnnConfig, GatConfig, GcnConfig, SageConfig};

fn input<B: Backend>() -> Tensor<B, 4> {
    let mut rng = SplitMix64::new(3);
    let px: Vec<f32> = (0..4 * 28 * 28).map(|_| rng.symmetric(1.0)).collect();
    Tensor::from_data(TensorData::new(px, [4, 1, 28, 28]), &Default::default())
}

fn assert_close(a: Vec<f32>, b: Vec<f32>) {
    let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * scale, "{x} vs {y}");
    }
}

/// Saves a freshly initialised model and loads the same weights on ndarray and on wgpu. (Both
/// load from the file: Burn initialises parameters lazily, so a clone saved before the first forward
/// pass would hold other random weights than the original.)
macro_rules! same_weights {
    ($config:expr) => {{
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model");
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        $config
            .init::<NdArray>(&Default::default())
            .save_file(&path, &recorder)
            .unwrap();
        let cpu = $config
            .init::<NdArray>(&Default::default())
            .load_file(&path, &recorder, &Default::default())
            .unwrap();
        let gpu = $config
            .init::<Wgpu>(&Default::default())
            .load_file(&path, &recorder, &Default::default())
            .unwrap();
        (cpu, gpu)
    }};
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Compares the logits of a fixed batch of images.
macro_rules! assert_parity {
    ($config:expr) => {{
        let (cpu, gpu) = same_weights!($config);
        assert_close(values(cpu.forward(input())), values(gpu.forward(input())));
    }};
}

/// Compares the logits of every node of a fixed graph.
macro_rules! assert_graph_parity {
    ($config:expr) => {{
        let (cpu, gpu) = same_weights!($config);
        let (a, b) = (graph::<NdArray>(), graph::<Wgpu>());
        assert_close(
            values(cpu.forward(a.features, a.edge_index)),
            values(gpu.forward(b.features, b.edge_index)),
        );
    }};
}

/// A 300-node block-model graph with 12 features and 3 classes.
fn graph<B: Backend>() -> GraphBatch<B> {
    let graph = SbmConfig {
        num_nodes: 300,
        num_links: 1500,
        num_features: 12,
        num_classes: 3,
        homophily: 0.7,
        seed: 2,
    }
    .generate()
    .unwrap();
    GraphBatch::new(&graph, &[0], &Default::default())
}

#[test]
fn wgpu_forward_agrees_with_ndarray_on_fixed_weights() {
    assert_parity!(ClassicCnnConfig::mnist());
    assert_parity!(BnCnnConfig::mnist());
}

/// Message passing's scatter-add (`select_assign`) and GAT's per-node softmax on wgpu's kernels.
#[test]
fn wgpu_graph_networks_agree_with_ndarray_on_fixed_weights() {
    assert_graph_parity!(GcnConfig::new(12, 3));
    assert_graph_parity!(SageConfig::new(12, 3));
    assert_graph_parity!(GatConfig::new(12, 3));
}

#[test]
fn mnist_cnn_smoke_runs_on_wgpu() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let trained = pdl_training::cli::train(&pdl_training::cli::TrainArgs {
        experiment: "mnist-cnn".into(),
        smoke: true,
        backend: Some("wgpu".into()),
        devices: "1".into(),
        data_dir: Some(data.path().to_path_buf()),
        artifact_dir: Some(runs.path().join("run")),
        offline: true,
        plain: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(trained.report.test.count, 64);
}

/// Where Burn's own wgpu gradient disagrees with ours (measured: a 1x1 kernel at stride 2 with
/// padding 1, where its `conv_transpose2d` leaves out input pixels the kernel does reach), ours
/// must equal ndarray's, on which Burn's and ours agree.
#[test]
fn the_custom_conv_backward_equals_burns_on_wgpu() {
    use burn::backend::Autodiff;
    use pdl_kernels::parity::{check_case, check_case_against, conv_cases};
    let (gpu, cpu) = (Default::default(), Default::default());
    let mut burn_differs = Vec::new();
    for case in conv_cases() {
        if let Err(e) = check_case::<Autodiff<Wgpu>>(&case, &gpu) {
            check_case::<Autodiff<NdArray>>(&case, &cpu).unwrap();
            check_case_against::<Autodiff<Wgpu>, Autodiff<NdArray>>(&case, &gpu, &cpu).unwrap();
            burn_differs.push(e);
        }
    }
    // Burn's wgpu convolution gradient is right nearly everywhere: a grid where it differs on
    // many cases would point at this test, not at Burn.
    assert!(burn_differs.len() <= 2, "{burn_differs:#?}");
}

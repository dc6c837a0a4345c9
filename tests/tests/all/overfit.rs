//! Every model overfits one fixed batch (a graph model: one graph, its loss on 40 nodes): the loss falls below half its start. A model that cannot
//! do this has a bug in its forward pass, its loss, or its gradients.

use crate::common::images;
use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::ElementConversion;
use burn::train::{ClassificationOutput, TrainStep};
use pdl_datasets::batcher::{ImageBatch, ImageBatcher};
use pdl_datasets::graph::GraphBatch;
use pdl_datasets::graph::synthetic::SbmConfig;
use pdl_datasets::mnist::ImageItem;
use pdl_models::{
    BnCnnConfig, ClassicCnnConfig, GatConfig, GcnConfig, LeNet5Config, MlpConfig, SageConfig,
};

type B = Autodiff<Flex>;

fn fixed_batch() -> ImageBatch<B> {
    let (pixels, labels) = images(20, 9);
    let items = pixels
        .chunks_exact(28 * 28)
        .zip(labels)
        .map(|(p, label)| ImageItem {
            pixels: p.to_vec(),
            height: 28,
            width: 28,
            label,
        })
        .collect();
    ImageBatcher::new(0.13, 0.31).batch(items, &Default::default())
}

/// A model built the way a run builds one: seeded (0) under the process-wide seeding lock, so
/// that the tests running beside it cannot move its weights.
fn built<M>(build: impl FnOnce(&burn::tensor::Device<B>) -> M) -> M {
    pdl_models::seeded::<B, _>(&Default::default(), 0, build)
}

fn assert_overfits<M, I: Clone>(mut model: M, batch: I, steps: usize, lr: f64)
where
    M: TrainStep<Input = I, Output = ClassificationOutput<B>> + AutodiffModule<B>,
{
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let out = model.step(batch.clone());
        losses.push(out.item.loss.clone().into_scalar().elem::<f64>());
        model = optim.step(lr, model, out.grads);
    }
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(
        last < first / 2.0,
        "loss went from {first:.4} to {last:.4}: {losses:?}"
    );
}

#[test]
fn mlp_overfits_one_batch() {
    assert_overfits(
        built(|d| MlpConfig::mnist().init::<B>(d)),
        fixed_batch(),
        30,
        1e-3,
    );
}

#[test]
fn lenet_overfits_one_batch() {
    assert_overfits(
        built(|d| LeNet5Config::mnist().init::<B>(d)),
        fixed_batch(),
        40,
        3e-3,
    );
}

#[test]
fn classic_cnn_overfits_one_batch() {
    assert_overfits(
        built(|d| ClassicCnnConfig::mnist().init::<B>(d)),
        fixed_batch(),
        30,
        1e-3,
    );
}

#[test]
fn bn_cnn_overfits_one_batch() {
    assert_overfits(
        built(|d| BnCnnConfig::mnist().init::<B>(d)),
        fixed_batch(),
        30,
        3e-3,
    );
}

/// A 200-node block-model graph with 16 features and 4 classes, scoring its first 40 nodes. The
/// graph models below train without dropout: on 40 nodes its noise does not average out within
/// the steps, and the test is about the gradients.
fn fixed_graph() -> GraphBatch<B> {
    let graph = SbmConfig {
        num_nodes: 200,
        num_links: 600,
        num_features: 16,
        num_classes: 4,
        homophily: 0.5,
        seed: 4,
    }
    .generate()
    .unwrap();
    GraphBatch::new(&graph, &(0..40).collect::<Vec<i64>>(), &Default::default())
}

#[test]
fn gcn_overfits_one_graph() {
    let model = built(|d| GcnConfig::new(16, 4).with_dropout(0.0).init::<B>(d));
    assert_overfits(model, fixed_graph(), 60, 1e-2);
}

#[test]
fn sage_overfits_one_graph() {
    let model = built(|d| SageConfig::new(16, 4).with_dropout(0.0).init::<B>(d));
    assert_overfits(model, fixed_graph(), 60, 1e-2);
}

#[test]
fn gat_overfits_one_graph() {
    let model = built(|d| {
        GatConfig::new(16, 4)
            .with_dropout(0.0)
            .with_attention_dropout(0.0)
            .init::<B>(d)
    });
    assert_overfits(model, fixed_graph(), 60, 1e-2);
}

/// A fixed batch of 8 windows of 3 noisy sine series: look-back 12, horizon 4.
fn fixed_windows() -> (burn::Tensor<B, 3>, burn::Tensor<B, 3>) {
    use burn::tensor::TensorData;
    let mut rng = pdl_datasets::SplitMix64::new(6);
    let mut series = |t: usize, c: usize| ((t as f32) * 0.3 + c as f32).sin() + rng.symmetric(0.1);
    let mut values = Vec::new();
    for b in 0..8 {
        for t in 0..16 {
            for c in 0..3 {
                values.push(series(t + 3 * b, c));
            }
        }
    }
    let all =
        burn::Tensor::<B, 3>::from_data(TensorData::new(values, [8, 16, 3]), &Default::default());
    (
        all.clone().slice([0..8, 0..12, 0..3]),
        all.slice([0..8, 12..16, 0..3]),
    )
}

/// Trains `forward` on [`fixed_windows`] with MSE and Adam; the loss must halve.
fn assert_forecaster_overfits<M: AutodiffModule<B>>(
    mut model: M,
    forward: impl Fn(&M, burn::Tensor<B, 3>) -> burn::Tensor<B, 3>,
    steps: usize,
) {
    use burn::optim::GradientsParams;
    let (inputs, targets) = fixed_windows();
    let mut optim = burn::optim::AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let loss = (forward(&model, inputs.clone()) - targets.clone())
            .powi_scalar(2)
            .mean();
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < first / 2.0,
        "loss went from {first:.4} to {last:.4}: {losses:?}"
    );
}

#[test]
fn recurrent_forecasters_overfit_one_batch() {
    use pdl_models::rnn::{CellKind, CellSource, RnnForecasterConfig};
    for (cell, source, instance_norm) in [
        (CellKind::Rnn, CellSource::Scratch, false),
        (CellKind::Lstm, CellSource::Scratch, false),
        (CellKind::Gru, CellSource::Scratch, false),
        (CellKind::Lstm, CellSource::Scratch, true),
        (CellKind::Lstm, CellSource::Burn, false),
        (CellKind::Gru, CellSource::Burn, true),
    ] {
        let model = built(|d| {
            RnnForecasterConfig::new(3, 4)
                .with_cell(cell)
                .with_source(source)
                .with_instance_norm(instance_norm)
                .with_d_hidden(16)
                .with_dropout(0.0)
                .init::<B>(d)
        });
        assert_forecaster_overfits(model, |m, x| m.forward(x), 60);
    }
}

#[test]
fn dlinear_overfits_one_batch() {
    let model = built(|d| {
        pdl_models::forecast::DLinearConfig::new(12, 4)
            .with_kernel(5)
            .init::<B>(d)
    });
    assert_forecaster_overfits(model, |m, x| m.forward(x), 60);
}

#[test]
fn char_language_models_overfit_one_batch() {
    use pdl_datasets::text::chars::{CharBatcher, CharWindowDataset};
    use pdl_models::rnn::{CellKind, CharRnnConfig};
    let text: Vec<u32> = (0..200).map(|i| (i * 7 % 13) as u32).collect();
    let windows = CharWindowDataset::random(std::sync::Arc::new(text), 16, 8, 1).unwrap();
    let items = (0..8)
        .map(|i| burn::data::dataset::Dataset::get(&windows, i).unwrap())
        .collect();
    let batch = CharBatcher.batch(items, &Default::default());
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let model = built(|d| {
            CharRnnConfig::new(13)
                .with_d_embed(8)
                .with_d_hidden(32)
                .with_cell(cell)
                .init::<B>(d)
        });
        assert_overfits(model, batch.clone(), 40, 1e-2);
    }
}

#[test]
fn sentence_classifiers_overfit_one_batch() {
    use pdl_datasets::text::sst2::{SentenceBatcher, SentenceItem};
    use pdl_models::rnn::{Pooling, SentenceRnnConfig};
    let mut rng = pdl_datasets::SplitMix64::new(2);
    let items = (0..16)
        .map(|i| SentenceItem {
            tokens: (0..2 + rng.below(6))
                .map(|_| 2 + rng.below(30) as u32)
                .collect(),
            label: i % 2,
        })
        .collect();
    let batch = SentenceBatcher { max_len: 16 }.batch(items, &Default::default());
    for pooling in [Pooling::Max, Pooling::Mean, Pooling::Last] {
        let model = built(|d| {
            SentenceRnnConfig::new(32, 2)
                .with_d_embed(16)
                .with_d_hidden(16)
                .with_pooling(pooling)
                .with_dropout(0.0)
                .init::<B>(d)
        });
        assert_overfits(model, batch.clone(), 40, 1e-2);
    }
}

//! Judging a pre-trained encoder by what can be read off its frozen features: a linear probe and
//! k-nearest neighbours, the two measures of the self-supervised literature (SimCLR's "linear
//! evaluation protocol"; the k-NN of Wu et al. 2018, "Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination").
//!
//! Both take the features of the encoder in inference mode (batch norm on its running
//! statistics), computed once per image without augmentation. Neither changes the encoder: what
//! they score is what pre-training put there. A probe on a *randomly initialised* encoder is the
//! baseline that keeps the claim honest, since random convolutions are already decent features
//! on MNIST.

use crate::experiments::image_classification::{Splits, eval_loader};
use crate::learner::{host_rows, materialize};
use anyhow::{Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use pdl_datasets::SplitMix64;
use pdl_datasets::augment::Augment;
use pdl_datasets::batcher::{ImageBatch, ImageBatcher};
use pdl_datasets::mnist::ImageDataset;
use pdl_models::{ImageClassifier, ImageEncoder};
use serde::Serialize;

/// Some images' features, one row each, and their classes.
#[derive(Debug, Clone)]
pub struct Features {
    /// `rows.len() / dim` rows of `dim` values.
    pub rows: Vec<f32>,
    /// Values per row.
    pub dim: usize,
    /// Each row's class.
    pub labels: Vec<usize>,
}

impl Features {
    /// Rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows at `indices`.
    pub fn select(&self, indices: &[usize]) -> Features {
        let d = self.dim;
        Features {
            rows: indices
                .iter()
                .flat_map(|&i| self.rows[i * d..(i + 1) * d].iter().copied())
                .collect(),
            dim: d,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// The features `encoder` gives `images` (normalised with `mean` and `std`, not augmented).
pub fn features<B: Backend, E: ImageEncoder<B>>(
    encoder: &E,
    images: ImageDataset,
    mean: f32,
    std: f32,
    device: &B::Device,
) -> Features {
    let loader = eval_loader::<B>(images, mean, std, device);
    let (mut rows, mut labels, mut dim) = (Vec::new(), Vec::new(), 0);
    for ImageBatch { images, targets } in loader.iter() {
        for row in host_rows(encoder.features(images)) {
            dim = row.len();
            rows.extend(row);
        }
        let classes = targets.into_data().convert::<i64>().to_vec::<i64>();
        labels.extend(classes.unwrap_or_default().into_iter().map(|c| c as usize));
    }
    Features { rows, dim, labels }
}

/// A class-balanced subset of `labels`' positions: `per_class` of each class, drawn with `seed`
/// (all of a class that has fewer), in increasing order.
pub fn balanced_subset(labels: &[usize], per_class: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let classes = labels.iter().max().map_or(0, |&c| c + 1);
    let mut taken = vec![0usize; classes];
    let mut picked: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let t = &mut taken[labels[i]];
            *t += 1;
            *t <= per_class
        })
        .collect();
    picked.sort_unstable();
    picked
}

/// What a probe of a set of features scored on the test images.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ProbeScores {
    /// Labelled training images the probe saw.
    pub labels: usize,
    /// Test accuracy (%) of a linear classifier trained on the frozen features.
    pub linear: f64,
    /// Test accuracy (%) of a k-nearest-neighbour vote over the labelled features.
    pub knn: f64,
    /// The k of the vote.
    pub k: usize,
}

/// Neighbours that vote in [`knn`].
pub const KNN_K: usize = 20;

/// Scores the features with both probes: a linear classifier trained on `train` (seeded by
/// `seed`) and a k-NN vote over `train`, each judged on `test`.
pub fn probe<B: AutodiffBackend>(
    train: &Features,
    test: &Features,
    seed: u64,
    device: &B::Device,
) -> Result<ProbeScores> {
    if train.is_empty() || test.is_empty() || train.dim != test.dim {
        bail!(
            "cannot probe {} training rows of {} features against {} test rows of {}",
            train.len(),
            train.dim,
            test.len(),
            test.dim
        );
    }
    Ok(ProbeScores {
        labels: train.len(),
        linear: linear_probe::<B>(train, test, seed, device),
        knn: knn::<B::InnerBackend>(train, test, KNN_K, device),
        k: KNN_K,
    })
}

/// The probe's training: Adam at this rate, batches of this size, at least this many epochs and
/// this many steps (a few labels make short epochs).
const PROBE_LR: f64 = 1e-3;
const PROBE_BATCH: usize = 256;
const PROBE_EPOCHS: usize = 20;
const PROBE_STEPS: usize = 1000;

/// Test accuracy (%) of a linear classifier (softmax regression) trained on `train`'s features,
/// each standardised with `train`'s per-feature mean and standard deviation, by Adam on the
/// cross-entropy.
pub fn linear_probe<B: AutodiffBackend>(
    train: &Features,
    test: &Features,
    seed: u64,
    device: &B::Device,
) -> f64 {
    let (n, d) = (train.len(), train.dim);
    let classes = 1 + train
        .labels
        .iter()
        .chain(&test.labels)
        .max()
        .copied()
        .unwrap_or(0);
    let (mean, scale) = standardisation(train);
    let tensor = |f: &Features| {
        let mut rows = f.rows.clone();
        for row in rows.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = (*v - m) * s;
            }
        }
        Tensor::<B, 2>::from_data(TensorData::new(rows, [f.len(), d]), device)
    };
    let ints = |values: Vec<i64>| {
        let n = values.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(values, [n]), device)
    };
    let (xs, ys) = (
        tensor(train),
        ints(train.labels.iter().map(|&c| c as i64).collect()),
    );
    let mut model: Linear<B> =
        pdl_models::seeded::<B, _>(device, seed, |dev| LinearConfig::new(d, classes).init(dev));
    let mut optim = AdamConfig::new().init::<B, Linear<B>>();
    let loss = CrossEntropyLossConfig::new().init(device);
    let steps_per_epoch = n.div_ceil(PROBE_BATCH);
    let epochs = PROBE_EPOCHS.max(PROBE_STEPS.div_ceil(steps_per_epoch));
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(PROBE_BATCH) {
            let idx = ints(chunk.iter().map(|&i| i as i64).collect());
            let logits = model.forward(xs.clone().select(0, idx.clone()));
            let grads = loss.forward(logits, ys.clone().select(0, idx)).backward();
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(PROBE_LR, model, grads);
        }
    }
    let model = model.valid();
    let test_x = tensor(test).inner();
    let guesses = model.forward(test_x).argmax(1).into_data().convert::<i64>();
    let guesses = guesses.to_vec::<i64>().unwrap_or_default();
    accuracy(guesses.iter().map(|&g| g as usize), &test.labels)
}

/// Per-feature mean and 1 / standard deviation over `f`'s rows (a constant feature is left at
/// scale 1).
fn standardisation(f: &Features) -> (Vec<f32>, Vec<f32>) {
    let (n, d) = (f.len().max(1) as f64, f.dim);
    let mut sum = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in f.rows.chunks_exact(d) {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let scale = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let sd = (q / n - m * m).max(0.0).sqrt();
            if sd > 1e-6 { (1.0 / sd) as f32 } else { 1.0 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), scale)
}

/// Percentage of `guesses` equal to `labels`.
fn accuracy(guesses: impl Iterator<Item = usize>, labels: &[usize]) -> f64 {
    let right = guesses.zip(labels).filter(|(g, l)| g == *l).count();
    100.0 * right as f64 / labels.len().max(1) as f64
}

/// The temperature of the k-NN vote's weights, `exp(similarity / τ)` (Wu et al. 2018).
const KNN_TEMPERATURE: f32 = 0.07;

/// Test rows compared with all training rows at once.
const KNN_CHUNK: usize = 256;

/// Test accuracy (%) of a vote among each test row's `k` most similar training rows (cosine
/// similarity), each neighbour weighing `exp(similarity / 0.07)` for its class.
pub fn knn<B: Backend>(train: &Features, test: &Features, k: usize, device: &B::Device) -> f64 {
    let d = train.dim;
    let classes = 1 + train.labels.iter().max().copied().unwrap_or(0);
    let k = k.min(train.len()).max(1);
    let unit = |f: &Features, rows: std::ops::Range<usize>| {
        let mut values = f.rows[rows.start * d..rows.end * d].to_vec();
        for row in values.chunks_exact_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        Tensor::<B, 2>::from_data(TensorData::new(values, [rows.len(), d]), device)
    };
    let bank = unit(train, 0..train.len()).transpose(); // [d, n_train]
    let mut guesses = Vec::with_capacity(test.len());
    for start in (0..test.len()).step_by(KNN_CHUNK) {
        let rows = start..(start + KNN_CHUNK).min(test.len());
        let similarity = unit(test, rows).matmul(bank.clone()); // [chunk, n_train]
        for row in host_rows(similarity) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0f32; classes];
            for &i in &order[..k] {
                votes[train.labels[i]] += (row[i] / KNN_TEMPERATURE).exp();
            }
            let best = (0..classes).max_by(|&a, &b| votes[a].total_cmp(&votes[b]));
            guesses.push(best.unwrap_or(0));
        }
    }
    accuracy(guesses.into_iter(), &test.labels)
}

/// How [`train_classifier`] trains a whole network on a labelled subset: AdamW at `lr` with a
/// cosine decay to zero over `steps` steps of `batch` images (all of them when fewer), each image
/// shifted and rotated a little ([`Augment::mnist`]).
#[derive(Debug, Clone, Copy)]
pub struct ClassifierTraining {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step, at most.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
}

impl ClassifierTraining {
    /// For `labels` labelled images: at least 500 steps and at least two epochs, batches of at
    /// most 128, AdamW at 1e-3 with decay 1e-4: the setting of `mnist-bn-cnn`, given enough steps
    /// that a few labels are learnt as well as they can be.
    pub fn for_labels(labels: usize) -> Self {
        let batch = labels.clamp(1, 128);
        Self {
            steps: 500.max(2 * labels.div_ceil(batch)),
            batch,
            lr: 1e-3,
            weight_decay: 1e-4,
        }
    }
}

/// Trains all of `model` (a pre-trained encoder, or a fresh one) as a classifier of `images`, as
/// `plan` says, and returns it; `seed` draws the order and the augmentation.
pub fn train_classifier<B: AutodiffBackend, M: AutodiffModule<B> + ImageClassifier<B>>(
    mut model: M,
    images: ImageDataset,
    (mean, std): (f32, f32),
    plan: ClassifierTraining,
    seed: u64,
    device: &B::Device,
) -> M {
    use burn::optim::AdamWConfig;
    let batcher = ImageBatcher::new(mean, std).with_augment(Augment::mnist(), seed);
    let loader = DataLoaderBuilder::new(batcher)
        .batch_size(plan.batch)
        .shuffle(seed)
        .set_device(device.clone())
        .build(images);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(plan.weight_decay as f32)
        .init::<B, M>();
    let schedule = crate::schedule::ScheduleConfig::WarmupCosine {
        warmup_fraction: 0.0,
        min_lr_fraction: 0.0,
    }
    .init(plan.lr, plan.steps);
    let mut step = 0;
    while step < plan.steps {
        for batch in loader.iter() {
            if step == plan.steps {
                break;
            }
            let loss = model.forward_classification(batch).loss;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(schedule.lr_at(step), model, grads);
            step += 1;
        }
    }
    model
}

/// Test accuracy (%) of a classifier on `images`.
pub fn test_accuracy<B: Backend, M: ImageClassifier<B>>(
    model: &M,
    images: ImageDataset,
    (mean, std): (f32, f32),
    device: &B::Device,
) -> f64 {
    let loader = eval_loader::<B>(images, mean, std, device);
    let (mut guesses, mut labels) = (Vec::new(), Vec::new());
    for ImageBatch { images, targets } in loader.iter() {
        let guess = model.logits(images).argmax(1).into_data().convert::<i64>();
        guesses.extend(
            guess
                .to_vec::<i64>()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g as usize),
        );
        let truth = targets.into_data().convert::<i64>().to_vec::<i64>();
        labels.extend(truth.unwrap_or_default().into_iter().map(|c| c as usize));
    }
    accuracy(guesses.into_iter(), &labels)
}

/// What `pdl probe` compares, for each number of labels.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    /// Labelled training images per class; `None` is every label.
    pub labels_per_class: Vec<Option<usize>>,
    /// Also fine-tune the pre-trained encoder, and train the same network from scratch, on each
    /// labelled subset (minutes each).
    pub fine_tune: bool,
    /// Steps of each of those trainings, if not [`ClassifierTraining::for_labels`]'s.
    pub fine_tune_steps: Option<usize>,
}

/// One row of `pdl probe`'s table: what each way of using the same labels reached on the test
/// set (accuracy, %).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    /// Labelled images per class (none: all the training labels).
    pub labels_per_class: Option<usize>,
    /// The pre-trained encoder, frozen: a linear probe and k-NN.
    pub pretrained: ProbeScores,
    /// A randomly initialised encoder, frozen: the same probes.
    pub random: ProbeScores,
    /// The pre-trained encoder and a new head, all trained on the labels.
    pub fine_tuned: Option<f64>,
    /// The same network from random weights, trained on the labels.
    pub scratch: Option<f64>,
}

/// `name: linear probe 98.12%, 20-NN 97.80% (55000 labels)`.
pub fn probe_line(name: &str, scores: &ProbeScores) -> String {
    format!(
        "{name}: linear probe {:.2}%, {}-NN {:.2}% on the test set ({} labels)",
        scores.linear, scores.k, scores.knn, scores.labels
    )
}

/// The features `encoder` gives the training and the test images.
pub(crate) fn split_features<B: Backend, E: ImageEncoder<B>>(
    encoder: &E,
    splits: &Splits,
    device: &B::Device,
) -> (Features, Features) {
    let of =
        |images: &ImageDataset| features(encoder, images.clone(), splits.mean, splits.std, device);
    (of(&splits.train), of(&splits.test))
}

/// The probes at the end of a pre-training run: `encoder`'s features of every training image,
/// with its label, scored on the test set; printed, and returned for `metrics.json`.
pub(crate) fn probe_every_label<B: AutodiffBackend, E: ImageEncoder<B::InnerBackend>>(
    encoder: &E,
    splits: &Splits,
    seed: u64,
    device: &B::Device,
) -> Result<ProbeScores> {
    let (train, test) = split_features(encoder, splits, device);
    let scores = probe::<B>(&train, &test, seed, device)?;
    println!("{}", probe_line("pre-trained encoder", &scores));
    Ok(scores)
}

/// `pdl probe` for any pre-trained image encoder: scores `pretrained` against a fresh one (the
/// same network at the random weights pre-training started from: `init` drawn with the run's
/// `seed`), and against training the fresh one from scratch, with each number of labels of
/// `plan`. Subsets are class-balanced and drawn with `seed`; the test set is the official one.
pub(crate) fn compare<B, E>(
    pretrained: E,
    init: impl FnOnce(&B::Device) -> E,
    splits: &Splits,
    seed: u64,
    plan: &ProbePlan,
    device: &B::Device,
) -> Result<Vec<ProbeRow>>
where
    B: AutodiffBackend,
    E: AutodiffModule<B> + ImageClassifier<B>,
    E::InnerModule: ImageEncoder<B::InnerBackend>,
{
    // Drawn now, not lazily on first use, so that the probes and the training from scratch start
    // from the same weights.
    let fresh = pdl_models::seeded::<B, _>(device, seed, |d| materialize(init(d)));
    let normalisation = (splits.mean, splits.std);
    let (train, test) = split_features(&pretrained.valid(), splits, device);
    let (random_train, random_test) = split_features(&fresh.valid(), splits, device);
    let mut rows = Vec::new();
    for &per_class in &plan.labels_per_class {
        let subset = match per_class {
            Some(k) => balanced_subset(&train.labels, k, seed),
            None => (0..train.len()).collect(),
        };
        let row_name = per_class.map_or("all".to_string(), |k| k.to_string());
        println!("{} labels per class ({} images):", row_name, subset.len());
        let pre = probe::<B>(&train.select(&subset), &test, seed, device)?;
        println!("  {}", probe_line("pre-trained encoder", &pre));
        let random = probe::<B>(&random_train.select(&subset), &random_test, seed, device)?;
        println!("  {}", probe_line("random encoder", &random));
        let (mut fine_tuned, mut scratch) = (None, None);
        if plan.fine_tune {
            let images = splits.train.select(&subset);
            let mut training = ClassifierTraining::for_labels(subset.len());
            training.steps = plan.fine_tune_steps.unwrap_or(training.steps);
            let score = |start: E| {
                let model =
                    train_classifier(start, images.clone(), normalisation, training, seed, device);
                test_accuracy(&model.valid(), splits.test.clone(), normalisation, device)
            };
            let tuned = score(pretrained.clone());
            println!("  fine-tuned: {tuned:.2}% ({} steps)", training.steps);
            let fresh_score = score(fresh.clone());
            println!(
                "  from scratch: {fresh_score:.2}% ({} steps)",
                training.steps
            );
            (fine_tuned, scratch) = (Some(tuned), Some(fresh_score));
        }
        rows.push(ProbeRow {
            labels_per_class: per_class,
            pretrained: pre,
            random,
            fine_tuned,
            scratch,
        });
    }
    Ok(rows)
}

/// `pdl probe`'s table, in Markdown.
pub fn probe_table(rows: &[ProbeRow]) -> String {
    let mut out = String::from(
        "| labels per class | labels | pre-trained: linear probe | pre-trained: k-NN | \
         fine-tuned | random encoder: linear probe | random encoder: k-NN | from scratch |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}%"));
    for r in rows {
        let per_class = r
            .labels_per_class
            .map_or("all".to_string(), |k| k.to_string());
        out += &format!(
            "| {per_class} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.pretrained.labels,
            pct(Some(r.pretrained.linear)),
            pct(Some(r.pretrained.knn)),
            pct(r.fine_tuned),
            pct(Some(r.random.linear)),
            pct(Some(r.random.knn)),
            pct(r.scratch),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type A = Autodiff<NdArray>;

    /// Rows in `classes` clusters along the axes, with some noise; `flip` rows in every ten get
    /// a wrong label.
    fn clusters(n: usize, classes: usize, dim: usize, seed: u64) -> Features {
        let mut rng = SplitMix64::new(seed);
        let mut rows = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for j in 0..dim {
                let centre = if j == c { 3.0 } else { 0.0 };
                rows.push(centre + rng.symmetric(1.0));
            }
            labels.push(c);
        }
        Features { rows, dim, labels }
    }

    #[test]
    fn both_probes_read_separable_classes_and_not_noise() {
        let device = Default::default();
        let (train, test) = (clusters(300, 4, 6, 1), clusters(100, 4, 6, 2));
        let scores = probe::<A>(&train, &test, 7, &device).unwrap();
        assert_eq!(scores.labels, 300);
        assert!(scores.linear > 95.0, "{scores:?}");
        assert!(scores.knn > 95.0, "{scores:?}");
        // Labels that have nothing to do with the features: about chance (25%).
        let mut noise = train.clone();
        let mut rng = SplitMix64::new(3);
        noise.labels.iter_mut().for_each(|l| *l = rng.below(4));
        let chance = probe::<A>(&noise, &test, 7, &device).unwrap();
        assert!(chance.linear < 50.0 && chance.knn < 50.0, "{chance:?}");
    }

    #[test]
    fn knn_takes_the_nearest_neighbours_vote() {
        let device = Default::default();
        // Two training rows of class 0 near (1, 0), one of class 1 at (0, 1).
        let train = Features {
            rows: vec![1.0, 0.1, 1.0, -0.1, 0.0, 1.0],
            dim: 2,
            labels: vec![0, 0, 1],
        };
        let test = Features {
            rows: vec![0.9, 0.0, 0.1, 1.0],
            dim: 2,
            labels: vec![0, 1],
        };
        assert_eq!(knn::<NdArray>(&train, &test, 1, &device), 100.0);
        // With all three voting, the similar ones outweigh the far one by exp(sim / 0.07).
        assert_eq!(knn::<NdArray>(&train, &test, 3, &device), 100.0);
    }

    #[test]
    fn balanced_subsets_take_as_many_of_each_class() {
        let labels: Vec<usize> = (0..100)
            .map(|i| if i < 70 { 0 } else { 1 + i % 2 })
            .collect();
        let picked = balanced_subset(&labels, 5, 9);
        assert_eq!(picked.len(), 15);
        for c in 0..3 {
            assert_eq!(picked.iter().filter(|&&i| labels[i] == c).count(), 5);
        }
        assert_eq!(picked, balanced_subset(&labels, 5, 9));
        assert_ne!(picked, balanced_subset(&labels, 5, 10));
        // More than a class has: all of it.
        assert_eq!(balanced_subset(&labels, 40, 9).len(), 40 + 15 + 15);
    }

    #[test]
    fn mismatched_features_are_an_error() {
        let a = clusters(10, 2, 3, 1);
        let b = clusters(10, 2, 4, 1);
        let err = probe::<A>(&a, &b, 1, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("3 features"), "{err}");
    }
}

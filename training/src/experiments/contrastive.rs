//! Contrastive pre-training on MNIST-style images (SimCLR): the self-supervised chapter's first
//! pipeline. No label reaches the loss; the labels only judge the result.
//!
//! Data: the image pipeline's splits (train, seeded valid, the official test set), each image
//! seen as two random views ([`ViewPairBatcher`]: new views every training batch, the same views
//! of an image on every pass over valid and test, so those losses compare across epochs). Model:
//! [`SimClrConfig`]. Loop: the shared tail of [`crate::job`] (Burn's Learner, whose dashboard shows
//! NT-Xent and how often a view picks out its twin), AdamW with warm-up and cosine decay. Then the
//! trained encoder is probed ([`crate::probe`]): a linear classifier and a k-NN vote on its frozen
//! features, with every training label, scored on the test set; `metrics.json` keeps them as
//! `probe`. `pdl probe` runs the fuller comparison (fewer labels, a random encoder).
//!
//! Artifacts: those of every run (`config.json`, `checkpoint/`, `model.mpk`, `metrics.json`); a
//! fine-tuning run reads the encoder out of `model.mpk`.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::experiments::image_classification::{Splits, load_image_splits};
use crate::job::{Job, Loaders, Scoring, Training};
use crate::learner::load_model;
use crate::probe::{
    ClassifierTraining, Features, ProbeScores, balanced_subset, features, probe, test_accuracy,
    train_classifier,
};
use crate::settings::{Optimiser, RunConfig, TrainingSettings, count};
use anyhow::Result;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::augment::Augment;
use pdl_datasets::batcher::{ViewPairBatch, ViewPairBatcher};
use pdl_datasets::mnist::ImageDataset;
use pdl_models::{BnCnn, SimClr, SimClrConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything needed to rebuild a SimCLR run; saved as its `config.json`.
pub type ContrastiveExperimentConfig = RunConfig<SimClrConfig, ViewOptions>;

/// How the images are split and how their views are drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct ViewOptions {
    /// Training images held out for validation.
    #[serde(default = "count::<5000>")]
    pub valid_size: usize,
    /// The smallest share of the image's area a random crop keeps.
    pub min_crop_area: f32,
    /// Largest rotation of a view, in degrees either way.
    pub max_rotation_degrees: f32,
    /// Largest shift of a view, in pixels along each axis.
    pub max_shift: f32,
}

impl ViewOptions {
    /// The views of digits: [`Augment::simclr_digits`].
    pub fn digits() -> Self {
        let a = Augment::simclr_digits();
        Self {
            valid_size: count::<5000>(),
            min_crop_area: a.min_crop_area,
            max_rotation_degrees: a.max_rotation_degrees,
            max_shift: a.max_shift,
        }
    }

    fn augment(&self) -> Augment {
        Augment {
            max_shift: self.max_shift,
            max_rotation_degrees: self.max_rotation_degrees,
            min_crop_area: self.min_crop_area,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.min_crop_area > 0.0 && self.min_crop_area <= 1.0) {
            return Err(format!(
                "min_crop_area must be in (0, 1], got {}",
                self.min_crop_area
            ));
        }
        if !(self.max_rotation_degrees >= 0.0 && self.max_shift >= 0.0) {
            return Err("max_rotation_degrees and max_shift must be at least 0".into());
        }
        Ok(())
    }
}

impl ContrastiveExperimentConfig {
    /// SimCLR with `model` on `dataset`, the views of digits.
    pub fn new(
        experiment: &str,
        dataset: &str,
        model: SimClrConfig,
        training: TrainingSettings,
    ) -> Self {
        Self::with_data(experiment, dataset, model, training, ViewOptions::digits())
    }

    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        self.training.validate().or_else(bad)?;
        self.model.validate().or_else(bad)?;
        self.data.validate().or_else(bad)
    }

    fn splits(&self, ctx: &RunContext) -> Result<Splits> {
        let side = self.model.encoder.image_size;
        let check = |height, width| match height == side && width == side {
            true => Ok(()),
            false => Err(format!(
                "the dataset's images are {height}x{width} but the encoder expects {side}x{side} \
                 images (image_size); set it in the config to match"
            )),
        };
        let smoke = self.smoke_sizes();
        let valid = self.data.valid_size;
        load_image_splits(&self.dataset, valid, &self.training, smoke, ctx, check)
    }

    /// Batches of view pairs of `images` that are the same on every pass.
    fn eval_loader<B: Backend>(
        &self,
        images: ImageDataset,
        splits: &Splits,
        device: &B::Device,
    ) -> Arc<dyn DataLoader<B, ViewPairBatch<B>>> {
        let views = ViewPairBatcher::new(
            splits.mean,
            splits.std,
            self.data.augment(),
            self.training.seed,
        );
        // NT-Xent's task grows with the batch: score with the training batch's size.
        DataLoaderBuilder::new(views.same_views_every_time())
            .batch_size(self.training.batch_size)
            .set_device(device.clone())
            .build(images)
    }
}

/// What the contrastive pipeline hands a model: batches of view pairs.
type ContrastiveJob<'a, B> =
    Job<'a, B, ViewPairBatch<B>, ViewPairBatch<<B as AutodiffBackend>::InnerBackend>>;

/// Pre-trains the encoder, saves `model.mpk`, scores NT-Xent on valid and test, and probes the
/// encoder's features with every training label.
pub fn train<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    devices: Vec<B::Device>,
) -> Result<RunReport> {
    config.validate()?;
    let splits = config.splits(ctx)?;
    let (settings, device) = (&config.training, devices[0].clone());
    let views = ViewPairBatcher::new(
        splits.mean,
        splits.std,
        config.data.augment(),
        settings.seed,
    );
    let loaders = Loaders {
        train: DataLoaderBuilder::new(views)
            .batch_size(settings.batch_per_device(ctx.devices))
            .shuffle(settings.seed)
            .set_device(device.clone())
            .build(splits.train.clone()),
        valid: config.eval_loader(splits.valid.clone(), &splits, &device),
        test: config.eval_loader(splits.test.clone(), &splits, &device),
    };
    let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
    let about = format!(
        "images: {} train, two views each, no labels; NT-Xent at temperature {}",
        training.train_items(),
        config.model.temperature
    );
    let job: ContrastiveJob<'_, B> = training.about(about).into();
    let mut report = job.run(|device| config.model.init::<B>(device))?.report()?;
    let encoder = load_encoder::<B>(config, ctx, &device)?;
    let (train, test) = probe_features(&encoder, &splits, &device);
    let scores = probe::<B>(&train, &test, settings.seed, &device)?;
    println!("{}", probe_line("pre-trained encoder", &scores));
    report.probe = Some(scores);
    Ok(report)
}

/// `name: linear probe 98.12%, 20-NN 97.80% (55000 labels)`.
pub fn probe_line(name: &str, scores: &ProbeScores) -> String {
    format!(
        "{name}: linear probe {:.2}%, {}-NN {:.2}% on the test set ({} labels)",
        scores.linear, scores.k, scores.knn, scores.labels
    )
}

/// The encoder of the run saved in `ctx`'s folder, without autodiff.
pub fn load_encoder<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    device: &B::Device,
) -> Result<BnCnn<B::InnerBackend>> {
    Ok(load_pretrained::<B>(config, ctx, device)?.encoder.valid())
}

/// The model of the run saved in `ctx`'s folder.
fn load_pretrained<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    device: &B::Device,
) -> Result<SimClr<B>> {
    let model = pdl_models::seeded::<B, _>(device, 0, |d| config.model.init::<B>(d));
    load_model(model, &ctx.artifact_dir.join("model.mpk"), device)
}

/// The features `encoder` gives the training and the test images.
fn probe_features<B: Backend>(
    encoder: &BnCnn<B>,
    splits: &Splits,
    device: &B::Device,
) -> (Features, Features) {
    let of =
        |images: &ImageDataset| features(encoder, images.clone(), splits.mean, splits.std, device);
    (of(&splits.train), of(&splits.test))
}

/// Rebuilds the model from `config`, loads `model.mpk`, and scores NT-Xent on the test set.
pub fn eval<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
) -> Result<Scores> {
    config.validate()?;
    let splits = config.splits(ctx)?;
    let test = config.eval_loader(splits.test.clone(), &splits, &device);
    let job: ContrastiveJob<'_, B> = Scoring::new(ctx, device, test).into();
    job.run(|device| config.model.init::<B>(device))?.scores()
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

/// `pdl probe`: scores the run's encoder against a random one, and against training from
/// scratch, with each number of labels of `plan`. Subsets are class-balanced and drawn with the
/// run's seed; the test set is the official one.
pub fn probe_run<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    device: &B::Device,
    plan: &ProbePlan,
) -> Result<Vec<ProbeRow>> {
    config.validate()?;
    let splits = config.splits(ctx)?;
    let seed = config.training.seed;
    let normalisation = (splits.mean, splits.std);
    // The saved model, read once: its encoder frozen for the probes, and with autodiff as the
    // start of each fine-tuning.
    let saved = load_pretrained::<B>(config, ctx, device)?;
    let pretrained = saved.encoder.valid();
    // A fresh encoder with the run's seed: the weights pre-training started from.
    let fresh = || pdl_models::seeded::<B, _>(device, seed, |d| config.model.encoder.init::<B>(d));
    let (train, test) = probe_features(&pretrained, &splits, device);
    let (random_train, random_test) = probe_features(&fresh().valid(), &splits, device);
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
            let score = |start: BnCnn<B>| {
                let model =
                    train_classifier(start, images.clone(), normalisation, training, seed, device);
                test_accuracy(&model.valid(), splits.test.clone(), normalisation, device)
            };
            let tuned = score(saved.encoder.clone());
            println!("  fine-tuned: {tuned:.2}% ({} steps)", training.steps);
            let fresh_score = score(fresh());
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

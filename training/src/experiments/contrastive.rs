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

use super::{Pipeline, train_loader};
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::experiments::image_classification::{Splits, load_image_splits, square_images};
use crate::job::{Job, Loaders, Scoring, Training};
use crate::learner::load_saved;
use crate::probe::{ProbePlan, ProbeRow, compare, probe_every_label};
use crate::settings::{CheckParts, Optimiser, RunConfig, count};
use anyhow::Result;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::augment::Augment;
use pdl_datasets::batcher::{ViewPairBatch, ViewPairBatcher};
use pdl_datasets::mnist::ImageDataset;
use pdl_models::{SimClr, SimClrConfig};
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

/// The options of a new run: 5,000 training images held out to validate, the views of digits
/// ([`Augment::simclr_digits`]).
impl Default for ViewOptions {
    fn default() -> Self {
        let a = Augment::simclr_digits();
        Self {
            valid_size: count::<5000>(),
            min_crop_area: a.min_crop_area,
            max_rotation_degrees: a.max_rotation_degrees,
            max_shift: a.max_shift,
        }
    }
}

impl ViewOptions {
    fn augment(&self) -> Augment {
        Augment {
            max_shift: self.max_shift,
            max_rotation_degrees: self.max_rotation_degrees,
            min_crop_area: self.min_crop_area,
            ..Augment::simclr_digits()
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
    fn splits(&self, ctx: &RunContext) -> Result<Splits> {
        let check = square_images(self.model.encoder.image_size, "encoder");
        let (valid, smoke) = (self.data.valid_size, self.smoke_sizes());
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

impl CheckParts for ContrastiveExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        self.model.validate()?;
        self.data.validate()
    }
}

/// What the contrastive pipeline hands a model: batches of view pairs.
type ContrastiveJob<'a, B> =
    Job<'a, B, ViewPairBatch<B>, ViewPairBatch<<B as AutodiffBackend>::InnerBackend>>;

impl<B: AutodiffBackend> Pipeline<B> for ContrastiveExperimentConfig {
    /// Pre-trains the encoder, saves `model.mpk`, scores NT-Xent on valid and test, and probes the
    /// encoder's features with every training label.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let splits = self.splits(ctx)?;
        let (settings, device) = (&self.training, devices[0].clone());
        let views =
            ViewPairBatcher::new(splits.mean, splits.std, self.data.augment(), settings.seed);
        let loaders = Loaders {
            train: train_loader(views, splits.train.clone(), settings, ctx, &device),
            valid: self.eval_loader(splits.valid.clone(), &splits, &device),
            test: self.eval_loader(splits.test.clone(), &splits, &device),
        };
        let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
        let about = format!(
            "images: {} train, two views each, no labels; NT-Xent at temperature {}",
            training.train_items(),
            self.model.temperature
        );
        let job: ContrastiveJob<'_, B> = training.about(about).into();
        let mut report = job.run(|device| self.model.init::<B>(device))?.report()?;
        let encoder = load_pretrained::<B>(self, ctx, &device)?.encoder.valid();
        report.probe = Some(probe_every_label::<B, _>(
            &encoder,
            &splits,
            settings.seed,
            &device,
        )?);
        Ok(report)
    }

    /// Rebuilds the model from the config, loads `model.mpk`, and scores NT-Xent on the test set.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let splits = self.splits(ctx)?;
        let test = self.eval_loader(splits.test.clone(), &splits, &device);
        let job: ContrastiveJob<'_, B> = Scoring::new(ctx, device, test).into();
        job.run(|device| self.model.init::<B>(device))?.scores()
    }

    /// `pdl probe`: scores the run's encoder against a random one, and against training from
    /// scratch, with each number of labels of `plan`. Subsets are class-balanced and drawn with the
    /// run's seed; the test set is the official one.
    fn probe(
        &self,
        ctx: &RunContext,
        device: &B::Device,
        plan: &ProbePlan,
    ) -> Result<Vec<ProbeRow>> {
        let splits = self.splits(ctx)?;
        let saved = load_pretrained::<B>(self, ctx, device)?;
        let encoder = &self.model.encoder;
        let seed = self.training.seed;
        compare(
            saved.encoder,
            |d| encoder.init(d),
            &splits,
            seed,
            plan,
            device,
        )
    }
}

/// The model of the run saved in `ctx`'s folder.
fn load_pretrained<B: AutodiffBackend>(
    config: &ContrastiveExperimentConfig,
    ctx: &RunContext,
    device: &B::Device,
) -> Result<SimClr<B>> {
    load_saved(&ctx.artifact_dir, device, |d| config.model.init::<B>(d))
}

//! Masked-image pre-training (a masked autoencoder, MAE): the self-supervised chapter's second
//! pipeline. No label reaches the loss; the labels only judge the result.
//!
//! Data: the image pipeline's splits (train, seeded valid, the official test set), each image
//! with a random order of its patches ([`MaskedImageBatcher`]: other patches hidden in every
//! training batch, the same ones of an image on every pass over valid and test, so those losses
//! compare across epochs). Model: [`MaeConfig`], whose encoder is `mnist-vit`'s ViT. Loop: the
//! shared tail of [`crate::job`] (Burn's Learner, whose dashboard shows the loss: the mean squared
//! error on the hidden patches' pixels), AdamW with warm-up and cosine decay. Then the trained
//! encoder is probed ([`crate::probe`]) on its class token, with every training label, as the
//! contrastive pipeline probes its encoder; `pdl probe` runs the fuller comparison (fewer labels,
//! a random encoder, fine-tuning against the same ViT from scratch).
//!
//! Artifacts: those of every run (`config.json`, `checkpoint/`, `model.mpk`, `metrics.json`), and
//! from `pdl plot` `reconstructions.png`: test digits, what the encoder was shown, and what the
//! decoder filled in.

use super::{Pipeline, train_loader};
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::experiments::image_classification::{Splits, load_image_splits, square_images};
use crate::job::{Job, Loaders, Scoring, Training};
use crate::learner::load_saved;
use crate::plots::Figure;
use crate::probe::{ProbePlan, ProbeRow, compare, probe_every_label};
use crate::settings::{CheckParts, Optimiser, RunConfig, count};
use anyhow::Result;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::batcher::{MaskedImageBatch, MaskedImageBatcher};
use pdl_datasets::mnist::ImageDataset;
use pdl_models::{Mae, MaeConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything needed to rebuild an MAE run; saved as its `config.json`.
pub type MaskedExperimentConfig = RunConfig<MaeConfig, MaskedImageOptions>;

/// How the images are split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct MaskedImageOptions {
    /// Training images held out for validation.
    #[serde(default = "count::<5000>")]
    pub valid_size: usize,
}

/// The options of a new run: 5,000 training images held out to validate.
impl Default for MaskedImageOptions {
    fn default() -> Self {
        Self {
            valid_size: count::<5000>(),
        }
    }
}

impl MaskedExperimentConfig {
    fn splits(&self, ctx: &RunContext) -> Result<Splits> {
        let check = square_images(self.model.encoder.image_size, "ViT");
        let (valid, smoke) = (self.data.valid_size, self.smoke_sizes());
        load_image_splits(&self.dataset, valid, &self.training, smoke, ctx, check)
    }

    /// Masked batches of `images`, each image masked the same way on every pass.
    fn eval_loader<B: Backend>(
        &self,
        images: ImageDataset,
        splits: &Splits,
        device: &B::Device,
    ) -> Arc<dyn DataLoader<B, MaskedImageBatch<B>>> {
        DataLoaderBuilder::new(self.batcher(splits).same_masks_every_time())
            .batch_size(self.training.batch_size)
            .set_device(device.clone())
            .build(images)
    }

    fn batcher(&self, splits: &Splits) -> MaskedImageBatcher {
        let patches = self.model.encoder.num_patches();
        MaskedImageBatcher::new(splits.mean, splits.std, patches, self.training.seed)
    }
}

impl CheckParts for MaskedExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        self.model.validate()
    }
}

/// What the masked-image pipeline hands a model: batches of images and their patch orders.
type MaskedJob<'a, B> =
    Job<'a, B, MaskedImageBatch<B>, MaskedImageBatch<<B as AutodiffBackend>::InnerBackend>>;

impl<B: AutodiffBackend> Pipeline<B> for MaskedExperimentConfig {
    /// Pre-trains the encoder, saves `model.mpk`, scores the masked-pixel loss on valid and test,
    /// and probes the encoder's class token with every training label.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let splits = self.splits(ctx)?;
        let (settings, device) = (&self.training, devices[0].clone());
        let loaders = Loaders {
            train: train_loader(
                self.batcher(&splits),
                splits.train.clone(),
                settings,
                ctx,
                &device,
            ),
            valid: self.eval_loader(splits.valid.clone(), &splits, &device),
            test: self.eval_loader(splits.test.clone(), &splits, &device),
        };
        let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
        let model = &self.model;
        let about = format!(
            "images: {} train, no labels; {} of {} patches hidden, loss on their pixels only",
            training.train_items(),
            model.encoder.num_patches() - model.visible_patches(),
            model.encoder.num_patches(),
        );
        let job: MaskedJob<'_, B> = training.about(about).into();
        let mut report = job.run(|device| model.init::<B>(device))?.report()?;
        let saved = load_pretrained::<B>(self, ctx, &device)?.valid();
        report.figures = vec![reconstructions(
            &saved,
            &splits,
            self,
            report.test.loss,
            &device,
        )];
        report.probe = Some(probe_every_label::<B, _>(
            &saved.encoder,
            &splits,
            settings.seed,
            &device,
        )?);
        Ok(report)
    }

    /// Rebuilds the model from the config, loads `model.mpk`, and scores the masked-pixel loss on
    /// the test set.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let splits = self.splits(ctx)?;
        let test = self.eval_loader(splits.test.clone(), &splits, &device);
        let job: MaskedJob<'_, B> = Scoring::new(ctx, device, test).into();
        job.run(|device| self.model.init::<B>(device))?.scores()
    }

    /// The run's own figure (`pdl plot`): reconstructions of the first test images.
    fn figures(&self, ctx: &RunContext, device: B::Device, test: &Scores) -> Result<Vec<Figure>> {
        let splits = self.splits(ctx)?;
        let saved = load_pretrained::<B>(self, ctx, &device)?.valid();
        Ok(vec![reconstructions(
            &saved, &splits, self, test.loss, &device,
        )])
    }

    /// `pdl probe`: the run's ViT against a random one and against the same ViT trained from
    /// scratch ([`compare`]).
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
    config: &MaskedExperimentConfig,
    ctx: &RunContext,
    device: &B::Device,
) -> Result<Mae<B>> {
    load_saved(&ctx.artifact_dir, device, |d| config.model.init::<B>(d))
}

/// Test images shown in a figure.
const SHOWN: usize = 8;

/// The first test images, masked as the test loss masks them, and the model's reconstructions.
fn reconstructions<B: Backend>(
    model: &Mae<B>,
    splits: &Splits,
    config: &MaskedExperimentConfig,
    mse: f64,
    device: &B::Device,
) -> crate::plots::Figure {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let items: Vec<_> = (0..SHOWN.min(splits.test.len()))
        .filter_map(|i| splits.test.get(i))
        .collect();
    let (height, width) = items.first().map_or((0, 0), |i| (i.height, i.width));
    let batch: MaskedImageBatch<B> = config
        .batcher(splits)
        .same_masks_every_time()
        .batch(items.clone(), device);
    let filled = model.reconstruct(batch.images, batch.order, batch.restore.clone());
    let filled = filled.into_data().convert::<f32>().to_vec::<f32>();
    let restore = batch.restore.into_data().convert::<i64>().to_vec::<i64>();
    let (filled, restore) = (filled.unwrap_or_default(), restore.unwrap_or_default());
    let p = config.model.encoder.patch_size;
    let (patches, visible) = (config.model.encoder.num_patches(), model.visible_patches());
    let ink = |v: f32| {
        ((v * splits.std + splits.mean) * 255.0)
            .clamp(0.0, 255.0)
            .round() as u8
    };
    let images = items
        .into_iter()
        .enumerate()
        .map(|(k, item)| {
            let size = height * width;
            let hidden = (0..size)
                .map(|i| {
                    let patch = (i / width / p) * (width / p) + (i % width) / p;
                    restore[k * patches + patch] >= visible as i64
                })
                .collect();
            let own = filled[k * size..(k + 1) * size].iter().map(|&v| ink(v));
            (item.pixels, hidden, own.collect())
        })
        .collect();
    crate::plots::Figure::Reconstructions(crate::plots::figures::Reconstructions {
        images,
        height,
        width,
        mse,
    })
}

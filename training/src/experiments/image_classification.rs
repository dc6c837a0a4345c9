//! Image classification on MNIST-style sets: the course's first chapters (MLP, CNN) and the
//! template every later experiment copies.
//!
//! Data: the training file split into train/valid (seeded), the test file kept for the final
//! score. Model: any [`ImageModelConfig`]. Loop: the shared tail of [`crate::job`] (Burn's
//! `SupervisedTraining`), AdamW, an optional warm-up + cosine schedule. Artifacts:
//! `config.json`, `checkpoint/`, `model.mpk`, `metrics.json`.

use super::{Pipeline, train_loader};
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::job::{Job, Loaders, Outcome, Scoring, Training};
use crate::plots::Figure;
use crate::plots::figures::Mistakes;
use crate::settings::{CheckParts, Optimiser, RunConfig, TrainingSettings, count};
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::augment::Augment;
use pdl_datasets::batcher::{ImageBatch, ImageBatcher};
use pdl_datasets::mnist::{ImageData, ImageDataset, ImageSource, Split, split_train_valid};
use pdl_models::{BnCnnConfig, ClassicCnnConfig, LeNet5Config, MlpConfig, ResNetConfig, VitConfig};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the image pipeline hands a model: batches of images.
type ImageJob<'a, B> = Job<'a, B, ImageBatch<B>, ImageBatch<<B as AutodiffBackend>::InnerBackend>>;

/// The model of an image experiment.
#[derive(Config, Debug)]
pub enum ImageModelConfig {
    /// A multilayer perceptron on flattened pixels.
    Mlp(MlpConfig),
    /// LeNet-5.
    LeNet5(LeNet5Config),
    /// The classic pytorch/examples MNIST network.
    ClassicCnn(ClassicCnnConfig),
    /// A small batch-norm CNN.
    BnCnn(BnCnnConfig),
    /// A small residual network.
    ResNet(ResNetConfig),
    /// Vision Transformer.
    Vit(VitConfig),
}

impl ImageModelConfig {
    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Mlp(c) => c.validate(),
            Self::LeNet5(c) => c.validate(),
            Self::ClassicCnn(c) => c.validate(),
            Self::BnCnn(c) => c.validate(),
            Self::ResNet(c) => c.validate(),
            Self::Vit(c) => c.validate(),
        }
    }

    /// Hands `job` the way to build the configured model on its device: the one place the model
    /// enum is matched.
    fn run<B: AutodiffBackend>(&self, job: ImageJob<'_, B>) -> Result<Outcome> {
        match self {
            Self::Mlp(c) => job.run(|device| c.init::<B>(device)),
            Self::LeNet5(c) => job.run(|device| c.init::<B>(device)),
            Self::ClassicCnn(c) => job.run(|device| c.init::<B>(device)),
            Self::BnCnn(c) => job.run(|device| c.init::<B>(device)),
            Self::ResNet(c) => job.run(|device| c.init::<B>(device)),
            Self::Vit(c) => job.run(|device| c.init::<B>(device)),
        }
    }

    /// Checks that images of `height x width` fit the model, which would otherwise fail deep
    /// inside a layer with a shape error: the side a model was sized for, if it has one.
    pub(crate) fn check_input(&self, height: usize, width: usize) -> Result<(), String> {
        let fits_side = |side: usize, what: &str| {
            if height == side && width == side {
                Ok(())
            } else {
                Err(format!("{side}x{side} images{what}"))
            }
        };
        let fits = match self {
            Self::Mlp(c) if c.d_input == height * width => Ok(()),
            Self::Mlp(c) => Err(format!("d_input {} (height * width)", c.d_input)),
            Self::LeNet5(_) => fits_side(28, ""),
            Self::ClassicCnn(c) => fits_side(c.image_size, " (image_size)"),
            Self::BnCnn(c) => fits_side(c.image_size, " (image_size)"),
            // Global average pooling takes any size the three stages can halve.
            Self::ResNet(_) => Ok(()),
            Self::Vit(c) => fits_side(c.image_size, " (image_size)"),
        };
        fits.map_err(|wants| {
            format!(
                "the dataset's images are {height}x{width} but the model expects {wants}; set the \
                 model's size in the config to match"
            )
        })
    }
}

/// Everything needed to rebuild an image-classification run; saved as its `config.json`.
pub type ImageExperimentConfig = RunConfig<ImageModelConfig, ImageOptions>;

/// How the images are split and fed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct ImageOptions {
    /// Training images held out for validation.
    #[serde(default = "count::<5000>")]
    pub valid_size: usize,
    /// Random moves of the training images, as `recipe` says.
    #[serde(default)]
    pub augment: bool,
    /// Which moves `augment` makes; runs saved before there was a choice made `digits`.
    #[serde(default)]
    pub recipe: Recipe,
}

/// The options of a new run: 5,000 training images held out to validate, no augmentation.
impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            valid_size: count::<5000>(),
            augment: false,
            recipe: Recipe::Digits,
        }
    }
}

/// An augmentation recipe, by what the images show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "burn::serde", rename_all = "lowercase")]
pub enum Recipe {
    /// Shifts and small rotations ([`Augment::mnist`]).
    #[default]
    Digits,
    /// Whole-pixel shifts and left-right mirroring ([`Augment::clothes`]).
    Clothes,
}

impl Recipe {
    fn augment(self) -> Augment {
        match self {
            Recipe::Digits => Augment::mnist(),
            Recipe::Clothes => Augment::clothes(),
        }
    }
}

/// Evaluation batch size: large, since no gradients are kept.
const EVAL_BATCH: usize = 500;

impl ImageExperimentConfig {
    /// With random shifts and rotations of the training images.
    pub fn augmented(self) -> Self {
        self.augmented_as(Recipe::Digits)
    }

    /// With the training images moved as `recipe` says.
    pub fn augmented_as(mut self, recipe: Recipe) -> Self {
        self.data.augment = true;
        self.data.recipe = recipe;
        self
    }
}

impl CheckParts for ImageExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        self.model.validate()
    }
}

/// An image set split three ways, and the training images' mean and standard deviation.
pub(crate) struct Splits {
    pub(crate) train: ImageDataset,
    pub(crate) valid: ImageDataset,
    pub(crate) test: ImageDataset,
    pub(crate) mean: f32,
    pub(crate) std: f32,
}

fn load_splits(config: &ImageExperimentConfig, ctx: &RunContext) -> Result<Splits> {
    let model = &config.model;
    let check = |height, width| model.check_input(height, width);
    let smoke = config.smoke_sizes();
    load_image_splits(
        &config.dataset,
        config.data.valid_size,
        &config.training,
        smoke,
        ctx,
        check,
    )
}

/// The `check` of [`load_image_splits`] for a network (`what`) that takes square images of
/// `side` pixels.
pub(crate) fn square_images(
    side: usize,
    what: &str,
) -> impl Fn(usize, usize) -> Result<(), String> {
    move |height, width| match height == side && width == side {
        true => Ok(()),
        false => Err(format!(
            "the dataset's images are {height}x{width} but the {what} expects {side}x{side} \
             images (image_size); set it in the config to match"
        )),
    }
}

/// Reads `dataset`'s training and test files and splits the training images into train and
/// `valid_size` held out (seeded; fewer for a smoke run, cut to `smoke`'s sizes). `check` says
/// whether the model takes images of `height x width`.
pub(crate) fn load_image_splits(
    dataset: &str,
    valid_size: usize,
    training: &TrainingSettings,
    smoke: Option<(usize, usize)>,
    ctx: &RunContext,
    check: impl Fn(usize, usize) -> Result<(), String>,
) -> Result<Splits> {
    let source = ImageSource::parse(dataset);
    let dir = source.locate(&ctx.data_dir, !ctx.offline)?;
    let train = Arc::new(ImageData::load(&dir, Split::Train)?);
    let test = Arc::new(ImageData::load(&dir, Split::Test)?);
    if (test.height, test.width) != (train.height, train.width) {
        bail!(
            "{}: test images are {}x{} but training images are {}x{}",
            dir.display(),
            test.height,
            test.width,
            train.height,
            train.width
        );
    }
    check(train.height, train.width).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let (mean, std) = source.normalisation().unwrap_or_else(|| train.mean_std());
    let valid_size = match training.smoke {
        true => valid_size.min(train.len() / 4).max(1),
        false => valid_size,
    };
    let (train_set, valid_set) =
        split_train_valid(train, valid_size, training.seed).map_err(anyhow::Error::msg)?;
    let mut splits = Splits {
        train: train_set,
        valid: valid_set,
        test: ImageDataset::new(test),
        mean,
        std,
    };
    if let Some((train, eval)) = smoke {
        splits.train = splits.train.truncate(train);
        splits.valid = splits.valid.truncate(eval);
        splits.test = splits.test.truncate(eval);
    }
    Ok(splits)
}

/// Unshuffled, unaugmented batches of `dataset`, large since no gradients are kept.
pub(crate) fn eval_loader<B: Backend>(
    dataset: ImageDataset,
    mean: f32,
    std: f32,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
    DataLoaderBuilder::new(ImageBatcher::new(mean, std))
        .batch_size(EVAL_BATCH)
        .set_device(device.clone())
        .build(dataset)
}

impl<B: AutodiffBackend> Pipeline<B> for ImageExperimentConfig {
    /// Trains the configured model, saves `model.mpk`, and scores it on valid and test.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let splits = load_splits(self, ctx)?;
        let (settings, device) = (&self.training, devices[0].clone());
        let mut batcher = ImageBatcher::new(splits.mean, splits.std);
        if self.data.augment {
            batcher = batcher.with_augment(self.data.recipe.augment(), settings.seed);
        }
        let (mean, std) = (splits.mean, splits.std);
        let test_images = splits.test.clone();
        let loaders = Loaders {
            train: train_loader(batcher, splits.train, settings, ctx, &device),
            valid: eval_loader(splits.valid, mean, std, &device),
            test: eval_loader(splits.test, mean, std, &device),
        };
        let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
        let about = format!("images: {} train", training.train_items());
        let mut report = self
            .model
            .run::<B>(training.about(about).into())?
            .report()?;
        let classes = ImageSource::parse(&self.dataset).class_names();
        report.figures = vec![mistakes(&report.test, &test_images, classes)];
        Ok(report)
    }

    /// Rebuilds the model from the config, loads `model.mpk` from the artifact directory, and
    /// scores the test set.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let splits = load_splits(self, ctx)?;
        let test = eval_loader(splits.test, splits.mean, splits.std, &device);
        self.model
            .run::<B>(Scoring::new(ctx, device, test).into())?
            .scores()
    }

    /// The run's own figures (`pdl plot`), from its `test` scores: the most confident mistakes.
    fn figures(&self, ctx: &RunContext, _: B::Device, test: &Scores) -> Result<Vec<Figure>> {
        let splits = load_splits(self, ctx)?;
        let classes = ImageSource::parse(&self.dataset).class_names();
        Ok(vec![mistakes(test, &splits.test, classes)])
    }
}

/// The test images behind a classifier's most confident mistakes, for `mistakes.png`.
fn mistakes(test: &Scores, images: &ImageDataset, classes: Vec<String>) -> Figure {
    let found = test.wrong.iter().filter_map(|wrong| {
        let image = images.get(wrong.index)?;
        Some((*wrong, image.pixels, (image.height, image.width)))
    });
    let found: Vec<_> = found.collect();
    let (height, width) = found.first().map_or((0, 0), |f| f.2);
    Figure::Mistakes(Mistakes {
        images: found
            .into_iter()
            .map(|(w, pixels, _)| (w, pixels))
            .collect(),
        height,
        width,
        classes,
    })
}

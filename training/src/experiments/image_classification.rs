//! Image classification on MNIST-style sets: the course's first chapters (MLP, CNN) and the
//! template every later experiment copies.
//!
//! Data: the training file split into train/valid (seeded), the test file kept for the final
//! score. Model: any [`ImageModelConfig`]. Loop: Burn's `SupervisedTraining` through
//! [`crate::learner::fit`], AdamW, an optional warm-up + cosine schedule. Artifacts:
//! `config.json`, `checkpoint/`, `model.mpk`, `metrics.json`.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, fit, load_and_evaluate};
use crate::schedule::ScheduleConfig;
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use pdl_datasets::augment::Augment;
use pdl_datasets::batcher::{ImageBatch, ImageBatcher};
use pdl_datasets::mnist::{ImageData, ImageDataset, ImageSource, Split, split_train_valid};
use pdl_models::{
    BnCnnConfig, ClassicCnnConfig, ConvAutodiffBackend, ConvBackend, LeNet5Config, MlpConfig,
    VitConfig,
};
use std::sync::Arc;

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
            Self::Vit(c) => c.validate(),
        }
    }

    /// Checks that images of `height x width` fit the model, which would otherwise fail deep
    /// inside a layer with a shape error.
    fn check_input(&self, height: usize, width: usize) -> Result<(), String> {
        let fits = match self {
            Self::Mlp(c) => c.d_input == height * width,
            Self::LeNet5(_) => height == 28 && width == 28,
            Self::ClassicCnn(c) => c.image_size == height && c.image_size == width,
            Self::BnCnn(c) => c.image_size == height && c.image_size == width,
            Self::Vit(c) => c.image_size == height && c.image_size == width,
        };
        if fits {
            return Ok(());
        }
        let wants = match self {
            Self::Mlp(c) => format!("d_input {} (height * width)", c.d_input),
            Self::LeNet5(_) => "28x28 images".into(),
            Self::ClassicCnn(c) => format!("{0}x{0} images (image_size)", c.image_size),
            Self::BnCnn(c) => format!("{0}x{0} images (image_size)", c.image_size),
            Self::Vit(c) => format!("{0}x{0} images (image_size)", c.image_size),
        };
        Err(format!(
            "the dataset's images are {height}x{width} but the model expects {wants}; set the \
             model's size in the config to match"
        ))
    }
}

/// Everything needed to rebuild an image-classification run; saved as its `config.json`.
#[derive(Config, Debug)]
pub struct ImageExperimentConfig {
    /// The experiment's name in the registry.
    pub experiment: String,
    /// `mnist`, `fashion-mnist`, or a folder holding the four IDX files.
    pub dataset: String,
    /// The model.
    pub model: ImageModelConfig,
    /// Epochs to train.
    #[config(default = 10)]
    pub num_epochs: usize,
    /// Images per training batch on each device (with `--devices 2`, each step sees two batches).
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule over all optimiser steps.
    #[config(default = "ScheduleConfig::Constant")]
    pub schedule: ScheduleConfig,
    /// Training images held out for validation.
    #[config(default = 5000)]
    pub valid_size: usize,
    /// Random shifts and rotations of the training images ([`Augment::mnist`]).
    #[config(default = false)]
    pub augment: bool,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    #[config(default = 0)]
    pub early_stopping_patience: usize,
    /// Seed for weights, the split, shuffling, dropout and augmentation.
    #[config(default = 42)]
    pub seed: u64,
    /// A smoke run: one epoch on a few batches of each split.
    #[config(default = false)]
    pub smoke: bool,
}

/// Batches of a smoke run: training, then validation and test.
const SMOKE_BATCHES: (usize, usize) = (4, 2);
/// Evaluation batch size: large, since no gradients are kept.
const EVAL_BATCH: usize = 500;

impl ImageExperimentConfig {
    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        super::check_training(self.num_epochs, self.learning_rate, self.weight_decay)
            .or_else(bad)?;
        self.schedule.validate().or_else(bad)?;
        self.model.validate().or_else(bad)
    }

    /// Applies `--smoke`: one epoch, and the data limits of [`SMOKE_BATCHES`].
    pub fn into_smoke(mut self) -> Self {
        self.smoke = true;
        self.num_epochs = 1;
        self
    }
}

struct Splits {
    train: ImageDataset,
    valid: ImageDataset,
    test: ImageDataset,
    mean: f32,
    std: f32,
}

fn load_splits(config: &ImageExperimentConfig, ctx: &RunContext) -> Result<Splits> {
    let source = ImageSource::parse(&config.dataset);
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
    config
        .model
        .check_input(train.height, train.width)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let (mean, std) = source.normalisation().unwrap_or_else(|| train.mean_std());
    let valid_size = if config.smoke {
        config.valid_size.min(train.len() / 4).max(1)
    } else {
        config.valid_size
    };
    let (train_set, valid_set) =
        split_train_valid(train, valid_size, config.seed).map_err(anyhow::Error::msg)?;
    let mut splits = Splits {
        train: train_set,
        valid: valid_set,
        test: ImageDataset::new(test),
        mean,
        std,
    };
    if config.smoke {
        let (train_batches, eval_batches) = SMOKE_BATCHES;
        splits.train = splits.train.truncate(train_batches * config.batch_size);
        splits.valid = splits.valid.truncate(eval_batches * config.batch_size);
        splits.test = splits.test.truncate(eval_batches * config.batch_size);
    }
    Ok(splits)
}

fn eval_loader<B: Backend>(
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

/// Trains the configured model, saves `model.mpk`, and scores it on valid and test.
pub fn train<B: ConvAutodiffBackend>(
    config: &ImageExperimentConfig,
    ctx: &RunContext,
    devices: Vec<B::Device>,
) -> Result<RunReport> {
    config.validate()?;
    let splits = load_splits(config, ctx)?;
    let device = devices[0].clone();
    pdl_models::seed::<B>(&device, config.seed);
    match &config.model {
        ImageModelConfig::Mlp(c) => train_model(c.init::<B>(&device), config, ctx, splits, devices),
        ImageModelConfig::LeNet5(c) => {
            train_model(c.init::<B>(&device), config, ctx, splits, devices)
        }
        ImageModelConfig::ClassicCnn(c) => {
            train_model(c.init::<B>(&device), config, ctx, splits, devices)
        }
        ImageModelConfig::BnCnn(c) => {
            train_model(c.init::<B>(&device), config, ctx, splits, devices)
        }
        ImageModelConfig::Vit(c) => train_model(c.init::<B>(&device), config, ctx, splits, devices),
    }
}

fn train_model<B, M>(
    model: M,
    config: &ImageExperimentConfig,
    ctx: &RunContext,
    splits: Splits,
    devices: Vec<B::Device>,
) -> Result<RunReport>
where
    B: AutodiffBackend,
    M: TrainStep<Input = ImageBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + std::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = ImageBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let device = devices[0].clone();
    let train_items = splits.train.len();
    let schedule = config.schedule.init_for_epochs(
        config.learning_rate,
        train_items,
        config.batch_size,
        devices.len(),
        config.num_epochs,
    );
    let mut batcher = ImageBatcher::new(splits.mean, splits.std);
    if config.augment {
        batcher = batcher.with_augment(Augment::mnist(), config.seed);
    }
    let train_loader = DataLoaderBuilder::new(batcher)
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .set_device(device.clone())
        .build(splits.train);
    let valid_loader =
        eval_loader::<B::InnerBackend>(splits.valid, splits.mean, splits.std, &device);
    let test_loader = eval_loader::<B::InnerBackend>(splits.test, splits.mean, splits.std, &device);
    let optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init();
    let options = FitOptions::for_run(
        ctx,
        config.num_epochs,
        config.early_stopping_patience,
        false,
    );

    println!("{model}");
    fit(
        &ctx.artifact_dir,
        model,
        optim,
        schedule,
        train_loader,
        valid_loader.clone(),
        devices,
        &options,
    )?
    .finish(&ctx.artifact_dir, train_items, &valid_loader, &test_loader)
}

/// Rebuilds the model from `config`, loads `model.mpk` from the artifact directory, and scores the
/// test set.
pub fn eval<B: ConvBackend>(
    config: &ImageExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
) -> Result<Scores> {
    config.validate()?;
    let splits = load_splits(config, ctx)?;
    let loader = eval_loader::<B>(splits.test, splits.mean, splits.std, &device);
    let dir = &ctx.artifact_dir;
    match &config.model {
        ImageModelConfig::Mlp(c) => load_and_evaluate(c.init::<B>(&device), dir, &device, &loader),
        ImageModelConfig::LeNet5(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
        ImageModelConfig::ClassicCnn(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
        ImageModelConfig::BnCnn(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
        ImageModelConfig::Vit(c) => load_and_evaluate(c.init::<B>(&device), dir, &device, &loader),
    }
}

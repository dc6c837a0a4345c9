//! Sentence classification: the sequences chapter's SST-2 task.
//!
//! Data: GLUE's SST-2 TSV files (or any folder holding a `train.tsv` and `dev.tsv` of that
//! shape). A seeded part of `train.tsv` is held out to validate (early stopping, the best epoch),
//! and `dev.tsv` is the reported score (its "test"), since GLUE's test labels are not public. The
//! word vocabulary comes from the training part (saved as `vocab.txt` beside the model). Batches
//! are padded to their longest sentence with a mask. Loop: cross-entropy through
//! [`crate::learner::fit`], Adam, gradient clipping.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, fit, load_and_evaluate};
use crate::schedule::ScheduleConfig;
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use pdl_datasets::SplitMix64;
use pdl_datasets::text::sst2::{
    self, LabelledSentence, SentenceBatch, SentenceBatcher, SentenceDataset, WordVocab, tokenize,
};
use pdl_models::{SentenceRnnConfig, TransformerClassifierConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// The vocabulary file in a run's artifact directory.
pub const VOCAB_FILE: &str = "vocab.txt";

/// The model of a sentence-classification experiment. Its `vocab_size` and `num_classes` are set
/// from the data when the run starts (a preset's values are placeholders).
#[derive(Config, Debug)]
pub enum SentenceModelConfig {
    /// Embedding, (bidirectional) recurrent stack, masked pooling, linear head.
    Rnn(SentenceRnnConfig),
    /// Embedding, positions, Transformer encoder, masked mean pooling, linear head.
    Transformer(TransformerClassifierConfig),
}

impl SentenceModelConfig {
    fn sized(&self, vocab_size: usize, num_classes: usize) -> Self {
        match self {
            Self::Rnn(c) => Self::Rnn(SentenceRnnConfig {
                vocab_size,
                num_classes,
                ..c.clone()
            }),
            Self::Transformer(c) => Self::Transformer(TransformerClassifierConfig {
                vocab_size,
                num_classes,
                ..c.clone()
            }),
        }
    }

    fn validate(&self, max_len: usize) -> Result<(), String> {
        match self.sized(2, 2) {
            Self::Rnn(c) => c.validate(),
            Self::Transformer(c) if max_len > c.max_len => Err(format!(
                "max_len {max_len} is longer than the positions the model covers ({})",
                c.max_len
            )),
            Self::Transformer(c) => c.validate(),
        }
    }
}

/// Everything needed to rebuild a sentence-classification run; saved as its `config.json`.
#[derive(Config, Debug)]
pub struct SentenceExperimentConfig {
    /// The experiment's name in the registry.
    pub experiment: String,
    /// `sst2`, or a folder holding `train.tsv` and `dev.tsv`.
    pub dataset: String,
    /// The model.
    pub model: SentenceModelConfig,
    /// Classes (labels 0 to num_classes - 1).
    #[config(default = 2)]
    pub num_classes: usize,
    /// Words seen fewer times in the training part become `<unk>`.
    #[config(default = 1)]
    pub min_count: usize,
    /// Longest sentence kept, in tokens (longer ones lose their end).
    #[config(default = 64)]
    pub max_len: usize,
    /// Training sentences held out to validate.
    #[config(default = 2000)]
    pub valid_size: usize,
    /// Epochs at most.
    #[config(default = 10)]
    pub num_epochs: usize,
    /// Sentences per batch.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Adam's (peak) learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// L2 penalty added to the gradients.
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule over all steps.
    #[config(default = "ScheduleConfig::Constant")]
    pub schedule: ScheduleConfig,
    /// Rescale the gradients to at most this global L2 norm (none: no clipping).
    #[config(default = "Some(5.0)")]
    pub grad_clip_norm: Option<f32>,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    #[config(default = 2)]
    pub early_stopping_patience: usize,
    /// End with the weights of the epoch with the lowest valid loss.
    #[config(default = true)]
    pub restore_best: bool,
    /// Seed of the weights, the held-out part, the batch order and dropout.
    #[config(default = 42)]
    pub seed: u64,
    /// A smoke run: one epoch on a few batches.
    #[config(default = false)]
    pub smoke: bool,
}

const SMOKE_BATCHES: (usize, usize) = (4, 2);
const EVAL_BATCH: usize = 256;

impl SentenceExperimentConfig {
    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        if self.batch_size == 0 || self.max_len == 0 || self.valid_size == 0 {
            return bad("batch_size, max_len and valid_size must be at least 1".into());
        }
        if self.num_classes < 2 {
            return bad(format!(
                "num_classes must be at least 2, got {}",
                self.num_classes
            ));
        }
        if let Some(norm) = self.grad_clip_norm
            && !(norm > 0.0 && norm.is_finite())
        {
            return bad(format!("grad_clip_norm must be > 0, got {norm}"));
        }
        super::check_training(self.num_epochs, self.learning_rate, self.weight_decay)
            .or_else(bad)?;
        self.schedule.validate().or_else(bad)?;
        self.model.validate(self.max_len).or_else(bad)
    }

    /// Applies `--smoke`.
    pub fn into_smoke(mut self) -> Self {
        self.smoke = true;
        self.num_epochs = 1;
        self
    }
}

struct Splits {
    train: SentenceDataset,
    valid: SentenceDataset,
    test: SentenceDataset,
    vocab: WordVocab,
}

fn load_splits(config: &SentenceExperimentConfig, ctx: &RunContext) -> Result<Splits> {
    let dir = match config.dataset.as_str() {
        "sst2" => sst2::locate(&ctx.data_dir, !ctx.offline)?,
        folder => PathBuf::from(folder),
    };
    let [train_file, dev_file] = sst2::FILE_NAMES.map(|f| dir.join(f));
    let mut train = sst2::load_tsv(&train_file, config.num_classes)?;
    let dev = sst2::load_tsv(&dev_file, config.num_classes)?;
    let valid_size = match config.smoke {
        true => config.valid_size.min(train.len() / 4).max(1),
        false => config.valid_size,
    };
    if train.len() <= valid_size {
        bail!(
            "{}: {} sentences cannot spare {} to validate; lower valid_size",
            train_file.display(),
            train.len(),
            valid_size
        );
    }
    SplitMix64::new(config.seed).shuffle(&mut train);
    let valid: Vec<LabelledSentence> = train.split_off(train.len() - valid_size);
    let vocab = WordVocab::build(train.iter().map(|s| tokenize(&s.text)), config.min_count);
    let mut splits = Splits {
        train: SentenceDataset::new(&train, &vocab),
        valid: SentenceDataset::new(&valid, &vocab),
        test: SentenceDataset::new(&dev, &vocab),
        vocab,
    };
    if config.smoke {
        let (train_batches, eval_batches) = SMOKE_BATCHES;
        splits.train = splits.train.truncate(train_batches * config.batch_size);
        splits.valid = splits.valid.truncate(eval_batches * config.batch_size);
        splits.test = splits.test.truncate(eval_batches * config.batch_size);
    }
    Ok(splits)
}

fn loader<B: Backend>(
    dataset: SentenceDataset,
    config: &SentenceExperimentConfig,
    shuffle: bool,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, SentenceBatch<B>>> {
    let batcher = SentenceBatcher {
        max_len: config.max_len,
    };
    let builder = DataLoaderBuilder::new(batcher).set_device(device.clone());
    match shuffle {
        true => builder.batch_size(config.batch_size).shuffle(config.seed),
        false => builder.batch_size(EVAL_BATCH),
    }
    .build(dataset)
}

/// Trains the configured model, saves `model.mpk` and `vocab.txt`, scores valid and dev.
pub fn train<B: AutodiffBackend>(
    config: &SentenceExperimentConfig,
    ctx: &RunContext,
    devices: Vec<B::Device>,
) -> Result<RunReport> {
    config.validate()?;
    let splits = load_splits(config, ctx)?;
    splits.vocab.save(&ctx.artifact_dir.join(VOCAB_FILE))?;
    let device = devices[0].clone();
    pdl_models::seed::<B>(&device, config.seed);
    match config.model.sized(splits.vocab.len(), config.num_classes) {
        SentenceModelConfig::Rnn(c) => {
            train_model(c.init::<B>(&device), config, ctx, splits, devices)
        }
        SentenceModelConfig::Transformer(c) => {
            train_model(c.init::<B>(&device), config, ctx, splits, devices)
        }
    }
}

fn train_model<B, M>(
    model: M,
    config: &SentenceExperimentConfig,
    ctx: &RunContext,
    splits: Splits,
    devices: Vec<B::Device>,
) -> Result<RunReport>
where
    B: AutodiffBackend,
    M: TrainStep<Input = SentenceBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + std::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = SentenceBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let device = devices[0].clone();
    let train_items = splits.train.len();
    println!(
        "{model}\nsentences: {train_items} train / {} valid / {} dev; vocabulary {} words",
        splits.valid.len(),
        splits.test.len(),
        splits.vocab.len()
    );
    let train_loader = loader::<B>(splits.train, config, true, &device);
    let valid_loader = loader::<B::InnerBackend>(splits.valid, config, false, &device);
    let test_loader = loader::<B::InnerBackend>(splits.test, config, false, &device);
    let schedule = config.schedule.init_for_epochs(
        config.learning_rate,
        train_items,
        config.batch_size,
        devices.len(),
        config.num_epochs,
    );
    let optim = super::adam(config.weight_decay, config.grad_clip_norm).init();
    let options = FitOptions::for_run(
        ctx,
        config.num_epochs,
        config.early_stopping_patience,
        config.restore_best,
    );
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

/// Rebuilds the model from `config` and `vocab.txt`, loads `model.mpk`, and scores the dev set.
pub fn eval<B: Backend>(
    config: &SentenceExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
) -> Result<Scores> {
    config.validate()?;
    let splits = load_splits(config, ctx)?;
    let saved = WordVocab::load(&ctx.artifact_dir.join(VOCAB_FILE))?;
    if saved != splits.vocab {
        bail!(
            "{}: the run's vocabulary differs from the one the data gives now; was the data \
             changed?",
            ctx.artifact_dir.join(VOCAB_FILE).display()
        );
    }
    let loader = loader::<B>(splits.test, config, false, &device);
    let dir = &ctx.artifact_dir;
    match config.model.sized(saved.len(), config.num_classes) {
        SentenceModelConfig::Rnn(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
        SentenceModelConfig::Transformer(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
    }
}

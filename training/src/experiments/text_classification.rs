//! Sentence classification: the sequences chapter's SST-2 task.
//!
//! Data: GLUE's SST-2 TSV files (or any folder holding a `train.tsv` and `dev.tsv` of that
//! shape). A seeded part of `train.tsv` is held out to validate (early stopping, the best epoch),
//! and `dev.tsv` is the reported score (its "test"), since GLUE's test labels are not public. The
//! word vocabulary comes from the training part (saved as `vocab.txt` beside the model). Batches
//! are padded to their longest sentence with a mask. Loop: cross-entropy through
//! the shared tail of [`crate::job`], Adam, gradient clipping.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::job::{Job, Loaders, Outcome, Scoring, Training};
use crate::settings::{Optimiser, RunConfig, TrainingSettings, count};
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::SplitMix64;
use pdl_datasets::text::sst2::{
    self, LabelledSentence, SentenceBatch, SentenceBatcher, SentenceDataset, WordVocab, tokenize,
};
use pdl_models::{SentenceRnnConfig, TransformerClassifierConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// The vocabulary file in a run's artifact directory.
pub const VOCAB_FILE: &str = "vocab.txt";

/// What the sentence pipeline hands a model: padded sentences and their masks.
type SentenceJob<'a, B> =
    Job<'a, B, SentenceBatch<B>, SentenceBatch<<B as AutodiffBackend>::InnerBackend>>;

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

    /// Hands `job` the way to build the configured model on its device: the one place the model
    /// enum is matched.
    fn run<B: AutodiffBackend>(&self, job: SentenceJob<'_, B>) -> Result<Outcome> {
        match self {
            Self::Rnn(c) => job.run(|device| c.init::<B>(device)),
            Self::Transformer(c) => job.run(|device| c.init::<B>(device)),
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

/// Everything needed to rebuild a sentence-classification run; saved as its `config.json`. The
/// seed of its training settings also draws the held-out part.
pub type SentenceExperimentConfig = RunConfig<SentenceModelConfig, SentenceOptions>;

/// How the sentences are labelled, cut, split and turned into ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct SentenceOptions {
    /// Classes (labels 0 to num_classes - 1).
    #[serde(default = "count::<2>")]
    pub num_classes: usize,
    /// Words seen fewer times in the training part become `<unk>`.
    #[serde(default = "count::<1>")]
    pub min_count: usize,
    /// Longest sentence kept, in tokens (longer ones lose their end).
    #[serde(default = "count::<64>")]
    pub max_len: usize,
    /// Training sentences held out to validate.
    #[serde(default = "count::<2000>")]
    pub valid_size: usize,
}

const EVAL_BATCH: usize = 256;

impl SentenceExperimentConfig {
    /// A run of `model` on `dataset` with `training`: two classes, every training word in the
    /// vocabulary, sentences cut at 64 tokens, 2,000 training sentences held out to validate.
    pub fn new(
        experiment: &str,
        dataset: &str,
        model: SentenceModelConfig,
        training: TrainingSettings,
    ) -> Self {
        let data = SentenceOptions {
            num_classes: count::<2>(),
            min_count: count::<1>(),
            max_len: count::<64>(),
            valid_size: count::<2000>(),
        };
        Self::with_data(experiment, dataset, model, training, data)
    }

    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        if self.data.max_len == 0 || self.data.valid_size == 0 {
            return bad("max_len and valid_size must be at least 1".into());
        }
        if self.data.num_classes < 2 {
            return bad(format!(
                "num_classes must be at least 2, got {}",
                self.data.num_classes
            ));
        }
        self.training.validate().or_else(bad)?;
        self.model.validate(self.data.max_len).or_else(bad)
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
    let mut train = sst2::load_tsv(&train_file, config.data.num_classes)?;
    let dev = sst2::load_tsv(&dev_file, config.data.num_classes)?;
    let valid_size = match config.training.smoke {
        true => config.data.valid_size.min(train.len() / 4).max(1),
        false => config.data.valid_size,
    };
    if train.len() <= valid_size {
        bail!(
            "{}: {} sentences cannot spare {} to validate; lower valid_size",
            train_file.display(),
            train.len(),
            valid_size
        );
    }
    SplitMix64::new(config.training.seed).shuffle(&mut train);
    let valid: Vec<LabelledSentence> = train.split_off(train.len() - valid_size);
    let vocab = WordVocab::build(
        train.iter().map(|s| tokenize(&s.text)),
        config.data.min_count,
    );
    let mut splits = Splits {
        train: SentenceDataset::new(&train, &vocab),
        valid: SentenceDataset::new(&valid, &vocab),
        test: SentenceDataset::new(&dev, &vocab),
        vocab,
    };
    if let Some((train, eval)) = config.smoke_sizes() {
        splits.train = splits.train.truncate(train);
        splits.valid = splits.valid.truncate(eval);
        splits.test = splits.test.truncate(eval);
    }
    Ok(splits)
}

/// The batches of `dataset`: shuffled, a device's slice of the global batch each, when `training`
/// on that many devices; in order, in evaluation batches, when not.
fn loader<B: Backend>(
    dataset: SentenceDataset,
    config: &SentenceExperimentConfig,
    training: Option<usize>,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, SentenceBatch<B>>> {
    let batcher = SentenceBatcher {
        max_len: config.data.max_len,
    };
    let builder = DataLoaderBuilder::new(batcher).set_device(device.clone());
    match training {
        Some(devices) => builder
            .batch_size(config.training.batch_per_device(devices))
            .shuffle(config.training.seed),
        None => builder.batch_size(EVAL_BATCH),
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
    let about = format!(
        "sentences: {} train / {} valid / {} dev; vocabulary {} words",
        splits.train.len(),
        splits.valid.len(),
        splits.test.len(),
        splits.vocab.len()
    );
    let model = config
        .model
        .sized(splits.vocab.len(), config.data.num_classes);
    let loaders = Loaders {
        train: loader::<B>(splits.train, config, Some(ctx.devices), &device),
        valid: loader(splits.valid, config, None, &device),
        test: loader(splits.test, config, None, &device),
    };
    let optimiser = Optimiser::AdamL2 { epsilon: None };
    let training = Training::new(&config.training, optimiser, ctx, devices, loaders);
    model.run::<B>(training.about(about).into())?.report()
}

/// Rebuilds the model from `config` and `vocab.txt`, loads `model.mpk`, and scores the dev set.
pub fn eval<B: AutodiffBackend>(
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
    let test = loader(splits.test, config, None, &device);
    let model = config.model.sized(saved.len(), config.data.num_classes);
    model
        .run::<B>(Scoring::new(ctx, device, test).into())?
        .scores()
}

//! Sentence classification: the sequences chapter's SST-2 task.
//!
//! Data: GLUE's SST-2 TSV files (or any folder holding a `train.tsv` and `dev.tsv` of that
//! shape). A seeded part of `train.tsv` is held out to validate (early stopping, the best epoch),
//! and `dev.tsv` is the reported score (its "test"), since GLUE's test labels are not public. The
//! word vocabulary comes from the training part (saved as `vocab.txt` beside the model). Batches
//! are padded to their longest sentence with a mask. Loop: cross-entropy through
//! the shared tail of [`crate::job`], Adam, gradient clipping.
//!
//! Two options serve the foundation-model lecture: `labelled` (`--labels N`) keeps a seeded,
//! class-balanced N of the training labels, and `pretrained` (`--from DIR`) starts the Transformer
//! from the encoder a masked-language pre-training run left in DIR ([`super::masked_language`]),
//! with that run's vocabulary; `sst2-finetune` is `sst2-transformer` set up for that.

use super::Pipeline;
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::experiments::masked_language::{pretrained_config, pretrained_encoder};
use crate::job::{Job, Loaders, Outcome, Scoring, Training};
use crate::learner::materialize;
use crate::settings::{CheckParts, Optimiser, RunConfig, count};
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::SplitMix64;
use pdl_datasets::text::sst2::{
    self, LabelledSentence, SentenceBatch, SentenceBatcher, SentenceDataset, WordVocab, tokenize,
};
use pdl_models::{SentenceRnnConfig, TransformerClassifier, TransformerClassifierConfig};
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
    /// enum is matched. With a `pretrained` encoder, the Transformer starts from it, under a head
    /// drawn with the run's seed.
    fn run<B: AutodiffBackend>(
        &self,
        job: SentenceJob<'_, B>,
        pretrained: Option<TransformerClassifier<B>>,
    ) -> Result<Outcome> {
        match (self, pretrained) {
            (Self::Rnn(c), _) => job.run(|device| c.init::<B>(device)),
            (Self::Transformer(c), None) => job.run(|device| c.init::<B>(device)),
            (Self::Transformer(c), Some(encoder)) => {
                job.run(|device| materialize(c.init::<B>(device)).with_encoder_of(encoder))
            }
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
    /// Keep only this many labelled training sentences, the same number of each class, drawn
    /// with the seed (`--labels`); none: all of them. The vocabulary still comes from all the
    /// training text, which needs no label.
    #[serde(default)]
    pub labelled: Option<usize>,
    /// A pre-training run (`sst2-pretrain`'s folder) whose encoder and vocabulary the model starts
    /// from (`--from`); none: from scratch.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
}

impl Default for SentenceOptions {
    /// Two classes, every training word in the vocabulary, sentences cut at 64 tokens, 2,000
    /// training sentences held out to validate, every label, from scratch.
    fn default() -> Self {
        Self {
            num_classes: count::<2>(),
            min_count: count::<1>(),
            max_len: count::<64>(),
            valid_size: count::<2000>(),
            labelled: None,
            pretrained: None,
        }
    }
}

/// Sentences per evaluation batch (no gradients kept), for every sentence pipeline.
pub(crate) const EVAL_BATCH: usize = 256;

impl SentenceExperimentConfig {
    /// Checks, before a new run writes anything, that the pre-training run it starts from has
    /// finished and that its encoder fits this run's model.
    pub fn check_pretrained(&self) -> Result<()> {
        let (Some(dir), SentenceModelConfig::Transformer(c)) = (&self.data.pretrained, &self.model)
        else {
            return Ok(());
        };
        if !dir.join("model.mpk").is_file() {
            bail!(
                "--from {}: no finished pre-training run there (no model.mpk); train one first \
                 (cargo xtask train sst2-pretrain) or give its folder with --from DIR",
                dir.display()
            );
        }
        pretrained_config(dir, c, self.data.num_classes).map(drop)
    }
}

impl CheckParts for SentenceExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        if self.data.max_len == 0 || self.data.valid_size == 0 {
            return Err("max_len and valid_size must be at least 1".into());
        }
        if let Some(n) = self.data.labelled.filter(|&n| n < self.data.num_classes) {
            return Err(format!(
                "labelled must give each of the {} classes a sentence, got {n}",
                self.data.num_classes
            ));
        }
        if self.data.num_classes < 2 {
            return Err(format!(
                "num_classes must be at least 2, got {}",
                self.data.num_classes
            ));
        }
        if let (Some(_), SentenceModelConfig::Rnn(_)) = (&self.data.pretrained, &self.model) {
            return Err(format!(
                "{} cannot start from a pre-trained encoder: pre-training (sst2-pretrain) trains \
                 the Transformer; fine-tune with sst2-finetune",
                self.experiment
            ));
        }
        self.model.validate(self.data.max_len)
    }
}

pub(crate) struct Splits {
    pub(crate) train: SentenceDataset,
    pub(crate) valid: SentenceDataset,
    pub(crate) test: SentenceDataset,
    pub(crate) vocab: WordVocab,
}

/// The training part (less a seeded held-out part to validate), the held-out part and the dev
/// set, encoded with `vocab` (a pre-trained run's) or, without one, with the words of the
/// training part.
pub(crate) fn load_splits<M>(
    config: &RunConfig<M, SentenceOptions>,
    ctx: &RunContext,
    vocab: Option<WordVocab>,
) -> Result<Splits> {
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
    let mut rng = SplitMix64::new(config.training.seed);
    rng.shuffle(&mut train);
    let valid: Vec<LabelledSentence> = train.split_off(train.len() - valid_size);
    let vocab = vocab.unwrap_or_else(|| {
        WordVocab::build(
            train.iter().map(|s| tokenize(&s.text)),
            config.data.min_count,
        )
    });
    if let Some(n) = config.data.labelled {
        train = balanced(train, n, config.data.num_classes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", train_file.display()))?;
    }
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

/// The first `n / classes` sentences of each class in `shuffled` (the rest of `n` to the first
/// classes), in `shuffled`'s order: a seeded, class-balanced labelled subset.
fn balanced(
    shuffled: Vec<LabelledSentence>,
    n: usize,
    classes: usize,
) -> Result<Vec<LabelledSentence>, String> {
    let quota = |class: usize| n / classes + usize::from(class < n % classes);
    let mut taken = vec![0; classes];
    let kept: Vec<LabelledSentence> = shuffled
        .into_iter()
        .filter(|s| {
            let keep = taken[s.label] < quota(s.label);
            taken[s.label] += usize::from(keep);
            keep
        })
        .collect();
    match taken.iter().enumerate().find(|&(c, &t)| t < quota(c)) {
        Some((class, &t)) => Err(format!(
            "--labels {n} needs {} sentences of class {class}, the training part has {t}",
            quota(class)
        )),
        None => Ok(kept),
    }
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

impl<B: AutodiffBackend> Pipeline<B> for SentenceExperimentConfig {
    /// Trains the configured model, saves `model.mpk` and `vocab.txt`, scores valid and dev. A
    /// model with a pre-trained encoder takes that run's vocabulary and encoder weights (on
    /// `--resume`, its checkpoint and its own `vocab.txt` hold them).
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let device = devices[0].clone();
        let own_vocab = ctx.artifact_dir.join(VOCAB_FILE);
        let (vocab, encoder) = match (&self.data.pretrained, &self.model, ctx.resume_from) {
            (None, ..) => (None, None),
            (Some(_), _, Some(_)) => (Some(WordVocab::load(&own_vocab)?), None),
            (Some(dir), SentenceModelConfig::Transformer(c), None) => {
                let (vocab, encoder) =
                    pretrained_encoder::<B>(dir, c, self.data.num_classes, &device)?;
                (Some(vocab), Some(encoder))
            }
            (Some(_), SentenceModelConfig::Rnn(_), None) => {
                bail!("only the Transformer can start from a pre-trained encoder")
            }
        };
        let splits = load_splits(self, ctx, vocab)?;
        splits.vocab.save(&own_vocab)?;
        let labels = match self.data.labelled {
            Some(n) => format!("{n} of them labelled, balanced"),
            None => "all labelled".into(),
        };
        let start = match &self.data.pretrained {
            Some(dir) => format!("; encoder and vocabulary from {}", dir.display()),
            None => String::new(),
        };
        let about = format!(
            "sentences: {} train ({labels}) / {} valid / {} dev; vocabulary {} words{start}",
            splits.train.len(),
            splits.valid.len(),
            splits.test.len(),
            splits.vocab.len()
        );
        let model = self.model.sized(splits.vocab.len(), self.data.num_classes);
        let loaders = Loaders {
            train: loader::<B>(splits.train, self, Some(ctx.parts()), &device),
            valid: loader(splits.valid, self, None, &device),
            test: loader(splits.test, self, None, &device),
        };
        let optimiser = Optimiser::AdamL2 { epsilon: None };
        let training = Training::new(&self.training, optimiser, ctx, devices, loaders);
        model
            .run::<B>(training.about(about).into(), encoder)?
            .report()
    }

    /// Rebuilds the model from the config and `vocab.txt`, loads `model.mpk`, and scores the dev
    /// set. A run from scratch checks that the data still gives its vocabulary; a fine-tuned run's
    /// is the pre-training run's, and is used as saved.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let path = ctx.artifact_dir.join(VOCAB_FILE);
        let saved = WordVocab::load(&path)?;
        let splits = match self.data.pretrained {
            Some(_) => load_splits(self, ctx, Some(saved))?,
            None => {
                let splits = load_splits(self, ctx, None)?;
                if saved != splits.vocab {
                    bail!(
                        "{}: the run's vocabulary differs from the one the data gives now; was the \
                         data changed?",
                        path.display()
                    );
                }
                splits
            }
        };
        let test = loader(splits.test, self, None, &device);
        let model = self.model.sized(splits.vocab.len(), self.data.num_classes);
        model
            .run::<B>(Scoring::new(ctx, device, test).into(), None)?
            .scores()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(labels: &[usize]) -> Vec<LabelledSentence> {
        let text = |i: usize| format!("sentence {i}");
        let row = |(i, &label): (usize, &usize)| LabelledSentence {
            text: text(i),
            label,
        };
        labels.iter().enumerate().map(row).collect()
    }

    #[test]
    fn a_labelled_subset_is_balanced_and_keeps_the_shuffled_order() {
        let rows = sentences(&[1, 1, 1, 0, 1, 0, 0, 1, 0]);
        let kept = balanced(rows.clone(), 4, 2).unwrap();
        let texts: Vec<&str> = kept.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            ["sentence 0", "sentence 1", "sentence 3", "sentence 5"]
        );
        // An odd count gives the first classes one more.
        let kept = balanced(rows.clone(), 5, 2).unwrap();
        assert_eq!(kept.iter().filter(|s| s.label == 0).count(), 3);
        let error = balanced(rows, 12, 2).unwrap_err();
        assert_eq!(
            error,
            "--labels 12 needs 6 sentences of class 0, the training part has 4"
        );
    }
}

//! Character-level language modelling: the sequences chapter's text task, and `pdl generate`.
//!
//! Data: a UTF-8 text (Tiny Shakespeare, or any file), its first 90% to train and last 10% to
//! validate, a character vocabulary from the training part (saved as `vocab.txt` beside the
//! model). Training draws fresh random windows of `seq_len + 1` characters every epoch; validation reads the valid
//! text in consecutive windows. Loop: next-character cross-entropy through
//! [`crate::learner::fit`], Adam (AdamW when weight decay is set), gradient clipping, warm-up and cosine decay. Scores: the mean
//! loss in nats per character (bits: divide by ln 2), and next-character accuracy. The "test"
//! score is the valid text's, as char-rnn and nanoGPT report it: the split has no third part.

use super::Pipeline;
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::job::{Job, Loaders, Outcome, Scoring, Training};
use crate::plots::Figure;
use crate::settings::{CheckParts, Optimiser, RunConfig, count};
use anyhow::{Context, Result, bail};
use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::{SamplerDataset, SamplerDatasetOptions};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::text::chars::{
    self, CharBatch, CharBatcher, CharVocab, CharWindow, CharWindowDataset,
};
use pdl_datasets::text::load_text;
use pdl_models::sampling::{Generate, Sampling};
use pdl_models::{CharGptConfig, CharRnnConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The vocabulary file in a run's artifact directory.
pub const VOCAB_FILE: &str = "vocab.txt";

/// What the language pipeline hands a model: windows of characters.
type LanguageJob<'a, B> = Job<'a, B, CharBatch<B>, CharBatch<<B as AutodiffBackend>::InnerBackend>>;

/// The model of a language-modelling experiment. Its `vocab_size` is set from the data's
/// vocabulary when the run starts (a preset's 0 is a placeholder).
#[derive(Config, Debug)]
pub enum LanguageModelConfig {
    /// Embedding, recurrent stack, linear head.
    Rnn(CharRnnConfig),
    /// A decoder-only Transformer with causal self-attention.
    Gpt(CharGptConfig),
}

impl LanguageModelConfig {
    pub(crate) fn with_vocab(&self, vocab_size: usize) -> Self {
        match self {
            Self::Rnn(c) => Self::Rnn(CharRnnConfig {
                vocab_size,
                ..c.clone()
            }),
            Self::Gpt(c) => Self::Gpt(CharGptConfig {
                vocab_size,
                ..c.clone()
            }),
        }
    }

    /// Hands `job` the way to build the configured model on its device: the one place the model
    /// enum is matched for training and scoring.
    fn run<B: AutodiffBackend>(&self, job: LanguageJob<'_, B>) -> Result<Outcome> {
        match self {
            Self::Rnn(c) => job.run(|device| c.init::<B>(device)),
            Self::Gpt(c) => job.run(|device| c.init::<B>(device)),
        }
    }

    fn validate(&self, seq_len: usize) -> Result<(), String> {
        match self.with_vocab(1) {
            Self::Rnn(c) => c.validate(),
            Self::Gpt(c) if seq_len > c.block_size => Err(format!(
                "seq_len {seq_len} is longer than the model's block_size {}",
                c.block_size
            )),
            Self::Gpt(c) => c.validate(),
        }
    }
}

/// Everything needed to rebuild a language-model run; saved as its `config.json`. The seed of its
/// training settings also draws the windows.
pub type LanguageExperimentConfig = RunConfig<LanguageModelConfig, LanguageOptions>;

/// How the text is cut into training windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct LanguageOptions {
    /// Characters per training window (steps of backpropagation through time).
    #[serde(default = "count::<128>")]
    pub seq_len: usize,
    /// Random windows per epoch; 0: as many as cover the training text once
    /// (`train_chars / seq_len`).
    #[serde(default)]
    pub windows_per_epoch: usize,
}

/// The options of a new run: windows of 128 characters, as many per epoch as cover the training
/// text once.
impl Default for LanguageOptions {
    fn default() -> Self {
        Self {
            seq_len: count::<128>(),
            windows_per_epoch: 0,
        }
    }
}

/// Batches a `--smoke` run keeps: training, then validation.
const SMOKE_BATCHES: (usize, usize) = (3, 2);

impl LanguageExperimentConfig {
    /// With windows of `seq_len` characters.
    pub fn with_seq_len(mut self, seq_len: usize) -> Self {
        self.data.seq_len = seq_len;
        self
    }
}

impl CheckParts for LanguageExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        if self.data.seq_len == 0 {
            return Err("seq_len must be at least 1".into());
        }
        self.model.validate(self.data.seq_len)
    }
}

/// The text's path: Tiny Shakespeare under the data dir (downloaded when missing), or a file.
fn locate(config: &LanguageExperimentConfig, ctx: &RunContext) -> Result<PathBuf> {
    Ok(match config.dataset.as_str() {
        "tinyshakespeare" => chars::locate(&ctx.data_dir, !ctx.offline)?,
        path => PathBuf::from(path),
    })
}

/// The training and valid ids, and the vocabulary of the training part.
fn load(
    config: &LanguageExperimentConfig,
    ctx: &RunContext,
) -> Result<(Vec<u32>, Vec<u32>, CharVocab)> {
    let path = locate(config, ctx)?;
    let text = load_text(&path)?;
    let (train, valid) = chars::split_text(&text, chars::TRAIN_FRACTION);
    let vocab = CharVocab::from_text(train);
    let encode = |part: &str, name: &str| {
        vocab.encode(part).map_err(|e| {
            anyhow::anyhow!(
                "{}: the {name} part has a character the training part lacks: {e}",
                path.display()
            )
        })
    };
    Ok((encode(train, "train")?, encode(valid, "valid")?, vocab))
}

fn windows(
    result: Result<CharWindowDataset, String>,
    what: &str,
    config: &LanguageExperimentConfig,
) -> Result<CharWindowDataset> {
    result.map_err(|e| anyhow::anyhow!("{}: {what}: {e}", config.dataset))
}

fn loader<B: Backend>(
    dataset: impl Dataset<CharWindow> + 'static,
    batch_size: usize,
    shuffle: Option<u64>,
    batches: Option<usize>,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, CharBatch<B>>> {
    super::loader(CharBatcher, dataset, batch_size, shuffle, batches, device)
}

impl<B: AutodiffBackend> Pipeline<B> for LanguageExperimentConfig {
    /// Trains the configured model, saves `model.mpk` and `vocab.txt`, scores the valid text.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let (train, valid, vocab) = load(self, ctx)?;
        let prompt = sample_prompt(&vocab, &valid);
        let path = ctx.artifact_dir.join(VOCAB_FILE);
        std::fs::write(&path, vocab.as_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        let (settings, device) = (&self.training, devices[0].clone());
        let (train_chars, valid_chars) = (train.len(), valid.len());
        let count = match self.data.windows_per_epoch {
            0 => (train_chars / self.data.seq_len).max(1),
            n => n,
        };
        // Fresh random windows every epoch: the sampler draws a start for every item it is asked
        // for, from one seeded generator, so a run is repeatable and no two epochs see the same set.
        let every = windows(
            CharWindowDataset::every(Arc::new(train), self.data.seq_len),
            "train",
            self,
        )?;
        let train_set = SamplerDataset::new(
            every,
            SamplerDatasetOptions::default()
                .with_replacement()
                .with_fixed_size(count)
                .with_seed(settings.seed),
        );
        let valid_set = windows(
            CharWindowDataset::sequential(Arc::new(valid), self.data.seq_len),
            "valid",
            self,
        )?;
        let (train_batches, eval_batches) = match settings.smoke {
            true => (Some(SMOKE_BATCHES.0), Some(SMOKE_BATCHES.1)),
            false => (None, None),
        };
        let batch_size = settings.batch_size;
        let valid = loader::<B::InnerBackend>(valid_set, batch_size, None, eval_batches, &device);
        let loaders = Loaders {
            train: loader::<B>(
                train_set,
                settings.batch_per_device(ctx.parts()),
                Some(settings.seed),
                train_batches,
                &device,
            ),
            // The valid text is the score: there is no test split.
            test: valid.clone(),
            valid,
        };
        let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
        let about = format!(
            "text: {train_chars} train / {valid_chars} valid characters; {} random windows of {} \
             per epoch",
            training.train_items(),
            self.data.seq_len
        );
        let model = self.model.with_vocab(vocab.len());
        let mut report = model.run::<B>(training.about(about).into())?.report()?;
        println!(
            "valid loss {:.4} nats/char = {:.4} bits/char",
            report.valid.loss,
            report.valid.loss / std::f64::consts::LN_2
        );
        match sample::<B::InnerBackend>(self, ctx, prompt, device) {
            Ok(figure) => report.figures.push(figure),
            Err(e) => println!("note: no generated sample: {e:#}"),
        }
        Ok(report)
    }

    /// Rebuilds the model from the config and `vocab.txt`, loads `model.mpk`, and scores the valid
    /// text.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let (_, valid, vocab) = load(self, ctx)?;
        let valid_set = windows(
            CharWindowDataset::sequential(Arc::new(valid), self.data.seq_len),
            "valid",
            self,
        )?;
        let batches = self.training.smoke.then_some(SMOKE_BATCHES.1);
        let test = loader(valid_set, self.training.batch_size, None, batches, &device);
        let model = self.model.with_vocab(vocab.len());
        model
            .run::<B>(Scoring::new(ctx, device, test).into())?
            .scores()
    }

    /// The run's own figures (`pdl plot`): a sample of the saved model's writing.
    fn figures(&self, ctx: &RunContext, device: B::Device, _: &Scores) -> Result<Vec<Figure>> {
        let (_, valid, vocab) = load(self, ctx)?;
        let prompt = sample_prompt(&vocab, &valid);
        Ok(vec![sample::<B::InnerBackend>(self, ctx, prompt, device)?])
    }
}

/// [`SAMPLE_PROMPT`] where the vocabulary has its letters, else the valid text's first character.
fn sample_prompt(vocab: &CharVocab, valid: &[u32]) -> String {
    match vocab.encode(SAMPLE_PROMPT) {
        Ok(_) => SAMPLE_PROMPT.to_string(),
        Err(_) => vocab.decode(valid.get(..1).unwrap_or_default()),
    }
}

/// 500 characters of the saved model's after `prompt`, for `sample.txt`.
fn sample<B: Backend>(
    config: &LanguageExperimentConfig,
    ctx: &RunContext,
    prompt: String,
    device: B::Device,
) -> Result<Figure> {
    let request = GenerateRequest {
        prompt,
        length: 500,
        sampling: Sampling {
            temperature: 0.8,
            top_k: None,
        },
        seed: 1,
        kv_cache: true,
    };
    let sample = generate::<B>(config, &ctx.artifact_dir, &request, device)?;
    Ok(Figure::Sample(sample.text))
}

/// The prompt of the sample every run leaves in `sample.txt` (500 characters, temperature 0.8,
/// seed 1); a text whose vocabulary lacks its letters is prompted with its valid part's first
/// character instead.
pub const SAMPLE_PROMPT: &str = "ROMEO:";

/// What `pdl generate` asks for.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The text to continue.
    pub prompt: String,
    /// Characters to generate.
    pub length: usize,
    /// Temperature and top-k.
    pub sampling: Sampling,
    /// Seed of the draws.
    pub seed: u64,
    /// A Transformer reuses its cached keys and values (false: recompute the whole context at
    /// every step, to measure what the cache saves). Recurrent models always carry their state.
    pub kv_cache: bool,
}

/// Generated text and how fast it came.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The prompt followed by the generated characters.
    pub text: String,
    /// Characters generated (the prompt not counted).
    pub characters: usize,
    /// Seconds generating took, the prompt's reading included (loading the model not).
    pub seconds: f64,
}

/// Loads the run in `dir` (config, `vocab.txt`, `model.mpk`) and continues the prompt.
pub fn generate<B: Backend>(
    config: &LanguageExperimentConfig,
    dir: &Path,
    request: &GenerateRequest,
    device: B::Device,
) -> Result<Generated> {
    request
        .sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vocab_path = dir.join(VOCAB_FILE);
    let vocab_text = std::fs::read_to_string(&vocab_path)
        .with_context(|| format!("{}: cannot read the run's vocabulary", vocab_path.display()))?;
    let vocab = CharVocab::from_string(&vocab_text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", vocab_path.display()))?;
    if request.prompt.is_empty() {
        bail!("--prompt is empty: give at least one character to start from");
    }
    let prompt = vocab
        .encode(&request.prompt)
        .map_err(|e| anyhow::anyhow!("--prompt: {e}"))?;
    let path = dir.join("model.mpk");
    if !path.is_file() {
        bail!(
            "{}: no trained model (train first, or check the path)",
            path.display()
        );
    }
    let model = config.model.with_vocab(vocab.len());
    let (ids, seconds) = match &model {
        LanguageModelConfig::Rnn(c) => {
            let model = pdl_models::seeded::<B, _>(&device, 0, |d| c.init::<B>(d));
            continue_prompt(model, &path, &prompt, request, &device)?
        }
        LanguageModelConfig::Gpt(c) => {
            let model = pdl_models::seeded::<B, _>(&device, 0, |d| c.init::<B>(d));
            continue_prompt(model, &path, &prompt, request, &device)?
        }
    };
    Ok(Generated {
        text: format!("{}{}", request.prompt, vocab.decode(&ids)),
        characters: ids.len(),
        seconds,
    })
}

/// Loads `model.mpk` at `path` into `model` and continues `prompt`: the generated ids and the
/// seconds they took.
fn continue_prompt<B: Backend, M: Module<B> + Generate<B>>(
    model: M,
    path: &Path,
    prompt: &[u32],
    request: &GenerateRequest,
    device: &B::Device,
) -> Result<(Vec<u32>, f64)> {
    let model = crate::learner::load_model(model, path, device)?;
    let started = std::time::Instant::now();
    let ids = model.generate(
        prompt,
        request.length,
        request.sampling,
        request.seed,
        request.kv_cache,
        device,
    );
    Ok((ids, started.elapsed().as_secs_f64()))
}

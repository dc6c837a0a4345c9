//! Character-level language modelling: the sequences chapter's text task, and `pdl generate`.
//!
//! Data: a UTF-8 text (Tiny Shakespeare, or any file), its first 90% to train and last 10% to
//! validate, a character vocabulary from the training part (saved as `vocab.txt` beside the
//! model). Training draws fresh random windows of `seq_len + 1` characters every epoch; validation reads the valid
//! text in consecutive windows. Loop: next-character cross-entropy through
//! [`crate::learner::fit`], Adam (AdamW when weight decay is set), gradient clipping, warm-up and cosine decay. Scores: the mean
//! loss in nats per character (bits: divide by ln 2), and next-character accuracy. The "test"
//! score is the valid text's, as char-rnn and nanoGPT report it: the split has no third part.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, fit, load_and_evaluate};
use crate::schedule::ScheduleConfig;
use anyhow::{Context, Result, bail};
use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::{SamplerDataset, SamplerDatasetOptions};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module};
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ClassificationOutput, InferenceStep, TrainStep};
use pdl_datasets::text::chars::{
    self, CharBatch, CharBatcher, CharVocab, CharWindow, CharWindowDataset,
};
use pdl_datasets::text::load_text;
use pdl_models::sampling::Sampling;
use pdl_models::{CharGptConfig, CharRnnConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The vocabulary file in a run's artifact directory.
pub const VOCAB_FILE: &str = "vocab.txt";

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
    fn with_vocab(&self, vocab_size: usize) -> Self {
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

/// Everything needed to rebuild a language-modelling run; saved as its `config.json`.
#[derive(Config, Debug)]
pub struct LanguageExperimentConfig {
    /// The experiment's name in the registry.
    pub experiment: String,
    /// `tinyshakespeare`, or a path to a UTF-8 text file.
    pub dataset: String,
    /// The model.
    pub model: LanguageModelConfig,
    /// Characters per training window (steps of backpropagation through time).
    #[config(default = 128)]
    pub seq_len: usize,
    /// Windows per batch.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Random windows per epoch; 0: as many as cover the training text once
    /// (`train_chars / seq_len`).
    #[config(default = 0)]
    pub windows_per_epoch: usize,
    /// Epochs.
    #[config(default = 10)]
    pub num_epochs: usize,
    /// Adam's (peak) learning rate.
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// Learning-rate schedule over all steps.
    #[config(default = "ScheduleConfig::Constant")]
    pub schedule: ScheduleConfig,
    /// AdamW's decoupled weight decay (none: 0, which is plain Adam). An `Option` so that configs
    /// saved before it existed still load.
    #[config(default = "None")]
    pub weight_decay: Option<f64>,
    /// Rescale the gradients to at most this global L2 norm (none: no clipping).
    #[config(default = "Some(5.0)")]
    pub grad_clip_norm: Option<f32>,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    #[config(default = 0)]
    pub early_stopping_patience: usize,
    /// End with the weights of the epoch with the lowest valid loss.
    #[config(default = true)]
    pub restore_best: bool,
    /// Seed of the weights, the windows and dropout.
    #[config(default = 42)]
    pub seed: u64,
    /// A smoke run: one epoch of a few batches, a few valid batches.
    #[config(default = false)]
    pub smoke: bool,
}

const SMOKE_BATCHES: (usize, usize) = (3, 2);

impl LanguageExperimentConfig {
    /// Checks everything that can be checked before reading data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(anyhow::anyhow!("invalid config: {m}"));
        if self.batch_size == 0 || self.seq_len == 0 {
            return bad("batch_size and seq_len must be at least 1".into());
        }
        if let Some(norm) = self.grad_clip_norm
            && !(norm > 0.0 && norm.is_finite())
        {
            return bad(format!("grad_clip_norm must be > 0, got {norm}"));
        }
        super::check_training(
            self.num_epochs,
            self.learning_rate,
            self.weight_decay.unwrap_or(0.0),
        )
        .or_else(bad)?;
        self.schedule.validate().or_else(bad)?;
        self.model.validate(self.seq_len).or_else(bad)
    }

    /// Applies `--smoke`.
    pub fn into_smoke(mut self) -> Self {
        self.smoke = true;
        self.num_epochs = 1;
        self
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

/// Trains the configured model, saves `model.mpk` and `vocab.txt`, scores the valid text.
pub fn train<B: AutodiffBackend>(
    config: &LanguageExperimentConfig,
    ctx: &RunContext,
    devices: Vec<B::Device>,
) -> Result<RunReport> {
    config.validate()?;
    let (train, valid, vocab) = load(config, ctx)?;
    let path = ctx.artifact_dir.join(VOCAB_FILE);
    std::fs::write(&path, vocab.as_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let device = devices[0].clone();
    pdl_models::seed::<B>(&device, config.seed);
    match config.model.with_vocab(vocab.len()) {
        LanguageModelConfig::Rnn(c) => {
            train_model(c.init::<B>(&device), config, ctx, (train, valid), devices)
        }
        LanguageModelConfig::Gpt(c) => {
            train_model(c.init::<B>(&device), config, ctx, (train, valid), devices)
        }
    }
}

fn train_model<B, M>(
    model: M,
    config: &LanguageExperimentConfig,
    ctx: &RunContext,
    (train, valid): (Vec<u32>, Vec<u32>),
    devices: Vec<B::Device>,
) -> Result<RunReport>
where
    B: AutodiffBackend,
    M: TrainStep<Input = CharBatch<B>, Output = ClassificationOutput<B>>
        + AutodiffModule<B>
        + std::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<
            Input = CharBatch<B::InnerBackend>,
            Output = ClassificationOutput<B::InnerBackend>,
        >,
{
    let device = devices[0].clone();
    let (train_chars, valid_chars) = (train.len(), valid.len());
    let count = match config.windows_per_epoch {
        0 => (train_chars / config.seq_len).max(1),
        n => n,
    };
    // Fresh random windows every epoch: the sampler draws a start for every item it is asked
    // for, from one seeded generator, so a run is repeatable and no two epochs see the same set.
    let every = windows(
        CharWindowDataset::every(Arc::new(train), config.seq_len),
        "train",
        config,
    )?;
    let train_set = SamplerDataset::new(
        every,
        SamplerDatasetOptions::default()
            .with_replacement()
            .with_fixed_size(count)
            .with_seed(config.seed),
    );
    let valid_set = windows(
        CharWindowDataset::sequential(Arc::new(valid), config.seq_len),
        "valid",
        config,
    )?;
    let (train_batches, eval_batches) = match config.smoke {
        true => (Some(SMOKE_BATCHES.0), Some(SMOKE_BATCHES.1)),
        false => (None, None),
    };
    let train_loader = loader::<B>(
        train_set,
        config.batch_size,
        Some(config.seed),
        train_batches,
        &device,
    );
    let valid_loader =
        loader::<B::InnerBackend>(valid_set, config.batch_size, None, eval_batches, &device);
    let train_items = train_loader.num_items();
    let schedule = config.schedule.init_for_epochs(
        config.learning_rate,
        train_items,
        config.batch_size,
        devices.len(),
        config.num_epochs,
    );
    let optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay.unwrap_or(0.0) as f32)
        .with_grad_clipping(config.grad_clip_norm.map(GradientClippingConfig::Norm))
        .init();
    let options = FitOptions::for_run(
        ctx,
        config.num_epochs,
        config.early_stopping_patience,
        config.restore_best,
    );
    println!(
        "{model}\ntext: {train_chars} train / {valid_chars} valid characters; {train_items} random \
         windows of {} per epoch",
        config.seq_len
    );
    let report = fit(
        &ctx.artifact_dir,
        model,
        optim,
        schedule,
        train_loader,
        valid_loader.clone(),
        devices,
        &options,
    )?
    .finish(&ctx.artifact_dir, train_items, &valid_loader, &valid_loader)?;
    println!(
        "valid loss {:.4} nats/char = {:.4} bits/char",
        report.valid.loss,
        report.valid.loss / std::f64::consts::LN_2
    );
    Ok(report)
}

/// Rebuilds the model from `config` and `vocab.txt`, loads `model.mpk`, and scores the valid text.
pub fn eval<B: Backend>(
    config: &LanguageExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
) -> Result<Scores> {
    config.validate()?;
    let (_, valid, vocab) = load(config, ctx)?;
    let valid_set = windows(
        CharWindowDataset::sequential(Arc::new(valid), config.seq_len),
        "valid",
        config,
    )?;
    let batches = config.smoke.then_some(SMOKE_BATCHES.1);
    let loader = loader::<B>(valid_set, config.batch_size, None, batches, &device);
    let dir = &ctx.artifact_dir;
    match config.model.with_vocab(vocab.len()) {
        LanguageModelConfig::Rnn(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
        LanguageModelConfig::Gpt(c) => {
            load_and_evaluate(c.init::<B>(&device), dir, &device, &loader)
        }
    }
}

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
    let recorder = crate::learner::Recorder::new();
    let not_this = || format!("{}: not a model for this config", path.display());
    let (length, sampling, seed) = (request.length, request.sampling, request.seed);
    let (ids, seconds) = match config.model.with_vocab(vocab.len()) {
        LanguageModelConfig::Rnn(c) => {
            let model = c.init::<B>(&device).load_file(&path, &recorder, &device);
            let model = model.with_context(not_this)?;
            let started = std::time::Instant::now();
            let ids = model.generate(&prompt, length, sampling, seed, &device);
            (ids, started.elapsed().as_secs_f64())
        }
        LanguageModelConfig::Gpt(c) => {
            let model = c.init::<B>(&device).load_file(&path, &recorder, &device);
            let model = model.with_context(not_this)?;
            let started = std::time::Instant::now();
            let ids = match request.kv_cache {
                true => model.generate(&prompt, length, sampling, seed, &device),
                false => model.generate_uncached(&prompt, length, sampling, seed, &device),
            };
            (ids, started.elapsed().as_secs_f64())
        }
    };
    Ok(Generated {
        text: format!("{}{}", request.prompt, vocab.decode(&ids)),
        characters: ids.len(),
        seconds,
    })
}

//! Masked-language pre-training (BERT's objective): the self-supervised chapter's text pipeline,
//! and the first half of the foundation-model lecture: pre-train on text without labels, then
//! fine-tune on few labels ([`super::text_classification`] with `--from`).
//!
//! Data: the sentence pipeline's splits ([`super::text_classification::load_splits`]): the same
//! seeded training part, vocabulary and held-out part, with the labels read but never used. The
//! text is SST-2's own training sentences rather than Tiny Shakespeare: the fine-tuning task's
//! domain and words (a word-level model pre-trained on Elizabethan verse would meet most of the
//! reviews' words as `<unk>`), and a pass over it fits a 2-core CPU's half hour. The dev set is
//! never read for training, by either half. Batches: [`MaskedSentenceBatcher`], 15% of each
//! sentence's words hidden, anew in every training batch and the same on every pass over valid
//! and dev. Model: [`MaskedLanguageModelConfig`], whose encoder is `sst2-transformer`'s. Loop: the
//! shared tail of [`crate::job`] (Burn's Learner; its dashboard shows the cross-entropy of the
//! hidden words and how many it guessed), AdamW with warm-up and cosine decay.
//!
//! Artifacts: those of every run, and `vocab.txt`, which the fine-tuning run takes with the
//! encoder.

use super::text_classification::{EVAL_BATCH, SentenceOptions, VOCAB_FILE, load_splits};
use super::{Pipeline, train_loader};
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::experiments::ExperimentConfig;
use crate::job::{Job, Loaders, Scoring, Training};
use crate::learner::load_saved;
use crate::settings::{CheckParts, Optimiser, RunConfig};
use anyhow::{Result, bail};
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pdl_datasets::text::masked::{MaskedSentenceBatch, MaskedSentenceBatcher};
use pdl_datasets::text::sst2::{SentenceDataset, WordVocab};
use pdl_models::{MaskedLanguageModelConfig, TransformerClassifier, TransformerClassifierConfig};
use std::path::Path;
use std::sync::Arc;

/// Everything needed to rebuild a masked-language pre-training run; saved as its `config.json`.
/// Its data options are the sentence pipeline's (the labels are left unused).
pub type MaskedTextExperimentConfig = RunConfig<MaskedLanguageModelConfig, SentenceOptions>;

/// What the pipeline hands a model: sentences with hidden words.
type MaskedTextJob<'a, B> =
    Job<'a, B, MaskedSentenceBatch<B>, MaskedSentenceBatch<<B as AutodiffBackend>::InnerBackend>>;

impl MaskedTextExperimentConfig {
    /// The model for a vocabulary of `vocab_size` words.
    fn sized(&self, vocab_size: usize) -> MaskedLanguageModelConfig {
        let encoder = TransformerClassifierConfig {
            vocab_size,
            num_classes: self.data.num_classes,
            ..self.model.encoder.clone()
        };
        MaskedLanguageModelConfig {
            encoder,
            ..self.model.clone()
        }
    }

    fn batcher(&self, vocab: &WordVocab) -> MaskedSentenceBatcher {
        let (len, ratio, seed) = (self.data.max_len, self.model.mask_ratio, self.training.seed);
        MaskedSentenceBatcher::new(len, vocab.len(), ratio, seed)
    }

    /// Batches of `sentences` with the same words hidden on every pass.
    fn eval_loader<B: Backend>(
        &self,
        sentences: SentenceDataset,
        vocab: &WordVocab,
        device: &B::Device,
    ) -> Arc<dyn DataLoader<B, MaskedSentenceBatch<B>>> {
        DataLoaderBuilder::new(self.batcher(vocab).same_masks_every_time())
            .batch_size(EVAL_BATCH)
            .set_device(device.clone())
            .build(sentences)
    }
}

impl CheckParts for MaskedTextExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        if self.data.labelled.is_some() || self.data.pretrained.is_some() {
            return Err(
                "pre-training reads no labels and starts from scratch: --labels and --from \
                 belong to the fine-tuning run (sst2-finetune)"
                    .into(),
            );
        }
        if self.data.max_len > self.model.encoder.max_len || self.data.valid_size == 0 {
            return Err(format!(
                "max_len {} must be at most the positions the encoder covers ({}), and \
                 valid_size at least 1",
                self.data.max_len, self.model.encoder.max_len
            ));
        }
        self.sized(2).validate()
    }
}

impl<B: AutodiffBackend> Pipeline<B> for MaskedTextExperimentConfig {
    /// Pre-trains the encoder, saves `model.mpk` and `vocab.txt`, and scores the hidden words of
    /// the held-out part and of dev.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let splits = load_splits(self, ctx, None)?;
        splits.vocab.save(&ctx.artifact_dir.join(VOCAB_FILE))?;
        let (settings, device) = (&self.training, devices[0].clone());
        let about = format!(
            "sentences: {} train, no labels; {:.0}% of each one's words hidden (at least one), the \
             loss on them only; vocabulary {} words",
            splits.train.len(),
            100.0 * self.model.mask_ratio,
            splits.vocab.len()
        );
        let loaders = Loaders {
            train: train_loader(
                self.batcher(&splits.vocab),
                splits.train,
                settings,
                ctx,
                &device,
            ),
            valid: self.eval_loader(splits.valid, &splits.vocab, &device),
            test: self.eval_loader(splits.test, &splits.vocab, &device),
        };
        let model = self.sized(splits.vocab.len());
        let training = Training::new(settings, Optimiser::AdamW, ctx, devices, loaders);
        let job: MaskedTextJob<'_, B> = training.about(about).into();
        let mut report = job.run(|device| model.init::<B>(device))?.report()?;
        // Which word was taken for which says little over thousands of words (and a tiny vocabulary
        // would get a confusion matrix drawn): no matrix.
        report.valid.confusion = None;
        report.test.confusion = None;
        Ok(report)
    }

    /// Rebuilds the model from the config and `vocab.txt`, loads `model.mpk`, and scores the hidden
    /// words of dev.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let vocab = WordVocab::load(&ctx.artifact_dir.join(VOCAB_FILE))?;
        let splits = load_splits(self, ctx, Some(vocab))?;
        let test = self.eval_loader(splits.test, &splits.vocab, &device);
        let model = self.sized(splits.vocab.len());
        let job: MaskedTextJob<'_, B> = Scoring::new(ctx, device, test).into();
        job.run(|device| model.init::<B>(device))?.scores()
    }
}

/// The vocabulary and the model of the masked-language pre-training run in `dir`, checked against
/// the fine-tuning model `fine` (unsized: it takes the run's vocabulary) so that a mismatch is a
/// one-line error naming both shapes. Reads only `config.json` and `vocab.txt`.
pub(crate) fn pretrained_config(
    dir: &Path,
    fine: &TransformerClassifierConfig,
    num_classes: usize,
) -> Result<(WordVocab, MaskedLanguageModelConfig)> {
    let (experiment, config) = crate::cli::load_run_config(dir)?;
    let ExperimentConfig::MaskedText(config) = config else {
        bail!(
            "--from {}: a run of {}, not a masked-language pre-training run such as sst2-pretrain",
            dir.display(),
            experiment.name
        );
    };
    let vocab = WordVocab::load(&dir.join(VOCAB_FILE))?;
    let pre = config.sized(vocab.len());
    let fine = TransformerClassifierConfig {
        vocab_size: vocab.len(),
        num_classes,
        ..fine.clone()
    };
    if !pre.encoder.same_encoder(&fine) {
        bail!(
            "--from {}: its encoder is {}, but this run's model is {}; make the fine-tuning \
             model's config match the pre-trained one",
            dir.display(),
            pre.encoder.shape(),
            fine.shape()
        );
    }
    Ok((vocab, pre))
}

/// The vocabulary and the trained encoder of the pre-training run in `dir` ([`pretrained_config`]
/// checks it fits `fine`).
pub(crate) fn pretrained_encoder<B: Backend>(
    dir: &Path,
    fine: &TransformerClassifierConfig,
    num_classes: usize,
    device: &B::Device,
) -> Result<(WordVocab, TransformerClassifier<B>)> {
    let (vocab, pre) = pretrained_config(dir, fine, num_classes)?;
    let model = load_saved(dir, device, |d| pre.init::<B>(d))?;
    Ok((vocab, model.encoder))
}

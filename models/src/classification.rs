//! What every classifier shares: cross-entropy on its logits, the image and sentence classifiers'
//! `forward_classification`, and [`train_output`], the one line
//! under each model's `impl TrainStep` (written out beside the model, where the orphan rule wants
//! it and a reader can find it).

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, TrainOutput};
use pdl_datasets::batcher::ImageBatch;
use pdl_datasets::text::sst2::SentenceBatch;

/// A model mapping `[batch, channels, height, width]` images to `[batch, num_classes]` logits.
pub trait ImageClassifier<B: Backend> {
    /// Logits for each image.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, num_classes]`
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// Logits, mean cross-entropy against the targets, and the targets, as the Learner's metrics
    /// expect them.
    fn forward_classification(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        let logits = self.logits(batch.images);
        classification_output(logits, batch.targets)
    }
}

/// An image classifier seen as an encoder and a head: what a self-supervised method pre-trains
/// is the encoder, and what the probes of `pdl probe` read is its output.
pub trait ImageEncoder<B: Backend>: ImageClassifier<B> {
    /// The features the head reads, one row per image.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, d_features]`
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}

/// A model mapping padded sentences to `[batch, num_classes]` logits.
pub trait SentenceClassifier<B: Backend> {
    /// Logits for each sentence.
    ///
    /// # Shapes
    /// - tokens: `[batch, seq_len]`, padded
    /// - mask: `[batch, seq_len]`, true at a real token
    /// - output: `[batch, num_classes]`
    fn logits(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 2>;

    /// Logits, mean cross-entropy against the labels, and the labels, as the Learner's metrics
    /// expect them.
    fn forward_classification(&self, batch: SentenceBatch<B>) -> ClassificationOutput<B> {
        let logits = self.logits(batch.tokens, batch.mask);
        classification_output(logits, batch.targets)
    }
}

/// Checks a dropout probability: `[0, 1)`, since 1 would drop everything.
pub fn check_dropout(name: &str, p: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{name} dropout must be in [0, 1), got {p}"))
    }
}

/// Mean cross-entropy of `logits` `[batch, num_classes]` against `targets` `[batch]`.
pub fn classification_output<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> ClassificationOutput<B> {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), targets.clone());
    ClassificationOutput::new(loss, logits, targets)
}

/// Mean cross-entropy of a language model's logits `[batch, seq_len, vocab]` against the next
/// tokens `[batch, seq_len]`: every step of every sequence is one example.
pub fn next_token_output<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> ClassificationOutput<B> {
    let [b, t, v] = logits.dims();
    classification_output(logits.reshape([b * t, v]), targets.reshape([b * t]))
}

/// A training step's result for the Learner: the gradients of `output`'s loss, and the output
/// itself for the metrics.
pub fn train_output<B, M, O>(model: &M, output: O) -> TrainOutput<O>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: HasLoss<B>,
{
    let grads = output.loss().backward();
    TrainOutput::new(model, grads, output)
}

/// A step's output that carries the loss to minimise: Burn's classification and regression
/// outputs.
pub trait HasLoss<B: Backend> {
    /// The mean loss over the batch, `[1]`.
    fn loss(&self) -> Tensor<B, 1>;
}

impl<B: Backend> HasLoss<B> for ClassificationOutput<B> {
    fn loss(&self) -> Tensor<B, 1> {
        self.loss.clone()
    }
}

impl<B: Backend> HasLoss<B> for burn::train::RegressionOutput<B> {
    fn loss(&self) -> Tensor<B, 1> {
        self.loss.clone()
    }
}

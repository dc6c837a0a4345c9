//! What every classifier shares: cross-entropy on its logits, and the two-line `TrainStep` /
//! `InferenceStep` impls the Learner needs (a macro, because the orphan rule wants them beside
//! each type and they are the same for all of them).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::train::ClassificationOutput;
use pdl_datasets::batcher::ImageBatch;

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

    /// What a training step minimises; the same as [`Self::forward_classification`] here.
    fn forward_training(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
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

/// Implements the Learner's `TrainStep` (forward, loss, backward) and `InferenceStep` (forward,
/// loss) for a model through a classifier trait's `forward_training` and `forward_classification`
/// on a batch type:
/// `classifier_steps!(Gcn, NodeClassifier, pdl_datasets::graph::GraphBatch)`.
#[macro_export]
macro_rules! classifier_steps {
    ($model:ident, $classifier:ident, $($batch:ident)::+) => {
        impl<B: burn::tensor::backend::AutodiffBackend> burn::train::TrainStep for $model<B> {
            type Input = $($batch)::+<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> burn::train::TrainOutput<Self::Output> {
                let item = $classifier::forward_training(self, batch);
                burn::train::TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl<B: burn::tensor::backend::Backend> burn::train::InferenceStep for $model<B> {
            type Input = $($batch)::+<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> Self::Output {
                $classifier::forward_classification(self, batch)
            }
        }
    };
}

/// [`classifier_steps!`] for an [`ImageClassifier`] on [`ImageBatch`]es.
#[macro_export]
macro_rules! image_classifier_steps {
    ($model:ident) => {
        $crate::classifier_steps!($model, ImageClassifier, pdl_datasets::batcher::ImageBatch);
    };
    // A model whose forward runs `conv::Conv2d`, which needs a `ConvBackend`.
    ($model:ident, conv) => {
        impl<B: $crate::conv::ConvAutodiffBackend> burn::train::TrainStep for $model<B> {
            type Input = pdl_datasets::batcher::ImageBatch<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> burn::train::TrainOutput<Self::Output> {
                let item = ImageClassifier::forward_training(self, batch);
                burn::train::TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl<B: $crate::conv::ConvBackend> burn::train::InferenceStep for $model<B> {
            type Input = pdl_datasets::batcher::ImageBatch<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> Self::Output {
                ImageClassifier::forward_classification(self, batch)
            }
        }
    };
}

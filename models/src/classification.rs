//! What every image classifier shares: cross-entropy on its logits, and the two-line
//! `TrainStep` / `InferenceStep` impls the Learner needs (a macro, because the orphan rule wants
//! them beside each type and they are the same for all of them).

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

/// Implements the Learner's `TrainStep` (forward, loss, backward) and `InferenceStep` (forward,
/// loss) for an [`ImageClassifier`] on [`ImageBatch`]es.
#[macro_export]
macro_rules! image_classifier_steps {
    ($model:ident) => {
        impl<B: burn::tensor::backend::AutodiffBackend> burn::train::TrainStep for $model<B> {
            type Input = pdl_datasets::batcher::ImageBatch<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> burn::train::TrainOutput<Self::Output> {
                let item = $crate::ImageClassifier::forward_classification(self, batch);
                burn::train::TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl<B: burn::tensor::backend::Backend> burn::train::InferenceStep for $model<B> {
            type Input = pdl_datasets::batcher::ImageBatch<B>;
            type Output = burn::train::ClassificationOutput<B>;

            fn step(&self, batch: Self::Input) -> Self::Output {
                $crate::ImageClassifier::forward_classification(self, batch)
            }
        }
    };
}

//! SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of
//! Visual Representations"): learning features from images without labels.
//!
//! Each image is augmented twice (a random resized crop, a rotation and a shift: see
//! `pdl_datasets::augment`). An encoder f maps each view to a representation h = f(x); a small
//! projection head g maps h to z = g(h), and the NT-Xent loss ([`crate::contrastive`]) pulls the
//! two views of an image together in z while pushing them away from the other 2N − 2 views of the
//! batch. No label is used. What the encoder learns is kept, the head thrown away: the paper's
//! finding is that h, one layer before the loss, holds more of what tells the classes apart than
//! z, which the loss has made invariant to the augmentations.
//!
//! The encoder here is the course's batch-norm CNN ([`BnCnn`]), and h is what its classifier head
//! reads ([`BnCnn::features`]). The whole `BnCnn`, head included, is kept, so the pre-trained
//! encoder is the network of `mnist-bn-cnn` as it is, and fine-tuning (`pdl probe --fine-tune`)
//! trains it as that classifier; pre-training never touches the head (it gets no gradient), so
//! it stays at its random start.
//!
//! Experiments `mnist-simclr` and `fashion-simclr`; the trained encoder is then judged by a linear
//! probe and k-nearest neighbours on frozen features (`pdl probe`).

use crate::cnn::{BnCnn, BnCnnConfig};
use crate::contrastive::{twin_logits, twin_loss};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::batcher::ViewPairBatch;
use pdl_kernels::{Linear, LinearConfig};

/// Configuration of a [`SimClr`] model.
#[derive(Config, Debug)]
pub struct SimClrConfig {
    /// The encoder.
    pub encoder: BnCnnConfig,
    /// Width of the projection head's hidden layer.
    #[config(default = 512)]
    pub d_hidden: usize,
    /// Width of z, where the loss is taken.
    #[config(default = 128)]
    pub d_projection: usize,
    /// NT-Xent's temperature τ.
    #[config(default = 0.5)]
    pub temperature: f64,
}

impl SimClrConfig {
    /// The batch-norm CNN of `mnist-bn-cnn` as encoder (1,152 features), a 512-128 head, and the
    /// paper's τ = 0.5 for its smaller batches.
    pub fn mnist() -> Self {
        Self::new(BnCnnConfig::mnist())
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        self.encoder.validate()?;
        if self.d_hidden == 0 || self.d_projection == 0 {
            return Err(format!(
                "SimCLR's projection head needs widths of at least 1, got {} and {}",
                self.d_hidden, self.d_projection
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "SimCLR's temperature must be a positive number, got {}",
                self.temperature
            ));
        }
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`SimClrConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SimClr<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let encoder = self.encoder.init(device);
        let d_features = encoder.feature_size();
        SimClr {
            encoder,
            hidden: LinearConfig::new(d_features, self.d_hidden).init(device),
            projection: LinearConfig::new(self.d_hidden, self.d_projection).init(device),
            temperature: self.temperature,
        }
    }
}

/// An encoder and its projection head, trained by NT-Xent.
#[derive(Module, Debug)]
pub struct SimClr<B: Backend> {
    /// f: images to representations h (the head of this `BnCnn` is not used).
    pub encoder: BnCnn<B>,
    hidden: Linear<B>,
    projection: Linear<B>,
    temperature: f64,
}

impl<B: Backend> SimClr<B> {
    /// z = g(f(x)): the projections of the views.
    ///
    /// # Shapes
    /// - views: `[2N, 1, s, s]`
    /// - output: `[2N, d_projection]`
    pub fn forward(&self, views: Tensor<B, 4>) -> Tensor<B, 2> {
        let h = self.encoder.features(views); // [2N, d_features]
        self.projection.forward(relu(self.hidden.forward(h)))
    }

    /// The NT-Xent loss of a batch of view pairs, as the (2N − 1)-way classification "which view
    /// is my twin?" ([`twin_logits`]): the loss, the similarity logits and each row's twin, so the
    /// Learner's accuracy metric reads how often the twin is the most similar view.
    pub fn forward_contrastive(&self, batch: ViewPairBatch<B>) -> ClassificationOutput<B> {
        let (logits, twins) = twin_logits(self.forward(batch.views), self.temperature);
        ClassificationOutput::new(twin_loss(logits.clone(), twins.clone()), logits, twins)
    }
}

impl<B: AutodiffBackend> TrainStep for SimClr<B> {
    type Input = ViewPairBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ViewPairBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        crate::train_output(self, self.forward_contrastive(batch))
    }
}

impl<B: Backend> InferenceStep for SimClr<B> {
    type Input = ViewPairBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ViewPairBatch<B>) -> ClassificationOutput<B> {
        self.forward_contrastive(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use crate::contrastive::nt_xent;

    fn batch(n: usize) -> ViewPairBatch<B> {
        let device = Default::default();
        ViewPairBatch {
            views: Tensor::random(
                [2 * n, 1, 28, 28],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            ),
            targets: Tensor::zeros([n], &device),
        }
    }

    #[test]
    fn projects_each_view_and_scores_a_2n_minus_1_way_choice() {
        let model = SimClrConfig::mnist().init::<B>(&Default::default());
        assert_eq!(model.encoder.feature_size(), 128 * 3 * 3);
        let b = batch(3);
        assert_eq!(model.forward(b.views.clone()).dims(), [6, 128]);
        let out = model.forward_contrastive(b.clone());
        assert_eq!(out.output.dims(), [6, 6]);
        let twins = out
            .targets
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(twins, vec![3, 4, 5, 0, 1, 2]);
        // The loss is NT-Xent's on the projections.
        let direct = nt_xent(model.forward(b.views), 0.5).into_scalar();
        assert!((out.loss.into_scalar() - direct).abs() < 1e-5);
    }

    #[test]
    fn rejects_a_zero_temperature_and_empty_heads() {
        let c = SimClrConfig::mnist();
        assert!(c.clone().with_temperature(0.0).validate().is_err());
        assert!(c.clone().with_d_projection(0).validate().is_err());
        assert!(c.with_d_hidden(0).validate().is_err());
    }
}

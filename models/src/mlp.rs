//! The multilayer perceptron: `h_{l+1} = act(W_l h_l + b_l)`, dropout after each hidden layer, a
//! linear read-out to class logits (d2l.ai ch. 5, "Multilayer Perceptrons").
//!
//! Images are flattened, so the MLP sees 784 numbers with no notion of neighbouring pixels: the
//! baseline the CNN chapter improves on. Used by the `mnist-mlp` experiment.

use crate::classification::{ImageClassifier, check_dropout, train_output};
use burn::nn::{
    Dropout, DropoutConfig, Linear, LinearConfig,
    activation::{Activation, ActivationConfig},
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::batcher::ImageBatch;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input features per example (`channels * height * width` for images).
    pub d_input: usize,
    /// Widths of the hidden layers, first to last; empty gives a linear (softmax regression) model.
    pub d_hidden: Vec<usize>,
    /// Number of output classes.
    pub num_classes: usize,
    /// Non-linearity after each hidden layer.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Dropout probability after each hidden layer (Srivastava et al. 2014).
    #[config(default = 0.2)]
    pub dropout: f64,
}

impl MlpConfig {
    /// 784-512-512-10 with ReLU and dropout 0.2: the Keras `mnist_mlp` example's network, which
    /// reaches ~98.4% on MNIST.
    pub fn mnist() -> Self {
        Self::new(28 * 28, vec![512, 512], 10)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_input == 0 || self.num_classes == 0 {
            return Err("MLP d_input and num_classes must be at least 1".into());
        }
        if self.d_hidden.contains(&0) {
            return Err(format!(
                "MLP hidden widths must be at least 1, got {:?}",
                self.d_hidden
            ));
        }
        check_dropout("MLP", self.dropout)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`MlpConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let mut widths = vec![self.d_input];
        widths.extend(&self.d_hidden);
        let hidden = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Mlp {
            hidden,
            output: LinearConfig::new(*widths.last().unwrap(), self.num_classes).init(device),
            activation: self.activation.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// A multilayer perceptron classifier.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    hidden: Vec<Linear<B>>,
    output: Linear<B>,
    activation: Activation<B>,
    dropout: Dropout,
}

impl<B: Backend> ImageClassifier<B> for Mlp<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images.flatten(1, 3)) // [batch, channels * height * width]
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - input: `[batch, d_input]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = input;
        for layer in &self.hidden {
            x = self
                .dropout
                .forward(self.activation.forward(layer.forward(x))); // [batch, d_hidden]
        }
        self.output.forward(x)
    }
}

impl<B: AutodiffBackend> TrainStep for Mlp<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for Mlp<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    #[test]
    fn output_dims() {
        let model = MlpConfig::new(12, vec![8, 4], 3).init::<B>(&Default::default());
        let out = model.forward(Tensor::zeros([5, 12], &Default::default()));
        assert_eq!(out.dims(), [5, 3]);
    }

    #[test]
    fn parameter_count_is_shown() {
        let model = MlpConfig::mnist().init::<B>(&Default::default());
        let expected = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10;
        assert_eq!(model.num_params(), expected);
        assert!(format!("{model}").contains(&expected.to_string()));
    }

    #[test]
    fn rejects_zero_width() {
        assert!(MlpConfig::new(4, vec![0], 2).validate().is_err());
    }

    #[test]
    fn rejects_dropout_of_one() {
        assert!(
            MlpConfig::new(4, vec![2], 2)
                .with_dropout(1.0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn rejects_zero_classes() {
        assert!(MlpConfig::new(4, vec![2], 0).validate().is_err());
    }
}

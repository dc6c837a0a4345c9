//! Convolutional networks for 28x28 grey images (d2l.ai ch. 7-8, "Convolutional Neural Networks").
//!
//! A convolution slides one small kernel over the image, `y[c', i, j] = b[c'] + sum_{c, u, v}
//! w[c', c, u, v] x[c, i+u, j+v]`, so it sees neighbourhoods and shares weights across positions:
//! far fewer parameters than an MLP and translation equivariance for free.
//!
//! - [`LeNet5`]: LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
//!   document recognition". Experiment `mnist-lenet`.
//! - [`ClassicCnn`]: the network of pytorch/examples `mnist/main.py` (conv32-conv64-maxpool-fc128),
//!   the usual benchmark net. Experiments `mnist-cnn`, `fashion-cnn`, and `pdl bench`.
//! - [`BnCnn`]: a small modern CNN, each stage conv3x3 -> batch norm (Ioffe & Szegedy 2015) ->
//!   ReLU -> 2x2 max-pool. Experiment `mnist-bn-cnn`.

use crate::classification::{ImageClassifier, ImageEncoder, check_dropout, train_output};
use burn::nn::{
    Linear, LinearConfig, PaddingConfig2d,
    activation::{Activation, ActivationConfig},
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::batcher::ImageBatch;
use pdl_kernels::{
    BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, ConvImplementation, Dropout, DropoutConfig,
    MaxPool2d, MaxPool2dConfig,
};

fn max_pool_2x2() -> MaxPool2d {
    MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init()
}

/// Configuration of a [`LeNet5`].
#[derive(Config, Debug)]
pub struct LeNet5Config {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Non-linearity after each layer. The 1998 paper used a scaled tanh; ReLU trains faster with
    /// Adam and is what d2l's exercises move to.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Whose convolution the layers run: this project's fast backward (none, the default) or
    /// Burn's, to compare. An `Option` so that runs saved before the switch existed still load.
    pub conv: Option<ConvImplementation>,
}

impl LeNet5Config {
    /// LeNet-5 on 28x28 MNIST, padding the first convolution by 2 as d2l does (the paper padded the
    /// images to 32x32).
    pub fn mnist() -> Self {
        Self::new()
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_classes == 0 {
            return Err("LeNet-5 num_classes must be at least 1".into());
        }
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`LeNet5Config::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LeNet5<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        LeNet5 {
            conv1: Conv2dConfig::new([1, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .with_implementation(self.conv.unwrap_or(ConvImplementation::Pdl))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5])
                .with_implementation(self.conv.unwrap_or(ConvImplementation::Pdl))
                .init(device),
            pool: max_pool_2x2(),
            fc1: LinearConfig::new(16 * 5 * 5, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, self.num_classes).init(device),
            activation: self.activation.init(device),
        }
    }
}

/// LeNet-5: two convolution + pooling stages, then three fully connected layers.
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    fc3: Linear<B>,
    activation: Activation<B>,
}

impl<B: Backend> ImageClassifier<B> for LeNet5<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> LeNet5<B> {
    /// # Shapes
    /// - images: `[batch, 1, 28, 28]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let act = &self.activation;
        let x = self.pool.forward(act.forward(self.conv1.forward(images))); // [batch, 6, 14, 14]
        let x = self.pool.forward(act.forward(self.conv2.forward(x))); // [batch, 16, 5, 5]
        let x = act.forward(self.fc1.forward(x.flatten(1, 3))); // [batch, 120]
        let x = act.forward(self.fc2.forward(x)); // [batch, 84]
        self.fc3.forward(x)
    }
}

/// Configuration of a [`ClassicCnn`].
#[derive(Config, Debug)]
pub struct ClassicCnnConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Output channels of the two 3x3 convolutions.
    #[config(default = "[32, 64]")]
    pub channels: [usize; 2],
    /// Width of the hidden fully connected layer.
    #[config(default = 128)]
    pub d_hidden: usize,
    /// Dropout after the pooling layer.
    #[config(default = 0.25)]
    pub dropout_conv: f64,
    /// Dropout after the hidden fully connected layer.
    #[config(default = 0.5)]
    pub dropout_fc: f64,
    /// Side of the (square) input images.
    #[config(default = 28)]
    pub image_size: usize,
    /// Whose convolution the layers run: this project's fast backward (none, the default) or
    /// Burn's, to compare. An `Option` so that runs saved before the switch existed still load.
    pub conv: Option<ConvImplementation>,
}

impl ClassicCnnConfig {
    /// pytorch/examples `mnist/main.py` `Net`, exactly: conv(1->32, 3x3), conv(32->64, 3x3),
    /// max-pool 2, dropout 0.25, fc(9216->128), dropout 0.5, fc(128->10). About 99.2% on MNIST.
    pub fn mnist() -> Self {
        Self::new()
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_classes == 0 || self.d_hidden == 0 || self.channels.contains(&0) {
            return Err("classic CNN sizes must be at least 1".into());
        }
        if self.image_size < 6 {
            return Err(format!(
                "classic CNN needs images of at least 6x6, got {}",
                self.image_size
            ));
        }
        check_dropout("classic CNN conv", self.dropout_conv)?;
        check_dropout("classic CNN fc", self.dropout_fc)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`ClassicCnnConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassicCnn<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let [c1, c2] = self.channels;
        let side = (self.image_size - 4) / 2; // two valid 3x3 convs, then a 2x2 pool
        ClassicCnn {
            conv1: Conv2dConfig::new([1, c1], [3, 3])
                .with_implementation(self.conv.unwrap_or(ConvImplementation::Pdl))
                .init(device),
            conv2: Conv2dConfig::new([c1, c2], [3, 3])
                .with_implementation(self.conv.unwrap_or(ConvImplementation::Pdl))
                .init(device),
            pool: max_pool_2x2(),
            dropout_conv: DropoutConfig::new(self.dropout_conv).init(),
            fc1: LinearConfig::new(c2 * side * side, self.d_hidden).init(device),
            dropout_fc: DropoutConfig::new(self.dropout_fc).init(),
            fc2: LinearConfig::new(self.d_hidden, self.num_classes).init(device),
        }
    }
}

/// The classic PyTorch MNIST network.
#[derive(Module, Debug)]
pub struct ClassicCnn<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    dropout_conv: Dropout,
    fc1: Linear<B>,
    dropout_fc: Dropout,
    fc2: Linear<B>,
}

impl<B: Backend> ImageClassifier<B> for ClassicCnn<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> ClassicCnn<B> {
    /// Two valid 3x3 convolutions with ReLU, a 2x2 max-pool, then two fully connected layers;
    /// with the `mnist()` sizes (`c1 = 32`, `c2 = 64`, `s = 28`, `d_hidden = 128`) the comments read
    /// `[batch, 32, 26, 26]`, `[batch, 64, 24, 24]`, `[batch, 64, 12, 12]`, `[batch, 128]`.
    ///
    /// # Shapes
    /// - images: `[batch, 1, s, s]` with `s = image_size`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = burn::tensor::activation::relu(self.conv1.forward(images)); // [batch, c1, s-2, s-2]
        let x = burn::tensor::activation::relu(self.conv2.forward(x)); // [batch, c2, s-4, s-4]
        let x = self.dropout_conv.forward(self.pool.forward(x)); // [batch, c2, (s-4)/2, (s-4)/2]
        let x = burn::tensor::activation::relu(self.fc1.forward(x.flatten(1, 3))); // [batch, d_hidden]
        self.fc2.forward(self.dropout_fc.forward(x))
    }
}

/// Configuration of a [`BnCnn`].
#[derive(Config, Debug)]
pub struct BnCnnConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Output channels of each stage; each stage halves the image side.
    #[config(default = "vec![32, 64, 128]")]
    pub channels: Vec<usize>,
    /// Dropout before the classifier.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Side of the (square) input images.
    #[config(default = 28)]
    pub image_size: usize,
    /// Whose convolution the layers run: this project's fast backward (none, the default) or
    /// Burn's, to compare. An `Option` so that runs saved before the switch existed still load.
    pub conv: Option<ConvImplementation>,
}

impl BnCnnConfig {
    /// Three stages of 32, 64, 128 channels (28 -> 14 -> 7 -> 3): ~100k parameters, and with
    /// augmentation and a cosine schedule >= 99.4% on MNIST.
    pub fn mnist() -> Self {
        Self::new()
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels.is_empty() || self.channels.contains(&0) || self.num_classes == 0 {
            return Err(format!(
                "BN CNN needs at least one stage of at least 1 channel, got {:?}",
                self.channels
            ));
        }
        let side = u32::try_from(self.channels.len())
            .ok()
            .and_then(|stages| self.image_size.checked_shr(stages))
            .unwrap_or(0);
        if side == 0 {
            return Err(format!(
                "BN CNN: {} stages halve a {}-pixel image to nothing",
                self.channels.len(),
                self.image_size
            ));
        }
        check_dropout("BN CNN", self.dropout)
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`BnCnnConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BnCnn<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let mut in_channels = 1;
        let mut stages = Vec::with_capacity(self.channels.len());
        for &out in &self.channels {
            stages.push(ConvBnStage {
                // No conv bias: the batch norm's shift makes it redundant.
                conv: Conv2dConfig::new([in_channels, out], [3, 3])
                    .with_padding(PaddingConfig2d::Same)
                    .with_bias(false)
                    .with_implementation(self.conv.unwrap_or(ConvImplementation::Pdl))
                    .init(device),
                norm: BatchNormConfig::new(out).init(device),
            });
            in_channels = out;
        }
        let side = self.image_size >> self.channels.len(); // validate() checked it is > 0
        BnCnn {
            stages,
            pool: max_pool_2x2(),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(in_channels * side * side, self.num_classes).init(device),
        }
    }
}

/// conv3x3 -> batch norm -> ReLU.
#[derive(Module, Debug)]
pub struct ConvBnStage<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
}

/// A small batch-norm CNN.
#[derive(Module, Debug)]
pub struct BnCnn<B: Backend> {
    stages: Vec<ConvBnStage<B>>,
    pool: MaxPool2d,
    dropout: Dropout,
    head: Linear<B>,
}

impl<B: Backend> ImageClassifier<B> for BnCnn<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> ImageEncoder<B> for BnCnn<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        BnCnn::features(self, images)
    }
}

impl<B: Backend> BnCnn<B> {
    /// # Shapes
    /// - images: `[batch, 1, image_size, image_size]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head
            .forward(self.dropout.forward(self.features(images)))
    }

    /// What the head reads: the last stage's maps, flattened. SimCLR pre-trains these
    /// ([`crate::simclr`]).
    ///
    /// # Shapes
    /// - images: `[batch, 1, s, s]` with `s = image_size`
    /// - output: `[batch, c * (s >> stages)^2]` with `c` the last stage's channels
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = images;
        for stage in &self.stages {
            let y = stage.norm.forward(stage.conv.forward(x)); // [batch, channels, side, side]
            x = self.pool.forward(burn::tensor::activation::relu(y)); // [batch, channels, side/2, side/2]
        }
        x.flatten(1, 3)
    }

    /// Width of [`BnCnn::features`].
    pub fn feature_size(&self) -> usize {
        self.head.weight.val().dims()[0]
    }
}

impl<B: AutodiffBackend> TrainStep for LeNet5<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for LeNet5<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

impl<B: AutodiffBackend> TrainStep for ClassicCnn<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for ClassicCnn<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

impl<B: AutodiffBackend> TrainStep for BnCnn<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for BnCnn<B> {
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

    fn images(batch: usize) -> Tensor<B, 4> {
        Tensor::zeros([batch, 1, 28, 28], &Default::default())
    }

    #[test]
    fn lenet_dims_and_params() {
        let model = LeNet5Config::mnist().init::<B>(&Default::default());
        assert_eq!(model.forward(images(3)).dims(), [3, 10]);
        // conv 6*(25+1) + conv 16*(6*25+1) + fc 400*120+120 + 120*84+84 + 84*10+10
        let expected = 156 + 2416 + 48120 + 10164 + 850;
        assert_eq!(model.num_params(), expected);
        assert!(format!("{model}").contains(&expected.to_string()));
    }

    #[test]
    fn classic_cnn_dims_and_params() {
        let model = ClassicCnnConfig::mnist().init::<B>(&Default::default());
        assert_eq!(model.forward(images(2)).dims(), [2, 10]);
        // pytorch/examples prints 1,199,882 parameters for this Net.
        assert_eq!(model.num_params(), 1_199_882);
        assert!(format!("{model}").contains("1199882"));
    }

    #[test]
    fn bn_cnn_dims_and_params() {
        let model = BnCnnConfig::mnist().init::<B>(&Default::default());
        assert_eq!(model.forward(images(2)).dims(), [2, 10]);
        // convs 9*(1*32 + 32*64 + 64*128); batch norms 4*(32+64+128): gamma and beta, plus the
        // running mean and variance, which Burn's count includes; head 1152*10+10.
        let expected = 9 * (32 + 2048 + 8192) + 4 * 224 + 11530;
        assert_eq!(model.num_params(), expected);
    }

    #[test]
    fn classic_cnn_rejects_tiny_images() {
        assert!(
            ClassicCnnConfig::new()
                .with_image_size(5)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn classic_cnn_rejects_bad_dropout() {
        assert!(
            ClassicCnnConfig::new()
                .with_dropout_fc(1.5)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn bn_cnn_rejects_too_many_stages() {
        let config = BnCnnConfig::new().with_channels(vec![8; 5]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn bn_cnn_rejects_absurd_stage_counts_without_overflow() {
        let config = BnCnnConfig::new().with_channels(vec![8; 70]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn bn_cnn_rejects_empty_stages() {
        assert!(BnCnnConfig::new().with_channels(vec![]).validate().is_err());
    }

    #[test]
    fn lenet_rejects_zero_classes() {
        assert!(LeNet5Config::new().with_num_classes(0).validate().is_err());
    }
}

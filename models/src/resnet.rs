//! A small residual network for 28x28 grey images (He, Zhang, Ren & Sun 2016, "Deep Residual
//! Learning for Image Recognition"; d2l.ai ch. 8.6, "Residual Networks").
//!
//! A residual block learns a correction to its input rather than a whole new map:
//! `y = ReLU(F(x) + S(x))`, with `F(x) = BN(conv3x3(ReLU(BN(conv3x3(x)))))` and `S` the identity,
//! or a strided 1x1 convolution with batch norm where the block halves the image and widens the
//! channels. The identity path carries the gradient through any depth unchanged, which is what let
//! He et al. train 152 layers where a plain stack of 56 trained worse than one of 20.
//!
//! [`ResNet`] is a stem (conv3x3 -> BN -> ReLU), stages of basic blocks (the first block of each
//! stage halves the side, the first stage's too when `downsample_first`: 28 -> 14 -> 7 -> 4), global
//! average pooling and a linear head, as CIFAR-style ResNets are (He et al. section 4.2) at
//! MNIST's size. Experiment `fashion-resnet`.

use crate::classification::{ImageClassifier, train_output};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::batcher::ImageBatch;
use pdl_kernels::{
    BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, ConvImplementation, Linear, LinearConfig,
};

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of each stage; every stage after the first halves the image side.
    #[config(default = "vec![16, 32, 64]")]
    pub channels: Vec<usize>,
    /// Basic blocks per stage.
    #[config(default = 1)]
    pub blocks_per_stage: usize,
    /// Whether the first stage halves the side too (as ImageNet ResNets' strided stem does),
    /// which buys wider stages for the same multiply-adds.
    #[config(default = false)]
    pub downsample_first: bool,
    /// Whose convolution the layers run: this project's fast backward (none, the default) or
    /// Burn's, to compare.
    pub conv: Option<ConvImplementation>,
}

impl ResNetConfig {
    /// Three stages of 16, 32 and 64 channels, one basic block each, every one halving the side
    /// (28 -> 14 -> 7 -> 4): eight layers with weights, 79 k parameters and batch-norm statistics,
    /// about 3 M multiply-adds an image (the classic MNIST net's 12 M), sized for Fashion-MNIST
    /// on a 2-core CPU, where its nine batch norms cost more than its convolutions.
    pub fn fashion() -> Self {
        Self::new()
            .with_channels(vec![16, 32, 64])
            .with_downsample_first(true)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels.is_empty() || self.channels.contains(&0) || self.num_classes == 0 {
            return Err(format!(
                "ResNet needs at least one stage of at least 1 channel and 1 class, got {:?}",
                self.channels
            ));
        }
        if self.blocks_per_stage == 0 {
            return Err("ResNet blocks_per_stage must be at least 1".into());
        }
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`ResNetConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let conv = self.conv.unwrap_or(ConvImplementation::Pdl);
        let first = self.channels[0];
        let mut blocks = Vec::new();
        let mut channels_in = first;
        for (stage, &channels_out) in self.channels.iter().enumerate() {
            for block in 0..self.blocks_per_stage {
                let halves = block == 0 && (stage > 0 || self.downsample_first);
                let stride = if halves { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    channels_in,
                    channels_out,
                    stride,
                    conv,
                    device,
                ));
                channels_in = channels_out;
            }
        }
        ResNet {
            stem: conv3x3(1, first, 1, conv).init(device),
            stem_norm: BatchNormConfig::new(first).init(device),
            blocks,
            head: LinearConfig::new(channels_in, self.num_classes).init(device),
        }
    }
}

/// A 3x3 convolution padded to keep the side (halved with stride 2), without a bias: the batch
/// norm after it shifts anyway.
fn conv3x3(
    channels_in: usize,
    channels_out: usize,
    stride: usize,
    conv: ConvImplementation,
) -> Conv2dConfig {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .with_implementation(conv)
}

/// The basic block: two 3x3 convolutions with batch norm, added to the shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    norm1: BatchNorm<B>,
    conv2: Conv2d<B>,
    norm2: BatchNorm<B>,
    /// The projection where the block changes the shape; none: the identity.
    shortcut: Option<Projection<B>>,
}

/// The shortcut of a block that changes the shape: a strided 1x1 convolution and batch norm.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(
        channels_in: usize,
        channels_out: usize,
        stride: usize,
        conv: ConvImplementation,
        device: &B::Device,
    ) -> Self {
        let shortcut = (stride != 1 || channels_in != channels_out).then(|| {
            let projection = Conv2dConfig::new([channels_in, channels_out], [1, 1])
                .with_stride([stride, stride])
                .with_bias(false)
                .with_implementation(conv)
                .init(device);
            Projection {
                conv: projection,
                norm: BatchNormConfig::new(channels_out).init(device),
            }
        });
        Self {
            conv1: conv3x3(channels_in, channels_out, stride, conv).init(device),
            norm1: BatchNormConfig::new(channels_out).init(device),
            conv2: conv3x3(channels_out, channels_out, 1, conv).init(device),
            norm2: BatchNormConfig::new(channels_out).init(device),
            shortcut,
        }
    }

    /// `ReLU(F(x) + S(x))`.
    ///
    /// # Shapes
    /// - x: `[batch, channels_in, side, side]`
    /// - output: `[batch, channels_out, side / stride, side / stride]` (rounded up)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = relu(self.norm1.forward(self.conv1.forward(x.clone()))); // [batch, c_out, s', s']
        let y = self.norm2.forward(self.conv2.forward(y));
        let shortcut = match &self.shortcut {
            Some(projection) => projection.norm.forward(projection.conv.forward(x)), // [batch, c_out, s', s']
            None => x,
        };
        relu(y + shortcut)
    }
}

/// A small ResNet.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem: Conv2d<B>,
    stem_norm: BatchNorm<B>,
    blocks: Vec<BasicBlock<B>>,
    head: Linear<B>,
}

impl<B: Backend> ImageClassifier<B> for ResNet<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> ResNet<B> {
    /// # Shapes
    /// - images: `[batch, 1, height, width]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = relu(self.stem_norm.forward(self.stem.forward(images))); // [batch, c0, h, w]
        for block in &self.blocks {
            x = block.forward(x); // [batch, c, h / 2^stage, w / 2^stage]
        }
        let [batch, channels, _, _] = x.dims();
        // Global average pooling: one number per channel, whatever the side.
        let pooled = x.flatten::<3>(2, 3).mean_dim(2).reshape([batch, channels]); // [batch, c]
        self.head.forward(pooled)
    }
}

impl<B: AutodiffBackend> TrainStep for ResNet<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for ResNet<B> {
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
    fn dims_and_params() {
        let model = ResNetConfig::fashion().init::<B>(&Default::default());
        let images = Tensor::<B, 4>::zeros([3, 1, 28, 28], &Default::default());
        assert_eq!(model.forward(images).dims(), [3, 10]);
        // stem 9*16 + BN; stage 1 (halving, so with a projection): 2 convs 16*16*9 + 2 BN + 16*16
        // + BN; stage 2: 16*32*9 + 32*32*9 + 2 BN + shortcut 16*32 + BN; stage 3 likewise from 32
        // to 64; head 64*10+10. Burn counts a batch norm's running mean and variance beside its
        // scale and shift: 4 numbers a channel.
        let bn = |c: usize| 4 * c;
        let expected = (144 + bn(16))
            + (2 * 2304 + 2 * bn(16) + 256 + bn(16))
            + (4608 + 9216 + 2 * bn(32) + 512 + bn(32))
            + (18432 + 36864 + 2 * bn(64) + 2048 + bn(64))
            + 650;
        assert_eq!(model.num_params(), expected);
        assert_eq!(expected, 78_746);
    }

    #[test]
    fn a_block_that_keeps_the_shape_has_no_projection() {
        let device = Default::default();
        let same = BasicBlock::<B>::new(8, 8, 1, ConvImplementation::Pdl, &device);
        assert!(same.shortcut.is_none());
        let down = BasicBlock::<B>::new(8, 16, 2, ConvImplementation::Pdl, &device);
        assert!(down.shortcut.is_some());
        let x = Tensor::<B, 4>::ones([2, 8, 7, 7], &device);
        assert_eq!(down.forward(x).dims(), [2, 16, 4, 4]);
    }

    #[test]
    fn config_rejects_no_stages_and_no_blocks() {
        assert!(
            ResNetConfig::new()
                .with_channels(vec![])
                .validate()
                .is_err()
        );
        assert!(
            ResNetConfig::new()
                .with_blocks_per_stage(0)
                .validate()
                .is_err()
        );
    }
}

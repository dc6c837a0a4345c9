//! The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"): the image
//! cut into patches, each a token, a class token read out by the head. Experiment `mnist-vit`.

use super::{GPT_INIT, TransformerBlock, TransformerBlockConfig, blocks};
use crate::classification::{ImageClassifier, ImageEncoder, check_dropout, train_output};
use burn::module::{Initializer, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::batcher::ImageBatch;
use pdl_kernels::{Conv2d, Conv2dConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use pdl_kernels::{Dropout, DropoutConfig};

/// Configuration of a [`Vit`].
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Side of the (square) input images.
    #[config(default = 28)]
    pub image_size: usize,
    /// Image channels.
    #[config(default = 1)]
    pub channels: usize,
    /// Side of each (square) patch; must divide `image_size`.
    #[config(default = 7)]
    pub patch_size: usize,
    /// Width of the patch embeddings and the residual stream.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder blocks.
    #[config(default = 6)]
    pub n_layers: usize,
    /// Hidden width of each block's MLP.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Dropout on the embeddings and in every block.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

impl VitConfig {
    /// A small ViT for 28x28 grey images: 7x7 patches (16 tokens and the class token), 6 blocks of
    /// width 64 with 4 heads: about 206k parameters.
    pub fn mnist() -> Self {
        Self::new()
    }

    fn block(&self) -> TransformerBlockConfig {
        TransformerBlockConfig::new(self.d_model, self.n_heads, self.d_ff)
            .with_dropout(self.dropout)
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        side * side
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.image_size == 0 || self.channels == 0 || self.patch_size == 0 {
            return Err("ViT image_size, channels and patch_size must be at least 1".into());
        }
        if self.num_classes == 0 || self.n_layers == 0 {
            return Err("ViT num_classes and n_layers must be at least 1".into());
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "ViT patch size {} does not divide the image size {}",
                self.patch_size, self.image_size
            ));
        }
        check_dropout("ViT", self.dropout)?;
        self.block().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`VitConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vit<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let p = self.patch_size;
        Vit {
            patches: Conv2dConfig::new([self.channels, self.d_model], [p, p])
                .with_stride([p, p])
                .init(device),
            class_token: Initializer::Zeros.init([1, 1, self.d_model], device),
            positions: GPT_INIT.init([1, self.num_patches() + 1, self.d_model], device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks: blocks(&self.block(), self.n_layers, device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.num_classes).init(device),
        }
    }
}

/// The Vision Transformer: each `p x p` patch is linearly embedded (a convolution with kernel and
/// stride `p`, the same as flattening the patch and applying a linear layer), a learned class
/// token is prepended, learned positions are added, and after the encoder blocks and a final layer
/// norm the head reads the class token. As in the reference implementation
/// (google-research/vision_transformer), the class token starts at zero and the positions at
/// `N(0, 0.02)`.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    patches: Conv2d<B>,
    class_token: Param<Tensor<B, 3>>,
    positions: Param<Tensor<B, 3>>,
    dropout: Dropout,
    blocks: Vec<TransformerBlock<B>>,
    norm: LayerNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> ImageClassifier<B> for Vit<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> ImageEncoder<B> for Vit<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        Vit::features(self, images)
    }
}

impl<B: Backend> Vit<B> {
    /// # Shapes
    /// - images: `[batch, channels, image_size, image_size]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.features(images))
    }

    /// What the head reads: the class token after the encoder and its final norm.
    ///
    /// # Shapes
    /// - images: `[batch, channels, image_size, image_size]`
    /// - output: `[batch, d_model]`
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.encode(self.patch_tokens(images)); // [batch, patches + 1, d_model]
        let [batch, _, d_model] = x.dims();
        x.slice([0..batch, 0..1, 0..d_model])
            .reshape([batch, d_model])
    }

    /// Each patch embedded, with its position added: the tokens the encoder reads, or a subset
    /// of them (a masked autoencoder shows it only some).
    ///
    /// # Shapes
    /// - images: `[batch, channels, image_size, image_size]`
    /// - output: `[batch, patches, d_model]`, patches numbered row by row
    pub fn patch_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patches.forward(images); // [batch, d_model, side, side], side = image / patch
        let [batch, d_model, h, w] = x.dims();
        let x = x.reshape([batch, d_model, h * w]).swap_dims(1, 2); // [batch, patches, d_model]
        x + self.positions.val().slice([0..1, 1..h * w + 1, 0..d_model])
    }

    /// The encoder over some patch tokens: the class token (with its position) prepended, then
    /// dropout, the blocks and the final layer norm.
    ///
    /// # Shapes
    /// - tokens: `[batch, n, d_model]`, any `n` of the image's patch tokens
    /// - output: `[batch, n + 1, d_model]`, the class token first
    pub fn encode(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, _, d_model] = tokens.dims();
        let class = self.class_token.val() + self.positions.val().slice([0..1, 0..1, 0..d_model]);
        let x = Tensor::cat(vec![class.expand([batch, 1, d_model]), tokens], 1);
        let mut x = self.dropout.forward(x);
        for block in &self.blocks {
            x = block.forward(x, None);
        }
        self.norm.forward(x)
    }

    /// Width of the tokens and of [`Vit::features`].
    pub fn d_model(&self) -> usize {
        self.class_token.val().dims()[2]
    }
}

impl<B: AutodiffBackend> TrainStep for Vit<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for Vit<B> {
    type Input = ImageBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

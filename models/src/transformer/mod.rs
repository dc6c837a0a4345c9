//! Transformers built from [`crate::attention`] (Vaswani et al. 2017, "Attention Is All You
//! Need"; d2l.ai ch. 11, "Attention Mechanisms and Transformers").
//!
//! - [`PositionalEncoding`]: attention is blind to order, so each position adds a vector: fixed
//!   sinusoids (Vaswani et al. 2017) or a learned embedding per position (GPT, ViT).
//! - [`TransformerBlock`]: a pre-norm block (GPT-2, Radford et al. 2019; Xiong et al. 2020, "On
//!   Layer Normalization in the Transformer Architecture"), `x + Dropout(MHA(LN(x)))` then
//!   `x + Dropout(MLP(LN(x)))`. Normalising before each branch leaves the residual path an
//!   identity, which trains without the learning-rate warm-up the post-norm original needs.
//! - [`TransformerClassifier`] (`classifier.rs`): an encoder over padded sentences, mean-pooled
//!   over the real tokens.
//! - [`CharGpt`] (`gpt.rs`): a decoder-only, causal character language model (GPT, Radford et al. 2018;
//!   Karpathy's nanoGPT) with its output layer tied to the token embedding and KV-cached
//!   generation.
//! - [`MaskedLanguageModel`] (`mlm.rs`): BERT's pre-training of the classifier's encoder, guessing
//!   hidden words from both sides.
//! - [`Vit`] (`vit.rs`): the Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"):
//!   image patches as tokens, a class token read out by the head.

use crate::attention::{KvCache, MultiHeadAttention, MultiHeadAttentionConfig};
use crate::classification::check_dropout;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use pdl_kernels::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};

mod classifier;
mod gpt;
mod mlm;
#[cfg(test)]
mod tests;
mod vit;

pub use classifier::{TransformerClassifier, TransformerClassifierConfig};
pub use gpt::{CharGpt, CharGptConfig, GptContext};
pub use mlm::{MaskedLanguageModel, MaskedLanguageModelConfig};
pub use vit::{Vit, VitConfig};

/// GPT-2's initialisation of its token and position embeddings, `N(0, 0.02)`.
pub(crate) const GPT_INIT: Initializer = Initializer::Normal {
    mean: 0.0,
    std: 0.02,
};

/// How positions are encoded.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PositionalEncodingKind {
    /// Fixed sinusoids (Vaswani et al. 2017, section 3.5): `PE(p, 2i) = sin(p / 10000^(2i/d))`,
    /// `PE(p, 2i+1) = cos(p / 10000^(2i/d))`. Not a parameter.
    Sinusoidal,
    /// A learned vector per position (an embedding over positions), as GPT and BERT do.
    Learned,
}

/// Configuration of a [`PositionalEncoding`].
#[derive(Config, Debug)]
pub struct PositionalEncodingConfig {
    /// Width of each position's vector.
    pub d_model: usize,
    /// Positions available, `0..max_len`.
    pub max_len: usize,
    /// Sinusoidal or learned.
    #[config(default = "PositionalEncodingKind::Sinusoidal")]
    pub kind: PositionalEncodingKind,
    /// Initial values of learned positions (Burn's embedding default, `N(0, 1)`).
    #[config(default = "Initializer::Normal{mean:0.0, std:1.0}")]
    pub initializer: Initializer,
}

impl PositionalEncodingConfig {
    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_model == 0 || self.max_len == 0 {
            return Err("positional encoding d_model and max_len must be at least 1".into());
        }
        Ok(())
    }

    /// Builds the encoding on `device`.
    ///
    /// # Panics
    /// If [`PositionalEncodingConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PositionalEncoding<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        match self.kind {
            PositionalEncodingKind::Sinusoidal => PositionalEncoding::Sinusoidal(
                sinusoidal_positions(self.max_len, self.d_model, device),
            ),
            PositionalEncodingKind::Learned => PositionalEncoding::Learned(
                EmbeddingConfig::new(self.max_len, self.d_model)
                    .with_initializer(self.initializer.clone())
                    .init(device),
            ),
        }
    }
}

/// The sinusoidal table of Vaswani et al. (2017): row `p`, column `j` is `sin(p / 10000^(j/d))`
/// for even `j` and `cos(p / 10000^((j-1)/d))` for odd `j`. Each pair of columns is a rotation at
/// its own frequency, so `PE(p + k)` is a linear function of `PE(p)`.
///
/// # Shapes
/// - output: `[max_len, d_model]`
pub fn sinusoidal_positions<B: Backend>(
    max_len: usize,
    d_model: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut table = Vec::with_capacity(max_len * d_model);
    for p in 0..max_len {
        for j in 0..d_model {
            let even = (j - j % 2) as f64;
            let angle = p as f64 / 10_000f64.powf(even / d_model as f64);
            let value = if j % 2 == 0 { angle.sin() } else { angle.cos() };
            table.push(value as f32);
        }
    }
    Tensor::from_data(TensorData::new(table, [max_len, d_model]), device)
}

/// Position vectors, added to token embeddings.
#[derive(Module, Debug)]
pub enum PositionalEncoding<B: Backend> {
    /// The fixed table of [`sinusoidal_positions`], `[max_len, d_model]`: a constant, neither
    /// trained nor saved.
    Sinusoidal(Tensor<B, 2>),
    /// A learned embedding over positions.
    Learned(Embedding<B>),
}

impl<B: Backend> PositionalEncoding<B> {
    /// Positions available.
    pub fn max_len(&self) -> usize {
        match self {
            Self::Sinusoidal(table) => table.dims()[0],
            Self::Learned(embedding) => embedding.weight.dims()[0],
        }
    }

    /// The vectors of positions `offset..offset + len`.
    ///
    /// # Shapes
    /// - output: `[1, len, d_model]`, broadcasting over a batch
    ///
    /// # Panics
    /// If `offset + len > max_len`.
    pub fn forward(&self, offset: usize, len: usize) -> Tensor<B, 3> {
        let max_len = self.max_len();
        assert!(
            offset + len <= max_len,
            "positions {offset}..{} are past the {max_len} the encoding has",
            offset + len
        );
        match self {
            Self::Sinusoidal(table) => {
                let d_model = table.dims()[1];
                table
                    .clone()
                    .slice([offset..offset + len, 0..d_model])
                    .unsqueeze()
            }
            Self::Learned(embedding) => {
                let device = embedding.weight.device();
                let positions = Tensor::arange(offset as i64..(offset + len) as i64, &device);
                embedding.forward(positions.reshape([1, len]))
            }
        }
    }
}

/// The non-linearity inside a [`TransformerBlock`]'s MLP.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MlpActivation {
    /// `GELU(x) = x Phi(x)` with the normal CDF `Phi` (Hendrycks & Gimpel 2016), exactly (to
    /// float rounding): BERT's and ViT's choice.
    Gelu,
    /// `x sigmoid(1.702 x)`, Hendrycks & Gimpel's sigmoid approximation of GELU (CLIP's
    /// "QuickGELU"): within 0.02 of it, and one sigmoid where the exact form needs the normal
    /// CDF (`erf`).
    QuickGelu,
}

impl MlpActivation {
    /// Each is one host pass on the CPU backends (`kernels/src/gelu.rs`), Burn's ops elsewhere.
    fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => pdl_kernels::gelu(x),
            Self::QuickGelu => pdl_kernels::quick_gelu(x),
        }
    }
}

/// Configuration of a [`TransformerBlock`].
#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Hidden width of the MLP (Vaswani et al. use `4 d_model`).
    pub d_ff: usize,
    /// Dropout on the attention weights and on both branches before they join the residual.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The MLP's non-linearity.
    #[config(default = "MlpActivation::Gelu")]
    pub activation: MlpActivation,
}

impl TransformerBlockConfig {
    fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.d_model, self.n_heads).with_dropout(self.dropout)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_ff == 0 {
            return Err("transformer block d_ff must be at least 1".into());
        }
        check_dropout("transformer block", self.dropout)?;
        self.attention().validate()
    }

    /// Builds the block on `device`.
    ///
    /// # Panics
    /// If [`TransformerBlockConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        TransformerBlock {
            norm_attention: LayerNormConfig::new(self.d_model).init(device),
            attention: self.attention().init(device),
            norm_mlp: LayerNormConfig::new(self.d_model).init(device),
            mlp_in: LinearConfig::new(self.d_model, self.d_ff).init(device),
            activation: self.activation,
            mlp_out: LinearConfig::new(self.d_ff, self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// A pre-norm transformer block: `x + Dropout(MHA(LN(x)))`, then `x + Dropout(MLP(LN(x)))` with
/// `MLP(h) = Linear(GELU(Linear(h)))`, `d_model -> d_ff -> d_model` (GELU or its sigmoid
/// approximation: [`MlpActivation`]).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    norm_attention: LayerNorm<B>,
    attention: MultiHeadAttention<B>,
    norm_mlp: LayerNorm<B>,
    mlp_in: Linear<B>,
    activation: MlpActivation,
    mlp_out: Linear<B>,
    dropout: Dropout,
}

impl<B: Backend> TransformerBlock<B> {
    /// Self-attention under `mask` (true: may not look), then the MLP.
    ///
    /// # Shapes
    /// - x: `[batch, seq_len, d_model]`
    /// - mask: `[batch or 1, 1, seq_len, seq_len]`
    /// - output: `[batch, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let h = self.norm_attention.forward(x.clone());
        let x = x + self
            .dropout
            .forward(self.attention.forward(h.clone(), h.clone(), h, mask));
        self.feed_forward(x)
    }

    /// [`Self::forward`] for new tokens after cached ones: see
    /// [`MultiHeadAttention::forward_cached`].
    ///
    /// # Shapes
    /// - x: `[batch, t_new, d_model]`
    /// - output: `[batch, t_new, d_model]`, and the cache with `t_new` more tokens
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        cache: Option<KvCache<B>>,
        causal: bool,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let h = self.norm_attention.forward(x.clone());
        let (attended, cache) = self.attention.forward_cached(h, cache, causal);
        let x = x + self.dropout.forward(attended);
        (self.feed_forward(x), cache)
    }

    fn feed_forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.mlp_in.forward(self.norm_mlp.forward(x.clone())); // [batch, seq_len, d_ff]
        let h = self.mlp_out.forward(self.activation.forward(h)); // [batch, seq_len, d_model]
        x + self.dropout.forward(h)
    }
}

pub(crate) fn blocks<B: Backend>(
    config: &TransformerBlockConfig,
    n_layers: usize,
    device: &B::Device,
) -> Vec<TransformerBlock<B>> {
    (0..n_layers).map(|_| config.init(device)).collect()
}

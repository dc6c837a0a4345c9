//! Transformers built from [`crate::attention`] (Vaswani et al. 2017, "Attention Is All You
//! Need"; d2l.ai ch. 11, "Attention Mechanisms and Transformers").
//!
//! - [`PositionalEncoding`]: attention is blind to order, so each position adds a vector: fixed
//!   sinusoids (Vaswani et al. 2017) or a learned embedding per position (GPT, ViT).
//! - [`TransformerBlock`]: a pre-norm block (GPT-2, Radford et al. 2019; Xiong et al. 2020, "On
//!   Layer Normalization in the Transformer Architecture"), `x + Dropout(MHA(LN(x)))` then
//!   `x + Dropout(MLP(LN(x)))`. Normalising before each branch leaves the residual path an
//!   identity, which trains without the learning-rate warm-up the post-norm original needs.
//! - [`TransformerClassifier`]: an encoder over padded sentences, mean-pooled over the real tokens.
//! - [`CharGpt`]: a decoder-only, causal character language model (GPT, Radford et al. 2018;
//!   Karpathy's nanoGPT) with its output layer tied to the token embedding and KV-cached
//!   generation.
//! - [`Vit`]: the Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"):
//!   image patches as tokens, a class token read out by the head.

use crate::attention::{
    KvCache, MultiHeadAttention, MultiHeadAttentionConfig, causal_mask, padding_mask,
};
use crate::classification::{
    ImageClassifier, check_dropout, classification_output, next_token_output,
};
use crate::sampling::{Sampling, draw_last, ids};
use burn::module::{Initializer, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
    conv::{Conv2d, Conv2dConfig},
};
use burn::prelude::*;
use burn::tensor::module::linear;
use burn::train::ClassificationOutput;
use pdl_datasets::SplitMix64;
use pdl_datasets::text::chars::CharBatch;
use pdl_datasets::text::sst2::SentenceBatch;

/// GPT-2's initialisation of its token and position embeddings, `N(0, 0.02)`.
const GPT_INIT: Initializer = Initializer::Normal {
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
    /// `GELU(x) = x Phi(x)` with the normal CDF `Phi` (Hendrycks & Gimpel 2016), exactly, by
    /// `erf`: BERT's and ViT's choice.
    Gelu,
    /// `x sigmoid(1.702 x)`, Hendrycks & Gimpel's sigmoid approximation of GELU (CLIP's
    /// "QuickGELU"): within 0.02 of it, and one fused sigmoid where the exact form needs `erf`,
    /// whose slow branch for `|x| > 1.25` dominated CPU training time once activations grew.
    QuickGelu,
}

impl MlpActivation {
    fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => burn::tensor::activation::gelu(x),
            Self::QuickGelu => x.clone() * burn::tensor::activation::sigmoid(x * 1.702),
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

fn blocks<B: Backend>(
    config: &TransformerBlockConfig,
    n_layers: usize,
    device: &B::Device,
) -> Vec<TransformerBlock<B>> {
    (0..n_layers).map(|_| config.init(device)).collect()
}

/// Configuration of a [`TransformerClassifier`].
#[derive(Config, Debug)]
pub struct TransformerClassifierConfig {
    /// Words in the vocabulary, `<pad>` and `<unk>` included.
    pub vocab_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Width of the embeddings and the residual stream.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder blocks.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Hidden width of each block's MLP; none: `4 d_model`.
    pub d_ff: Option<usize>,
    /// Dropout on the embeddings, in every block, and before the head.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The longest sentence the positions cover.
    #[config(default = 128)]
    pub max_len: usize,
    /// Sinusoidal or learned positions.
    #[config(default = "PositionalEncodingKind::Sinusoidal")]
    pub positions: PositionalEncodingKind,
}

impl TransformerClassifierConfig {
    fn block(&self) -> TransformerBlockConfig {
        let d_ff = self.d_ff.unwrap_or(4 * self.d_model);
        TransformerBlockConfig::new(self.d_model, self.n_heads, d_ff).with_dropout(self.dropout)
    }

    fn positional(&self) -> PositionalEncodingConfig {
        PositionalEncodingConfig::new(self.d_model, self.max_len).with_kind(self.positions)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.num_classes < 2 || self.n_layers == 0 {
            return Err(
                "vocab_size and n_layers must be at least 1, num_classes at least 2".into(),
            );
        }
        check_dropout("transformer classifier", self.dropout)?;
        self.positional().validate()?;
        self.block().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`TransformerClassifierConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerClassifier<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        TransformerClassifier {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            positions: self.positional().init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks: blocks(&self.block(), self.n_layers, device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.num_classes).init(device),
        }
    }
}

/// A transformer encoder sentence classifier: token embedding + positions, encoder blocks that
/// attend only to real tokens, a final layer norm, the mean over the real tokens, a linear head.
///
/// The embeddings are not multiplied by `sqrt(d_model)` as in Vaswani et al.: there the embedding
/// is shared with the output layer and initialised small, and the factor brings it to the scale of
/// the sinusoids; here it is Burn's `N(0, 1)` embedding, already on the sinusoids' scale (entries
/// in `[-1, 1]`).
#[derive(Module, Debug)]
pub struct TransformerClassifier<B: Backend> {
    embedding: Embedding<B>,
    positions: PositionalEncoding<B>,
    dropout: Dropout,
    blocks: Vec<TransformerBlock<B>>,
    norm: LayerNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> TransformerClassifier<B> {
    /// Class logits for right-padded sentences. Padding is masked out of attention and pooling,
    /// so a sentence gets the same logits alone or padded in a batch.
    ///
    /// # Shapes
    /// - tokens: `[batch, seq_len]`
    /// - mask: `[batch, seq_len]`, true at real tokens (each sentence has at least one)
    /// - output: `[batch, num_classes]`
    ///
    /// # Panics
    /// If `seq_len` is past the configured `max_len`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        let [batch, seq_len] = tokens.dims();
        let x = self.embedding.forward(tokens) + self.positions.forward(0, seq_len);
        let mut x = self.dropout.forward(x); // [batch, seq_len, d_model]
        let attention_mask = padding_mask(mask.clone()); // [batch, 1, 1, seq_len]
        for block in &self.blocks {
            x = block.forward(x, Some(attention_mask.clone()));
        }
        let x = self.norm.forward(x);
        let d_model = x.dims()[2];
        let lengths = mask.clone().int().sum_dim(1).float(); // [batch, 1]
        let padding = mask
            .reshape([batch, seq_len, 1])
            .repeat_dim(2, d_model)
            .bool_not();
        let pooled = x
            .mask_fill(padding, 0.0)
            .sum_dim(1)
            .reshape([batch, d_model])
            / lengths;
        self.head.forward(self.dropout.forward(pooled))
    }

    /// Logits and cross-entropy against the labels.
    pub fn forward_classification(&self, batch: SentenceBatch<B>) -> ClassificationOutput<B> {
        let logits = self.forward(batch.tokens, batch.mask);
        classification_output(logits, batch.targets)
    }

    /// The same as [`Self::forward_classification`]: what a training step minimises.
    pub fn forward_training(&self, batch: SentenceBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

crate::classifier_steps!(
    TransformerClassifier,
    TransformerClassifier,
    pdl_datasets::text::sst2::SentenceBatch
);

/// Configuration of a [`CharGpt`].
#[derive(Config, Debug)]
pub struct CharGptConfig {
    /// Distinct characters.
    pub vocab_size: usize,
    /// The longest context the model reads (its learned positions).
    #[config(default = 128)]
    pub block_size: usize,
    /// Width of the embeddings and the residual stream.
    #[config(default = 192)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 6)]
    pub n_heads: usize,
    /// Decoder blocks.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Hidden width of each block's MLP; none: `4 d_model`.
    pub d_ff: Option<usize>,
    /// Dropout on the embeddings and in every block.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The blocks' MLP non-linearity; none: exact GELU. An `Option` so that runs saved before the
    /// choice existed still load.
    pub activation: Option<MlpActivation>,
}

impl CharGptConfig {
    fn block(&self) -> TransformerBlockConfig {
        let d_ff = self.d_ff.unwrap_or(4 * self.d_model);
        TransformerBlockConfig::new(self.d_model, self.n_heads, d_ff)
            .with_dropout(self.dropout)
            .with_activation(self.activation.unwrap_or(MlpActivation::Gelu))
    }

    fn positional(&self) -> PositionalEncodingConfig {
        PositionalEncodingConfig::new(self.d_model, self.block_size)
            .with_kind(PositionalEncodingKind::Learned)
            .with_initializer(GPT_INIT)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.n_layers == 0 {
            return Err("GPT vocab_size and n_layers must be at least 1".into());
        }
        check_dropout("GPT", self.dropout)?;
        self.positional().validate()?;
        self.block().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`CharGptConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CharGpt<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        CharGpt {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_model)
                .with_initializer(GPT_INIT)
                .init(device),
            positions: self.positional().init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks: blocks(&self.block(), self.n_layers, device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            block_size: self.block_size,
        }
    }
}

/// A decoder-only character transformer (GPT): token embedding + learned positions, causal
/// pre-norm blocks, a final layer norm, and logits against the token embedding itself,
/// `logits = h E^T` (weight tying, Press & Wolf 2017, as in GPT-2): there is no separate output
/// matrix, and the embedding learns from both ends. Embeddings start at `N(0, 0.02)` as in GPT-2,
/// which with tying keeps the first logits near 0 (the loss starts near `ln vocab_size`).
#[derive(Module, Debug)]
pub struct CharGpt<B: Backend> {
    embedding: Embedding<B>,
    positions: PositionalEncoding<B>,
    dropout: Dropout,
    blocks: Vec<TransformerBlock<B>>,
    norm: LayerNorm<B>,
    block_size: usize,
}

impl<B: Backend> CharGpt<B> {
    /// The longest context the model reads.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Next-character logits at every step; step `i` sees only tokens `0..=i`.
    ///
    /// # Shapes
    /// - tokens: `[batch, seq_len]`
    /// - output: `[batch, seq_len, vocab_size]`
    ///
    /// # Panics
    /// If `seq_len > block_size`: there are no positions past it.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let seq_len = tokens.dims()[1];
        self.check_fits(0, seq_len);
        let mut x = self.embed(tokens, 0);
        let mask = causal_mask(seq_len, seq_len, &x.device());
        for block in &self.blocks {
            x = block.forward(x, Some(mask.clone()));
        }
        self.logits(x)
    }

    /// [`Self::forward`] for tokens that follow the ones the per-layer `caches` hold (none: the
    /// start of the text), returning their logits and the caches with them appended.
    ///
    /// # Shapes
    /// - tokens: `[batch, t_new]`
    /// - output: `[batch, t_new, vocab_size]`
    ///
    /// # Panics
    /// If the cached and new tokens together are more than `block_size`.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        caches: Option<Vec<KvCache<B>>>,
    ) -> (Tensor<B, 3>, Vec<KvCache<B>>) {
        let t_new = tokens.dims()[1];
        let offset = caches
            .as_ref()
            .and_then(|c| c.first())
            .map_or(0, KvCache::seq_len);
        self.check_fits(offset, t_new);
        let mut x = self.embed(tokens, offset);
        let mut old = caches.map(Vec::into_iter);
        let mut new = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let cache = old.as_mut().and_then(Iterator::next);
            let (y, cache) = block.forward_cached(x, cache, true);
            x = y;
            new.push(cache);
        }
        (self.logits(x), new)
    }

    /// Cross-entropy of every step's prediction against the next character.
    pub fn forward_classification(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        next_token_output(self.forward(batch.inputs), batch.targets)
    }

    /// The same as [`Self::forward_classification`]: what a training step minimises.
    pub fn forward_training(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }

    /// Continues `prompt` (ids, at least one) by `length` characters drawn with `sampling`
    /// (seeded), with a KV cache per layer: the prompt (its last `block_size` ids) is read once,
    /// then each new character is one query against the caches. Once the context fills
    /// `block_size`, it slides: every step reads its last `block_size` ids in one full pass, as
    /// [`Self::generate_uncached`] does, without caches. The positions are absolute, so a key
    /// cached at position `p` is wrong once its token moves to `p - 1`: no cache survives a slide.
    /// The output equals [`Self::generate_uncached`]'s (up to floating-point rounding in the
    /// logits).
    pub fn generate(
        &self,
        prompt: &[u32],
        length: usize,
        sampling: Sampling,
        seed: u64,
        device: &B::Device,
    ) -> Vec<u32> {
        assert!(
            !prompt.is_empty(),
            "the prompt needs at least one character"
        );
        let mut rng = SplitMix64::new(seed);
        let mut context = prompt.to_vec();
        let (mut logits, mut caches) = self.forward_cached(self.window(&context, device), None);
        let mut cached = context.len().min(self.block_size);
        let mut out = Vec::with_capacity(length);
        while out.len() < length {
            let next = draw_last(logits, &sampling, &mut rng);
            out.push(next);
            context.push(next);
            if out.len() == length {
                break;
            }
            if cached < self.block_size {
                cached += 1;
                (logits, caches) = self.forward_cached(ids(&[next], device), Some(caches));
            } else {
                // The context is full and slides: the caches can never be reused again, and
                // building them would only slow the full pass down.
                logits = self.forward(self.window(&context, device));
            }
        }
        out
    }

    /// [`Self::generate`] without a cache: every step reads the whole context again (its last
    /// `block_size` ids). The reference the cached version is tested and benchmarked against.
    pub fn generate_uncached(
        &self,
        prompt: &[u32],
        length: usize,
        sampling: Sampling,
        seed: u64,
        device: &B::Device,
    ) -> Vec<u32> {
        assert!(
            !prompt.is_empty(),
            "the prompt needs at least one character"
        );
        let mut rng = SplitMix64::new(seed);
        let mut context = prompt.to_vec();
        let mut out = Vec::with_capacity(length);
        while out.len() < length {
            let logits = self.forward(self.window(&context, device));
            let next = draw_last(logits, &sampling, &mut rng);
            out.push(next);
            context.push(next);
        }
        out
    }

    /// The last `block_size` ids of `context`, as a `[1, t]` batch.
    fn window(&self, context: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
        ids(
            &context[context.len().saturating_sub(self.block_size)..],
            device,
        )
    }

    fn check_fits(&self, offset: usize, len: usize) {
        assert!(
            offset + len <= self.block_size,
            "GPT context of {} tokens is longer than its block size {}",
            offset + len,
            self.block_size
        );
    }

    /// Token embeddings plus the positions `offset..`, with dropout.
    fn embed(&self, tokens: Tensor<B, 2, Int>, offset: usize) -> Tensor<B, 3> {
        let len = tokens.dims()[1];
        let x = self.embedding.forward(tokens) + self.positions.forward(offset, len);
        self.dropout.forward(x) // [batch, len, d_model]
    }

    /// The final layer norm, then `h E^T` with the token embedding `E` `[vocab_size, d_model]`.
    fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.norm.forward(x); // [batch, len, d_model]
        linear(h, self.embedding.weight.val().transpose(), None) // [batch, len, vocab_size]
    }
}

crate::classifier_steps!(CharGpt, CharGpt, pdl_datasets::text::chars::CharBatch);

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

impl<B: Backend> Vit<B> {
    /// # Shapes
    /// - images: `[batch, channels, image_size, image_size]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.patches.forward(images); // [batch, d_model, side, side], side = image / patch
        let [batch, d_model, h, w] = x.dims();
        let x = x.reshape([batch, d_model, h * w]).swap_dims(1, 2); // [batch, patches, d_model]
        let class = self.class_token.val().expand([batch, 1, d_model]);
        let x = Tensor::cat(vec![class, x], 1) + self.positions.val(); // [batch, patches + 1, d_model]
        let mut x = self.dropout.forward(x);
        for block in &self.blocks {
            x = block.forward(x, None);
        }
        let class = self
            .norm
            .forward(x)
            .slice([0..batch, 0..1, 0..d_model])
            .reshape([batch, d_model]);
        self.head.forward(class)
    }
}

impl<B: Backend> ImageClassifier<B> for Vit<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

crate::image_classifier_steps!(Vit);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::data::dataloader::batcher::Batcher;
    use burn::module::AutodiffModule;
    use burn::optim::{AdamConfig, Optimizer};
    use burn::tensor::{Distribution, Tolerance};
    use burn::train::TrainStep;
    use pdl_datasets::batcher::ImageBatch;
    use pdl_datasets::text::chars::{CharBatcher, CharWindowDataset};
    use pdl_datasets::text::sst2::{SentenceBatcher, SentenceItem};

    type B = NdArray;
    type AB = Autodiff<NdArray>;

    fn close<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }

    fn tokens(ids: &[i64]) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(ids.to_vec(), [1, ids.len()]),
            &Default::default(),
        )
    }

    #[test]
    fn sinusoids_follow_the_formula() {
        let d = 6;
        let table = sinusoidal_positions::<B>(10, d, &Default::default());
        let values = table.into_data().to_vec::<f32>().unwrap();
        for p in [0usize, 1, 3, 9] {
            for i in 0..d / 2 {
                let angle = p as f64 / 10_000f64.powf(2.0 * i as f64 / d as f64);
                let (sin, cos) = (values[p * d + 2 * i], values[p * d + 2 * i + 1]);
                assert!((sin as f64 - angle.sin()).abs() < 1e-6, "p {p} i {i}");
                assert!((cos as f64 - angle.cos()).abs() < 1e-6, "p {p} i {i}");
            }
        }
        // Position 0 is (0, 1, 0, 1, ...); the sinusoidal encoding has no parameters.
        assert_eq!(&values[..4], &[0.0, 1.0, 0.0, 1.0]);
        let encoding = PositionalEncodingConfig::new(6, 10).init::<B>(&Default::default());
        assert_eq!(encoding.num_params(), 0);
        assert_eq!(encoding.forward(2, 3).dims(), [1, 3, 6]);
    }

    #[test]
    fn learned_positions_are_rows_of_an_embedding() {
        let encoding = PositionalEncodingConfig::new(4, 8)
            .with_kind(PositionalEncodingKind::Learned)
            .init::<B>(&Default::default());
        assert_eq!(encoding.num_params(), 32);
        assert_eq!(encoding.max_len(), 8);
        let all = encoding.forward(0, 8);
        close(encoding.forward(5, 3), all.slice([0..1, 5..8, 0..4]));
    }

    #[test]
    fn classifier_padding_changes_no_logit() {
        let device = Default::default();
        for positions in [
            PositionalEncodingKind::Sinusoidal,
            PositionalEncodingKind::Learned,
        ] {
            let model = TransformerClassifierConfig::new(20, 3)
                .with_d_model(8)
                .with_n_heads(2)
                .with_max_len(8)
                .with_positions(positions)
                .with_dropout(0.0)
                .init::<B>(&device);
            // Sentence 0 is 3 tokens padded to 5 (with non-pad ids, to show the mask rules).
            let tokens =
                Tensor::<B, 2, Int>::from_data([[4, 7, 2, 9, 9], [5, 1, 3, 8, 6]], &device);
            let mask = Tensor::<B, 2, Bool>::from_data(
                [[true, true, true, false, false], [true; 5]],
                &device,
            );
            let batched = model.forward(tokens.clone(), mask);
            assert_eq!(batched.dims(), [2, 3]);
            let alone = model.forward(
                tokens.slice([0..1, 0..3]),
                Tensor::from_data([[true, true, true]], &device),
            );
            close(batched.slice([0..1, 0..3]), alone);
        }
    }

    #[test]
    fn classifier_parameter_count() {
        // SST-2's vocabulary: embedding 14818 x 128; per block two layer norms (2 x 256), four
        // 128 x 128 attention projections with biases, and the MLP 128 -> 512 -> 128; the final
        // norm; the head 128 -> 2. Sinusoidal positions add nothing.
        let model = TransformerClassifierConfig::new(14_818, 2).init::<B>(&Default::default());
        let block = 2 * 256 + 4 * (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128);
        let expected = 14_818 * 128 + 2 * block + 256 + (128 * 2 + 2);
        assert_eq!(model.num_params(), expected);
        assert_eq!(expected, 2_293_762);
    }

    fn small_gpt(block_size: usize) -> CharGpt<B> {
        CharGptConfig::new(11)
            .with_block_size(block_size)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(2)
            .with_dropout(0.0)
            .init(&Default::default())
    }

    #[test]
    fn gpt_a_future_token_never_changes_earlier_logits() {
        let model = small_gpt(8);
        let a = model.forward(tokens(&[1, 4, 2, 9, 3, 0]));
        let b = model.forward(tokens(&[1, 4, 2, 7, 7, 10]));
        assert_eq!(a.dims(), [1, 6, 11]);
        close(a.slice([0..1, 0..3, 0..11]), b.slice([0..1, 0..3, 0..11]));
    }

    #[test]
    fn gpt_reading_in_pieces_with_caches_equals_one_pass() {
        let model = small_gpt(8);
        let text = [3, 1, 4, 1, 5, 9, 2];
        let whole = model.forward(tokens(&text));
        let (first, caches) = model.forward_cached(tokens(&text[..4]), None);
        let (second, caches) = model.forward_cached(tokens(&text[4..5]), Some(caches));
        let (third, caches) = model.forward_cached(tokens(&text[5..]), Some(caches));
        assert_eq!(caches.len(), 2);
        assert_eq!(caches[0].seq_len(), 7);
        close(Tensor::cat(vec![first, second, third], 1), whole);
    }

    #[test]
    fn gpt_greedy_generation_with_the_cache_equals_without_past_the_block_size() {
        let device = Default::default();
        let model = small_gpt(6);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
        };
        for prompt in [&[2u32][..], &[1, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]] {
            let cached = model.generate(prompt, 15, greedy, 0, &device);
            let uncached = model.generate_uncached(prompt, 15, greedy, 0, &device);
            assert_eq!(cached.len(), 15);
            assert_eq!(cached, uncached, "prompt {prompt:?}");
        }
        // Sampling is seeded.
        let warm = Sampling {
            temperature: 1.0,
            top_k: Some(5),
        };
        let a = model.generate(&[4], 10, warm, 3, &device);
        assert_eq!(a, model.generate(&[4], 10, warm, 3, &device));
        assert!(a.iter().all(|&i| i < 11));
    }

    #[test]
    #[should_panic(expected = "longer than its block size")]
    fn gpt_refuses_a_context_past_its_block_size() {
        small_gpt(4).forward(tokens(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn gpt_ties_its_output_layer_to_the_embedding() {
        // Tiny Shakespeare's 65 characters: embedding 65 x 192 and positions 128 x 192; per block
        // two layer norms, four 192 x 192 projections and the MLP 192 -> 768 -> 192; the final
        // norm. No 192 x 65 output matrix.
        let model = CharGptConfig::new(65).init::<B>(&Default::default());
        let block = 2 * 384 + 4 * (192 * 192 + 192) + (192 * 768 + 768) + (768 * 192 + 192);
        let expected = 65 * 192 + 128 * 192 + 4 * block + 384;
        assert_eq!(model.num_params(), expected);
        assert_eq!(expected, 1_816_896);
        // Changing the embedding changes the logits: they are read against it.
        let small = small_gpt(4);
        let before = small.forward(tokens(&[1, 2]));
        let mut bigger = small.clone();
        bigger.embedding.weight = Param::from_tensor(small.embedding.weight.val() * 2.0);
        let after = bigger.forward(tokens(&[1, 2]));
        assert!((after - before).abs().max().into_scalar() > 1e-3);
    }

    #[test]
    fn vit_gives_logits_per_image_and_rejects_a_patch_that_does_not_divide() {
        let device = Default::default();
        let model = VitConfig::mnist().init::<B>(&device);
        let images = Tensor::random([3, 1, 28, 28], Distribution::Default, &device);
        assert_eq!(model.forward(images).dims(), [3, 10]);
        // Patch embedding 49 x 64 + 64, class token, 17 positions, 6 blocks (MLP 64 -> 128 -> 64),
        // final norm, head 64 -> 10.
        let block = 2 * 128 + 4 * (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64);
        let expected = (49 * 64 + 64) + 64 + 17 * 64 + 6 * block + 128 + 650;
        assert_eq!(model.num_params(), expected);
        assert_eq!(expected, 205_962);
        assert!(VitConfig::new().with_patch_size(5).validate().is_err());
        assert!(VitConfig::new().with_n_heads(5).validate().is_err());
        assert!(VitConfig::new().with_patch_size(4).validate().is_ok());
    }

    /// Trains on one fixed batch with Adam; the loss must fall below half its start.
    fn assert_overfits<M, I: Clone>(mut model: M, batch: I, steps: usize, lr: f64)
    where
        M: TrainStep<Input = I, Output = ClassificationOutput<AB>> + AutodiffModule<AB>,
    {
        let mut optim = AdamConfig::new().init();
        let mut losses = Vec::with_capacity(steps);
        for _ in 0..steps {
            let out = model.step(batch.clone());
            losses.push(out.item.loss.clone().into_scalar().elem::<f64>());
            model = optim.step(lr, model, out.grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < first / 2.0,
            "loss went from {first:.4} to {last:.4}: {losses:?}"
        );
    }

    #[test]
    fn classifier_overfits_one_batch() {
        let mut rng = SplitMix64::new(2);
        let items = (0..16)
            .map(|i| SentenceItem {
                tokens: (0..2 + rng.below(6))
                    .map(|_| 2 + rng.below(30) as u32)
                    .collect(),
                label: i % 2,
            })
            .collect();
        let batch = SentenceBatcher { max_len: 16 }.batch(items, &Default::default());
        let model = TransformerClassifierConfig::new(32, 2)
            .with_d_model(32)
            .with_n_layers(1)
            .with_max_len(16)
            .with_dropout(0.0)
            .init::<AB>(&Default::default());
        assert_overfits(model, batch, 40, 3e-3);
    }

    #[test]
    fn gpt_overfits_one_batch() {
        let text: Vec<u32> = (0..200).map(|i| (i * 7 % 13) as u32).collect();
        let windows = CharWindowDataset::random(std::sync::Arc::new(text), 16, 8, 1).unwrap();
        let items = (0..8)
            .map(|i| burn::data::dataset::Dataset::get(&windows, i).unwrap())
            .collect();
        let batch = CharBatcher.batch(items, &Default::default());
        let model = CharGptConfig::new(13)
            .with_block_size(16)
            .with_d_model(32)
            .with_n_heads(4)
            .with_n_layers(2)
            .with_dropout(0.0)
            .init::<AB>(&Default::default());
        assert_overfits(model, batch, 40, 3e-3);
    }

    #[test]
    fn vit_overfits_one_batch() {
        // Ten images, each noise with a bright row at a height given by its class.
        let device = Default::default();
        let mut rng = SplitMix64::new(9);
        let mut pixels = Vec::with_capacity(10 * 28 * 28);
        for label in 0..10 {
            for row in 0..28 {
                for _ in 0..28 {
                    let bright = row == 3 + 2 * label;
                    pixels.push(if bright { 1.0 } else { rng.symmetric(0.2) });
                }
            }
        }
        let batch = ImageBatch {
            images: Tensor::<AB, 4>::from_data(TensorData::new(pixels, [10, 1, 28, 28]), &device),
            targets: Tensor::from_data(
                TensorData::new((0..10i64).collect::<Vec<_>>(), [10]),
                &device,
            ),
        };
        let model = VitConfig::new()
            .with_d_model(32)
            .with_n_layers(2)
            .with_d_ff(64)
            .with_dropout(0.0)
            .init::<AB>(&device);
        assert_overfits(model, batch, 40, 3e-3);
    }
}

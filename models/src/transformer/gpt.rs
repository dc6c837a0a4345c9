//! A decoder-only, causal character language model (GPT, Radford et al. 2018; Karpathy's
//! nanoGPT): token and position embeddings, pre-norm blocks with causal self-attention, the output
//! layer tied to the token embedding, and generation with a KV cache. Experiment
//! `shakespeare-gpt`.

use super::{
    GPT_INIT, MlpActivation, PositionalEncoding, PositionalEncodingConfig, PositionalEncodingKind,
    TransformerBlock, TransformerBlockConfig, blocks,
};
use crate::attention::{KvCache, causal_mask};
use crate::classification::{check_dropout, next_token_output, train_output};
use crate::sampling::{Generate, ids};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::linear;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::text::chars::CharBatch;
use pdl_kernels::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};

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
    pub(super) embedding: Embedding<B>,
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

/// What a [`CharGpt`] carries between generated tokens.
#[derive(Debug)]
pub struct GptContext<B: Backend> {
    /// The prompt and every token drawn since.
    ids: Vec<u32>,
    /// Each layer's keys and values for the whole context, while it fits the block and a cache
    /// was asked for.
    caches: Option<Vec<KvCache<B>>>,
}

/// With a cache, the prompt (its last `block_size` ids) is read once, then each new character is
/// one query against the caches. Once the context fills `block_size`, it slides: every step reads
/// its last `block_size` ids in one full pass, as without a cache. The positions are absolute, so
/// a key cached at position `p` is wrong once its token moves to `p - 1`: no cache survives a
/// slide. Cached and uncached generation agree (up to floating-point rounding in the logits).
impl<B: Backend> Generate<B> for CharGpt<B> {
    type State = GptContext<B>;

    fn read_prompt(
        &self,
        prompt: &[u32],
        cache: bool,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Self::State) {
        let window = self.window(prompt, device);
        let (logits, caches) = match cache {
            true => {
                let (logits, caches) = self.forward_cached(window, None);
                (logits, Some(caches))
            }
            false => (self.forward(window), None),
        };
        let ids = prompt.to_vec();
        (logits, GptContext { ids, caches })
    }

    fn read_next(&self, token: u32, state: &mut Self::State, device: &B::Device) -> Tensor<B, 3> {
        state.ids.push(token);
        match state.caches.take() {
            Some(caches) if state.ids.len() <= self.block_size => {
                let (logits, caches) = self.forward_cached(ids(&[token], device), Some(caches));
                state.caches = Some(caches);
                logits
            }
            // No cache, or the context is full and slides: the caches can never be reused again,
            // and building them would only slow the full pass down.
            _ => self.forward(self.window(&state.ids, device)),
        }
    }
}

impl<B: AutodiffBackend> TrainStep for CharGpt<B> {
    type Input = CharBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: CharBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_training(batch))
    }
}

impl<B: Backend> InferenceStep for CharGpt<B> {
    type Input = CharBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

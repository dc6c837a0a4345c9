//! A Transformer encoder that classifies padded sentences: token embeddings plus positions,
//! pre-norm blocks that attend only to the real tokens, the outputs mean-pooled over them, a
//! linear head. Experiment `sst2-transformer`.

use super::{
    PositionalEncoding, PositionalEncodingConfig, PositionalEncodingKind, TransformerBlock,
    TransformerBlockConfig, blocks,
};
use crate::attention::padding_mask;
use crate::classification::{SentenceClassifier, check_dropout, train_output};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::text::sst2::SentenceBatch;
use pdl_kernels::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};

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
    /// The shape of the encoder and its vocabulary, e.g. "2 blocks of 128 (4 heads, MLP 512),
    /// 128 Sinusoidal positions, 14816 words", as errors about mismatched encoders name it.
    pub fn shape(&self) -> String {
        format!(
            "{} blocks of {} ({} heads, MLP {}), {} {:?} positions, {} words",
            self.n_layers,
            self.d_model,
            self.n_heads,
            self.d_ff.unwrap_or(4 * self.d_model),
            self.max_len,
            self.positions,
            self.vocab_size
        )
    }

    /// Whether an encoder of `other`'s config has this one's parameters, shape for shape (the
    /// classes and dropout aside).
    pub fn same_encoder(&self, other: &Self) -> bool {
        let encoder = |c: &Self| {
            let (d_ff, kind) = (c.d_ff.unwrap_or(4 * c.d_model), c.positions);
            (
                c.vocab_size,
                c.d_model,
                c.n_heads,
                c.n_layers,
                d_ff,
                c.max_len,
                kind,
            )
        };
        encoder(self) == encoder(other)
    }
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
        let x = self.encode(tokens, mask.clone()); // [batch, seq_len, d_model]
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

    /// The encoder's output at every place, before pooling and the head: what a masked language
    /// model ([`super::MaskedLanguageModel`]) reads its guesses from.
    ///
    /// # Shapes
    /// - tokens, mask: `[batch, seq_len]`, as for [`TransformerClassifier::forward`]
    /// - output: `[batch, seq_len, d_model]`, after the final layer norm
    pub fn encode(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let seq_len = tokens.dims()[1];
        let x = self.embedding.forward(tokens) + self.positions.forward(0, seq_len);
        let mut x = self.dropout.forward(x); // [batch, seq_len, d_model]
        let attention_mask = padding_mask(mask); // [batch, 1, 1, seq_len]
        for block in &self.blocks {
            x = block.forward(x, Some(attention_mask.clone()));
        }
        self.norm.forward(x)
    }

    /// This classifier's head on `pretrained`'s encoder (embeddings, positions, blocks, final
    /// norm): how a pre-trained encoder starts fine-tuning. The head is this model's, freshly
    /// drawn: pre-training never trains one. The dropout rates stay this model's config's.
    pub fn with_encoder_of(self, pretrained: Self) -> Self {
        let head = self.head.clone();
        Self {
            head,
            ..self.load_record(pretrained.into_record())
        }
    }

    /// The token embeddings, `[vocab_size, d_model]`.
    pub(crate) fn token_embeddings(&self) -> Tensor<B, 2> {
        self.embedding.weight.val()
    }
}

impl<B: Backend> SentenceClassifier<B> for TransformerClassifier<B> {
    fn logits(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        self.forward(tokens, mask)
    }
}

impl<B: AutodiffBackend> TrainStep for TransformerClassifier<B> {
    type Input = SentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: SentenceBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for TransformerClassifier<B> {
    type Input = SentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: SentenceBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

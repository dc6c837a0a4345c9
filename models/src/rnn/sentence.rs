//! A sentence classifier: embedding -> (bidirectional) recurrent stack -> pooled over the real
//! tokens -> classes. Batches are right-padded; the mask keeps padding out of everything: the
//! backward direction starts at each sentence's last real token, and pooling ignores padded steps,
//! so a sentence gets the same logits alone or padded in a batch.

use super::layers::{CellKind, CellSource, Recurrent, RecurrentConfig};
use crate::classification::{SentenceClassifier, check_dropout, train_output};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::text::sst2::SentenceBatch;
use pdl_kernels::{Linear, LinearConfig};

/// How the per-step outputs become one vector per sentence.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Element-wise maximum over the real steps (Conneau et al. 2017, InferSent).
    Max,
    /// Mean over the real steps.
    Mean,
    /// The final hidden states: forward at the last real token, backward at the first.
    Last,
}

/// Configuration of a [`SentenceRnn`].
#[derive(Config, Debug)]
pub struct SentenceRnnConfig {
    /// Words in the vocabulary, `<pad>` and `<unk>` included.
    pub vocab_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Width of each word's embedding.
    #[config(default = 128)]
    pub d_embed: usize,
    /// Hidden width of each direction.
    #[config(default = 128)]
    pub d_hidden: usize,
    /// The cell.
    #[config(default = "CellKind::Lstm")]
    pub cell: CellKind,
    /// Scratch cells or Burn's.
    #[config(default = "CellSource::Scratch")]
    pub source: CellSource,
    /// Stacked layers.
    #[config(default = 1)]
    pub num_layers: usize,
    /// Read each sentence in both directions.
    #[config(default = true)]
    pub bidirectional: bool,
    /// Pooling over steps.
    #[config(default = "Pooling::Max")]
    pub pooling: Pooling,
    /// Dropout on the embeddings, between layers, and before the output layer.
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl SentenceRnnConfig {
    fn recurrent(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.d_embed, self.d_hidden)
            .with_cell(self.cell)
            .with_source(self.source)
            .with_num_layers(self.num_layers)
            .with_bidirectional(self.bidirectional)
            .with_dropout(self.dropout)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.d_embed == 0 || self.num_classes < 2 {
            return Err("vocab_size and d_embed must be at least 1, num_classes at least 2".into());
        }
        check_dropout("sentence model", self.dropout)?;
        self.recurrent().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`SentenceRnnConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SentenceRnn<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let recurrent = self.recurrent();
        SentenceRnn {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_embed).init(device),
            rnn: recurrent.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(recurrent.d_output(), self.num_classes).init(device),
            pooling: self.pooling,
        }
    }
}

/// Embedding, recurrent stack, masked pooling, linear head.
#[derive(Module, Debug)]
pub struct SentenceRnn<B: Backend> {
    embedding: Embedding<B>,
    rnn: Recurrent<B>,
    dropout: Dropout,
    head: Linear<B>,
    pooling: Pooling,
}

impl<B: Backend> SentenceRnn<B> {
    /// Class logits for right-padded sentences.
    ///
    /// # Shapes
    /// - tokens: `[batch, seq_len]`
    /// - mask: `[batch, seq_len]`, true at real tokens (each sentence has at least one)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        let [batch, seq_len] = tokens.dims();
        let lengths = mask.clone().int().sum_dim(1).reshape([batch]);
        let x = self.dropout.forward(self.embedding.forward(tokens));
        let out = self.rnn.forward_with(x, None, Some(lengths.clone()));
        let d = out.outputs.dims()[2];
        let real = mask.reshape([batch, seq_len, 1]).repeat_dim(2, d);
        let pooled = match self.pooling {
            Pooling::Max => out
                .outputs
                .mask_fill(real.bool_not(), f32::NEG_INFINITY)
                .max_dim(1)
                .reshape([batch, d]),
            Pooling::Mean => {
                let sum = out.outputs.mask_fill(real.bool_not(), 0.0).sum_dim(1);
                sum.reshape([batch, d]) / lengths.float().reshape([batch, 1])
            }
            Pooling::Last => out.last,
        };
        self.head.forward(self.dropout.forward(pooled))
    }
}

impl<B: Backend> SentenceClassifier<B> for SentenceRnn<B> {
    fn logits(&self, tokens: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
        self.forward(tokens, mask)
    }
}

impl<B: AutodiffBackend> TrainStep for SentenceRnn<B> {
    type Input = SentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: SentenceBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_classification(batch))
    }
}

impl<B: Backend> InferenceStep for SentenceRnn<B> {
    type Input = SentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: SentenceBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::tensor::Tolerance;

    #[test]
    fn padding_changes_no_logit_whatever_the_pooling() {
        let device = Default::default();
        for pooling in [Pooling::Max, Pooling::Mean, Pooling::Last] {
            let model = SentenceRnnConfig::new(20, 3)
                .with_d_embed(6)
                .with_d_hidden(5)
                .with_num_layers(2)
                .with_pooling(pooling)
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
            let alone = model.forward(
                tokens.slice([0..1, 0..3]),
                Tensor::from_data([[true, true, true]], &device),
            );
            batched
                .slice([0..1, 0..3])
                .into_data()
                .assert_approx_eq::<f32>(&alone.into_data(), Tolerance::absolute(1e-5));
        }
    }
}

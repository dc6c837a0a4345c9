//! A character-level language model (Karpathy 2015, "The Unreasonable Effectiveness of Recurrent
//! Neural Networks"): embedding -> recurrent stack -> logits over the vocabulary at every step,
//! trained to predict each next character. Generation feeds its own samples back one step at a
//! time, carrying the recurrent state across calls so each step costs one cell update.

use super::layers::{CellKind, CellSource, LayerState, Recurrent, RecurrentConfig};
use crate::classification::{check_dropout, next_token_output, train_output};
use crate::sampling::{Generate, ids};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::text::chars::CharBatch;
use pdl_kernels::{Linear, LinearConfig};

/// Configuration of a [`CharRnn`].
#[derive(Config, Debug)]
pub struct CharRnnConfig {
    /// Distinct characters.
    pub vocab_size: usize,
    /// Width of each character's embedding.
    #[config(default = 64)]
    pub d_embed: usize,
    /// Hidden width of each layer.
    #[config(default = 512)]
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
    /// Dropout between layers and before the output layer.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl CharRnnConfig {
    fn recurrent(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.d_embed, self.d_hidden)
            .with_cell(self.cell)
            .with_source(self.source)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.d_embed == 0 {
            return Err("vocab_size and d_embed must be at least 1".into());
        }
        check_dropout("language model", self.dropout)?;
        self.recurrent().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`CharRnnConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CharRnn<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        CharRnn {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_embed).init(device),
            rnn: self.recurrent().init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(self.d_hidden, self.vocab_size).init(device),
        }
    }
}

/// Embedding, recurrent stack, and a linear map to the vocabulary at every step.
#[derive(Module, Debug)]
pub struct CharRnn<B: Backend> {
    embedding: Embedding<B>,
    rnn: Recurrent<B>,
    dropout: Dropout,
    head: Linear<B>,
}

impl<B: Backend> CharRnn<B> {
    /// Next-character logits at every step, starting from `states` (zeros if none), and the states
    /// to continue from.
    ///
    /// # Shapes
    /// - tokens: `[batch, seq_len]`
    /// - output: `[batch, seq_len, vocab_size]`
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        states: Option<Vec<LayerState<B>>>,
    ) -> (Tensor<B, 3>, Vec<LayerState<B>>) {
        let x = self.embedding.forward(tokens); // [batch, seq_len, d_embed]
        let out = self.rnn.forward_with(x, states, None);
        let logits = self.head.forward(self.dropout.forward(out.outputs));
        (logits, out.states)
    }

    /// Cross-entropy of every step's prediction against the next character.
    pub fn forward_classification(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        let (logits, _) = self.forward(batch.inputs, None);
        next_token_output(logits, batch.targets)
    }

    /// The same as [`Self::forward_classification`]: what a training step minimises.
    pub fn forward_training(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

/// The prompt is read in one call; each new character is then one step from the carried state.
impl<B: Backend> Generate<B> for CharRnn<B> {
    type State = Vec<LayerState<B>>;

    fn read_prompt(
        &self,
        prompt: &[u32],
        _cache: bool,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Self::State) {
        self.forward(ids(prompt, device), None)
    }

    fn read_next(&self, token: u32, state: &mut Self::State, device: &B::Device) -> Tensor<B, 3> {
        let (logits, next) = self.forward(ids(&[token], device), Some(std::mem::take(state)));
        *state = next;
        logits
    }
}

impl<B: AutodiffBackend> TrainStep for CharRnn<B> {
    type Input = CharBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: CharBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_training(batch))
    }
}

impl<B: Backend> InferenceStep for CharRnn<B> {
    type Input = CharBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: CharBatch<B>) -> ClassificationOutput<B> {
        self.forward_classification(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use crate::sampling::Sampling;
    use burn::tensor::Tolerance;

    #[test]
    fn logits_cover_every_step_and_carried_state_continues_the_text() {
        let device = Default::default();
        let model = CharRnnConfig::new(11)
            .with_d_hidden(16)
            .with_num_layers(2)
            .init::<B>(&device);
        let tokens = Tensor::<B, 2, Int>::from_data([[1, 4, 2, 9, 3, 0]], &device);
        let (whole, _) = model.forward(tokens.clone(), None);
        assert_eq!(whole.dims(), [1, 6, 11]);
        let (_, states) = model.forward(tokens.clone().slice([0..1, 0..4]), None);
        let (rest, _) = model.forward(tokens.slice([0..1, 4..6]), Some(states));
        rest.into_data().assert_approx_eq::<f32>(
            &whole.slice([0..1, 4..6, 0..11]).into_data(),
            Tolerance::absolute(1e-5),
        );
    }

    #[test]
    fn generation_is_seeded_and_greedy_generation_follows_the_logits() {
        let device = Default::default();
        let model = CharRnnConfig::new(7).with_d_hidden(8).init::<B>(&device);
        let warm = Sampling {
            temperature: 1.0,
            top_k: None,
        };
        let a = model.generate(&[1, 2], 12, warm, 5, true, &device);
        assert_eq!(a, model.generate(&[1, 2], 12, warm, 5, true, &device));
        assert_eq!(a.len(), 12);
        assert!(a.iter().all(|&i| i < 7));
        // Greedy: each id is the argmax of the logits after the prompt plus what came before.
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
        };
        let text = model.generate(&[3], 5, greedy, 0, true, &device);
        let mut seq = vec![3i64];
        for &next in &text {
            let t = seq.len();
            let input =
                Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, t]), &device);
            let (logits, _) = model.forward(input, None);
            let best = logits.slice([0..1, t - 1..t, 0..7]).argmax(2).into_scalar();
            assert_eq!(best as u32, next);
            seq.push(next as i64);
        }
    }
}

//! A masked language model (BERT, Devlin et al. 2019, section 3.1): the sentence classifier's
//! Transformer encoder reads sentences with some words hidden and guesses each hidden word from
//! both sides of its context. No label is involved, so any text can teach it; the encoder it
//! leaves is then fine-tuned as a classifier. Experiment `sst2-pretrain`, then `sst2-finetune`.
//!
//! The guesses come from the encoder's output at the hidden places, multiplied by the token
//! embeddings (the output layer is tied to the input one, as in BERT and the course's GPT) plus a
//! bias per word. BERT puts a dense layer, GELU and layer norm between the two; this encoder
//! already ends in a layer norm, and the bare product trains as well here with fewer parts. The
//! product is divided by `sqrt(d_model)`, as attention's scores are: the embeddings start as
//! `N(0, 1)` (Burn's default, which the classifier's scale relies on) and the layer-normed outputs
//! have unit entries, so the bare product would start with logits of standard deviation
//! `sqrt(d_model)` (about 11) and a loss near 40 nats instead of `ln(vocab_size)`. The loss is the
//! cross-entropy over the hidden places only: the others are copied, not guessed.

use super::{TransformerClassifier, TransformerClassifierConfig};
use crate::classification::{classification_output, train_output};
use burn::module::Initializer;
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::linear;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::text::masked::MaskedSentenceBatch;

/// Configuration of a [`MaskedLanguageModel`].
#[derive(Config, Debug)]
pub struct MaskedLanguageModelConfig {
    /// The encoder: `sst2-transformer`'s classifier, whose head the pre-training leaves untrained.
    pub encoder: TransformerClassifierConfig,
    /// Share of each sentence's words hidden (at least one per sentence).
    #[config(default = 0.15)]
    pub mask_ratio: f64,
}

impl MaskedLanguageModelConfig {
    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(format!(
                "mask_ratio must be in (0, 1), got {}",
                self.mask_ratio
            ));
        }
        self.encoder.validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`MaskedLanguageModelConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MaskedLanguageModel<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let vocab = self.encoder.vocab_size;
        MaskedLanguageModel {
            encoder: self.encoder.init(device),
            bias: Initializer::Zeros.init([vocab], device),
        }
    }
}

/// The encoder of a [`TransformerClassifier`] with an output layer over the vocabulary, tied to
/// its token embeddings.
#[derive(Module, Debug)]
pub struct MaskedLanguageModel<B: Backend> {
    /// The encoder (its pooling and head are not used here).
    pub encoder: TransformerClassifier<B>,
    /// The output layer's bias, one per word.
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> MaskedLanguageModel<B> {
    /// The logits of the hidden words.
    ///
    /// # Shapes
    /// - tokens, mask: `[batch, seq_len]`, the hidden words already replaced
    /// - hidden: `[n]`, places in the flattened `[batch * seq_len]` tokens
    /// - output: `[n, vocab_size]`
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Bool>,
        hidden: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        let [batch, seq_len] = tokens.dims();
        let h = self.encoder.encode(tokens, mask); // [batch, seq_len, d_model]
        let d_model = h.dims()[2];
        let h = h.reshape([batch * seq_len, d_model]).select(0, hidden); // [n, d_model]
        let embeddings = self.encoder.token_embeddings(); // [vocab_size, d_model]
        let h = h / (d_model as f64).sqrt();
        linear(h, embeddings.transpose(), Some(self.bias.val()))
    }

    /// The cross-entropy of the hidden words; its accuracy is the share guessed right.
    pub fn forward_masked(&self, batch: MaskedSentenceBatch<B>) -> ClassificationOutput<B> {
        let logits = self.forward(batch.tokens, batch.mask, batch.hidden);
        classification_output(logits, batch.targets)
    }
}

impl<B: AutodiffBackend> TrainStep for MaskedLanguageModel<B> {
    type Input = MaskedSentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: MaskedSentenceBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        train_output(self, self.forward_masked(batch))
    }
}

impl<B: Backend> InferenceStep for MaskedLanguageModel<B> {
    type Input = MaskedSentenceBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: MaskedSentenceBatch<B>) -> ClassificationOutput<B> {
        self.forward_masked(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::backend::Autodiff;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::{TensorData, Tolerance};

    fn config() -> MaskedLanguageModelConfig {
        let encoder = TransformerClassifierConfig::new(20, 2)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(1)
            .with_dropout(0.0)
            .with_max_len(8);
        MaskedLanguageModelConfig::new(encoder)
    }

    fn int<const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<B, D, Int> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn batch() -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>, Tensor<B, 1, Int>) {
        let tokens = int(vec![3, 1, 5, 0, 7, 8, 1, 9], [2, 4]);
        let mask = Tensor::from_data(
            TensorData::new(
                vec![true, true, true, false, true, true, true, true],
                [2, 4],
            ),
            &Default::default(),
        );
        (tokens, mask, int(vec![1, 6], [2]))
    }

    #[test]
    fn logits_are_the_hidden_places_outputs_times_the_embeddings() {
        let device = Default::default();
        let model = config().init::<B>(&device);
        let (tokens, mask, hidden) = batch();
        let logits = model.forward(tokens.clone(), mask.clone(), hidden);
        assert_eq!(logits.dims(), [2, 20]);
        let h = model.encoder.encode(tokens, mask); // [2, 4, 16]
        let e = model.encoder.token_embeddings();
        for (k, (row, place)) in [(0usize, 1usize), (1, 2)].into_iter().enumerate() {
            let out = h
                .clone()
                .slice([row..row + 1, place..place + 1])
                .reshape([1, 16]);
            // The bias starts at zero.
            let direct = out.matmul(e.clone().transpose()) / 4.0; // sqrt(d_model = 16)
            logits
                .clone()
                .narrow(0, k, 1)
                .into_data()
                .assert_approx_eq::<f32>(&direct.into_data(), Tolerance::default());
        }
    }

    #[test]
    fn a_training_step_lowers_the_loss_of_the_hidden_words() {
        type A = Autodiff<B>;
        let device = Default::default();
        let mut model = config().init::<A>(&device);
        let (tokens, mask, hidden) = batch();
        let to_a = |t: Tensor<B, 2, Int>| Tensor::<A, 2, Int>::from_data(t.into_data(), &device);
        let make = || MaskedSentenceBatch::<A> {
            tokens: to_a(tokens.clone()),
            mask: Tensor::from_data(mask.clone().into_data(), &device),
            hidden: Tensor::from_data(hidden.clone().into_data(), &device),
            targets: Tensor::from_data(TensorData::new(vec![4i64, 11], [2]), &device),
        };
        let loss =
            |m: &MaskedLanguageModel<A>| m.forward_masked(make()).loss.into_scalar().to_f64();
        let before = loss(&model);
        let mut optim = AdamConfig::new().init();
        for _ in 0..5 {
            let grads = model.forward_masked(make()).loss.backward();
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(1e-2, model, grads);
        }
        assert!(loss(&model) < before - 0.1, "{before} -> {}", loss(&model));
    }

    #[test]
    fn fine_tuning_takes_the_pretrained_encoder_and_keeps_its_own_head() {
        let device = Default::default();
        let pretrained = config().init::<B>(&device).encoder;
        let fresh = config().encoder.with_dropout(0.3).init::<B>(&device);
        let (tokens, mask, _) = batch();
        // Burn draws a parameter on its first use, and a clone of a model that has not run yet
        // draws its own: run both before cloning them.
        for model in [&pretrained, &fresh] {
            drop(model.forward(tokens.clone(), mask.clone()));
        }
        let tuned = fresh.clone().with_encoder_of(pretrained.clone());
        tuned
            .encode(tokens.clone(), mask.clone())
            .into_data()
            .assert_eq(&pretrained.encode(tokens, mask).into_data(), true);
        let head = |m: TransformerClassifier<B>| m.into_record().head.weight.val().into_data();
        head(tuned.clone()).assert_eq(&head(fresh), true);
        assert_ne!(head(tuned.clone()), head(pretrained));
        // The dropout rate is the fine-tuning config's.
        assert!(format!("{tuned}").contains("prob: 0.3"), "{tuned}");
    }
}

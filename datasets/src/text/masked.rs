//! Masked-language-model batches (BERT, Devlin et al. 2019): sentences with some words hidden,
//! and which words the model must give back.
//!
//! Each sentence hides `max(1, round(ratio x length))` of its words, drawn at random. As in BERT,
//! a hidden word is replaced by the mask token 80% of the time, by a random word 10% of the time,
//! and left as it is 10% of the time, so the model cannot learn that only the mask token needs
//! predicting. The mask token here is `<unk>` ([`UNK`]): with `min_count` 1 the training text never
//! holds it, and a classifier fine-tuned from the encoder later meets it exactly where a word was
//! never seen in training, which is what it stood for while pre-training: a word to infer from
//! its context.

use super::sst2::{SentenceItem, UNK, pad};
use crate::batcher::Draws;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::TensorData;

/// A batch of sentences with hidden words.
#[derive(Debug, Clone)]
pub struct MaskedSentenceBatch<B: Backend> {
    /// Word ids after hiding, `[batch, len]`, `<pad>` after the end of each sentence.
    pub tokens: Tensor<B, 2, Int>,
    /// `[batch, len]`: true at a real token, false at padding.
    pub mask: Tensor<B, 2, Bool>,
    /// The hidden places, as indices into the flattened `[batch * len]` tokens: `[hidden]`.
    pub hidden: Tensor<B, 1, Int>,
    /// The original word at each hidden place: `[hidden]`.
    pub targets: Tensor<B, 1, Int>,
}

/// Pads sentences as [`super::sst2::SentenceBatcher`] does ([`pad`]) and hides a share of each one's words.
/// In training, the hidden words are drawn anew in every batch (from the seed and the batch count);
/// [`MaskedSentenceBatcher::same_masks_every_time`] draws them from the seed and the sentence's own
/// words instead, so valid and test losses compare across epochs.
#[derive(Debug)]
pub struct MaskedSentenceBatcher {
    max_len: usize,
    vocab_size: usize,
    ratio: f64,
    draws: Draws,
    per_sentence: bool,
}

impl MaskedSentenceBatcher {
    /// Hides `ratio` of each sentence's words (at least one), cut to `max_len` tokens; random
    /// replacements are drawn among the `vocab_size` ids past `<pad>` and `<unk>`.
    pub fn new(max_len: usize, vocab_size: usize, ratio: f64, seed: u64) -> Self {
        Self {
            max_len: max_len.max(1),
            vocab_size,
            ratio,
            draws: Draws::new(seed),
            per_sentence: false,
        }
    }

    /// Hides the same words of a sentence on every pass (for evaluation).
    pub fn same_masks_every_time(mut self) -> Self {
        self.per_sentence = true;
        self
    }

    /// How many of a sentence's `len` words are hidden.
    pub fn hidden_count(&self, len: usize) -> usize {
        ((self.ratio * len as f64).round() as usize).clamp(1, len.max(1))
    }
}

impl<B: Backend> Batcher<B, SentenceItem, MaskedSentenceBatch<B>> for MaskedSentenceBatcher {
    fn batch(&self, items: Vec<SentenceItem>, device: &B::Device) -> MaskedSentenceBatch<B> {
        let batch = items.len();
        let (len, mut tokens, mask) = pad(&items, self.max_len);
        let (mut hidden, mut targets) = (Vec::new(), Vec::new());
        let mut batch_rng = self.draws.next_batch();
        let (mut words, mut places) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for (row, item) in items.iter().enumerate() {
            let at = row * len;
            // The row's real tokens, as padded: a lone `<unk>` for an empty sentence.
            words.clear();
            words.extend_from_slice(&tokens[at..at + item.tokens.len().clamp(1, len)]);
            let mut own_rng;
            let rng = match self.per_sentence {
                true => {
                    own_rng = self.draws.of_tokens(&words);
                    &mut own_rng
                }
                false => &mut batch_rng,
            };
            // A partial Fisher-Yates shuffle: the first `k` places are a uniform draw of `k`.
            places.clear();
            places.extend(0..words.len());
            let k = self.hidden_count(words.len());
            for i in 0..k {
                let j = i + rng.below(words.len() - i);
                places.swap(i, j);
            }
            for &place in &places[..k] {
                hidden.push((at + place) as i64);
                targets.push(words[place]);
                let roll = rng.next_f32();
                if roll < 0.8 {
                    tokens[at + place] = i64::from(UNK);
                } else if roll < 0.9 && self.vocab_size > 2 {
                    tokens[at + place] = (2 + rng.below(self.vocab_size - 2)) as i64;
                }
            }
        }
        let n = hidden.len();
        MaskedSentenceBatch {
            tokens: Tensor::from_data(TensorData::new(tokens, [batch, len]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, len]), device),
            hidden: Tensor::from_data(TensorData::new(hidden, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    fn item(tokens: &[u32]) -> SentenceItem {
        SentenceItem {
            tokens: tokens.to_vec(),
            label: 0,
        }
    }

    fn host(x: Tensor<B, 1, Int>) -> Vec<i64> {
        x.into_data().convert::<i64>().to_vec().unwrap()
    }

    fn sentences() -> Vec<SentenceItem> {
        (0..40)
            .map(|i| {
                item(
                    &(0..3 + i % 9)
                        .map(|j| 2 + (7 * i + j) % 50)
                        .collect::<Vec<_>>(),
                )
            })
            .collect()
    }

    #[test]
    fn each_sentence_hides_its_share_and_the_targets_are_its_words() {
        let batcher = MaskedSentenceBatcher::new(64, 60, 0.15, 7);
        let items = sentences();
        let b: MaskedSentenceBatch<B> = batcher.batch(items.clone(), &Default::default());
        let [rows, len] = b.tokens.dims();
        assert_eq!(rows, items.len());
        let (hidden, targets) = (host(b.hidden), host(b.targets));
        let tokens = host(b.tokens.reshape([rows * len]));
        let mut replaced = 0;
        for (row, it) in items.iter().enumerate() {
            let here: Vec<usize> = hidden
                .iter()
                .enumerate()
                .filter(|&(_, &h)| h as usize / len == row)
                .map(|(k, _)| k)
                .collect();
            assert_eq!(here.len(), batcher.hidden_count(it.tokens.len()));
            for k in here {
                let place = hidden[k] as usize % len;
                assert_eq!(targets[k], i64::from(it.tokens[place]));
                replaced += (tokens[hidden[k] as usize] == i64::from(UNK)) as usize;
            }
            // Words not hidden are untouched.
            for (i, &w) in it.tokens.iter().enumerate() {
                if !hidden.contains(&((row * len + i) as i64)) {
                    assert_eq!(tokens[row * len + i], i64::from(w));
                }
            }
        }
        // About 80% of the hidden words become the mask token.
        let share = replaced as f64 / hidden.len() as f64;
        assert!((0.6..0.95).contains(&share), "{share}");
        assert_eq!(batcher.hidden_count(1), 1);
        assert_eq!(batcher.hidden_count(20), 3);
    }

    #[test]
    fn training_draws_change_per_batch_and_evaluation_draws_do_not() {
        let device = Default::default();
        let items = sentences();
        let train = MaskedSentenceBatcher::new(64, 60, 0.15, 7);
        let first: MaskedSentenceBatch<B> = train.batch(items.clone(), &device);
        let second: MaskedSentenceBatch<B> = train.batch(items.clone(), &device);
        assert_ne!(host(first.hidden), host(second.hidden));
        let eval = MaskedSentenceBatcher::new(64, 60, 0.15, 7).same_masks_every_time();
        let once: MaskedSentenceBatch<B> = eval.batch(items.clone(), &device);
        let again: MaskedSentenceBatch<B> = eval.batch(items.clone(), &device);
        assert_eq!(host(once.hidden.clone()), host(again.hidden));
        // A sentence hides the same words whatever batch it is in.
        let alone: MaskedSentenceBatch<B> = eval.batch(vec![items[5].clone()], &device);
        let len = once.tokens.dims()[1];
        let of_five: Vec<i64> = host(once.hidden)
            .into_iter()
            .filter(|&h| h as usize / len == 5)
            .map(|h| h % len as i64)
            .collect();
        assert_eq!(host(alone.hidden), of_five);
    }
}

//! Drawing the next token from a language model's logits: temperature and top-k, seeded, as
//! Karpathy's char-rnn and nanoGPT's `sample.py` do.

use burn::prelude::*;
use pdl_datasets::SplitMix64;

/// `ids` as a `[1, len]` batch, for a language model to read.
pub fn ids<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Draws the next id from the last step of `[1, t, vocab]` logits.
pub fn draw_last<B: Backend>(
    logits: Tensor<B, 3>,
    sampling: &Sampling,
    rng: &mut SplitMix64,
) -> u32 {
    let [_, t, v] = logits.dims();
    let last = logits
        .slice([0..1, t - 1..t, 0..v])
        .into_data()
        .convert::<f32>();
    sampling.draw(&last.to_vec::<f32>().expect("f32 logits"), rng) as u32
}

/// How to draw tokens.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 always takes
    /// the most likely token.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (none: all).
    pub top_k: Option<usize>,
}

impl Sampling {
    /// Checks the temperature (finite, >= 0) and `k` (>= 1).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be a number >= 0, got {}",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return Err("top-k must be at least 1".into());
        }
        Ok(())
    }

    /// Draws an index from `logits` (one per token).
    pub fn draw(&self, logits: &[f32], rng: &mut SplitMix64) -> usize {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        };
        if self.temperature == 0.0 {
            return argmax();
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if let Some(k) = self.top_k.filter(|&k| k < logits.len()) {
            order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            order.truncate(k);
        }
        let max = order
            .iter()
            .map(|&i| logits[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i] - max) / self.temperature) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return argmax();
        }
        let mut u = rng.next_f32() as f64 * total;
        for (&i, w) in order.iter().zip(&weights) {
            if u < *w {
                return i;
            }
            u -= w;
        }
        *order.last().expect("at least one token")
    }
}

/// A character language model that continues a prompt: what `pdl generate` asks of a model, so
/// that it loads any of them the same way. A model says how it reads the prompt and how it reads
/// one more token; the loop that draws and feeds back is [`Generate::generate`], written once.
pub trait Generate<B: Backend> {
    /// What the model carries from one token to the next: a recurrent model's state, a
    /// Transformer's context and key/value caches.
    type State;

    /// Reads `prompt` (at least one id): the logits `[1, t, vocab]` and the state after it. With
    /// `cache`, later steps reuse what earlier ones computed (a Transformer's keys and values);
    /// without it, a Transformer reads its whole context again at every step, to measure what the
    /// cache saves. A recurrent model always carries its state.
    fn read_prompt(
        &self,
        prompt: &[u32],
        cache: bool,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Self::State);

    /// Reads `token` after what `state` holds: logits whose last step predicts the next token.
    fn read_next(&self, token: u32, state: &mut Self::State, device: &B::Device) -> Tensor<B, 3>;

    /// The `length` ids drawn after `prompt` with `sampling`, seeded by `seed`, each fed back
    /// as the next input (see [`Generate::read_prompt`] for `cache`).
    ///
    /// # Panics
    /// If `prompt` is empty.
    fn generate(
        &self,
        prompt: &[u32],
        length: usize,
        sampling: Sampling,
        seed: u64,
        cache: bool,
        device: &B::Device,
    ) -> Vec<u32> {
        assert!(
            !prompt.is_empty(),
            "the prompt needs at least one character"
        );
        let mut out = Vec::with_capacity(length);
        if length == 0 {
            return out;
        }
        let mut rng = SplitMix64::new(seed);
        let (mut logits, mut state) = self.read_prompt(prompt, cache, device);
        loop {
            let next = draw_last(logits, &sampling, &mut rng);
            out.push(next);
            if out.len() >= length {
                return out;
            }
            logits = self.read_next(next, &mut state, device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_is_argmax_and_top_1_too() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut rng = SplitMix64::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
        };
        let top1 = Sampling {
            temperature: 1.0,
            top_k: Some(1),
        };
        for _ in 0..20 {
            assert_eq!(greedy.draw(&logits, &mut rng), 1);
            assert_eq!(top1.draw(&logits, &mut rng), 1);
        }
    }

    #[test]
    fn draws_follow_the_softmax_and_top_k_cuts_the_tail() {
        let logits = [0.0, (3.0f32).ln(), -30.0];
        let mut rng = SplitMix64::new(7);
        let s = Sampling {
            temperature: 1.0,
            top_k: None,
        };
        let n = 20_000;
        let ones = (0..n).filter(|_| s.draw(&logits, &mut rng) == 1).count();
        // p(1) = 3 / 4.
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.02, "{ones}");
        let top2 = Sampling {
            temperature: 5.0,
            top_k: Some(2),
        };
        assert!((0..2000).all(|_| top2.draw(&logits, &mut rng) != 2));
        assert!(
            Sampling {
                temperature: -1.0,
                top_k: None
            }
            .validate()
            .is_err()
        );
    }
}

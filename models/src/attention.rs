//! Attention written out (Vaswani et al. 2017, "Attention Is All You Need"; d2l.ai ch. 11,
//! "Attention Mechanisms and Transformers").
//!
//! Scaled dot-product attention compares each query with every key and returns the values
//! averaged by the softmax of those scores:
//!
//! `Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V`
//!
//! where `M` is 0 where a query may look at a key and `-inf` where it may not (a causal mask hides
//! the future, a padding mask hides padding). Dividing by `sqrt(d_k)` keeps the scores' variance
//! near 1 whatever the width, so the softmax does not saturate.
//!
//! Multi-head attention runs `h` of these side by side on `d_model / h`-wide projections and mixes
//! the heads with an output projection:
//! `MultiHead(X_q, X_k, X_v) = Concat(head_1, ..., head_h) W_O` with
//! `head_i = Attention(X_q W_Q^i, X_k W_K^i, X_v W_V^i)`.
//! A test gives [`MultiHeadAttention`] the weights of `burn::nn::attention::MultiHeadAttention`
//! and shows equal outputs, with and without masks.
//!
//! On the CPU backends [`MultiHeadAttention::forward`] runs the attention of all heads, dropout
//! on the weights included, as one fused op (`pdl_kernels::attention`: the equation above with
//! its backward written out); [`scaled_dot_product_attention`] is the same computation in tensor
//! ops, and what every other backend runs.
//!
//! For generation, [`MultiHeadAttention::forward_cached`] keeps the keys and values of the tokens
//! already read in a [`KvCache`], so each new token costs one query against the cache instead of
//! recomputing the whole sequence.

use crate::classification::check_dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use pdl_kernels::{Dropout, DropoutConfig, Linear, LinearConfig};

/// The score given to masked positions before the softmax: the `-inf` of the equation, kept finite
/// as Burn does (`min_float = -1e4`) so that a row with every key masked gives uniform weights
/// rather than NaN, and so that it fits in half precision. `exp(-1e4)` is 0 in `f32`, so masked
/// keys get exactly zero weight.
pub const MASKED_SCORE: f32 = -1.0e4;

/// Scaled dot-product attention, `softmax(Q K^T / sqrt(d_k) + M) V`.
///
/// `mask` is true where a query may **not** look at a key (the `-inf` entries of `M`); it
/// broadcasts over batch (size `batch` or 1) and heads. `dropout`, if given, drops attention
/// weights (Vaswani et al. 2017, section 5.4; GPT-2) before they average the values.
///
/// Returns the output and the attention weights (before dropout; each row sums to 1).
///
/// # Shapes
/// - q: `[batch, heads, t_q, d_k]`
/// - k: `[batch, heads, t_k, d_k]`
/// - v: `[batch, heads, t_k, d_v]`
/// - mask: `[batch or 1, 1, t_q, t_k]`
/// - output: `[batch, heads, t_q, d_v]`
/// - weights: `[batch, heads, t_q, t_k]`
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    dropout: Option<&Dropout>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, heads, t_q, d_k] = q.dims();
    let t_k = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d_k as f32).sqrt()); // [batch, heads, t_q, t_k]
    let scores = match mask {
        Some(mask) => scores.mask_fill(mask.expand([batch, heads, t_q, t_k]), MASKED_SCORE),
        None => scores,
    };
    let weights = softmax(scores, 3); // [batch, heads, t_q, t_k]
    let averaging = match dropout {
        Some(dropout) => dropout.forward(weights.clone()),
        None => weights.clone(),
    };
    (averaging.matmul(v), weights)
}

/// The causal mask for `t_q` queries that are the last `t_q` of `t_k` positions: query `i` sits
/// at position `t_k - t_q + i` and may look at keys up to and including it. With `t_q == t_k` it
/// is the usual upper triangle; with `t_q < t_k` it masks new tokens against a KV cache.
///
/// # Shapes
/// - output: `[1, 1, t_q, t_k]`, true above the (shifted) diagonal: masked
///
/// # Panics
/// If `t_q > t_k`.
pub fn causal_mask<B: Backend>(t_q: usize, t_k: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    assert!(
        t_q <= t_k,
        "causal mask: {t_q} queries cannot be the last of {t_k} positions"
    );
    // `tril_mask(offset)` is true where key j > query i + offset.
    Tensor::<B, 2, Bool>::tril_mask([t_q, t_k], (t_k - t_q) as i64, device)
        .reshape([1, 1, t_q, t_k])
}

/// The attention mask that hides padded keys, from a batch's token mask.
///
/// # Shapes
/// - mask: `[batch, seq_len]`, true at real tokens
/// - output: `[batch, 1, 1, seq_len]`, true at padding: masked for every query and head
pub fn padding_mask<B: Backend>(mask: Tensor<B, 2, Bool>) -> Tensor<B, 4, Bool> {
    let [batch, seq_len] = mask.dims();
    mask.bool_not().reshape([batch, 1, 1, seq_len])
}

/// Configuration of a [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Width of the inputs and the output.
    pub d_model: usize,
    /// Heads; each attends with `d_model / n_heads`-wide queries, keys and values.
    pub n_heads: usize,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl MultiHeadAttentionConfig {
    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_model == 0 || self.n_heads == 0 {
            return Err("attention d_model and n_heads must be at least 1".into());
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "attention: d_model {} is not a multiple of n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        check_dropout("attention", self.dropout)
    }

    /// Builds the module on `device`.
    ///
    /// # Panics
    /// If [`MultiHeadAttentionConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let linear = || LinearConfig::new(self.d_model, self.d_model).init(device);
        MultiHeadAttention {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
        }
    }
}

/// The keys and values of the tokens a [`MultiHeadAttention`] has already read, per head.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// `[batch, heads, t, d_k]`.
    pub keys: Tensor<B, 4>,
    /// `[batch, heads, t, d_k]`.
    pub values: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Tokens cached, `t`.
    pub fn seq_len(&self) -> usize {
        self.keys.dims()[2]
    }
}

/// Multi-head attention: query, key and value projections, [`scaled_dot_product_attention`] per
/// head, and an output projection. The parameters have the names and shapes of
/// `burn::nn::attention::MultiHeadAttention`'s.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    dropout: Dropout,
    n_heads: usize,
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Attention of `query_in` over `key_in` / `value_in` (the same tensor for self-attention).
    ///
    /// # Shapes
    /// - query_in: `[batch, t_q, d_model]`
    /// - key_in, value_in: `[batch, t_k, d_model]`
    /// - mask: `[batch or 1, 1, t_q, t_k]`, true where a query may not look
    /// - output: `[batch, t_q, d_model]`
    pub fn forward(
        &self,
        query_in: Tensor<B, 3>,
        key_in: Tensor<B, 3>,
        value_in: Tensor<B, 3>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let [q, k, v] = self.project(query_in, key_in, value_in);
        self.output.forward(merge_heads(self.attend(q, k, v, mask)))
    }

    /// [`Self::forward`], also returning the attention weights of every head (to plot them).
    ///
    /// # Shapes
    /// - output: `[batch, t_q, d_model]`
    /// - weights: `[batch, heads, t_q, t_k]`
    pub fn forward_with_weights(
        &self,
        query_in: Tensor<B, 3>,
        key_in: Tensor<B, 3>,
        value_in: Tensor<B, 3>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [q, k, v] = self.project(query_in, key_in, value_in);
        let (out, weights) = scaled_dot_product_attention(q, k, v, mask, Some(&self.dropout));
        (self.output.forward(merge_heads(out)), weights)
    }

    /// The queries, keys and values of every head.
    ///
    /// # Shapes
    /// - output: `[batch, heads, t_q, d_k]`, then `[batch, heads, t_k, d_k]` twice
    fn project(
        &self,
        query_in: Tensor<B, 3>,
        key_in: Tensor<B, 3>,
        value_in: Tensor<B, 3>,
    ) -> [Tensor<B, 4>; 3] {
        [
            self.heads(self.query.forward(query_in)),
            self.heads(self.key.forward(key_in)),
            self.heads(self.value.forward(value_in)),
        ]
    }

    /// [`scaled_dot_product_attention`]'s output without its weights: on the CPU backends one
    /// fused op, `pdl_kernels::attention` (the same equation and dropout, its backward written
    /// out; see `kernels/src/attention.rs`).
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 4> {
        let dropout = Some(&self.dropout);
        let fused = pdl_kernels::attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask.clone(),
            MASKED_SCORE,
            dropout,
        );
        fused.unwrap_or_else(|| scaled_dot_product_attention(q, k, v, mask, dropout).0)
    }

    /// Self-attention of new tokens `x` over the cached ones and themselves, returning the output
    /// for the new tokens and the cache with their keys and values appended. With `causal`, each
    /// new token sees only the cached tokens and the new ones up to itself, so reading a sequence
    /// in pieces gives what one causal [`Self::forward`] over all of it gives.
    ///
    /// # Shapes
    /// - x: `[batch, t_new, d_model]`
    /// - cache: `t_old` tokens (none: 0)
    /// - output: `[batch, t_new, d_model]`, and a cache of `t_old + t_new` tokens
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        cache: Option<KvCache<B>>,
        causal: bool,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let t_new = x.dims()[1];
        let q = self.heads(self.query.forward(x.clone())); // [batch, heads, t_new, d_k]
        let k = self.heads(self.key.forward(x.clone()));
        let v = self.heads(self.value.forward(x));
        let cache = match cache {
            Some(old) => KvCache {
                keys: Tensor::cat(vec![old.keys, k], 2), // [batch, heads, t_old + t_new, d_k]
                values: Tensor::cat(vec![old.values, v], 2),
            },
            None => KvCache { keys: k, values: v },
        };
        let t_all = cache.seq_len();
        // One new token may look at everything: no mask needed.
        let mask = (causal && t_new > 1).then(|| causal_mask(t_new, t_all, &q.device()));
        let out = self.attend(q, cache.keys.clone(), cache.values.clone(), mask);
        (self.output.forward(merge_heads(out)), cache)
    }

    /// `[batch, t, d_model]` -> `[batch, heads, t, d_model / heads]`.
    fn heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, t, d_model] = x.dims();
        x.reshape([batch, t, self.n_heads, d_model / self.n_heads])
            .swap_dims(1, 2)
    }
}

/// `[batch, heads, t, d_k]` -> `[batch, t, heads * d_k]`.
fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, t, d_k] = x.dims();
    x.swap_dims(1, 2).reshape([batch, t, heads * d_k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::nn::attention::{
        MhaInput, MultiHeadAttentionConfig as BurnMhaConfig, generate_autoregressive_mask,
    };
    use burn::tensor::{Distribution, Tolerance};

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
    }

    fn close<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }

    /// Gives every lazily initialised parameter its value now: Burn 0.21 draws a parameter when it
    /// is first read, and a clone read before the original draws values of its own.
    fn materialize<M: Module<B>>(model: M) -> M {
        let record = model.clone().into_record();
        model.load_record(record)
    }

    /// Burn's multi-head attention (dropout 0) and ours holding the same weights.
    fn twins(
        d_model: usize,
        n_heads: usize,
    ) -> (
        burn::nn::attention::MultiHeadAttention<B>,
        MultiHeadAttention<B>,
    ) {
        let device = Default::default();
        let burn = materialize(
            BurnMhaConfig::new(d_model, n_heads)
                .with_dropout(0.0)
                .init::<B>(&device),
        );
        let ours = MultiHeadAttention {
            query: burn.query.clone().into(),
            key: burn.key.clone().into(),
            value: burn.value.clone().into(),
            output: burn.output.clone().into(),
            dropout: DropoutConfig::new(0.0).init(),
            n_heads,
        };
        (burn, ours)
    }

    #[test]
    fn equals_burns_attention_without_a_mask() {
        let (burn, ours) = twins(8, 2);
        let q = random([2, 3, 8]);
        let kv = random([2, 5, 8]);
        let expected = burn.forward(MhaInput::new(q.clone(), kv.clone(), kv.clone()));
        let (out, weights) = ours.forward_with_weights(q, kv.clone(), kv, None);
        close(out, expected.context);
        close(weights, expected.weights);
    }

    #[test]
    fn equals_burns_attention_with_a_padding_mask() {
        let (burn, ours) = twins(12, 3);
        let device = Default::default();
        let x = random([2, 4, 12]);
        let real = Tensor::<B, 2, Bool>::from_data(
            [[true, true, false, false], [true, true, true, true]],
            &device,
        );
        let expected =
            burn.forward(MhaInput::self_attn(x.clone()).mask_pad(real.clone().bool_not()));
        let out = ours.forward(x.clone(), x.clone(), x, Some(padding_mask(real)));
        close(out, expected.context);
    }

    #[test]
    fn equals_burns_attention_with_a_causal_mask() {
        let (burn, ours) = twins(8, 4);
        let device = Default::default();
        let x = random([3, 6, 8]);
        let expected = burn.forward(
            MhaInput::self_attn(x.clone()).mask_attn(generate_autoregressive_mask(3, 6, &device)),
        );
        let (out, weights) =
            ours.forward_with_weights(x.clone(), x.clone(), x, Some(causal_mask(6, 6, &device)));
        close(out, expected.context);
        close(weights, expected.weights);
    }

    #[test]
    fn causal_mask_hides_exactly_the_future_even_against_a_cache() {
        let device = Default::default();
        let mask = causal_mask::<B>(2, 4, &device).reshape([2, 4]);
        // Queries at positions 2 and 3 of 4.
        mask.into_data().assert_eq(
            &TensorData::from([[false, false, false, true], [false, false, false, false]]),
            false,
        );
        let square = causal_mask::<B>(3, 3, &device).reshape([3, 3]);
        square.into_data().assert_eq(
            &TensorData::from([
                [false, true, true],
                [false, false, true],
                [false, false, false],
            ]),
            false,
        );
    }

    #[test]
    fn attention_weights_are_a_softmax_over_the_scaled_scores() {
        let q = random([1, 1, 2, 4]);
        let k = random([1, 1, 3, 4]);
        let v = random([1, 1, 3, 5]);
        let (out, weights) =
            scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), None, None);
        let scores = q.matmul(k.transpose()) / 2.0; // sqrt(d_k) = 2
        let expected = softmax(scores, 3);
        close(weights.clone(), expected.clone());
        close(out, expected.matmul(v));
        close(
            weights.sum_dim(3),
            Tensor::ones([1, 1, 2, 1], &Default::default()),
        );
    }

    #[test]
    fn a_future_token_never_changes_an_earlier_output() {
        let device = Default::default();
        let mha = MultiHeadAttentionConfig::new(8, 2).init::<B>(&device);
        let x = random([1, 5, 8]);
        let changed = Tensor::cat(
            vec![x.clone().slice([0..1, 0..3, 0..8]), random([1, 2, 8])],
            1,
        );
        let mask = || Some(causal_mask(5, 5, &device));
        let a = mha.forward(x.clone(), x.clone(), x, mask());
        let b = mha.forward(changed.clone(), changed.clone(), changed, mask());
        close(a.slice([0..1, 0..3, 0..8]), b.slice([0..1, 0..3, 0..8]));
    }

    #[test]
    fn reading_in_pieces_with_a_cache_equals_one_causal_pass() {
        let device = Default::default();
        let mha = MultiHeadAttentionConfig::new(12, 3).init::<B>(&device);
        let x = random([2, 7, 12]);
        let whole = mha.forward(
            x.clone(),
            x.clone(),
            x.clone(),
            Some(causal_mask(7, 7, &device)),
        );
        let mut cache = None;
        let mut pieces = Vec::new();
        for range in [0..3, 3..4, 4..7] {
            let (out, next) =
                mha.forward_cached(x.clone().slice([0..2, range, 0..12]), cache, true);
            pieces.push(out);
            cache = Some(next);
        }
        assert_eq!(cache.unwrap().seq_len(), 7);
        close(Tensor::cat(pieces, 1), whole);
    }

    #[test]
    fn rejects_heads_that_do_not_divide_the_width() {
        assert!(MultiHeadAttentionConfig::new(10, 3).validate().is_err());
        assert!(MultiHeadAttentionConfig::new(12, 3).validate().is_ok());
        assert!(
            MultiHeadAttentionConfig::new(12, 3)
                .with_dropout(1.0)
                .validate()
                .is_err()
        );
    }
}

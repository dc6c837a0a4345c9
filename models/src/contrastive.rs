//! Contrastive learning's loss: NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR
//! (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
//! eq. 1).
//!
//! A batch of N images gives 2N views, two augmentations of each. Their projections z_1..z_2N
//! are laid out so that rows k and k + N are the two views of image k. For a view i, its other
//! view j(i) is the *positive*; the other 2N − 2 views are *negatives*. With the cosine
//! similarity sim(u, v) = u·v / (‖u‖‖v‖) and a temperature τ,
//!
//! ```text
//! ℓ_i = −log  exp(sim(z_i, z_j(i)) / τ)  /  Σ_{k ≠ i} exp(sim(z_i, z_k) / τ)
//! L   = (1 / 2N) Σ_i ℓ_i
//! ```
//!
//! The sum in the denominator runs over the positive and the 2N − 2 negatives; a view's
//! similarity with itself (always 1) is left out. So ℓ_i is a (2N − 1)-way classification, "which
//! of the other views is my twin?", and L is a cross-entropy over the rows of the similarity
//! matrix with the diagonal masked, whose target in row i is column j(i): that is how it is
//! computed below. A small τ (SimCLR uses 0.1-0.5) sharpens the softmax, so the hardest negatives
//! weigh most.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// The NT-Xent loss of `z`, `[2N, d]` projections in which rows `k` and `k + N` are the two views
/// of example `k`, at temperature `temperature` (see the module doc). A scalar, `[1]`.
pub fn nt_xent<B: Backend>(z: Tensor<B, 2>, temperature: f64) -> Tensor<B, 1> {
    let (logits, twins) = twin_logits(z, temperature);
    twin_loss(logits, twins)
}

/// The mean cross-entropy of [`twin_logits`]' logits `[2N, 2N]` against their twins `[2N]`: the
/// NT-Xent loss. A scalar, `[1]`.
pub fn twin_loss<B: Backend>(logits: Tensor<B, 2>, twins: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let picked = log_softmax(logits, 1).gather(1, twins.unsqueeze_dim(1)); // [2N, 1]
    picked.mean().neg()
}

/// NT-Xent as a classification: the logits `sim(z_i, z_k) / τ`, `[2N, 2N]`, with each view's
/// similarity to itself masked out, and for each row the column of its twin, `[2N]`. The loss is
/// the cross-entropy of the two, and the share of rows whose largest logit is the twin's says how
/// often a view picks out its twin among the 2N − 1 others.
pub fn twin_logits<B: Backend>(
    z: Tensor<B, 2>,
    temperature: f64,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let [views, _] = z.dims();
    assert!(
        views >= 2 && views % 2 == 0,
        "NT-Xent takes two views of each example: an even number of rows, got {views}"
    );
    let device = z.device();
    // Unit rows, so that their dot products are cosine similarities.
    let norms = z.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    let unit = z / norms;
    let logits = unit.clone().matmul(unit.transpose()) / temperature; // [2N, 2N]
    // Leave out each view's similarity with itself: a logit so low its exponential is 0.
    let index = Tensor::<B, 1, Int>::arange(0..views as i64, &device);
    let diagonal = index
        .clone()
        .unsqueeze_dim::<2>(1)
        .equal(index.clone().unsqueeze_dim::<2>(0));
    let logits = logits.mask_fill(diagonal, -1e9);
    // Row i's target is its twin's column: i + N in the first half, i − N in the second.
    let twins = (index + (views / 2) as i64).remainder_scalar(views as i64);
    (logits, twins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    /// ℓ averaged over the views, pair by pair in f64, as the module doc writes it.
    fn by_the_formula(z: &[Vec<f64>], temperature: f64) -> f64 {
        let n = z.len() / 2;
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (norm(a) * norm(b))
        };
        let mut total = 0.0;
        for i in 0..2 * n {
            let twin = if i < n { i + n } else { i - n };
            let positive = (cos(&z[i], &z[twin]) / temperature).exp();
            let all: f64 = (0..2 * n)
                .filter(|&k| k != i)
                .map(|k| (cos(&z[i], &z[k]) / temperature).exp())
                .sum();
            total += -(positive / all).ln();
        }
        total / (2 * n) as f64
    }

    fn rows(seed: u64, count: usize, width: usize) -> Vec<Vec<f64>> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                (0..width)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn loss(z: &[Vec<f64>], temperature: f64) -> f64 {
        let width = z[0].len();
        let flat: Vec<f32> = z.iter().flatten().map(|&x| x as f32).collect();
        let tensor = Tensor::<B, 1>::from_floats(flat.as_slice(), &Default::default())
            .reshape([z.len(), width]);
        nt_xent(tensor, temperature).into_scalar() as f64
    }

    #[test]
    fn equals_the_per_pair_formula() {
        for (seed, views, width, temperature) in [(1, 6, 4, 0.5), (2, 16, 8, 0.1), (3, 2, 3, 1.0)] {
            let z = rows(seed, views, width);
            let (ours, direct) = (loss(&z, temperature), by_the_formula(&z, temperature));
            assert!(
                (ours - direct).abs() < 1e-4 * direct.max(1.0),
                "{views} views, τ = {temperature}: {ours} against {direct}"
            );
        }
    }

    #[test]
    fn twins_that_agree_score_lower_than_strangers() {
        // The second half copies the first (each view's twin points its way): a low loss.
        let mut z = rows(4, 8, 16);
        for k in 0..4 {
            z[k + 4] = z[k].iter().map(|x| 3.0 * x).collect();
        }
        let agreeing = loss(&z, 0.2);
        let strangers = loss(&rows(5, 8, 16), 0.2);
        assert!(agreeing < strangers - 1.0, "{agreeing} against {strangers}");
        // The floor is log(1 + (2N − 2) e^{(s − 1)/τ}) > 0: never below zero.
        assert!(agreeing > 0.0);
    }
}

//! Dropout with its mask drawn on the host for the CPU backends (Srivastava et al. 2014,
//! "Dropout: A Simple Way to Prevent Neural Networks from Overfitting"; d2l.ai ch. 5.6).
//!
//! In training each value is kept with probability `q = 1 - p` and scaled by `1 / q`, so the
//! expectation is unchanged: `y = x m` with `m` drawn independently per value, `m = 1/q` with
//! probability `q` and `0` otherwise, and `dL/dx = m dL/dy`. At inference `y = x`.
//!
//! Why not Burn's `Dropout::forward` alone: it draws its mask through the backend's generic
//! Bernoulli sampler, which on `ndarray` and `flex` takes ~12 ms for the classic MNIST net's
//! `[64, 64, 12, 12]` feature map, as long as its second convolution's weight gradient, and then
//! multiplies twice (by the 0/1 mask, then by `1/q`). [`dropout`] keeps Burn's [`Dropout`] module (so
//! records are unchanged) and, on a backend whose tensors are host arrays
//! ([`ConvBackend::HOST_KERNELS`]), draws `m` itself with [`SplitMix64`] and multiplies once;
//! Burn's autodiff then gives `dL/dx = m dL/dy`. Elsewhere it is Burn's dropout.
//!
//! The host draws come from one process-wide stream, seeded by [`seed`] (the training pipelines
//! seed it with the backend through [`crate::seed`]), so a run repeats.

use crate::conv::ConvBackend;
use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::TensorData;
use pdl_datasets::SplitMix64;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next mask's seed; each call takes one and moves the stream on.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0x5EED_D209_5EED_D209);

/// Seeds the host dropout masks: the same seed and the same sequence of calls draw the same masks.
pub fn seed(seed: u64) {
    NEXT_SEED.store(SplitMix64::new(seed).next_u64(), Ordering::Relaxed);
}

/// `dropout.forward(x)`: in training, `x` times a mask of `0` and `1 / (1 - p)`; at inference (a
/// backend without autodiff) or with `p = 0`, `x` itself.
///
/// # Shapes
/// - x: any
/// - output: the shape of `x`
pub fn dropout<B: ConvBackend, const D: usize>(dropout: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    if !B::HOST_KERNELS || !B::ad_enabled(&device) || dropout.prob == 0.0 {
        return dropout.forward(x);
    }
    let keep = 1.0 - dropout.prob;
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    let shape = x.shape();
    let mask = draw_mask(shape.num_elements(), keep, scale);
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
}

/// `len` values, each `scale` with probability `keep` and `0` otherwise, from the next seed of
/// the stream.
fn draw_mask(len: usize, keep: f64, scale: f32) -> Vec<f32> {
    let stream = NEXT_SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut rng = SplitMix64::new(stream);
    // Two 32-bit uniforms per draw; `u < threshold` has probability `keep` to 2^-32.
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64 + 1.0) as u64;
    let pick = |bits: u64| if bits < threshold { scale } else { 0.0 };
    let mut mask = Vec::with_capacity(len + 1);
    while mask.len() < len {
        let bits = rng.next_u64();
        mask.push(pick(bits >> 32));
        mask.push(pick(bits & 0xFFFF_FFFF));
    }
    mask.truncate(len);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::DropoutConfig;

    type B = Autodiff<NdArray>;

    #[test]
    fn mask_keeps_the_asked_fraction_and_scales_it() {
        let mask = draw_mask(100_000, 0.75, 1.0 / 0.75);
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        assert!(
            mask.iter()
                .all(|&m| m == 0.0 || (m - 1.0 / 0.75).abs() < 1e-6)
        );
    }

    #[test]
    fn masks_drop_everything_at_p_1_and_nothing_at_p_0() {
        assert!(draw_mask(1000, 0.0, 0.0).iter().all(|&m| m == 0.0));
        assert!(draw_mask(1000, 1.0, 1.0).iter().all(|&m| m == 1.0));
    }

    #[test]
    fn the_same_seed_draws_the_same_masks() {
        seed(7);
        let first = (draw_mask(64, 0.5, 2.0), draw_mask(64, 0.5, 2.0));
        seed(7);
        let again = (draw_mask(64, 0.5, 2.0), draw_mask(64, 0.5, 2.0));
        assert_eq!(first, again);
        assert_ne!(first.0, first.1, "each call draws a new mask");
    }

    #[test]
    fn training_drops_and_scales_and_the_gradient_is_the_mask() {
        let device = Default::default();
        let layer = DropoutConfig::new(0.5).init();
        let x = Tensor::<B, 2>::ones([40, 50], &device).require_grad();
        let y = dropout(&layer, x.clone());
        let values = y.to_data().to_vec::<f32>().unwrap();
        let kept = values.iter().filter(|&&v| v != 0.0).count();
        assert!((800..1200).contains(&kept), "kept {kept} of 2000");
        assert!(values.iter().all(|&v| v == 0.0 || (v - 2.0).abs() < 1e-6));

        let grads = y.sum().backward();
        let grad = x.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
        assert_eq!(grad, values, "d(sum(x m))/dx = m, and y = m for x = 1");
    }

    #[test]
    fn inference_is_the_identity() {
        let device = Default::default();
        let layer = DropoutConfig::new(0.5).init();
        let x = Tensor::<NdArray, 2>::ones([4, 5], &device);
        let y = dropout(&layer, x.clone());
        assert_eq!(y.to_data(), x.to_data());
    }
}

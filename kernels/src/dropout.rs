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
//! multiplies twice (by the 0/1 mask, then by `1/q`). [`Dropout`] has the fields of Burn's (a
//! dropout layer has no record to change) and, on a backend whose tensors are host arrays
//! ([`crate::KernelBackend::HOST_KERNELS`]), draws `m` itself with SplitMix64 and multiplies
//! once; Burn's autodiff then gives `dL/dx = m dL/dy`. Elsewhere it is Burn's dropout.
//!
//! # Whose random numbers
//!
//! Each layer owns its [`MaskStream`]: every training forward pass draws the next seed from it.
//! A layer built after [`crate::seed`] takes its stream from that seed on the building thread, so
//! a run repeats, and two runs in one process (on two threads) do not disturb each other. Cloning
//! a layer splits a stream of its own off the original's. That is what makes `--devices N`
//! repeat: Burn's multi-device training clones the model for each device, on the main thread
//! and in device order, and each device then draws from its clone's stream whatever the timing
//! of the threads. (A process-wide stream, as before, handed the masks to whichever device came
//! first.)

use crate::rng::{GOLDEN_GAMMA, SplitMix64, mix};
use burn::module::{Content, DisplaySettings, ModuleDisplay};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// The seed of the next stream a layer built on this thread takes; set by [`seed`].
    static NEXT_STREAM: Cell<u64> = const { Cell::new(0x5EED_D209_5EED_D209) };
}

/// Seeds the mask streams of the dropout layers built from now on, on this thread: the same seed
/// and the same order of layers give the same streams.
pub fn seed(seed: u64) {
    NEXT_STREAM.set(mix(seed));
}

/// Configuration of a [`Dropout`]: burn-nn's `DropoutConfig`.
#[derive(Config, Debug)]
pub struct DropoutConfig {
    /// The probability of zeroing each value in training.
    pub prob: f64,
}

impl DropoutConfig {
    /// The dropout layer, with a mask stream taken from this thread's seed ([`seed`]).
    ///
    /// # Panics
    /// If `prob` is not in `[0, 1]`, as burn-nn's.
    pub fn init(&self) -> Dropout {
        assert!(
            (0.0..=1.0).contains(&self.prob),
            "Dropout probability should be between 0 and 1, but got {}",
            self.prob
        );
        Dropout {
            prob: self.prob,
            stream: MaskStream::from_thread(),
        }
    }
}

/// Dropout: burn-nn's `Dropout` with host-drawn masks on the CPU backends and a stream of its own.
#[derive(Module, Clone, Debug)]
#[module(custom_display)]
pub struct Dropout {
    /// The probability of zeroing each value in training.
    pub prob: f64,
    /// Where this layer's masks come from (not saved: a record holds no dropout state).
    pub stream: MaskStream,
}

impl Dropout {
    /// In training (a backend with autodiff), `x` times a mask of `0` and `1 / (1 - p)`; at
    /// inference, or with `p = 0`, `x` itself.
    ///
    /// # Shapes
    /// - x: any
    /// - output: the shape of `x`
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        if !B::ad_enabled(&device) || self.prob == 0.0 {
            return x;
        }
        if !crate::backend::host_kernels::<B>() {
            return burn::nn::DropoutConfig::new(self.prob).init().forward(x);
        }
        let keep = 1.0 - self.prob;
        let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
        let shape = x.shape();
        let mask = draw_mask(self.stream.next_seed(), shape.num_elements(), keep, scale);
        x * Tensor::from_data(TensorData::new(mask, shape), &device)
    }
}

impl ModuleDisplay for Dropout {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    // burn-nn's display.
    fn custom_content(&self, content: Content) -> Option<Content> {
        content.add("prob", &self.prob).optional()
    }
}

/// The seeds of one dropout layer's masks, one per training forward pass. Cloning splits off a
/// stream of its own (module docs).
#[derive(Debug)]
pub struct MaskStream {
    next: AtomicU64,
}

impl MaskStream {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            next: AtomicU64::new(seed),
        }
    }

    /// The next stream of this thread's seed ([`seed`]).
    fn from_thread() -> Self {
        let state = NEXT_STREAM.get();
        NEXT_STREAM.set(state.wrapping_add(GOLDEN_GAMMA));
        Self::new(mix(state))
    }

    /// The seed of the next mask; moves the stream on.
    pub fn next_seed(&self) -> u64 {
        mix(self.next.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }
}

impl Clone for MaskStream {
    /// A new stream seeded by the next seed of this one: the clone and the original then draw
    /// different masks, and the same clones of the same stream draw the same ones.
    fn clone(&self) -> Self {
        Self::new(self.next_seed())
    }
}

/// `len` values, each `scale` with probability `keep` and `0` otherwise, from `seed`.
fn draw_mask(seed: u64, len: usize, keep: f64, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
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

    type B = Autodiff<NdArray>;

    #[test]
    fn mask_keeps_the_asked_fraction_and_scales_it() {
        let mask = draw_mask(1, 100_000, 0.75, 1.0 / 0.75);
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        assert!(
            mask.iter()
                .all(|&m| m == 0.0 || (m - 1.0 / 0.75).abs() < 1e-6)
        );
    }

    #[test]
    fn masks_drop_everything_at_p_1_and_nothing_at_p_0() {
        assert!(draw_mask(2, 1000, 0.0, 0.0).iter().all(|&m| m == 0.0));
        assert!(draw_mask(3, 1000, 1.0, 1.0).iter().all(|&m| m == 1.0));
    }

    /// Two masks of a layer built after `seed(s)`.
    fn two_masks(s: u64) -> (Vec<f32>, Vec<f32>) {
        seed(s);
        let layer = DropoutConfig::new(0.5).init();
        let draw = || draw_mask(layer.stream.next_seed(), 64, 0.5, 2.0);
        (draw(), draw())
    }

    #[test]
    fn the_same_seed_draws_the_same_masks() {
        let first = two_masks(7);
        let again = two_masks(7);
        assert_eq!(first, again);
        assert_ne!(first.0, first.1, "each call draws a new mask");
        assert_ne!(first, two_masks(8), "another seed draws other masks");
    }

    #[test]
    fn clones_draw_their_own_masks_in_a_repeatable_order() {
        let run = || {
            seed(3);
            let layer = DropoutConfig::new(0.5).init();
            let clones = [layer.clone(), layer.clone()];
            // Drawn from the clones in the opposite order to their making: the clones' masks do
            // not depend on who draws first.
            let second = clones[1].stream.next_seed();
            let first = clones[0].stream.next_seed();
            (first, second, layer.stream.next_seed())
        };
        let (a, b, c) = run();
        assert_eq!((a, b, c), run());
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn training_drops_and_scales_and_the_gradient_is_the_mask() {
        let device = Default::default();
        let layer = DropoutConfig::new(0.5).init();
        let x = Tensor::<B, 2>::ones([40, 50], &device).require_grad();
        let y = layer.forward(x.clone());
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
        let y = layer.forward(x.clone());
        assert_eq!(y.to_data(), x.to_data());
    }
}

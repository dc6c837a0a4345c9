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
//! a run repeats, and two runs in one process (on two threads) do not disturb each other. A clone
//! of a layer draws masks of its own, numbered by the order of cloning. That is what makes
//! `--devices N` repeat: Burn's multi-device training clones the model for each device, on the
//! main thread and in device order, and each device then draws from its clone's stream whatever
//! the timing of the threads. (A process-wide stream, as before, handed the masks to whichever
//! device came first.)
//!
//! # Epochs, and resuming
//!
//! A stream starts over at every training epoch: the masks of epoch `e` are drawn from the
//! layer's seed and `e` (and which copy of the layer draws: [`MaskStream`]), not from everything
//! drawn before. The run's training loader says when an epoch starts ([`RunEpoch::start`]). So a
//! run resumed after epoch `k` draws in epoch `k + 1` the masks an uninterrupted run draws there,
//! with nothing saved beside the checkpoint: as PyTorch Lightning restores its generators' states
//! on resume, but from numbers the run already knows. (A checkpoint cannot hold the stream: a
//! dropout layer has no record, in Burn or here, and records must load either way.)

use crate::host::{fill_blocks, written};
use crate::rng::{GOLDEN_GAMMA, SplitMix64, mix};
use burn::module::{Content, DisplaySettings, ModuleDisplay};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

thread_local! {
    /// The seed of the next stream a layer built on this thread takes; set by [`seed`].
    static NEXT_STREAM: Cell<u64> = const { Cell::new(0x5EED_D209_5EED_D209) };
    /// The run whose layers this thread builds now; a new one at every [`seed`].
    static RUN: RefCell<RunEpoch> = RefCell::new(RunEpoch::new(0));
}

/// Seeds the mask streams of the dropout layers built from now on, on this thread: the same seed
/// and the same order of layers give the same streams. It also starts a new run: the layers built
/// from now on follow its epochs ([`RunEpoch::current`]).
pub fn seed(seed: u64) {
    NEXT_STREAM.set(mix(seed));
    RUN.set(RunEpoch::new(seed));
}

/// The training epoch of one run, as its dropout layers see it: every layer built after the
/// run's [`seed`] (and every clone of one) shares it, and the run's training loader moves it on
/// at the start of each epoch. Until then it is epoch 0 (as for a layer that is never trained).
#[derive(Clone, Debug)]
pub struct RunEpoch {
    seed: u64,
    epoch: Arc<AtomicU64>,
}

impl RunEpoch {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            epoch: Arc::default(),
        }
    }

    /// The run of the layers this thread builds now: the one its last [`seed`] started.
    pub fn current() -> Self {
        RUN.with_borrow(Clone::clone)
    }

    /// Starts training epoch `epoch` (1 for the first): each layer's next mask is the first of
    /// that epoch's.
    pub fn start(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// A seed for the backend's own generator at the start of `epoch`, from the run's seed and
    /// `epoch` alone: for the random ops that do not draw here (burn-nn's dropout, and this
    /// [`Dropout`] on a backend without host kernels), which a caller reseeds with it so that
    /// they too start over at every epoch.
    pub fn backend_seed(&self, epoch: u64) -> u64 {
        mix(self.seed ^ mix(epoch))
    }
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
#[derive(Module, Clone)]
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
        let shape = x.shape();
        match self.draw_host_mask(shape.num_elements()) {
            Some(mask) => x * Tensor::from_data(TensorData::new(mask, shape), &device),
            None => x,
        }
    }

    /// The next training mask of `len` values, `0` or `1 / (1 - p)`, drawn from this layer's
    /// stream as [`Self::forward`] draws it; `None` (and nothing drawn) when `p = 0`. For a fused
    /// op that applies the dropout inside ([`crate::attention`]).
    pub(crate) fn draw_host_mask(&self, len: usize) -> Option<Vec<f32>> {
        if self.prob == 0.0 {
            return None;
        }
        let keep = 1.0 - self.prob;
        let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
        Some(draw_mask(self.stream.next_seed(), len, keep, scale))
    }
}

/// burn-nn's: `Dropout { prob: 0.1 }`. A model that holds a dropout layer prints it through
/// `Debug` (Burn's derive prints a field without a backend parameter that way), and the stream's
/// state means nothing to a reader.
impl std::fmt::Debug for Dropout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dropout").field("prob", &self.prob).finish()
    }
}

impl ModuleDisplay for Dropout {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display.
    fn custom_content(&self, content: Content) -> Option<Content> {
        content.add("prob", &self.prob).optional()
    }
}

/// The seeds of one dropout layer's masks, one per training forward pass (module docs).
///
/// Burn clones a model often: after every optimiser step (the stepped model is a clone), for each
/// device at every multi-device step, for validation and checkpoints. So a seed cannot come from a
/// state that cloning moves on, or a resumed run, whose model has not been through the same
/// clones, would draw others. A layer and all its clones form a *lineage* with one origin seed.
/// Within an epoch of the run, the lineage numbers the clones made in it (1, 2, ... in the order
/// they are made, on the thread that makes them: Burn's main thread), and everything made before
/// the epoch counts as 0. A mask's seed is a function of the origin, the epoch, that number and
/// how many masks that copy has drawn in the epoch. So a resumed run's model (a copy from before
/// the epoch) draws as the uninterrupted run's model does, each device's copy draws its own masks,
/// and no draw depends on the timing of threads. One thread draws from a copy at a time.
#[derive(Debug)]
pub struct MaskStream {
    /// The lineage's seed.
    origin: u64,
    lineage: Arc<Mutex<Lineage>>,
    run: RunEpoch,
    /// The epoch of the run in which this copy was made, and its number in that epoch.
    born: (u64, u64),
    /// The epoch of this copy's last draw, and how many it has drawn in that epoch.
    drawn: Mutex<(u64, u64)>,
}

/// The clones a lineage has made in the epoch it last saw.
#[derive(Debug)]
struct Lineage {
    epoch: u64,
    clones: u64,
}

impl MaskStream {
    /// A stream of seed `seed`, in a run of its own (which stays at epoch 0 unless started).
    pub fn new(seed: u64) -> Self {
        Self::in_run(seed, RunEpoch::new(seed))
    }

    /// The first of a lineage.
    fn in_run(origin: u64, run: RunEpoch) -> Self {
        let epoch = run.epoch();
        Self {
            origin,
            lineage: Arc::new(Mutex::new(Lineage { epoch, clones: 0 })),
            run,
            born: (epoch, 0),
            drawn: Mutex::new((epoch, 0)),
        }
    }

    /// The next stream of this thread's seed, in this thread's run ([`seed`]).
    fn from_thread() -> Self {
        let state = NEXT_STREAM.get();
        NEXT_STREAM.set(state.wrapping_add(GOLDEN_GAMMA));
        Self::in_run(mix(state), RunEpoch::current())
    }

    /// The seed of the next mask; moves this copy's count on.
    pub fn next_seed(&self) -> u64 {
        let epoch = self.run.epoch();
        let number = if self.born.0 == epoch { self.born.1 } else { 0 };
        let mut drawn = self.drawn.lock().unwrap_or_else(PoisonError::into_inner);
        if drawn.0 != epoch {
            *drawn = (epoch, 0);
        }
        let index = drawn.1;
        drawn.1 += 1;
        let start = mix(self.origin ^ mix(epoch)) ^ mix(number.wrapping_add(GOLDEN_GAMMA));
        mix(start.wrapping_add(index.wrapping_mul(GOLDEN_GAMMA)))
    }
}

impl Clone for MaskStream {
    /// The next copy of the lineage in this epoch: it draws other masks than the copies before it,
    /// and the same clones made in the same order draw the same masks.
    fn clone(&self) -> Self {
        let epoch = self.run.epoch();
        let number = {
            let mut lineage = self.lineage.lock().unwrap_or_else(PoisonError::into_inner);
            if lineage.epoch != epoch {
                *lineage = Lineage { epoch, clones: 0 };
            }
            lineage.clones += 1;
            lineage.clones
        };
        Self {
            origin: self.origin,
            lineage: self.lineage.clone(),
            run: self.run.clone(),
            born: (epoch, number),
            drawn: Mutex::new((epoch, 0)),
        }
    }
}

/// `len` values, each `scale` with probability `keep` and `0` otherwise, from `seed`.
fn draw_mask(seed: u64, len: usize, keep: f64, scale: f32) -> Vec<f32> {
    // Two 32-bit uniforms per draw; `u < threshold` has probability `keep` to 2^-32.
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64 + 1.0) as u64;
    let pick = |bits: u64| if bits < threshold { scale } else { 0.0 };
    // Blocks of the mask on all cores, each from its own stretch of the one stream (an even
    // number of values, two a draw), so the mask is the same on any number of threads.
    const BLOCK: usize = 1 << 14;
    let fill = |block: usize, part: &mut [MaybeUninit<f32>]| {
        let mut rng = SplitMix64::skipped(seed, (block * BLOCK / 2) as u64);
        for pair in part.chunks_mut(2) {
            let bits = rng.next_u64();
            pair[0].write(pick(bits >> 32));
            if let Some(second) = pair.get_mut(1) {
                second.write(pick(bits & 0xFFFF_FFFF));
            }
        }
    };
    // SAFETY: `fill` writes every value of every block.
    unsafe { written(len, |mask| fill_blocks(mask, BLOCK, fill)) }
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

    /// The mask is drawn in blocks on all cores; it must be the one stream's, value for value,
    /// whatever the thread count (a length over several blocks and odd, so a block ends mid-draw
    /// nowhere and the last draw is half used).
    #[test]
    fn a_mask_drawn_in_blocks_is_the_single_streams() {
        let len = 3 * (1 << 14) + 7;
        let mask = draw_mask(9, len, 0.5, 2.0);
        let mut rng = SplitMix64::new(9);
        let mut expected = Vec::new();
        while expected.len() < len {
            let bits = rng.next_u64();
            for half in [bits >> 32, bits & 0xFFFF_FFFF] {
                expected.push(if half < 1 << 31 { 2.0 } else { 0.0 });
            }
        }
        expected.truncate(len);
        assert_eq!(mask, expected);
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

    /// What a resumed run needs: a layer's masks in an epoch do not depend on what it drew in
    /// the epochs before, nor on the clones made before. As Burn's learner does, every step draws
    /// a mask and then replaces the layer by its clone (the optimiser's output).
    #[test]
    fn an_epochs_masks_are_the_same_whatever_happened_before_it() {
        let epoch_3 = |earlier: &[(u64, usize)]| {
            seed(11);
            let run = RunEpoch::current();
            let mut layer = DropoutConfig::new(0.5).init();
            layer = layer.clone(); // as loading a checkpoint does
            let step = |layer: &mut Dropout| {
                let seed = layer.stream.next_seed();
                *layer = layer.clone();
                seed
            };
            for &(epoch, steps) in earlier {
                run.start(epoch);
                (0..steps).for_each(|_| _ = step(&mut layer));
                let _validation_copy = layer.clone();
            }
            run.start(3);
            [step(&mut layer), step(&mut layer), step(&mut layer)]
        };
        let uninterrupted = epoch_3(&[(1, 5), (2, 5)]);
        assert_eq!(uninterrupted, epoch_3(&[]), "resumed after epoch 2");
        assert_eq!(uninterrupted, epoch_3(&[(1, 2)]), "killed mid-epoch 1");
        assert!(uninterrupted[0] != uninterrupted[1] && uninterrupted[1] != uninterrupted[2]);

        seed(11);
        let run = RunEpoch::current();
        let layer = DropoutConfig::new(0.5).init();
        run.start(2);
        assert_ne!(layer.stream.next_seed(), uninterrupted[0], "epochs differ");
        assert_ne!(run.backend_seed(2), run.backend_seed(3));
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
    fn prints_as_burns_dropout() {
        let ours = DropoutConfig::new(0.25).init();
        let burns = burn::nn::DropoutConfig::new(0.25).init();
        assert_eq!(format!("{ours:?}"), format!("{burns:?}"));
        assert_eq!(format!("{ours}"), format!("{burns}"));
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

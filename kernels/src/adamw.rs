//! AdamW (Loshchilov & Hutter 2019), as Burn's `AdamW` computes it, in one pass over each
//! parameter on the CPU backends.
//!
//! Burn's step is a dozen tensor ops per parameter (the two moments, their bias corrections, the
//! square root, the quotient, the decay and the update), each a pass over memory that allocates
//! its output; for the classic MNIST net's 1.2 M weights that was 7% of a training step. Here each
//! block of values is read once and the parameter and both moments are written once, the blocks
//! on all cores:
//!
//! ```text
//! m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
//! x <- (1 - lr wd) x - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```
//!
//! The state is Burn's `AdamWState`, so optimiser records saved with Burn's AdamW load here and
//! the other way round; on any other backend the step is Burn's.

use crate::backend::{KernelBackend, Op, run};
use crate::host::{HostValues, PARALLEL_VALUES};
use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// AdamW's settings, named and defaulted as Burn's `AdamWConfig` (without AMSGrad and the
/// cautious decay, which the course does not use).
#[derive(Config, Debug)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the root of the second moment.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay, per unit of learning rate.
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// Clipping of the gradients before the step.
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl AdamWConfig {
    /// The optimiser of a module `M` trained on `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> OptimizerAdaptor<AdamW, M, B> {
        let mut optim = OptimizerAdaptor::from(self.build());
        if let Some(clipping) = &self.grad_clipping {
            optim = optim.with_grad_clipping(clipping.init());
        }
        optim
    }

    /// The optimiser's step alone, for one parameter at a time (no clipping).
    pub fn build(&self) -> AdamW {
        AdamW {
            settings: Settings {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                epsilon: self.epsilon,
                weight_decay: self.weight_decay,
            },
            reference: burn::optim::AdamWConfig::new()
                .with_beta_1(self.beta_1)
                .with_beta_2(self.beta_2)
                .with_epsilon(self.epsilon)
                .with_weight_decay(self.weight_decay)
                .build(),
        }
    }
}

/// The AdamW optimiser of [`AdamWConfig`].
#[derive(Clone)]
pub struct AdamW {
    settings: Settings,
    /// Burn's, with the same settings: the step on a backend without host kernels.
    reference: burn::optim::AdamW,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moment_1, moment_2) = match &state {
            // Zero moments before the first step: `0 b + (1 - b) g` is the first step's moment.
            None => (0, tensor.zeros_like(), tensor.zeros_like()),
            Some(AdamWState {
                momentum:
                    AdaptiveMomentumState {
                        time,
                        moment_1,
                        moment_2,
                        max_moment_2: None,
                    },
            }) => (*time, moment_1.clone(), moment_2.clone()),
            // AMSGrad's state, which Burn's step handles.
            Some(_) => return self.reference.step(lr, tensor, grad, state),
        };
        let time = time + 1;
        let primitive = |t: &Tensor<B, D>| t.clone().into_primitive().tensor();
        let args = Step {
            settings: self.settings,
            lr,
            time,
            tensors: [&tensor, &grad, &moment_1, &moment_2].map(primitive),
        };
        match run::<AdamWStep, B>(args) {
            Some([tensor, moment_1, moment_2]) => {
                let float = |t| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
                let momentum = AdaptiveMomentumState::new(time, float(moment_1), float(moment_2));
                (float(tensor), Some(AdamWState::new(momentum)))
            }
            None => self.reference.step(lr, tensor, grad, state),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// One parameter's step: what [`AdamWStep`] is handed.
struct Step<B: Backend> {
    settings: Settings,
    lr: f64,
    /// The step's number, from 1.
    time: usize,
    /// The parameter, its gradient and the two moments before the step.
    tensors: [FloatTensor<B>; 4],
}

/// The host pass of one step: the new parameter and moments, or `None` off the CPU backends.
struct AdamWStep;

impl Op for AdamWStep {
    type Args<B: Backend> = Step<B>;
    type Output<B: Backend> = Option<[FloatTensor<B>; 3]>;

    fn fast<F: KernelBackend>(step: Step<F>) -> Option<[FloatTensor<F>; 3]> {
        if !F::HOST_KERNELS {
            return None;
        }
        let shape = step.tensors[0].shape();
        let device = F::float_device(&step.tensors[0]);
        // Each tensor as one row of values, lent where it lies when it is contiguous.
        let [x, g, m, v] = step
            .tensors
            .map(|t| F::float_reshape(t, [shape.num_elements()].into()));
        let update = |x: &[f32], g: &[f32], m: &[f32], v: &[f32]| {
            update(&step.settings, step.lr, step.time, [x, g, m, v])
        };
        let [x, m, v] = F::with_values(&x, |x: HostValues<'_, 1>| {
            F::with_values(&g, |g: HostValues<'_, 1>| {
                F::with_values(&m, |m: HostValues<'_, 1>| {
                    F::with_values(&v, |v: HostValues<'_, 1>| {
                        update(
                            &x.row_major(),
                            &g.row_major(),
                            &m.row_major(),
                            &v.row_major(),
                        )
                    })
                })
                .flatten()
            })
            .flatten()
        })
        .flatten()?;
        let tensor =
            |values: Vec<f32>| F::float_from_data(TensorData::new(values, shape.clone()), &device);
        Some([tensor(x), tensor(m), tensor(v)])
    }

    fn reference<B: Backend>(_: Step<B>) -> Option<[FloatTensor<B>; 3]> {
        None
    }
}

/// Values per block of [`update`].
const BLOCK: usize = 1 << 13;

/// The step on the host: `[x, m, v]` after it, from the parameter `x`, its gradient `g` and the
/// moments `m` and `v` before it.
fn update(settings: &Settings, lr: f64, time: usize, [x, g, m, v]: [&[f32]; 4]) -> [Vec<f32>; 3] {
    let Settings {
        beta_1,
        beta_2,
        epsilon,
        weight_decay,
    } = *settings;
    let t = time as i32;
    // As Burn's step: the corrections and the decay in f32, the decay factor in f64 first.
    let (correct_1, correct_2) = (1.0 - beta_1.powi(t), 1.0 - beta_2.powi(t));
    let keep = (1.0 - lr * weight_decay as f64) as f32;
    let lr = lr as f32;
    let len = x.len();
    assert!(
        [g, m, v].iter().all(|values| values.len() == len),
        "AdamW: the parameter, gradient and moments differ in length"
    );
    let block = |b: usize, [x_out, m_out, v_out]: [&mut [MaybeUninit<f32>]; 3]| {
        let first = b * BLOCK;
        for (k, ((x_out, m_out), v_out)) in x_out.iter_mut().zip(m_out).zip(v_out).enumerate() {
            let i = first + k;
            let m = m[i] * beta_1 + g[i] * (1.0 - beta_1);
            let v = v[i] * beta_2 + g[i] * g[i] * (1.0 - beta_2);
            let delta = (m / correct_1) / ((v / correct_2).sqrt() + epsilon);
            x_out.write(x[i] * keep - delta * lr);
            m_out.write(m);
            v_out.write(v);
        }
    };
    let mut outputs: [Vec<f32>; 3] = std::array::from_fn(|_| Vec::with_capacity(len));
    let [x_out, m_out, v_out] = outputs
        .each_mut()
        .map(|values| &mut values.spare_capacity_mut()[..len]);
    if len < PARALLEL_VALUES {
        block(0, [x_out, m_out, v_out]);
    } else {
        let parts = x_out
            .par_chunks_mut(BLOCK)
            .zip(m_out.par_chunks_mut(BLOCK))
            .zip(v_out.par_chunks_mut(BLOCK));
        parts
            .enumerate()
            .for_each(|(b, ((x, m), v))| block(b, [x, m, v]));
    }
    for values in &mut outputs {
        // SAFETY: the blocks cover the three outputs' first `len` values, and each writes every
        // value of its parts (the three parts of a block are equally long).
        unsafe { values.set_len(len) };
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::AdamWConfig;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::{Tensor, TensorData, Tolerance};

    type B = Autodiff<NdArray>;

    #[test]
    fn adamw_equals_burns_on_ndarray() {
        crate::parity::check_adamw::<B>(&Default::default()).unwrap();
    }

    /// A run checkpointed with Burn's AdamW resumes with this one: its optimiser record loads,
    /// and the next step from it moves the weights as Burn's would.
    #[test]
    fn burns_adamw_records_load_and_step_on() {
        let device = Default::default();
        let values: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(values, [3, 6]), &device);
        let grads = |model: &Linear<B>| {
            let loss = model.forward(x.clone()).powi_scalar(2).sum();
            GradientsParams::from_grads(loss.backward(), model)
        };
        let model: Linear<B> = LinearConfig::new(6, 4).init(&device);
        let mut burns = burn::optim::AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, Linear<B>>();
        let model = burns.step(1e-2, model.clone(), grads(&model));

        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(burns.to_record(), ()).unwrap();
        let mut ours = AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, Linear<B>>()
            .load_record(recorder.load(bytes, &device).unwrap());

        let by_burn = burns.step(1e-2, model.clone(), grads(&model));
        let by_ours = ours.step(1e-2, model.clone(), grads(&model));
        by_ours
            .weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&by_burn.weight.val().into_data(), Tolerance::default());
        // The second step differs from a first one, so the loaded moments were used.
        let fresh = AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, Linear<B>>()
            .step(1e-2, model.clone(), grads(&model));
        let moved = (fresh.weight.val() - by_ours.weight.val())
            .abs()
            .max()
            .into_scalar();
        assert!(moved > 1e-6, "the loaded state made no difference");
    }
}

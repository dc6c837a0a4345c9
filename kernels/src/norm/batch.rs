//! Batch normalisation with a host kernel for training on the CPU backends (Ioffe & Szegedy 2015,
//! "Batch Normalization"; d2l.ai ch. 8.5).
//!
//! In training, each channel `c` is normalised by the statistics of the batch, over the `M` values
//! of that channel in every image and position, then scaled and shifted by learned `gamma` and
//! `beta`:
//!
//! ```text
//! mean_c = (1/M) sum x          var_c = (1/M) sum (x - mean_c)^2      s_c = 1 / sqrt(var_c + eps)
//! x^ = (x - mean_c) s_c         y = gamma_c x^ + beta_c
//! ```
//!
//! and the running statistics that inference uses move towards the batch's:
//! `running = (1 - momentum) running + momentum batch` (`var_c` biased, as Burn keeps it). The
//! gradients, with `dy` the output's and the sums over the channel's `M` values:
//!
//! ```text
//! dbeta_c = sum dy              dgamma_c = sum dy x^
//! dx = gamma_c s_c (dy - dbeta_c / M - x^ dgamma_c / M)
//! ```
//!
//! (the last two terms are the gradient flowing back through `mean_c` and `var_c`).
//!
//! Why not Burn's op: burn-nn's `BatchNorm` writes these as a dozen tensor ops (a transpose and a
//! copy for each statistic, then subtract, divide, multiply, add), and autodiff records a backward
//! step for each, so a training step reads and writes the activations some twenty times; on the
//! CPU the nine batch norms of `fashion-resnet` cost more than its convolutions. [`BatchNorm`] has
//! the fields of Burn's `BatchNorm` (records load either way) and, in training on a backend whose
//! tensors are host arrays ([`KernelBackend::HOST_KERNELS`]), runs three passes over the input
//! forward (mean, variance, then the output) and two backward (the two sums, then `dx`); in inference
//! one pass, `y = x scale_c + shift_c`. Every other backend runs Burn's op.

use crate::KernelBackend;
use crate::backend::Op;
use crate::host::{HostValues, vector_values};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param, RunningState};
use burn::nn as burn_nn;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};

/// Configuration of a [`BatchNorm`]: burn-nn's `BatchNormConfig`, field for field.
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// Channels: the size of the input's second axis.
    pub num_features: usize,
    /// Added to the variance before its square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// How far each batch moves the running statistics.
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BatchNormConfig {
    /// The layer: `gamma` ones, `beta` zeros, running mean 0 and variance 1, as burn-nn's.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm<B> {
        let channels = [self.num_features];
        BatchNorm {
            gamma: Initializer::Ones.init(channels, device),
            beta: Initializer::Zeros.init(channels, device),
            running_mean: RunningState::new(Tensor::zeros(channels, device)),
            running_var: RunningState::new(Tensor::ones(channels, device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

/// Batch normalisation over the second axis of `[batch, channels, ...]`: burn-nn's `BatchNorm`
/// with the host passes of the module docs in training on the CPU backends. The fields are
/// Burn's.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct BatchNorm<B: Backend> {
    /// Scale per channel, `[channels]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift per channel, `[channels]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Mean per channel that inference normalises with, `[channels]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Variance per channel that inference normalises with, `[channels]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// How far each batch moves the running statistics.
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub epsilon: f64,
}

impl<B: Backend> BatchNorm<B> {
    /// Normalises each channel: by the batch's statistics in training (and moves the running
    /// ones), by the running statistics in inference; burn-nn's `BatchNorm::forward`.
    ///
    /// # Shapes
    /// - input: `[batch, channels, ...]`, 2 to 4 axes on the fast path, any rank from 2 otherwise
    /// - output: the input's
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        if !(2..=4).contains(&D) {
            return self.burn().forward(input);
        }
        let dims = input.dims();
        let axis = |a: usize| if a < D { dims[a] } else { 1 };
        let x = input.clone().reshape([dims[0], dims[1], axis(2), axis(3)]);
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        if B::ad_enabled(&input.device()) {
            let args = (x, gamma, beta, self.epsilon);
            let Some(normalised) = crate::backend::run::<BatchNormOp, B>(args) else {
                return self.burn().forward(input);
            };
            self.update_running(normalised.mean, normalised.var);
            normalised.output.reshape(dims)
        } else {
            let running = [self.running_mean.value(), self.running_var.value()];
            let args = (x, [gamma, beta], running, self.epsilon);
            match crate::backend::run::<BatchNormInferenceOp, B>(args) {
                Some(output) => output.reshape(dims),
                None => self.burn().forward(input),
            }
        }
    }

    /// Moves the running statistics towards the batch's, as burn-nn does.
    fn update_running(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>) {
        let device = mean.device();
        for (running, batch) in [(&self.running_mean, mean), (&self.running_var, var)] {
            let moved = running
                .value_sync()
                .to_device(&device)
                .mul_scalar(1.0 - self.momentum)
                .add(batch.detach().mul_scalar(self.momentum));
            running.update(moved.detach());
        }
    }

    /// The same layer as burn-nn's, sharing the parameters and the running statistics.
    fn burn(&self) -> burn_nn::BatchNorm<B> {
        self.clone().into()
    }
}

impl<B: Backend> From<BatchNorm<B>> for burn_nn::BatchNorm<B> {
    fn from(norm: BatchNorm<B>) -> Self {
        Self {
            gamma: norm.gamma,
            beta: norm.beta,
            running_mean: norm.running_mean,
            running_var: norm.running_var,
            momentum: norm.momentum,
            epsilon: norm.epsilon,
        }
    }
}

impl<B: Backend> ModuleDisplay for BatchNorm<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds.
    fn custom_content(&self, content: Content) -> Option<Content> {
        let [num_features] = self.beta.shape().dims();
        content
            .add("num_features", &num_features)
            .add("momentum", &self.momentum)
            .add("epsilon", &self.epsilon)
            .optional()
    }
}

/// What the training forward pass returns: the output, and the batch's statistics (untracked) for
/// the running ones.
pub(crate) struct Normalised<B: Backend> {
    output: Tensor<B, 4>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
}

/// The training forward pass of [`BatchNorm::forward`] as an [`Op`]: the backend's fast pass, or
/// `None` for Burn's.
struct BatchNormOp;

impl Op for BatchNormOp {
    type Args<B: Backend> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>, f64);
    type Output<B: Backend> = Option<Normalised<B>>;

    fn fast<F: KernelBackend>((x, gamma, beta, epsilon): Self::Args<F>) -> Option<Normalised<F>> {
        let float = |t: FloatTensor<F>| TensorPrimitive::Float(t);
        let [output, mean, var] = F::batch_norm_fast(
            x.into_primitive().tensor(),
            gamma.into_primitive().tensor(),
            beta.into_primitive().tensor(),
            epsilon,
        )?;
        Some(Normalised {
            output: Tensor::from_primitive(float(output)),
            mean: Tensor::from_primitive(float(mean)),
            var: Tensor::from_primitive(float(var)),
        })
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<Normalised<B>> {
        None
    }
}

/// The inference pass of [`BatchNorm::forward`] as an [`Op`]: the backend's fast pass, or `None`
/// for Burn's. Arguments: the input, `[gamma, beta]`, `[running mean, running variance]`, epsilon.
struct BatchNormInferenceOp;

impl Op for BatchNormInferenceOp {
    type Args<B: Backend> = (Tensor<B, 4>, [Tensor<B, 1>; 2], [Tensor<B, 1>; 2], f64);
    type Output<B: Backend> = Option<Tensor<B, 4>>;

    fn fast<F: KernelBackend>(
        (x, [gamma, beta], [mean, var], epsilon): Self::Args<F>,
    ) -> Option<Tensor<F, 4>> {
        let [gamma, beta, mean, var] =
            [gamma, beta, mean, var].map(|t| t.into_primitive().tensor());
        let output = F::batch_norm_inference_fast(
            x.into_primitive().tensor(),
            [&gamma, &beta, &mean, &var],
            epsilon,
        )?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<Tensor<B, 4>> {
        None
    }
}

/// A batch's statistics per channel, and `gamma`, as the backward pass needs them.
#[derive(Debug, Clone)]
pub(crate) struct BatchStatistics {
    mean: Vec<f32>,
    /// The biased variance, `(1/M) sum (x - mean)^2`.
    var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
}

/// The training forward pass on the host: the output, row-major, and the batch's statistics;
/// `None` when the backend does not lend the values as `f32`.
///
/// # Shapes
/// - x: `[batch, channels, height, width]`
/// - gamma, beta: `[channels]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn forward_on_host<B: KernelBackend>(
    x: &FloatTensor<B>,
    gamma: &FloatTensor<B>,
    beta: &FloatTensor<B>,
    epsilon: f64,
) -> Option<(FloatTensor<B>, BatchStatistics)> {
    let device = B::float_device(x);
    let shape = x.shape();
    let [batch, channels, height, width] = shape.dims();
    let gamma = vector_values::<B>(gamma)?;
    let beta = vector_values::<B>(beta)?;
    if gamma.len() != channels || beta.len() != channels || batch * height * width == 0 {
        return None;
    }
    let (output, statistics) = B::with_values(x, |x: HostValues<'_, 4>| {
        let x = x.row_major();
        let planes = Planes::new(&x, [batch, channels, height * width]);
        let count = planes.count();
        let mut statistics = BatchStatistics {
            mean: Vec::with_capacity(channels),
            var: Vec::with_capacity(channels),
            inv_std: Vec::with_capacity(channels),
            gamma,
        };
        for c in 0..channels {
            let mean = planes.sum(c, |v| v) / count;
            let var = planes.sum(c, |v| (v - mean as f32).powi(2)) / count;
            statistics.mean.push(mean as f32);
            statistics.var.push(var as f32);
            statistics
                .inv_std
                .push((1.0 / (var + epsilon).sqrt()) as f32);
        }
        let output = planes.scale_and_shift(
            &statistics.gamma,
            &beta,
            &statistics.mean,
            &statistics.inv_std,
        );
        (output, statistics)
    })?;
    let output = B::float_from_data(TensorData::new(output, shape), &device);
    Some((output, statistics))
}

/// The inference pass on the host, with the running statistics: the output, row-major; `None`
/// when the backend does not lend the values as `f32`.
///
/// # Shapes
/// - x: `[batch, channels, height, width]`
/// - gamma, beta, mean, var: `[channels]`
/// - output: `[batch, channels, height, width]`
#[cfg_attr(
    not(any(test, feature = "flex", feature = "ndarray")),
    allow(dead_code)
)]
pub(crate) fn inference_on_host<B: KernelBackend>(
    x: &FloatTensor<B>,
    [gamma, beta, mean, var]: [&FloatTensor<B>; 4],
    epsilon: f64,
) -> Option<FloatTensor<B>> {
    let device = B::float_device(x);
    let shape = x.shape();
    let [batch, channels, height, width] = shape.dims();
    let [gamma, beta, mean, var] = [gamma, beta, mean, var].map(vector_values::<B>);
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    if [&gamma, &beta, &mean, &var]
        .iter()
        .any(|v| v.len() != channels)
    {
        return None;
    }
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let output = B::with_values(x, |x: HostValues<'_, 4>| {
        let x = x.row_major();
        Planes::new(&x, [batch, channels, height * width])
            .scale_and_shift(&gamma, &beta, &mean, &inv_std)
    })?;
    Some(B::float_from_data(TensorData::new(output, shape), &device))
}

/// The `[batch, channels, length]` planes of a row-major tensor, a channel at a time.
struct Planes<'a> {
    values: &'a [f32],
    dims: [usize; 3],
}

impl<'a> Planes<'a> {
    fn new(values: &'a [f32], dims: [usize; 3]) -> Self {
        Self { values, dims }
    }

    /// `M`: the values of one channel, over the batch and the positions.
    fn count(&self) -> f64 {
        (self.dims[0] * self.dims[2]) as f64
    }

    /// Where image `n`'s plane of channel `c` lies.
    fn range(&self, n: usize, c: usize) -> std::ops::Range<usize> {
        let [_, channels, length] = self.dims;
        let start = (n * channels + c) * length;
        start..start + length
    }

    /// Channel `c`'s plane in each image.
    fn of(&self, c: usize) -> impl Iterator<Item = (usize, &'a [f32])> + '_ {
        (0..self.dims[0]).map(move |n| (n, &self.values[self.range(n, c)]))
    }

    /// `gamma_c (x - mean_c) inv_std_c + beta_c` for every value, row-major: one multiply-add
    /// each.
    fn scale_and_shift(
        &self,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        inv_std: &[f32],
    ) -> Vec<f32> {
        let mut output = vec![0.0f32; self.values.len()];
        let [_, channels, length] = self.dims;
        for (plane, (out, x)) in output
            .chunks_exact_mut(length)
            .zip(self.values.chunks_exact(length))
            .enumerate()
        {
            let c = plane % channels;
            let scale = gamma[c] * inv_std[c];
            let shift = beta[c] - mean[c] * scale;
            for (y, &v) in out.iter_mut().zip(x) {
                *y = v * scale + shift;
            }
        }
        output
    }

    /// `sum f(v)` over channel `c`: in `f32` within a plane (which vectorises), in `f64` across
    /// planes.
    fn sum(&self, c: usize, f: impl Fn(f32) -> f32) -> f64 {
        self.of(c)
            .map(|(_, plane)| plane.iter().map(|&v| f(v)).sum::<f32>() as f64)
            .sum()
    }
}

impl super::Statistics<4> for BatchStatistics {
    fn features(&self) -> usize {
        self.gamma.len()
    }

    /// The formulas of the module docs, row-major.
    fn backward(&self, x: HostValues<'_, 4>, dy: HostValues<'_, 4>) -> [Vec<f32>; 3] {
        backward_on_host(x, dy, self)
    }
}

/// The gradients of `x`, `gamma` and `beta` from the output's, `dy`: the formulas of the module
/// docs, row-major.
fn backward_on_host(
    x: HostValues<'_, 4>,
    dy: HostValues<'_, 4>,
    statistics: &BatchStatistics,
) -> [Vec<f32>; 3] {
    let [batch, channels, height, width] = x.dims;
    let dims = [batch, channels, height * width];
    let (x, dy) = (x.row_major(), dy.row_major());
    let (xs, dys) = (Planes::new(&x, dims), Planes::new(&dy, dims));
    let count = xs.count() as f32;
    let mut dx = vec![0.0f32; x.len()];
    let mut dgamma = Vec::with_capacity(channels);
    let mut dbeta = Vec::with_capacity(channels);
    for c in 0..channels {
        let mean = statistics.mean[c];
        let inv_std = statistics.inv_std[c];
        // Both sums in one pass over the channel's values.
        let (sum_dy, sum_dy_centred) = xs.of(c).zip(dys.of(c)).fold(
            (0.0f64, 0.0f64),
            |(sum_dy, sum_dy_centred), ((_, x), (_, g))| {
                let plane_dy: f32 = g.iter().sum();
                let plane_centred: f32 = x.iter().zip(g).map(|(&x, &g)| g * (x - mean)).sum();
                (
                    sum_dy + plane_dy as f64,
                    sum_dy_centred + plane_centred as f64,
                )
            },
        );
        let (sum_dy, sum_dy_centred) = (sum_dy as f32, sum_dy_centred as f32);
        // dx = k (dy - a - (x - mean) b), with x^ dgamma / M = (x - mean) s^2 sum(dy (x - mean)) / M.
        let k = statistics.gamma[c] * inv_std;
        let a = sum_dy / count;
        let b = sum_dy_centred * inv_std * inv_std / count;
        for ((n, x), (_, g)) in xs.of(c).zip(dys.of(c)) {
            let out = &mut dx[xs.range(n, c)];
            for ((d, &x), &g) in out.iter_mut().zip(x).zip(g) {
                *d = k * (g - a - (x - mean) * b);
            }
        }
        dbeta.push(sum_dy);
        dgamma.push(sum_dy_centred * inv_std);
    }
    [dx, dgamma, dbeta]
}

/// The training forward pass of the autodiff backends' [`KernelBackend::batch_norm_fast`]:
/// `[output, batch mean, batch variance]`, the statistics untracked; `None` (Burn's op) unless
/// the inner backend runs host kernels and lends the values as `f32`.
pub(crate) fn autodiff_batch_norm<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> Option<[FloatTensor<Autodiff<B, C>>; 3]> {
    if !B::HOST_KERNELS {
        return None;
    }
    let (output, statistics) =
        forward_on_host::<B>(&x.primitive, &gamma.primitive, &beta.primitive, epsilon)?;
    let device = B::float_device(&output);
    let channel = |values: &[f32]| {
        let inner = B::float_from_data(TensorData::new(values.to_vec(), [values.len()]), &device);
        <Autodiff<B, C> as AutodiffBackend>::from_inner(inner)
    };
    let (mean, var) = (channel(&statistics.mean), channel(&statistics.var));
    let output = super::record::<B, C, _, 4>([x, gamma, beta], output, statistics);
    Some([output, mean, var])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::round_trip;

    #[test]
    fn records_load_both_ways_between_burn_and_pdl() {
        let device = Default::default();
        let mut burns = burn_nn::BatchNormConfig::new(4).init(&device);
        burns.gamma = Param::from_tensor(Tensor::from_floats([1.0, 2.0, 3.0, 4.0], &device));
        let ours = round_trip(&burns, BatchNormConfig::new(4).init(&device));
        let gamma = burns.gamma.val().into_data();
        ours.gamma.val().into_data().assert_eq(&gamma, true);
        let back = round_trip(&ours, burn_nn::BatchNormConfig::new(4).init(&device));
        back.gamma.val().into_data().assert_eq(&gamma, true);
    }
}

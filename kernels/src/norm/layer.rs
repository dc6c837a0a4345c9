//! Layer normalisation with one host pass forward and one backward on the CPU backends (Ba, Kiros
//! & Hinton 2016, "Layer Normalization"; the transformers' norm, d2l.ai ch. 11.7).
//!
//! Each row `x` of the last axis, of width `d`, is normalised by its own statistics, then scaled
//! and shifted by learned `gamma` and `beta` (one value per feature):
//!
//! ```text
//! mean = (1/d) sum x          var = (1/d) sum (x - mean)^2          s = 1 / sqrt(var + eps)
//! x^ = (x - mean) s           y = gamma x^ + beta
//! ```
//!
//! The gradients, with `dy` the output's, `g = dy gamma` and the means over the row's `d` values:
//!
//! ```text
//! dbeta = sum over rows of dy          dgamma = sum over rows of dy x^
//! dx = s (g - mean(g) - x^ mean(g x^))
//! ```
//!
//! (the last two terms are the gradient flowing back through `mean` and `var`).
//!
//! Why not Burn's op: burn 0.21's `layer_norm` is a chain of nine tensor ops (two means, a
//! subtraction, a square, a square root, a division, the scale and the shift), and autodiff
//! records a backward step for each, so a training step reads and writes each block's activations
//! some thirty times: in `shakespeare-gpt`'s nine layer norms a step spent more time than in its
//! attention. [`LayerNorm`] has the fields of Burn's `LayerNorm` (records load either way) and, on
//! a backend whose tensors are host arrays ([`KernelBackend::HOST_KERNELS`]) under autodiff, runs
//! one pass per row forward (keeping each row's `mean` and `s`) and one backward, rows split
//! across the cores. Every other backend, and inference, runs Burn's op (flex's is already one
//! pass).

use crate::KernelBackend;
use crate::activation::{sum_in_lanes, vectorised};
use crate::backend::Op;
use crate::host::{HostValues, add_in_order, vector_values};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// Rows per task of the host passes.
const ROWS: usize = 64;

/// Configuration of a [`LayerNorm`]: burn-nn's `LayerNormConfig`, field for field.
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Width of the last axis, which each row is normalised over.
    pub d_model: usize,
    /// Added to the variance before its square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether the layer learns a shift `beta`.
    #[config(default = true)]
    pub bias: bool,
}

impl LayerNormConfig {
    /// The layer: `gamma` ones and `beta` zeros, as burn-nn's.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: self
                .bias
                .then(|| Initializer::Zeros.init([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

/// Layer normalisation over the last axis: burn-nn's `LayerNorm`, with the host passes of the
/// module docs in training on the CPU backends. The fields are Burn's.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct LayerNorm<B: Backend> {
    /// Scale per feature, `[d_model]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift per feature, `[d_model]`; none without a bias.
    pub beta: Option<Param<Tensor<B, 1>>>,
    /// Added to the variance before its square root.
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Normalises each row of the last axis; burn-nn's `LayerNorm::forward`.
    ///
    /// # Shapes
    /// - input: `[..., d_model]`
    /// - output: the input's
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let gamma = self.gamma.val();
        let beta = self.beta.as_ref().map(Param::val);
        let dims = input.dims();
        if B::ad_enabled(&input.device())
            && let Some(beta) = beta.clone()
        {
            let rows = input
                .clone()
                .reshape([dims[..D - 1].iter().product(), dims[D - 1]]);
            if let Some(output) = layer_norm_rows(rows, gamma.clone(), beta, self.epsilon) {
                return output.reshape(dims);
            }
        }
        let beta = beta.map(|b| b.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            input.into_primitive().tensor(),
            gamma.into_primitive().tensor(),
            beta,
            self.epsilon,
        )))
    }
}

impl<B: Backend> ModuleDisplay for LayerNorm<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds.
    fn custom_content(&self, content: Content) -> Option<Content> {
        let [d_model] = self.gamma.shape().dims();
        content
            .add("d_model", &d_model)
            .add("epsilon", &self.epsilon)
            .add("bias", &self.beta.is_some())
            .optional()
    }
}

/// The training pass of [`LayerNorm::forward`] on `[rows, d]`: the host passes on an autodiff
/// backend over a CPU backend, `None` elsewhere.
pub(crate) fn layer_norm_rows<B: Backend>(
    rows: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Option<Tensor<B, 2>> {
    crate::backend::run::<LayerNormOp, B>((rows, gamma, beta, epsilon))
}

/// The training pass of [`LayerNorm::forward`] on `[rows, d]` as an [`Op`]: the backend's fast
/// pass, or `None` for Burn's. Arguments: the rows, `gamma`, `beta`, epsilon.
struct LayerNormOp;

impl Op for LayerNormOp {
    type Args<B: Backend> = (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>, f64);
    type Output<B: Backend> = Option<Tensor<B, 2>>;

    fn fast<F: KernelBackend>((x, gamma, beta, epsilon): Self::Args<F>) -> Option<Tensor<F, 2>> {
        let [x, gamma, beta] = [
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        ]
        .map(TensorPrimitive::tensor);
        let output = F::layer_norm_fast(x, gamma, beta, epsilon)?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<Tensor<B, 2>> {
        None
    }
}

/// Each row's statistics, and `gamma`, as the backward pass needs them.
#[derive(Debug, Clone)]
pub(crate) struct RowStatistics {
    mean: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
}

/// `mean` and `1 / sqrt(var + eps)` of one row, the variance from the centred values (two
/// passes, as Burn's op computes it).
#[inline(always)]
fn statistics(row: &[f32], epsilon: f64) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = sum_in_lanes(row, row, |v, _| v) / d;
    let var = sum_in_lanes(row, row, |v, _| (v - mean) * (v - mean)) / d;
    (mean, (1.0 / (f64::from(var) + epsilon).sqrt()) as f32)
}

/// The forward pass on the host: the output `[rows, d]`, row-major, and each row's statistics;
/// `None` when the backend does not lend the values as `f32` or the shapes disagree.
pub(crate) fn forward_on_host<B: KernelBackend>(
    x: &FloatTensor<B>,
    gamma: &FloatTensor<B>,
    beta: &FloatTensor<B>,
    epsilon: f64,
) -> Option<(FloatTensor<B>, RowStatistics)> {
    let shape = x.shape();
    let [rows, d] = shape.dims();
    let gamma = vector_values::<B>(gamma)?;
    let beta = vector_values::<B>(beta)?;
    if gamma.len() != d || beta.len() != d || rows == 0 {
        return None;
    }
    let (output, mean, inv_std) = B::with_values(x, |x: HostValues<'_, 2>| {
        let x = x.row_major();
        let mut output = vec![0.0f32; rows * d];
        let (mut mean, mut inv_std) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        output
            .par_chunks_mut(ROWS * d)
            .zip(x.par_chunks(ROWS * d))
            .zip(mean.par_chunks_mut(ROWS).zip(inv_std.par_chunks_mut(ROWS)))
            .for_each(|((out, x), (mean, inv_std))| {
                vectorised(
                    #[inline(always)]
                    || {
                        let rows = out.chunks_exact_mut(d).zip(x.chunks_exact(d));
                        for ((out, x), (m, s)) in rows.zip(mean.iter_mut().zip(inv_std.iter_mut()))
                        {
                            (*m, *s) = statistics(x, epsilon);
                            for (((y, &v), &g), &b) in out.iter_mut().zip(x).zip(&gamma).zip(&beta)
                            {
                                *y = (v - *m) * *s * g + b;
                            }
                        }
                    },
                )
            });
        (output, mean, inv_std)
    })?;
    let output = B::float_from_data(TensorData::new(output, shape), &B::float_device(x));
    Some((
        output,
        RowStatistics {
            mean,
            inv_std,
            gamma,
        },
    ))
}

impl super::Statistics<2> for RowStatistics {
    fn features(&self) -> usize {
        self.gamma.len()
    }

    /// The formulas of the module docs, row-major.
    fn backward(&self, x: HostValues<'_, 2>, dy: HostValues<'_, 2>) -> [Vec<f32>; 3] {
        backward_on_host(x, dy, self)
    }
}

/// The gradients of `x`, `gamma` and `beta` from the output's, `dy`: the formulas of the module
/// docs, row-major. Each task sums its rows' share of `dgamma` and `dbeta`; the shares are added
/// at the end, in order ([`add_in_order`]).
fn backward_on_host(
    x: HostValues<'_, 2>,
    dy: HostValues<'_, 2>,
    statistics: &RowStatistics,
) -> [Vec<f32>; 3] {
    let [rows, d] = x.dims;
    let (x, dy) = (x.row_major(), dy.row_major());
    let gamma = &statistics.gamma;
    let mut dx = vec![0.0f32; rows * d];
    let (dgamma, dbeta): (Vec<_>, Vec<_>) = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d).zip(dy.par_chunks(ROWS * d)))
        .zip(
            statistics
                .mean
                .par_chunks(ROWS)
                .zip(statistics.inv_std.par_chunks(ROWS)),
        )
        .map(|((dx, (x, dy)), (mean, inv_std))| {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
            // Per row: `x^`, and `g = dy gamma`.
            let (mut normalised, mut g) = (vec![0.0f32; d], vec![0.0f32; d]);
            vectorised(
                #[inline(always)]
                || {
                    let rows = dx
                        .chunks_exact_mut(d)
                        .zip(x.chunks_exact(d).zip(dy.chunks_exact(d)));
                    for ((dx, (x, dy)), (&m, &s)) in rows.zip(mean.iter().zip(inv_std)) {
                        for (((((n, g), &x), &dy), &gamma), (dgamma, dbeta)) in normalised
                            .iter_mut()
                            .zip(g.iter_mut())
                            .zip(x)
                            .zip(dy)
                            .zip(gamma)
                            .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
                        {
                            *n = (x - m) * s;
                            *g = dy * gamma;
                            *dgamma += dy * *n;
                            *dbeta += dy;
                        }
                        let mean_g = sum_in_lanes(&g, &g, |g, _| g) / d as f32;
                        let mean_g_normalised =
                            sum_in_lanes(&g, &normalised, |g, n| g * n) / d as f32;
                        for ((dx, &n), &g) in dx.iter_mut().zip(&normalised).zip(&g) {
                            *dx = s * (g - mean_g - n * mean_g_normalised);
                        }
                    }
                },
            );
            (dgamma, dbeta)
        })
        .unzip();
    [dx, add_in_order(dgamma, d), add_in_order(dbeta, d)]
}

/// The autodiff backends' [`KernelBackend::layer_norm_fast`]: the host forward pass recorded with
/// its written-out backward; `None` (Burn's op) unless the inner backend runs host kernels and
/// lends the values as `f32`.
pub(crate) fn autodiff_layer_norm<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let (output, statistics) =
        forward_on_host::<B>(&x.primitive, &gamma.primitive, &beta.primitive, epsilon)?;
    Some(super::record::<B, C, _, 2>(
        [x, gamma, beta],
        output,
        statistics,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::round_trip;
    use burn::backend::NdArray;
    use burn::nn as burn_nn;

    #[test]
    fn the_host_layer_norm_equals_burns_in_values_and_gradients() {
        crate::parity::check_layer_norm::<Autodiff<NdArray>>(&Default::default()).unwrap();
    }

    #[test]
    fn records_load_both_ways_between_burn_and_pdl() {
        let device = Default::default();
        let mut burns = burn_nn::LayerNormConfig::new(4).init(&device);
        burns.gamma = Param::from_tensor(Tensor::from_floats([1.0, 2.0, 3.0, 4.0], &device));
        let ours = round_trip(&burns, LayerNormConfig::new(4).init(&device));
        let gamma = burns.gamma.val().into_data();
        ours.gamma.val().into_data().assert_eq(&gamma, true);
        let back = round_trip(&ours, burn_nn::LayerNormConfig::new(4).init(&device));
        back.gamma.val().into_data().assert_eq(&gamma, true);
    }
}

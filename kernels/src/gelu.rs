//! GELU, `x Phi(x)` with the standard normal CDF `Phi` (Hendrycks & Gimpel 2016; BERT's and ViT's
//! MLP), and QuickGELU, `x sigmoid(1.702 x)` (their sigmoid approximation; CLIP's name), each as
//! one host pass forward and one backward.
//!
//! In tensor ops QuickGELU is a scale, a sigmoid and a product, each a pass over the MLP's widest
//! activation with its own backward step, and the CPU backends' sigmoid calls the library's `expf`
//! once per element: in the profile of `shakespeare-gpt`'s training step `expf` and the unary-op
//! loop around it took ~19%. The exact GELU calls the library's `erff` per element, whose slow
//! branch for `|x| > 1.25` took ~9% of `mnist-vit`'s step. Here each pass is one vectorised loop
//! (the `exp` of [`crate::activation`]):
//!
//! - QuickGELU: `y = x s` with `s = sigmoid(1.702 x)`; backward `dy (s + 1.702 x s (1 - s))`;
//! - GELU: `y = x Phi(x)`; backward `dy (Phi(x) + x phi(x))` with the normal density `phi`. `Phi`
//!   is Abramowitz & Stegun's formula 7.1.26 for `erfc` on `|x| / sqrt(2)`, mirrored for negative
//!   `x`: its error is under 7.5e-8 for `Phi`, and under 3e-7 with `f32`'s rounding (checked
//!   below against the integral of `phi` in `f64`). Its `e^{-x^2/2}` is also `phi`'s.
//!
//! Both recompute from the saved input in the backward pass.

use crate::KernelBackend;
use crate::activation::{exp, sigmoid, vectorised};
use crate::backend::{Grads, HostBackward, OnHost, Op, host_kernels, run};
use crate::host::HostValues;
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorPrimitive};
use rayon::prelude::*;

/// The slope of QuickGELU's sigmoid.
const SLOPE: f32 = 1.702;

/// Elements per task of the host passes.
const CHUNK: usize = 1 << 14;

/// Which GELU a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    /// `x Phi(x)`, with the normal CDF `Phi`.
    Exact,
    /// `x sigmoid(1.702 x)`.
    Quick,
}

impl GeluKind {
    /// The value at `x`.
    #[inline(always)]
    fn value(self, x: f32) -> f32 {
        match self {
            Self::Exact => x * normal_cdf_and_density(x).0,
            Self::Quick => x * sigmoid(SLOPE * x),
        }
    }

    /// The derivative at `x`.
    #[inline(always)]
    fn derivative(self, x: f32) -> f32 {
        match self {
            Self::Exact => {
                let (cdf, density) = normal_cdf_and_density(x);
                cdf + x * density
            }
            Self::Quick => {
                let s = sigmoid(SLOPE * x);
                s + SLOPE * x * s * (1.0 - s)
            }
        }
    }

    /// The same function in Burn's ops. The exact GELU is written out, `x (1 + erf(x / sqrt 2))
    /// / 2`, rather than Burn's `gelu`: burn 0.21's `gelu` computes `erf` forward but its backward
    /// step is the derivative of the tanh approximation, up to 9e-4 off the exact one (which
    /// PyTorch's `gelu` gives, and the host pass).
    pub(crate) fn reference<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Exact => {
                let cdf = (x.clone() * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0;
                x * cdf * 0.5
            }
            Self::Quick => x.clone() * burn::tensor::activation::sigmoid(x * f64::from(SLOPE)),
        }
    }
}

/// `(Phi(x), phi(x))`: the standard normal CDF (within 3e-7, absolute, with `f32`'s rounding)
/// and density.
/// `Phi(-|x|)` is `erfc(|x| / sqrt 2) / 2`, by Abramowitz & Stegun 7.1.26; `Phi(|x|)` is one minus
/// it.
#[inline(always)]
pub(crate) fn normal_cdf_and_density(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const INVERSE_SQRT_2PI: f32 = 0.398_942_3;
    let t = 1.0 / (1.0 + P * std::f32::consts::FRAC_1_SQRT_2 * x.abs());
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let gauss = exp(-0.5 * x * x);
    let left_tail = 0.5 * poly * gauss;
    let cdf = if x >= 0.0 { 1.0 - left_tail } else { left_tail };
    (cdf, INVERSE_SQRT_2PI * gauss)
}

/// `x Phi(x)`, element-wise: one host pass on the CPU backends, `x (1 + erf(x / sqrt 2)) / 2` in
/// Burn's ops elsewhere.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    gelu_of_kind(x, GeluKind::Exact)
}

/// `x sigmoid(1.702 x)`, element-wise: one host pass on the CPU backends,
/// [`quick_gelu_reference`] elsewhere.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    gelu_of_kind(x, GeluKind::Quick)
}

/// QuickGELU in Burn's ops: `x sigmoid(1.702 x)`.
pub fn quick_gelu_reference<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    GeluKind::Quick.reference(x)
}

/// The GELU of `kind`: one host pass on the CPU backends, its reference elsewhere.
fn gelu_of_kind<B: Backend, const D: usize>(x: Tensor<B, D>, kind: GeluKind) -> Tensor<B, D> {
    if !host_kernels::<B>() {
        return kind.reference(x);
    }
    let shape = x.shape();
    let flat = x.reshape([shape.num_elements()]);
    match run::<GeluOp, B>((flat.clone().into_primitive().tensor(), kind)) {
        Some(y) => Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(y)).reshape(shape),
        None => kind.reference(flat).reshape(shape),
    }
}

/// [`gelu`] and [`quick_gelu`] as an [`Op`], on a flattened tensor.
struct GeluOp;

impl Op for GeluOp {
    type Args<B: Backend> = (FloatTensor<B>, GeluKind);
    type Output<B: Backend> = Option<FloatTensor<B>>;

    fn fast<F: KernelBackend>((x, kind): Self::Args<F>) -> Option<FloatTensor<F>> {
        F::gelu_fast(x, kind)
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<FloatTensor<B>> {
        None
    }
}

/// The values of a 1-D tensor, in order (a copy only when they are strided).
fn contiguous<'a>(v: &HostValues<'a, 1>) -> std::borrow::Cow<'a, [f32]> {
    if v.strides[0] == 1 {
        std::borrow::Cow::Borrowed(&v.values[..v.dims[0]])
    } else {
        std::borrow::Cow::Owned(
            v.values
                .iter()
                .step_by(v.strides[0])
                .take(v.dims[0])
                .copied()
                .collect(),
        )
    }
}

/// The forward pass on the host; `None` unless the values are lent as `f32`.
pub(crate) fn forward<B: KernelBackend>(
    x: &FloatTensor<B>,
    kind: GeluKind,
) -> Option<FloatTensor<B>> {
    let y = B::with_values(x, |v: HostValues<'_, 1>| {
        let x = contiguous(&v);
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                vectorised(
                    #[inline(always)]
                    || {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = kind.value(x);
                        }
                    },
                )
            });
        y
    })?;
    let n = y.len();
    Some(B::float_from_data(
        TensorData::new(y, [n]),
        &B::float_device(x),
    ))
}

/// The backward step of [`autodiff_gelu`]; its state is the input.
#[derive(Debug)]
struct PdlGelu(GeluKind);

impl<B: KernelBackend> HostBackward<B, 1> for PdlGelu {
    type State = FloatTensor<B>;

    fn gradients(self, dy: FloatTensor<B>, x: FloatTensor<B>, _: [bool; 1]) -> Grads<1> {
        let dx = B::with_values(&x, |x: HostValues<'_, 1>| {
            B::with_values(&dy, |dy: HostValues<'_, 1>| {
                let (x, dy) = (contiguous(&x), contiguous(&dy));
                let mut dx = vec![0.0f32; x.len()];
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                    .for_each(|(dx, (x, dy))| {
                        vectorised(
                            #[inline(always)]
                            || {
                                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                                    *dx = dy * self.0.derivative(x);
                                }
                            },
                        )
                    });
                dx
            })
        })
        .flatten()?;
        let shape = Shape::new([dx.len()]);
        Some([(dx, shape)])
    }
}

/// The autodiff backends' [`KernelBackend::gelu_fast`]: the host forward pass recorded with its
/// written-out backward; `None` unless the inner backend runs host kernels.
pub(crate) fn autodiff_gelu<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    kind: GeluKind,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let output = forward::<B>(&x.primitive, kind)?;
    Some(
        match OnHost(PdlGelu(kind))
            .prepare::<C>([x.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(x.primitive, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::normal_cdf_and_density;
    use crate::parity::check_gelu;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn the_host_gelus_equal_burns_ops_in_values_and_gradients() {
        check_gelu::<Autodiff<NdArray>>(&Default::default()).unwrap();
    }

    /// `Phi(x) = 1/2 + integral of phi from 0 to x`, by Simpson's rule in `f64` (error ~1e-13).
    fn normal_cdf(x: f64) -> f64 {
        let steps = 4000;
        let h = x / steps as f64;
        let phi = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let inner: f64 = (1..steps)
            .map(|i| phi(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
            .sum();
        0.5 + h / 3.0 * (phi(0.0) + inner + phi(x))
    }

    #[test]
    fn the_normal_cdf_and_density_are_within_3e_7_in_f32() {
        for i in -1000..=1000 {
            let x = i as f32 / 100.0;
            let (cdf, density) = normal_cdf_and_density(x);
            let exact = normal_cdf(f64::from(x));
            assert!(
                (f64::from(cdf) - exact).abs() < 3e-7,
                "Phi({x}) = {cdf}, exactly {exact}"
            );
            let root = (2.0 * std::f64::consts::PI).sqrt();
            let exact_density = (-0.5 * f64::from(x).powi(2)).exp() / root;
            assert!(
                (f64::from(density) - exact_density).abs() < 1e-7,
                "phi({x}) = {density}, exactly {exact_density}"
            );
        }
        assert!(normal_cdf_and_density(f32::NAN).0.is_nan());
        assert_eq!(normal_cdf_and_density(100.0), (1.0, 0.0));
        assert_eq!(normal_cdf_and_density(-100.0), (0.0, 0.0));
    }
}

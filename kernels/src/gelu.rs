//! QuickGELU, `x sigmoid(1.702 x)` (Hendrycks & Gimpel 2016's sigmoid approximation of GELU;
//! CLIP's name), as one host pass forward and one backward.
//!
//! In tensor ops it is a scale, a sigmoid and a product, each a pass over the MLP's widest
//! activation with its own backward step, and the CPU backends' sigmoid calls the library's `expf`
//! once per element: in the profile of `shakespeare-gpt`'s training step `expf` and the unary-op
//! loop around it took ~19%. Here the forward pass is one vectorised loop (the `exp` of
//! [`crate::activation`]), and the backward pass is `dy (s + 1.702 x s (1 - s))` with
//! `s = sigmoid(1.702 x)` recomputed from the saved input, again one loop.

use crate::KernelBackend;
use crate::activation::sigmoid;
use crate::backend::{Op, host_kernels, register_gradients, run};
use crate::host::HostValues;
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorPrimitive};
use rayon::prelude::*;

/// The slope of QuickGELU's sigmoid.
const SLOPE: f32 = 1.702;

/// Elements per task of the host passes.
const CHUNK: usize = 1 << 14;

/// `x sigmoid(1.702 x)`, element-wise: one host pass on the CPU backends,
/// [`quick_gelu_reference`] elsewhere.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !host_kernels::<B>() {
        return quick_gelu_reference(x);
    }
    let shape = x.shape();
    let flat = x.reshape([shape.num_elements()]);
    match run::<QuickGeluOp, B>(flat.clone().into_primitive().tensor()) {
        Some(y) => Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(y)).reshape(shape),
        None => quick_gelu_reference(flat).reshape(shape),
    }
}

/// QuickGELU in Burn's ops: `x sigmoid(1.702 x)`.
pub fn quick_gelu_reference<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * burn::tensor::activation::sigmoid(x * f64::from(SLOPE))
}

/// [`quick_gelu`] as an [`Op`], on a flattened tensor.
struct QuickGeluOp;

impl Op for QuickGeluOp {
    type Args<B: Backend> = FloatTensor<B>;
    type Output<B: Backend> = Option<FloatTensor<B>>;

    fn fast<F: KernelBackend>(x: FloatTensor<F>) -> Option<FloatTensor<F>> {
        F::quick_gelu_fast(x)
    }

    fn reference<B: Backend>(_: FloatTensor<B>) -> Option<FloatTensor<B>> {
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
pub(crate) fn forward<B: KernelBackend>(x: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let y = B::with_values(x, |v: HostValues<'_, 1>| {
        let x = contiguous(&v);
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * sigmoid(SLOPE * x);
                }
            });
        y
    })?;
    let n = y.len();
    Some(B::float_from_data(
        TensorData::new(y, [n]),
        &B::float_device(x),
    ))
}

/// The backward step of [`autodiff_quick_gelu`]; its state is the input.
#[derive(Debug)]
struct PdlQuickGelu;

impl<B: KernelBackend> Backward<B, 1> for PdlQuickGelu {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let upstream = grads.consume::<B>(&ops.node);
        let [node] = ops.parents;
        let Some(node) = node else { return };
        let x = ops.state;
        let dx = B::with_values(&x, |x: HostValues<'_, 1>| {
            B::with_values(&upstream, |dy: HostValues<'_, 1>| {
                let (x, dy) = (contiguous(&x), contiguous(&dy));
                let mut dx = vec![0.0f32; x.len()];
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                    .for_each(|(dx, (x, dy))| {
                        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                            let s = sigmoid(SLOPE * x);
                            *dx = dy * (s + SLOPE * x * s * (1.0 - s));
                        }
                    });
                dx
            })
        })
        .flatten()
        .expect("the forward pass lent this backend's values as f32");
        let shape = Shape::new([dx.len()]);
        let device = B::float_device(&upstream);
        register_gradients::<B, 1>(grads, [Some(node.id)], [(dx, shape)], &device);
    }
}

/// The autodiff backends' [`KernelBackend::quick_gelu_fast`]: the host forward pass recorded with
/// its written-out backward; `None` unless the inner backend runs host kernels.
pub(crate) fn autodiff_quick_gelu<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let output = forward::<B>(&x.primitive)?;
    Some(
        match PdlQuickGelu
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
    use crate::parity::check_quick_gelu;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn the_host_quick_gelu_equals_burns_ops_in_values_and_gradients() {
        check_quick_gelu::<Autodiff<NdArray>>(&Default::default()).unwrap();
    }
}

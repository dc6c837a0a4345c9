//! Normalisation layers with host kernels for training on the CPU backends, under burn-nn's
//! names and fields: [`BatchNorm`] (`batch.rs`, the CNNs) and [`LayerNorm`] (`layer.rs`, the
//! transformers). Both record the same backward step ([`record`]): their statistics and the input
//! kept from the forward pass, one host pass to the gradients of the input, `gamma` and `beta`.

mod batch;
mod layer;

pub use batch::{BatchNorm, BatchNormConfig, BatchNormRecord};
pub(crate) use batch::{autodiff_batch_norm, inference_on_host as batch_norm_inference_on_host};
pub(crate) use layer::autodiff_layer_norm;
#[cfg(any(test, feature = "parity"))]
pub(crate) use layer::layer_norm_rows;
pub use layer::{LayerNorm, LayerNormConfig, LayerNormRecord};

use crate::KernelBackend;
use crate::backend::{Grads, HostBackward, OnHost};
use crate::host::HostValues;
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;
use std::marker::PhantomData;

/// What a normalisation keeps from its forward pass for the backward one: its statistics, and
/// the host pass from the input `[..; D]` and the output's gradient to `[dx, dgamma, dbeta]`.
pub(crate) trait Statistics<const D: usize>:
    Clone + Send + std::fmt::Debug + 'static
{
    /// Features normalised: the length of `gamma` and `beta`.
    fn features(&self) -> usize;

    /// The gradients of the input (row-major, the input's shape), `gamma` and `beta`.
    fn backward(&self, x: HostValues<'_, D>, dy: HostValues<'_, D>) -> [Vec<f32>; 3];
}

/// The backward step of a normalisation with statistics `S`; parents `[x, gamma, beta]`.
#[derive(Debug)]
struct NormBackward<S, const D: usize>(PhantomData<S>);

impl<B, S, const D: usize> HostBackward<B, 3> for NormBackward<S, D>
where
    B: KernelBackend,
    S: Statistics<D>,
{
    /// The input, and the statistics.
    type State = (FloatTensor<B>, S);

    fn gradients(self, dy: FloatTensor<B>, (x, statistics): Self::State, _: [bool; 3]) -> Grads<3> {
        let x_shape = x.shape();
        let features = Shape::new([statistics.features()]);
        let [dx, dgamma, dbeta] = B::with_values(&x, |x: HostValues<'_, D>| {
            B::with_values(&dy, |dy: HostValues<'_, D>| statistics.backward(x, dy))
        })
        .flatten()?;
        Some([(dx, x_shape), (dgamma, features.clone()), (dbeta, features)])
    }
}

/// `output`, computed on the host from `[x, gamma, beta]`, as a tensor of the autodiff backend
/// whose backward step is [`Statistics::backward`] (when any of the three is tracked).
fn record<B: KernelBackend, C: CheckpointStrategy, S: Statistics<D>, const D: usize>(
    [x, gamma, beta]: [FloatTensor<Autodiff<B, C>>; 3],
    output: FloatTensor<B>,
    statistics: S,
) -> FloatTensor<Autodiff<B, C>> {
    match OnHost(NormBackward::<S, D>(PhantomData))
        .prepare::<C>([x.node, gamma.node, beta.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, statistics), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// `into` with the parameters of `from`, through the named MessagePack record that `pdl` saves
/// runs in: how the tests check that burn-nn's records load as this crate's layers and back.
#[cfg(test)]
fn round_trip<From, Into>(from: &From, into: Into) -> Into
where
    From: Module<burn::backend::NdArray>,
    Into: Module<burn::backend::NdArray>,
{
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    type Mpk = NamedMpkBytesRecorder<FullPrecisionSettings>;
    let recorder = Mpk::default();
    let bytes = recorder
        .record(from.clone().into_record(), ())
        .expect("the record saves");
    let record = recorder
        .load(bytes, &Default::default())
        .expect("the record loads as the other layer's");
    into.load_record(record)
}

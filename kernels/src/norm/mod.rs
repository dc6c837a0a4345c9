//! Normalisation layers with host kernels for training on the CPU backends, under burn-nn's
//! names and fields: [`BatchNorm`] (`batch.rs`, the CNNs).

mod batch;

pub use batch::{BatchNorm, BatchNormConfig, BatchNormRecord};
pub(crate) use batch::{autodiff_batch_norm, inference_on_host as batch_norm_inference_on_host};

use crate::KernelBackend;
use crate::host::HostValues;
use burn::tensor::ops::FloatTensor;

/// A `[n]` tensor's values (a layer's per-channel parameters).
fn vector_values<B: KernelBackend>(t: &FloatTensor<B>) -> Option<Vec<f32>> {
    B::with_values(t, |v: HostValues<'_, 1>| {
        (0..v.dims[0]).map(|i| v.values[i * v.strides[0]]).collect()
    })
}

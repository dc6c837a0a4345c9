//! Normalisation layers with host kernels for training on the CPU backends, under burn-nn's
//! names and fields: [`BatchNorm`] (`batch.rs`, the CNNs).

mod batch;

pub use batch::{BatchNorm, BatchNormConfig, BatchNormRecord};
pub(crate) use batch::{autodiff_batch_norm, inference_on_host as batch_norm_inference_on_host};

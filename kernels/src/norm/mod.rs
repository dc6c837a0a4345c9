//! Normalisation layers with host kernels for training on the CPU backends, under burn-nn's
//! names and fields: [`BatchNorm`] (`batch.rs`, the CNNs) and [`LayerNorm`] (`layer.rs`, the
//! transformers).

mod batch;
mod layer;

pub use batch::{BatchNorm, BatchNormConfig, BatchNormRecord};
pub(crate) use batch::{autodiff_batch_norm, inference_on_host as batch_norm_inference_on_host};
pub(crate) use layer::autodiff_layer_norm;
#[cfg(any(test, feature = "parity"))]
pub(crate) use layer::layer_norm_rows;
pub use layer::{LayerNorm, LayerNormConfig, LayerNormRecord};

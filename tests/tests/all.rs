//! The cross-crate tests, in one binary so Burn is linked once: download against a local server,
//! every model overfitting one batch, every experiment end to end on tiny IDX files, resume,
//! multi-device, bad input, the kernels (conv, pooling, batch norm, LSTM) against Burn's ops, and (feature `wgpu`) wgpu agreeing with ndarray.

#[path = "all/common.rs"]
mod common;
#[path = "all/download.rs"]
mod download;
#[path = "all/experiments.rs"]
mod experiments;
#[path = "all/kernels.rs"]
mod kernels;
#[path = "all/overfit.rs"]
mod overfit;
#[path = "all/real_data.rs"]
mod real_data;
#[cfg(feature = "wgpu")]
#[path = "all/wgpu.rs"]
mod wgpu;

//! pdl-kernels: the CPU fast paths under the course's models, so that `models/` can read like the
//! textbook.
//!
//! Burn's own ops are correct on every backend but slow where a CNN spends its time on the CPU:
//! the convolution's gradients, max pooling's indices, batch norm's chain of ops, and dropout's
//! Bernoulli sampler. This crate keeps Burn's modules' names and fields ([`Conv2d`],
//! [`MaxPool2d`], [`BatchNorm`], [`Dropout`] and their configs), so a model file writes
//! `self.conv.forward(x)` on any `B: Backend` exactly as with burn-nn, and records load either
//! way; the fast path is picked inside the op by the backend's type (`backend.rs`), and every
//! other backend runs Burn's op.
//!
//! | file | what |
//! |---|---|
//! | [`conv`] | a 2-D convolution with its backward written out (`forward.rs`, `backward.rs`, and `host.rs`: im2col / col2im around the host gemm) |
//! | [`pool`] | max pooling in one host pass that remembers each window's pick |
//! | [`norm`] | batch norm in training: three host passes forward, two backward; layer norm: one each |
//! | [`dropout`] | dropout masks drawn on the host, from a stream each layer owns |
//! | [`attention`] | scaled dot-product attention as one op per (sequence, head), forward and backward |
//! | [`gelu`] | GELU, `x Phi(x)`, and QuickGELU, `x sigmoid(1.702 x)`, each one host pass forward and one backward |
//! | [`linear`] | a fully connected layer that multiplies a `[batch, t, d]` tensor as one `[batch * t, d]` matrix |
//! | [`lstm`] | an LSTM layer over a whole sequence as one op, backpropagation through time written out |
//! | `activation.rs` | `exp`, sigmoid and `tanh` without a library call, so that their loops vectorise, and those loops built for AVX2 where the CPU has it |
//! | `backend.rs` | [`KernelBackend`] (the backends with fast paths) and the dispatch by type |
//! | `host.rs` | the tensors' values as the host sees them, and the gemm every host kernel calls |
//! | `parity/` | checks against Burn's ops (feature `parity`, for `pdl-tests`) |
//!
//! The only crate of the workspace with backend features and gemm dependencies; it knows no
//! model and no file format.

#[cfg(all(feature = "distributed", any(feature = "flex", feature = "ndarray")))]
compile_error!(
    "the `distributed` feature (DDP on CUDA) builds without the CPU backends: burn-autodiff 0.21 \
     then differentiates only backends with collective ops; build with --no-default-features"
);

// Built with no backend feature (as `cargo check -p pdl-models` builds it), no fast path is
// compiled in, so the dispatch has nothing to dispatch to.
mod activation;
pub mod adamw;
pub mod attention;
#[cfg_attr(
    not(any(
        feature = "flex",
        feature = "ndarray",
        feature = "wgpu",
        feature = "cuda"
    )),
    allow(dead_code, unused_imports)
)]
mod backend;
pub mod conv;
pub mod dropout;
pub mod gelu;
mod host;
pub mod linear;
pub mod lstm;
pub mod norm;
// Used by the LSTM's host kernel only, which the CPU backends compile in.
#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
mod packed;
#[cfg(any(test, feature = "parity"))]
pub mod parity;
pub mod pool;
mod rng;

pub use adamw::{AdamW, AdamWConfig};
pub use attention::{attention, fused_attention};
pub use backend::KernelBackend;
pub use conv::{Conv2d, Conv2dConfig, ConvImplementation, conv2d_fast};
pub use dropout::{Dropout, DropoutConfig, RunEpoch};
pub use gelu::{gelu, quick_gelu};
pub use host::{HostValues, Matrix};
pub use linear::{Linear, LinearConfig};
pub use lstm::{LstmRun, fused_lstm, lstm};
pub use norm::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig};
pub use pool::{MaxPool2d, MaxPool2dConfig, Window};

/// How this crate's drop-in layers print (burn-nn's settings for its layers): their attributes
/// on one line, `Linear {d_input: 4, d_output: 2, bias: true}`.
fn one_line_display() -> Option<burn::module::DisplaySettings> {
    burn::module::DisplaySettings::new()
        .with_new_line_after_attribute(false)
        .optional()
}

/// Seeds the host random draws of the layers built from now on, on this thread (the dropout
/// masks: see [`dropout`]). The training pipelines call it through `pdl_models::seeded`, with the
/// backend's own seed.
pub fn seed(seed: u64) {
    dropout::seed(seed);
}

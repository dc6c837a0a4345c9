//! pdl-training: experiments, the Learner wiring, backend choice, and the `pdl` binary.
//!
//! - [`backend`]: which backends are compiled in and the one `#[cfg]` ladder.
//! - [`experiments`]: the registry (`pdl list`) and one file per pipeline.
//! - [`learner`]: metrics, checkpoints, resume, early stopping, renderer, devices.
//! - [`parallel`]: data parallelism, `--devices N`: the global batch in slices, the gradients' mean.
//! - [`stopping`]: which checkpoints are kept, when to stop early, which epoch to end with.
//! - [`schedule`]: warm-up + cosine learning rates.
//! - [`probe`]: a pre-trained encoder judged by a linear probe and k-NN on its frozen features.
//! - [`artifacts`]: what a run writes.
//! - [`cli`]: the commands; [`bench`]: throughput; [`bench_gnn`]: GCN at scale.

pub mod artifacts;
pub mod backend;
pub mod bench;
pub mod bench_gnn;
pub mod bench_nodes;
pub mod cli;
pub mod ddp;
pub mod experiments;
pub mod job;
pub mod learner;
pub mod nodes;
pub mod parallel;
pub mod plots;
pub mod probe;
pub mod renderer;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod stopping;

//! pdl-datasets: the course's datasets in their original file formats.
//!
//! Data flows one way: this crate parses files and builds batches; it knows no model. Every source
//! resolves its files the same way ([`resolve_data_dir`]): `--data-dir`, else `PDL_DATA_DIR`, else the
//! user cache (`~/.cache/pdl`), downloading there when a file is missing ([`download`]).
//!
//! - [`idx`]: the IDX format of MNIST-style image sets (raw or gzipped).
//! - [`mnist`]: MNIST, Fashion-MNIST and any folder holding the same four IDX files.
//! - [`augment`]: seeded shifts and rotations for any image experiment.
//! - [`batcher`]: one flat buffer and one tensor per batch.
//! - [`graph`]: node-classification graphs: Cora (LINQS files), a synthetic block model, splits.
//! - [`timeseries`]: CSV series (ETT, airline passengers), scaling, chronological splits, windows.
//! - [`text`]: Tiny Shakespeare as characters (vocabulary, 90/10 split, shifted windows) and SST-2
//!   as words (GLUE TSV, vocabulary, batches padded with a mask).

pub mod augment;
pub mod batcher;
pub mod download;
mod error;
#[cfg(test)]
mod fuzz;
pub mod graph;
pub mod idx;
pub mod mnist;
mod rng;
pub mod text;
pub mod timeseries;

pub use download::{cache_dir, resolve_data_dir};
pub use error::DataError;
pub use rng::SplitMix64;

//! A run's artifact directory (default `runs/<experiment>/`):
//!
//! ```text
//! config.json      the experiment config, enough to rebuild the run (`pdl eval` reads it)
//! checkpoint/      model, optimiser and scheduler state of the last epochs (`--resume` reads it)
//! train/ valid/    Burn's per-epoch metric logs
//! model.mpk        the final model
//! metrics.json     what the run reached: valid and test scores, epochs, wall time, backend
//! ```

use crate::backend::BackendKind;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a run reads data and writes artifacts, and how.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The data directory (`--data-dir`, `PDL_DATA_DIR` or the cache).
    pub data_dir: PathBuf,
    /// The artifact directory.
    pub artifact_dir: PathBuf,
    /// Continue from the checkpoint of this epoch.
    pub resume_from: Option<usize>,
    /// One line per epoch instead of the dashboard.
    pub plain: bool,
    /// Never download: a missing file is an error.
    pub offline: bool,
    /// The backend the run uses.
    pub backend: BackendKind,
    /// How many devices train data-parallel.
    pub devices: usize,
}

/// Mean loss and accuracy over a split.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Mean cross-entropy per example.
    pub loss: f64,
    /// Percentage of examples classified correctly.
    pub accuracy: f64,
    /// Number of examples scored.
    pub count: usize,
}

/// What a training run reached.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Epochs with a checkpoint at the end.
    pub epochs: usize,
    /// Wall-clock seconds of training (this invocation).
    pub wall_seconds: f64,
    /// Training examples per epoch.
    pub train_items: usize,
    /// Final model on the validation split.
    pub valid: Scores,
    /// Final model on the test split.
    pub test: Scores,
}

/// The content of `metrics.json`.
#[derive(Debug, Serialize)]
pub struct MetricsFile<'a> {
    /// Experiment name.
    pub experiment: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Devices used.
    pub devices: usize,
    /// Epochs trained in all.
    pub epochs: usize,
    /// Seconds this invocation trained.
    pub wall_seconds: f64,
    /// Training examples per epoch.
    pub train_items: usize,
    /// A `--smoke` run (scores mean nothing).
    pub smoke: bool,
    /// Final validation scores.
    pub valid: Scores,
    /// Final test scores.
    pub test: Scores,
}

/// Writes `value` as pretty JSON to `path` through a temporary file, so a crash never leaves half
/// a file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// True when `dir` holds a run worth keeping: a trained model or at least one checkpoint. A folder
/// where a run failed before its first epoch (only `config.json`) can be trained into again.
pub fn holds_a_run(dir: &Path) -> bool {
    let has_checkpoint = std::fs::read_dir(dir.join("checkpoint"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    has_checkpoint || dir.join("model.mpk").is_file()
}

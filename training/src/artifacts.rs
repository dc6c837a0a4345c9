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

/// A split's scores: the mean loss, and the task's own measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Mean loss per example: cross-entropy for a classifier (nats), MSE for a regression.
    pub loss: f64,
    /// Classification: percentage of examples classified correctly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Number of examples scored.
    pub count: usize,
}

impl Scores {
    /// The number a run is judged by, and its name: accuracy (higher is better) for a classifier,
    /// else the loss (MSE; lower is better).
    pub fn headline(&self) -> (&'static str, f64) {
        match self.accuracy {
            Some(accuracy) => ("accuracy", accuracy),
            None => ("loss", self.loss),
        }
    }
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.accuracy, self.mae) {
            (Some(acc), _) => write!(f, "accuracy {acc:.2}% (loss {:.4})", self.loss),
            (None, Some(mae)) => write!(f, "MSE {:.4}, MAE {mae:.4}", self.loss),
            (None, None) => write!(f, "loss {:.4}", self.loss),
        }
    }
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
    /// A baseline on the test split, where the pipeline has one (forecasting: the naive forecast).
    pub baseline: Option<Scores>,
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
    /// The pipeline's baseline on the test split (forecasting: the naive forecast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Scores>,
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

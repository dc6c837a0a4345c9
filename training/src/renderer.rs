//! A plain renderer for when stdout is not a terminal (CI, `| tee`, a notebook): one line per epoch
//! with the epoch means of every numeric metric, instead of Burn's CLI renderer, which prints a
//! debug line for every batch.

use burn::train::LearnerSummary;
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

#[derive(Default)]
struct Means {
    sums: BTreeMap<String, (f64, f64)>,
}

impl Means {
    fn add(&mut self, name: &str, value: f64, weight: f64) {
        let e = self.sums.entry(name.to_string()).or_default();
        e.0 += value * weight;
        e.1 += weight;
    }

    fn line(&self) -> String {
        self.sums
            .iter()
            .map(|(name, (sum, w))| format!("{name} {}", fmt_value(name, sum / w.max(1e-12))))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

fn fmt_value(name: &str, v: f64) -> String {
    if name.contains("Accuracy") {
        format!("{v:.2}%")
    } else if name.contains("Learning Rate") {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// Prints `epoch 3/10  train: ...  valid: ...  (12.3 s)` once per epoch.
pub struct PlainRenderer {
    names: HashMap<MetricId, String>,
    epoch: usize,
    epochs: usize,
    train: Means,
    valid: Means,
    started: Instant,
}

impl Default for PlainRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl PlainRenderer {
    /// A renderer with nothing seen yet.
    pub fn new() -> Self {
        Self {
            names: HashMap::new(),
            epoch: 0,
            epochs: 0,
            train: Means::default(),
            valid: Means::default(),
            started: Instant::now(),
        }
    }

    fn flush(&mut self) {
        if self.epoch == 0 || self.train.sums.is_empty() {
            return;
        }
        println!(
            "epoch {}/{}  train: {}  valid: {}  ({:.1} s)",
            self.epoch,
            self.epochs,
            self.train.line(),
            self.valid.line(),
            self.started.elapsed().as_secs_f64()
        );
        self.train = Means::default();
        self.valid = Means::default();
        self.started = Instant::now();
    }

    fn record(&mut self, state: MetricState, valid: bool) {
        if let MetricState::Numeric(entry, numeric) = state {
            let Some(name) = self.names.get(&entry.metric_id).cloned() else {
                return;
            };
            let (value, weight) = match numeric {
                burn::train::metric::NumericEntry::Value(v) => (v, 1.0),
                burn::train::metric::NumericEntry::Aggregated {
                    aggregated_value,
                    count,
                } => (aggregated_value, count as f64),
            };
            let means = if valid {
                &mut self.valid
            } else {
                &mut self.train
            };
            means.add(&name, value, weight);
        }
    }

    fn see_epoch(&mut self, item: &TrainingProgress) {
        let epoch = item.global_progress.items_processed;
        if epoch != self.epoch {
            self.flush();
            self.epoch = epoch;
            self.epochs = item.global_progress.items_total;
        }
    }
}

impl MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state, false);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, true);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.see_epoch(&item);
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.see_epoch(&item);
    }

    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.flush();
        if let Some(summary) = summary {
            println!("{summary}");
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for PlainRenderer {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}

    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for PlainRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

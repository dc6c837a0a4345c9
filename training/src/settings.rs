//! The training settings every pipeline shares, as one struct: epochs, batch, learning rate and
//! its schedule, weight decay, clipping, early stopping, restore-best, seed, smoke.
//!
//! Each pipeline's config flattens it (`#[serde(flatten)]`), so a `config.json` keeps the flat
//! keys it always had and configs saved before this struct existed still load: a key a pipeline
//! did not have then takes the default that pipeline had (no clipping, no restore-best for
//! images; a batch of the whole graph for graphs), and the language models' `weight_decay: null`
//! reads as 0.

use crate::schedule::{Schedule, ScheduleConfig};
use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::AdamConfig;
use burn::optim::decay::WeightDecayConfig;
use pdl_kernels::AdamWConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt::Debug;

/// Everything needed to rebuild a run, saved as its `config.json`: the experiment, its data, its
/// model `M`, the shared [`TrainingSettings`], and the pipeline's own data options `D` (how the
/// data is split, cut and fed). Settings and options are flattened, so the file has flat keys.
/// A pipeline names its instance (`ImageExperimentConfig = RunConfig<ImageModelConfig,
/// ImageOptions>`) and writes only `M` and `D`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct RunConfig<M, D> {
    /// The experiment's name in the registry.
    pub experiment: String,
    /// A dataset the pipeline knows by name, or a path to files in that dataset's format.
    pub dataset: String,
    /// The model.
    pub model: M,
    /// Epochs, batch, learning rate, schedule, decay, clipping, early stopping, seed...
    #[serde(flatten)]
    pub training: TrainingSettings,
    /// The pipeline's data options.
    #[serde(flatten)]
    pub data: D,
}

impl<M, D> Config for RunConfig<M, D>
where
    M: Serialize + DeserializeOwned + Debug,
    D: Serialize + DeserializeOwned + Debug,
{
}

impl<M, D: Default> RunConfig<M, D> {
    /// A run of `model` on `dataset` with `training`, and the pipeline's data options as a new run
    /// has them (`D`'s [`Default`]: 5,000 images held out for the image pipelines, say).
    pub fn new(experiment: &str, dataset: &str, model: M, training: TrainingSettings) -> Self {
        Self::with_data(experiment, dataset, model, training, D::default())
    }
}

impl<M, D> RunConfig<M, D> {
    /// A run of `model` on `dataset` with `training` and the data options `data`.
    pub fn with_data(
        experiment: &str,
        dataset: &str,
        model: M,
        training: TrainingSettings,
        data: D,
    ) -> Self {
        Self {
            experiment: experiment.into(),
            dataset: dataset.into(),
            model,
            training,
            data,
        }
    }

    /// `(training examples, evaluation examples)` a `--smoke` run keeps: a few batches of each
    /// split. None for a full run.
    pub fn smoke_sizes(&self) -> Option<(usize, usize)> {
        let (train_batches, eval_batches) = SMOKE_BATCHES;
        let batch = self.training.batch_size;
        self.training
            .smoke
            .then_some((train_batches * batch, eval_batches * batch))
    }
}

/// What a pipeline checks in its config beyond the shared training settings: its model, its data
/// options, and how the two fit together. [`RunConfig::validate`] runs it.
pub trait CheckParts {
    /// The first thing wrong with the model or the data options, said for the user.
    fn check_parts(&self) -> Result<(), String>;
}

impl<M, D> RunConfig<M, D>
where
    Self: CheckParts,
{
    /// Checks everything that can be checked before reading data: the training settings, then
    /// the pipeline's own parts.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.training
            .validate()
            .and_then(|()| self.check_parts())
            .map_err(|m| anyhow::anyhow!("invalid config: {m}"))
    }
}

/// Batches a `--smoke` run keeps: training, then validation and test.
pub(crate) const SMOKE_BATCHES: (usize, usize) = (4, 2);

/// What every pipeline trains with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct TrainingSettings {
    /// Epochs to train in all.
    pub num_epochs: usize,
    /// Examples per optimiser step, over all devices: with `--devices N` each device takes a
    /// slice of `batch_size / N` (see [`crate::parallel`]). Full-graph pipelines have one batch,
    /// the whole graph, and ignore it.
    #[serde(default = "count::<1>")]
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Weight decay: decoupled (AdamW) or an L2 term in the gradients (Adam), as the pipeline's
    /// [`Optimiser`] says; 0 turns it off.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub weight_decay: f64,
    /// Learning-rate schedule over all optimiser steps.
    #[serde(default = "constant")]
    pub schedule: ScheduleConfig,
    /// Rescale the gradients to at most this global L2 norm (none: never).
    #[serde(default)]
    pub grad_clip_norm: Option<f32>,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    #[serde(default)]
    pub early_stopping_patience: usize,
    /// End with the weights of the epoch with the lowest valid loss rather than the last.
    #[serde(default)]
    pub restore_best: bool,
    /// Seed for weights, data order, dropout and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A smoke run: one epoch on a few batches.
    #[serde(default)]
    pub smoke: bool,
}

/// `N`: a serde default for a count, `#[serde(default = "count::<5000>")]`.
pub(crate) fn count<const N: usize>() -> usize {
    N
}

fn constant() -> ScheduleConfig {
    ScheduleConfig::Constant
}

fn default_seed() -> u64 {
    42
}

/// `null` (how a language model's config saved "no weight decay") as 0.
fn null_as_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(0.0))
}

impl TrainingSettings {
    /// `num_epochs` epochs at `learning_rate`, batch `batch_size`, and the defaults of the
    /// builders below: no weight decay, constant rate, no clipping, no early stopping, the last
    /// epoch's weights, seed 42.
    pub fn new(num_epochs: usize, batch_size: usize, learning_rate: f64) -> Self {
        Self {
            num_epochs,
            batch_size,
            learning_rate,
            weight_decay: 0.0,
            schedule: ScheduleConfig::Constant,
            grad_clip_norm: None,
            early_stopping_patience: 0,
            restore_best: false,
            seed: 42,
            smoke: false,
        }
    }

    /// With this weight decay.
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            ..self
        }
    }

    /// With this schedule.
    pub fn with_schedule(self, schedule: ScheduleConfig) -> Self {
        Self { schedule, ..self }
    }

    /// With gradients clipped to this global norm.
    pub fn with_grad_clip_norm(self, norm: f32) -> Self {
        Self {
            grad_clip_norm: Some(norm),
            ..self
        }
    }

    /// With early stopping after this many epochs without a lower valid loss.
    pub fn with_patience(self, early_stopping_patience: usize) -> Self {
        Self {
            early_stopping_patience,
            ..self
        }
    }

    /// Ending with the best valid epoch's weights.
    pub fn restoring_best(self) -> Self {
        Self {
            restore_best: true,
            ..self
        }
    }

    /// `--smoke`: one epoch (each pipeline also cuts its data to a few batches).
    pub fn into_smoke(self) -> Self {
        Self {
            smoke: true,
            num_epochs: 1,
            ..self
        }
    }

    /// Checks what can be checked before reading data: at least one epoch and one example per
    /// batch, a positive finite learning rate, a weight decay in `[0, 1)`, a positive clipping
    /// norm, a valid schedule.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_epochs == 0 {
            return Err("num_epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!(
                "learning_rate must be > 0, got {}",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(format!(
                "weight_decay must be in [0, 1), got {}",
                self.weight_decay
            ));
        }
        if let Some(norm) = self.grad_clip_norm
            && !(norm > 0.0 && norm.is_finite())
        {
            return Err(format!("grad_clip_norm must be > 0, got {norm}"));
        }
        self.schedule.validate()
    }

    /// The examples each of `devices` devices takes per step: its slice of the global batch.
    pub fn batch_per_device(&self, devices: usize) -> usize {
        self.batch_size / devices.max(1)
    }

    /// Checks that the global batch splits evenly over `devices` devices.
    pub fn check_devices(&self, devices: usize) -> Result<(), String> {
        if devices > 1 && !self.batch_size.is_multiple_of(devices) {
            return Err(format!(
                "--batch-size {} does not split evenly over --devices {devices}: the batch size is \
                 the global one, each device takes batch-size / devices examples (try {})",
                self.batch_size,
                (self.batch_size / devices).max(1) * devices
            ));
        }
        Ok(())
    }

    /// The learning-rate schedule for `train_items` examples per epoch, in global batches of
    /// `batch_size`, on `devices` devices.
    pub fn schedule_for(&self, train_items: usize, batch_size: usize, devices: usize) -> Schedule {
        self.schedule.init_for_epochs(
            self.learning_rate,
            train_items,
            batch_size,
            devices,
            self.num_epochs,
        )
    }

    /// The gradient clipping, if any.
    pub fn clipping(&self) -> Option<GradientClippingConfig> {
        self.grad_clip_norm.map(GradientClippingConfig::Norm)
    }

    /// AdamW ([`Optimiser::AdamW`]) with these settings' decay and clipping: Burn's, as one host pass
    /// per parameter on the CPU backends ([`pdl_kernels::adamw`]).
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .with_grad_clipping(self.clipping())
    }

    /// Adam with the decay as L2 on the gradients ([`Optimiser::AdamL2`]), these settings'
    /// clipping, and `epsilon` if given.
    pub fn adam_l2(&self, epsilon: Option<f32>) -> AdamConfig {
        let mut config = AdamConfig::new()
            .with_weight_decay(
                (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32)),
            )
            .with_grad_clipping(self.clipping());
        if let Some(epsilon) = epsilon {
            config = config.with_epsilon(epsilon);
        }
        config
    }
}

/// Which Adam a pipeline trains with: the settings' weight decay means a different thing in each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimiser {
    /// AdamW: decay applied to the weights apart from the gradient (Loshchilov & Hutter 2019),
    /// as the image and language models use.
    AdamW,
    /// Adam with the decay as an L2 term added to the gradients (PyTorch's
    /// `Adam(weight_decay=...)`), as the graph, forecasting and sentence papers trained;
    /// `epsilon` is Adam's, none for Burn's default (1e-5).
    AdamL2 {
        /// Adam's epsilon, none for Burn's default.
        epsilon: Option<f32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_load_with_the_defaults_of_then() {
        // An image config saved before the struct: no clipping, no restore_best.
        let image: TrainingSettings = serde_json::from_str(
            r#"{"num_epochs": 3, "batch_size": 64, "learning_rate": 0.001, "weight_decay": 0.0,
                "schedule": "Constant", "early_stopping_patience": 0, "seed": 42, "smoke": false}"#,
        )
        .unwrap();
        assert_eq!(image.grad_clip_norm, None);
        assert!(!image.restore_best);
        // A language model's "no weight decay".
        let language: TrainingSettings = serde_json::from_str(
            r#"{"num_epochs": 3, "batch_size": 64, "learning_rate": 0.002, "weight_decay": null,
                "schedule": "Constant", "grad_clip_norm": 5.0, "early_stopping_patience": 0,
                "restore_best": true, "seed": 1, "smoke": false}"#,
        )
        .unwrap();
        assert_eq!(language.weight_decay, 0.0);
        assert_eq!(language.grad_clip_norm, Some(5.0));
    }

    #[test]
    fn validate_rejects_each_bad_setting() {
        let good = TrainingSettings::new(1, 8, 1e-3);
        assert!(good.validate().is_ok());
        for bad in [
            TrainingSettings {
                num_epochs: 0,
                ..good.clone()
            },
            TrainingSettings {
                batch_size: 0,
                ..good.clone()
            },
            TrainingSettings {
                learning_rate: f64::NAN,
                ..good.clone()
            },
            good.clone().with_weight_decay(1.0),
            good.clone().with_grad_clip_norm(0.0),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

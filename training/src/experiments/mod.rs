//! The experiment registry: every `pdl train <name>` and the table `pdl list` prints.
//!
//! An experiment is a named preset of a pipeline's config. To add one, write its preset function
//! here and a row in [`EXPERIMENTS`]; to add a pipeline (a new kind of data or loop), add a file
//! beside `image_classification.rs` and a variant to [`ExperimentConfig`].

pub mod image_classification;

use crate::schedule::ScheduleConfig;
use anyhow::{Context, Result, bail};
use burn::config::Config;
use image_classification::{ImageExperimentConfig, ImageModelConfig};
use pdl_models::{BnCnnConfig, ClassicCnnConfig, LeNet5Config, MlpConfig};
use std::path::Path;

/// One row of the registry.
#[derive(Debug)]
pub struct Experiment {
    /// `pdl train <name>`.
    pub name: &'static str,
    /// The course chapter it belongs to.
    pub chapter: &'static str,
    /// The dataset it trains on.
    pub dataset: &'static str,
    /// The model, and its file under `models/src/`.
    pub model: &'static str,
    /// The result it reached with its default config, and the training time, on the 2-core CI
    /// machine with the flex backend (see the README's course map).
    pub expected: &'static str,
    /// Its default config.
    pub preset: fn() -> ExperimentConfig,
}

/// The config of any experiment, by pipeline.
#[derive(Debug)]
pub enum ExperimentConfig {
    /// Image classification on an MNIST-style set.
    Image(ImageExperimentConfig),
}

impl ExperimentConfig {
    /// Reads a config JSON for the pipeline of `experiment`.
    pub fn load(experiment: &Experiment, path: &Path) -> Result<Self> {
        Ok(match (experiment.preset)() {
            ExperimentConfig::Image(_) => ExperimentConfig::Image(
                ImageExperimentConfig::load(path)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| {
                        format!("{}: not a valid image experiment config", path.display())
                    })?,
            ),
        })
    }

    /// Writes the config as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        match self {
            ExperimentConfig::Image(c) => c.save(path),
        }
        .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The experiment name stored in the config.
    pub fn experiment(&self) -> &str {
        match self {
            ExperimentConfig::Image(c) => &c.experiment,
        }
    }
}

/// Every experiment, in course order.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "mnist-mlp",
        chapter: "MLP",
        dataset: "MNIST",
        model: "MLP 784-512-512-10 (mlp.rs)",
        expected: "98.5% test acc, 10 epochs, 40 s",
        preset: mnist_mlp,
    },
    Experiment {
        name: "mnist-lenet",
        chapter: "CNN",
        dataset: "MNIST",
        model: "LeNet-5 (cnn.rs)",
        expected: "99.2% test acc, 8 epochs, 2 min",
        preset: mnist_lenet,
    },
    Experiment {
        name: "mnist-cnn",
        chapter: "CNN",
        dataset: "MNIST",
        model: "classic PyTorch MNIST net (cnn.rs)",
        expected: "99.1% test acc, 3 epochs, 9 min",
        preset: mnist_cnn,
    },
    Experiment {
        name: "mnist-bn-cnn",
        chapter: "CNN",
        dataset: "MNIST",
        model: "batch-norm CNN + augmentation (cnn.rs)",
        expected: "99.6% test acc, 12 epochs, 71 min",
        preset: mnist_bn_cnn,
    },
    Experiment {
        name: "fashion-cnn",
        chapter: "CNN",
        dataset: "Fashion-MNIST",
        model: "classic PyTorch MNIST net (cnn.rs)",
        expected: "91.9% test acc, 5 epochs, 13 min",
        preset: fashion_cnn,
    },
];

/// Looks an experiment up by name; the error lists the known names.
pub fn find(name: &str) -> Result<&'static Experiment> {
    match EXPERIMENTS.iter().find(|e| e.name == name) {
        Some(e) => Ok(e),
        None => bail!(
            "unknown experiment '{name}': choose one of {} (`pdl list` describes them)",
            EXPERIMENTS
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn cosine() -> ScheduleConfig {
    ScheduleConfig::WarmupCosine {
        warmup_fraction: 0.02,
        min_lr_fraction: 0.0,
    }
}

fn mnist_mlp() -> ExperimentConfig {
    let model = ImageModelConfig::Mlp(MlpConfig::mnist());
    ExperimentConfig::Image(
        ImageExperimentConfig::new("mnist-mlp".into(), "mnist".into(), model)
            .with_num_epochs(10)
            .with_batch_size(128)
            .with_schedule(cosine()),
    )
}

fn mnist_lenet() -> ExperimentConfig {
    let model = ImageModelConfig::LeNet5(LeNet5Config::mnist());
    ExperimentConfig::Image(
        ImageExperimentConfig::new("mnist-lenet".into(), "mnist".into(), model)
            .with_num_epochs(8)
            .with_schedule(cosine()),
    )
}

fn mnist_cnn() -> ExperimentConfig {
    let model = ImageModelConfig::ClassicCnn(ClassicCnnConfig::mnist());
    ExperimentConfig::Image(
        ImageExperimentConfig::new("mnist-cnn".into(), "mnist".into(), model)
            .with_num_epochs(3)
            .with_schedule(cosine()),
    )
}

fn mnist_bn_cnn() -> ExperimentConfig {
    let model = ImageModelConfig::BnCnn(BnCnnConfig::mnist());
    ExperimentConfig::Image(
        ImageExperimentConfig::new("mnist-bn-cnn".into(), "mnist".into(), model)
            .with_num_epochs(12)
            .with_batch_size(128)
            .with_learning_rate(2e-3)
            .with_weight_decay(1e-4)
            .with_augment(true)
            .with_schedule(cosine()),
    )
}

fn fashion_cnn() -> ExperimentConfig {
    let model = ImageModelConfig::ClassicCnn(ClassicCnnConfig::mnist());
    ExperimentConfig::Image(
        ImageExperimentConfig::new("fashion-cnn".into(), "fashion-mnist".into(), model)
            .with_num_epochs(5)
            .with_schedule(cosine()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_presets_match_their_names() {
        for (i, e) in EXPERIMENTS.iter().enumerate() {
            assert!(EXPERIMENTS[i + 1..].iter().all(|o| o.name != e.name));
            assert_eq!((e.preset)().experiment(), e.name);
        }
    }

    #[test]
    fn presets_are_valid() {
        for e in EXPERIMENTS {
            match (e.preset)() {
                ExperimentConfig::Image(c) => c.validate().unwrap(),
            }
        }
    }

    #[test]
    fn unknown_experiment_lists_the_known_ones() {
        let msg = find("mnist-transformer").unwrap_err().to_string();
        assert!(
            msg.contains("mnist-cnn") && msg.contains("pdl list"),
            "{msg}"
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let e = find("mnist-bn-cnn").unwrap();
        (e.preset)().save(&path).unwrap();
        let ExperimentConfig::Image(back) = ExperimentConfig::load(e, &path).unwrap();
        let ExperimentConfig::Image(orig) = (e.preset)();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&orig).unwrap()
        );
    }
}

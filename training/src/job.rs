//! Where a pipeline's model meets the Learner, for every pipeline: the one train-and-score tail.
//!
//! A pipeline loads its data, then its model enum builds the configured model in its one `match`
//! and hands it to [`Job::run`], which either trains it and scores it ([`Training`]: schedule,
//! optimiser, [`fit`], `model.mpk`, valid and test scores) or loads a saved one and scores it
//! ([`Scoring`], what `pdl eval` does). Everything here is generic over the model, its batches
//! and its output (classification or regression), so a new pipeline writes only its data.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, LossValue, Recorder, TaskOutput, evaluate, fit};
use crate::schedule::Schedule;
use crate::settings::{Optimiser, TrainingSettings};
use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::Adaptor;
use burn::train::{InferenceStep, LearningComponentsMarker, MetricRegistration, TrainStep};
use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;

/// What to do with a model once its pipeline has built it.
pub enum Job<'a, B: AutodiffBackend, I, V> {
    /// Train it, save it, score it.
    Train(Training<'a, B, I, V>),
    /// Load the saved one, score it.
    Eval(Scoring<'a, B, V>),
}

/// What [`Job::run`] came back with.
#[derive(Debug)]
pub enum Outcome {
    /// A [`Job::Train`]'s report.
    Trained(RunReport),
    /// A [`Job::Eval`]'s test scores.
    Scored(Scores),
}

impl Outcome {
    /// The report of a training job.
    pub fn report(self) -> Result<RunReport> {
        match self {
            Outcome::Trained(report) => Ok(report),
            Outcome::Scored(_) => bail!("an evaluation has no training report"),
        }
    }

    /// The scores of an evaluation job.
    pub fn scores(self) -> Result<Scores> {
        match self {
            Outcome::Scored(scores) => Ok(scores),
            Outcome::Trained(_) => bail!("a training job reports more than scores"),
        }
    }
}

/// A training run's data and settings, as a pipeline hands them over.
pub struct Training<'a, B: AutodiffBackend, I, V> {
    /// The shared settings of the run's config.
    pub settings: &'a TrainingSettings,
    /// Which Adam the pipeline trains with.
    pub optimiser: Optimiser,
    /// Where the run writes, and how it shows progress.
    pub ctx: &'a RunContext,
    /// The devices to train on; the first is the main one.
    pub devices: Vec<B::Device>,
    /// The training batches.
    pub train: Arc<dyn DataLoader<B, I>>,
    /// The validation batches, on the inner backend.
    pub valid: Arc<dyn DataLoader<B::InnerBackend, V>>,
    /// The test batches, on the inner backend.
    pub test: Arc<dyn DataLoader<B::InnerBackend, V>>,
    /// Examples in one epoch of `train`, for the report.
    pub train_items: usize,
    /// Examples per batch on one device, for the schedule's step count (`train_items` for a
    /// pipeline with one batch per epoch).
    pub batch_size: usize,
    /// A line about the data, printed under the model.
    pub about: String,
}

/// An evaluation's saved run and test batches.
pub struct Scoring<'a, B: AutodiffBackend, V> {
    /// The run directory holding `model.mpk`.
    pub dir: &'a Path,
    /// The device to load onto.
    pub device: B::Device,
    /// The test batches, on the inner backend.
    pub test: Arc<dyn DataLoader<B::InnerBackend, V>>,
}

impl<B, I, V> Job<'_, B, I, V>
where
    B: AutodiffBackend,
    I: Send + 'static,
{
    /// Trains and scores `model`, or loads and scores it.
    pub fn run<M, T, U>(self, model: M) -> Result<Outcome>
    where
        M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + Display + 'static,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        T: TaskOutput,
        U: TaskOutput,
        T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
        U::ItemSync: Adaptor<LossValue>,
        T::Metrics: MetricRegistration<
                LearningComponentsMarker<B, Schedule, M, OptimizerAdaptor<AdamW, M, B>>,
            > + MetricRegistration<
                LearningComponentsMarker<B, Schedule, M, OptimizerAdaptor<Adam, M, B>>,
            >,
    {
        match self {
            Job::Train(training) => training.run(model).map(Outcome::Trained),
            Job::Eval(scoring) => scoring.run(model).map(Outcome::Scored),
        }
    }
}

impl<B: AutodiffBackend, I: Send + 'static, V> Training<'_, B, I, V> {
    fn run<M, T, U>(self, model: M) -> Result<RunReport>
    where
        M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + Display + 'static,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        T: TaskOutput,
        U: TaskOutput,
        T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
        U::ItemSync: Adaptor<LossValue>,
        T::Metrics: MetricRegistration<
                LearningComponentsMarker<B, Schedule, M, OptimizerAdaptor<AdamW, M, B>>,
            > + MetricRegistration<
                LearningComponentsMarker<B, Schedule, M, OptimizerAdaptor<Adam, M, B>>,
            >,
    {
        let settings = self.settings;
        println!("{model}\n{}", self.about);
        match self.optimiser {
            Optimiser::AdamW => {
                let optim = AdamWConfig::new()
                    .with_weight_decay(settings.weight_decay as f32)
                    .with_grad_clipping(settings.clipping())
                    .init();
                self.fit_and_score(model, optim)
            }
            Optimiser::AdamL2 { epsilon } => {
                let mut config = AdamConfig::new()
                    .with_weight_decay(
                        (settings.weight_decay > 0.0)
                            .then(|| WeightDecayConfig::new(settings.weight_decay as f32)),
                    )
                    .with_grad_clipping(settings.clipping());
                if let Some(epsilon) = epsilon {
                    config = config.with_epsilon(epsilon);
                }
                self.fit_and_score(model, config.init())
            }
        }
    }

    fn fit_and_score<M, O, T, U>(self, model: M, optim: O) -> Result<RunReport>
    where
        M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + Display + 'static,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        O: Optimizer<M, B> + 'static,
        T: TaskOutput,
        U: TaskOutput,
        T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
        U::ItemSync: Adaptor<LossValue>,
        T::Metrics: MetricRegistration<LearningComponentsMarker<B, Schedule, M, O>>,
    {
        let settings = self.settings;
        let schedule = settings.schedule_for(self.train_items, self.batch_size, self.devices.len());
        let options = FitOptions::for_run(
            self.ctx,
            settings.num_epochs,
            settings.early_stopping_patience,
            settings.restore_best,
        );
        let dir = &self.ctx.artifact_dir;
        fit(
            dir,
            model,
            optim,
            schedule,
            self.train,
            self.valid.clone(),
            self.devices,
            &options,
        )?
        .finish(dir, self.train_items, &self.valid, &self.test)
    }
}

impl<B: AutodiffBackend, V> Scoring<'_, B, V> {
    fn run<M, U>(self, model: M) -> Result<Scores>
    where
        M: AutodiffModule<B>,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        U: TaskOutput,
    {
        let path = self.dir.join("model.mpk");
        if !path.is_file() {
            bail!(
                "{}: no trained model (train first, or check the path)",
                path.display()
            );
        }
        let model = model
            .load_file(&path, &Recorder::new(), &self.device)
            .with_context(|| format!("{}: not a model for this config", path.display()))?;
        Ok(evaluate(&model.valid(), &self.test))
    }
}

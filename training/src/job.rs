//! Where a pipeline's model meets the Learner, for every pipeline: the one train-and-score tail.
//!
//! A pipeline loads its data, then its model enum builds the configured model in its one `match`
//! and hands it to [`Job::run`], which either trains it and scores it ([`Training`]: schedule,
//! optimiser, [`fit`], `model.mpk`, valid and test scores), or loads a saved one and scores it
//! ([`Scoring`], what `pdl eval` does), or loads a saved one and gives its outputs on a few
//! examples ([`Predicting`], for the figures). Everything here is generic over the model, its batches
//! and its output (classification or regression), so a new pipeline writes only its data.

use crate::artifacts::{RunContext, RunReport, Scores};
use crate::learner::{FitOptions, LossValue, TaskOutput, evaluate, fit, load_saved};
use crate::parallel::MeanOverDevices;
use crate::schedule::Schedule;
use crate::settings::{Optimiser, TrainingSettings};
use anyhow::{Result, bail};
use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::Adaptor;
use burn::train::{InferenceStep, LearningComponentsMarker, MetricRegistration, TrainStep};
use pdl_kernels::AdamW;
use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;

/// What to do with a model once its pipeline has built it.
pub enum Job<'a, B: AutodiffBackend, I, V> {
    /// Train it, save it, score it.
    Train(Training<'a, B, I, V>),
    /// Load the saved one, score it.
    Eval(Scoring<'a, B, V>),
    /// Load the saved one, and give what it outputs for each example (for the figures).
    Predict(Predicting<'a, B, V>),
}

/// What [`Job::run`] came back with.
#[derive(Debug)]
pub enum Outcome {
    /// A [`Job::Train`]'s report.
    Trained(Box<RunReport>),
    /// A [`Job::Eval`]'s test scores.
    Scored(Scores),
    /// A [`Job::Predict`]'s outputs, one row per example ([`TaskOutput::rows`]).
    Predicted(Vec<Vec<f32>>),
}

impl Outcome {
    /// The report of a training job.
    pub fn report(self) -> Result<RunReport> {
        match self {
            Outcome::Trained(report) => Ok(*report),
            _ => bail!("only a training job has a training report"),
        }
    }

    /// The scores of an evaluation job.
    pub fn scores(self) -> Result<Scores> {
        match self {
            Outcome::Scored(scores) => Ok(scores),
            _ => bail!("only an evaluation job has test scores alone"),
        }
    }

    /// The outputs of a prediction job.
    pub fn rows(self) -> Result<Vec<Vec<f32>>> {
        match self {
            Outcome::Predicted(rows) => Ok(rows),
            _ => bail!("only a prediction job has outputs"),
        }
    }
}

/// A pipeline's batches: training on the autodiff backend, validation and test on its inner
/// backend.
pub struct Loaders<B: AutodiffBackend, I, V> {
    /// The training batches.
    pub train: Arc<dyn DataLoader<B, I>>,
    /// The validation batches.
    pub valid: Arc<dyn DataLoader<B::InnerBackend, V>>,
    /// The test batches (the valid ones again where a pipeline has no test split).
    pub test: Arc<dyn DataLoader<B::InnerBackend, V>>,
}

/// The optimiser `fit` steps with: a Burn optimiser fed the mean of the devices' gradients.
type Optim<O, M, B> = MeanOverDevices<OptimizerAdaptor<O, M, B>>;

/// A training run's data and settings, as a pipeline hands them over.
pub struct Training<'a, B: AutodiffBackend, I, V> {
    settings: &'a TrainingSettings,
    optimiser: Optimiser,
    ctx: &'a RunContext,
    devices: Vec<B::Device>,
    loaders: Loaders<B, I, V>,
    /// Examples in one epoch, for the report.
    train_items: usize,
    /// Examples per batch on one device, for the schedule's step count.
    batch_size: usize,
    /// A line about the data, printed under the model.
    about: String,
}

impl<'a, B: AutodiffBackend, I, V> Training<'a, B, I, V> {
    /// Training with `settings` and `optimiser` on `devices`, writing into `ctx`, over `loaders`:
    /// an epoch is every batch of `loaders.train`, in batches of the settings' size.
    pub fn new(
        settings: &'a TrainingSettings,
        optimiser: Optimiser,
        ctx: &'a RunContext,
        devices: Vec<B::Device>,
        loaders: Loaders<B, I, V>,
    ) -> Self {
        Self {
            settings,
            optimiser,
            ctx,
            devices,
            train_items: loaders.train.num_items(),
            loaders,
            batch_size: settings.batch_size,
            about: String::new(),
        }
    }

    /// With a line about the data, printed under the model.
    pub fn about(self, about: String) -> Self {
        Self { about, ..self }
    }

    /// For a pipeline whose one batch holds `items` examples (a whole graph): one optimiser step
    /// per epoch, and `items` in the report.
    pub fn one_batch_of(self, items: usize) -> Self {
        Self {
            train_items: items,
            batch_size: items,
            ..self
        }
    }

    /// Examples in one epoch.
    pub fn train_items(&self) -> usize {
        self.train_items
    }
}

impl<'a, B: AutodiffBackend, I, V> From<Training<'a, B, I, V>> for Job<'a, B, I, V> {
    fn from(training: Training<'a, B, I, V>) -> Self {
        Job::Train(training)
    }
}

/// An evaluation's saved run and test batches.
pub struct Scoring<'a, B: AutodiffBackend, V> {
    /// The run directory holding `model.mpk`.
    dir: &'a Path,
    /// The device to load onto.
    device: B::Device,
    /// The test batches, on the inner backend.
    test: Arc<dyn DataLoader<B::InnerBackend, V>>,
}

impl<'a, B: AutodiffBackend, V> Scoring<'a, B, V> {
    /// Scoring the model saved in `ctx`'s artifact directory on `device`, over `test`.
    pub fn new(
        ctx: &'a RunContext,
        device: B::Device,
        test: Arc<dyn DataLoader<B::InnerBackend, V>>,
    ) -> Self {
        Self {
            dir: &ctx.artifact_dir,
            device,
            test,
        }
    }
}

impl<'a, B: AutodiffBackend, I, V> From<Scoring<'a, B, V>> for Job<'a, B, I, V> {
    fn from(scoring: Scoring<'a, B, V>) -> Self {
        Job::Eval(scoring)
    }
}

/// A saved run's model run over some examples: what the figures show next to the truth (a
/// forecaster's forecasts). Loads `model.mpk` like [`Scoring`].
pub struct Predicting<'a, B: AutodiffBackend, V>(Scoring<'a, B, V>);

impl<'a, B: AutodiffBackend, V> Predicting<'a, B, V> {
    /// The model saved in `ctx`'s artifact directory on `device`, over `examples`.
    pub fn new(
        ctx: &'a RunContext,
        device: B::Device,
        examples: Arc<dyn DataLoader<B::InnerBackend, V>>,
    ) -> Self {
        Self(Scoring::new(ctx, device, examples))
    }
}

impl<'a, B: AutodiffBackend, I, V> From<Predicting<'a, B, V>> for Job<'a, B, I, V> {
    fn from(predicting: Predicting<'a, B, V>) -> Self {
        Job::Predict(predicting)
    }
}

impl<B, I, V> Job<'_, B, I, V>
where
    B: AutodiffBackend,
    I: Send + 'static,
{
    /// Builds the model with `build`, then trains and scores it, or loads and scores it.
    ///
    /// For training, the model is built through [`pdl_models::seeded`] with the run's seed, so
    /// the weights and masks are the seed's and no pipeline seeds on its own.
    pub fn run<M, T, U>(self, build: impl FnOnce(&B::Device) -> M) -> Result<Outcome>
    where
        M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + Display + 'static,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        T: TaskOutput,
        U: TaskOutput,
        T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
        U::ItemSync: Adaptor<LossValue>,
        T::Metrics: MetricRegistration<LearningComponentsMarker<B, Schedule, M, Optim<AdamW, M, B>>>
            + MetricRegistration<LearningComponentsMarker<B, Schedule, M, Optim<Adam, M, B>>>,
    {
        match self {
            Job::Train(training) => {
                let settings = training.settings;
                let model = pdl_models::seeded::<B, _>(&training.devices[0], settings.seed, build);
                println!("{model}\n{}", training.about);
                let report = match training.optimiser {
                    Optimiser::AdamW => training.fit_and_score(model, settings.adamw().init()),
                    Optimiser::AdamL2 { epsilon } => {
                        training.fit_and_score(model, settings.adam_l2(epsilon).init())
                    }
                };
                Ok(Outcome::Trained(Box::new(report?)))
            }
            Job::Eval(scoring) => {
                let (model, test) = scoring.load(build)?;
                Ok(Outcome::Scored(evaluate(&model, &test)))
            }
            Job::Predict(Predicting(scoring)) => {
                let (model, examples) = scoring.load(build)?;
                let rows = examples.iter().flat_map(|b| model.step(b).rows());
                Ok(Outcome::Predicted(rows.collect()))
            }
        }
    }
}

impl<B: AutodiffBackend, I: Send + 'static, V> Training<'_, B, I, V> {
    /// Trains `model` with `optim` (see [`Job::run`]), saves it and scores it.
    fn fit_and_score<M, O, T, U>(self, model: M, optim: O) -> Result<RunReport>
    where
        M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + Display + 'static,
        M::InnerModule: InferenceStep<Input = V, Output = U>,
        O: Optimizer<M, B> + 'static,
        T: TaskOutput,
        U: TaskOutput,
        T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
        U::ItemSync: Adaptor<LossValue>,
        T::Metrics:
            MetricRegistration<LearningComponentsMarker<B, Schedule, M, MeanOverDevices<O>>>,
    {
        let settings = self.settings;
        let schedule = settings.schedule_for(self.train_items, self.batch_size, self.ctx.parts());
        let Loaders { train, valid, test } = self.loaders;
        let options = FitOptions::for_run(
            self.ctx,
            settings.num_epochs,
            self.batch_size,
            settings.early_stopping_patience,
            settings.restore_best,
        );
        let dir = &self.ctx.artifact_dir;
        fit(
            dir,
            model,
            optim,
            schedule,
            train,
            valid.clone(),
            self.devices,
            &options,
        )?
        .finish(dir, self.train_items, &valid, &test)
    }
}

impl<B: AutodiffBackend, V> Scoring<'_, B, V> {
    /// Builds the model with `build` and loads `model.mpk` into it: the inference model, and the
    /// batches to run it on.
    #[allow(clippy::type_complexity)]
    fn load<M: AutodiffModule<B>>(
        self,
        build: impl FnOnce(&B::Device) -> M,
    ) -> Result<(M::InnerModule, Arc<dyn DataLoader<B::InnerBackend, V>>)> {
        let model = load_saved(self.dir, &self.device, build)?;
        Ok((model.valid(), self.test))
    }
}

//! The Learner wiring every supervised experiment shares: metrics, checkpoints, resume, early
//! stopping, the renderer (Burn's TUI dashboard in a terminal, [`PlainRenderer`] otherwise), the
//! multi-device strategy, and a guard that stops on a non-finite loss.

use crate::artifacts::{Recorder, RunReport, Scores, write_json};
use crate::ddp::EqualSteps;
use crate::parallel::{MeanOverDevices, NodeShard, Sharded};
use crate::renderer::PlainRenderer;
use crate::schedule::Schedule;
use crate::stopping::{KeepLastAndBest, NoImprovementSince, ValidLosses};
use anyhow::{Context, Result, bail};
use burn::data::dataloader::{DataLoader, DataLoaderIterator};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::RecorderError;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{
    AccuracyMetric, Adaptor, ItemLazy, LearningRateMetric, LossMetric, Metric, MetricAttributes,
    MetricDefinition, MetricMetadata, MetricName, NumericEntry, SerializedEntry,
};
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Interrupter, Learner,
    LearningComponentsMarker, MetricRegistration, MultiDeviceOptim, RegressionOutput,
    SupervisedTraining, TrainStep,
};
use pdl_kernels::RunEpoch;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a training run is set up, beyond its model and data.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Epochs to train in all (a resumed run continues up to this number).
    pub num_epochs: usize,
    /// Examples per optimiser step, over all devices (the loader's batches are a device's slice).
    pub batch_size: usize,
    /// Stop when the valid loss has not improved for this many epochs; 0 turns it off.
    pub early_stopping_patience: usize,
    /// Continue from the checkpoint of this epoch in the artifact directory.
    pub resume_from: Option<usize>,
    /// Print one line per epoch even in a terminal, instead of Burn's dashboard.
    pub plain: bool,
    /// End with the weights of the epoch with the lowest valid loss (Burn keeps its checkpoint)
    /// instead of the last epoch's, as Keras' `restore_best_weights` and Lightning's
    /// `ModelCheckpoint(monitor="val_loss")` do.
    pub restore_best: bool,
    /// The processes this one trains with, in a multi-process run ([`crate::nodes`]).
    pub nodes: Option<Arc<crate::nodes::NodeGroup>>,
}

impl FitOptions {
    /// The options of a run in `ctx` (its resume point and renderer) with a config's epochs,
    /// batch size, patience and restore-best choice.
    pub fn for_run(
        ctx: &crate::artifacts::RunContext,
        num_epochs: usize,
        batch_size: usize,
        early_stopping_patience: usize,
        restore_best: bool,
    ) -> Self {
        Self {
            num_epochs,
            batch_size,
            early_stopping_patience,
            resume_from: ctx.resume_from,
            plain: ctx.plain,
            restore_best,
            nodes: ctx.nodes.clone(),
        }
    }
}

/// What training left behind.
pub struct Fitted<M> {
    /// The trained model, without autodiff.
    pub model: M,
    /// The last epoch that has a checkpoint (the number of epochs done).
    pub epochs_done: usize,
    /// The epoch whose weights `model` holds: `epochs_done`, or the best one with
    /// [`FitOptions::restore_best`].
    pub model_epoch: usize,
    /// Wall-clock seconds trained, across resumes ([`EpochClock`]).
    pub wall_seconds: f64,
}

impl<M> Fitted<M> {
    /// Saves the model as `dir/model.mpk` and scores it on the valid and test loaders: what every
    /// pipeline does after [`fit`].
    pub fn finish<B, I>(
        self,
        dir: &Path,
        train_items: usize,
        valid: &Arc<dyn DataLoader<B, I>>,
        test: &Arc<dyn DataLoader<B, I>>,
    ) -> Result<RunReport>
    where
        B: Backend,
        M: Module<B> + InferenceStep<Input = I>,
        M::Output: TaskOutput,
    {
        save_model(self.model.clone(), dir)?;
        Ok(RunReport {
            epochs: self.epochs_done,
            wall_seconds: self.wall_seconds,
            train_items,
            valid: evaluate(&self.model, valid),
            test: evaluate(&self.model, test),
            baseline: None,
            probe: None,
            figures: Vec::new(),
        })
    }
}

/// The highest epoch with a complete checkpoint (model, optimiser and schedule files) under
/// `dir/checkpoint`.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    checkpoints(dir).into_iter().max()
}

/// The epochs with a complete checkpoint (model, optimiser and schedule files) under
/// `dir/checkpoint`, in no order.
fn checkpoints(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoint")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse::<usize>()
                .ok()
        })
        .filter(|epoch| {
            CHECKPOINT_PARTS
                .iter()
                .all(|part| checkpoint_file(dir, part, *epoch).is_file())
        })
        .collect()
}

/// The files of one epoch's checkpoint.
const CHECKPOINT_PARTS: [&str; 3] = ["model", "optim", "scheduler"];

fn checkpoint_file(dir: &Path, part: &str, epoch: usize) -> PathBuf {
    dir.join(format!("checkpoint/{part}-{epoch}.mpk"))
}

/// The checkpoint a resumed run starts from: the newest complete one whose files all read through
/// to the end. A damaged newer one (truncated or garbled on disk: the writes here are
/// whole-or-nothing, the disk under them may not be) is skipped with a one-line note naming the
/// file, and is overwritten when training reaches its epoch again.
pub fn last_readable_checkpoint(dir: &Path) -> Option<usize> {
    let mut epochs = checkpoints(dir);
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.into_iter().find(|&epoch| {
        CHECKPOINT_PARTS.iter().all(|part| {
            let path = checkpoint_file(dir, part, epoch);
            let read = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|file| {
                    let reader = std::io::BufReader::new(file);
                    rmp_serde::from_read::<_, serde::de::IgnoredAny>(reader)
                        .map_err(|e| e.to_string())
                });
            if let Err(why) = &read {
                println!(
                    "note: skipping the checkpoint of epoch {epoch}: {} is damaged ({why})",
                    path.display()
                );
            }
            read.is_ok()
        })
    })
}

/// Trains a model with Burn's `SupervisedTraining`, checkpointing every epoch into `dir`.
///
/// Registers the task's metrics ([`TaskOutput::metrics`]: loss and accuracy for a classifier, the
/// loss for a regression) for train and valid, and the learning rate; early stopping on the valid
/// loss; one device or several (data-parallel, the optimiser on the first); resumes from a
/// checkpoint when asked (the caller checks it exists: see [`last_checkpoint`]). A stop from the
/// dashboard returns an error that says how to resume. A non-finite loss stops training and returns an error, keeping every
/// checkpoint already written.
#[allow(clippy::too_many_arguments)]
pub fn fit<B, M, O, I, T, V>(
    dir: &Path,
    model: M,
    optim: O,
    schedule: Schedule,
    train: Arc<dyn DataLoader<B, I>>,
    valid: Arc<dyn DataLoader<B::InnerBackend, <M::InnerModule as InferenceStep>::Input>>,
    devices: Vec<B::Device>,
    options: &FitOptions,
) -> Result<Fitted<M::InnerModule>>
where
    B: AutodiffBackend,
    I: Send + 'static,
    M: TrainStep<Input = I, Output = T> + AutodiffModule<B> + std::fmt::Display + 'static,
    M::InnerModule: InferenceStep<Output = V>,
    O: Optimizer<M, B> + 'static,
    T: TaskOutput,
    V: TaskOutput,
    T::ItemSync: Adaptor<LossValue> + Adaptor<()>,
    V::ItemSync: Adaptor<LossValue>,
    T::Metrics: MetricRegistration<LearningComponentsMarker<B, Schedule, M, MeanOverDevices<O>>>,
{
    let clock = EpochClock::start(dir, options.resume_from.unwrap_or(0));
    let model = materialize(model);
    // The run whose model `seeded` built last on this thread: its dropout layers follow the epochs.
    let run = RunEpoch::current();
    let reseed = (devices.len() == 1).then(|| devices[0].clone());
    let train = Replaying::wrap(train, options.resume_from.unwrap_or(0), run, reseed);
    // Several devices: the loader's batches are slices of the global batch, dealt out one per
    // device, and the optimiser steps on their gradients' mean (see parallel.rs). Burn moves a
    // one-device run's loader to its device, which forks its shuffling generator: the slices are
    // made on a loader moved the same way, so both runs see one order.
    // Several processes: each keeps its rank's slice of every global batch, and the optimiser
    // averages over the processes too (see nodes.rs), once they agree on what they train.
    // Several CUDA GPUs: burn-train's DDP splits the loader among them and all-reduces the mean
    // in the backward pass (see ddp.rs).
    let parts = devices.len();
    let ddp = if parts > 1 {
        crate::ddp::strategy::<B>(&devices)
    } else {
        None
    };
    let train = match (parts, &options.nodes) {
        _ if ddp.is_some() => EqualSteps::of(train, parts, options.batch_size),
        (1, None) => train,
        (1, Some(nodes)) => NodeShard::of(
            train.to_device(&devices[0]),
            nodes.count(),
            nodes.rank(),
            options.batch_size,
        ),
        _ => Sharded::deal(train.to_device(&devices[0]), parts, options.batch_size),
    };
    if let Some(nodes) = &options.nodes {
        nodes.check_agreement::<B::InnerBackend>(&devices[0])?;
    }
    let (optim, schedule) = match ddp {
        // The all-reduce has averaged already; each worker asks for the rate N times a step.
        Some(_) => (
            MeanOverDevices::new(optim, 1),
            schedule.asked_per_step(parts),
        ),
        None => (MeanOverDevices::new(optim, parts), schedule),
    };
    let optim = optim.across(options.nodes.clone());
    let interrupter = Interrupter::new();
    let recorder = Recorder::new();
    let diverged = Arc::new(Mutex::new(None));
    let guard = |split| FiniteLossGuard::new(interrupter.clone(), diverged.clone(), split);
    // Checkpoints kept, early stopping and the best epoch: from the valid losses of every epoch,
    // those logged before a resume too (see stopping.rs).
    let done = options.resume_from.unwrap_or(0);
    let valid_losses = ValidLosses::resumed(&dir.join("valid"), done);
    let saved = (1..=done).filter(|e| dir.join(format!("checkpoint/model-{e}.mpk")).is_file());
    let mut training = SupervisedTraining::new(dir, train, valid)
        .metrics(T::metrics())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train(guard("training"))
        .metric_valid(guard("validation").recording(valid_losses.clone()))
        .with_file_checkpointer(recorder.clone())
        .with_checkpointing_strategy(KeepLastAndBest::new(valid_losses.clone(), saved))
        .with_interrupter(interrupter.clone())
        .num_epochs(options.num_epochs)
        .summary();
    if options.early_stopping_patience > 0 {
        training = training.early_stopping(NoImprovementSince::new(
            valid_losses.clone(),
            options.early_stopping_patience,
        ));
    }
    training = training.with_metric_logger(ResumedFileLogger::new(
        FileMetricLogger::new(dir),
        options.resume_from.unwrap_or(0),
        clock.clone(),
    ));
    if let Some(epoch) = options.resume_from {
        println!("resuming from the checkpoint of epoch {epoch}");
        training = training.checkpoint(epoch);
    }
    if options.nodes.is_some() {
        // Installed already, before the first call to the other processes (see nodes.rs).
        training = training.with_application_logger(None);
    }
    if options.plain || !std::io::stdout().is_terminal() {
        training = training.renderer(PlainRenderer::new());
    }
    if let Some(ddp) = ddp {
        training = training.with_training_strategy(ddp.into());
    } else if devices.len() > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
    }

    let result = training.launch(Learner::new(model, optim, schedule));
    let epochs_done = last_checkpoint(dir).unwrap_or(0);
    let checkpoints = dir.join("checkpoint");
    if let Some(reason) = diverged.lock().expect("guard lock").take() {
        bail!(
            "{reason}; training stopped, checkpoints up to epoch {epochs_done} are kept in {}",
            checkpoints.display()
        );
    }
    // The dashboard resets the stop flag when it closes, but keeps the message: the user's stop,
    // or Burn's word for a checkpoint write that failed (the recorder has the file and cause).
    if interrupter.should_stop() || interrupter.get_message().is_some() {
        let why = recorder
            .failure()
            .or_else(|| interrupter.get_message())
            .unwrap_or_else(|| "interrupted".into());
        let why = why.trim_end_matches('.');
        if epochs_done == 0 {
            bail!("training stopped before its first checkpoint ({why}); start it again");
        }
        bail!(
            "training stopped after epoch {epochs_done} of {} ({why}); continue it with --resume \
             (checkpoints in {})",
            options.num_epochs,
            checkpoints.display()
        );
    }
    let mut fitted = Fitted {
        model: result.model,
        epochs_done,
        model_epoch: epochs_done,
        wall_seconds: clock.seconds(),
    };
    let restorable = |e: usize| checkpoints.join(format!("model-{e}.mpk")).is_file();
    if options.restore_best
        && let Some(best) = valid_losses.best(epochs_done, restorable)
        && best != epochs_done
    {
        let device = fitted.model.devices()[0].clone();
        let path = checkpoints.join(format!("model-{best}"));
        fitted.model = load_model(fitted.model, &path, &device)
            .with_context(|| format!("cannot restore epoch {best}"))?;
        fitted.model_epoch = best;
        println!("restored the weights of epoch {best} (lowest valid loss) of {epochs_done}");
    }
    Ok(fitted)
}

/// The training loader of a run: it starts each epoch's random draws, and on resume its first
/// pass makes and drops the batches of the epochs already done, so that a resumed run sees the
/// data and draws the masks an uninterrupted one would.
///
/// - **Data.** Burn's loader shuffles with a generator that moves on at every epoch, and a batcher
///   may draw per batch (augmentation): the replay brings those back, as the checkpoint brings
///   back the weights, the optimiser's state and the schedule. Making the batches costs a small
///   part of training on them.
/// - **Dropout.** At the start of epoch `e` it tells the run's dropout layers ([`RunEpoch`]), whose
///   masks then come from their seeds and `e` alone, and reseeds the backend's generator from the
///   run's seed and `e`, which burn-nn's dropout draws from. Both start over at every epoch, so
///   nothing needs saving with the checkpoint.
///
/// Burn forks the loader for the device inside the learner, so the replay travels with the fork
/// and happens on the loader that trains. With several devices it sits under [`Sharded`], which
/// makes every device's slices from it, so it replays once. There the backend's generator is not
/// reseeded: the devices' threads share it, so burn-nn's dropout does not repeat in any case (the
/// kernels' does: each device draws from its own clone).
struct Replaying<B: Backend, O> {
    inner: Arc<dyn DataLoader<B, O>>,
    /// Epochs to replay before the next one: those done before a resume.
    replay: AtomicUsize,
    /// The epoch the next pass trains.
    next_epoch: AtomicUsize,
    run: RunEpoch,
    /// The device whose generator to reseed at every epoch: with one device only.
    reseed: Option<B::Device>,
}

impl<B: Backend, O: 'static> Replaying<B, O> {
    /// The training loader of a run resumed after `done` epochs (0: a new run), of the dropout
    /// layers of `run`; `reseed` is the device of a one-device run.
    fn wrap(
        inner: Arc<dyn DataLoader<B, O>>,
        done: usize,
        run: RunEpoch,
        reseed: Option<B::Device>,
    ) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            inner,
            replay: AtomicUsize::new(done),
            next_epoch: AtomicUsize::new(done + 1),
            run,
            reseed,
        })
    }

    /// This loader over `inner`, at the same point.
    fn rewrap(
        &self,
        inner: Arc<dyn DataLoader<B, O>>,
        reseed: Option<B::Device>,
    ) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            inner,
            replay: AtomicUsize::new(self.replay.load(Ordering::Relaxed)),
            next_epoch: AtomicUsize::new(self.next_epoch.load(Ordering::Relaxed)),
            run: self.run.clone(),
            reseed,
        })
    }
}

impl<B: Backend, O: 'static> DataLoader<B, O> for Replaying<B, O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        let epochs = self.replay.swap(0, Ordering::Relaxed);
        if epochs > 0 {
            let started = Instant::now();
            for _ in 0..epochs {
                self.inner.iter().for_each(drop);
            }
            println!(
                "replayed the data order of epochs 1-{epochs} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) as u64;
        self.run.start(epoch);
        if let Some(device) = &self.reseed {
            B::seed(device, self.run.backend_seed(epoch));
        }
        self.inner.iter()
    }

    fn num_items(&self) -> usize {
        self.inner.num_items()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        let reseed = self.reseed.as_ref().map(|_| device.clone());
        self.rewrap(self.inner.to_device(device), reseed)
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, O>> {
        self.rewrap(self.inner.slice(start, end), self.reseed.clone())
    }
}

/// The model `build` makes, with the weights of the run folder's `model.mpk`. Built under the
/// seeding lock like any model, though its weights are loaded over; a run that has not finished
/// is a one-line error.
pub fn load_saved<B: Backend, M: Module<B>>(
    dir: &Path,
    device: &B::Device,
    build: impl FnOnce(&B::Device) -> M,
) -> Result<M> {
    let path = dir.join("model.mpk");
    if !path.is_file() {
        anyhow::bail!(
            "{}: no trained model (train first, or check the path)",
            path.display()
        );
    }
    let model = pdl_models::seeded::<B, _>(device, 0, build);
    load_model(model, &path, device)
}

/// Loads the record at `path` (with or without its `.mpk`) into `model`, built from the run's
/// config. A damaged, truncated or foreign file is a one-line error naming it, with the first line
/// of Burn's reason.
pub fn load_model<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let file = path.with_extension("mpk");
    model
        .load_file(path, &Recorder::new(), device)
        .map_err(|e| {
            let (RecorderError::FileNotFound(text)
            | RecorderError::DeserializeError(text)
            | RecorderError::Unknown(text)) = e;
            let reason = text.lines().next().unwrap_or_default().to_string();
            anyhow::anyhow!(
                "{}: cannot be read as a model for this config: damaged, truncated, or saved by \
                 another model ({reason})",
                file.display()
            )
        })
}

/// The task's scores of `model` over every batch of `loader`: mean loss, and accuracy or MAE.
pub fn evaluate<B, M, I>(model: &M, loader: &Arc<dyn DataLoader<B, I>>) -> Scores
where
    B: Backend,
    M: InferenceStep<Input = I>,
    M::Output: TaskOutput,
{
    let mut tally = Tally::default();
    for batch in loader.iter() {
        model.step(batch).tally(&mut tally);
    }
    M::Output::scores(&tally)
}

/// Sums over batches, for [`TaskOutput::scores`].
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Examples seen.
    pub count: usize,
    /// Sum over batches of the batch's mean loss times its examples.
    pub loss: f64,
    /// Sum over batches of the task's second measure (correct examples; absolute error times
    /// examples).
    pub other: f64,
    /// A classifier's confusion matrix: `confusion[true class][predicted class]` examples.
    pub confusion: Vec<Vec<usize>>,
    /// A classifier's most confident mistakes so far, at most [`Tally::KEEP_WRONG`] once scored.
    pub wrong: Vec<Wrong>,
}

impl Tally {
    /// How many of the most confident mistakes a classifier's scores keep.
    pub const KEEP_WRONG: usize = 24;
    /// The most classes a confusion matrix is kept for: a character model's 65 fit, a word
    /// model's 15,000 would take 15,000² counts (1.8 GB).
    pub const CONFUSION_CLASSES: usize = 1024;
}

/// `wrong`, most confident first (ties in split order), cut to `keep`.
fn most_confident(mut wrong: Vec<Wrong>, keep: usize) -> Vec<Wrong> {
    wrong.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.index.cmp(&b.index))
    });
    wrong.truncate(keep);
    wrong
}

/// One example a classifier got wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrong {
    /// Its position in the split, in loader order (the evaluation loaders do not shuffle).
    pub index: usize,
    /// Its class.
    pub truth: usize,
    /// The class predicted.
    pub guess: usize,
    /// The probability the model gave `guess` (softmax of the logits).
    pub confidence: f64,
}

/// What [`fit`] and [`evaluate`] need of a step's output, whatever the task: the metrics the
/// dashboard shows, and the scores of a split.
pub trait TaskOutput: ItemLazy + Send + 'static {
    /// The metrics registered for train and valid (a tuple of Burn metrics).
    type Metrics;

    /// A fresh set of [`TaskOutput::Metrics`].
    fn metrics() -> Self::Metrics;

    /// Adds this batch to `tally`.
    fn tally(self, tally: &mut Tally);

    /// The scores of a whole split.
    fn scores(tally: &Tally) -> Scores;

    /// What the model output for each example of the batch, one row each: a classifier's class
    /// probabilities, a regression's values (flattened).
    fn rows(self) -> Vec<Vec<f32>>;
}

/// The rows of a `[n, d]` tensor, on the host.
pub(crate) fn host_rows<B: Backend>(x: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, d] = x.dims();
    let values = x
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    values.chunks(d.max(1)).map(<[f32]>::to_vec).collect()
}

/// The backend a synchronised output (what Burn's metrics read) lives on.
pub trait OutputBackend {
    /// The backend.
    type Backend: Backend;
}

impl<B: Backend> OutputBackend for ClassificationOutput<B> {
    type Backend = B;
}

impl<B: Backend> OutputBackend for RegressionOutput<B> {
    type Backend = B;
}

type SyncBackend<T> = <<T as ItemLazy>::ItemSync as OutputBackend>::Backend;

fn scalar<B: Backend>(x: Tensor<B, 1>) -> f64 {
    use burn::tensor::ElementConversion;
    x.into_scalar().elem::<f64>()
}

impl<B: Backend> TaskOutput for ClassificationOutput<B> {
    type Metrics = (
        AccuracyMetric<SyncBackend<Self>>,
        LossMetric<SyncBackend<Self>>,
    );

    fn metrics() -> Self::Metrics {
        (AccuracyMetric::new(), LossMetric::new())
    }

    fn tally(self, tally: &mut Tally) {
        let [n, classes] = self.output.dims();
        let predicted = self.output.clone().argmax(1).flatten::<1>(0, 1);
        let confidence = burn::tensor::activation::softmax(self.output, 1)
            .max_dim(1)
            .flatten::<1>(0, 1)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .unwrap_or_default();
        let first = tally.count;
        tally.count += n;
        tally.loss += scalar(self.loss) * n as f64;
        let host = |x: Tensor<B, 1, burn::tensor::Int>| {
            x.into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .unwrap_or_default()
        };
        if tally.confusion.is_empty() && classes <= Tally::CONFUSION_CLASSES {
            tally.confusion = vec![vec![0; classes]; classes];
        }
        let guesses = host(self.targets).into_iter().zip(host(predicted));
        for (i, (truth, guess)) in guesses.enumerate() {
            if let Some(row) = tally.confusion.get_mut(truth as usize) {
                row[guess as usize] += 1;
            }
            tally.other += (truth == guess) as u8 as f64;
            if truth != guess {
                tally.wrong.push(Wrong {
                    index: first + i,
                    truth: truth as usize,
                    guess: guess as usize,
                    confidence: confidence.get(i).copied().unwrap_or(f64::NAN),
                });
            }
        }
        if tally.wrong.len() > 4 * Tally::KEEP_WRONG {
            tally.wrong = most_confident(std::mem::take(&mut tally.wrong), Tally::KEEP_WRONG);
        }
    }

    fn scores(tally: &Tally) -> Scores {
        let n = tally.count.max(1) as f64;
        Scores {
            loss: tally.loss / n,
            accuracy: Some(100.0 * tally.other / n),
            mae: None,
            count: tally.count,
            confusion: (!tally.confusion.is_empty()).then(|| tally.confusion.clone()),
            wrong: {
                let mut tally = tally.clone();
                tally.wrong = most_confident(std::mem::take(&mut tally.wrong), Tally::KEEP_WRONG);
                tally.wrong
            },
        }
    }

    fn rows(self) -> Vec<Vec<f32>> {
        host_rows(burn::tensor::activation::softmax(self.output, 1))
    }
}

impl<B: Backend> TaskOutput for RegressionOutput<B> {
    type Metrics = (LossMetric<SyncBackend<Self>>,);

    fn metrics() -> Self::Metrics {
        (LossMetric::new(),)
    }

    fn tally(self, tally: &mut Tally) {
        let [n, _] = self.targets.dims();
        let mae = (self.output - self.targets).abs().mean();
        tally.count += n;
        tally.loss += scalar(self.loss) * n as f64;
        tally.other += scalar(mae) * n as f64;
    }

    fn scores(tally: &Tally) -> Scores {
        let n = tally.count.max(1) as f64;
        Scores {
            loss: tally.loss / n,
            accuracy: None,
            mae: Some(tally.other / n),
            count: tally.count,
            confusion: None,
            wrong: Vec::new(),
        }
    }

    fn rows(self) -> Vec<Vec<f32>> {
        host_rows(self.output)
    }
}

/// Gives every parameter its value now. Burn initialises parameters lazily, on first use, and a
/// clone of a model that has not run yet draws its own random values: the multi-device strategy
/// hands such clones to its workers before the first step, so without this each worker would start
/// from different weights than the model the optimiser updates.
pub fn materialize<B: Backend, M: burn::module::Module<B>>(model: M) -> M {
    let record = model.clone().into_record();
    model.load_record(record)
}

/// Saves a trained model as `dir/model.mpk`.
pub fn save_model<B: Backend, M: burn::module::Module<B>>(model: M, dir: &Path) -> Result<()> {
    let path = dir.join("model");
    model
        .save_file(&path, &Recorder::new())
        .with_context(|| format!("cannot save {}.mpk", path.display()))
}

/// Burn's file logger, with the epoch numbers of a resumed run put right.
///
/// Burn 0.21's event store counts epochs from 1 in every process and only learns the real number
/// at the end of the first epoch, so a run resumed after epoch `k` would log its first epoch into
/// `train/epoch-1/` (overwriting it), and early stopping would find no metrics for epoch `k + 1`.
/// This adds `k` to the epoch of each split's writes until that split's first epoch ends.
///
/// It also tells `clock` when an epoch's validation ends.
pub struct ResumedFileLogger {
    inner: FileMetricLogger,
    offset: usize,
    synced: HashSet<Split>,
    clock: EpochClock,
}

impl ResumedFileLogger {
    /// Logs into `inner`, the first epoch of this process being epoch `offset + 1`.
    pub fn new(inner: FileMetricLogger, offset: usize, clock: EpochClock) -> Self {
        Self {
            inner,
            offset,
            synced: HashSet::new(),
            clock,
        }
    }
}

/// The file in a run folder with the training time at the end of each epoch.
pub const ELAPSED_FILE: &str = "elapsed.json";

/// A run's training time across resumes. `elapsed.json` holds the seconds trained by the end of
/// each epoch, all processes together; a run resumed after epoch `k` starts from the `k`-th.
#[derive(Debug, Clone)]
pub struct EpochClock {
    path: PathBuf,
    started: Instant,
    /// Seconds at the end of each epoch so far.
    ends: Vec<f64>,
    /// Seconds trained before this process started.
    before: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
struct ElapsedFile {
    seconds_at_epoch_end: Vec<f64>,
}

impl EpochClock {
    /// The clock of the run in `dir`, resumed after epoch `resume_from` (0: a new run).
    pub fn start(dir: &Path, resume_from: usize) -> Self {
        let path = dir.join(ELAPSED_FILE);
        let mut ends = match resume_from {
            0 => vec![],
            _ => std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<ElapsedFile>(&text).ok())
                .map_or(vec![], |file| file.seconds_at_epoch_end),
        };
        ends.truncate(resume_from);
        if ends.len() < resume_from {
            println!(
                "note: {} has no time for epoch {resume_from}; the reported time counts from the \
                 last epoch it has",
                path.display()
            );
        }
        Self {
            path,
            started: Instant::now(),
            before: ends.last().copied().unwrap_or(0.0),
            ends,
        }
    }

    /// Seconds trained so far, all processes together.
    pub fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }

    /// Records the end of an epoch.
    fn epoch_ended(&mut self) {
        self.ends.push(self.seconds());
        let file = ElapsedFile {
            seconds_at_epoch_end: self.ends.clone(),
        };
        if let Err(e) = write_json(&self.path, &file) {
            println!("note: the training time is not saved: {e:#}");
        }
    }
}

impl MetricLogger for ResumedFileLogger {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let epoch = match self.synced.contains(split) {
            true => epoch,
            false => epoch + self.offset,
        };
        self.inner.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.inner.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.inner.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        if summary.split == Split::Valid {
            self.clock.epoch_ended();
        }
        self.synced.insert(summary.split.clone());
        self.inner.log_epoch_summary(summary);
    }
}

/// The loss of a batch, for [`FiniteLossGuard`].
pub struct LossValue(f64);

impl<B: Backend> Adaptor<LossValue> for ClassificationOutput<B> {
    fn adapt(&self) -> LossValue {
        LossValue(scalar(self.loss.clone().mean()))
    }
}

impl<B: Backend> Adaptor<LossValue> for RegressionOutput<B> {
    fn adapt(&self) -> LossValue {
        LossValue(scalar(self.loss.clone().mean()))
    }
}

/// A training "metric" that stops the run when the loss becomes NaN or infinite, so a diverging
/// run ends with a clear error instead of training on garbage for the remaining epochs.
#[derive(Clone)]
pub struct FiniteLossGuard {
    interrupter: Interrupter,
    reason: Arc<Mutex<Option<String>>>,
    name: MetricName,
    split: &'static str,
    record: Option<ValidLosses>,
}

impl FiniteLossGuard {
    /// A guard on the loss of `split` ("training", "validation") that stops `interrupter` and
    /// writes why into `reason`.
    pub fn new(
        interrupter: Interrupter,
        reason: Arc<Mutex<Option<String>>>,
        split: &'static str,
    ) -> Self {
        Self {
            interrupter,
            reason,
            name: Arc::new("Loss is finite".to_string()),
            split,
            record: None,
        }
    }

    /// Also records the loss of every batch in `losses`, and the end of each epoch (for the
    /// checkpoints kept, early stopping and [`FitOptions::restore_best`]: see `stopping.rs`).
    pub fn recording(mut self, losses: ValidLosses) -> Self {
        self.record = Some(losses);
        self
    }
}

impl Metric for FiniteLossGuard {
    type Input = LossValue;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        MetricAttributes::None
    }

    fn update(&mut self, item: &LossValue, metadata: &MetricMetadata) -> SerializedEntry {
        let finite = item.0.is_finite();
        if let Some(losses) = &self.record {
            let epoch = metadata.global_progress.items_processed;
            losses.push(epoch, item.0);
        }
        if !finite {
            let mut reason = self.reason.lock().expect("guard lock");
            if reason.is_none() {
                *reason = Some(format!(
                    "the {} loss became {} at epoch {}, iteration {} (try a lower --lr)",
                    self.split,
                    item.0,
                    metadata.global_progress.items_processed,
                    metadata.iteration.unwrap_or(0)
                ));
                self.interrupter.stop(reason.as_deref());
            }
        }
        let text = if finite { "yes" } else { "NO" };
        SerializedEntry {
            formatted: format!("Loss is finite: {text}"),
            serialized: text.to_string(),
        }
    }

    /// Burn calls this at the end of each epoch of the guard's split.
    fn clear(&mut self) {
        if let Some(losses) = &self.record {
            losses.end_epoch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Tensor;
    use pdl_models::MlpConfig;

    #[test]
    fn a_classifier_keeps_its_most_confident_mistakes_across_batches() {
        let device = Default::default();
        let mut tally = Tally::default();
        // Two batches of three: logits for two classes, all targets class 0.
        for logits in [
            [[0.0f32, 3.0], [2.0, 0.0], [0.0, 1.0]],
            [[0.0, 5.0], [0.0, 3.0], [1.0, 0.0]],
        ] {
            let output = Tensor::<NdArray, 2>::from_floats(logits, &device);
            let targets = Tensor::from_ints([0, 0, 0], &device);
            let loss = Tensor::from_floats([0.5], &device);
            ClassificationOutput::new(loss, output, targets).tally(&mut tally);
        }
        let scores = ClassificationOutput::<NdArray>::scores(&tally);
        assert_eq!(scores.confusion, Some(vec![vec![2, 4], vec![0, 0]]));
        // Wrong: items 0 (3 vs 0), 2 (1 vs 0), 3 (5 vs 0), 4 (3 vs 0), most confident first,
        // the tie between 0 and 4 in split order.
        let order: Vec<usize> = scores.wrong.iter().map(|w| w.index).collect();
        assert_eq!(order, vec![3, 0, 4, 2]);
        let p = 1.0 / (1.0 + (-5.0f64).exp());
        assert!((scores.wrong[0].confidence - p).abs() < 1e-6);
        assert_eq!((scores.wrong[0].truth, scores.wrong[0].guess), (0, 1));
    }

    #[test]
    fn clones_of_a_materialized_model_share_its_weights() {
        let device = Default::default();
        let model = materialize(MlpConfig::new(4, vec![3], 2).init::<NdArray>(&device));
        let x = Tensor::<NdArray, 2>::ones([1, 4], &device);
        let a = model.clone().forward(x.clone()).into_data();
        let b = model.forward(x).into_data();
        a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-7));
    }

    #[test]
    fn the_clock_of_a_resumed_run_starts_from_its_epochs_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ELAPSED_FILE);
        std::fs::write(&file, r#"{"seconds_at_epoch_end": [10.0, 20.0, 30.0]}"#).unwrap();
        let fresh = EpochClock::start(dir.path(), 0);
        assert!(fresh.seconds() < 10.0);
        let mut resumed = EpochClock::start(dir.path(), 2);
        assert!((20.0..30.0).contains(&resumed.seconds()));
        resumed.epoch_ended();
        let saved: ElapsedFile =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(saved.seconds_at_epoch_end[..2], [10.0, 20.0]);
        assert!((20.0..30.0).contains(&saved.seconds_at_epoch_end[2]));
        // Fewer epochs on file than the checkpoint's: count from the last one there.
        assert!(EpochClock::start(dir.path(), 9).seconds() >= saved.seconds_at_epoch_end[2]);
        std::fs::write(&file, "not json").unwrap();
        assert!(EpochClock::start(dir.path(), 2).seconds() < 10.0);
    }

    #[test]
    fn last_checkpoint_needs_all_three_records() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoint");
        std::fs::create_dir_all(&ck).unwrap();
        for f in ["model-1", "optim-1", "scheduler-1", "model-2", "optim-2"] {
            std::fs::write(ck.join(format!("{f}.mpk")), b"").unwrap();
        }
        assert_eq!(last_checkpoint(dir.path()), Some(1));
        assert_eq!(last_checkpoint(&dir.path().join("none")), None);
    }
}

//! Time-series forecasting: the sequences chapter's first task.
//!
//! Data: a CSV of numeric series (ETT, airline passengers, or any file of that shape), split in
//! time (the ETT papers' 12/4/4 months, or the last months held out), standardised with the
//! training rows' mean and deviation, cut into sliding windows of look-back `L` and horizon `H`.
//! Model: a recurrent encoder with a linear head, or DLinear. Loop: MSE through
//! the shared tail of [`crate::job`], Adam, optional gradient clipping and early stopping, the best valid
//! epoch's weights restored. Scores: MSE and MAE on the standardised data, as the papers report
//! them, beside the naive forecast (the last `H` steps of the look-back repeated) on the same
//! windows: a model that does not beat it has learnt nothing.

use super::Pipeline;
use crate::artifacts::{RunContext, RunReport, Scores};
use crate::job::{Job, Loaders, Outcome, Predicting, Scoring, Training};
use crate::learner::{Tally, TaskOutput};
use crate::plots::Figure;
use crate::plots::figures::{ForecastWindow, Forecasts};
use crate::settings::{CheckParts, Optimiser, RunConfig, SMOKE_BATCHES, TrainingSettings};
use anyhow::{Result, bail};
use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::RegressionOutput;
use pdl_datasets::timeseries::{
    Scaler, SeriesSource, TimeSeries, Window, WindowBatch, WindowBatcher, WindowDataset, ett_splits,
};
use pdl_models::forecast::{regression_output, repeat_last_window};
use pdl_models::{DLinearConfig, RnnForecasterConfig};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;

/// What the forecasting pipeline hands a model: windows of the series.
type ForecastJob<'a, B> =
    Job<'a, B, WindowBatch<B>, WindowBatch<<B as AutodiffBackend>::InnerBackend>>;

/// The model of a forecasting experiment.
#[derive(Config, Debug)]
pub enum ForecastModelConfig {
    /// A recurrent encoder (RNN, LSTM or GRU) and a linear head over the horizon.
    Rnn(RnnForecasterConfig),
    /// DLinear: trend and remainder, one linear map each.
    Linear(DLinearConfig),
}

impl ForecastModelConfig {
    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Rnn(c) => c.validate(),
            Self::Linear(c) => c.validate(),
        }
    }

    /// Hands `job` the way to build the configured model on its device: the one place the model
    /// enum is matched.
    fn run<B: AutodiffBackend>(&self, job: ForecastJob<'_, B>) -> Result<Outcome> {
        match self {
            Self::Rnn(c) => job.run(|device| c.init::<B>(device)),
            Self::Linear(c) => job.run(|device| c.init::<B>(device)),
        }
    }

    /// Checks the model against the data: its series (a recurrent model's input width) and its
    /// look-back and horizon.
    fn check(&self, num_series: usize, lookback: usize, horizon: usize) -> Result<(), String> {
        let (model_lookback, model_horizon) = match self {
            Self::Rnn(c) => {
                if c.num_series != num_series {
                    return Err(format!(
                        "the data has {num_series} series but the model expects num_series {}",
                        c.num_series
                    ));
                }
                (lookback, c.horizon)
            }
            Self::Linear(c) => (c.lookback, c.horizon),
        };
        if (model_lookback, model_horizon) != (lookback, horizon) {
            return Err(format!(
                "the experiment's lookback/horizon are {lookback}/{horizon} but the model's are \
                 {model_lookback}/{model_horizon}; set them to match"
            ));
        }
        Ok(())
    }
}

/// How the rows split in time into train, valid and test.
#[derive(Config, Debug, PartialEq)]
pub enum TimeSplit {
    /// The ETT papers' split of an hourly file: 12, 4 and 4 months of 30 days.
    Ett,
    /// The last `test` rows to test, the `valid` rows before them to validate, the rest to train.
    Tail {
        /// Rows held out to validate.
        valid: usize,
        /// Rows held out to test, at the end.
        test: usize,
    },
}

impl TimeSplit {
    /// The row ranges of train, valid and test; valid and test reach `lookback` rows back so that
    /// their first targets start at the split's border.
    pub fn ranges(&self, rows: usize, lookback: usize) -> Result<[Range<usize>; 3], String> {
        match *self {
            TimeSplit::Ett => ett_splits(rows, lookback),
            TimeSplit::Tail { valid, test } => {
                let train_end = rows.saturating_sub(valid + test);
                if train_end <= lookback || valid == 0 || test == 0 {
                    return Err(format!(
                        "{rows} rows cannot hold {valid} valid and {test} test rows after a \
                         training part longer than the look-back {lookback} (and both must be \
                         at least 1)"
                    ));
                }
                Ok([
                    0..train_end,
                    train_end - lookback..train_end + valid,
                    train_end + valid - lookback..rows,
                ])
            }
        }
    }
}

/// Everything needed to rebuild a forecasting run; saved as its `config.json`.
pub type ForecastExperimentConfig = RunConfig<ForecastModelConfig, ForecastOptions>;

/// Which series are read, how they are split in time, and how long the windows are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct ForecastOptions {
    /// The series to read and predict, by column name; empty: every numeric column.
    pub columns: Vec<String>,
    /// The split in time.
    pub split: TimeSplit,
    /// Look-back `L`: input steps.
    pub lookback: usize,
    /// Horizon `H`: steps predicted at once.
    pub horizon: usize,
}

const EVAL_BATCH: usize = 256;

impl ForecastExperimentConfig {
    /// A run of `model` on every series of `dataset` with `training`, split by `split`,
    /// `lookback` steps in and `horizon` out.
    pub fn new(
        experiment: &str,
        dataset: &str,
        split: TimeSplit,
        [lookback, horizon]: [usize; 2],
        model: ForecastModelConfig,
        training: TrainingSettings,
    ) -> Self {
        let data = ForecastOptions {
            columns: vec![],
            split,
            lookback,
            horizon,
        };
        Self::with_data(experiment, dataset, model, training, data)
    }
}

impl CheckParts for ForecastExperimentConfig {
    fn check_parts(&self) -> Result<(), String> {
        if self.data.lookback == 0 || self.data.horizon == 0 {
            return Err("lookback and horizon must be at least 1".into());
        }
        self.model.validate()
    }
}

/// The three splits' windows, over the scaled series.
struct Splits {
    train: WindowDataset,
    valid: WindowDataset,
    test: WindowDataset,
    columns: usize,
    /// The last series' name: the one the figures show (ETT's oil temperature, `OT`).
    shown: String,
}

fn load_splits(config: &ForecastExperimentConfig, ctx: &RunContext) -> Result<Splits> {
    let path = SeriesSource::parse(&config.dataset).locate(&ctx.data_dir, !ctx.offline)?;
    let mut series = TimeSeries::load_csv(&path)?;
    if !config.data.columns.is_empty() {
        let names: Vec<&str> = config.data.columns.iter().map(String::as_str).collect();
        series = series.select(&names, &path)?;
    }
    let at = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    config
        .model
        .check(
            series.num_columns(),
            config.data.lookback,
            config.data.horizon,
        )
        .map_err(at)?;
    let [train, valid, test] = config
        .data
        .split
        .ranges(series.rows, config.data.lookback)
        .map_err(at)?;
    let shown = series.columns.last().cloned().unwrap_or_default();
    let scaler = Scaler::fit(&series, train.clone());
    let series = Arc::new(scaler.transform(&series));
    let windows = |rows| {
        WindowDataset::new(
            series.clone(),
            rows,
            config.data.lookback,
            config.data.horizon,
        )
    };
    let splits = Splits {
        train: windows(train),
        valid: windows(valid),
        test: windows(test),
        columns: series.num_columns(),
        shown,
    };
    for (name, split) in [
        ("train", &splits.train),
        ("valid", &splits.valid),
        ("test", &splits.test),
    ] {
        if split.is_empty() {
            bail!(
                "{}: the {name} split holds no window of {} + {} steps; shorten the look-back or \
                 the horizon",
                path.display(),
                config.data.lookback,
                config.data.horizon
            );
        }
    }
    Ok(splits)
}

fn loader<B: Backend>(
    dataset: WindowDataset,
    columns: usize,
    batch_size: usize,
    shuffle: Option<u64>,
    smoke_batches: Option<usize>,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, WindowBatch<B>>> {
    let batcher = WindowBatcher { columns };
    super::loader(batcher, dataset, batch_size, shuffle, smoke_batches, device)
}

/// The naive forecast's scores over `loader`: the last `horizon` steps of each look-back repeated.
pub fn naive_scores<B: Backend>(
    loader: &Arc<dyn DataLoader<B, WindowBatch<B>>>,
    horizon: usize,
) -> Scores {
    let mut tally = Tally::default();
    for batch in loader.iter() {
        regression_output(repeat_last_window(batch.inputs, horizon), batch.targets)
            .tally(&mut tally);
    }
    RegressionOutput::<B>::scores(&tally)
}

impl<B: AutodiffBackend> Pipeline<B> for ForecastExperimentConfig {
    /// Trains the configured model, saves `model.mpk`, scores valid and test beside the naive
    /// forecast.
    fn train(&self, ctx: &RunContext, devices: Vec<B::Device>) -> Result<RunReport> {
        let splits = load_splits(self, ctx)?;
        let (settings, device) = (&self.training, devices[0].clone());
        let (train_batches, eval_batches) = match settings.smoke {
            true => (Some(SMOKE_BATCHES.0), Some(SMOKE_BATCHES.1)),
            false => (None, None),
        };
        let columns = splits.columns;
        let (test_windows, shown) = (splits.test.clone(), splits.shown.clone());
        let eval =
            |set| loader::<B::InnerBackend>(set, columns, EVAL_BATCH, None, eval_batches, &device);
        let loaders = Loaders {
            train: loader::<B>(
                splits.train,
                columns,
                settings.batch_per_device(ctx.parts()),
                Some(settings.seed),
                train_batches,
                &device,
            ),
            valid: eval(splits.valid),
            test: eval(splits.test),
        };
        let test = loaders.test.clone();
        let about = format!(
            "series: {columns}, look-back {}, horizon {}; {} train / {} valid / {} test windows",
            self.data.lookback,
            self.data.horizon,
            loaders.train.num_items(),
            loaders.valid.num_items(),
            test.num_items()
        );
        let optimiser = Optimiser::AdamL2 { epsilon: None };
        let training = Training::new(settings, optimiser, ctx, devices, loaders).about(about);
        let mut report = self.model.run::<B>(training.into())?.report()?;
        let naive = naive_scores(&test, self.data.horizon);
        println!(
            "naive forecast (repeat the last {} steps): test {naive}",
            self.data.horizon
        );
        report.baseline = Some(naive);
        match forecasts::<B>(self, ctx, device, &test_windows, columns, shown) {
            Ok(figure) => report.figures.push(figure),
            Err(e) => println!("note: no test forecasts: {e:#}"),
        }
        Ok(report)
    }

    /// Rebuilds the model from the config, loads `model.mpk` from the artifact directory, and
    /// scores the test windows.
    fn eval(&self, ctx: &RunContext, device: B::Device) -> Result<Scores> {
        let splits = load_splits(self, ctx)?;
        let eval_batches = self.training.smoke.then_some(SMOKE_BATCHES.1);
        let test = loader(
            splits.test,
            splits.columns,
            EVAL_BATCH,
            None,
            eval_batches,
            &device,
        );
        self.model
            .run::<B>(Scoring::new(ctx, device, test).into())?
            .scores()
    }

    /// The run's own figures (`pdl plot`): the saved model's forecasts of a few test windows.
    fn figures(&self, ctx: &RunContext, device: B::Device, _: &Scores) -> Result<Vec<Figure>> {
        let splits = load_splits(self, ctx)?;
        let figure = forecasts::<B>(
            self,
            ctx,
            device,
            &splits.test,
            splits.columns,
            splits.shown,
        )?;
        Ok(vec![figure])
    }
}

/// How many test windows `forecasts.png` shows.
const SHOWN_WINDOWS: usize = 4;

/// The saved model's forecasts of a few test windows, spread evenly over the test split, for the
/// last series: `forecasts.png`.
fn forecasts<B: AutodiffBackend>(
    config: &ForecastExperimentConfig,
    ctx: &RunContext,
    device: B::Device,
    test: &WindowDataset,
    columns: usize,
    series: String,
) -> Result<Figure> {
    let n = test.len();
    let mut picked: Vec<usize> = (0..SHOWN_WINDOWS)
        .map(|k| k * n.saturating_sub(1) / (SHOWN_WINDOWS - 1))
        .collect();
    picked.dedup();
    let windows: Vec<Window> = picked.iter().filter_map(|&i| test.get(i)).collect();
    let examples = super::loader(
        WindowBatcher { columns },
        InMemDataset::new(windows.clone()),
        SHOWN_WINDOWS,
        None,
        None,
        &device,
    );
    let rows = config
        .model
        .run::<B>(Predicting::new(ctx, device, examples).into())?
        .rows()?;
    let column = |values: &[f32]| -> Vec<f32> {
        values
            .iter()
            .skip(columns - 1)
            .step_by(columns)
            .copied()
            .collect()
    };
    let shown = picked.iter().zip(&windows).zip(rows);
    let windows = shown.map(|((&index, window), forecast)| {
        let (lookback, truth) = (column(&window.input), column(&window.target));
        let take = truth.len().min(lookback.len()).max(1);
        let tail = &lookback[lookback.len() - take..];
        ForecastWindow {
            index,
            naive: (0..truth.len()).map(|t| tail[t % take]).collect(),
            forecast: column(&forecast),
            lookback,
            truth,
        }
    });
    Ok(Figure::Forecasts(Forecasts {
        series,
        windows: windows.collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_split_holds_out_the_last_rows_and_reaches_back() {
        let [train, valid, test] = TimeSplit::Tail {
            valid: 12,
            test: 24,
        }
        .ranges(144, 12)
        .unwrap();
        assert_eq!((train, valid, test), (0..108, 96..120, 108..144));
        assert!(
            TimeSplit::Tail {
                valid: 12,
                test: 24
            }
            .ranges(40, 12)
            .is_err()
        );
        assert!(
            TimeSplit::Tail { valid: 0, test: 24 }
                .ranges(144, 12)
                .is_err()
        );
    }
}

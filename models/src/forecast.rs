//! Linear forecasting baselines: what a recurrent forecaster must beat.
//!
//! - [`DLinear`]: Zeng, Chen, Zhang & Xu (2023), "Are Transformers Effective for Time Series
//!   Forecasting?". The look-back `x` `[lookback]` of each series splits into a trend, its moving
//!   average over `kernel` steps (the ends padded by repeating the first and last values), and the
//!   remainder `x - trend`; one linear map `lookback -> horizon` each, shared by all series, and
//!   the two forecasts are added: `y = W_t trend + b_t + W_s (x - trend) + b_s`. Experiment
//!   `ett-linear`.
//! - [`repeat_last_window`]: the naive forecast, the last `horizon` steps of the look-back repeated.

use crate::classification::train_output;
use burn::nn::loss::{MseLoss, Reduction};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::RegressionOutput;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use pdl_datasets::timeseries::WindowBatch;

/// A model mapping a look-back window to a forecast of the horizon, for every series at once.
pub trait Forecaster<B: Backend> {
    /// # Shapes
    /// - input: `[batch, lookback, num_series]`
    /// - output: `[batch, horizon, num_series]`
    fn forecast(&self, input: Tensor<B, 3>) -> Tensor<B, 3>;

    /// The forecast and its mean squared error over every step and series, flattened to
    /// `[batch, horizon * num_series]` as the Learner's regression output expects.
    fn forward_regression(&self, batch: WindowBatch<B>) -> RegressionOutput<B> {
        regression_output(self.forecast(batch.inputs), batch.targets)
    }
}

/// Mean squared error of `predicted` against `targets`, both `[batch, horizon, num_series]`.
pub fn regression_output<B: Backend>(
    predicted: Tensor<B, 3>,
    targets: Tensor<B, 3>,
) -> RegressionOutput<B> {
    let predicted = predicted.flatten::<2>(1, 2);
    let targets = targets.flatten::<2>(1, 2);
    let loss = MseLoss::new().forward(predicted.clone(), targets.clone(), Reduction::Mean);
    RegressionOutput::new(loss, predicted, targets)
}

impl<B: Backend> Forecaster<B> for DLinear<B> {
    fn forecast(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward(input)
    }
}

impl<B: AutodiffBackend> TrainStep for DLinear<B> {
    type Input = WindowBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: WindowBatch<B>) -> TrainOutput<RegressionOutput<B>> {
        train_output(self, self.forward_regression(batch))
    }
}

impl<B: Backend> InferenceStep for DLinear<B> {
    type Input = WindowBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: WindowBatch<B>) -> RegressionOutput<B> {
        self.forward_regression(batch)
    }
}
use burn::tensor::module::avg_pool1d;
use pdl_kernels::{Linear, LinearConfig};

/// Configuration of a [`DLinear`].
#[derive(Config, Debug)]
pub struct DLinearConfig {
    /// Input steps.
    pub lookback: usize,
    /// Steps to predict.
    pub horizon: usize,
    /// Moving-average window of the trend (odd). The paper uses 25.
    #[config(default = 25)]
    pub kernel: usize,
}

impl DLinearConfig {
    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.lookback == 0 || self.horizon == 0 {
            return Err("DLinear lookback and horizon must be at least 1".into());
        }
        if self.kernel.is_multiple_of(2) {
            return Err(format!("DLinear kernel must be odd, got {}", self.kernel));
        }
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`DLinearConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DLinear<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        DLinear {
            trend: LinearConfig::new(self.lookback, self.horizon).init(device),
            remainder: LinearConfig::new(self.lookback, self.horizon).init(device),
            kernel: self.kernel,
        }
    }
}

/// DLinear: a linear map of the trend plus a linear map of the remainder, per series.
#[derive(Module, Debug)]
pub struct DLinear<B: Backend> {
    trend: Linear<B>,
    remainder: Linear<B>,
    kernel: usize,
}

impl<B: Backend> DLinear<B> {
    /// # Shapes
    /// - input: `[batch, lookback, num_series]`
    /// - output: `[batch, horizon, num_series]`
    pub fn forward(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = input.swap_dims(1, 2); // [batch, num_series, lookback]
        let trend = moving_average(x.clone(), self.kernel);
        let y = self.trend.forward(trend.clone()) + self.remainder.forward(x - trend);
        y.swap_dims(1, 2) // [batch, horizon, num_series]
    }
}

/// The moving average over the last dimension with a window of `kernel` (odd), the ends padded by
/// repeating the first and last values so the output keeps the input's length.
///
/// # Shapes
/// - x: `[batch, channels, len]`
/// - output: `[batch, channels, len]`
pub fn moving_average<B: Backend>(x: Tensor<B, 3>, kernel: usize) -> Tensor<B, 3> {
    let [batch, channels, len] = x.dims();
    let pad = (kernel - 1) / 2;
    let first = x
        .clone()
        .slice([0..batch, 0..channels, 0..1])
        .repeat_dim(2, pad);
    let last = x
        .clone()
        .slice([0..batch, 0..channels, len - 1..len])
        .repeat_dim(2, pad);
    let padded = Tensor::cat(vec![first, x, last], 2); // [batch, channels, len + 2 pad]
    avg_pool1d(padded, kernel, 1, 0, true, false)
}

/// The naive forecast: the last `horizon` steps of the look-back, repeated to cover the horizon
/// when it is longer than the look-back.
///
/// # Shapes
/// - input: `[batch, lookback, num_series]`
/// - output: `[batch, horizon, num_series]`
pub fn repeat_last_window<B: Backend>(input: Tensor<B, 3>, horizon: usize) -> Tensor<B, 3> {
    let [batch, lookback, num_series] = input.dims();
    let take = horizon.min(lookback);
    let tail = input.slice([0..batch, lookback - take..lookback, 0..num_series]);
    tail.repeat_dim(1, horizon.div_ceil(take))
        .slice([0..batch, 0..horizon, 0..num_series])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::tensor::{TensorData, Tolerance};

    fn ramp(len: usize) -> Tensor<B, 3> {
        let v: Vec<f32> = (0..len).map(|i| i as f32).collect();
        Tensor::from_data(TensorData::new(v, [1, len, 1]), &Default::default())
    }

    #[test]
    fn the_moving_average_repeats_the_ends() {
        let x = ramp(5).swap_dims(1, 2); // 0 1 2 3 4
        let avg = moving_average(x, 3).into_data().to_vec::<f32>().unwrap();
        // Padded 0 0 1 2 3 4 4.
        let expected = [1.0 / 3.0, 1.0, 2.0, 3.0, 11.0 / 3.0];
        for (a, e) in avg.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{avg:?}");
        }
    }

    #[test]
    fn dlinear_maps_trend_and_remainder_separately() {
        let model = DLinearConfig::new(6, 2)
            .with_kernel(3)
            .init::<B>(&Default::default());
        let x = ramp(6);
        let trend = moving_average(x.clone().swap_dims(1, 2), 3);
        let expected = model.trend.forward(trend.clone())
            + model.remainder.forward(x.clone().swap_dims(1, 2) - trend);
        model.forward(x).into_data().assert_approx_eq::<f32>(
            &expected.swap_dims(1, 2).into_data(),
            Tolerance::absolute(1e-5),
        );
    }

    #[test]
    fn the_naive_forecast_repeats_the_last_window() {
        let y = repeat_last_window(ramp(5), 3)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(y, vec![2.0, 3.0, 4.0]);
        let y = repeat_last_window(ramp(2), 5)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(y, vec![0.0, 1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(DLinearConfig::new(0, 2).validate().is_err());
        assert!(DLinearConfig::new(4, 2).with_kernel(4).validate().is_err());
    }
}

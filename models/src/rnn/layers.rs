//! Recurrent layers built from the scratch cells: stacked, optionally bidirectional, with dropout
//! between layers, and the forecaster that reads a window of a time series with them.

use super::scratch::LstmState;
use super::scratch::{GruCell, LstmCell, RnnCell, RnnCellConfig, unroll};
use crate::classification::check_dropout;
use crate::classification::train_output;
use crate::forecast::Forecaster;
use burn::nn::{Dropout, DropoutConfig, Gru, GruConfig, Lstm, LstmConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, RegressionOutput, TrainOutput, TrainStep};
use pdl_datasets::timeseries::WindowBatch;
use pdl_kernels::{Linear, LinearConfig};

/// Which recurrent cell a layer uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// Elman RNN.
    Rnn,
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// Whose cell: the scratch cells of [`super::scratch`], or `burn::nn::Lstm` / `burn::nn::Gru`
/// (Burn has no Elman RNN), to compare against.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CellSource {
    /// [`super::scratch`]: fused gate matrices, two matmuls a step.
    Scratch,
    /// Burn's own modules.
    Burn,
}

/// Configuration of a [`Recurrent`] stack.
#[derive(Config, Debug)]
pub struct RecurrentConfig {
    /// Input features per step.
    pub d_input: usize,
    /// Hidden width of each direction.
    pub d_hidden: usize,
    /// The cell.
    #[config(default = "CellKind::Lstm")]
    pub cell: CellKind,
    /// Scratch cells or Burn's.
    #[config(default = "CellSource::Scratch")]
    pub source: CellSource,
    /// Stacked layers.
    #[config(default = 1)]
    pub num_layers: usize,
    /// A second cell per layer reads the sequence backwards; outputs are concatenated.
    #[config(default = false)]
    pub bidirectional: bool,
    /// Dropout between layers (not after the last).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl RecurrentConfig {
    /// Width of each step's output: `d_hidden`, doubled when bidirectional.
    pub fn d_output(&self) -> usize {
        self.d_hidden * if self.bidirectional { 2 } else { 1 }
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_input == 0 || self.d_hidden == 0 || self.num_layers == 0 {
            return Err("recurrent sizes and num_layers must be at least 1".into());
        }
        if (self.source, self.cell) == (CellSource::Burn, CellKind::Rnn) {
            return Err("Burn has no Elman RNN module: use source Scratch for cell Rnn".into());
        }
        check_dropout("recurrent", self.dropout)
    }

    /// Builds the stack on `device`.
    ///
    /// # Panics
    /// If [`RecurrentConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Recurrent<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let directions = if self.bidirectional { 2 } else { 1 };
        let configs: Vec<RnnCellConfig> = (0..self.num_layers)
            .flat_map(|layer| {
                let d_input = if layer == 0 {
                    self.d_input
                } else {
                    self.d_output()
                };
                (0..directions).map(move |_| RnnCellConfig::new(d_input, self.d_hidden))
            })
            .collect();
        let build = |kind: CellKind, source: CellSource| {
            configs
                .iter()
                .filter(move |_| (self.cell, self.source) == (kind, source))
        };
        use CellSource::{Burn, Scratch};
        Recurrent {
            rnn: build(CellKind::Rnn, Scratch)
                .map(|c| c.init_rnn(device))
                .collect(),
            lstm: build(CellKind::Lstm, Scratch)
                .map(|c| c.init_lstm(device))
                .collect(),
            gru: build(CellKind::Gru, Scratch)
                .map(|c| c.init_gru(device))
                .collect(),
            burn_lstm: build(CellKind::Lstm, Burn)
                .map(|c| LstmConfig::new(c.d_input, c.d_hidden, true).init(device))
                .collect(),
            burn_gru: build(CellKind::Gru, Burn)
                .map(|c| GruConfig::new(c.d_input, c.d_hidden, true).init(device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            bidirectional: self.bidirectional,
        }
    }
}

/// What one layer and direction carries between calls: `h`, and `c` for an LSTM.
#[derive(Debug, Clone)]
pub struct LayerState<B: Backend> {
    /// Hidden state, `[batch, d_hidden]`.
    pub hidden: Tensor<B, 2>,
    /// Cell state of an LSTM, `[batch, d_hidden]`.
    pub cell: Option<Tensor<B, 2>>,
}

/// What [`Recurrent::forward_with`] returns.
#[derive(Debug, Clone)]
pub struct RecurrentOutput<B: Backend> {
    /// Every step's output of the last layer, `[batch, seq_len, d_output]`.
    pub outputs: Tensor<B, 3>,
    /// The last layer's final hidden state, `[batch, d_output]`: the forward direction at the last
    /// real step beside the backward direction at the first.
    pub last: Tensor<B, 2>,
    /// Each layer's and direction's state after the last step, to continue from in the next call.
    pub states: Vec<LayerState<B>>,
}

/// A stack of recurrent layers. Exactly one of the cell lists is filled, one cell per layer and
/// direction (forward, then backward).
#[derive(Module, Debug)]
pub struct Recurrent<B: Backend> {
    rnn: Vec<RnnCell<B>>,
    lstm: Vec<LstmCell<B>>,
    gru: Vec<GruCell<B>>,
    burn_lstm: Vec<Lstm<B>>,
    burn_gru: Vec<Gru<B>>,
    dropout: Dropout,
    bidirectional: bool,
}

impl<B: Backend> Recurrent<B> {
    /// Every step's output of the last layer, and its final hidden state (for a bidirectional
    /// stack: the forward direction's last step beside the backward direction's first).
    ///
    /// # Shapes
    /// - input: `[batch, seq_len, d_input]`
    /// - output: `([batch, seq_len, d_output], [batch, d_output])`
    pub fn forward(&self, input: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let out = self.forward_with(input, None, None);
        (out.outputs, out.last)
    }

    /// The full forward pass: from `states` (zeros if none, else one per layer and direction, as
    /// a previous call returned them), and with `lengths` `[batch]` for right-padded sequences.
    ///
    /// With lengths, the backward direction reads each sequence from its last real step, and
    /// `last` is taken at the real ends, so the padding changes no output at a real step and no
    /// `last`; outputs at padded steps are meaningless (mask them), and so are the `states` of
    /// padded sequences.
    pub fn forward_with(
        &self,
        input: Tensor<B, 3>,
        states: Option<Vec<LayerState<B>>>,
        lengths: Option<Tensor<B, 1, Int>>,
    ) -> RecurrentOutput<B> {
        let [batch, seq_len, _] = input.dims();
        let device = input.device();
        let lengths = lengths.unwrap_or_else(|| Tensor::full([batch], seq_len as i64, &device));
        let reverse = reverse_index(&lengths, seq_len);
        let last_step = (lengths - 1).reshape([batch, 1, 1]);
        let directions = if self.bidirectional { 2 } else { 1 };
        let units = self.num_units();
        let mut states = states.map(|s| s.into_iter());
        let mut x = input;
        let (mut last, mut finals) = (None, Vec::with_capacity(units));
        for layer in 0..units / directions {
            let (mut outputs, mut lasts) = (Vec::new(), Vec::new());
            for direction in 0..directions {
                let state = states.as_mut().and_then(|s| s.next());
                let unit = layer * directions + direction;
                let (mut out, state) = if direction == 0 {
                    self.unit(unit, x.clone(), state)
                } else {
                    self.unit(unit, gather_steps(x.clone(), reverse.clone()), state)
                };
                let d = out.dims()[2];
                let at_end = out.clone().gather(1, last_step.clone().repeat_dim(2, d));
                lasts.push(at_end.reshape([batch, d]));
                if direction == 1 {
                    out = gather_steps(out, reverse.clone());
                }
                outputs.push(out);
                finals.push(state);
            }
            x = Tensor::cat(outputs, 2); // [batch, seq_len, d_output]
            last = Some(Tensor::cat(lasts, 1)); // [batch, d_output]
            if (layer + 1) * directions < units {
                x = self.dropout.forward(x);
            }
        }
        RecurrentOutput {
            outputs: x,
            last: last.expect("at least one layer"),
            states: finals,
        }
    }

    fn num_units(&self) -> usize {
        self.rnn.len()
            + self.lstm.len()
            + self.gru.len()
            + self.burn_lstm.len()
            + self.burn_gru.len()
    }

    /// Runs layer-and-direction `i` over `x` from `state`.
    fn unit(
        &self,
        i: usize,
        x: Tensor<B, 3>,
        state: Option<LayerState<B>>,
    ) -> (Tensor<B, 3>, LayerState<B>) {
        let hidden_only = |h: Tensor<B, 2>| LayerState {
            hidden: h,
            cell: None,
        };
        let cell_of = |s: &LayerState<B>| s.cell.clone().unwrap_or_else(|| s.hidden.zeros_like());
        if let Some(cell) = self.lstm.get(i) {
            let state = state.map(|s| LstmState {
                cell: cell_of(&s),
                hidden: s.hidden,
            });
            let (out, s) = unroll(cell, x, state);
            (
                out,
                LayerState {
                    hidden: s.hidden,
                    cell: Some(s.cell),
                },
            )
        } else if let Some(cell) = self.gru.get(i) {
            let (out, h) = unroll(cell, x, state.map(|s| s.hidden));
            (out, hidden_only(h))
        } else if let Some(cell) = self.rnn.get(i) {
            let (out, h) = unroll(cell, x, state.map(|s| s.hidden));
            (out, hidden_only(h))
        } else if let Some(lstm) = self.burn_lstm.get(i) {
            let state = state.map(|s| burn::nn::LstmState::new(cell_of(&s), s.hidden));
            let (out, s) = lstm.forward(x, state);
            (
                out,
                LayerState {
                    hidden: s.hidden,
                    cell: Some(s.cell),
                },
            )
        } else {
            let out = self.burn_gru[i].forward(x, state.map(|s| s.hidden));
            let [batch, seq_len, d] = out.dims();
            let h = out
                .clone()
                .slice([0..batch, seq_len - 1..seq_len, 0..d])
                .reshape([batch, d]);
            (out, hidden_only(h))
        }
    }
}

/// For each sequence of length `n`, the step order that reverses its first `n` steps and leaves
/// the padding after them in place: `[n-1, ..., 0, n, ..., seq_len-1]`. It is its own inverse.
///
/// # Shapes
/// - lengths: `[batch]`
/// - output: `[batch, seq_len]`
pub fn reverse_index<B: Backend>(lengths: &Tensor<B, 1, Int>, seq_len: usize) -> Tensor<B, 2, Int> {
    let [batch] = lengths.dims();
    let steps = Tensor::<B, 1, Int>::arange(0..seq_len as i64, &lengths.device())
        .reshape([1, seq_len])
        .repeat_dim(0, batch);
    let n = lengths.clone().reshape([batch, 1]).repeat_dim(1, seq_len);
    let reversed = n.clone() - 1 - steps.clone();
    steps.clone().mask_where(steps.lower(n), reversed)
}

/// Reorders the steps of `x` `[batch, seq_len, d]` by `index` `[batch, seq_len]`.
fn gather_steps<B: Backend>(x: Tensor<B, 3>, index: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let d = x.dims()[2];
    x.gather(1, index.unsqueeze_dim::<3>(2).repeat_dim(2, d))
}

/// Configuration of an [`RnnForecaster`].
#[derive(Config, Debug)]
pub struct RnnForecasterConfig {
    /// Series per step (input and output).
    pub num_series: usize,
    /// Steps to predict.
    pub horizon: usize,
    /// The recurrent encoder's hidden width.
    #[config(default = 64)]
    pub d_hidden: usize,
    /// The cell.
    #[config(default = "CellKind::Lstm")]
    pub cell: CellKind,
    /// Scratch cells or Burn's.
    #[config(default = "CellSource::Scratch")]
    pub source: CellSource,
    /// Stacked layers.
    #[config(default = 2)]
    pub num_layers: usize,
    /// Dropout between layers.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Instance normalisation (Kim et al. 2022, RevIN without its affine part): each window's
    /// series are standardised by their own look-back mean and deviation before the encoder, and
    /// the forecast is scaled back. Lets the model follow a series whose level drifts away from
    /// the training part's.
    #[config(default = false)]
    pub instance_norm: bool,
}

impl RnnForecasterConfig {
    fn encoder(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.num_series, self.d_hidden)
            .with_cell(self.cell)
            .with_source(self.source)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
    }

    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.horizon == 0 {
            return Err("forecast horizon must be at least 1".into());
        }
        self.encoder().validate()
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`RnnForecasterConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RnnForecaster<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        RnnForecaster {
            encoder: self.encoder().init(device),
            head: LinearConfig::new(self.d_hidden, self.horizon * self.num_series).init(device),
            horizon: self.horizon,
            instance_norm: self.instance_norm,
        }
    }
}

/// Reads the look-back window with a recurrent encoder and maps its final hidden state to the
/// whole horizon at once (a direct multi-step forecast, no feeding back of predictions).
#[derive(Module, Debug)]
pub struct RnnForecaster<B: Backend> {
    encoder: Recurrent<B>,
    head: Linear<B>,
    horizon: usize,
    instance_norm: bool,
}

impl<B: Backend> RnnForecaster<B> {
    /// # Shapes
    /// - input: `[batch, lookback, num_series]`
    /// - output: `[batch, horizon, num_series]`
    pub fn forward(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, _, num_series] = input.dims();
        if !self.instance_norm {
            let (_, last) = self.encoder.forward(input); // [batch, d_hidden]
            return self
                .head
                .forward(last)
                .reshape([batch, self.horizon, num_series]);
        }
        let mean = input.clone().mean_dim(1); // [batch, 1, num_series]
        let centred = input - mean.clone();
        let std = (centred.clone().powi_scalar(2).mean_dim(1) + 1e-5).sqrt();
        let (_, last) = self.encoder.forward(centred / std.clone());
        let forecast = self
            .head
            .forward(last)
            .reshape([batch, self.horizon, num_series]);
        forecast * std + mean
    }
}

impl<B: Backend> Forecaster<B> for RnnForecaster<B> {
    fn forecast(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward(input)
    }
}

impl<B: AutodiffBackend> TrainStep for RnnForecaster<B> {
    type Input = WindowBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: WindowBatch<B>) -> TrainOutput<RegressionOutput<B>> {
        train_output(self, self.forward_regression(batch))
    }
}

impl<B: Backend> InferenceStep for RnnForecaster<B> {
    type Input = WindowBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: WindowBatch<B>) -> RegressionOutput<B> {
        self.forward_regression(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    fn input() -> Tensor<B, 3> {
        Tensor::random(
            [2, 7, 3],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        )
    }

    #[test]
    fn stacks_have_the_right_widths_for_every_cell() {
        for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
            for bidirectional in [false, true] {
                let config = RecurrentConfig::new(3, 5)
                    .with_cell(cell)
                    .with_num_layers(2)
                    .with_bidirectional(bidirectional);
                let (out, last) = config.init::<B>(&Default::default()).forward(input());
                let d = config.d_output();
                assert_eq!((out.dims(), last.dims()), ([2, 7, d], [2, d]), "{cell:?}");
            }
        }
    }

    #[test]
    fn the_backward_direction_reads_the_sequence_reversed() {
        let model = RecurrentConfig::new(3, 4)
            .with_cell(CellKind::Gru)
            .with_bidirectional(true)
            .init::<B>(&Default::default());
        let x = input();
        let (out, last) = model.forward(x.clone());
        // The backward half of step 0's output is the backward cell's final state, and it equals
        // running that cell alone over the flipped sequence.
        let (alone, _) = unroll(&model.gru[1], x.flip([1]), None);
        let first_backward = out.clone().slice([0..2, 0..1, 4..8]).reshape([2, 4]);
        first_backward.clone().into_data().assert_approx_eq::<f32>(
            &alone.slice([0..2, 6..7, 0..4]).reshape([2, 4]).into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
        last.slice([0..2, 4..8])
            .into_data()
            .assert_approx_eq::<f32>(
                &first_backward.into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
    }

    #[test]
    fn burns_cells_fit_in_the_same_stack() {
        for cell in [CellKind::Lstm, CellKind::Gru] {
            let config = RecurrentConfig::new(3, 5)
                .with_cell(cell)
                .with_source(CellSource::Burn)
                .with_num_layers(2)
                .with_bidirectional(true);
            let (out, last) = config.init::<B>(&Default::default()).forward(input());
            assert_eq!((out.dims(), last.dims()), ([2, 7, 10], [2, 10]), "{cell:?}");
        }
        let burn_rnn = RecurrentConfig::new(3, 5)
            .with_cell(CellKind::Rnn)
            .with_source(CellSource::Burn);
        assert!(burn_rnn.validate().unwrap_err().contains("Scratch"));
    }

    #[test]
    fn padding_changes_no_real_step_and_no_final_state() {
        let device = Default::default();
        for source in [CellSource::Scratch, CellSource::Burn] {
            let model = RecurrentConfig::new(3, 4)
                .with_source(source)
                .with_num_layers(2)
                .with_bidirectional(true)
                .init::<B>(&device);
            let x = input(); // [2, 7, 3]
            // Sequence 0 has 4 real steps; pad it with noise and compare with it alone.
            let lengths = Tensor::from_data(TensorData::from([4i64, 7]), &device);
            let padded = model.forward_with(x.clone(), None, Some(lengths));
            let alone = model.forward_with(x.clone().slice([0..1, 0..4, 0..3]), None, None);
            let close = |a: Tensor<B, 3>, b: Tensor<B, 3>| {
                a.into_data()
                    .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5))
            };
            close(
                padded.outputs.clone().slice([0..1, 0..4, 0..8]),
                alone.outputs,
            );
            close(
                padded.last.clone().slice([0..1, 0..8]).unsqueeze(),
                alone.last.unsqueeze(),
            );
            // The full-length sequence is as without lengths.
            let (full, last) = model.forward(x);
            close(
                padded.outputs.slice([1..2, 0..7, 0..8]),
                full.slice([1..2, 0..7, 0..8]),
            );
            close(
                padded.last.slice([1..2, 0..8]).unsqueeze(),
                last.slice([1..2, 0..8]).unsqueeze(),
            );
        }
    }

    #[test]
    fn carried_state_continues_the_sequence() {
        let device = Default::default();
        for (cell, source) in [
            (CellKind::Lstm, CellSource::Scratch),
            (CellKind::Gru, CellSource::Scratch),
            (CellKind::Rnn, CellSource::Scratch),
            (CellKind::Lstm, CellSource::Burn),
            (CellKind::Gru, CellSource::Burn),
        ] {
            let model = RecurrentConfig::new(3, 4)
                .with_cell(cell)
                .with_source(source)
                .with_num_layers(2)
                .init::<B>(&device);
            let x = input();
            let whole = model.forward_with(x.clone(), None, None);
            let first = model.forward_with(x.clone().slice([0..2, 0..3, 0..3]), None, None);
            let rest = model.forward_with(x.slice([0..2, 3..7, 0..3]), Some(first.states), None);
            rest.outputs.into_data().assert_approx_eq::<f32>(
                &whole.outputs.slice([0..2, 3..7, 0..4]).into_data(),
                Tolerance::absolute(1e-5),
            );
            assert_eq!(rest.states.len(), 2, "{cell:?} {source:?}");
        }
    }

    #[test]
    fn instance_norm_makes_the_forecast_follow_the_level_and_scale() {
        let device = Default::default();
        let model = RnnForecasterConfig::new(3, 4)
            .with_instance_norm(true)
            .init::<B>(&device);
        let x = input();
        let shifted = model.forward(x.clone() * 3.0 + 10.0);
        (model.forward(x) * 3.0 + 10.0)
            .into_data()
            .assert_approx_eq::<f32>(&shifted.into_data(), Tolerance::absolute(1e-3));
    }

    #[test]
    fn the_forecaster_predicts_the_whole_horizon() {
        let model = RnnForecasterConfig::new(3, 4).init::<B>(&Default::default());
        assert_eq!(model.forward(input()).dims(), [2, 4, 3]);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(RecurrentConfig::new(3, 0).validate().is_err());
        assert!(
            RecurrentConfig::new(3, 4)
                .with_num_layers(0)
                .validate()
                .is_err()
        );
        assert!(
            RecurrentConfig::new(3, 4)
                .with_dropout(1.0)
                .validate()
                .is_err()
        );
        assert!(RnnForecasterConfig::new(3, 0).validate().is_err());
    }
}

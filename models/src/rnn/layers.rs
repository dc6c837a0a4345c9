//! Recurrent layers built from the scratch cells: stacked, optionally bidirectional, with dropout
//! between layers, and the forecaster that reads a window of a time series with them.

use super::scratch::{Cell, GruCell, LstmCell, RnnCell, RnnCellConfig, unroll};
use crate::classification::check_dropout;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

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
        let build = |kind: CellKind| configs.iter().filter(move |_| self.cell == kind);
        Recurrent {
            rnn: build(CellKind::Rnn).map(|c| c.init_rnn(device)).collect(),
            lstm: build(CellKind::Lstm).map(|c| c.init_lstm(device)).collect(),
            gru: build(CellKind::Gru).map(|c| c.init_gru(device)).collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            bidirectional: self.bidirectional,
        }
    }
}

/// A stack of recurrent layers. Exactly one of the cell lists is filled, one cell per layer and
/// direction (forward, then backward).
#[derive(Module, Debug)]
pub struct Recurrent<B: Backend> {
    rnn: Vec<RnnCell<B>>,
    lstm: Vec<LstmCell<B>>,
    gru: Vec<GruCell<B>>,
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
        if !self.lstm.is_empty() {
            self.run(&self.lstm, input)
        } else if !self.gru.is_empty() {
            self.run(&self.gru, input)
        } else {
            self.run(&self.rnn, input)
        }
    }

    fn run<C: Cell<B>>(&self, cells: &[C], input: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let directions = if self.bidirectional { 2 } else { 1 };
        let layers = cells.len() / directions;
        let mut x = input;
        let mut last = None;
        for (layer, pair) in cells.chunks(directions).enumerate() {
            let (forward, state) = unroll(&pair[0], x.clone(), None);
            let mut finals = vec![C::hidden(&state)];
            let mut outputs = vec![forward];
            if let Some(backward) = pair.get(1) {
                let (reversed, state) = unroll(backward, x.flip([1]), None);
                outputs.push(reversed.flip([1]));
                finals.push(C::hidden(&state));
            }
            x = Tensor::cat(outputs, 2); // [batch, seq_len, d_output]
            last = Some(Tensor::cat(finals, 1)); // [batch, d_output]
            if layer + 1 < layers {
                x = self.dropout.forward(x);
            }
        }
        (x, last.expect("at least one layer"))
    }
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
    /// Stacked layers.
    #[config(default = 2)]
    pub num_layers: usize,
    /// Dropout between layers.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl RnnForecasterConfig {
    fn encoder(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.num_series, self.d_hidden)
            .with_cell(self.cell)
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
}

impl<B: Backend> RnnForecaster<B> {
    /// # Shapes
    /// - input: `[batch, lookback, num_series]`
    /// - output: `[batch, horizon, num_series]`
    pub fn forward(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, _, num_series] = input.dims();
        let (_, last) = self.encoder.forward(input); // [batch, d_hidden]
        self.head
            .forward(last)
            .reshape([batch, self.horizon, num_series])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

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

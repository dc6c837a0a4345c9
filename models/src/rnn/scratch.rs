//! Recurrent cells from scratch: the inside of a recurrent layer, one time step at a time.
//!
//! With input `x_t` `[batch, d_input]` and previous hidden state `h` `[batch, d_hidden]`:
//!
//! - Elman RNN (Elman 1990): `h' = tanh(W_x x_t + b_x + W_h h + b_h)`.
//! - LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), cell state `c`:
//!   ```text
//!   i = sigmoid(W_xi x_t + b_xi + W_hi h + b_hi)    input gate
//!   f = sigmoid(W_xf x_t + b_xf + W_hf h + b_hf)    forget gate
//!   g = tanh   (W_xg x_t + b_xg + W_hg h + b_hg)    candidate cell
//!   o = sigmoid(W_xo x_t + b_xo + W_ho h + b_ho)    output gate
//!   c' = f * c + i * g,    h' = o * tanh(c')
//!   ```
//! - GRU (Cho et al. 2014), PyTorch's and Burn's form (the reset gate applied after the matmul):
//!   ```text
//!   r = sigmoid(W_xr x_t + b_xr + W_hr h + b_hr)          reset gate
//!   z = sigmoid(W_xz x_t + b_xz + W_hz h + b_hz)          update gate
//!   n = tanh   (W_xn x_t + b_xn + r * (W_hn h + b_hn))    candidate
//!   h' = (1 - z) * n + z * h
//!   ```
//!
//! Each cell keeps the weights of all its gates in two matrices, `W_x` `[d_input, k * d_hidden]`
//! and `W_h` `[d_hidden, k * d_hidden]` (k = 1, 4, 3), so a step is two matmuls whatever the
//! number of gates, and the columns are split into gates afterwards (in the order above, which is
//! PyTorch's).
//!
//! On the CPU backends the LSTM runs as one fused op over the whole sequence instead
//! ([`Cell::fused`], `pdl_kernels::lstm`): the same equations, with the backward pass through time
//! written out, several times faster under autodiff than the dozen ops a step below.
//!
//! How [`unroll`] feeds the steps matters more than the matmuls. Under autodiff, taking step `t`
//! out of a `[batch, seq_len, width]` tensor costs a full-size gradient in the backward pass (Burn,
//! like PyTorch, writes a slice's gradient into zeros of the whole tensor), so a loop over
//! `seq_len` steps moves `seq_len * batch * seq_len * width` floats. Projecting the whole input in
//! one matmul first and slicing the projection (width `gates * d_hidden`) was 8x slower on
//! Tiny Shakespeare than slicing the input (width `d_input`, 8x narrower there) and projecting
//! each step: `unroll` slices whichever is narrower.

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use pdl_kernels::{Linear, LinearConfig};

/// The state an LSTM carries between steps.
#[derive(Debug, Clone)]
pub struct LstmState<B: Backend> {
    /// Hidden state `h`, `[batch, d_hidden]`.
    pub hidden: Tensor<B, 2>,
    /// Cell state `c`, `[batch, d_hidden]`.
    pub cell: Tensor<B, 2>,
}

/// What a cell carries between steps: the zero state to start from, and the hidden state `h`
/// that each step outputs.
pub trait CellState<B: Backend>: Clone {
    /// The all-zero state for a batch of `zeros`, `[batch, d_hidden]`.
    fn zeros(zeros: Tensor<B, 2>) -> Self;

    /// The hidden state `h`, `[batch, d_hidden]`.
    fn hidden(&self) -> Tensor<B, 2>;
}

/// The RNN's and the GRU's state: `h` alone.
impl<B: Backend> CellState<B> for Tensor<B, 2> {
    fn zeros(zeros: Tensor<B, 2>) -> Self {
        zeros
    }

    fn hidden(&self) -> Tensor<B, 2> {
        self.clone()
    }
}

impl<B: Backend> CellState<B> for LstmState<B> {
    fn zeros(zeros: Tensor<B, 2>) -> Self {
        LstmState {
            hidden: zeros.clone(),
            cell: zeros,
        }
    }

    fn hidden(&self) -> Tensor<B, 2> {
        self.hidden.clone()
    }
}

/// The weights of all of a cell's gates, side by side: `W_x`, `b_x` `[d_input, gates * d_hidden]`
/// and `W_h`, `b_h` `[d_hidden, gates * d_hidden]`.
#[derive(Module, Debug)]
pub struct Gates<B: Backend> {
    /// `W_x`, `b_x`.
    pub input: Linear<B>,
    /// `W_h`, `b_h`.
    pub hidden: Linear<B>,
}

/// A recurrent cell: how one time step maps the projected input and the state to the next state.
pub trait Cell<B: Backend> {
    /// What the cell carries between steps.
    type State: CellState<B>;

    /// The cell's gate weights.
    fn gates(&self) -> &Gates<B>;

    /// One step from the projected input `[batch, gates * d_hidden]` of time `t`.
    fn step(&self, projected: Tensor<B, 2>, state: Self::State) -> Self::State;

    /// Width of the hidden state.
    fn d_hidden(&self) -> usize {
        self.gates().hidden.weight.dims()[0]
    }

    /// `W_x x + b_x` for every gate and time step at once.
    ///
    /// # Shapes
    /// - input: `[batch, seq_len, d_input]`
    /// - output: `[batch, seq_len, gates * d_hidden]`
    fn project_input(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        self.gates().input.forward(input)
    }

    /// The whole sequence in one op, where the backend has a fused kernel for this cell; `None`
    /// (the default) makes [`unroll`] run [`Cell::step`] step by step.
    fn fused(
        &self,
        _input: &Tensor<B, 3>,
        _state: &Self::State,
    ) -> Option<(Tensor<B, 3>, Self::State)> {
        None
    }
}

/// Runs `cell` over a sequence from `state` (zeros if none); returns every step's hidden state
/// and the final state.
///
/// # Shapes
/// - input: `[batch, seq_len, d_input]`
/// - output: `[batch, seq_len, d_hidden]`
pub fn unroll<B: Backend, C: Cell<B>>(
    cell: &C,
    input: Tensor<B, 3>,
    state: Option<C::State>,
) -> (Tensor<B, 3>, C::State) {
    let [batch, seq_len, _] = input.dims();
    let mut state = state.unwrap_or_else(|| {
        C::State::zeros(Tensor::zeros([batch, cell.d_hidden()], &input.device()))
    });
    if let Some(done) = cell.fused(&input, &state) {
        return done;
    }
    // Burn's Linear weight is [d_input, d_output].
    let [d_input, d_projected] = cell.gates().input.weight.dims();
    let mut outputs = Vec::with_capacity(seq_len);
    if d_input <= d_projected {
        for x_t in input.iter_dim(1) {
            let projected = cell.gates().input.forward(x_t.squeeze_dim(1));
            state = cell.step(projected, state);
            outputs.push(state.hidden());
        }
    } else {
        for x_t in cell.project_input(input).iter_dim(1) {
            state = cell.step(x_t.squeeze_dim(1), state);
            outputs.push(state.hidden());
        }
    }
    (Tensor::stack(outputs, 1), state)
}

/// Configuration of a scratch cell: [`RnnCell`], [`LstmCell`] or [`GruCell`].
#[derive(Config, Debug)]
pub struct RnnCellConfig {
    /// Input features per step.
    pub d_input: usize,
    /// Width of the hidden state.
    pub d_hidden: usize,
}

impl RnnCellConfig {
    fn gates<B: Backend>(&self, count: usize, device: &B::Device) -> Gates<B> {
        Gates {
            input: LinearConfig::new(self.d_input, count * self.d_hidden).init(device),
            hidden: LinearConfig::new(self.d_hidden, count * self.d_hidden).init(device),
        }
    }

    /// An Elman RNN cell.
    pub fn init_rnn<B: Backend>(&self, device: &B::Device) -> RnnCell<B> {
        RnnCell {
            gates: self.gates(1, device),
        }
    }

    /// An LSTM cell.
    pub fn init_lstm<B: Backend>(&self, device: &B::Device) -> LstmCell<B> {
        LstmCell {
            gates: self.gates(4, device),
        }
    }

    /// A GRU cell.
    pub fn init_gru<B: Backend>(&self, device: &B::Device) -> GruCell<B> {
        GruCell {
            gates: self.gates(3, device),
        }
    }
}

/// Splits `[batch, k * d_hidden]` into `k` gates of `[batch, d_hidden]`.
fn split<B: Backend, const K: usize>(x: Tensor<B, 2>) -> [Tensor<B, 2>; K] {
    let parts = x.chunk(K, 1);
    std::array::from_fn(|i| parts[i].clone())
}

/// The Elman RNN cell, `h' = tanh(W_x x + b_x + W_h h + b_h)`.
#[derive(Module, Debug)]
pub struct RnnCell<B: Backend> {
    /// One gate: `[d_input, d_hidden]` and `[d_hidden, d_hidden]`.
    pub gates: Gates<B>,
}

impl<B: Backend> Cell<B> for RnnCell<B> {
    type State = Tensor<B, 2>;

    fn gates(&self) -> &Gates<B> {
        &self.gates
    }

    fn step(&self, projected: Tensor<B, 2>, h: Self::State) -> Self::State {
        tanh(projected + self.gates.hidden.forward(h))
    }
}

/// The LSTM cell; gates `i, f, g, o` side by side in its weights.
#[derive(Module, Debug)]
pub struct LstmCell<B: Backend> {
    /// Four gates: `[d_input, 4 * d_hidden]` and `[d_hidden, 4 * d_hidden]`.
    pub gates: Gates<B>,
}

impl<B: Backend> Cell<B> for LstmCell<B> {
    type State = LstmState<B>;

    fn gates(&self) -> &Gates<B> {
        &self.gates
    }

    fn step(&self, projected: Tensor<B, 2>, state: Self::State) -> Self::State {
        let [i, f, g, o] = split(projected + self.gates.hidden.forward(state.hidden));
        let cell = sigmoid(f) * state.cell + sigmoid(i) * tanh(g);
        let hidden = sigmoid(o) * tanh(cell.clone());
        LstmState { hidden, cell }
    }

    /// On the CPU backends, `pdl_kernels::lstm`: the same equations over the whole sequence as
    /// one op, with backpropagation through time written out (see `kernels/src/lstm.rs`).
    fn fused(
        &self,
        input: &Tensor<B, 3>,
        state: &Self::State,
    ) -> Option<(Tensor<B, 3>, Self::State)> {
        if !pdl_kernels::fused_lstm::<B>() {
            return None;
        }
        let hidden = &self.gates.hidden;
        let run = pdl_kernels::lstm(
            self.project_input(input.clone()),
            hidden.weight.val(),
            hidden.bias.as_ref().map(|bias| bias.val()),
            [state.hidden.clone(), state.cell.clone()],
        )?;
        let state = LstmState {
            hidden: run.last_hidden,
            cell: run.last_cell,
        };
        Some((run.hidden, state))
    }
}

/// The GRU cell; gates `r, z, n` side by side in its weights.
#[derive(Module, Debug)]
pub struct GruCell<B: Backend> {
    /// Three gates: `[d_input, 3 * d_hidden]` and `[d_hidden, 3 * d_hidden]`.
    pub gates: Gates<B>,
}

impl<B: Backend> Cell<B> for GruCell<B> {
    type State = Tensor<B, 2>;

    fn gates(&self) -> &Gates<B> {
        &self.gates
    }

    fn step(&self, projected: Tensor<B, 2>, h: Self::State) -> Self::State {
        let [x_r, x_z, x_n] = split(projected);
        let [h_r, h_z, h_n] = split(self.gates.hidden.forward(h.clone()));
        let r = sigmoid(x_r + h_r);
        let z = sigmoid(x_z + h_z);
        let n = tanh(x_n + r * h_n);
        (z.clone().neg() + 1.0) * n + z * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::module::Param;
    use burn::nn::{GateController, GruConfig, LstmConfig};
    use burn::tensor::{Distribution, Tolerance};
    const TOL: f32 = 1e-5;

    fn input() -> Tensor<B, 3> {
        Tensor::random(
            [3, 5, 4],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        )
    }

    /// A linear layer holding Burn's gates side by side, in the given order.
    fn fused(gates: &[&GateController<B>], hidden_side: bool) -> Linear<B> {
        let part = |g: &GateController<B>| {
            if hidden_side {
                g.hidden_transform.clone()
            } else {
                g.input_transform.clone()
            }
        };
        let weights = gates.iter().map(|g| part(g).weight.val()).collect();
        let biases = gates
            .iter()
            .map(|g| part(g).bias.expect("bias").val())
            .collect();
        Linear {
            weight: Param::from_tensor(Tensor::cat(weights, 1)),
            bias: Some(Param::from_tensor(Tensor::cat(biases, 0))),
        }
    }

    /// Gives every lazily initialised parameter its value now: Burn 0.21 draws a parameter when it
    /// is first read, and a clone read before the original draws values of its own.
    fn materialize<M: Module<B>>(model: M) -> M {
        let record = model.clone().into_record();
        model.load_record(record)
    }

    fn close<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(TOL));
    }

    #[test]
    fn scratch_lstm_equals_burns_lstm_with_the_same_weights() {
        let device = Default::default();
        let burn = materialize(LstmConfig::new(4, 6, true).init::<B>(&device));
        let gates = [
            &burn.input_gate,
            &burn.forget_gate,
            &burn.cell_gate,
            &burn.output_gate,
        ];
        let scratch = LstmCell {
            gates: Gates {
                input: fused(&gates, false),
                hidden: fused(&gates, true),
            },
        };
        let start = LstmState {
            hidden: Tensor::random([3, 6], Distribution::Uniform(-1.0, 1.0), &device),
            cell: Tensor::random([3, 6], Distribution::Uniform(-1.0, 1.0), &device),
        };
        let x = input();
        let (expected, state) = burn.forward(
            x.clone(),
            Some(burn::nn::LstmState::new(
                start.cell.clone(),
                start.hidden.clone(),
            )),
        );
        let (output, last) = unroll(&scratch, x, Some(start));
        close(output, expected);
        close(last.hidden, state.hidden);
        close(last.cell, state.cell);
    }

    #[test]
    fn scratch_gru_equals_burns_gru_with_the_same_weights() {
        let device = Default::default();
        let burn = materialize(GruConfig::new(4, 6, true).init::<B>(&device));
        let gates = [&burn.reset_gate, &burn.update_gate, &burn.new_gate];
        let scratch = GruCell {
            gates: Gates {
                input: fused(&gates, false),
                hidden: fused(&gates, true),
            },
        };
        let start = Tensor::random([3, 6], Distribution::Uniform(-1.0, 1.0), &device);
        let x = input();
        // Burn's GRU returns every step's hidden state; the final state is the last of them.
        let expected = burn.forward(x.clone(), Some(start.clone()));
        let (output, last) = unroll(&scratch, x, Some(start));
        close(output, expected.clone());
        close(last, expected.slice([0..3, 4..5, 0..6]).squeeze_dim(1));
    }

    #[test]
    fn rnn_cell_follows_its_equation_step_by_step() {
        let device = Default::default();
        let cell = RnnCellConfig::new(4, 6).init_rnn::<B>(&device);
        let x = input();
        let (output, last) = unroll(&cell, x.clone(), None);
        let mut h = Tensor::<B, 2>::zeros([3, 6], &device);
        for t in 0..5 {
            let x_t = x.clone().slice([0..3, t..t + 1, 0..4]).squeeze_dim(1);
            h = tanh(cell.gates.input.forward(x_t) + cell.gates.hidden.forward(h));
            close(
                output.clone().slice([0..3, t..t + 1, 0..6]).squeeze_dim(1),
                h.clone(),
            );
        }
        close(last, h);
    }

    #[test]
    fn cells_give_one_hidden_state_per_step() {
        let device = Default::default();
        let config = RnnCellConfig::new(4, 6);
        assert_eq!(
            unroll(&config.init_lstm::<B>(&device), input(), None)
                .0
                .dims(),
            [3, 5, 6]
        );
        assert_eq!(
            unroll(&config.init_gru::<B>(&device), input(), None)
                .0
                .dims(),
            [3, 5, 6]
        );
        // Parameters: (4 + 6) * k * 6 weights + 2 * k * 6 biases.
        assert_eq!(config.init_lstm::<B>(&device).num_params(), 10 * 24 + 48);
        assert_eq!(config.init_gru::<B>(&device).num_params(), 10 * 18 + 36);
    }
}

//! Recurrent networks for sequences (d2l.ai ch. 9-10, "Recurrent Neural Networks", "Modern
//! Recurrent Neural Networks").
//!
//! - [`scratch`]: the Elman RNN, LSTM and GRU cells written out with their equations, and
//!   [`scratch::unroll`], which runs a cell over a sequence. Tests give the scratch LSTM and GRU the
//!   weights of `burn::nn::Lstm` / `burn::nn::Gru` and show equal outputs and states.
//! - [`layers`]: stacks of those cells (any cell, layers, bidirectional, dropout between layers)
//!   and [`RnnForecaster`], a recurrent encoder with a linear head over the whole horizon.
//! - [`language`]: [`CharRnn`], a character-level language model that carries its state across
//!   calls to generate text.
//! - [`sentence`]: [`SentenceRnn`], a (bidirectional) sentence classifier with masked pooling.

pub mod language;
pub mod layers;
pub mod scratch;
pub mod sentence;

pub use language::{CharRnn, CharRnnConfig};
pub use layers::{
    CellKind, CellSource, LayerState, Recurrent, RecurrentConfig, RecurrentOutput, RnnForecaster,
    RnnForecasterConfig,
};
pub use scratch::{
    Cell, CellState, Gates, GruCell, LstmCell, LstmState, RnnCell, RnnCellConfig, unroll,
};
pub use sentence::{Pooling, SentenceRnn, SentenceRnnConfig};

//! The kernels' fast paths equal Burn's ops on the flex backend: `pdl_kernels::conv`'s custom
//! backward and host forward over the grid of shapes the kernels crate also runs on ndarray (and
//! `wgpu.rs` on wgpu), `pdl_kernels::pool`'s host max pooling over its grid of windows,
//! `pdl_kernels::norm`'s batch norm in training over ranks and layouts and its layer norm, the
//! fully connected layer, AdamW's step, and the fused LSTM and attention, alone and inside the course's LSTM
//! cell and multi-head attention.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Distribution, Tolerance};
use pdl_kernels::parity::{
    check_adamw, check_attention, check_batch_norm, check_gelu, check_gradients, check_layer_norm,
    check_linear, check_lstm, check_pool,
};
use pdl_models::attention::{MultiHeadAttentionConfig, causal_mask};
use pdl_models::rnn::{RnnCellConfig, unroll};

#[test]
fn the_custom_conv_backward_equals_burns_on_flex() {
    check_gradients::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_max_pool_equals_burns_on_flex() {
    check_pool::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_batch_norm_equals_burns_on_flex() {
    check_batch_norm::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_layer_norm_equals_burns_on_flex() {
    check_layer_norm::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_adamw_step_equals_burns_on_flex() {
    check_adamw::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_host_linear_layer_equals_burns_on_flex() {
    check_linear::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_fused_lstm_equals_burns_ops_on_flex() {
    check_lstm::<Autodiff<Flex>>(&Default::default()).unwrap();
}

/// The course's LSTM cell takes the fused kernel on flex and gives what its own steps give: the
/// same weights on `Autodiff<Flex, BalancedCheckpointing>`, a backend the kernels do not dispatch
/// to, run `LstmCell::step` one step at a time.
#[test]
fn the_lstm_cell_on_the_fused_kernel_equals_its_steps_on_flex() {
    type Fused = Autodiff<Flex>;
    type Steps = Autodiff<Flex, BalancedCheckpointing>;
    assert!(pdl_kernels::fused_lstm::<Fused>() && !pdl_kernels::fused_lstm::<Steps>());
    let device = Default::default();
    let config = RnnCellConfig::new(5, 8);
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    // Burn draws a lazily initialised parameter when it is first read: the record fixes them.
    let bytes = recorder
        .record(config.init_lstm::<Fused>(&device).into_record(), ())
        .unwrap();
    let fused = config
        .init_lstm::<Fused>(&device)
        .load_record(recorder.load(bytes.clone(), &device).unwrap());
    let steps = config
        .init_lstm::<Steps>(&device)
        .load_record(recorder.load(bytes, &device).unwrap());
    let input = Tensor::<Flex, 3>::random([3, 7, 5], Distribution::Uniform(-1.0, 1.0), &device);
    let upstream = Tensor::<Flex, 3>::random([3, 7, 8], Distribution::Uniform(-1.0, 1.0), &device);
    let fused_run = {
        let x = Tensor::<Fused, 3>::from_inner(input.clone()).require_grad();
        let (y, last) = unroll(&fused, x.clone(), None);
        let loss = (y.clone() * Tensor::from_inner(upstream.clone())).sum() + last.cell.sum();
        let grads = loss.backward();
        let weight = fused.gates.hidden.weight.grad(&grads).unwrap();
        [
            y.inner(),
            x.grad(&grads).unwrap().unsqueeze(),
            weight.unsqueeze(),
        ]
    };
    let steps_run = {
        let x = Tensor::<Steps, 3>::from_inner(input).require_grad();
        let (y, last) = unroll(&steps, x.clone(), None);
        let loss = (y.clone() * Tensor::from_inner(upstream)).sum() + last.cell.sum();
        let grads = loss.backward();
        let weight = steps.gates.hidden.weight.grad(&grads).unwrap();
        [
            y.inner(),
            x.grad(&grads).unwrap().unsqueeze(),
            weight.unsqueeze(),
        ]
    };
    for (a, b) in fused_run.into_iter().zip(steps_run) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }
}

#[test]
fn the_host_gelus_equal_burns_ops_on_flex() {
    check_gelu::<Autodiff<Flex>>(&Default::default()).unwrap();
}

#[test]
fn the_fused_attention_equals_burns_ops_on_flex() {
    check_attention::<Autodiff<Flex>>(&Default::default()).unwrap();
}

/// The course's multi-head attention takes the fused kernel in `forward` on flex and gives what
/// `forward_with_weights` (the tensor ops, which return the weights too) gives, in the output and
/// in the input's gradient (which flows through the queries, keys and values), with a causal mask.
#[test]
fn multi_head_attention_on_the_fused_kernel_equals_its_tensor_ops_on_flex() {
    type B = Autodiff<Flex>;
    assert!(pdl_kernels::fused_attention::<B>());
    let device = Default::default();
    let attention = MultiHeadAttentionConfig::new(16, 4).init::<B>(&device);
    let input = Tensor::<Flex, 3>::random([3, 6, 16], Distribution::Uniform(-1.0, 1.0), &device);
    let upstream = Tensor::<Flex, 3>::random([3, 6, 16], Distribution::Uniform(-1.0, 1.0), &device);
    let run = |fused: bool| {
        let x = Tensor::<B, 3>::from_inner(input.clone()).require_grad();
        let mask = Some(causal_mask::<B>(6, 6, &device));
        let y = if fused {
            attention.forward(x.clone(), x.clone(), x.clone(), mask)
        } else {
            attention
                .forward_with_weights(x.clone(), x.clone(), x.clone(), mask)
                .0
        };
        let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
            .sum()
            .backward();
        [y.inner(), x.grad(&grads).unwrap()]
    };
    for (a, b) in run(true).into_iter().zip(run(false)) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }
}

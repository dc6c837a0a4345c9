//! Parity of [`crate::lstm`] with the same LSTM written in Burn's ops, one step at a time.

use super::{Agreement, compare_gradients, compare_values, pseudo_random};
use crate::lstm::{fused_lstm, lstm};
use crate::rng::SplitMix64;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::backend::AutodiffBackend;

/// The reference: the equations of [`crate::lstm::lstm`] in Burn's ops, step by step. Returns
/// every step's hidden state, and the last hidden and cell states.
pub fn lstm_reference<B: Backend>(
    projected: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    [mut h, mut c]: [Tensor<B, 2>; 2],
) -> [Tensor<B, 3>; 3] {
    let mut outputs = Vec::new();
    for x_t in projected.iter_dim(1) {
        let z = x_t.squeeze_dim::<2>(1) + h.matmul(weight.clone()) + bias.clone().unsqueeze();
        let gates = z.chunk(4, 1);
        let [i, f, g, o] = std::array::from_fn(|k| gates[k].clone());
        c = sigmoid(f) * c + sigmoid(i) * tanh(g);
        h = sigmoid(o) * tanh(c.clone());
        outputs.push(h.clone());
    }
    [
        Tensor::stack(outputs, 1),
        h.unsqueeze_dim(1),
        c.unsqueeze_dim(1),
    ]
}

/// Checks that [`crate::lstm::lstm`] runs on backend `B` and agrees with [`lstm_reference`] on
/// sequences of 1 to 12 steps, hidden widths 1 to 16, batches 1 to 3, the projected input also
/// transposed in memory: every step's hidden state, the last hidden and cell states, and the
/// gradients of the projected input, `W_h`, `b_h`, `h_0` and `c_0` for a loss that reads all
/// three outputs (`sum(hidden r_1) + sum(h_T r_2) + sum(c_T r_3)`, fixed pseudo-random `r`).
///
/// # Errors
/// That the backend has no fused LSTM, or the first case whose output or gradient differs.
pub fn check_lstm<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !fused_lstm::<B>() {
        return Err("this backend has no fused LSTM".into());
    }
    let mut rng = SplitMix64::new(23);
    for (batch, steps, d, transposed) in [(1, 1, 1, false), (3, 5, 7, true), (2, 12, 16, false)] {
        let case = format!("batch {batch}, {steps} steps, width {d}, transposed {transposed}");
        let projected = if transposed {
            pseudo_random::<B, 3>(&mut rng, [steps, 4 * d, batch], device).permute([2, 0, 1])
        } else {
            pseudo_random::<B, 3>(&mut rng, [batch, steps, 4 * d], device)
        };
        let weight = pseudo_random::<B, 2>(&mut rng, [d, 4 * d], device) * 0.5;
        let bias = pseudo_random::<B, 1>(&mut rng, [4 * d], device) * 0.5;
        let state = [
            pseudo_random::<B, 2>(&mut rng, [batch, d], device),
            pseudo_random::<B, 2>(&mut rng, [batch, d], device),
        ];
        let upstream =
            [steps, 1, 1].map(|n| pseudo_random::<B, 3>(&mut rng, [batch, n, d], device));
        let run = |ours: bool| -> Result<_, String> {
            let p = projected.clone().require_grad();
            let w = weight.clone().require_grad();
            let b = bias.clone().require_grad();
            let [h0, c0] = state.clone().map(|t| t.require_grad());
            let initial = [h0.clone(), c0.clone()];
            let outputs = if ours {
                let run = lstm(p.clone(), w.clone(), Some(b.clone()), initial)
                    .ok_or(format!("{case}: the fused LSTM declined"))?;
                [
                    run.hidden,
                    run.last_hidden.unsqueeze_dim(1),
                    run.last_cell.unsqueeze_dim(1),
                ]
            } else {
                lstm_reference(p.clone(), w.clone(), b.clone(), initial)
            };
            let loss = outputs
                .iter()
                .zip(&upstream)
                .map(|(y, r)| (y.clone() * r.clone()).sum())
                .reduce(|a, b| a + b)
                .expect("three outputs");
            let grads = loss.backward();
            let gradients = [
                p.grad(&grads).map(|g| g.into_data()),
                w.grad(&grads).map(|g| g.into_data()),
                b.grad(&grads).map(|g| g.into_data()),
                h0.grad(&grads).map(|g| g.into_data()),
                c0.grad(&grads).map(|g| g.into_data()),
            ];
            Ok((outputs.map(|y| y.into_data()), gradients))
        };
        let (ours, reference) = (run(true)?, run(false)?);
        for (what, (a, b)) in ["hidden states", "last hidden state", "last cell state"]
            .into_iter()
            .zip(ours.0.into_iter().zip(reference.0))
        {
            compare_values(&case, what, a, b, Agreement::Close)?;
        }
        let names = ["projected input", "W_h", "b_h", "h_0", "c_0"];
        compare_gradients(&case, names, (ours.1, reference.1), Agreement::Close)?;
    }
    Ok(())
}

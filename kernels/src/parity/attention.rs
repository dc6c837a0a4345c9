//! Parity of [`crate::attention`] with attention written in Burn's ops.

use super::{Agreement, compare_gradients, compare_values, pseudo_random};
use crate::attention::{attention, fused_attention};
use crate::dropout::{Dropout, MaskStream};
use crate::rng::SplitMix64;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;

/// The reference: `dropout(softmax(q k^T / sqrt(d_k) + M)) v` in Burn's ops, `M` being
/// `masked_score` where `mask` is true.
pub fn attention_reference<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    masked_score: f32,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [batch, heads, t_q, d_k] = q.dims();
    let t_k = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d_k as f32).sqrt());
    let scores = match mask {
        Some(mask) => scores.mask_fill(mask.expand([batch, heads, t_q, t_k]), masked_score),
        None => scores,
    };
    let weights = softmax(scores, 3);
    match dropout {
        Some(dropout) => dropout.forward(weights).matmul(v),
        None => weights.matmul(v),
    }
}

/// Checks that [`crate::attention::attention`] runs on backend `B` and agrees with
/// [`attention_reference`]: without a mask, with a causal mask, with a KV-cache's shifted causal
/// mask (2 queries over 6 keys), with a padding mask that hides every key of one sequence
/// (uniform weights, no gradient to its queries and keys), and with a causal mask and dropout
/// 0.3 on the weights (the same layer seed on both sides, so the same mask); q read through a
/// transpose as the models' heads are. Compares the output and the gradients of q, k and v for `sum(output r)`
/// with a fixed pseudo-random `r`.
///
/// # Errors
/// That the backend has no fused attention, or the first case whose output or gradient differs.
pub fn check_attention<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    if !fused_attention::<B>() {
        return Err("this backend has no fused attention".into());
    }
    const MASKED: f32 = -1.0e4;
    let mut rng = SplitMix64::new(29);
    let causal = |t_q: usize, t_k: usize| {
        Tensor::<B, 2, Bool>::tril_mask([t_q, t_k], (t_k - t_q) as i64, device)
            .reshape([1, 1, t_q, t_k])
    };
    let padding = Tensor::<B, 1, Bool>::from_data(
        TensorData::from([false, false, true, true, true, true, true, true, true, true]),
        device,
    )
    .reshape([2, 1, 1, 5]);
    let cases = [
        ("no mask", [2, 3, 5, 5, 4, 6], None, 0.0),
        ("causal", [2, 2, 7, 7, 8, 8], Some(causal(7, 7)), 0.0),
        ("KV cache", [1, 2, 2, 6, 4, 4], Some(causal(2, 6)), 0.0),
        (
            "padding, one sequence all masked",
            [2, 2, 4, 5, 4, 4],
            Some(padding),
            0.0,
        ),
        (
            "causal, dropout 0.3",
            [2, 2, 7, 7, 8, 8],
            Some(causal(7, 7)),
            0.3,
        ),
    ];
    for (case, [batch, heads, t_q, t_k, d_k, d_v], mask, prob) in cases {
        // q as the models' heads are: [batch, t_q, heads, d_k] in memory, seen through a swap.
        let q = pseudo_random::<B, 4>(&mut rng, [batch, t_q, heads, d_k], device).swap_dims(1, 2);
        let k = pseudo_random::<B, 4>(&mut rng, [batch, heads, t_k, d_k], device);
        let v = pseudo_random::<B, 4>(&mut rng, [batch, heads, t_k, d_v], device);
        let r = pseudo_random::<B, 4>(&mut rng, [batch, heads, t_q, d_v], device);
        let run = |ours: bool| -> Result<_, String> {
            let [q, k, v] = [q.clone(), k.clone(), v.clone()].map(|t| t.require_grad());
            let dropout = Dropout {
                prob,
                stream: MaskStream::new(5),
            };
            let output = if ours {
                attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    MASKED,
                    Some(&dropout),
                )
                .ok_or(format!("{case}: the fused attention declined"))?
            } else {
                let (q, k, v, mask) = (q.clone(), k.clone(), v.clone(), mask.clone());
                attention_reference(q, k, v, mask, MASKED, Some(&dropout))
            };
            let grads = (output.clone() * r.clone()).sum().backward();
            let gradients = [&q, &k, &v].map(|t| t.grad(&grads).map(|g| g.into_data()));
            Ok((output.into_data(), gradients))
        };
        let (ours, reference) = (run(true)?, run(false)?);
        compare_values(case, "output", ours.0, reference.0, Agreement::Close)?;
        compare_gradients(
            case,
            ["q", "k", "v"],
            (ours.1, reference.1),
            Agreement::Close,
        )?;
    }
    Ok(())
}

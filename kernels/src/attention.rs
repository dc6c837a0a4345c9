//! Scaled dot-product attention, `softmax(Q K^T / sqrt(d_k) + M) V`, as one op with its backward
//! pass written out.
//!
//! Written in tensor ops (`pdl_models::attention::scaled_dot_product_attention`), attention is a
//! copy of the keys' transpose, a batched matmul, a division, a masked fill, a softmax of five ops
//! (max, subtract, exp, sum, divide) and a second batched matmul, each with its own backward
//! step, and the heads' `[batch, heads, t, d_k]` views of the projections are copied before each
//! matmul. Here, for each (sequence, head) pair, on the host:
//!
//! - **forward**: `S = Q K^T` (one gemm reading the heads where they lie, the transpose by
//!   strides), then per row the scale, the mask and the softmax in one pass (the `exp` of
//!   [`crate::activation`]), then `O = P V`; `P` is kept for the backward pass (`t_q x t_k` per
//!   pair, 16 KiB at the GPT's 64 positions);
//! - **backward**: `dP = dO V^T`, `dV = P^T dO`, `dS = P (dP - rowsum(P dP)) / sqrt(d_k)` (zero at
//!   masked scores), `dQ = dS K`, `dK = dS^T Q`.
//!
//! The sequences are independent and run on all cores (rayon). The output, and the gradients of
//! q, k and v, are written as `[batch, t, heads, d]`, the layout of the projections the heads are
//! cut from, and handed back as `[batch, heads, t, d]` views of it, so that merging the heads
//! again (and the backward steps of the model's reshapes) copies nothing.
//!
//! **Attention dropout** (Vaswani et al. 2017, section 5.4) drops weights after the softmax:
//! `O = (P ∘ D) V` with `D` a [`Dropout`] layer's mask (`0`, or `1 / (1 - p)`), drawn from the
//! layer's stream over the weights `[batch, heads, t_q, t_k]` in the order the layer's own
//! `forward` draws it, so the fused op and `dropout.forward(softmax(..))` give the same output.
//! Backward, `dV = (P ∘ D)^T dO` and the softmax's `dP = D ∘ (dO V^T)`; `D` is kept beside `P`.

use crate::KernelBackend;
use crate::activation::{exp, sum_in_lanes, vectorised};
use crate::backend::{Grads, HostBackward, HostGradient, OnHost, Op, host_kernels, run};
use crate::dropout::Dropout;
use crate::host::{HostValues, Matrix};
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// Whether [`attention`] runs on backend `B` (the CPU backends, with or without autodiff).
pub fn fused_attention<B: Backend>() -> bool {
    host_kernels::<B>()
}

/// `softmax(q k^T / sqrt(d_k) + M) v` for every sequence and head, where `M` is `masked_score` at
/// the positions `mask` is true and 0 elsewhere, with `dropout` (if any) on the weights in
/// training; `None` on a backend without this crate's host kernels (see [`fused_attention`]), or
/// a mask that does not broadcast (both decided before a mask is drawn from `dropout`).
///
/// # Shapes
/// - q: `[batch, heads, t_q, d_k]`
/// - k: `[batch, heads, t_k, d_k]`
/// - v: `[batch, heads, t_k, d_v]`
/// - mask: `[batch or 1, heads or 1, t_q or 1, t_k]`, true where a query may not look at a key
/// - output: `[batch, heads, t_q, d_v]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    masked_score: f32,
    dropout: Option<&Dropout>,
) -> Option<Tensor<B, 4>> {
    if !fused_attention::<B>() {
        return None;
    }
    let [batch, heads, t_q, _] = q.dims();
    let [_, _, t_k, _] = k.dims();
    let mask = match mask {
        None => None,
        Some(mask) => {
            let dims = mask.dims();
            let fits = (dims[0] == 1 || dims[0] == batch)
                && (dims[1] == 1 || dims[1] == heads)
                && (dims[2] == 1 || dims[2] == t_q)
                && dims[3] == t_k;
            if !fits {
                return None;
            }
            let values = mask.into_data().convert::<bool>().to_vec::<bool>().ok()?;
            Some(HostMask { values, dims })
        }
    };
    let training = B::ad_enabled(&q.device());
    let dropped = dropout
        .filter(|_| training)
        .and_then(|dropout| dropout.draw_host_mask(batch * heads * t_q * t_k));
    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
    let options = AttentionOptions {
        mask,
        masked_score,
        dropped,
    };
    let output = run::<AttentionOp, B>(([q, k, v], options))?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

/// What the fused op takes beside q, k and v: the mask, the score it gives, and the dropout mask
/// of the weights (`[batch, heads, t_q, t_k]`, row-major: `0` or `1 / (1 - p)`), if any.
#[derive(Debug, Clone)]
pub struct AttentionOptions {
    mask: Option<HostMask>,
    masked_score: f32,
    dropped: Option<Vec<f32>>,
}

/// Which scores are masked, on the host: `[batch or 1, heads or 1, t_q or 1, t_k]`, true where
/// masked; an axis of size 1 broadcasts.
#[derive(Debug, Clone)]
pub struct HostMask {
    values: Vec<bool>,
    dims: [usize; 4],
}

impl HostMask {
    /// Row `i` of sequence `b`, head `h`.
    fn row(&self, b: usize, h: usize, i: usize) -> &[bool] {
        let [batches, heads, rows, t_k] = self.dims;
        let at = |index: usize, size: usize| if size == 1 { 0 } else { index };
        let (b, h, i) = (at(b, batches), at(h, heads), at(i, rows));
        &self.values[((b * heads + h) * rows + i) * t_k..][..t_k]
    }
}

/// [`attention`] as an [`Op`]: `([q, k, v], options)` to the output.
struct AttentionOp;

impl Op for AttentionOp {
    type Args<B: Backend> = ([FloatTensor<B>; 3], AttentionOptions);
    type Output<B: Backend> = Option<FloatTensor<B>>;

    fn fast<F: KernelBackend>((qkv, options): Self::Args<F>) -> Option<FloatTensor<F>> {
        F::attention_fast(qkv, options)
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<FloatTensor<B>> {
        None
    }
}

/// What the backward pass needs: the inputs, the options (mask and dropout), and every pair's
/// softmax `P`.
#[derive(Debug, Clone)]
pub(crate) struct Saved<B: Backend> {
    qkv: [FloatTensor<B>; 3],
    options: AttentionOptions,
    /// `[batch, heads, t_q, t_k]`, before dropout.
    weights: Vec<f32>,
}

/// The `[rows, cols]` matrix of pair `(b, h)` in a `[batch, heads, rows, cols]` tensor.
fn pair<'a>(t: &HostValues<'a, 4>, b: usize, h: usize) -> Matrix<'a> {
    Matrix {
        values: &t.values[b * t.strides[0] + h * t.strides[1]..],
        rows: t.dims[2],
        cols: t.dims[3],
        row_stride: t.strides[2],
        col_stride: t.strides[3],
    }
}

/// Lends the values of q, k and v to `f`; `None` unless all three are lent as `f32`.
fn with_qkv<B: KernelBackend, R>(
    [q, k, v]: &[FloatTensor<B>; 3],
    f: impl FnOnce([HostValues<'_, 4>; 3]) -> R,
) -> Option<R> {
    B::with_values(q, |q| {
        B::with_values(k, |k| B::with_values(v, |v| f([q, k, v])))
    })
    .flatten()
    .flatten()
}

/// The forward pass on the host: the output `[batch, heads, t_q, d_v]` and every pair's softmax
/// (before dropout); `None` when the values are not lent as `f32` or the shapes do not fit
/// together. The output's values lie as `[batch, t_q, heads, d_v]` ([`heads_view`]).
pub(crate) fn forward<B: KernelBackend>(
    qkv: &[FloatTensor<B>; 3],
    options: &AttentionOptions,
) -> Option<(FloatTensor<B>, Vec<f32>)> {
    let [q, k, v] = qkv.each_ref().map(|t| t.shape().dims::<4>());
    let [batch, heads, t_q, d_k] = q;
    let [t_k, d_v] = [k[2], v[3]];
    let scores = batch * heads * t_q * t_k;
    if k != [batch, heads, t_k, d_k]
        || v[..3] != [batch, heads, t_k]
        || scores == 0
        || options.dropped.as_ref().is_some_and(|d| d.len() != scores)
    {
        return None;
    }
    let AttentionOptions {
        mask,
        masked_score,
        dropped,
    } = options;
    let scale = 1.0 / (d_k as f32).sqrt();
    let mut output = vec![0.0f32; batch * t_q * heads * d_v];
    let mut weights = vec![0.0f32; scores];
    with_qkv::<B, _>(qkv, |[q, k, v]| {
        // A task per sequence: its heads' outputs interleave in its `[t_q, heads, d_v]` block.
        output
            .par_chunks_mut(t_q * heads * d_v)
            .zip(weights.par_chunks_mut(heads * t_q * t_k))
            .enumerate()
            .for_each(|(b, (block, sequence_weights))| {
                let mut out = vec![0.0f32; t_q * d_v];
                let mut kept = vec![0.0f32; if dropped.is_some() { t_q * t_k } else { 0 }];
                for (h, p) in sequence_weights.chunks_exact_mut(t_q * t_k).enumerate() {
                    B::host_gemm(p, pair(&q, b, h), pair(&k, b, h).t(), false);
                    for (i, row) in p.chunks_exact_mut(t_k).enumerate() {
                        let masked = mask.as_ref().map(|m| m.row(b, h, i));
                        softmax_row(row, scale, masked, *masked_score);
                    }
                    let v = pair(&v, b, h);
                    match dropped_pair(dropped, b * heads + h, t_q * t_k) {
                        None => B::host_gemm(&mut out, Matrix::row_major(p, t_q, t_k), v, false),
                        Some(d) => {
                            times_into(&mut kept, p, d);
                            let kept = Matrix::row_major(&kept, t_q, t_k);
                            B::host_gemm(&mut out, kept, v, false);
                        }
                    }
                    put_head(block, h, heads, &out, d_v);
                }
            });
    })?;
    let device = B::float_device(&qkv[0]);
    let output = heads_view::<B>(output, [batch, heads, t_q, d_v], &device);
    Some((output, weights))
}

/// Writes one head's `[t, d]` rows into its sequence's `[t, heads, d]` block.
fn put_head(block: &mut [f32], h: usize, heads: usize, rows: &[f32], d: usize) {
    for (i, row) in rows.chunks_exact(d).enumerate() {
        block[(i * heads + h) * d..][..d].copy_from_slice(row);
    }
}

/// The `[batch, heads, t, d]` tensor whose values lie as `[batch, t, heads, d]`: the layout of
/// the projections the heads were cut from, so the model's `merge_heads` (a swap back, then a
/// reshape) copies nothing, and neither do the swaps' backward steps.
fn heads_view<B: KernelBackend>(
    values: Vec<f32>,
    [batch, heads, t, d]: [usize; 4],
    device: &B::Device,
) -> FloatTensor<B> {
    let merged = B::float_from_data(TensorData::new(values, [batch, t, heads, d]), device);
    B::float_swap_dims(merged, 1, 2)
}

/// Pair `index`'s part of the dropout mask, `len` values.
fn dropped_pair(dropped: &Option<Vec<f32>>, index: usize, len: usize) -> Option<&[f32]> {
    dropped.as_ref().map(|d| &d[index * len..][..len])
}

/// `dst = a ∘ b`, element-wise.
fn times_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    dst.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(d, (a, b))| *d = a * b);
}

/// One row of scores in place: scaled, masked, then its softmax.
fn softmax_row(row: &mut [f32], scale: f32, masked: Option<&[bool]>, masked_score: f32) {
    vectorised(
        #[inline(always)]
        || {
            match masked {
                Some(masked) => row.iter_mut().zip(masked).for_each(|(s, &m)| {
                    *s = if m { masked_score } else { *s * scale };
                }),
                None => row.iter_mut().for_each(|s| *s *= scale),
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            // Separate passes, so that the exp vectorises, and the sum in lanes.
            row.iter_mut().for_each(|s| *s = exp(*s - max));
            let inverse = 1.0 / sum_in_lanes(row, row, |s, _| s);
            row.iter_mut().for_each(|s| *s *= inverse);
        },
    )
}

/// The backward pass on the host: `[dq, dk, dv]` from the output's gradient, each laid out as
/// `[batch, t, heads, d]` (for [`heads_view`]).
fn backward_on_host<B: KernelBackend>(
    [q, k, v]: [HostValues<'_, 4>; 3],
    upstream: HostValues<'_, 4>,
    saved: &Saved<B>,
) -> [Vec<f32>; 3] {
    let [batch, heads, t_q, d_k] = q.dims;
    let [t_k, d_v] = [k.dims[2], v.dims[3]];
    let scale = 1.0 / (d_k as f32).sqrt();
    let mut dq = vec![0.0f32; batch * t_q * heads * d_k];
    let mut dk = vec![0.0f32; batch * t_k * heads * d_k];
    let mut dv = vec![0.0f32; batch * t_k * heads * d_v];
    dq.par_chunks_mut(t_q * heads * d_k)
        .zip(dk.par_chunks_mut(t_k * heads * d_k))
        .zip(dv.par_chunks_mut(t_k * heads * d_v))
        .enumerate()
        .for_each(|(b, ((dq_block, dk_block), dv_block))| {
            let mut dq = vec![0.0f32; t_q * d_k];
            let mut dk = vec![0.0f32; t_k * d_k];
            let mut dv = vec![0.0f32; t_k * d_v];
            let mut ds = vec![0.0f32; t_q * t_k];
            let dropout = saved.options.dropped.is_some();
            let mut kept = vec![0.0f32; if dropout { t_q * t_k } else { 0 }];
            for h in 0..heads {
                let index = b * heads + h;
                let p = &saved.weights[index * t_q * t_k..][..t_q * t_k];
                let dropped = dropped_pair(&saved.options.dropped, index, t_q * t_k);
                let d_out = pair(&upstream, b, h);
                // dV = (P ∘ D)^T dO; dP = D ∘ (dO V^T), D = 1 without dropout.
                match dropped {
                    None => B::host_gemm(&mut dv, Matrix::row_major(p, t_q, t_k).t(), d_out, false),
                    Some(d) => {
                        times_into(&mut kept, p, d);
                        let kept = Matrix::row_major(&kept, t_q, t_k);
                        B::host_gemm(&mut dv, kept.t(), d_out, false);
                    }
                }
                B::host_gemm(&mut ds, d_out, pair(&v, b, h).t(), false);
                if let Some(d) = dropped {
                    ds.iter_mut().zip(d).for_each(|(ds, d)| *ds *= d);
                }
                // dS = P (dP - rowsum(P dP)), times the scale; zero where the mask replaced the
                // score.
                for (i, (ds_row, p_row)) in ds
                    .chunks_exact_mut(t_k)
                    .zip(p.chunks_exact(t_k))
                    .enumerate()
                {
                    let dot: f32 = ds_row.iter().zip(p_row).map(|(d, p)| d * p).sum();
                    for (d, p) in ds_row.iter_mut().zip(p_row) {
                        *d = p * (*d - dot) * scale;
                    }
                    if let Some(mask) = &saved.options.mask {
                        for (d, &m) in ds_row.iter_mut().zip(mask.row(b, h, i)) {
                            if m {
                                *d = 0.0;
                            }
                        }
                    }
                }
                let ds = Matrix::row_major(&ds, t_q, t_k);
                B::host_gemm(&mut dq, ds, pair(&k, b, h), false);
                B::host_gemm(&mut dk, ds.t(), pair(&q, b, h), false);
                put_head(dq_block, h, heads, &dq, d_k);
                put_head(dk_block, h, heads, &dk, d_k);
                put_head(dv_block, h, heads, &dv, d_v);
            }
        });
    [dq, dk, dv]
}

/// The backward step of [`autodiff_attention`]; parents `[q, k, v]`.
#[derive(Debug)]
struct PdlAttention;

impl<B: KernelBackend> HostBackward<B, 3> for PdlAttention {
    type State = Saved<B>;

    fn gradients(self, dy: FloatTensor<B>, saved: Saved<B>, _: [bool; 3]) -> Grads<3> {
        let shapes = saved.qkv.each_ref().map(|t| t.shape());
        let [dq, dk, dv] = with_qkv::<B, _>(&saved.qkv, |qkv| {
            B::with_values(&dy, |u: HostValues<'_, 4>| {
                backward_on_host::<B>(qkv, u, &saved)
            })
        })
        .flatten()?;
        let [q, k, v] = shapes;
        Some([(dq, q), (dk, k), (dv, v)])
    }

    /// The gradients lie as `[batch, t, heads, d]`, in the shapes `[batch, heads, t, d]` of
    /// `q`, `k` and `v`.
    fn tensor((values, shape): HostGradient, device: &B::Device) -> FloatTensor<B> {
        heads_view::<B>(values, shape.dims(), device)
    }
}

/// The autodiff backends' [`KernelBackend::attention_fast`]: the host forward pass recorded with
/// its written-out backward; `None` unless the inner backend runs host kernels.
pub(crate) fn autodiff_attention<B: KernelBackend, C: CheckpointStrategy>(
    qkv: [FloatTensor<Autodiff<B, C>>; 3],
    options: AttentionOptions,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let inner = qkv.each_ref().map(|t| t.primitive.clone());
    let (output, weights) = forward::<B>(&inner, &options)?;
    let nodes = qkv.map(|t| t.node);
    Some(
        match OnHost(PdlAttention)
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                Saved {
                    qkv: inner,
                    options,
                    weights,
                },
                output,
            ),
            OpsKind::UnTracked(prep) => prep.finish(output),
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::parity::check_attention;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn the_fused_attention_equals_burns_ops_in_values_and_gradients() {
        check_attention::<Autodiff<NdArray>>(&Default::default()).unwrap();
    }
}

//! An LSTM layer over a whole sequence as one op, its backward pass (backpropagation through
//! time) written out.
//!
//! The textbook cell (`pdl_models::rnn::scratch::LstmCell`) is a dozen tensor ops per time step:
//! a matmul, four slices of the gates, three sigmoids, two tanh, the products and sums of the
//! state update. Under autodiff each op records a backward step, and each slice's gradient is a
//! zero tensor of all four gates with one written in, so a 128-step sequence is thousands of small
//! ops. Here the whole sequence is one op on the CPU backends:
//!
//! - **forward**, per step: `z = x_t W_x + b_x + h W_h + b_h` as one accumulating gemm into the
//!   projected input, then one pass over `z` for the gates and the state update (the
//!   non-linearities of [`crate::activation`], which vectorise);
//! - **backward**, from the last step to the first: one pass for the gates' gradients `dz_t`, one
//!   gemm `dh = dz_t W_h^T` into the previous step; then after the loop **one** gemm for the
//!   weight gradient of all steps, `dW_h = sum_t h_{t-1}^T dz_t` (`[d_hidden, batch * steps]`
//!   times `[batch * steps, 4 d_hidden]`), and the bias gradient as one sum, as PyTorch's fused
//!   LSTM does;
//! - **threads**: the sequences of a batch never meet, so the batch is cut into one block of rows
//!   per core, and each core takes its block through every step with gemms of its own (forward
//!   and backward): no synchronisation between steps. Splitting each step's small product across
//!   the cores instead ran no faster than one core (the `gemm` crate on a 2-core AVX2 host): on
//!   `shakespeare-lstm`'s shapes the blocks train 1.31x and infer 1.35x faster (eight paired
//!   runs of `pdl bench --model lstm`).
//! - **the step's product**: every step multiplies the same `W_h` (and backward `W_h^T`), so it
//!   is packed once per pass for [`crate::packed`]'s register-blocked kernel ([`StepWeight`]), where a general
//!   gemm repacked it on every step: 1.37x training and 1.43x inference on top of the blocks
//!   (eight paired runs, AVX2 host).
//!
//! The projection of the input, `x W_x + b_x`, stays outside (one `Linear` over the whole
//! sequence), so the op's inputs are the projected sequence, `W_h`, `b_h` and the initial state.
//! Its output packs every step's hidden state with the final cell state (`[batch, steps + 1,
//! d_hidden]`), because an autodiff op has one output; [`lstm`] unpacks it. On any backend
//! without the host kernels [`lstm`] returns `None` and the model runs its cell step by step.

use crate::KernelBackend;
use crate::activation::{sigmoid, tanh};
use crate::backend::{Grads, HostBackward, OnHost, Op, host_kernels, run};
use crate::host::vector_values;
use crate::host::{HostValues, Matrix};
use crate::packed::StepWeight;
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// What [`lstm`] returns.
#[derive(Debug, Clone)]
pub struct LstmRun<B: Backend> {
    /// Every step's hidden state, `[batch, steps, d_hidden]`.
    pub hidden: Tensor<B, 3>,
    /// The hidden state after the last step, `[batch, d_hidden]`.
    pub last_hidden: Tensor<B, 2>,
    /// The cell state after the last step, `[batch, d_hidden]`.
    pub last_cell: Tensor<B, 2>,
}

/// Whether [`lstm`] runs on backend `B` (the CPU backends, with or without autodiff), so that a
/// model projects its input for it only then.
pub fn fused_lstm<B: Backend>() -> bool {
    host_kernels::<B>()
}

/// Runs an LSTM layer over a sequence, gates `i, f, g, o` side by side (PyTorch's order):
/// `z_t = projected_t + h_{t-1} weight + bias`, `c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)`,
/// `h_t = sigmoid(o) tanh(c_t)`. `None` on a backend without this crate's host kernels (see
/// [`fused_lstm`]).
///
/// # Shapes
/// - projected: `[batch, steps, 4 d_hidden]`, the input times `W_x` plus `b_x`
/// - weight: `[d_hidden, 4 d_hidden]` (`W_h`, as Burn's `Linear` holds it)
/// - bias: `[4 d_hidden]`
/// - state: `[h_0, c_0]`, each `[batch, d_hidden]`
pub fn lstm<B: Backend>(
    projected: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    [h0, c0]: [Tensor<B, 2>; 2],
) -> Option<LstmRun<B>> {
    let [batch, steps, gates] = projected.dims();
    let d_hidden = weight.dims()[0];
    let bias = bias.unwrap_or_else(|| Tensor::zeros([gates], &projected.device()));
    let packed = run::<LstmOp, B>([
        projected.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
        h0.into_primitive().tensor(),
        c0.into_primitive().tensor(),
    ])?;
    let packed: Tensor<B, 3> = Tensor::from_primitive(TensorPrimitive::Float(packed));
    let at = |step: usize| {
        packed
            .clone()
            .slice([0..batch, step..step + 1, 0..d_hidden])
            .reshape([batch, d_hidden])
    };
    Some(LstmRun {
        last_hidden: at(steps.max(1) - 1),
        last_cell: at(steps),
        hidden: packed.slice([0..batch, 0..steps, 0..d_hidden]),
    })
}

/// [`lstm`] as an [`Op`]: `[projected, weight, bias, h0, c0]` to the packed output.
struct LstmOp;

impl Op for LstmOp {
    type Args<B: Backend> = [FloatTensor<B>; 5];
    type Output<B: Backend> = Option<FloatTensor<B>>;

    fn fast<F: KernelBackend>(args: Self::Args<F>) -> Option<FloatTensor<F>> {
        F::lstm_fast(args)
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<FloatTensor<B>> {
        None
    }
}

/// What the backward pass needs from the forward one, batch-major: step `t` of sequence `b` is
/// row `b * steps + t` (the cell states have one more step, the initial one, in front).
#[derive(Debug, Clone)]
pub(crate) struct Saved<B: Backend> {
    /// `[batch, steps, d_hidden]`.
    dims: [usize; 3],
    /// `W_h`, `[d_hidden, 4 d_hidden]`.
    weight: FloatTensor<B>,
    /// The gates after their non-linearities, `[batch, steps, 4 d_hidden]`.
    gates: Vec<f32>,
    /// `c_{t-1}` then `c_t`: `[batch, steps + 1, d_hidden]`.
    cells: Vec<f32>,
    /// The hidden state each step read, `h_{t-1}`: `[batch, steps, d_hidden]`.
    hidden_before: Vec<f32>,
}

/// The forward pass on the host: the packed output `[batch, steps + 1, d_hidden]`, and what the
/// backward pass needs when `save`; `None` when the values are not lent as `f32` or the shapes do
/// not fit together (then the model's own steps run, and Burn reports the shapes).
pub(crate) fn forward<B: KernelBackend>(
    [projected, weight, bias, h0, c0]: &[FloatTensor<B>; 5],
    save: bool,
) -> Option<(FloatTensor<B>, Option<Saved<B>>)> {
    let bias = vector_values::<B>(bias)?;
    let state = |t| B::with_values(t, |v: HostValues<'_, 2>| Matrix::from(v).to_row_major());
    let (h0, c0) = (state(h0)?, state(c0)?);
    let [batch, steps, gates] = projected.shape().dims();
    let d = gates / 4;
    let fits = gates == 4 * d
        && steps > 0
        && weight.shape().dims::<2>() == [d, gates]
        && bias.len() == gates
        && h0.len() == batch * d
        && c0.len() == batch * d;
    if !fits {
        return None;
    }
    let packed = B::with_values(projected, |x: HostValues<'_, 3>| {
        B::with_values(weight, |w: HostValues<'_, 2>| {
            forward_on_host::<B>(x, w.into(), &bias, h0, c0, save)
        })
    })
    .flatten()?;
    let (packed, saved) = packed;
    let output = B::float_from_data(
        TensorData::new(packed, [batch, steps + 1, d]),
        &B::float_device(projected),
    );
    let saved = saved.map(|(gates, cells, hidden_before)| Saved {
        dims: [batch, steps, d],
        weight: weight.clone(),
        gates,
        cells,
        hidden_before,
    });
    Some((output, saved))
}

/// The saved gates, cell states and previous hidden states of [`Saved`].
type Kept = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Batch rows per task. The sequences of a batch are independent, so each core takes a block of
/// them through every step with a gemm of its own: no synchronisation between steps, and a block
/// of 32 rows keeps a core busier than one gemm of 64 rows split across two (the forward step's
/// product in the `gemm` crate, three rounds on a 2-core AVX2 host: 47-80 GFLOP/s as two blocks,
/// 26-64 as one shared product, 43-52 on one core).
fn rows_per_task(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads()).max(1)
}

/// `values` cut into blocks of `rows` batch rows of `per_row` values each, `tasks` of them; as
/// many empty blocks when `values` is empty (what is not saved).
fn blocks(values: &mut [f32], per_row: usize, rows: usize, tasks: usize) -> Vec<&mut [f32]> {
    if values.is_empty() {
        return (0..tasks).map(|_| <&mut [f32]>::default()).collect();
    }
    values.chunks_mut(rows * per_row).collect()
}

/// One task's block of batch rows in the forward pass: its part of each output, and its state.
struct ForwardRows<'a> {
    /// The first batch row of the block.
    first: usize,
    /// `[rows, steps + 1, d_hidden]`: every step's hidden state, then the final cell state.
    packed: &'a mut [f32],
    /// `[rows, steps or 1, 4 d_hidden]`: the gates after their non-linearities.
    gates: &'a mut [f32],
    /// `[rows, steps + 1, d_hidden]` when saving, else empty.
    cells: &'a mut [f32],
    /// `[rows, steps, d_hidden]` when saving, else empty.
    hidden_before: &'a mut [f32],
    /// `[rows, d_hidden]`: the hidden and cell state, from the initial ones to the last ones.
    h: &'a mut [f32],
    c: &'a mut [f32],
}

/// The forward loop; shapes checked by [`forward`]. The batch's blocks of rows run in parallel
/// ([`rows_per_task`]).
fn forward_on_host<B: KernelBackend>(
    projected: HostValues<'_, 3>,
    weight: Matrix<'_>,
    bias: &[f32],
    mut h: Vec<f32>,
    mut c: Vec<f32>,
    save: bool,
) -> (Vec<f32>, Option<Kept>) {
    let [batch, steps, gates] = projected.dims;
    let d = gates / 4;
    // Without `save`, the gates of one step at a time.
    let kept = if save { steps } else { 1 };
    let mut gate_values = vec![0.0f32; batch * kept * gates];
    let mut cells = vec![0.0f32; if save { batch * (steps + 1) * d } else { 0 }];
    let mut hidden_before = vec![0.0f32; if save { batch * steps * d } else { 0 }];
    let mut packed = vec![0.0f32; batch * (steps + 1) * d];
    let rows = rows_per_task(batch);
    let tasks = batch.div_ceil(rows);
    let weight = StepWeight::new(weight, steps);
    let blocks: Vec<ForwardRows<'_>> = blocks(&mut packed, (steps + 1) * d, rows, tasks)
        .into_iter()
        .zip(blocks(&mut gate_values, kept * gates, rows, tasks))
        .zip(blocks(&mut cells, (steps + 1) * d, rows, tasks))
        .zip(blocks(&mut hidden_before, steps * d, rows, tasks))
        .zip(h.chunks_mut(rows * d).zip(c.chunks_mut(rows * d)))
        .enumerate()
        .map(
            |(task, ((((packed, gates), cells), hidden_before), (h, c)))| ForwardRows {
                first: task * rows,
                packed,
                gates,
                cells,
                hidden_before,
                h,
                c,
            },
        )
        .collect();
    blocks
        .into_par_iter()
        .for_each(|block| forward_rows::<B>(&projected, &weight, bias, block));
    (packed, save.then_some((gate_values, cells, hidden_before)))
}

/// [`forward_on_host`] for one block of batch rows, step by step.
fn forward_rows<B: KernelBackend>(
    projected: &HostValues<'_, 3>,
    weight: &StepWeight<'_>,
    bias: &[f32],
    block: ForwardRows<'_>,
) {
    let [_, steps, gates] = projected.dims;
    let d = gates / 4;
    let [s_batch, s_step, s_gate] = projected.strides;
    let ForwardRows {
        first,
        packed,
        gates: gate_values,
        cells,
        hidden_before,
        h,
        c,
    } = block;
    let rows = h.len() / d;
    let save = !cells.is_empty();
    let kept = if save { steps } else { 1 };
    if save {
        for b in 0..rows {
            cells[b * (steps + 1) * d..][..d].copy_from_slice(&c[b * d..][..d]);
        }
    }
    let mut z = vec![0.0f32; rows * gates];
    for t in 0..steps {
        for (b, row) in z.chunks_exact_mut(gates).enumerate() {
            let start = (first + b) * s_batch + t * s_step;
            if s_gate == 1 {
                let x = &projected.values[start..][..gates];
                row.iter_mut()
                    .zip(x.iter().zip(bias))
                    .for_each(|(z, (x, bias))| *z = x + bias);
            } else {
                for (j, (z, bias)) in row.iter_mut().zip(bias).enumerate() {
                    *z = projected.values[start + j * s_gate] + bias;
                }
            }
        }
        weight.gemm::<B>(&mut z, Matrix::row_major(h, rows, d), true);
        let slot = if save { t } else { 0 };
        for (b, row) in z.chunks_exact(gates).enumerate() {
            let h_row = &mut h[b * d..][..d];
            let c_row = &mut c[b * d..][..d];
            if save {
                hidden_before[(b * steps + t) * d..][..d].copy_from_slice(h_row);
            }
            let a = &mut gate_values[(b * kept + slot) * gates..][..gates];
            cell_step(row, a, c_row, h_row);
            packed[(b * (steps + 1) + t) * d..][..d].copy_from_slice(h_row);
            if save {
                cells[(b * (steps + 1) + t + 1) * d..][..d].copy_from_slice(c_row);
            }
        }
    }
    for b in 0..rows {
        packed[(b * (steps + 1) + steps) * d..][..d].copy_from_slice(&c[b * d..][..d]);
    }
}

/// One step of one sequence: the gates `a = [i, f, g, o]` from their pre-activations `z`, then
/// `c = f c + i g` and `h = o tanh(c)` in place. Every slice is cut to `d` first, so the loop has
/// no bounds checks and vectorises.
fn cell_step(z: &[f32], a: &mut [f32], c: &mut [f32], h: &mut [f32]) {
    let d = c.len();
    let (zi, zf, zg, zo) = (&z[..d], &z[d..2 * d], &z[2 * d..3 * d], &z[3 * d..4 * d]);
    let (i, rest) = a.split_at_mut(d);
    let (f, rest) = rest.split_at_mut(d);
    let (g, o) = rest.split_at_mut(d);
    let (o, h) = (&mut o[..d], &mut h[..d]);
    for j in 0..d {
        (i[j], f[j], g[j], o[j]) = (sigmoid(zi[j]), sigmoid(zf[j]), tanh(zg[j]), sigmoid(zo[j]));
        c[j] = f[j] * c[j] + i[j] * g[j];
        h[j] = o[j] * tanh(c[j]);
    }
}

/// The backward pass on the host: `[d projected, d weight, d bias, d h0, d c0]`, row-major, from
/// the gradient of the packed output `[batch, steps + 1, d_hidden]`. The recurrence runs over the
/// batch's blocks of rows in parallel, as the forward pass does; the weight's gradient is then one
/// gemm over every step.
fn backward_on_host<B: KernelBackend>(
    upstream: HostValues<'_, 3>,
    weight: Matrix<'_>,
    s: &Saved<B>,
) -> [Vec<f32>; 5] {
    let [batch, steps, d] = s.dims;
    let gates = 4 * d;
    let mut dz = vec![0.0f32; batch * steps * gates];
    let mut dh = vec![0.0f32; batch * d];
    let mut dc = vec![0.0f32; batch * d];
    let rows = rows_per_task(batch);
    let transposed = StepWeight::new(weight.t(), steps);
    let saved = Recorded {
        gates: &s.gates,
        cells: &s.cells,
    };
    dz.par_chunks_mut(rows * steps * gates)
        .zip(dh.par_chunks_mut(rows * d).zip(dc.par_chunks_mut(rows * d)))
        .enumerate()
        .for_each(|(task, (dz, (dh, dc)))| {
            backward_rows::<B>(&upstream, &transposed, saved, task * rows, [dz, dh, dc]);
        });
    let mut dweight = vec![0.0f32; d * gates];
    B::host_gemm(
        &mut dweight,
        Matrix::row_major(&s.hidden_before, batch * steps, d).t(),
        Matrix::row_major(&dz, batch * steps, gates),
        false,
    );
    let mut dbias = vec![0.0f32; gates];
    for row in dz.chunks_exact(gates) {
        dbias.iter_mut().zip(row).for_each(|(sum, v)| *sum += v);
    }
    [dz, dweight, dbias, dh, dc]
}

/// The gates and cell states the forward pass saved (see [`Saved`]).
#[derive(Clone, Copy)]
struct Recorded<'a> {
    gates: &'a [f32],
    cells: &'a [f32],
}

/// [`backward_on_host`]'s recurrence for the block of batch rows from `first`: fills its
/// `dz` `[rows, steps, 4 d_hidden]` and leaves `dh`, `dc` `[rows, d_hidden]` at the gradients of
/// the initial state.
fn backward_rows<B: KernelBackend>(
    upstream: &HostValues<'_, 3>,
    transposed: &StepWeight<'_>,
    s: Recorded<'_>,
    first: usize,
    [dz, dh, dc]: [&mut [f32]; 3],
) {
    // The packed output has the final cell state after the steps.
    let steps = upstream.dims[1] - 1;
    let d = transposed.cols();
    let gates = 4 * d;
    let rows = dh.len() / d;
    let [u_batch, u_step, u_unit] = upstream.strides;
    let upstream_at =
        |b: usize, t: usize, j: usize| upstream.values[b * u_batch + t * u_step + j * u_unit];
    // The gradient reaching c_t from later steps; first the packed output's final cell state.
    for (i, dc) in dc.iter_mut().enumerate() {
        *dc = upstream_at(first + i / d, steps, i % d);
    }
    let mut from_output = vec![0.0f32; d];
    for t in (0..steps).rev() {
        for b in 0..rows {
            let row = first + b;
            for (j, v) in from_output.iter_mut().enumerate() {
                *v = upstream_at(row, t, j);
            }
            let a = &s.gates[(row * steps + t) * gates..][..gates];
            let cell = &s.cells[(row * (steps + 1) + t) * d..][..2 * d];
            let dz_row = &mut dz[(b * steps + t) * gates..][..gates];
            cell_step_backward(
                a,
                cell,
                &from_output,
                &dh[b * d..][..d],
                dz_row,
                &mut dc[b * d..][..d],
            );
        }
        // dh_{t-1} = dz_t W_h^T, step t's rows read where they lie.
        let dz_t = Matrix {
            values: &dz[t * gates..],
            rows,
            cols: gates,
            row_stride: steps * gates,
            col_stride: 1,
        };
        transposed.gemm::<B>(&mut *dh, dz_t, false);
    }
}

/// One step of one sequence backwards: the pre-activations' gradient `dz = [di, df, dg, do]`
/// from the saved gates `a`, the cell states `[c_{t-1}, c_t]`, the gradient reaching `h_t` (from
/// the output and from the next step) and the one reaching `c_t` in `dc`, which becomes the one
/// reaching `c_{t-1}`.
fn cell_step_backward(
    a: &[f32],
    cell: &[f32],
    from_output: &[f32],
    from_next: &[f32],
    dz: &mut [f32],
    dc: &mut [f32],
) {
    let d = dc.len();
    let (i, f, g, o) = (&a[..d], &a[d..2 * d], &a[2 * d..3 * d], &a[3 * d..4 * d]);
    let (c_before, c) = (&cell[..d], &cell[d..2 * d]);
    let (from_output, from_next) = (&from_output[..d], &from_next[..d]);
    let (di, rest) = dz.split_at_mut(d);
    let (df, rest) = rest.split_at_mut(d);
    let (dg, do_) = rest.split_at_mut(d);
    let do_ = &mut do_[..d];
    for j in 0..d {
        let dh = from_output[j] + from_next[j];
        let tanh_c = tanh(c[j]);
        let dc_now = dc[j] + dh * o[j] * (1.0 - tanh_c * tanh_c);
        di[j] = dc_now * g[j] * i[j] * (1.0 - i[j]);
        df[j] = dc_now * c_before[j] * f[j] * (1.0 - f[j]);
        dg[j] = dc_now * i[j] * (1.0 - g[j] * g[j]);
        do_[j] = dh * tanh_c * o[j] * (1.0 - o[j]);
        dc[j] = dc_now * f[j];
    }
}

/// The backward step of [`autodiff_lstm`]; parents `[projected, weight, bias, h0, c0]`.
#[derive(Debug)]
struct PdlLstm;

impl<B: KernelBackend> HostBackward<B, 5> for PdlLstm {
    type State = Saved<B>;

    fn gradients(self, dy: FloatTensor<B>, saved: Saved<B>, _: [bool; 5]) -> Grads<5> {
        let [batch, steps, d] = saved.dims;
        let [dx, dweight, dbias, dh0, dc0] = B::with_values(&dy, |dy: HostValues<'_, 3>| {
            B::with_values(&saved.weight, |w: HostValues<'_, 2>| {
                backward_on_host::<B>(dy, w.into(), &saved)
            })
        })
        .flatten()?;
        Some([
            (dx, Shape::new([batch, steps, 4 * d])),
            (dweight, Shape::new([d, 4 * d])),
            (dbias, Shape::new([4 * d])),
            (dh0, Shape::new([batch, d])),
            (dc0, Shape::new([batch, d])),
        ])
    }
}

/// The autodiff backends' [`KernelBackend::lstm_fast`]: the host forward pass recorded with its
/// written-out backward; `None` unless the inner backend runs host kernels.
pub(crate) fn autodiff_lstm<B: KernelBackend, C: CheckpointStrategy>(
    args: [FloatTensor<Autodiff<B, C>>; 5],
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let inner = args.each_ref().map(|a| a.primitive.clone());
    let (output, saved) = forward::<B>(&inner, true)?;
    let saved = saved.expect("forward saves what it was asked to");
    let nodes = args.map(|a| a.node);
    Some(
        match OnHost(PdlLstm)
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::{check_lstm, lstm_reference};
    use burn::backend::NdArray;

    #[test]
    fn the_fused_lstm_equals_burns_ops_in_values_and_gradients() {
        // The batch's rows run in blocks, one per thread: one block, blocks of one row, and
        // (batch 3 on two threads) blocks of unequal size.
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| check_lstm::<Autodiff<NdArray>>(&Default::default()))
                .unwrap_or_else(|e| panic!("{threads} threads: {e}"));
        }
    }

    #[test]
    fn without_autodiff_the_fused_lstm_gives_the_same_states() {
        let device = Default::default();
        let values = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 37 % 23) as f32 / 11.0 - 1.0) * scale)
                .collect()
        };
        let (batch, steps, d) = (2, 6, 3);
        let projected = Tensor::<NdArray, 3>::from_data(
            TensorData::new(values(batch * steps * 4 * d, 1.0), [batch, steps, 4 * d]),
            &device,
        );
        let weight = Tensor::<NdArray, 2>::from_data(
            TensorData::new(values(4 * d * d, 0.5), [d, 4 * d]),
            &device,
        );
        let zeros = Tensor::<NdArray, 2>::zeros([batch, d], &device);
        let ours = lstm(
            projected.clone(),
            weight.clone(),
            None,
            [zeros.clone(), zeros.clone()],
        )
        .unwrap();
        let [hidden, h, c] = lstm_reference(
            projected,
            weight,
            Tensor::zeros([4 * d], &device),
            [zeros.clone(), zeros],
        );
        for (a, b) in [
            (ours.hidden, hidden),
            (ours.last_hidden.unsqueeze_dim(1), h),
            (ours.last_cell.unsqueeze_dim(1), c),
        ] {
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        }
    }
}

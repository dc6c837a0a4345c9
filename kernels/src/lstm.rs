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
//!   LSTM does.
//!
//! The projection of the input, `x W_x + b_x`, stays outside (one `Linear` over the whole
//! sequence), so the op's inputs are the projected sequence, `W_h`, `b_h` and the initial state.
//! Its output packs every step's hidden state with the final cell state (`[batch, steps + 1,
//! d_hidden]`), because an autodiff op has one output; [`lstm`] unpacks it. On any backend
//! without the host kernels [`lstm`] returns `None` and the model runs its cell step by step.

use crate::KernelBackend;
use crate::activation::{sigmoid, tanh};
use crate::backend::{Op, host_kernels, register_gradients, run};
use crate::host::vector_values;
use crate::host::{HostValues, Matrix};
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};

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

/// The forward loop; shapes checked by [`forward`].
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
    let [s_batch, s_step, s_gate] = projected.strides;
    // Without `save`, the gates of one step at a time.
    let kept = if save { steps } else { 1 };
    let mut gate_values = vec![0.0f32; batch * kept * gates];
    let mut cells = vec![0.0f32; if save { batch * (steps + 1) * d } else { 0 }];
    let mut hidden_before = vec![0.0f32; if save { batch * steps * d } else { 0 }];
    let mut packed = vec![0.0f32; batch * (steps + 1) * d];
    if save {
        for b in 0..batch {
            cells[b * (steps + 1) * d..][..d].copy_from_slice(&c[b * d..][..d]);
        }
    }
    let mut z = vec![0.0f32; batch * gates];
    for t in 0..steps {
        for (b, row) in z.chunks_exact_mut(gates).enumerate() {
            let start = b * s_batch + t * s_step;
            for (j, (z, bias)) in row.iter_mut().zip(bias).enumerate() {
                *z = projected.values[start + j * s_gate] + bias;
            }
        }
        B::host_gemm(&mut z, Matrix::row_major(&h, batch, d), weight, true);
        let slot = if save { t } else { 0 };
        for (b, row) in z.chunks_exact(gates).enumerate() {
            let a = &mut gate_values[(b * kept + slot) * gates..][..gates];
            let (i, rest) = a.split_at_mut(d);
            let (f, rest) = rest.split_at_mut(d);
            let (g, o) = rest.split_at_mut(d);
            let (zi, rest) = row.split_at(d);
            let (zf, rest) = rest.split_at(d);
            let (zg, zo) = rest.split_at(d);
            let h_row = &mut h[b * d..][..d];
            let c_row = &mut c[b * d..][..d];
            if save {
                hidden_before[(b * steps + t) * d..][..d].copy_from_slice(h_row);
            }
            for j in 0..d {
                (i[j], f[j], g[j], o[j]) =
                    (sigmoid(zi[j]), sigmoid(zf[j]), tanh(zg[j]), sigmoid(zo[j]));
                c_row[j] = f[j] * c_row[j] + i[j] * g[j];
                h_row[j] = o[j] * tanh(c_row[j]);
            }
            packed[(b * (steps + 1) + t) * d..][..d].copy_from_slice(h_row);
            if save {
                cells[(b * (steps + 1) + t + 1) * d..][..d].copy_from_slice(c_row);
            }
        }
    }
    for b in 0..batch {
        packed[(b * (steps + 1) + steps) * d..][..d].copy_from_slice(&c[b * d..][..d]);
    }
    (packed, save.then_some((gate_values, cells, hidden_before)))
}

/// The backward pass on the host: `[d projected, d weight, d bias, d h0, d c0]`, row-major, from
/// the gradient of the packed output `[batch, steps + 1, d_hidden]`.
fn backward_on_host<B: KernelBackend>(
    upstream: HostValues<'_, 3>,
    weight: Matrix<'_>,
    s: &Saved<B>,
) -> [Vec<f32>; 5] {
    let [batch, steps, d] = s.dims;
    let gates = 4 * d;
    let [u_batch, u_step, u_unit] = upstream.strides;
    let upstream_at =
        |b: usize, t: usize, j: usize| upstream.values[b * u_batch + t * u_step + j * u_unit];
    let mut dz = vec![0.0f32; batch * steps * gates];
    let mut dh = vec![0.0f32; batch * d];
    // The gradient reaching c_t from later steps; first the packed output's final cell state.
    let mut dc: Vec<f32> = (0..batch * d)
        .map(|i| upstream_at(i / d, steps, i % d))
        .collect();
    for t in (0..steps).rev() {
        for b in 0..batch {
            let a = &s.gates[(b * steps + t) * gates..][..gates];
            let (i, rest) = a.split_at(d);
            let (f, rest) = rest.split_at(d);
            let (g, o) = rest.split_at(d);
            let cell = &s.cells[(b * (steps + 1) + t) * d..][..2 * d];
            let (c_before, c) = cell.split_at(d);
            let row = &mut dz[(b * steps + t) * gates..][..gates];
            let (di, rest) = row.split_at_mut(d);
            let (df, rest) = rest.split_at_mut(d);
            let (dg, do_) = rest.split_at_mut(d);
            let dc_row = &mut dc[b * d..][..d];
            let dh_row = &dh[b * d..][..d];
            for j in 0..d {
                let dh = upstream_at(b, t, j) + dh_row[j];
                let tanh_c = tanh(c[j]);
                let dc = dc_row[j] + dh * o[j] * (1.0 - tanh_c * tanh_c);
                di[j] = dc * g[j] * i[j] * (1.0 - i[j]);
                df[j] = dc * c_before[j] * f[j] * (1.0 - f[j]);
                dg[j] = dc * i[j] * (1.0 - g[j] * g[j]);
                do_[j] = dh * tanh_c * o[j] * (1.0 - o[j]);
                dc_row[j] = dc * f[j];
            }
        }
        // dh_{t-1} = dz_t W_h^T, step t's rows read where they lie.
        let dz_t = Matrix {
            values: &dz[t * gates..],
            rows: batch,
            cols: gates,
            row_stride: steps * gates,
            col_stride: 1,
        };
        B::host_gemm(&mut dh, dz_t, weight.t(), false);
    }
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

/// The backward step of [`autodiff_lstm`]; parents `[projected, weight, bias, h0, c0]`.
#[derive(Debug)]
struct PdlLstm;

impl<B: KernelBackend> Backward<B, 5> for PdlLstm {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let upstream = grads.consume::<B>(&ops.node);
        let saved = ops.state;
        let device = B::float_device(&upstream);
        let [batch, steps, d] = saved.dims;
        let gradients = B::with_values(&upstream, |u: HostValues<'_, 3>| {
            B::with_values(&saved.weight, |w: HostValues<'_, 2>| {
                backward_on_host::<B>(u, w.into(), &saved)
            })
        })
        .flatten()
        .expect("the forward pass lent this backend's values as f32");
        let [dx, dweight, dbias, dh0, dc0] = gradients;
        let gradients = [
            (dx, Shape::new([batch, steps, 4 * d])),
            (dweight, Shape::new([d, 4 * d])),
            (dbias, Shape::new([4 * d])),
            (dh0, Shape::new([batch, d])),
            (dc0, Shape::new([batch, d])),
        ];
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        register_gradients::<B, 5>(grads, parents, gradients, &device);
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
        match PdlLstm.prepare::<C>(nodes).compute_bound().stateful() {
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
        check_lstm::<Autodiff<NdArray>>(&Default::default()).unwrap();
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

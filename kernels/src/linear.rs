//! A fully connected layer, `y = x W + b`: burn-nn's `Linear` (same fields, same initialisation,
//! records load either way), applied to a tensor of any rank as one matrix product.
//!
//! Why not burn-nn's `Linear` on a `[batch, t, d]` tensor: Burn 0.21 multiplies it by the weight
//! as a *batched* matmul, broadcasting `W` over the batch, and its backward step computes the
//! weight's gradient as `batch` separate products `x_b^T dy_b` of `[d_in, d_out]` each, then sums
//! them over the batch. For `shakespeare-gpt`'s MLP (64 sequences of 64 positions, 128 -> 512)
//! that is 64 small gemms and a 16 MiB intermediate where one `[128, 4096] x [4096, 512]` gemm
//! does. Here the leading axes are flattened first, `[batch * t, d_in]`, so every product (the
//! output, both gradients) is one large gemm and the weight's gradient needs no sum; the output is
//! reshaped back. Both reshapes are free on a contiguous tensor.
//!
//! On the CPU backends ([`KernelBackend::HOST_KERNELS`]) a layer with a bias runs as host passes,
//! forward and, under autodiff, backward (`dx = dy W^T`, `dW = x^T dy`, `db` the column sums of
//! `dy`): the gemm behind the backend's matmul writes straight into the output, and the bias is
//! added block by block as it is written. Through flex's `matmul` each product's output is first
//! zeroed, then copied into an aligned buffer, then the bias added into a third tensor: in the
//! profile of `shakespeare-gpt`'s training step the zeroing and the copy alone took ~6%. Other
//! backends, and a layer without a bias, run Burn's `linear`.

use crate::KernelBackend;
use crate::backend::{Grads, HostBackward, OnHost, Op};
use crate::host::{HostValues, Matrix, add_in_order, product, vector_values, written};
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param};
use burn::prelude::*;
use burn::tensor::module::linear;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Configuration of a [`Linear`]: burn-nn's `LinearConfig` (row layout, `W` is
/// `[d_input, d_output]`).
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Width of each input vector.
    pub d_input: usize,
    /// Width of each output vector.
    pub d_output: usize,
    /// Whether the layer adds a bias `b`.
    #[config(default = true)]
    pub bias: bool,
    /// How `W` and `b` start: burn-nn's default, Kaiming-uniform with gain `1 / sqrt(3)`.
    #[config(
        default = "Initializer::KaimingUniform { gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false }"
    )]
    pub initializer: Initializer,
}

impl LinearConfig {
    /// The layer, initialised exactly as burn-nn's `LinearConfig::init` initialises it.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        burn::nn::LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device)
            .into()
    }
}

/// `y = x W + b` over the last axis. The fields are burn-nn's `Linear`'s.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct Linear<B: Backend> {
    /// `W`, `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `b`, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> From<burn::nn::Linear<B>> for Linear<B> {
    fn from(layer: burn::nn::Linear<B>) -> Self {
        Self {
            weight: layer.weight,
            bias: layer.bias,
        }
    }
}

impl<B: Backend> Linear<B> {
    /// `x W + b` for every vector along the last axis of `input`.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        if D == 1 {
            return linear(input, weight, bias);
        }
        let mut dims = input.dims();
        let [d_input, d_output] = weight.dims();
        let rows = input.reshape([dims[..D - 1].iter().product::<usize>(), d_input]);
        let host = bias
            .clone()
            .and_then(|bias| linear_rows(rows.clone(), weight.clone(), bias));
        let output = host.unwrap_or_else(|| linear(rows, weight, bias));
        dims[D - 1] = d_output;
        output.reshape(dims)
    }
}

/// [`Linear::forward`] on `[rows, d_input]` with a bias: the host passes on a CPU backend (with
/// or without autodiff), `None` elsewhere.
pub(crate) fn linear_rows<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    crate::backend::run::<LinearOp, B>((x, weight, bias))
}

/// [`Linear::forward`] on `[rows, d_input]` with a bias as an [`Op`]: the backend's host pass, or
/// `None` for Burn's `linear`. Arguments: the rows, `W`, `b`.
struct LinearOp;

impl Op for LinearOp {
    type Args<B: Backend> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>);
    type Output<B: Backend> = Option<Tensor<B, 2>>;

    fn fast<F: KernelBackend>((x, weight, bias): Self::Args<F>) -> Option<Tensor<F, 2>> {
        let x = x.into_primitive().tensor();
        let weight = weight.into_primitive().tensor();
        let output = F::linear_fast(x, weight, bias.into_primitive().tensor())?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
    }

    fn reference<B: Backend>(_: Self::Args<B>) -> Option<Tensor<B, 2>> {
        None
    }
}

/// Rows a task of the host passes takes at the least: below that, one gemm call over all rows
/// (which threads itself when it is large).
const ROWS: usize = 256;

/// The forward pass on the host: `x W + b` for `x` `[rows, d_input]`, `W` `[d_input,
/// d_output]`, row-major; `None` when the backend does not lend the values as `f32` or the
/// shapes disagree.
pub(crate) fn forward_on_host<B: KernelBackend>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    bias: &FloatTensor<B>,
) -> Option<FloatTensor<B>> {
    let [rows, d_input] = x.shape().dims();
    let bias = vector_values::<B>(bias)?;
    let output = B::with_values(x, |x: HostValues<'_, 2>| {
        B::with_values(weight, |w: HostValues<'_, 2>| {
            (w.dims == [d_input, bias.len()])
                .then(|| product_plus_bias::<B>(Matrix::from(x), Matrix::from(w), &bias))
        })
    })
    .flatten()
    .flatten()?;
    let shape = Shape::new([rows, bias.len()]);
    Some(B::float_from_data(
        TensorData::new(output, shape),
        &B::float_device(x),
    ))
}

/// `x w + b`, row-major: the rows split into one block per core, each block's product and bias
/// in one task, so the bias is added while the block is still in cache (Burn's `linear` adds it
/// in a second pass over the whole output, into a second tensor). Each row's sums are the gemm's,
/// as in Burn's matmul, and `b` is added last, as Burn adds it.
fn product_plus_bias<B: KernelBackend>(x: Matrix<'_>, w: Matrix<'_>, bias: &[f32]) -> Vec<f32> {
    let (rows, d_output) = (x.rows, w.cols);
    let block = rows.div_ceil(rayon::current_num_threads()).max(ROWS);
    let blocks = |output: &mut [MaybeUninit<f32>]| {
        output
            .par_chunks_mut(block * d_output)
            .enumerate()
            .for_each(|(i, output)| {
                let x = x.rows_from(i * block, output.len() / d_output);
                let output = B::host_gemm_fresh(output, x, w);
                for row in output.chunks_exact_mut(d_output) {
                    row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                }
            })
    };
    // SAFETY: the blocks cover the output, and each block's gemm writes all of its block.
    unsafe { written(rows * d_output, blocks) }
}

/// The backward step of [`Linear`] on the host; parents `[x, W, b]`:
///
/// ```text
/// dx = dy W^T        dW = x^T dy        db = sum over rows of dy
/// ```
#[derive(Debug)]
struct LinearBackward;

impl<B: KernelBackend> HostBackward<B, 3> for LinearBackward {
    /// `x` and `W`.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn gradients(
        self,
        dy: FloatTensor<B>,
        (x, weight): Self::State,
        tracked: [bool; 3],
    ) -> Grads<3> {
        let [tracks_x, tracks_w, tracks_b] = tracked;
        let (x_shape, w_shape) = (x.shape(), weight.shape());
        let rows = x_shape.dims::<2>()[0];
        let d_output = w_shape.dims::<2>()[1];
        B::with_values(&dy, |dy: HostValues<'_, 2>| {
            let dy = dy.row_major();
            let dy = Matrix::row_major(&dy, rows, d_output);
            let dx = match tracks_x {
                true => B::with_values(&weight, |w| product::<B>(dy, Matrix::from(w).t()))?,
                false => Vec::new(),
            };
            let dw = match tracks_w {
                true => B::with_values(&x, |x| product::<B>(Matrix::from(x).t(), dy))?,
                false => Vec::new(),
            };
            let db = if tracks_b {
                column_sums(dy.values, d_output)
            } else {
                Vec::new()
            };
            Some([(dx, x_shape), (dw, w_shape), (db, Shape::new([d_output]))])
        })
        .flatten()
    }
}

/// The sum of each column of row-major `values` with `cols` columns: blocks of rows summed on
/// the cores, then the blocks' sums added in order ([`add_in_order`]).
fn column_sums(values: &[f32], cols: usize) -> Vec<f32> {
    let blocks = values
        .par_chunks(ROWS * cols)
        .map(|block| {
            let mut sums = vec![0.0f32; cols];
            for row in block.chunks_exact(cols) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            sums
        })
        .collect();
    add_in_order(blocks, cols)
}

/// The autodiff backends' [`KernelBackend::linear_fast`]: the host forward pass recorded with the
/// host backward step; `None` (Burn's `linear`) unless the inner backend runs host kernels and
/// lends the values as `f32`.
pub(crate) fn autodiff_linear<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if !B::HOST_KERNELS {
        return None;
    }
    let output = forward_on_host::<B>(&x.primitive, &weight.primitive, &bias.primitive)?;
    Some(
        match OnHost(LinearBackward)
            .prepare::<C>([x.node, weight.node, bias.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        },
    )
}

impl<B: Backend> ModuleDisplay for Linear<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds.
    fn custom_content(&self, content: Content) -> Option<Content> {
        let [d_input, d_output] = self.weight.shape().dims();
        content
            .add("d_input", &d_input)
            .add("d_output", &d_output)
            .add("bias", &self.bias.is_some())
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::{Distribution, Tolerance};

    type B = Autodiff<NdArray>;

    /// Burn's layer with its parameters drawn (they are drawn lazily, at first use, so two clones
    /// of an undrawn layer would draw different ones).
    fn burns_layer(d_input: usize, d_output: usize) -> burn::nn::Linear<B> {
        let layer = burn::nn::LinearConfig::new(d_input, d_output).init::<B>(&Default::default());
        let _ = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
        layer
    }

    #[test]
    fn the_host_linear_layer_equals_burns_in_values_and_gradients() {
        crate::parity::check_linear::<B>(&Default::default()).unwrap();
    }

    /// The gradients summed over blocks of rows (the linear layer's bias, the layer norm's gamma
    /// and beta) come out the same to the bit on 1 to 4 threads and on every repeat: the blocks'
    /// sums are added in order, not in the tree rayon's work stealing leaves.
    #[test]
    fn gradients_summed_over_rows_repeat_bit_for_bit_on_any_number_of_threads() {
        let device = Default::default();
        let (rows, d_input, d_output) = (4096, 24, 40);
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * k % 101) as f32 - 50.0) / 37.0)
                .collect()
        };
        let tensor = |n: usize, k: usize, shape: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(values(n, k), shape), &device)
        };
        let mut linear = LinearConfig::new(d_input, d_output).init::<B>(&device);
        linear.weight = Param::from_tensor(tensor(d_input * d_output, 7, [d_input, d_output]));
        let norm = crate::LayerNormConfig::new(d_output).init::<B>(&device);
        let x = tensor(rows * d_input, 13, [rows, d_input]);
        let r = tensor(rows * d_output, 29, [rows, d_output]);
        let run = || {
            let y = norm.forward(linear.forward(x.clone()));
            let grads = (y * r.clone()).sum().backward();
            let bits = |t: Tensor<B, 1>| -> Vec<u32> {
                let data = t.grad(&grads).unwrap().into_data();
                data.iter::<f32>().map(f32::to_bits).collect()
            };
            let bias = linear.bias.as_ref().unwrap().val();
            [
                bits(bias),
                bits(norm.gamma.val()),
                bits(norm.beta.as_ref().unwrap().val()),
            ]
        };
        let first = run();
        for threads in [1, 2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for repeat in 0..3 {
                let again = pool.install(run);
                for (name, (a, b)) in ["bias", "gamma", "beta"]
                    .iter()
                    .zip(first.iter().zip(&again))
                {
                    assert!(
                        a == b,
                        "{name}'s gradient differs on {threads} threads, repeat {repeat}"
                    );
                }
            }
        }
    }

    #[test]
    fn records_load_both_ways_between_burn_and_pdl() {
        type Mpk = NamedMpkBytesRecorder<FullPrecisionSettings>;
        let (device, recorder) = (Default::default(), Mpk::default());
        let burns = burns_layer(5, 7);
        let bytes = recorder.record(burns.clone().into_record(), ()).unwrap();
        let record = recorder.load(bytes, &device).unwrap();
        let loaded = LinearConfig::new(5, 7)
            .init::<B>(&device)
            .load_record(record);
        assert_eq!(
            loaded.weight.val().into_data(),
            burns.weight.val().into_data()
        );
        let bias = |l: &Linear<B>| l.bias.as_ref().unwrap().val().into_data();
        assert_eq!(
            bias(&loaded),
            burns.bias.as_ref().unwrap().val().into_data()
        );

        let ours = Linear::from(burns_layer(5, 7));
        let bytes = recorder.record(ours.clone().into_record(), ()).unwrap();
        let record = recorder.load(bytes, &device).unwrap();
        let back = burn::nn::LinearConfig::new(5, 7)
            .init::<B>(&device)
            .load_record(record);
        assert_eq!(back.weight.val().into_data(), ours.weight.val().into_data());
        assert_eq!(format!("{back}"), format!("{ours}"), "the same display");
    }

    /// A `[2, 3, 4, 5]` input through both layers holding the same weights: the same output, and
    /// the same gradients for the input, the weight and the bias.
    #[test]
    fn equals_burns_linear_on_a_rank_4_input_in_values_and_gradients() {
        let device = Default::default();
        let burns = burns_layer(5, 6);
        let ours = Linear::from(burns.clone());
        let x = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Default, &device);
        let r = Tensor::<B, 4>::random([2, 3, 4, 6], Distribution::Default, &device);
        let run = |ours_: bool| {
            let x = x.clone().require_grad();
            let y = if ours_ {
                ours.forward(x.clone())
            } else {
                burns.forward(x.clone())
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let weight = if ours_ { &ours.weight } else { &burns.weight };
            let bias = if ours_ { &ours.bias } else { &burns.bias };
            (
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                weight.grad(&grads).unwrap().into_data(),
                bias.as_ref().unwrap().grad(&grads).unwrap().into_data(),
            )
        };
        let (a, b) = (run(true), run(false));
        let tolerance = Tolerance::<f32>::absolute(1e-5);
        a.0.assert_approx_eq::<f32>(&b.0, tolerance);
        a.1.assert_approx_eq::<f32>(&b.1, tolerance);
        a.2.assert_approx_eq::<f32>(&b.2, tolerance);
        a.3.assert_approx_eq::<f32>(&b.3, tolerance);
    }
}

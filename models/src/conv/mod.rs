//! A 2-D convolution whose backward pass is written out as one forward convolution and one
//! matrix product (d2l.ai ch. 7, "Convolutional Neural Networks"), a drop-in for
//! `burn::nn::conv::Conv2d` in the CNNs of [`crate::cnn`].
//!
//! With `x` zero-padded by `p` into `x~`, stride `s`, dilation `d` and a `k`-tap kernel, the
//! forward pass is
//!
//! `y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] x~[n, c, s i + d u, s j + d v]`
//!
//! and, with `g = dL/dy` the gradient arriving from above, its three gradients are
//!
//! - bias: `dL/db[o] = sum_{n, i, j} g[n, o, i, j]`, one sum.
//! - weight: `dL/dw[o, c, u, v] = sum_{n, i, j} g[n, o, i, j] x~[n, c, s i + d u, s j + d v]`.
//!   Unfolding `x~` into its patches (im2col: Chellapilla, Puri & Simard 2006, "High Performance
//!   Convolutional Neural Networks for Document Processing") gives per image `X_n: [L, c_in k k]`,
//!   one row per output position, and the sum is `sum_n G_n X_n` with `G_n: [c_out, L]`: one
//!   batched matmul and a sum over the batch. At stride 1 even the unfolding's copy is skipped: for
//!   a fixed tap `(u, v)` the patch entries of all positions are one contiguous run of the
//!   flattened padded image, if `g` is widened with zero columns to the padded width, so each tap
//!   is a batched matmul against a strided view (`weight_gradient_by_offsets`).
//! - input: `dL/dx[n, c, h, w] = sum_{o, u, v} w[o, c, u, v] g^[n, o, h + p - d u, w + p - d v]`,
//!   where `g^` is `g` with `s - 1` zeros between its rows and columns. Substituting
//!   `u' = k - 1 - u` makes this a stride-1 convolution of `g^`, zero-padded by `d (k - 1) - p`
//!   before and `d (k - 1) - p + r` after (`r = (h + 2p - d (k - 1) - 1) mod s`, the rows the
//!   stride stepped over), with the kernel flipped in `(u, v)` and its channels swapped to
//!   `[c_in, c_out, k, k]` (Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep
//!   learning", section 4). A negative padding crops `g^`: output rows that read only the forward's
//!   padding send nothing back to the input.
//!
//! Why write it out: Burn's autodiff takes the input gradient through `conv_transpose2d` and the
//! weight gradient through a convolution whose kernel is the whole output-gradient map. On the
//! CPU backends those run 100-500x slower than the forward convolution on `ndarray` and ~5x
//! slower on `flex`, while a forward convolution and a matmul are each backend's best-tuned
//! kernels. The backward here is a custom autodiff op (Burn's `Backward` machinery, as in Burn's
//! custom-kernel examples) built from those two, generic over the backend through
//! [`ConvBackend`].
//!
//! On the CPU backends ([`ConvBackend::HOST_KERNELS`]) the same maths runs as im2col / col2im on
//! the host around one large matmul per chunk of images (`host.rs`): the weight gradient as
//! `patches x gradient`, the input gradient as `kernel^T x gradient` added back onto the input
//! (col2im, which needs no spread or padded copy of the gradient), and on `flex` the forward
//! pass as `kernel x patches`. The tensors' values are read where they lie, in whatever layout
//! the previous op left them (ndarray's convolution returns channels-last maps). With
//! [`crate::pool`] and [`crate::dropout`] this brings the classic MNIST net's training step on
//! both CPU backends to 0.64-0.87x PyTorch's on the same 2 cores; the README's "Which CPU backend
//! is the default" has the measurements.
//!
//! [`Conv2d`] has the fields of `burn::nn::conv::Conv2d`, so records load either way, plus
//! [`ConvImplementation`], which picks this path or Burn's own to compare against;
//! [`check_gradients`] is the parity check, run here on `ndarray` and by `pdl-tests` on the
//! other backends.

use burn::backend::Autodiff;
use burn::backend::autodiff::{
    NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv as burn_conv;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{
    ConvOptions, FloatTensor, ModuleOps, PadMode, PaddedConvOptions, UnfoldOptions,
};
use burn::tensor::{FloatDType, Slice, TensorMetadata, TensorPrimitive};
use pdl_datasets::SplitMix64;

mod host;

use crate::pool::Window;
pub use host::HostValues;

/// A backend that can run [`ConvBackend::conv2d_fast`], the convolution whose backward pass is
/// the one of this module's docs. The pattern of Burn's custom-kernel examples: a plain backend
/// keeps the default (its own forward `conv2d`), and `Autodiff<B>` overrides it with the custom
/// autodiff op.
pub trait ConvBackend: Backend {
    /// Whether the backend's tensors live in host memory, so that the host kernels of this crate
    /// apply: the convolution's gradients by im2col and col2im around one large matmul per chunk
    /// of images (`host.rs`), max pooling ([`crate::pool`]) and dropout masks
    /// ([`crate::dropout`]). True for the CPU backends; a GPU backend keeps its tensors on the
    /// device and runs Burn's ops and the strided-view weight gradient.
    const HOST_KERNELS: bool = false;

    /// Calls `f` with the `f32` values of `tensor` as the host sees them, for the host kernels of
    /// `host.rs`; `None` when they are not `f32` or not a `D`-dimensional tensor. The default
    /// reads the tensor out; a backend whose tensors are host arrays lends them as they lie.
    fn with_values<R, const D: usize>(
        tensor: &FloatTensor<Self>,
        f: impl FnOnce(HostValues<'_, D>) -> R,
    ) -> Option<R> {
        let data = burn::tensor::read_sync(Self::float_into_data(tensor.clone())).ok()?;
        host::lend_data(&data, f)
    }

    /// `a b` for row-major `a: [m, k]` and `b: [k, n]` held on the host, row-major: the one
    /// matmul of the host kernels. The default runs the backend's own matmul on them.
    fn host_matmul(a: Vec<f32>, b: Vec<f32>, [m, k, n]: [usize; 3]) -> Vec<f32> {
        host::matmul_through::<Self>(a, b, [m, k, n])
    }

    /// Max pooling, Burn's `max_pool2d` with the same arguments (padding symmetric, output size
    /// rounded down) and result; see [`crate::pool::max_pool2d`].
    ///
    /// # Shapes
    /// - x: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height_out, width_out]`
    fn max_pool2d_fast(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        window.burn_op::<Self>(x)
    }

    /// A 2-D convolution, `conv2d` with the same arguments and result.
    ///
    /// # Shapes
    /// - x: `[batch, channels_in, height, width]`
    /// - weight: `[channels_out, channels_in / groups, kernel_height, kernel_width]`
    /// - bias: `[channels_out]`
    /// - output: `[batch, channels_out, height_out, width_out]`
    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }
}

// The backends `pdl` compiles in (see `pdl-training`'s `backend.rs`). Unit tests run on ndarray,
// which the dev-dependency always compiles.
#[cfg(feature = "flex")]
impl ConvBackend for burn::backend::Flex {
    const HOST_KERNELS: bool = true;

    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if options.groups == 1
            && let Some(y) = host::conv2d::<Self>(&x, &weight, bias.as_ref(), &options)
        {
            return y;
        }
        Self::conv2d(x, weight, bias, options)
    }

    // The gemm behind flex's matmul, called directly: going through `float_matmul` copies both
    // operands into aligned tensors, zeroes the output and copies it out again, ~10% of a
    // training step of the classic net.
    fn host_matmul(a: Vec<f32>, b: Vec<f32>, shape: [usize; 3]) -> Vec<f32> {
        host::gemm(&a, &b, shape)
    }

    // Flex's own pooling takes 18 ms for the classic net's pool, the host pass ~2 ms. (ndarray's
    // is as fast as the host pass on the channels-last maps its convolution returns.)
    fn max_pool2d_fast(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        match crate::pool::forward_on_host::<Self>(&x, window) {
            Some((output, _)) => output,
            None => window.burn_op::<Self>(x),
        }
    }

    fn with_values<R, const D: usize>(
        tensor: &FloatTensor<Self>,
        f: impl FnOnce(HostValues<'_, D>) -> R,
    ) -> Option<R> {
        if tensor.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let layout = tensor.layout();
        let values = HostValues::strided(
            tensor.storage::<f32>(),
            layout.start_offset(),
            layout.strides(),
            layout.shape(),
        )?;
        Some(f(values))
    }
}
#[cfg(any(feature = "ndarray", test))]
impl ConvBackend for burn::backend::NdArray {
    const HOST_KERNELS: bool = true;

    // The gemm behind ndarray's matmul, called directly: Burn's `float_matmul` copies both
    // operands (its reshape always copies) and runs the gemm inside a rayon scope, whose idle
    // workers spin beside the gemm's own threads; the weight gradient's eight chunks of the
    // classic net's second layer took 27 ms that way against 18 ms called directly.
    fn host_matmul(a: Vec<f32>, b: Vec<f32>, shape: [usize; 3]) -> Vec<f32> {
        host::sgemm(&a, &b, shape)
    }

    fn with_values<R, const D: usize>(
        tensor: &FloatTensor<Self>,
        f: impl FnOnce(HostValues<'_, D>) -> R,
    ) -> Option<R> {
        // Lent as they lie: `into_data` copies an array that something else still holds (the
        // autodiff graph holds every checkpointed input) one element at a time, and ndarray's
        // convolution returns channels-last arrays, which no row-major slice can show.
        let burn::backend::ndarray::NdArrayTensor::F32(storage) = tensor else {
            return None;
        };
        let view = storage.view();
        let values = HostValues::strided(
            view.as_slice_memory_order()?,
            0,
            view.strides(),
            view.shape(),
        )?;
        Some(f(values))
    }
}
#[cfg(feature = "wgpu")]
impl ConvBackend for burn::backend::Wgpu {}
#[cfg(feature = "cuda")]
impl ConvBackend for burn::backend::Cuda {}

/// An autodiff backend whose models can run [`Conv2d`] in training and, on its inner backend, in
/// validation: what the training pipelines ask of a backend.
pub trait ConvAutodiffBackend: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

impl<B: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend> ConvAutodiffBackend for B {}

/// Any autodiff backend over a [`ConvBackend`]: the op below uses nothing but the inner backend's
/// `conv2d_fast`, `matmul` and tensor ops, and its host kernels where it has them.
impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    const HOST_KERNELS: bool = B::HOST_KERNELS;

    fn max_pool2d_fast(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        crate::pool::autodiff_max_pool2d::<B, C>(x, window)
    }

    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        // Grouped convolutions keep Burn's own backward: the im2col matmul below is written for
        // one group, and no model of the course uses groups.
        if options.groups != 1 {
            return <Self as ModuleOps<Self>>::conv2d(x, weight, bias, options);
        }

        // Mirrors burn-autodiff's own `conv2d` (src/ops/module.rs): the op is compute bound, so
        // its inputs are checkpointed rather than recomputed, and the bias needs no state since
        // its gradient is a sum of the output gradient.
        match bias {
            Some(bias) => match PdlConv2dWithBias
                .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let output = B::conv2d_fast(
                        x.primitive,
                        weight.primitive,
                        Some(bias.primitive),
                        options.clone(),
                    );
                    prep.finish((x_state, weight_state, options), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::conv2d_fast(
                    x.primitive,
                    weight.primitive,
                    Some(bias.primitive),
                    options,
                )),
            },
            None => match PdlConv2dNoBias
                .prepare::<C>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let output =
                        B::conv2d_fast(x.primitive, weight.primitive, None, options.clone());
                    prep.finish((x_state, weight_state, options), output)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::conv2d_fast(x.primitive, weight.primitive, None, options))
                }
            },
        }
    }
}

/// The backward step of a convolution with a bias; parents `[x, weight, bias]`.
#[derive(Debug)]
struct PdlConv2dWithBias;

/// The backward step of a convolution without a bias; parents `[x, weight]`.
#[derive(Debug)]
struct PdlConv2dNoBias;

impl<B: ConvBackend> Backward<B, 3> for PdlConv2dWithBias {
    /// The checkpointed `x` and `weight`, and the forward's options.
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        conv2d_backward::<B>(parents, grad, ops.state, grads, checkpointer);
    }
}

impl<B: ConvBackend> Backward<B, 2> for PdlConv2dNoBias {
    /// The checkpointed `x` and `weight`, and the forward's options.
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, weight] = ops.parents.map(|node| node.map(|node| node.id));
        conv2d_backward::<B>([x, weight, None], grad, ops.state, grads, checkpointer);
    }
}

/// The backward step of either op: computes the gradients of the tracked parents `[x, weight,
/// bias]` (none for an untracked one) from the output gradient `grad` and registers them.
fn conv2d_backward<B: ConvBackend>(
    [node_x, node_weight, node_bias]: [Option<NodeId>; 3],
    grad: FloatTensor<B>,
    (x_state, weight_state, options): (NodeId, NodeId, ConvOptions<2>),
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    // Retrieved whether needed or not: each retrieval releases the checkpointer's hold on the
    // tensor, as in burn-autodiff's own ops.
    let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
    let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
    let wanted = Wanted {
        input: node_x.is_some(),
        weight: node_weight.is_some(),
        bias: node_bias.is_some(),
    };
    let computed = conv2d_gradients::<B>(x, weight, grad, &options, wanted);
    for (node, grad) in [
        (node_x, computed.input),
        (node_weight, computed.weight),
        (node_bias, computed.bias),
    ] {
        if let (Some(node), Some(grad)) = (node, grad) {
            grads.register::<B>(node, grad);
        }
    }
}

/// Which gradients the graph asks for: the images fed to a first layer need none, and skipping
/// the input gradient there saves a whole convolution.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    input: bool,
    weight: bool,
    bias: bool,
}

/// The gradients [`conv2d_gradients`] was asked for.
struct ConvGradients<B: Backend> {
    input: Option<FloatTensor<B>>,
    weight: Option<FloatTensor<B>>,
    bias: Option<FloatTensor<B>>,
}

/// The gradients of a one-group convolution with symmetric padding `options.padding`, given the
/// output gradient `grad`: the maths of the module docs.
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`
/// - weight: `[channels_out, channels_in, kernel_height, kernel_width]`
/// - grad: `[batch, channels_out, height_out, width_out]`
fn conv2d_gradients<B: ConvBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: &ConvOptions<2>,
    wanted: Wanted,
) -> ConvGradients<B> {
    let input = wanted.input.then(|| {
        let on_host = B::HOST_KERNELS
            .then(|| host::input_gradient::<B>(&x.shape(), &weight, &grad, options))
            .flatten();
        on_host.unwrap_or_else(|| {
            input_gradient::<B>(x.shape(), weight.clone(), grad.clone(), options)
        })
    });
    if !(wanted.weight || wanted.bias) {
        return ConvGradients {
            input,
            weight: None,
            bias: None,
        };
    }
    let on_host = (wanted.weight && B::HOST_KERNELS)
        .then(|| host::weight_gradient::<B>(&x, &grad, &weight.shape(), options))
        .flatten();
    // Per image, `[channels_out, height_out * width_out]`: a free reshape, shared by both.
    let grad = output_gradient_images::<B>(grad);
    let weight_grad = on_host.or_else(|| {
        wanted
            .weight
            .then(|| weight_gradient::<B>(x, grad.clone(), weight.shape(), options))
    });
    let bias_grad = wanted.bias.then(|| bias_gradient::<B>(grad));
    ConvGradients {
        input,
        weight: weight_grad,
        bias: bias_grad,
    }
}

/// `dL/dx`: the output gradient spread out by the stride and padded (or cropped), convolved with
/// the flipped, channel-swapped kernel at stride 1 and the forward's dilation.
///
/// # Shapes
/// - x_shape: `[batch, channels_in, height, width]`
/// - weight: `[channels_out, channels_in, kernel_height, kernel_width]`
/// - grad: `[batch, channels_out, height_out, width_out]`
/// - output: `x_shape`
fn input_gradient<B: ConvBackend>(
    x_shape: Shape,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: &ConvOptions<2>,
) -> FloatTensor<B> {
    let [batch, _, height, width] = x_shape.dims();
    let [channels_out, _, kernel_height, kernel_width] = weight.shape().dims();
    let [_, _, height_out, width_out] = grad.shape().dims();
    let device = B::float_device(&grad);
    let dtype: FloatDType = grad.dtype().into();
    let rows = Placement::new(height, kernel_height, height_out, options, 0);
    let cols = Placement::new(width, kernel_width, width_out, options, 1);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        // Every output position along one axis read only padding: no input pixel had any effect.
        return B::float_zeros(x_shape, &device, dtype);
    };

    let kept = if rows.keeps_all(height_out) && cols.keeps_all(width_out) {
        grad
    } else {
        B::float_slice(
            grad,
            &[
                Slice::from(0..batch),
                Slice::from(0..channels_out),
                rows.kept(),
                cols.kept(),
            ],
        )
    };
    let spread = if rows.fills() && cols.fills() {
        // Stride 1 and the kept rows span the axis: the gradient as it is (the convolution pads
        // it itself, `padding <= reach`, the usual case; or the forward's extra padding was
        // cropped).
        kept
    } else {
        // One stepped assignment dilates by the stride.
        let zeros = B::float_zeros(
            Shape::new([batch, channels_out, rows.len, cols.len]),
            &device,
            dtype,
        );
        B::float_slice_assign(
            zeros,
            &[
                Slice::from(0..batch),
                Slice::from(0..channels_out),
                rows.target(),
                cols.target(),
            ],
            kept,
        )
    };

    // Flipped in both spatial axes, input and output channels swapped.
    let kernel = B::float_swap_dims(B::float_flip(weight, &[2, 3]), 0, 1); // [c_in, c_out, kh, kw]
    B::conv2d_fast(
        spread,
        kernel,
        None,
        ConvOptions::new(
            [1, 1],
            [rows.conv_padding, cols.conv_padding],
            options.dilation,
            1,
        ),
    )
}

/// Where one spatial axis of the output gradient lands in the tensor that [`input_gradient`]'s
/// convolution reads. Output position `o` goes to index `lead + o * stride` of an axis of length
/// `input + reach - 2 * conv_padding`, where `reach = dilation * (kernel - 1)` and `lead =
/// min(reach - padding, 0)`; `conv_padding = max(reach - padding, 0)` zeros then pad that axis on
/// both sides (by `conv2d`).
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// Length of the axis before `conv_padding`.
    len: usize,
    /// Zero padding on both sides.
    conv_padding: usize,
    /// Output positions `first..last` land inside; the others fall in cropped padding.
    first: usize,
    /// End (exclusive) of the output positions that land inside.
    last: usize,
    /// Index that output position `first` lands at.
    offset: usize,
    /// The forward's stride: the spacing of the landed positions.
    stride: usize,
}

impl Placement {
    /// `None` when no output position lands inside, so the input gradient is zero.
    fn new(
        size_in: usize,
        kernel: usize,
        size_out: usize,
        options: &ConvOptions<2>,
        axis: usize,
    ) -> Option<Self> {
        let stride = options.stride[axis];
        let reach = options.dilation[axis] * (kernel - 1);
        // Padding the flipped kernel needs before the first output row. Negative when the
        // forward padded more than the kernel reaches: those first rows read only padding.
        let before = reach as isize - options.padding[axis] as isize;
        let conv_padding = before.max(0) as usize;
        let lead = before.min(0);
        // Never 0 when the forward produced an output (`size_in + 2 padding > reach`).
        let len = (size_in + reach).checked_sub(2 * conv_padding)?;
        if len == 0 {
            return None;
        }
        let first = lead.unsigned_abs().div_ceil(stride);
        let last = size_out.min((len - 1 + lead.unsigned_abs()) / stride + 1);
        if first >= last {
            return None;
        }
        let offset = (lead + (first * stride) as isize) as usize;
        Some(Self {
            len,
            conv_padding,
            first,
            last,
            offset,
            stride,
        })
    }

    /// True when every output position lands inside.
    fn keeps_all(&self, size_out: usize) -> bool {
        self.first == 0 && self.last == size_out
    }

    /// True when the landed positions are the whole axis: nothing to spread out.
    fn fills(&self) -> bool {
        self.stride == 1 && self.offset == 0 && self.last - self.first == self.len
    }

    /// The output positions that land inside.
    fn kept(&self) -> Slice {
        Slice::from(self.first..self.last)
    }

    /// Where they land: every `stride`-th index from `offset`.
    fn target(&self) -> Slice {
        let start = self.offset;
        let end = start + (self.last - self.first - 1) * self.stride + 1;
        Slice::new(start as isize, Some(end as isize), self.stride as isize)
    }
}

/// The output gradient with each image's positions in one row per channel: a reshape, no copy.
///
/// # Shapes
/// - grad: `[batch, channels_out, height_out, width_out]`
/// - output: `[batch, channels_out, height_out * width_out]`
fn output_gradient_images<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let [batch, channels_out, height_out, width_out] = grad.shape().dims();
    B::float_reshape(
        grad,
        Shape::new([batch, channels_out, height_out * width_out]),
    )
}

/// `dL/dw = G X`, with `X` the im2col patches of the padded input.
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`
/// - grad: `[batch, channels_out, height_out * width_out]`, from [`output_gradient_images`]
/// - output: `weight_shape`, `[channels_out, channels_in, kernel_height, kernel_width]`
fn weight_gradient<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    weight_shape: Shape,
    options: &ConvOptions<2>,
) -> FloatTensor<B> {
    let [batch, channels_in, height, width] = x.shape().dims();
    let [_, _, kernel_height, kernel_width] = weight_shape.dims();
    let [pad_height, pad_width] = options.padding;
    let stride_one = options.stride == [1, 1];
    // Stride 1 reads the padded rows whole (see `weight_gradient_by_offsets`), which needs one
    // more zero row below them.
    let extra_row = usize::from(stride_one);
    // `unfold4d` with padding (or dilation) falls back to a convolution with a one-hot kernel of
    // `[c_in k k, c_in, k, k]`, dearer than the matmul itself; padded by hand, it stays on the
    // strided-window path.
    let x = if pad_height == 0 && pad_width == 0 && extra_row == 0 {
        x
    } else {
        let device = B::float_device(&x);
        let zeros = B::float_zeros(
            Shape::new([
                batch,
                channels_in,
                height + 2 * pad_height + extra_row,
                width + 2 * pad_width,
            ]),
            &device,
            x.dtype().into(),
        );
        B::float_slice_assign(
            zeros,
            &[
                Slice::from(0..batch),
                Slice::from(0..channels_in),
                Slice::from(pad_height..pad_height + height),
                Slice::from(pad_width..pad_width + width),
            ],
            x,
        )
    };
    if stride_one {
        return weight_gradient_by_offsets::<B>(x, grad, weight_shape, options.dilation);
    }
    let columns = B::unfold4d(
        x,
        [kernel_height, kernel_width],
        UnfoldOptions::new(options.stride, [0, 0], options.dilation),
    ); // [batch, channels_in * kh * kw, positions]
    // `G X` as one batched matmul over the images, `G_n X_n^T` with `X_n^T` a transposed view
    // (the backends' matmuls read strides, so nothing is copied), then a sum over the images:
    // the same products as one `[c_out, batch L] x [batch L, patch]` matmul without the two
    // transposing copies that layout would cost.
    let columns = B::float_swap_dims(columns, 1, 2); // [batch, positions, patch]
    let per_image = B::float_matmul(grad, columns); // [batch, channels_out, patch]
    B::float_reshape(B::float_sum_dim(per_image, 0), weight_shape)
}

/// [`weight_gradient`] at stride 1 without an im2col copy. Flattening a padded image's rows,
/// the patch entry `(u, v)` of every output position `(i, j)` is `x~[(i + d u) W + j + d v]`
/// (`W` the padded width): for a fixed kernel tap, all positions together are one contiguous run
/// of `x~` starting at `d (u W + v)`, provided the output gradient is widened to `W` columns with
/// zeros (the extra columns then multiply garbage by zero). So each tap's `[c_out, c_in]` slice of
/// the gradient is one batched matmul of the widened gradient with a strided view of `x~`, and
/// nothing but the gradient's widening is copied. It costs `W / width_out` more multiplies.
///
/// # Shapes
/// - x: `[batch, channels_in, height_padded + 1, width_padded]`, zero-padded, one zero row added
/// - grad: `[batch, channels_out, height_out * width_out]`
/// - output: `weight_shape`, `[channels_out, channels_in, kernel_height, kernel_width]`
fn weight_gradient_by_offsets<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    weight_shape: Shape,
    dilation: [usize; 2],
) -> FloatTensor<B> {
    let [batch, channels_in, rows, width_padded] = x.shape().dims();
    let [channels_out, _, kernel_height, kernel_width] = weight_shape.dims();
    let height_out = rows - 1 - dilation[0] * (kernel_height - 1);
    let width_out = width_padded - dilation[1] * (kernel_width - 1);
    let run = height_out * width_padded;

    let grad = B::float_reshape(
        grad,
        Shape::new([batch, channels_out, height_out, width_out]),
    );
    let grad = if width_out == width_padded {
        grad
    } else {
        let zeros = B::float_zeros(
            Shape::new([batch, channels_out, height_out, width_padded]),
            &B::float_device(&grad),
            grad.dtype().into(),
        );
        B::float_slice_assign(
            zeros,
            &[
                Slice::from(0..batch),
                Slice::from(0..channels_out),
                Slice::from(0..height_out),
                Slice::from(0..width_out),
            ],
            grad,
        )
    };
    let grad = B::float_reshape(grad, Shape::new([batch, channels_out, run])); // [b, c_out, run]
    let x = B::float_reshape(x, Shape::new([batch, channels_in, rows * width_padded]));

    let mut taps = Vec::with_capacity(kernel_height * kernel_width);
    for u in 0..kernel_height {
        for v in 0..kernel_width {
            let start = dilation[0] * u * width_padded + dilation[1] * v;
            let window = B::float_slice(
                x.clone(),
                &[
                    Slice::from(0..batch),
                    Slice::from(0..channels_in),
                    Slice::from(start..start + run),
                ],
            ); // [b, c_in, run]
            let window = B::float_swap_dims(window, 1, 2); // [b, run, c_in]
            let per_image = B::float_matmul(grad.clone(), window); // [b, c_out, c_in]
            let tap = B::float_sum_dim(per_image, 0); // [1, c_out, c_in]
            taps.push(B::float_reshape(
                tap,
                Shape::new([channels_out, channels_in, 1]),
            ));
        }
    }
    B::float_reshape(B::float_cat(taps, 2), weight_shape) // taps in (u, v) order
}

/// `dL/db`: the output gradient summed over the batch and every position.
///
/// # Shapes
/// - grad: `[batch, channels_out, height_out * width_out]`, from [`output_gradient_images`]
/// - output: `[channels_out]`
fn bias_gradient<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let [_, channels_out, _] = grad.shape().dims();
    let per_image = B::float_sum_dim(grad, 2); // [batch, channels_out, 1]
    B::float_reshape(B::float_sum_dim(per_image, 0), Shape::new([channels_out]))
}

/// [`ConvBackend::conv2d_fast`] on tensors, with the options `burn::tensor::module::conv2d`
/// takes: unequal padding on the two sides of an axis is applied to `x` first (its gradient is a
/// slice), since the backend op pads both sides alike.
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`
/// - weight: `[channels_out, channels_in / groups, kernel_height, kernel_width]`
/// - bias: `[channels_out]`
/// - output: `[batch, channels_out, height_out, width_out]`
///
/// # Panics
/// If `x` has not `groups` times the kernel's input channels.
pub fn conv2d_fast<B: ConvBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: impl Into<PaddedConvOptions<2>>,
) -> Tensor<B, 4> {
    let [_, channels_in, _, _] = x.dims();
    let [_, group_channels_in, _, _] = weight.dims();
    let padded: PaddedConvOptions<2> = options.into();
    let options = padded.options;
    assert_eq!(
        channels_in,
        group_channels_in * options.groups,
        "conv2d: the input has {channels_in} channels, the kernel expects {group_channels_in} \
         per group in {} groups",
        options.groups
    );
    let (x, options) = match padded.padding_end {
        Some([bottom, right]) => {
            let [top, left] = options.padding;
            let x = x.pad((left, right, top, bottom), PadMode::Constant(0.0));
            let options =
                ConvOptions::new(options.stride, [0, 0], options.dilation, options.groups);
            (x, options)
        }
        None => (x, options),
    };
    Tensor::from_primitive(TensorPrimitive::Float(B::conv2d_fast(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.map(|bias| bias.into_primitive().tensor()),
        options,
    )))
}

/// Whose convolution a [`Conv2d`] runs. Not saved in records: it is a choice of how to compute,
/// not part of the model.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ConvImplementation {
    /// [`conv2d_fast`]: this module's backward, a forward convolution and a matmul.
    Pdl,
    /// `burn::tensor::module::conv2d`, as `burn::nn::conv::Conv2d` runs it, to compare against.
    Burn,
}

/// Configuration of a [`Conv2d`]: the fields and defaults of `burn::nn::conv::Conv2dConfig`,
/// plus [`ConvImplementation`].
#[derive(Config, Debug)]
pub struct Conv2dConfig {
    /// Input and output channels, `[channels_in, channels_out]`.
    pub channels: [usize; 2],
    /// Kernel height and width.
    pub kernel_size: [usize; 2],
    /// Step between output positions, per axis.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Spacing between kernel taps, per axis.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Channel groups; each output channel sees `channels_in / groups` input channels.
    #[config(default = 1)]
    pub groups: usize,
    /// Zero padding of the input, as burn-nn resolves it (`Same` pads the bottom/right more when
    /// the total is odd).
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// Whether to add a learned bias per output channel.
    #[config(default = true)]
    pub bias: bool,
    /// Initialisation of the weight and bias; the default is burn-nn's, PyTorch's
    /// `kaiming_uniform_(a = sqrt(5))`, i.e. `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    #[config(
        default = "Initializer::KaimingUniform { gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false }"
    )]
    pub initializer: Initializer,
    /// Whose convolution to run.
    #[config(default = "ConvImplementation::Pdl")]
    pub implementation: ConvImplementation,
}

impl Conv2dConfig {
    /// Checks the invariants `init` relies on.
    pub fn validate(&self) -> Result<(), String> {
        let [channels_in, channels_out] = self.channels;
        if channels_in == 0 || channels_out == 0 || self.kernel_size.contains(&0) {
            return Err(format!(
                "conv2d channels and kernel size must be at least 1, got {:?} and {:?}",
                self.channels, self.kernel_size
            ));
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) || self.groups == 0 {
            return Err(format!(
                "conv2d stride, dilation and groups must be at least 1, got {:?}, {:?}, {}",
                self.stride, self.dilation, self.groups
            ));
        }
        if !channels_in.is_multiple_of(self.groups) || !channels_out.is_multiple_of(self.groups) {
            return Err(format!(
                "conv2d: channels {:?} are not both multiples of groups {}",
                self.channels, self.groups
            ));
        }
        Ok(())
    }

    /// Builds the module on `device`, with the weights burn-nn's `Conv2dConfig::init` draws (it
    /// is what draws them).
    ///
    /// # Panics
    /// If [`Conv2dConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let conv = self.burn_config().init::<B>(device);
        Conv2d::from(conv).with_implementation(self.implementation)
    }

    /// The same layer as a `burn::nn::conv::Conv2dConfig`.
    fn burn_config(&self) -> burn_conv::Conv2dConfig {
        burn_conv::Conv2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_padding(self.padding.clone())
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
    }
}

/// A 2-D convolution, `burn::nn::conv::Conv2d` with the fast backward of the module docs. The
/// fields are Burn's, in Burn's order, so a record saved from either loads into the other;
/// `implementation` is not saved.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct Conv2d<B: Backend> {
    /// `[channels_out, channels_in / groups, kernel_height, kernel_width]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[channels_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Step between output positions, per axis.
    pub stride: [usize; 2],
    /// Kernel height and width.
    pub kernel_size: [usize; 2],
    /// Spacing between kernel taps, per axis.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Zero padding of the input.
    pub padding: PaddingConfig2d,
    /// Whose convolution [`Conv2d::forward`] runs.
    pub implementation: ConvImplementation,
}

impl<B: Backend> Conv2d<B> {
    /// The same layer, running `implementation`.
    pub fn with_implementation(self, implementation: ConvImplementation) -> Self {
        Self {
            implementation,
            ..self
        }
    }
}

impl<B: ConvBackend> Conv2d<B> {
    /// The convolution, padded as burn-nn's `Conv2d` pads.
    ///
    /// # Shapes
    /// - input: `[batch, channels_in, height, width]`
    /// - output: `[batch, channels_out, height_out, width_out]`, with `height_out = (height +
    ///   pad_top + pad_bottom - dilation (kernel - 1) - 1) / stride + 1`, and likewise the width
    pub fn forward(&self, input: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, height, width] = input.dims();
        let (start, end) = resolve_padding(
            &self.padding,
            [height, width],
            self.kernel_size,
            self.stride,
        );
        let options =
            PaddedConvOptions::asymmetric(self.stride, start, end, self.dilation, self.groups);
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|bias| bias.val());
        match self.implementation {
            ConvImplementation::Pdl => conv2d_fast(input, weight, bias, options),
            ConvImplementation::Burn => conv2d(input, weight, bias, options),
        }
    }
}

impl<B: Backend> From<burn_conv::Conv2d<B>> for Conv2d<B> {
    /// Takes over Burn's layer, parameters and all, running [`ConvImplementation::Pdl`].
    fn from(conv: burn_conv::Conv2d<B>) -> Self {
        Self {
            weight: conv.weight,
            bias: conv.bias,
            stride: conv.stride,
            kernel_size: conv.kernel_size,
            dilation: conv.dilation,
            groups: conv.groups,
            padding: conv.padding,
            implementation: ConvImplementation::Pdl,
        }
    }
}

impl<B: Backend> From<Conv2d<B>> for burn_conv::Conv2d<B> {
    /// Hands the layer back to Burn, parameters and all.
    fn from(conv: Conv2d<B>) -> Self {
        Self {
            weight: conv.weight,
            bias: conv.bias,
            stride: conv.stride,
            kernel_size: conv.kernel_size,
            dilation: conv.dilation,
            groups: conv.groups,
            padding: conv.padding,
        }
    }
}

impl<B: Backend> ModuleDisplay for Conv2d<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds, plus the choice.
    fn custom_content(&self, content: Content) -> Option<Content> {
        let [channels_out, group_channels_in, _, _] = self.weight.dims();
        let ch_in = format!("{:?}", group_channels_in * self.groups);
        let ch_out = format!("{channels_out:?}");
        let stride = format!("{:?}", self.stride);
        let kernel_size = format!("{:?}", self.kernel_size);
        let dilation = format!("{:?}", self.dilation);
        content
            .add("ch_in", &ch_in)
            .add("ch_out", &ch_out)
            .add("stride", &stride)
            .add("kernel_size", &kernel_size)
            .add("dilation", &dilation)
            .add("groups", &self.groups)
            .add_debug_attribute("padding", &self.padding)
            .add_debug_attribute("implementation", &self.implementation)
            .optional()
    }
}

/// The zero padding `([top, left], [bottom, right])` burn-nn's `Conv2d` applies to an input of
/// `size = [height, width]` (its `calculate_padding_2d_pairs` is crate-private, so it is
/// repeated here, `Same` ignoring dilation as Burn's does).
fn resolve_padding(
    padding: &PaddingConfig2d,
    size: [usize; 2],
    kernel_size: [usize; 2],
    stride: [usize; 2],
) -> ([usize; 2], [usize; 2]) {
    match padding {
        PaddingConfig2d::Valid => ([0, 0], [0, 0]),
        PaddingConfig2d::Same => {
            let (top, bottom) = same_padding(kernel_size[0], stride[0], size[0]);
            let (left, right) = same_padding(kernel_size[1], stride[1], size[1]);
            ([top, left], [bottom, right])
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => ([*top, *left], [*bottom, *right]),
    }
}

/// burn-nn's `Same` padding of one axis: enough for `ceil(size / stride)` outputs, the odd one
/// at the end (the ONNX convention).
fn same_padding(kernel_size: usize, stride: usize, size: usize) -> (usize, usize) {
    let size_out = size.div_ceil(stride);
    let total = if size_out > 0 {
        ((size_out - 1) * stride + kernel_size).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

/// Relative tolerance of [`check_gradients`]: differences are measured against the largest
/// magnitude in Burn's tensor, since the two paths sum the same products in different orders.
pub const GRADIENT_TOLERANCE: f32 = 1e-4;

/// One layer shape of the parity grid of [`check_gradients`].
#[derive(Debug, Clone)]
pub struct ConvCase {
    /// Images in the batch.
    pub batch: usize,
    /// `[channels_in, channels_out]`.
    pub channels: [usize; 2],
    /// `[height, width]` of the input.
    pub size: [usize; 2],
    /// Kernel height and width.
    pub kernel_size: [usize; 2],
    /// Stride per axis.
    pub stride: [usize; 2],
    /// Dilation per axis.
    pub dilation: [usize; 2],
    /// Zero padding.
    pub padding: PaddingConfig2d,
    /// Channel groups.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Whether the input asks for a gradient (false for a first layer reading images).
    pub input_grad: bool,
}

impl ConvCase {
    /// The layer's configuration.
    pub fn config(&self) -> Conv2dConfig {
        Conv2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_padding(self.padding.clone())
            .with_bias(self.bias)
    }

    /// `[height_out, width_out]`, or `None` when the kernel does not fit the padded input.
    pub fn output_size(&self) -> Option<[usize; 2]> {
        let (start, end) = resolve_padding(&self.padding, self.size, self.kernel_size, self.stride);
        let axis = |a: usize| {
            let padded = self.size[a] + start[a] + end[a];
            let span = self.dilation[a] * self.kernel_size[a].checked_sub(1)? + 1;
            let room = padded.checked_sub(span)?;
            Some(room / self.stride[a] + 1)
        };
        Some([axis(0)?, axis(1)?])
    }
}

/// The parity grid: stride 1-3, padding none / symmetric / asymmetric / wider than the kernel
/// reaches, dilation 1-2, kernels 1-5 (square and not), batch 1 and 7, sizes around 9x11 (odd,
/// and even where the stride steps over a row), channels 1-16,
/// with and without bias and input gradient, and one grouped layer (Burn's fallback). Every case
/// has a non-empty output.
pub fn conv_cases() -> Vec<ConvCase> {
    let base = ConvCase {
        batch: 1,
        channels: [1, 1],
        size: [9, 11],
        kernel_size: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        padding: PaddingConfig2d::Valid,
        groups: 1,
        bias: true,
        input_grad: true,
    };
    let same_1 = PaddingConfig2d::Explicit(1, 1, 1, 1);
    vec![
        base.clone(),
        ConvCase {
            batch: 7,
            channels: [3, 16],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [16, 3],
            stride: [2, 2],
            ..base.clone()
        },
        ConvCase {
            channels: [3, 16],
            stride: [2, 2],
            padding: same_1.clone(),
            bias: false,
            ..base.clone()
        },
        // Stride 2 over an even height leaves a row the stride steps over (r = 1).
        ConvCase {
            batch: 7,
            channels: [3, 16],
            size: [10, 9],
            stride: [2, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [3, 3],
            kernel_size: [5, 5],
            ..base.clone()
        },
        ConvCase {
            channels: [16, 16],
            kernel_size: [5, 5],
            stride: [2, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [3, 16],
            dilation: [2, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            channels: [1, 3],
            stride: [2, 2],
            dilation: [2, 2],
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [3, 1],
            kernel_size: [1, 1],
            ..base.clone()
        },
        // Padding wider than a 1x1 kernel reaches: the border outputs read padding only.
        ConvCase {
            channels: [16, 3],
            kernel_size: [1, 1],
            stride: [2, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [3, 16],
            kernel_size: [5, 5],
            stride: [2, 2],
            dilation: [2, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [3, 16],
            kernel_size: [3, 5],
            stride: [2, 1],
            dilation: [1, 2],
            padding: PaddingConfig2d::Explicit(1, 2, 1, 2),
            ..base.clone()
        },
        ConvCase {
            channels: [3, 3],
            size: [10, 11],
            stride: [3, 2],
            padding: same_1.clone(),
            ..base.clone()
        },
        // Cropping and striding together: padding 3 around a 3x3 kernel at stride 2.
        ConvCase {
            channels: [3, 3],
            stride: [2, 2],
            padding: PaddingConfig2d::Explicit(3, 3, 3, 3),
            ..base.clone()
        },
        // Unequal sides: padded by hand before the backend op.
        ConvCase {
            batch: 7,
            channels: [3, 16],
            padding: PaddingConfig2d::Explicit(2, 1, 0, 3),
            ..base.clone()
        },
        ConvCase {
            channels: [3, 16],
            kernel_size: [2, 2],
            padding: PaddingConfig2d::Same,
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [16, 16],
            stride: [2, 2],
            padding: PaddingConfig2d::Same,
            ..base.clone()
        },
        ConvCase {
            batch: 7,
            channels: [4, 6],
            groups: 2,
            padding: same_1,
            ..base.clone()
        },
        // A first layer: LeNet's 5x5 convolution of images that need no gradient.
        ConvCase {
            batch: 7,
            channels: [1, 16],
            kernel_size: [5, 5],
            input_grad: false,
            ..base
        },
    ]
}

/// Runs every case of [`conv_cases`] through [`check_case`] on `device`, stopping at the first
/// disagreement.
///
/// # Errors
/// The first case whose output or gradients differ, with the first differing element.
pub fn check_gradients<B: AutodiffBackend + ConvBackend>(device: &B::Device) -> Result<(), String> {
    conv_cases()
        .iter()
        .try_for_each(|case| check_case::<B>(case, device))
}

/// Checks that [`ConvImplementation::Pdl`] and [`ConvImplementation::Burn`] agree on one layer:
/// the output, and the gradients of the input, weight and bias of `sum(output * r)` for a fixed
/// pseudo-random `r`, within [`GRADIENT_TOLERANCE`]. A case whose output would be empty passes.
///
/// # Errors
/// The first quantity that differs, with the first differing element.
pub fn check_case<B: AutodiffBackend + ConvBackend>(
    case: &ConvCase,
    device: &B::Device,
) -> Result<(), String> {
    let (Some(pdl), Some(burn)) = (
        run_implementation::<B>(case, ConvImplementation::Pdl, device),
        run_implementation::<B>(case, ConvImplementation::Burn, device),
    ) else {
        return Ok(());
    };
    compare_runs(case, pdl, burn)
}

/// Checks that [`ConvImplementation::Pdl`] computes the same on backend `B` as on backend `R`
/// (the reference) for one layer, as [`check_case`] compares it with Burn's: for a backend whose
/// own convolution gradient is the odd one out.
///
/// # Errors
/// The first quantity that differs, with the first differing element.
pub fn check_case_against<B, R>(
    case: &ConvCase,
    device: &B::Device,
    reference: &R::Device,
) -> Result<(), String>
where
    B: AutodiffBackend + ConvBackend,
    R: AutodiffBackend + ConvBackend,
{
    let (Some(ours), Some(theirs)) = (
        run_implementation::<B>(case, ConvImplementation::Pdl, device),
        run_implementation::<R>(case, ConvImplementation::Pdl, reference),
    ) else {
        return Ok(());
    };
    compare_runs(case, ours, theirs)
}

fn compare_runs(case: &ConvCase, pdl: ConvRun, burn: ConvRun) -> Result<(), String> {
    compare(case, "output", Some(pdl.output), Some(burn.output))?;
    compare(case, "input gradient", pdl.input, burn.input)?;
    compare(case, "weight gradient", pdl.weight, burn.weight)?;
    compare(case, "bias gradient", pdl.bias, burn.bias)
}

/// One layer of `case` with fixed pseudo-random weights, input and upstream gradient (the same
/// values on every backend), run by `implementation`; `None` when the output would be empty.
fn run_implementation<B: AutodiffBackend + ConvBackend>(
    case: &ConvCase,
    implementation: ConvImplementation,
    device: &B::Device,
) -> Option<ConvRun> {
    let [height_out, width_out] = case.output_size()?;
    let [channels_in, channels_out] = case.channels;
    let [height, width] = case.size;
    let mut rng = SplitMix64::new(2024);

    let mut conv = case.config().init::<B>(device);
    // Fixed, asymmetric values: a constant kernel would hide a missing flip.
    conv.weight = Param::from_tensor(pseudo_random(&mut rng, conv.weight.dims(), device));
    conv.bias = conv
        .bias
        .map(|bias| Param::from_tensor(pseudo_random(&mut rng, bias.dims(), device)));
    let x = pseudo_random::<B, 4>(&mut rng, [case.batch, channels_in, height, width], device);
    let upstream = pseudo_random::<B, 4>(
        &mut rng,
        [case.batch, channels_out, height_out, width_out],
        device,
    );
    Some(run_case(
        &conv.with_implementation(implementation),
        x,
        upstream,
        case.input_grad,
    ))
}

/// What one implementation computed for a [`ConvCase`].
struct ConvRun {
    output: TensorData,
    input: Option<TensorData>,
    weight: Option<TensorData>,
    bias: Option<TensorData>,
}

fn run_case<B: AutodiffBackend + ConvBackend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    upstream: Tensor<B, 4>,
    input_grad: bool,
) -> ConvRun {
    let x = if input_grad { x.require_grad() } else { x };
    let output = conv.forward(x.clone());
    let grads = (output.clone() * upstream).sum().backward();
    ConvRun {
        output: output.into_data(),
        input: x.grad(&grads).map(|grad| grad.into_data()),
        weight: conv.weight.grad(&grads).map(|grad| grad.into_data()),
        bias: conv
            .bias
            .as_ref()
            .and_then(|bias| bias.grad(&grads))
            .map(|grad| grad.into_data()),
    }
}

fn compare(
    case: &ConvCase,
    what: &str,
    pdl: Option<TensorData>,
    burn: Option<TensorData>,
) -> Result<(), String> {
    let (pdl, burn) = match (pdl, burn) {
        (None, None) => return Ok(()),
        (Some(pdl), Some(burn)) => (pdl, burn),
        (pdl, burn) => {
            return Err(format!(
                "{case:?}: {what}: pdl computed one: {}, burn computed one: {}",
                pdl.is_some(),
                burn.is_some()
            ));
        }
    };
    if pdl.shape != burn.shape {
        return Err(format!(
            "{case:?}: {what}: pdl shape {:?}, burn shape {:?}",
            pdl.shape, burn.shape
        ));
    }
    let values = |data: TensorData| {
        data.convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{case:?}: {what}: {e:?}"))
    };
    let (pdl, burn) = (values(pdl)?, values(burn)?);
    let scale = burn.iter().fold(1.0f32, |max, v| max.max(v.abs()));
    let tolerance = GRADIENT_TOLERANCE * scale;
    match pdl
        .iter()
        .zip(&burn)
        .position(|(p, b)| !within(*p, *b, tolerance))
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "{case:?}: {what} differs at flat index {i}: pdl {}, burn {} (tolerance {tolerance})",
            pdl[i], burn[i]
        )),
    }
}

/// False for NaN, which a plain `>` comparison would let through.
fn within(a: f32, b: f32, tolerance: f32) -> bool {
    (a - b).abs() <= tolerance
}

fn pseudo_random<B: Backend, const D: usize>(
    rng: &mut SplitMix64,
    dims: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| rng.symmetric(1.0))
        .collect();
    Tensor::from_data(TensorData::new(values, dims), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::Tolerance;

    type Inner = NdArray;
    type B = Autodiff<Inner>;
    type Mpk = NamedMpkBytesRecorder<FullPrecisionSettings>;

    #[test]
    fn pdl_matches_burn_on_the_grid() {
        if let Err(e) = check_gradients::<B>(&Default::default()) {
            panic!("{e}");
        }
    }

    /// The host kernels (ndarray and flex) and the device path (the GPU backends: a convolution for
    /// the input gradient, per-tap matmuls against strided views for the weight gradient) give the
    /// same gradients; `pdl_matches_burn_on_the_grid` runs the host path, and here the device path
    /// runs on the CPU too.
    #[test]
    fn host_and_device_gradients_agree_on_the_grid() {
        let device = Default::default();
        let mut rng = SplitMix64::new(3);
        for case in conv_cases().iter().filter(|case| case.groups == 1) {
            let Some([height_out, width_out]) = case.output_size() else {
                continue;
            };
            let (start, end) =
                resolve_padding(&case.padding, case.size, case.kernel_size, case.stride);
            if start != end {
                continue; // unequal sides are padded onto the input before either path
            }
            let [channels_in, channels_out] = case.channels;
            let [height, width] = case.size;
            let x = pseudo_random::<Inner, 4>(
                &mut rng,
                [case.batch, channels_in, height, width],
                &device,
            );
            let weight = pseudo_random::<Inner, 4>(
                &mut rng,
                [
                    channels_out,
                    channels_in,
                    case.kernel_size[0],
                    case.kernel_size[1],
                ],
                &device,
            );
            let grad = pseudo_random::<Inner, 4>(
                &mut rng,
                [case.batch, channels_out, height_out, width_out],
                &device,
            );
            let options = ConvOptions::new(case.stride, start, case.dilation, 1);
            let (x, weight, grad) = (
                x.into_primitive().tensor(),
                weight.into_primitive().tensor(),
                grad.into_primitive().tensor(),
            );
            let data = |t: FloatTensor<Inner>| {
                Tensor::<Inner, 4>::from_primitive(TensorPrimitive::Float(t)).into_data()
            };
            let host_dw = host::weight_gradient::<Inner>(&x, &grad, &weight.shape(), &options)
                .expect("ndarray lends f32 values");
            let device_dw = weight_gradient::<Inner>(
                x.clone(),
                output_gradient_images::<Inner>(grad.clone()),
                weight.shape(),
                &options,
            );
            compare(
                case,
                "weight gradient",
                Some(data(host_dw)),
                Some(data(device_dw)),
            )
            .unwrap();
            let host_dx = host::input_gradient::<Inner>(&x.shape(), &weight, &grad, &options)
                .expect("ndarray lends f32 values");
            let device_dx = input_gradient::<Inner>(x.shape(), weight.clone(), grad, &options);
            compare(
                case,
                "input gradient",
                Some(data(host_dx)),
                Some(data(device_dx)),
            )
            .unwrap();
        }
    }

    /// ndarray's convolution returns channels-last maps, which the next layer's host kernels read
    /// through their strides.
    #[test]
    fn a_channels_last_input_gives_the_same_gradients() {
        let device = Default::default();
        let case = &conv_cases()[1]; // batch 7, 3 -> 16 channels, padding 1
        let [channels_in, _] = case.channels;
        let [height, width] = case.size;
        let mut rng = SplitMix64::new(9);
        let nhwc =
            pseudo_random::<B, 4>(&mut rng, [case.batch, height, width, channels_in], &device);
        let nchw =
            Tensor::<B, 4>::from_data(nhwc.clone().permute([0, 3, 1, 2]).into_data(), &device);
        let mut conv = case.config().init::<B>(&device);
        conv.weight = Param::from_tensor(pseudo_random(&mut rng, conv.weight.dims(), &device));
        let upstream_dims = {
            let [h, w] = case.output_size().unwrap();
            [case.batch, case.channels[1], h, w]
        };
        let upstream = pseudo_random::<B, 4>(&mut rng, upstream_dims, &device);
        let strided = run_case(&conv, nhwc.permute([0, 3, 1, 2]), upstream.clone(), true);
        let dense = run_case(&conv, nchw, upstream, true);
        compare(case, "output", Some(strided.output), Some(dense.output)).unwrap();
        compare(case, "input gradient", strided.input, dense.input).unwrap();
        compare(case, "weight gradient", strided.weight, dense.weight).unwrap();
    }

    #[test]
    fn every_grid_case_has_an_output() {
        for case in conv_cases() {
            assert!(case.output_size().is_some(), "{case:?}");
        }
    }

    #[test]
    fn an_input_seen_only_through_padding_gets_no_gradient() {
        // Height 1 padded by 2 on each side and read every 4th row: both output rows read only
        // padding, so nothing flows back to the input or the weight, and the bias gets 1 per
        // output position.
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [1, 1])
            .with_stride([4, 4])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init::<B>(&device);
        let x = Tensor::<B, 4>::ones([1, 2, 1, 3], &device).require_grad();
        let output = conv.forward(x.clone());
        assert_eq!(output.dims(), [1, 3, 2, 2]);

        let grads = output.sum().backward();
        let values = |t: Tensor<Inner, 4>| t.into_data().to_vec::<f32>().unwrap();
        let x_grad = values(x.grad(&grads).unwrap());
        let weight_grad = values(conv.weight.grad(&grads).unwrap());
        assert!(x_grad.iter().chain(&weight_grad).all(|g| g.abs() < 1e-12));
        let bias_grad = conv.bias.as_ref().unwrap().grad(&grads).unwrap();
        let bias_grad = bias_grad.into_data().to_vec::<f32>().unwrap();
        assert!(
            bias_grad.iter().all(|g| (g - 4.0).abs() < 1e-6),
            "{bias_grad:?}"
        );
    }

    /// `module` with its parameters drawn once: Burn initialises them lazily, so two clones of a
    /// fresh module would each draw their own.
    fn drawn<M: Module<Inner>>(module: M) -> M {
        let record = module.clone().into_record();
        module.load_record(record)
    }

    fn images(channels: usize) -> Tensor<Inner, 4> {
        let mut rng = SplitMix64::new(7);
        pseudo_random(&mut rng, [2, channels, 9, 11], &Default::default())
    }

    #[test]
    fn records_load_both_ways_between_burn_and_pdl() {
        let device = Default::default();
        let config = Conv2dConfig::new([3, 4], [3, 3]).with_padding(PaddingConfig2d::Same);
        let recorder = Mpk::default();

        let burns = drawn(config.burn_config().init::<Inner>(&device));
        let bytes = <Mpk as Recorder<Inner>>::record(&recorder, burns.clone().into_record(), ())
            .expect("Burn's conv record saves");
        let record: Conv2dRecord<Inner> = <Mpk as Recorder<Inner>>::load(&recorder, bytes, &device)
            .expect("Burn's conv record loads as ours");
        let ours = config.init::<Inner>(&device).load_record(record);
        ours.forward(images(3))
            .into_data()
            .assert_approx_eq::<f32>(&burns.forward(images(3)).into_data(), Tolerance::default());

        let bytes = <Mpk as Recorder<Inner>>::record(&recorder, ours.clone().into_record(), ())
            .expect("our conv record saves");
        let record: <burn_conv::Conv2d<Inner> as Module<Inner>>::Record =
            <Mpk as Recorder<Inner>>::load(&recorder, bytes, &device)
                .expect("our conv record loads as Burn's");
        let back = config
            .burn_config()
            .init::<Inner>(&device)
            .load_record(record);
        back.forward(images(3))
            .into_data()
            .assert_approx_eq::<f32>(&ours.forward(images(3)).into_data(), Tolerance::default());
    }

    #[test]
    fn loading_a_record_keeps_the_implementation() {
        let device = Default::default();
        let config = Conv2dConfig::new([3, 4], [3, 3]);
        let pdl = drawn(config.init::<Inner>(&device));
        let burn = config
            .clone()
            .with_implementation(ConvImplementation::Burn)
            .init::<Inner>(&device)
            .load_record(pdl.clone().into_record());
        assert_eq!(burn.implementation, ConvImplementation::Burn);
        burn.forward(images(3))
            .into_data()
            .assert_approx_eq::<f32>(&pdl.forward(images(3)).into_data(), Tolerance::default());
    }

    #[test]
    fn from_burn_keeps_the_parameters() {
        let device = Default::default();
        let burns = drawn(
            Conv2dConfig::new([3, 5], [5, 3])
                .with_stride([2, 1])
                .burn_config()
                .init::<Inner>(&device),
        );
        let ours = Conv2d::from(burns.clone());
        assert_eq!(ours.implementation, ConvImplementation::Pdl);
        assert_eq!(ours.num_params(), burns.num_params());
        ours.forward(images(3))
            .into_data()
            .assert_approx_eq::<f32>(&burns.forward(images(3)).into_data(), Tolerance::default());
    }

    #[test]
    fn display_names_the_implementation() {
        let conv = Conv2dConfig::new([3, 4], [3, 3]).init::<Inner>(&Default::default());
        let text = format!("{conv}");
        assert!(text.contains("implementation: Pdl"), "{text}");
        assert!(text.contains("params: 112"), "{text}"); // 4 * 3 * 9 + 4
    }

    #[test]
    fn config_rejects_groups_that_do_not_divide_the_channels() {
        let config = Conv2dConfig::new([3, 4], [3, 3]).with_groups(2);
        assert!(config.validate().is_err());
    }

    #[test]
    fn config_rejects_a_zero_stride() {
        let config = Conv2dConfig::new([3, 4], [3, 3]).with_stride([0, 1]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn config_rejects_an_empty_kernel() {
        let config = Conv2dConfig::new([3, 4], [0, 3]);
        assert!(config.validate().is_err());
    }
}

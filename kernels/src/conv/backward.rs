//! The convolution's backward pass (the maths of [`crate::conv`]'s docs) as a custom autodiff op:
//! [`autodiff_conv2d`] records the forward of `Autodiff<B>` with its inputs checkpointed, and
//! [`conv2d_gradients`] computes the three gradients from them, on the host
//! ([`super::host`]) for the CPU backends, and as a forward convolution plus per-tap matmuls
//! against strided views on the GPU backends, whose tensors never leave the device.

use crate::KernelBackend;
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps, UnfoldOptions};
use burn::tensor::{FloatDType, Slice, TensorMetadata};

/// The convolution of `Autodiff<B, C>` with the backward of this file: the forward is `B`'s
/// fast one ([`KernelBackend::conv2d_fast`]), and the inputs are checkpointed for the backward.
pub(crate) fn autodiff_conv2d<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    // Grouped convolutions keep Burn's own backward: the im2col matmul below is written for
    // one group, and no model of the course uses groups.
    if options.groups != 1 {
        return <Autodiff<B, C> as ModuleOps<Autodiff<B, C>>>::conv2d(x, weight, bias, options);
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
                let output = B::conv2d_fast(x.primitive, weight.primitive, None, options.clone());
                prep.finish((x_state, weight_state, options), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_fast(x.primitive, weight.primitive, None, options))
            }
        },
    }
}

/// The backward step of a convolution with a bias; parents `[x, weight, bias]`.
#[derive(Debug)]
struct PdlConv2dWithBias;

/// The backward step of a convolution without a bias; parents `[x, weight]`.
#[derive(Debug)]
struct PdlConv2dNoBias;

impl<B: KernelBackend> Backward<B, 3> for PdlConv2dWithBias {
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

impl<B: KernelBackend> Backward<B, 2> for PdlConv2dNoBias {
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
fn conv2d_backward<B: KernelBackend>(
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
fn conv2d_gradients<B: KernelBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: &ConvOptions<2>,
    wanted: Wanted,
) -> ConvGradients<B> {
    let input = wanted.input.then(|| {
        let on_host = B::HOST_KERNELS
            .then(|| super::host::input_gradient::<B>(&x.shape(), &weight, &grad, options))
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
        .then(|| super::host::weight_gradient::<B>(&x, &grad, &weight.shape(), options))
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
fn input_gradient<B: KernelBackend>(
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::{compare, conv_cases, pseudo_random};
    use crate::rng::SplitMix64;
    use burn::backend::NdArray;
    use burn::tensor::TensorPrimitive;

    type Inner = NdArray;

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
            let (start, end) = super::super::resolve_padding(
                &case.padding,
                case.size,
                case.kernel_size,
                case.stride,
            );
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
            let host_dw =
                super::super::host::weight_gradient::<Inner>(&x, &grad, &weight.shape(), &options)
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
            let host_dx =
                super::super::host::input_gradient::<Inner>(&x.shape(), &weight, &grad, &options)
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
}

//! The convolution's forward pass on tensors: the padding that burn-nn's `Conv2d` applies, then
//! the backend's fast convolution ([`KernelBackend::conv2d_fast`]) where it has one.

use crate::KernelBackend;
use crate::backend::Op;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode, PaddedConvOptions};
/// The convolution of [`crate::conv`]'s docs on tensors of any backend: [`KernelBackend::conv2d_fast`]
/// on a backend of this crate (with the written-out backward under `Autodiff`), Burn's
/// `conv2d` on any other. The options are those `burn::tensor::module::conv2d`
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
pub fn conv2d_fast<B: Backend>(
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
    crate::backend::run::<Conv2dOp, B>(Conv2dArgs {
        x,
        weight,
        bias,
        options,
    })
}

/// The arguments of one convolution, padded alike on both sides.
struct Conv2dArgs<B: Backend> {
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
}

/// [`conv2d_fast`] as an [`Op`]: the backend's fast convolution, or Burn's.
struct Conv2dOp;

impl Op for Conv2dOp {
    type Args<B: Backend> = Conv2dArgs<B>;
    type Output<B: Backend> = Tensor<B, 4>;

    fn fast<F: KernelBackend>(args: Conv2dArgs<F>) -> Tensor<F, 4> {
        Tensor::from_primitive(TensorPrimitive::Float(F::conv2d_fast(
            args.x.into_primitive().tensor(),
            args.weight.into_primitive().tensor(),
            args.bias.map(|bias| bias.into_primitive().tensor()),
            args.options,
        )))
    }

    fn reference<B: Backend>(args: Conv2dArgs<B>) -> Tensor<B, 4> {
        conv2d(args.x, args.weight, args.bias, args.options)
    }
}

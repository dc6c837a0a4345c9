//! A 2-D convolution whose backward pass is written out as one forward convolution and one
//! matrix product (d2l.ai ch. 7, "Convolutional Neural Networks"), a drop-in for
//! `burn::nn::conv::Conv2d` with the same fields and records.
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
//! [`crate::KernelBackend`], and picked inside the op by the backend's type
//! (`crate::backend`): a model calls `self.conv.forward(x)` on any `B: Backend`.
//!
//! On the CPU backends ([`crate::KernelBackend::HOST_KERNELS`]) the same maths runs as im2col / col2im on
//! the host around one large matmul per chunk of images (`conv/host.rs`): the weight gradient as
//! `patches x gradient`, the input gradient as `kernel^T x gradient` added back onto the input
//! (col2im, which needs no spread or padded copy of the gradient), and on `flex` the forward
//! pass as `kernel x patches`. The tensors' values are read where they lie, in whatever layout
//! the previous op left them (ndarray's convolution returns channels-last maps). With
//! [`crate::MaxPool2d`] and [`crate::Dropout`] this brings the classic MNIST net's training step on
//! both CPU backends to 0.64-0.87x PyTorch's on the same 2 cores; the README's "Which CPU backend
//! is the default" has the measurements.
//!
//! [`Conv2d`] has the fields of `burn::nn::conv::Conv2d`, so records load either way, plus
//! [`ConvImplementation`], which picks this path or Burn's own to compare against;
//! `parity.rs` (behind the `parity` feature) checks the output and all three gradients against
//! Burn's over a grid of shapes, run here on `ndarray` and by `pdl-tests` on the other backends.
//!
//! The files follow Burn's custom-kernel example: `forward.rs` (the op on tensors and its
//! dispatch), `backward.rs` (the autodiff op and the gradients) and `host.rs` (im2col and
//! col2im around the host gemm).

use burn::module::{Content, DisplaySettings, Initializer, ModuleDisplay, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv as burn_conv;
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::PaddedConvOptions;

pub(crate) mod backward;
mod forward;
pub(crate) mod host;

pub use forward::conv2d_fast;
/// Whose convolution a [`Conv2d`] runs. Not saved in records: it is a choice of how to compute,
/// not part of the model.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ConvImplementation {
    /// [`conv2d_fast`]: the written-out backward, a forward convolution and a matmul.
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

impl<B: Backend> Conv2d<B> {
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
        crate::one_line_display()
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
pub(crate) fn resolve_padding(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::pseudo_random;
    use crate::rng::SplitMix64;
    use burn::backend::{Autodiff, NdArray};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::Tolerance;

    type Inner = NdArray;
    type B = Autodiff<Inner>;
    type Mpk = NamedMpkBytesRecorder<FullPrecisionSettings>;

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

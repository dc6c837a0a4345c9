//! Parity checks of this crate's ops against Burn's: the convolution's output and three
//! gradients over a grid of layer shapes ([`check_gradients`]), max pooling over a grid of
//! windows ([`check_pool`]), and batch norm over ranks and layouts ([`check_batch_norm`],
//! [`check_batch_norm_inference`]). Public behind the `parity` feature so that `pdl-tests` runs them on
//! every backend (flex, and wgpu on software Vulkan in CI); the unit tests here run them on
//! ndarray.

mod adamw;
mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod lstm;

pub use adamw::check_adamw;
pub use attention::{attention_reference, check_attention};
pub use gelu::check_gelu;
pub use layer_norm::check_layer_norm;
pub use linear::check_linear;
pub use lstm::{check_lstm, lstm_reference};

use crate::conv::{Conv2d, Conv2dConfig, ConvImplementation, resolve_padding};
use crate::norm::BatchNormConfig;
use crate::pool::MaxPool2dConfig;
use crate::rng::SplitMix64;
use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;

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
        // Large enough that im2col, col2im and the layout copies run on all cores, over two
        // chunks of images (see `conv::host`).
        ConvCase {
            batch: 20,
            channels: [8, 16],
            size: [32, 33],
            padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
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
pub fn check_gradients<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
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
pub fn check_case<B: AutodiffBackend>(case: &ConvCase, device: &B::Device) -> Result<(), String> {
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
    B: AutodiffBackend,
    R: AutodiffBackend,
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
fn run_implementation<B: AutodiffBackend>(
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

fn run_case<B: AutodiffBackend>(
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

pub(crate) fn compare(
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
    compare_values(&format!("{case:?}"), what, pdl, burn, Agreement::Close)
}

/// False for NaN, which a plain `>` comparison would let through.
fn within(a: f32, b: f32, tolerance: f32) -> bool {
    (a - b).abs() <= tolerance
}

pub(crate) fn pseudo_random<B: Backend, const D: usize>(
    rng: &mut SplitMix64,
    dims: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| rng.symmetric(1.0))
        .collect();
    Tensor::from_data(TensorData::new(values, dims), device)
}

/// The windows of [`check_pool`]'s grid, as `(kernel, stride, padding, dilation)`.
const POOL_CASES: [(usize, usize, usize, usize); 6] = [
    (2, 2, 0, 1), // the course's pool: the 2x2 fast path
    (2, 1, 0, 1),
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (3, 2, 1, 2),
    (3, 3, 0, 1),
];

/// Checks that [`crate::MaxPool2d`] agrees with Burn's `MaxPool2d::forward` on backend `B` over a grid
/// of windows (kernel 2-3, stride 1-3, padding 0-1, dilation 1-2) on odd and even map sizes, with
/// the input channels-first and channels-last in memory: the output, and the input gradient of
/// `sum(output * r)` for a fixed pseudo-random `r`.
///
/// # Errors
/// The first case whose output or gradient differs, with the first differing element.
pub fn check_pool<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    let mut rng = SplitMix64::new(11);
    for (kernel, stride, padding, dilation) in POOL_CASES {
        // The last size's maps are large enough to be pooled on all cores.
        for size in [[9, 11], [8, 8], [150, 151]] {
            for channels_last in [false, true] {
                let case = format!(
                    "kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}, \
                     {size:?}, channels-last {channels_last}"
                );
                let pool = MaxPool2dConfig::new([kernel, kernel])
                    .with_strides([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(
                        padding, padding, padding, padding,
                    ))
                    .with_dilation([dilation, dilation])
                    .init();
                let dims = [2, 3, size[0], size[1]];
                let values: Vec<f32> = (0..dims.iter().product::<usize>())
                    .map(|_| rng.symmetric(1.0))
                    .collect();
                let x = if channels_last {
                    let [n, c, h, w] = dims;
                    Tensor::<B, 4>::from_data(TensorData::new(values, [n, h, w, c]), device)
                        .permute([0, 3, 1, 2])
                } else {
                    Tensor::<B, 4>::from_data(TensorData::new(values, dims), device)
                };
                let run = |ours: bool| {
                    let x = x.clone().require_grad();
                    let y = if ours {
                        pool.forward(x.clone())
                    } else {
                        burn::nn::pool::MaxPool2d::from(pool.clone()).forward(x.clone())
                    };
                    let mut rng = SplitMix64::new(5);
                    let r: Vec<f32> = (0..y.shape().num_elements())
                        .map(|_| rng.symmetric(1.0))
                        .collect();
                    let r = Tensor::<B, 4>::from_data(TensorData::new(r, y.shape()), device);
                    let grads = (y.clone() * r).sum().backward();
                    let dx = x.grad(&grads).map(|g| g.into_data());
                    (y.into_data(), dx)
                };
                let (ours, burns) = (run(true), run(false));
                compare_values(&case, "output", ours.0, burns.0, Agreement::Exact)?;
                let gradients = ([ours.1], [burns.1]);
                compare_gradients(&case, ["input"], gradients, Agreement::Exact)?;
            }
        }
    }
    Ok(())
}

/// Checks that [`crate::BatchNorm`] in training agrees with burn-nn's `BatchNorm` on backend `B`
/// for inputs of rank 2, 3 and 4, the last also channels-last in memory, with `gamma` and `beta`
/// away from 1 and 0: the output, the gradients of the input, `gamma` and `beta` for
/// `sum(output * r)` with a fixed pseudo-random `r`, and the running statistics after two steps.
///
/// # Errors
/// The first case whose output, gradient or statistic differs, with the first differing element.
pub fn check_batch_norm<B: AutodiffBackend>(device: &B::Device) -> Result<(), String> {
    let mut rng = SplitMix64::new(17);
    let cases: [(&str, Vec<usize>, bool); 4] = [
        ("rank 2", vec![8, 5], false),
        ("rank 3", vec![4, 3, 7], false),
        ("rank 4", vec![4, 3, 5, 6], false),
        ("rank 4 channels-last", vec![4, 3, 5, 6], true),
    ];
    for (case, dims, channels_last) in cases {
        let channels = dims[1];
        let values: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| 3.0 + rng.symmetric(2.0))
            .collect();
        let scale: Vec<f32> = (0..channels).map(|_| 1.0 + rng.symmetric(0.5)).collect();
        let shift: Vec<f32> = (0..channels).map(|_| rng.symmetric(0.5)).collect();
        let mut norm = BatchNormConfig::new(channels).init::<B>(device);
        norm.gamma = Param::from_tensor(Tensor::from_floats(scale.as_slice(), device));
        norm.beta = Param::from_tensor(Tensor::from_floats(shift.as_slice(), device));
        let r: Vec<f32> = (0..values.len()).map(|_| rng.symmetric(1.0)).collect();
        let run = |ours: bool| -> Result<[TensorData; 6], String> {
            let norm = norm.clone().no_grad().fork(device);
            let norm = BatchNormConfig::new(channels)
                .init::<B>(device)
                .load_record(norm.into_record());
            let burns: burn::nn::BatchNorm<B> = norm.clone().into();
            let x = match (dims.as_slice(), channels_last) {
                (&[n, c, h, w], true) => {
                    Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [n, h, w, c]), device)
                        .permute([0, 3, 1, 2])
                }
                _ => Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape([
                    dims[0],
                    dims[1],
                    dims.get(2).copied().unwrap_or(1),
                    dims.get(3).copied().unwrap_or(1),
                ]),
            }
            .require_grad();
            let forward = |x: Tensor<B, 4>| -> Tensor<B, 4> {
                match dims.len() {
                    2 => {
                        let [n, c, _, _] = x.dims();
                        let x = x.reshape([n, c]);
                        let y = if ours {
                            norm.forward(x)
                        } else {
                            burns.forward(x)
                        };
                        y.reshape([n, c, 1, 1])
                    }
                    3 => {
                        let [n, c, l, _] = x.dims();
                        let x = x.reshape([n, c, l]);
                        let y = if ours {
                            norm.forward(x)
                        } else {
                            burns.forward(x)
                        };
                        y.reshape([n, c, l, 1])
                    }
                    _ if ours => norm.forward(x),
                    _ => burns.forward(x),
                }
            };
            let y = forward(x.clone());
            let r = Tensor::<B, 4>::from_data(TensorData::new(r.clone(), y.shape()), device);
            let grads = (y.clone() * r).sum().backward();
            let grad = |t: Option<Tensor<B::InnerBackend, 1>>| {
                t.map(|t| t.into_data())
                    .ok_or_else(|| format!("{case}: a parameter has no gradient"))
            };
            let dx = x
                .grad(&grads)
                .ok_or_else(|| format!("{case}: the input has no gradient"))?
                .into_data();
            let dgamma = grad(norm.gamma.grad(&grads))?;
            let dbeta = grad(norm.beta.grad(&grads))?;
            // A second step, so the running statistics move twice.
            forward(x.detach());
            Ok([
                y.into_data(),
                dx,
                dgamma,
                dbeta,
                norm.running_mean.value().into_data(),
                norm.running_var.value().into_data(),
            ])
        };
        let (ours, burns) = (run(true)?, run(false)?);
        let names = [
            "output",
            "input gradient",
            "gamma gradient",
            "beta gradient",
            "running mean",
            "running variance",
        ];
        for ((what, ours), burns) in names.into_iter().zip(ours).zip(burns) {
            compare_values(case, what, ours, burns, Agreement::Close)?;
        }
    }
    Ok(())
}

/// Checks that [`crate::BatchNorm`] in inference agrees with burn-nn's `BatchNorm` on backend `B`
/// (not an autodiff one) for inputs of rank 2 and 4, the last also channels-last in memory, with
/// parameters and running statistics away from their initial values.
///
/// # Errors
/// The first case whose output differs, with the first differing element.
pub fn check_batch_norm_inference<B: Backend>(device: &B::Device) -> Result<(), String> {
    let mut rng = SplitMix64::new(23);
    for (case, dims, channels_last) in [
        ("rank 2", [8, 5, 1, 1], false),
        ("rank 4", [4, 3, 5, 6], false),
        ("rank 4 channels-last", [4, 3, 5, 6], true),
    ] {
        let [n, c, h, w] = dims;
        let mut channel = |centre: f32, spread: f32| {
            let values: Vec<f32> = (0..c).map(|_| centre + rng.symmetric(spread)).collect();
            Tensor::<B, 1>::from_floats(values.as_slice(), device)
        };
        let mut norm = BatchNormConfig::new(c).init::<B>(device);
        norm.gamma = Param::from_tensor(channel(1.0, 0.5));
        norm.beta = Param::from_tensor(channel(0.0, 0.5));
        norm.running_mean = burn::module::RunningState::new(channel(2.0, 1.0));
        norm.running_var = burn::module::RunningState::new(channel(1.5, 1.0));
        let values: Vec<f32> = (0..n * c * h * w).map(|_| rng.symmetric(3.0)).collect();
        let x = if channels_last {
            Tensor::<B, 4>::from_data(TensorData::new(values, [n, h, w, c]), device)
                .permute([0, 3, 1, 2])
        } else {
            Tensor::<B, 4>::from_data(TensorData::new(values, dims), device)
        };
        let burns: burn::nn::BatchNorm<B> = norm.clone().into();
        let (ours, theirs) = if case == "rank 2" {
            let x = x.reshape([n, c]);
            (
                norm.forward(x.clone()).into_data(),
                burns.forward(x).into_data(),
            )
        } else {
            (
                norm.forward(x.clone()).into_data(),
                burns.forward(x).into_data(),
            )
        };
        compare_values(case, "output", ours, theirs, Agreement::Close)?;
    }
    Ok(())
}

/// How closely two results must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agreement {
    /// Within [`GRADIENT_TOLERANCE`] of the largest magnitude in Burn's: the same sums in
    /// another order.
    Close,
    /// Equal, NaN where Burn has NaN: values picked, not computed (pooling).
    Exact,
    /// Within ten times [`GRADIENT_TOLERANCE`] of the largest magnitude: where Burn's side is a
    /// chain of ops that rounds at each (layer norm's input gradient passes through nine).
    Loose,
}

/// Compares gradients, named by what they are the gradients of: each present on both sides and
/// agreeing, or absent on both.
fn compare_gradients<const N: usize>(
    case: &str,
    names: [&str; N],
    (ours, burns): ([Option<TensorData>; N], [Option<TensorData>; N]),
    agreement: Agreement,
) -> Result<(), String> {
    for ((name, ours), burns) in names.into_iter().zip(ours).zip(burns) {
        let what = format!("gradient of {name}");
        match (ours, burns) {
            (Some(a), Some(b)) => compare_values(case, &what, a, b, agreement)?,
            (None, None) => {}
            (a, b) => {
                return Err(format!(
                    "{case}: {what}: ours {}, Burn's {}",
                    a.is_some(),
                    b.is_some()
                ));
            }
        }
    }
    Ok(())
}

/// Compares our result with Burn's, element by element.
fn compare_values(
    case: &str,
    what: &str,
    ours: TensorData,
    burns: TensorData,
    agreement: Agreement,
) -> Result<(), String> {
    if ours.shape != burns.shape {
        return Err(format!(
            "{case}: {what}: shape {:?}, Burn's {:?}",
            ours.shape, burns.shape
        ));
    }
    let values = |data: TensorData| {
        data.convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{case}: {what}: {e:?}"))
    };
    let (ours, burns) = (values(ours)?, values(burns)?);
    let largest = burns.iter().fold(1.0f32, |max, v| max.max(v.abs()));
    let tolerance = match agreement {
        Agreement::Close => GRADIENT_TOLERANCE * largest,
        Agreement::Loose => 10.0 * GRADIENT_TOLERANCE * largest,
        Agreement::Exact => 1e-6,
    };
    let agree = |a: f32, b: f32| {
        within(a, b, tolerance) || (agreement == Agreement::Exact && a.is_nan() && b.is_nan())
    };
    match ours.iter().zip(&burns).position(|(a, b)| !agree(*a, *b)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{case}: {what} differs at flat index {i}: ours {}, Burn's {} (tolerance {tolerance})",
            ours[i], burns[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray>;

    #[test]
    fn pdl_matches_burn_on_the_grid() {
        if let Err(e) = check_gradients::<B>(&Default::default()) {
            panic!("{e}");
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
    fn host_batch_norm_training_matches_burns() {
        check_batch_norm::<B>(&Default::default()).unwrap();
    }

    #[test]
    fn host_batch_norm_inference_matches_burns() {
        check_batch_norm_inference::<NdArray>(&Default::default()).unwrap();
    }

    #[test]
    fn host_pooling_matches_burns_on_the_grid() {
        check_pool::<B>(&Default::default()).unwrap();
    }
}

//! Which backends have this crate's fast paths, and how a module written for any `B: Backend`
//! reaches them.
//!
//! [`KernelBackend`] is the pattern of Burn's custom-kernel example: a plain backend keeps Burn's
//! op as the default, a CPU backend overrides it with a host kernel, and `Autodiff<B>` overrides
//! it with a custom autodiff op whose backward is this crate's. The models never name it: the
//! modules ([`crate::Conv2d`], [`crate::MaxPool2d`], [`crate::Dropout`]) are generic over plain
//! `B: Backend`, as burn-nn's are, and pick the fast path inside the op by the backend's type
//! ([`run`]): when `B` *is* one of the backends compiled in with a cargo feature (flex, ndarray,
//! wgpu, cuda, each with and without `Autodiff`), the op runs that backend's
//! [`KernelBackend`] method; on any other backend (another checkpointing strategy, a fusion or
//! router backend, one added later) it runs Burn's own op. The type test is `TypeId` equality,
//! decided at compile time after monomorphisation, so the dispatch costs nothing at run time.

use crate::attention::AttentionOptions;
use crate::gelu::GeluKind;
use crate::host::{self, HostValues, Matrix};
use crate::pool::Window;
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
#[cfg(feature = "flex")]
use burn::tensor::ops::ModuleOps;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Shape, TensorData};
use std::any::{Any, TypeId};
use std::fmt::Debug;
use std::mem::MaybeUninit;
use std::ops::ControlFlow;

/// What Burn's `Autodiff` asks of the backend under it in this build: any backend, or, with the
/// `distributed` feature (burn-train's DDP over several CUDA GPUs), one with Burn's collective
/// ops. burn-autodiff 0.21 makes `Autodiff<B>` an autodiff backend only for such `B` once that
/// feature is on, and the CPU backends have none, so a DDP build is a CUDA-only build.
#[cfg(not(feature = "distributed"))]
pub trait UnderAutodiff: Backend {}
#[cfg(not(feature = "distributed"))]
impl<B: Backend> UnderAutodiff for B {}
#[cfg(feature = "distributed")]
pub trait UnderAutodiff: burn::tensor::backend::distributed::DistributedBackend {}
#[cfg(feature = "distributed")]
impl<B: burn::tensor::backend::distributed::DistributedBackend> UnderAutodiff for B {}

/// A backend with this crate's fast paths: the convolution whose backward pass is written out
/// ([`crate::conv`]), max pooling, batch normalisation, dropout, the LSTM, attention and the GELUs
/// on the host. Each method's default is Burn's op (or `None`, for the model's own ops);
/// the CPU backends override the forward passes with host kernels, and `Autodiff<B>` overrides
/// them with custom autodiff ops.
pub trait KernelBackend: UnderAutodiff {
    /// Whether the backend's tensors live in host memory, so that the host kernels of this crate
    /// apply: the convolution's gradients by im2col and col2im around one large matmul per chunk
    /// of images (`conv/host.rs`), max pooling ([`crate::pool`]) and dropout masks
    /// ([`crate::dropout`]). True for the CPU backends; a GPU backend keeps its tensors on the
    /// device and runs Burn's ops and the strided-view weight gradient.
    const HOST_KERNELS: bool = false;

    /// Calls `f` with the `f32` values of `tensor` as the host sees them, for the host kernels of
    /// [`crate::host`]; `None` when they are not `f32` or not a `D`-dimensional tensor. The default
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

    /// `dst = a b`, or `dst += a b` when `accumulate`, for matrices held on the host in any
    /// layout ([`Matrix`]), `dst` row-major `[a.rows, b.cols]`: the products of the LSTM and
    /// attention kernels ([`crate::lstm`], [`crate::attention`]), which read time steps, heads
    /// and transposes where they lie. The default copies both into row-major order for
    /// [`KernelBackend::host_matmul`].
    fn host_gemm(dst: &mut [f32], a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
        let shape = [a.rows, a.cols, b.cols];
        let product = Self::host_matmul(a.to_row_major(), b.to_row_major(), shape);
        if accumulate {
            dst.iter_mut().zip(product).for_each(|(d, p)| *d += p);
        } else {
            dst.copy_from_slice(&product);
        }
    }

    /// `dst = a b` into memory not written yet (a fresh output), returned initialised; `dst`
    /// row-major `[a.rows, b.cols]`. The default zeroes it and runs [`KernelBackend::host_gemm`];
    /// a gemm that writes every element without reading any skips the zeroing.
    fn host_gemm_fresh<'d>(
        dst: &'d mut [MaybeUninit<f32>],
        a: Matrix<'_>,
        b: Matrix<'_>,
    ) -> &'d mut [f32] {
        let dst = host::zeroed(dst);
        Self::host_gemm(dst, a, b, false);
        dst
    }

    /// Max pooling, Burn's `max_pool2d` with the same arguments (padding symmetric, output size
    /// rounded down) and result; see [`crate::MaxPool2d`].
    ///
    /// # Shapes
    /// - x: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height_out, width_out]`
    fn max_pool2d_fast(x: FloatTensor<Self>, window: Window) -> FloatTensor<Self> {
        window.burn_op::<Self>(x)
    }

    /// Batch normalisation in training: `[output, batch mean, batch variance]` of
    /// [`crate::BatchNorm`]'s forward pass on `x` `[batch, channels, height, width]`, the
    /// statistics `[channels]` and untracked; `None` runs Burn's ops instead (the default).
    fn batch_norm_fast(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _epsilon: f64,
    ) -> Option<[FloatTensor<Self>; 3]> {
        None
    }

    /// Batch normalisation in inference: [`crate::BatchNorm`]'s output for `x` `[batch,
    /// channels, height, width]` with `[gamma, beta, running mean, running variance]`, each
    /// `[channels]`; `None` runs Burn's ops instead. The default is the host pass where
    /// [`KernelBackend::HOST_KERNELS`], `None` elsewhere.
    fn batch_norm_inference_fast(
        x: FloatTensor<Self>,
        channels: [&FloatTensor<Self>; 4],
        epsilon: f64,
    ) -> Option<FloatTensor<Self>> {
        if Self::HOST_KERNELS {
            crate::norm::batch_norm_inference_on_host::<Self>(&x, channels, epsilon)
        } else {
            None
        }
    }

    /// A fully connected layer with a bias ([`crate::Linear`]): `x W + b` for `x` `[rows,
    /// d_input]`, `W` `[d_input, d_output]`, `b` `[d_output]`; `None` runs Burn's `linear`
    /// instead. The default is the host pass where [`KernelBackend::HOST_KERNELS`], `None`
    /// elsewhere.
    fn linear_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> Option<FloatTensor<Self>> {
        if Self::HOST_KERNELS {
            crate::linear::forward_on_host::<Self>(&x, &weight, &bias)
        } else {
            None
        }
    }

    /// Layer normalisation in training ([`crate::LayerNorm`]): the output for `x` `[rows, d]`
    /// with `gamma` and `beta` `[d]`; `None` runs Burn's op instead (the default: a plain
    /// backend's `layer_norm` has no backward to save).
    fn layer_norm_fast(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _epsilon: f64,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// An LSTM layer over a whole sequence ([`crate::lstm`]): `[projected, weight, bias, h0,
    /// c0]` to the packed output `[batch, steps + 1, d_hidden]`; `None` runs the model's own
    /// steps instead. The default is the host pass where [`KernelBackend::HOST_KERNELS`], `None`
    /// elsewhere.
    fn lstm_fast(args: [FloatTensor<Self>; 5]) -> Option<FloatTensor<Self>> {
        if Self::HOST_KERNELS {
            crate::lstm::forward::<Self>(&args, false).map(|(output, _)| output)
        } else {
            None
        }
    }

    /// Scaled dot-product attention ([`crate::attention`]): `[q, k, v]` and the options (mask,
    /// masked score, dropout mask) to the output `[batch, heads, t_q, d_v]`; `None` runs the
    /// model's tensor ops instead. The default is the host pass where
    /// [`KernelBackend::HOST_KERNELS`], `None` elsewhere.
    fn attention_fast(
        qkv: [FloatTensor<Self>; 3],
        options: AttentionOptions,
    ) -> Option<FloatTensor<Self>> {
        if Self::HOST_KERNELS {
            crate::attention::forward::<Self>(&qkv, &options).map(|(output, _)| output)
        } else {
            None
        }
    }

    /// GELU or QuickGELU ([`crate::gelu`]) of a 1-D tensor; `None` runs Burn's ops instead. The
    /// default is the host pass where [`KernelBackend::HOST_KERNELS`], `None` elsewhere.
    fn gelu_fast(x: FloatTensor<Self>, kind: GeluKind) -> Option<FloatTensor<Self>> {
        if Self::HOST_KERNELS {
            crate::gelu::forward::<Self>(&x, kind)
        } else {
            None
        }
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
impl KernelBackend for burn::backend::Flex {
    const HOST_KERNELS: bool = true;

    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if options.groups == 1
            && let Some(y) = crate::conv::host::conv2d::<Self>(&x, &weight, bias.as_ref(), &options)
        {
            return y;
        }
        Self::conv2d(x, weight, bias, options)
    }

    // The gemm behind flex's matmul, called directly: going through `float_matmul` copies both
    // operands into aligned tensors, zeroes the output and copies it out again, ~10% of a
    // training step of the classic net. The product goes into fresh memory: a zeroed vector cost
    // ~6% of that step in `memset` (an AVX-512 host, 2026-12-04).
    fn host_matmul(a: Vec<f32>, b: Vec<f32>, [m, k, n]: [usize; 3]) -> Vec<f32> {
        assert!(
            a.len() == m * k && b.len() == k * n,
            "host_matmul: shapes and lengths differ"
        );
        host::product::<Self>(Matrix::row_major(&a, m, k), Matrix::row_major(&b, k, n))
    }

    fn host_gemm(dst: &mut [f32], a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
        host::gemm_into(dst, a, b, accumulate)
    }

    fn host_gemm_fresh<'d>(
        dst: &'d mut [MaybeUninit<f32>],
        a: Matrix<'_>,
        b: Matrix<'_>,
    ) -> &'d mut [f32] {
        host::gemm_fresh(dst, a, b)
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
impl KernelBackend for burn::backend::NdArray {
    const HOST_KERNELS: bool = true;

    // The gemm behind ndarray's matmul, called directly: Burn's `float_matmul` copies both
    // operands (its reshape always copies) and runs the gemm inside a rayon scope, whose idle
    // workers spin beside the gemm's own threads; the weight gradient's eight chunks of the
    // classic net's second layer took 27 ms that way against 18 ms called directly.
    fn host_matmul(a: Vec<f32>, b: Vec<f32>, shape: [usize; 3]) -> Vec<f32> {
        host::matmul_with(host::sgemm_into, &a, &b, shape)
    }

    fn host_gemm(dst: &mut [f32], a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
        host::sgemm_into(dst, a, b, accumulate)
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
impl KernelBackend for burn::backend::Wgpu {}
#[cfg(feature = "cuda")]
impl KernelBackend for burn::backend::Cuda {}

/// Any autodiff backend over a [`KernelBackend`]: the ops record this crate's backward steps,
/// which use nothing but the inner backend's fast forward ops, `matmul` and tensor ops, and its
/// host kernels where it has them.
impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
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
        crate::conv::backward::autodiff_conv2d::<B, C>(x, weight, bias, options)
    }

    fn batch_norm_fast(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Option<[FloatTensor<Self>; 3]> {
        crate::norm::autodiff_batch_norm::<B, C>(x, gamma, beta, epsilon)
    }

    fn lstm_fast(args: [FloatTensor<Self>; 5]) -> Option<FloatTensor<Self>> {
        crate::lstm::autodiff_lstm::<B, C>(args)
    }

    fn layer_norm_fast(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Option<FloatTensor<Self>> {
        crate::norm::autodiff_layer_norm::<B, C>(x, gamma, beta, epsilon)
    }

    fn attention_fast(
        qkv: [FloatTensor<Self>; 3],
        options: AttentionOptions,
    ) -> Option<FloatTensor<Self>> {
        crate::attention::autodiff_attention::<B, C>(qkv, options)
    }

    fn linear_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> Option<FloatTensor<Self>> {
        crate::linear::autodiff_linear::<B, C>(x, weight, bias)
    }

    fn gelu_fast(x: FloatTensor<Self>, kind: GeluKind) -> Option<FloatTensor<Self>> {
        crate::gelu::autodiff_gelu::<B, C>(x, kind)
    }
}

/// A gradient computed on the host: its values, row-major, and its shape.
pub(crate) type HostGradient = (Vec<f32>, Shape);

/// The backward step of a host kernel, in the kernel's own terms: from the output's gradient
/// `dy` and what the forward pass kept, the gradient of each of the `N` parents. [`OnHost`]
/// makes it the step Burn's autodiff graph runs, which takes `dy` off the graph and registers
/// the gradients of the parents that ask for one; `tracked` says which those are (the others'
/// may be left empty).
pub(crate) trait HostBackward<B: KernelBackend, const N: usize>:
    Debug + Send + 'static
{
    /// What the forward pass keeps for the backward.
    type State: Clone + Send + Debug + 'static;

    /// The parents' gradients; `None` only when a tensor's values could not be lent as `f32`,
    /// which the forward pass, reading the same tensors, has already ruled out.
    fn gradients(self, dy: FloatTensor<B>, state: Self::State, tracked: [bool; N]) -> Grads<N>;

    /// A gradient as a tensor of the backend: row-major unless a kernel says otherwise.
    fn tensor((values, shape): HostGradient, device: &B::Device) -> FloatTensor<B> {
        B::float_from_data(TensorData::new(values, shape), device)
    }
}

/// What [`HostBackward::gradients`] returns.
pub(crate) type Grads<const N: usize> = Option<[HostGradient; N]>;

/// A [`HostBackward`] as Burn's [`Backward`] step: record an op with `OnHost(kernel).prepare`.
#[derive(Debug)]
pub(crate) struct OnHost<K>(pub K);

impl<B, K, const N: usize> Backward<B, N> for OnHost<K>
where
    B: KernelBackend,
    K: HostBackward<B, N>,
{
    type State = K::State;

    fn backward(self, ops: Ops<K::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let device = B::float_device(&dy);
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        let gradients = self
            .0
            .gradients(dy, ops.state, parents.map(|id| id.is_some()))
            .expect("the forward pass lent this backend's values as f32");
        for (parent, gradient) in parents.into_iter().zip(gradients) {
            if let Some(id) = parent {
                grads.register::<B>(id, K::tensor(gradient, &device));
            }
        }
    }
}

/// An op with a fast path on the [`KernelBackend`]s and Burn's op everywhere else: its arguments
/// and result as types of the backend, the fast path, and the reference.
pub(crate) trait Op {
    /// The op's arguments on backend `B`.
    type Args<B: Backend>: 'static;
    /// Its result on backend `B`.
    type Output<B: Backend>: 'static;
    /// The fast path, on a backend of this crate.
    fn fast<F: KernelBackend>(args: Self::Args<F>) -> Self::Output<F>;
    /// Burn's op, on any backend.
    fn reference<B: Backend>(args: Self::Args<B>) -> Self::Output<B>;
}

/// Runs `O` on backend `B`: its fast path when `B` is a backend compiled in with this crate's
/// features, Burn's op otherwise.
pub(crate) fn run<O: Op, B: Backend>(args: O::Args<B>) -> O::Output<B> {
    match on_a_kernel_backend::<O, B>(args) {
        ControlFlow::Break(output) => output,
        ControlFlow::Continue(args) => O::reference(args),
    }
}

/// Whether the host kernels run on backend `B` (the CPU backends, with or without autodiff).
pub(crate) fn host_kernels<B: Backend>() -> bool {
    run::<HostKernels, B>(())
}

/// The op behind [`host_kernels`]: [`KernelBackend::HOST_KERNELS`], or false.
struct HostKernels;

impl Op for HostKernels {
    type Args<B: Backend> = ();
    type Output<B: Backend> = bool;

    fn fast<F: KernelBackend>(_: ()) -> bool {
        F::HOST_KERNELS
    }

    fn reference<B: Backend>(_: ()) -> bool {
        false
    }
}

/// Tries each backend compiled in; `Break` with the result once one is `B`. The unit tests compile
/// ndarray in whatever the features.
fn on_a_kernel_backend<O: Op, B: Backend>(
    args: O::Args<B>,
) -> ControlFlow<O::Output<B>, O::Args<B>> {
    #[cfg(feature = "flex")]
    let args = on::<O, B, Autodiff<burn::backend::Flex>>(args)?;
    #[cfg(feature = "flex")]
    let args = on::<O, B, burn::backend::Flex>(args)?;
    #[cfg(any(feature = "ndarray", test))]
    let args = on::<O, B, Autodiff<burn::backend::NdArray>>(args)?;
    #[cfg(any(feature = "ndarray", test))]
    let args = on::<O, B, burn::backend::NdArray>(args)?;
    #[cfg(feature = "wgpu")]
    let args = on::<O, B, Autodiff<burn::backend::Wgpu>>(args)?;
    #[cfg(feature = "wgpu")]
    let args = on::<O, B, burn::backend::Wgpu>(args)?;
    #[cfg(feature = "cuda")]
    let args = on::<O, B, Autodiff<burn::backend::Cuda>>(args)?;
    #[cfg(feature = "cuda")]
    let args = on::<O, B, burn::backend::Cuda>(args)?;
    ControlFlow::Continue(args)
}

/// `O`'s fast path on `F` if `B` is `F`.
fn on<O: Op, B: Backend, F: KernelBackend>(
    args: O::Args<B>,
) -> ControlFlow<O::Output<B>, O::Args<B>> {
    if TypeId::of::<B>() != TypeId::of::<F>() {
        return ControlFlow::Continue(args);
    }
    ControlFlow::Break(same_type(O::fast::<F>(same_type(args))))
}

/// `value` as type `U`, which [`on`] has checked is `T` (through the backend both are built on).
fn same_type<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    let slot: &mut dyn Any = &mut slot;
    slot.downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("an op's arguments on backend B are of the same type as on F when B is F")
}

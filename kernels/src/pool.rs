//! Max pooling with a host kernel for the CPU backends (d2l.ai ch. 7.5, "Pooling").
//!
//! `y[n, c, i, j] = max_{u, v} x~[n, c, s i + d u, s j + d v]` over the `k x k` window (`x~` padded
//! with `-inf`), and the gradient goes to the one input each window picked: `dL/dx[a] = sum of
//! dL/dy[o]` over the outputs `o` whose maximum was `x[a]`.
//!
//! Why not Burn's op: its autodiff forward asks the backend for the maxima *and* their indices
//! as an integer tensor, and on `ndarray` and `flex` that takes 17-20 ms for the classic MNIST
//! net's pool (a 2x2 window over `[64, 64, 24, 24]`), nearly as long as the convolution before
//! it. [`MaxPool2d`] has the fields of Burn's `MaxPool2d` (a pooling layer has no record to
//! change) and, on a backend whose tensors are host arrays ([`KernelBackend::HOST_KERNELS`]), runs one pass over the input
//! that writes the maxima and remembers each window's pick, and a backward pass that adds each
//! output gradient to its pick. Every other backend runs Burn's op.

use crate::KernelBackend;
use crate::backend::{Grads, HostBackward, OnHost, Op};
use crate::host::{HostValues, PARALLEL_VALUES, fill_blocks, written, zeroed};
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::module::{Content, DisplaySettings, ModuleDisplay};
use burn::nn::PaddingConfig2d;
use burn::nn::pool as burn_pool;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, ModuleOps};
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Configuration of a [`MaxPool2d`]: burn-nn's `MaxPool2dConfig`, field for field.
#[derive(Config, Debug)]
pub struct MaxPool2dConfig {
    /// `[kernel_height, kernel_width]`.
    pub kernel_size: [usize; 2],
    /// Step between windows, per axis; the kernel size by default.
    #[config(default = "kernel_size")]
    pub strides: [usize; 2],
    /// `-inf` padding of the input.
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// Spacing between a window's taps, per axis.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Round the output size up rather than down.
    #[config(default = "false")]
    pub ceil_mode: bool,
}

impl MaxPool2dConfig {
    /// The pooling layer.
    pub fn init(&self) -> MaxPool2d {
        MaxPool2d {
            stride: self.strides,
            kernel_size: self.kernel_size,
            padding: self.padding.clone(),
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        }
    }
}

/// 2-D max pooling, burn-nn's `MaxPool2d` with the host pass of the module docs on the CPU
/// backends. The fields are Burn's.
#[derive(Module, Clone, Debug)]
#[module(custom_display)]
pub struct MaxPool2d {
    /// Step between windows, per axis.
    pub stride: [usize; 2],
    /// `[kernel_height, kernel_width]`.
    pub kernel_size: [usize; 2],
    /// `-inf` padding of the input.
    pub padding: PaddingConfig2d,
    /// Spacing between a window's taps, per axis.
    pub dilation: [usize; 2],
    /// Round the output size up rather than down.
    pub ceil_mode: bool,
}

impl MaxPool2d {
    /// The maximum of each window: burn-nn's `MaxPool2d::forward`, through
    /// [`KernelBackend::max_pool2d_fast`] when the padding is the same on both sides of each axis
    /// and the output size is rounded down (every pool of the course).
    ///
    /// # Shapes
    /// - x: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height_out, width_out]`
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let padding = match self.padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == bottom && left == right =>
            {
                [top, left]
            }
            _ => return self.burn().forward(x),
        };
        if self.ceil_mode {
            return self.burn().forward(x);
        }
        let window = Window {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding,
            dilation: self.dilation,
        };
        let [_, _, height, width] = x.dims();
        if window.size_out([height, width]).is_none() {
            // Let Burn say what is wrong with the shapes.
            return self.burn().forward(x);
        }
        crate::backend::run::<MaxPool2dOp, B>((x, window))
    }

    /// The same layer as burn-nn's.
    fn burn(&self) -> burn_pool::MaxPool2d {
        self.clone().into()
    }
}

impl From<MaxPool2d> for burn_pool::MaxPool2d {
    fn from(pool: MaxPool2d) -> Self {
        Self {
            stride: pool.stride,
            kernel_size: pool.kernel_size,
            padding: pool.padding,
            dilation: pool.dilation,
            ceil_mode: pool.ceil_mode,
        }
    }
}

impl From<burn_pool::MaxPool2d> for MaxPool2d {
    fn from(pool: burn_pool::MaxPool2d) -> Self {
        Self {
            stride: pool.stride,
            kernel_size: pool.kernel_size,
            padding: pool.padding,
            dilation: pool.dilation,
            ceil_mode: pool.ceil_mode,
        }
    }
}

impl ModuleDisplay for MaxPool2d {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        crate::one_line_display()
    }

    // burn-nn's display, so a model prints the same whichever layer it holds.
    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("kernel_size", &format!("{:?}", &self.kernel_size))
            .add("stride", &format!("{:?}", &self.stride))
            .add_debug_attribute("padding", &self.padding)
            .add("dilation", &format!("{:?}", &self.dilation))
            .add("ceil_mode", &self.ceil_mode)
            .optional()
    }
}

/// [`MaxPool2d::forward`] as an [`Op`]: the backend's fast pooling, or Burn's.
struct MaxPool2dOp;

impl Op for MaxPool2dOp {
    type Args<B: Backend> = (Tensor<B, 4>, Window);
    type Output<B: Backend> = Tensor<B, 4>;

    fn fast<F: KernelBackend>((x, window): (Tensor<F, 4>, Window)) -> Tensor<F, 4> {
        Tensor::from_primitive(TensorPrimitive::Float(F::max_pool2d_fast(
            x.into_primitive().tensor(),
            window,
        )))
    }

    fn reference<B: Backend>((x, window): (Tensor<B, 4>, Window)) -> Tensor<B, 4> {
        Tensor::from_primitive(TensorPrimitive::Float(
            window.burn_op::<B>(x.into_primitive().tensor()),
        ))
    }
}

/// A pooling window: the arguments of Burn's `max_pool2d` op, padding symmetric, rounding down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `[kernel_height, kernel_width]`.
    pub kernel_size: [usize; 2],
    /// Step between windows, per axis.
    pub stride: [usize; 2],
    /// `-inf` padding on both sides, per axis.
    pub padding: [usize; 2],
    /// Spacing between a window's taps, per axis.
    pub dilation: [usize; 2],
}

impl Window {
    /// `[height_out, width_out]` for an input of `size`, or `None` when the window does not fit.
    pub fn size_out(&self, size: [usize; 2]) -> Option<[usize; 2]> {
        let axis = |a: usize| {
            let span = self.dilation[a] * self.kernel_size[a].checked_sub(1)? + 1;
            let room = (size[a] + 2 * self.padding[a]).checked_sub(span)?;
            (self.stride[a] > 0).then(|| room / self.stride[a] + 1)
        };
        Some([axis(0)?, axis(1)?])
    }

    /// Burn's own op on any backend.
    pub(crate) fn burn_op<B: Backend>(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        B::max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            false,
        )
    }
}

/// The maxima of every window and, for each, the flat index into `x` (row-major) of the value it
/// picked (the first of equal maxima, never a NaN, as Burn's op); `None` when the backend does not lend `x` as `f32` or a
/// window holds nothing but padding.
///
/// # Shapes
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height_out, width_out]`, and as many indices
pub(crate) fn forward_on_host<B: KernelBackend>(
    x: &FloatTensor<B>,
    window: Window,
) -> Option<(FloatTensor<B>, Vec<u32>)> {
    let device = B::float_device(x);
    let [batch, channels, height, width] = x.shape().dims();
    let [height_out, width_out] = window.size_out([height, width])?;
    // Flat indices of `x` must fit the `u32`s the backward pass keeps.
    u32::try_from(batch * channels * height * width).ok()?;
    let (values, picks) = B::with_values(x, |x: HostValues<'_, 4>| {
        let plan = Plan::new(&window, [height, width], [height_out, width_out])?;
        let out_plane = height_out * width_out;
        let mut values = vec![0.0; batch * channels * out_plane];
        let mut picks = vec![0; batch * channels * out_plane];
        // Plane by plane, image by image: one image's maps stay in the cache whichever axis is
        // contiguous (channels-last maps, as ndarray's convolution returns, read every
        // `channels`-th value of a plane). Runs of planes on all cores when the maps are large.
        let pool = |(plane, (values, picks)): (usize, (&mut [f32], &mut [u32]))| {
            let (n, c) = (plane / channels, plane % channels);
            let start = n * x.strides[0] + c * x.strides[1];
            let dense = (plane * height * width) as u32;
            plan.pool_plane(
                &x.values[start..],
                [x.strides[2], x.strides[3]],
                width,
                dense,
                values,
                picks,
            );
        };
        if values.len() >= PARALLEL_VALUES {
            let planes = values
                .par_chunks_exact_mut(out_plane)
                .zip(picks.par_chunks_exact_mut(out_plane));
            planes.enumerate().for_each(pool);
        } else {
            let planes = values
                .chunks_exact_mut(out_plane)
                .zip(picks.chunks_exact_mut(out_plane));
            planes.enumerate().for_each(pool);
        }
        Some((values, picks))
    })??;
    let shape = [batch, channels, height_out, width_out];
    Some((
        B::float_from_data(TensorData::new(values, shape), &device),
        picks,
    ))
}

/// The in-image input rows and columns of every window.
struct Plan {
    /// `Some([height_out, width_out])` for the common 2x2 window at stride 2 without padding, which
    /// [`pool_pairs`] runs without the per-window lists.
    pairs: Option<[usize; 2]>,
    /// `rows[i]`: the input rows output row `i` reads.
    rows: Vec<Vec<usize>>,
    /// `cols[j]`: the input columns output column `j` reads.
    cols: Vec<Vec<usize>>,
}

impl Plan {
    /// Pools one `[height, width]` map whose value `(h, w)` is `map[h strides[0] + w strides[1]]`:
    /// writes each window's maximum to `values` and its flat index `dense + h width + w` to
    /// `picks`. As Burn's op: the first of equal maxima wins, and a NaN never does. Branch-free
    /// within a window (the comparison of random values mispredicts half the time).
    fn pool_plane(
        &self,
        map: &[f32],
        strides: [usize; 2],
        width: usize,
        dense: u32,
        values: &mut [f32],
        picks: &mut [u32],
    ) {
        if let Some(pairs) = self.pairs {
            return pool_pairs(map, strides, width, dense, pairs, values, picks);
        }
        let outputs = values.iter_mut().zip(picks.iter_mut());
        let windows = self
            .rows
            .iter()
            .flat_map(|rows| self.cols.iter().map(move |cols| (rows, cols)));
        for ((value, pick), (rows, cols)) in outputs.zip(windows) {
            let mut best = f32::NEG_INFINITY;
            let mut best_at = (rows[0] * width + cols[0]) as u32;
            for &h in rows {
                for &w in cols {
                    let candidate = map[h * strides[0] + w * strides[1]];
                    let take = candidate > best;
                    best = if take { candidate } else { best };
                    best_at = if take {
                        (h * width + w) as u32
                    } else {
                        best_at
                    };
                }
            }
            *value = best;
            *pick = dense + best_at;
        }
    }

    /// `None` when some window reads nothing but padding.
    fn new(window: &Window, size: [usize; 2], size_out: [usize; 2]) -> Option<Self> {
        let axis = |a: usize| -> Option<Vec<Vec<usize>>> {
            (0..size_out[a])
                .map(|o| {
                    let taps: Vec<usize> = (0..window.kernel_size[a])
                        .filter_map(|k| {
                            (o * window.stride[a] + k * window.dilation[a])
                                .checked_sub(window.padding[a])
                                .filter(|&i| i < size[a])
                        })
                        .collect();
                    (!taps.is_empty()).then_some(taps)
                })
                .collect()
        };
        let pairs = (window.kernel_size == [2, 2]
            && window.stride == [2, 2]
            && window.padding == [0, 0]
            && window.dilation == [1, 1])
        .then_some(size_out);
        Some(Self {
            pairs,
            rows: axis(0)?,
            cols: axis(1)?,
        })
    }
}

/// [`Plan::pool_plane`] for 2x2 windows at stride 2: each window's four values compared in a
/// fixed order, no per-window lists, so the windows of a row are independent and the compiler
/// interleaves them.
fn pool_pairs(
    map: &[f32],
    [row_stride, col_stride]: [usize; 2],
    width: usize,
    dense: u32,
    [height_out, width_out]: [usize; 2],
    values: &mut [f32],
    picks: &mut [u32],
) {
    // Later candidates replace the first when greater, or NaN over a number.
    let rows = values
        .chunks_exact_mut(width_out)
        .zip(picks.chunks_exact_mut(width_out))
        .take(height_out);
    for (i, (values, picks)) in rows.enumerate() {
        let top = &map[2 * i * row_stride..];
        let bottom = &map[(2 * i + 1) * row_stride..];
        let at = dense + (2 * i * width) as u32;
        for (j, (value, pick)) in values.iter_mut().zip(picks.iter_mut()).enumerate() {
            let (left, right) = (2 * j * col_stride, (2 * j + 1) * col_stride);
            let mut best = f32::NEG_INFINITY;
            let mut offset = 0;
            for (candidate, candidate_offset) in [
                (top[left], 0),
                (top[right], 1),
                (bottom[left], width as u32),
                (bottom[right], width as u32 + 1),
            ] {
                let take = candidate > best;
                best = if take { candidate } else { best };
                offset = if take { candidate_offset } else { offset };
            }
            *value = best;
            *pick = at + (2 * j) as u32 + offset;
        }
    }
}

/// The backward step of [`forward_on_host`]: each output gradient added to its window's pick.
#[derive(Debug)]
struct PdlMaxPool2d;

impl<B: KernelBackend> HostBackward<B, 1> for PdlMaxPool2d {
    /// The picks, and the input's shape.
    type State = (Arc<[u32]>, Shape);

    fn gradients(
        self,
        dy: FloatTensor<B>,
        (picks, x_shape): Self::State,
        _: [bool; 1],
    ) -> Grads<1> {
        let spread = B::with_values(&dy, |dy: HostValues<'_, 4>| {
            let [_, _, height, width] = x_shape.dims();
            let [_, _, height_out, width_out] = dy.dims;
            let (plane, out_plane) = (height * width, height_out * width_out);
            let dy = dy.row_major();
            // Each window picks from its own plane, so the planes go on all cores.
            let fill = |p: usize, dx: &mut [MaybeUninit<f32>]| {
                let dx = zeroed(dx);
                let outputs = p * out_plane..(p + 1) * out_plane;
                for (value, &pick) in dy[outputs.clone()].iter().zip(&picks[outputs]) {
                    dx[pick as usize - p * plane] += value;
                }
            };
            // SAFETY: `zeroed` initialises every plane before the gradients are added onto it.
            unsafe { written(x_shape.num_elements(), |dx| fill_blocks(dx, plane, fill)) }
        })?;
        Some([(spread, x_shape)])
    }
}

/// The forward pass of the autodiff backends' [`KernelBackend::max_pool2d_fast`].
pub(crate) fn autodiff_max_pool2d<B: KernelBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    window: Window,
) -> FloatTensor<Autodiff<B, C>> {
    if !B::HOST_KERNELS {
        return window.burn_op::<Autodiff<B, C>>(x);
    }
    match OnHost(PdlMaxPool2d)
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => match forward_on_host::<B>(&x.primitive, window) {
            Some((output, picks)) => prep.finish((picks.into(), x.primitive.shape()), output),
            // Not lent as f32: Burn's op, which records its own backward step.
            None => <Autodiff<B, C> as ModuleOps<Autodiff<B, C>>>::max_pool2d(
                x,
                window.kernel_size,
                window.stride,
                window.padding,
                window.dilation,
                false,
            ),
        },
        OpsKind::UnTracked(prep) => prep.finish(B::max_pool2d_fast(x.primitive, window)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn inference_pooling_matches_burns() {
        let device = Default::default();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let x = Tensor::<NdArray, 4>::from_data(
            TensorData::new(
                (0..2 * 3 * 6 * 6).map(|i| ((i * 37) % 17) as f32).collect(),
                [2, 3, 6, 6],
            ),
            &device,
        );
        let ours = pool.forward(x.clone()).into_data();
        ours.assert_eq(&pool.burn().forward(x).into_data(), true);
    }

    #[test]
    fn a_nan_is_passed_over_as_by_burns_op() {
        let device = Default::default();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let values = vec![f32::NAN, 1.0, 3.0, 2.0, 0.5, f32::NAN, -1.0, -2.0];
        let x = Tensor::<Autodiff<NdArray>, 4>::from_data(
            TensorData::new(values, [1, 1, 2, 4]),
            &device,
        )
        .require_grad();
        let ours = pool.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        let burns = pool.burn().forward(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(ours, burns);
        assert_eq!(ours, [1.0, 3.0]);
    }

    #[test]
    fn a_window_of_padding_only_falls_back_to_burn() {
        // Padding 2 around a 1x1 map with a 1x1 window at stride 2: the corner windows read only
        // padding, which the host pass does not handle.
        let window = Window {
            kernel_size: [1, 1],
            stride: [2, 2],
            padding: [2, 2],
            dilation: [1, 1],
        };
        let x = Tensor::<NdArray, 4>::ones([1, 1, 1, 1], &Default::default());
        assert!(forward_on_host::<NdArray>(&x.into_primitive().tensor(), window).is_none());
    }
}

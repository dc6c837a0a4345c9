//! Max pooling with a host kernel for the CPU backends (d2l.ai ch. 7.5, "Pooling").
//!
//! `y[n, c, i, j] = max_{u, v} x~[n, c, s i + d u, s j + d v]` over the `k x k` window (`x~` padded
//! with `-inf`), and the gradient goes to the one input each window picked: `dL/dx[a] = sum of
//! dL/dy[o]` over the outputs `o` whose maximum was `x[a]`.
//!
//! Why not Burn's op: its autodiff forward asks the backend for the maxima *and* their indices
//! as an integer tensor, and on `ndarray` and `flex` that takes 17-20 ms for the classic MNIST
//! net's pool (a 2x2 window over `[64, 64, 24, 24]`), nearly as long as the convolution before
//! it. [`max_pool2d`] keeps Burn's [`MaxPool2d`] module (so records are unchanged) and, on a backend
//! whose tensors are host arrays ([`ConvBackend::HOST_KERNELS`]), runs one pass over the input
//! that writes the maxima and remembers each window's pick, and a backward pass that adds each
//! output gradient to its pick. Every other backend runs Burn's op.

use crate::conv::{ConvBackend, HostValues};
use burn::backend::Autodiff;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, ModuleOps};
use burn::tensor::{TensorData, TensorMetadata, TensorPrimitive};
use std::sync::Arc;

/// `pool.forward(x)`, through [`ConvBackend::max_pool2d_fast`] when the pool's padding is the
/// same on both sides of each axis and it rounds its output size down (every pool of the course).
///
/// # Shapes
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height_out, width_out]`
pub fn max_pool2d<B: ConvBackend>(pool: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match pool.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return pool.forward(x),
    };
    if pool.ceil_mode {
        return pool.forward(x);
    }
    let window = Window {
        kernel_size: pool.kernel_size,
        stride: pool.stride,
        padding,
        dilation: pool.dilation,
    };
    let [_, _, height, width] = x.dims();
    if window.size_out([height, width]).is_none() {
        // Let Burn say what is wrong with the shapes.
        return pool.forward(x);
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::max_pool2d_fast(
        x.into_primitive().tensor(),
        window,
    )))
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
pub(crate) fn forward_on_host<B: ConvBackend>(
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
        let planes = values
            .chunks_exact_mut(out_plane)
            .zip(picks.chunks_exact_mut(out_plane));
        // Plane by plane, image by image: one image's maps stay in the cache whichever axis is
        // contiguous (channels-last maps, as ndarray's convolution returns, read every
        // `channels`-th value of a plane).
        for (plane, (values, picks)) in planes.enumerate() {
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

impl<B: ConvBackend> Backward<B, 1> for PdlMaxPool2d {
    /// The picks, and the input's shape.
    type State = (Arc<[u32]>, Shape);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let [Some(node)] = ops.parents else {
            return;
        };
        let (picks, x_shape) = ops.state;
        let device = B::float_device(&grad);
        let spread = B::with_values(&grad, |grad: HostValues<'_, 4>| {
            let mut dx = vec![0.0f32; x_shape.num_elements()];
            for (value, &pick) in grad.row_major().iter().zip(picks.iter()) {
                dx[pick as usize] += value;
            }
            dx
        })
        .expect("the forward pass lent this backend's values as f32");
        grads.register::<B>(
            node.id,
            B::float_from_data(TensorData::new(spread, x_shape), &device),
        );
    }
}

/// The forward pass of the autodiff backends' [`ConvBackend::max_pool2d_fast`].
pub(crate) fn autodiff_max_pool2d<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    window: Window,
) -> FloatTensor<Autodiff<B, C>> {
    if !B::HOST_KERNELS {
        return window.burn_op::<Autodiff<B, C>>(x);
    }
    match PdlMaxPool2d
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

/// The windows of [`check_pool`]'s grid, as `(kernel, stride, padding, dilation)`.
const POOL_CASES: [(usize, usize, usize, usize); 6] = [
    (2, 2, 0, 1), // the course's pool: the 2x2 fast path
    (2, 1, 0, 1),
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (3, 2, 1, 2),
    (3, 3, 0, 1),
];

/// Checks that [`max_pool2d`] agrees with Burn's `MaxPool2d::forward` on backend `B` over a grid
/// of windows (kernel 2-3, stride 1-3, padding 0-1, dilation 1-2) on odd and even map sizes, with
/// the input channels-first and channels-last in memory: the output, and the input gradient of
/// `sum(output * r)` for a fixed pseudo-random `r`.
///
/// # Errors
/// The first case whose output or gradient differs, with the first differing element.
pub fn check_pool<B: burn::tensor::backend::AutodiffBackend + ConvBackend>(
    device: &B::Device,
) -> Result<(), String> {
    use burn::nn::pool::MaxPool2dConfig;
    let mut rng = pdl_datasets::SplitMix64::new(11);
    for (kernel, stride, padding, dilation) in POOL_CASES {
        for size in [[9, 11], [8, 8]] {
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
                        max_pool2d(&pool, x.clone())
                    } else {
                        pool.forward(x.clone())
                    };
                    let mut rng = pdl_datasets::SplitMix64::new(5);
                    let r: Vec<f32> = (0..y.shape().num_elements())
                        .map(|_| rng.symmetric(1.0))
                        .collect();
                    let r = Tensor::<B, 4>::from_data(TensorData::new(r, y.shape()), device);
                    let grads = (y.clone() * r).sum().backward();
                    let dx = x.grad(&grads).map(|g| g.into_data());
                    (y.into_data(), dx)
                };
                let (ours, burns) = (run(true), run(false));
                compare(&case, "output", ours.0, burns.0)?;
                match (ours.1, burns.1) {
                    (Some(a), Some(b)) => compare(&case, "input gradient", a, b)?,
                    (a, b) => {
                        return Err(format!(
                            "{case}: input gradient: ours {}, Burn's {}",
                            a.is_some(),
                            b.is_some()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn compare(case: &str, what: &str, ours: TensorData, burns: TensorData) -> Result<(), String> {
    if ours.shape != burns.shape {
        return Err(format!(
            "{case}: {what}: shape {:?}, Burn's {:?}",
            ours.shape, burns.shape
        ));
    }
    let values = |data: TensorData| {
        data.convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))
    };
    let (ours, burns) = (values(ours)?, values(burns)?);
    match ours
        .iter()
        .zip(&burns)
        .position(|(a, b)| (a - b).abs() > 1e-6 || a.is_nan() != b.is_nan())
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "{case}: {what} differs at flat index {i}: ours {}, Burn's {}",
            ours[i], burns[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::nn::pool::MaxPool2dConfig;

    #[test]
    fn host_pooling_matches_burns_on_the_grid() {
        check_pool::<Autodiff<NdArray>>(&Default::default()).unwrap();
    }

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
        let ours = max_pool2d(&pool, x.clone()).into_data();
        ours.assert_eq(&pool.forward(x).into_data(), true);
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
        let ours = max_pool2d(&pool, x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let burns = pool.forward(x).into_data().to_vec::<f32>().unwrap();
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

//! The convolution's kernels for the CPU backends: im2col and col2im as plain loops over the
//! tensors' values on the host, around one matmul per chunk of images
//! ([`KernelBackend::host_matmul`], the backend's own gemm). With `K = images * height_out *
//! width_out` output positions of a chunk and `taps = channels_in * k_h * k_w`:
//!
//! - [`weight_gradient`], `dL/dw = G X`, in one of two layouts:
//!   - [`Layout::TapRows`]: `cols: [taps, K]` (taps ordered `(c, u, v)`, one row per tap) times
//!     the output gradient as `[K, c_out]` gives `dL/dw^T: [taps, c_out]`;
//!   - [`Layout::PositionRows`]: the output gradient as `[c_out, K]` times `cols^T: [K, taps]`
//!     (taps ordered `(u, v, c)`, one row per output position) gives `[c_out, k_h, k_w, c_in]`.
//!
//!   `TapRows` copies runs along input rows and suits channels-first tensors (flex keeps NCHW);
//!   `PositionRows` copies runs along channels and suits channels-last ones (ndarray's
//!   convolution returns NHWC). Each wants the output gradient in the layout it is most likely
//!   already in.
//! - [`input_gradient`], `dL/dx`: `kernel^T: [taps, c_out]` times the output gradient as
//!   `[c_out, K]` gives each patch entry's gradient, and col2im adds each back onto the input
//!   position it was read from: no spread or padded copy of the gradient whatever the stride.
//! - [`conv2d`], the forward pass (flex only; ndarray's own convolution is faster):
//!   `kernel: [c_out, taps]` times `cols`, plus the bias.
//!
//! Every output position of every image in the chunk is in one matmul, so the gemm sees one
//! large, well-shaped product instead of a small one per image and tap, and Burn's `unfold4d`
//! (which gathers every patch entry through a one-hot convolution) is never called. Only the
//! layout moves through the host; every multiply-add is the gemm's. It is for the CPU backends,
//! whose tensors already live in host memory ([`KernelBackend::HOST_KERNELS`]): a GPU backend
//! would copy both tensors across the bus.

use crate::KernelBackend;
use crate::host::{
    Fill, HostValues, Matrix, fill_blocks, permuted, vector_values, written, zeroed,
};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{TensorData, TensorMetadata};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Bytes of patches gathered per matmul. Small enough that a chunk's patches stay in the cache
/// between being written and being read by the matmul, and that ndarray's gemm gets a moderate
/// inner dimension (the classic net's second layer, batch 64: 27 ms as 8 matmuls against 80 ms as
/// one); large enough that each matmul is still large.
const CHUNK_BYTES: usize = 4 << 20;

/// The images of a batch in chunks whose patches (`taps` values per output position,
/// `per_image` positions per image) fill about [`CHUNK_BYTES`]: at least one image per chunk.
fn image_chunks(batch: usize, taps: usize, per_image: usize) -> impl Iterator<Item = Range<usize>> {
    let per_chunk = (CHUNK_BYTES / (taps * per_image * size_of::<f32>()).max(1)).max(1);
    (0..batch)
        .step_by(per_chunk)
        .map(move |first| first..(first + per_chunk).min(batch))
}

/// How [`weight_gradient`] lays out its matmul (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `cols [taps, K]` times the gradient as `[K, c_out]`.
    TapRows,
    /// The gradient as `[c_out, K]` times `cols^T [K, taps]`.
    PositionRows,
}

impl Layout {
    /// The layout with less scattered copying for an input and output gradient laid out with
    /// these strides. The patches are the larger copy (`taps` against `c_out` values per
    /// position), so they count double.
    fn choose(x: &HostValues<'_, 4>, grad: &HostValues<'_, 4>) -> Self {
        let [_, channels_in, _, _] = x.dims;
        let [_, channels_out, height_out, width_out] = grad.dims;
        // PositionRows copies runs along channels; TapRows runs along rows.
        let channels_last = x.strides[1] == 1 || channels_in == 1;
        let rows = x.strides[3] == 1;
        // PositionRows reads each gradient channel's map whole; TapRows each position's channels.
        let maps = grad.strides[3] == 1 && (height_out == 1 || grad.strides[2] == width_out);
        let positions = grad.strides[1] == 1 || channels_out == 1;
        let cost =
            |patches: bool, gradient: bool| 2 * usize::from(!patches) + usize::from(!gradient);
        if cost(channels_last, maps) < cost(rows, positions) {
            Self::PositionRows
        } else {
            Self::TapRows
        }
    }
}

/// `dL/dw` of a one-group convolution by im2col on the host, or `None` when the backend does not
/// lend the tensors' values as `f32` (the caller then takes the generic path).
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`, unpadded
/// - grad: `[batch, channels_out, height_out, width_out]`
/// - output: `weight_shape`, `[channels_out, channels_in, kernel_height, kernel_width]`
pub(super) fn weight_gradient<B: KernelBackend>(
    x: &FloatTensor<B>,
    grad: &FloatTensor<B>,
    weight_shape: &Shape,
    options: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let [channels_out, channels_in, kernel_height, kernel_width] = weight_shape.dims();
    let device = B::float_device(x);
    let taps = channels_in * kernel_height * kernel_width;
    let weight = B::with_values(x, |x: HostValues<'_, 4>| {
        B::with_values(grad, |grad: HostValues<'_, 4>| {
            let [batch, _, height_out, width_out] = grad.dims;
            let patches = Patches {
                x,
                size_out: [height_out, width_out],
                kernel: [kernel_height, kernel_width],
                options,
            };
            let layout = Layout::choose(&x, &grad);
            let per_image = height_out * width_out;
            // `[c_in, kernel_height, kernel_width, c_out]` (TapRows) or
            // `[c_out, kernel_height, kernel_width, c_in]` (PositionRows).
            let mut sum = vec![0.0f32; taps * channels_out];
            for images in image_chunks(batch, taps, per_image) {
                let positions = images.len() * per_image;
                match layout {
                    Layout::TapRows => {
                        let cols = patches.tap_rows(images.clone());
                        // [images, h_out, w_out, c_out]
                        let grad = permuted(&grad, images, [0, 2, 3, 1]);
                        B::host_gemm(
                            &mut sum,
                            Matrix::row_major(&cols, taps, positions),
                            Matrix::row_major(&grad, positions, channels_out),
                            true,
                        );
                    }
                    Layout::PositionRows => {
                        // [c_out, images, h_out, w_out]
                        let grad = permuted(&grad, images.clone(), [1, 0, 2, 3]);
                        let cols = patches.position_rows(images);
                        B::host_gemm(
                            &mut sum,
                            Matrix::row_major(&grad, channels_out, positions),
                            Matrix::row_major(&cols, positions, taps),
                            true,
                        );
                    }
                }
            }
            // Into `[c_out, c_in, kernel_height, kernel_width]`.
            let (dims, order) = match layout {
                Layout::TapRows => (
                    [channels_in, kernel_height, kernel_width, channels_out],
                    [3, 0, 1, 2],
                ),
                Layout::PositionRows => (
                    [channels_out, kernel_height, kernel_width, channels_in],
                    [0, 3, 1, 2],
                ),
            };
            permuted(&HostValues::contiguous(&sum, dims), 0..dims[0], order)
        })
    })
    .flatten()?;
    Some(B::float_from_data(
        TensorData::new(weight, weight_shape.clone()),
        &device,
    ))
}

/// The input's patches: what im2col needs.
struct Patches<'a> {
    /// `[batch, channels_in, height, width]`, unpadded.
    x: HostValues<'a, 4>,
    /// `[height_out, width_out]`.
    size_out: [usize; 2],
    /// `[kernel_height, kernel_width]`.
    kernel: [usize; 2],
    options: &'a ConvOptions<2>,
}

impl Patches<'_> {
    /// `cols` of [`Layout::TapRows`] for `images`: row `(c, u, v)`, column `(image, i, j)` holds
    /// `x[image, c, s i + d u - p, s j + d v - p]`, zero where that falls in the padding.
    ///
    /// # Shapes
    /// - output: `[channels_in * kernel_height * kernel_width, images * height_out * width_out]`
    fn tap_rows(&self, images: Range<usize>) -> Vec<f32> {
        let [_, channels_in, height, width] = self.x.dims;
        let [height_out, width_out] = self.size_out;
        let [kernel_height, kernel_width] = self.kernel;
        let strides = self.x.strides;
        let taps = channels_in * kernel_height * kernel_width;
        let positions = images.len() * height_out * width_out;
        // One row per tap, the rows on all cores. Written in order, never zeroed first: at 4-byte
        // entries, zeroing the buffer would cost as much memory traffic as filling it.
        let fill = |tap: usize, row: &mut [MaybeUninit<f32>]| {
            let c = tap / (kernel_height * kernel_width);
            let u = tap / kernel_width % kernel_height;
            let v = tap % kernel_width;
            let along_rows = Span::new(self.options, 0, u, height, height_out);
            let along_cols = Span::new(self.options, 1, v, width, width_out);
            let step = along_cols.stride * strides[3];
            let inside = along_cols.outputs.len();
            let mut row = Fill::new(row);
            for image in images.clone() {
                for i in 0..height_out {
                    if !along_rows.outputs.contains(&i) {
                        row.zeros(width_out);
                        continue;
                    }
                    let start = image * strides[0]
                        + c * strides[1]
                        + along_rows.input(i) * strides[2]
                        + along_cols.start * strides[3];
                    row.zeros(along_cols.outputs.start);
                    row.run(self.x.values, start, step, inside);
                    row.zeros(width_out - along_cols.outputs.end);
                }
            }
            row.finish();
        };
        // SAFETY: `fill` writes each row whole, checked by `Fill::finish`.
        unsafe { written(taps * positions, |cols| fill_blocks(cols, positions, fill)) }
    }

    /// `cols^T` of [`Layout::PositionRows`] for `images`: row `(image, i, j)`, column `(u, v, c)`
    /// holds `x[image, c, s i + d u - p, s j + d v - p]`, zero where that falls in the padding.
    ///
    /// # Shapes
    /// - output: `[images * height_out * width_out, kernel_height * kernel_width * channels_in]`
    fn position_rows(&self, images: Range<usize>) -> Vec<f32> {
        let [_, channels_in, height, width] = self.x.dims;
        let [height_out, width_out] = self.size_out;
        let [kernel_height, kernel_width] = self.kernel;
        let strides = self.x.strides;
        let along_rows: Vec<Span> = (0..kernel_height)
            .map(|u| Span::new(self.options, 0, u, height, height_out))
            .collect();
        let along_cols: Vec<Span> = (0..kernel_width)
            .map(|v| Span::new(self.options, 1, v, width, width_out))
            .collect();
        let per_image = height_out * width_out * kernel_height * kernel_width * channels_in;
        // One block per image, the blocks on all cores.
        let fill = |k: usize, block: &mut [MaybeUninit<f32>]| {
            let image = images.start + k;
            let mut block = Fill::new(block);
            for i in 0..height_out {
                for j in 0..width_out {
                    for rows_span in &along_rows {
                        for cols_span in &along_cols {
                            if !(rows_span.outputs.contains(&i) && cols_span.outputs.contains(&j)) {
                                block.zeros(channels_in);
                                continue;
                            }
                            let start = image * strides[0]
                                + rows_span.input(i) * strides[2]
                                + cols_span.input(j) * strides[3];
                            block.run(self.x.values, start, strides[1], channels_in);
                        }
                    }
                }
            }
            block.finish();
        };
        // SAFETY: `fill` writes each image's block whole, checked by `Fill::finish`.
        unsafe {
            written(images.len() * per_image, |cols| {
                fill_blocks(cols, per_image, fill)
            })
        }
    }
}

/// One kernel tap's view of one axis: the outputs whose input index `s o + d tap - p` falls inside
/// the image, and where.
struct Span {
    /// Outputs that read inside the image; the others read padding (zeros).
    outputs: Range<usize>,
    /// Input index of output `outputs.start`.
    start: usize,
    /// The convolution's stride along the axis.
    stride: usize,
}

impl Span {
    fn new(
        options: &ConvOptions<2>,
        axis: usize,
        tap: usize,
        size: usize,
        size_out: usize,
    ) -> Self {
        let stride = options.stride[axis];
        // Input index of output 0, which may lie in the padding before the image.
        let offset = (options.dilation[axis] * tap) as isize - options.padding[axis] as isize;
        let first = if offset >= 0 {
            0
        } else {
            offset.unsigned_abs().div_ceil(stride)
        };
        // Outputs `o` with `offset + s o <= size - 1`.
        let room = size as isize - 1 - offset;
        let end = if room >= 0 {
            (room as usize / stride + 1).min(size_out)
        } else {
            0
        };
        let outputs = first..end.max(first);
        let start = (offset + (first * stride) as isize).max(0) as usize;
        Self {
            outputs,
            start,
            stride,
        }
    }

    /// Input index of output `o` (one of `outputs`).
    fn input(&self, o: usize) -> usize {
        self.start + (o - self.outputs.start) * self.stride
    }
}

/// A one-group convolution by im2col on the host and one [`KernelBackend::host_matmul`] per chunk
/// of images:
/// `y = W cols + b`, with `W: [c_out, taps]` the kernel as a matrix and `cols: [taps, K]` as in
/// [`Layout::TapRows`]. `None` when the backend does not lend the tensors' values as `f32`.
///
/// # Shapes
/// - x: `[batch, channels_in, height, width]`, padded by `options.padding` on both sides
/// - weight: `[channels_out, channels_in, kernel_height, kernel_width]`
/// - bias: `[channels_out]`
/// - output: `[batch, channels_out, height_out, width_out]`
// Only flex runs it (see `KernelBackend for Flex`): ndarray's own convolution is faster there.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn conv2d<B: KernelBackend>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    bias: Option<&FloatTensor<B>>,
    options: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let [channels_out, channels_in, kernel_height, kernel_width] = weight.shape().dims();
    let [batch, _, height, width] = x.shape().dims();
    let size_out = |axis: usize, size: usize, kernel: usize| {
        let span = options.dilation[axis] * (kernel - 1) + 1;
        (size + 2 * options.padding[axis])
            .checked_sub(span)
            .map(|room| room / options.stride[axis] + 1)
    };
    let height_out = size_out(0, height, kernel_height)?;
    let width_out = size_out(1, width, kernel_width)?;
    let taps = channels_in * kernel_height * kernel_width;
    let per_image = height_out * width_out;
    let device = B::float_device(x);
    // The kernel as `[channels_out, taps]`, row-major.
    let kernel = B::with_values(weight, |weight: HostValues<'_, 4>| {
        permuted(&weight, 0..channels_out, [0, 1, 2, 3])
    })?;
    let bias = match bias {
        Some(bias) => vector_values::<B>(bias)?,
        None => vec![0.0; channels_out],
    };
    let output = B::with_values(x, |x: HostValues<'_, 4>| {
        let patches = Patches {
            x,
            size_out: [height_out, width_out],
            kernel: [kernel_height, kernel_width],
            options,
        };
        let image_len = channels_out * per_image;
        let fill = |output: &mut [MaybeUninit<f32>]| {
            for images in image_chunks(batch, taps, per_image) {
                let positions = images.len() * per_image;
                let target = &mut output[images.start * image_len..images.end * image_len];
                let cols = patches.tap_rows(images);
                // [c_out, images * per_image]
                let product = B::host_matmul(kernel.clone(), cols, [channels_out, taps, positions]);
                // `[c_out, images, per_image]` into `[images, c_out, per_image]`, plus the bias,
                // an image per core.
                fill_blocks(target, image_len, |k, image| {
                    let runs = image.chunks_exact_mut(per_image);
                    for (o, (&b, run)) in bias.iter().zip(runs).enumerate() {
                        let source = &product[o * positions + k * per_image..][..per_image];
                        for (t, v) in run.iter_mut().zip(source) {
                            t.write(v + b);
                        }
                    }
                });
            }
        };
        // SAFETY: the chunks cover the batch, and each image's `c_out` runs of `per_image`
        // values are written from the product's rows (`[..per_image]` panics on a short one).
        unsafe { written(batch * image_len, fill) }
    })?;
    Some(B::float_from_data(
        TensorData::new(output, [batch, channels_out, height_out, width_out]),
        &device,
    ))
}

/// `dL/dx` by col2im on the host: the patch gradients `dcols = W^T G: [taps, K]` from one
/// [`KernelBackend::host_matmul`] per chunk of images, each added back onto the input position it was read from. No
/// spread or padded copy of the output gradient, whatever the stride, padding or dilation.
/// `None` when the backend does not lend the tensors' values as `f32`.
///
/// # Shapes
/// - x_shape: `[batch, channels_in, height, width]`, unpadded
/// - weight: `[channels_out, channels_in, kernel_height, kernel_width]`
/// - grad: `[batch, channels_out, height_out, width_out]`
/// - output: `x_shape`
pub(super) fn input_gradient<B: KernelBackend>(
    x_shape: &Shape,
    weight: &FloatTensor<B>,
    grad: &FloatTensor<B>,
    options: &ConvOptions<2>,
) -> Option<FloatTensor<B>> {
    let [batch, channels_in, height, width] = x_shape.dims();
    let [channels_out, _, kernel_height, kernel_width] = weight.shape().dims();
    let taps = channels_in * kernel_height * kernel_width;
    let device = B::float_device(grad);
    // The kernel as `[taps, channels_out]`, row-major (taps ordered `(c, u, v)`).
    let kernel_t = B::with_values(weight, |weight: HostValues<'_, 4>| {
        permuted(&weight, 0..channels_out, [1, 2, 3, 0])
    })?;
    let dx = B::with_values(grad, |grad: HostValues<'_, 4>| {
        let [_, _, height_out, width_out] = grad.dims;
        let per_image = height_out * width_out;
        let image_len = channels_in * height * width;
        let rows: Vec<Span> = (0..kernel_height)
            .map(|u| Span::new(options, 0, u, height, height_out))
            .collect();
        let cols: Vec<Span> = (0..kernel_width)
            .map(|v| Span::new(options, 1, v, width, width_out))
            .collect();
        let fill = |dx: &mut [MaybeUninit<f32>]| {
            for images in image_chunks(batch, taps, per_image) {
                let positions = images.len() * per_image;
                // [c_out, images, h_out, w_out]
                let grad_t = permuted(&grad, images.clone(), [1, 0, 2, 3]);
                // [taps, images * h_out * w_out]
                let patches =
                    B::host_matmul(kernel_t.clone(), grad_t, [taps, channels_out, positions]);
                let target = &mut dx[images.start * image_len..images.end * image_len];
                // An image per core, each adding its patches back onto its own input.
                fill_blocks(target, image_len, |k, image| {
                    let image = zeroed(image);
                    let mut patch_rows = patches.chunks_exact(positions);
                    for plane in image.chunks_exact_mut(height * width) {
                        for along_rows in &rows {
                            for along_cols in &cols {
                                let Some(patch_row) = patch_rows.next() else {
                                    unreachable!("the product has a row per tap");
                                };
                                let len = along_cols.outputs.len();
                                for i in along_rows.outputs.clone() {
                                    let first =
                                        k * per_image + i * width_out + along_cols.outputs.start;
                                    let values = &patch_row[first..first + len];
                                    let row = along_rows.input(i) * width;
                                    let row = &mut plane[row + along_cols.start..row + width];
                                    if along_cols.stride == 1 {
                                        // Contiguous both sides: a loop the compiler vectorises.
                                        for (t, v) in row[..len].iter_mut().zip(values) {
                                            *t += *v;
                                        }
                                    } else {
                                        let targets = row.iter_mut().step_by(along_cols.stride);
                                        for (t, v) in targets.zip(values) {
                                            *t += *v;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            }
        };
        // SAFETY: the chunks cover the batch, and `zeroed` initialises each image's block before
        // its patches are added onto it.
        unsafe { written(batch * image_len, fill) }
    })?;
    Some(B::float_from_data(
        TensorData::new(dx, x_shape.clone()),
        &device,
    ))
}

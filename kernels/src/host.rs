//! The tensors' values as the host sees them, and the one matrix product every host kernel runs.
//!
//! The CPU backends keep their tensors in host memory, so a kernel can read the values where they
//! lie ([`HostValues`], lent by [`crate::KernelBackend::with_values`]) in whatever layout the previous op
//! left them, and hand one large product to the backend's own gemm
//! ([`crate::KernelBackend::host_matmul`]): the `gemm` crate on flex, `matrixmultiply` on ndarray,
//! called directly because the backends' `float_matmul` copies both operands first.

use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Adds equal-length partial sums element-wise, in the order given. A kernel that sums a gradient
/// over blocks of rows on the cores collects the blocks' sums and adds them here, rather than with
/// rayon's `reduce`, whose tree of additions follows the work stealing: float addition is not
/// associative, so that would change a gradient's last bits from run to run, and with them the
/// weights and scores of a run that should repeat exactly.
pub(crate) fn add_in_order(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    parts.into_iter().fold(vec![0.0; len], |mut total, part| {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
        total
    })
}

/// A tensor's `f32` values as the host sees them: element `[i_0, i_1, ...]` is
/// `values[sum_k i_k strides[k]]`. What [`crate::KernelBackend::with_values`] lends.
#[derive(Debug, Clone, Copy)]
pub struct HostValues<'a, const D: usize> {
    /// The values, starting at element `[0, 0, ...]`.
    pub values: &'a [f32],
    /// Elements between neighbours along each axis.
    pub strides: [usize; D],
    /// The tensor's shape.
    pub dims: [usize; D],
}

impl<'a, const D: usize> HostValues<'a, D> {
    /// Row-major values of shape `dims`.
    pub fn contiguous(values: &'a [f32], dims: [usize; D]) -> Self {
        let mut strides = [1; D];
        for axis in (0..D.saturating_sub(1)).rev() {
            strides[axis] = strides[axis + 1] * dims[axis + 1];
        }
        Self {
            values,
            strides,
            dims,
        }
    }

    /// Values laid out with `strides` (in elements, any sign), `offset` elements into `storage`;
    /// `None` when a stride is negative or the last element falls outside `storage`.
    pub fn strided(
        storage: &'a [f32],
        offset: usize,
        strides: &[isize],
        dims: &[usize],
    ) -> Option<Self> {
        let dims: [usize; D] = dims.try_into().ok()?;
        let strides: [isize; D] = strides.try_into().ok()?;
        let mut unsigned = [0; D];
        let mut last = offset;
        for axis in 0..D {
            unsigned[axis] = usize::try_from(strides[axis]).ok()?;
            last += dims[axis].saturating_sub(1) * unsigned[axis];
        }
        if dims.contains(&0) || last >= storage.len() {
            return None;
        }
        Some(Self {
            values: &storage[offset..],
            strides: unsigned,
            dims,
        })
    }
}

impl<'a> HostValues<'a, 4> {
    /// The values in row-major order: lent as they lie when they already are, copied otherwise.
    pub(crate) fn row_major(&self) -> Cow<'a, [f32]> {
        if self.strides == Self::contiguous(self.values, self.dims).strides {
            Cow::Borrowed(&self.values[..self.dims.iter().product()])
        } else {
            Cow::Owned(permuted(self, 0..self.dims[0], [0, 1, 2, 3]))
        }
    }
}

impl<'a> HostValues<'a, 2> {
    /// The values in row-major order: lent as they lie when they already are, copied otherwise
    /// (as a `[1, 1, rows, cols]` tensor).
    pub(crate) fn row_major(&self) -> Cow<'a, [f32]> {
        let [rows, cols] = self.dims;
        let [row_stride, col_stride] = self.strides;
        let whole = rows * cols;
        HostValues {
            values: self.values,
            strides: [whole, whole, row_stride, col_stride],
            dims: [1, 1, rows, cols],
        }
        .row_major()
    }
}

impl<'a> HostValues<'a, 1> {
    /// The values in order: lent as they lie when they are adjacent, copied otherwise.
    pub(crate) fn row_major(&self) -> Cow<'a, [f32]> {
        let [len] = self.dims;
        match self.strides {
            [1] => Cow::Borrowed(&self.values[..len]),
            [stride] => Cow::Owned((0..len).map(|i| self.values[i * stride]).collect()),
        }
    }
}

/// `data`'s values, lent to `f` as a row-major [`HostValues`]; `None` unless they are `f32`.
pub(crate) fn lend_data<R, const D: usize>(
    data: &TensorData,
    f: impl FnOnce(HostValues<'_, D>) -> R,
) -> Option<R> {
    let dims: [usize; D] = data.shape.as_slice().try_into().ok()?;
    let values = data.as_slice::<f32>().ok()?;
    Some(f(HostValues::contiguous(values, dims)))
}

/// A matrix as the host sees it, in a slice: element `(r, c)` is `values[r row_stride + c
/// col_stride]`. A transpose is the same values with the strides swapped, so the gemm reads it
/// where it lies.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// The values, from element `(0, 0)`.
    pub values: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements between one row and the next.
    pub row_stride: usize,
    /// Elements between one column and the next.
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// `values` as a row-major `[rows, cols]` matrix.
    pub fn row_major(values: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            values,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose: the same values, read down the columns.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `first..first + rows` of the matrix.
    pub(crate) fn rows_from(self, first: usize, rows: usize) -> Self {
        assert!(first + rows <= self.rows, "host gemm: rows past the matrix");
        Self {
            values: &self.values[(first * self.row_stride).min(self.values.len())..],
            rows,
            ..self
        }
    }

    /// Panics unless every element lies inside `values` (what the gemm calls rely on).
    #[cfg_attr(
        not(any(feature = "flex", feature = "ndarray", test)),
        allow(dead_code)
    )]
    pub(crate) fn check(&self) {
        let last = (self.rows.saturating_sub(1)) * self.row_stride
            + (self.cols.saturating_sub(1)) * self.col_stride;
        assert!(
            self.rows * self.cols == 0 || last < self.values.len(),
            "host gemm: a {}x{} matrix with strides ({}, {}) reaches past its {} values",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
            self.values.len()
        );
    }

    /// The values, row-major.
    pub(crate) fn to_row_major(self) -> Vec<f32> {
        // SAFETY: every row writes its `cols` values, checked by `Fill::finish`.
        unsafe {
            written(self.rows * self.cols, |out| {
                let mut out = Fill::new(out);
                for r in 0..self.rows {
                    out.run(self.values, r * self.row_stride, self.col_stride, self.cols);
                }
                out.finish();
            })
        }
    }
}

impl<'a> From<HostValues<'a, 2>> for Matrix<'a> {
    /// A 2-D tensor's values as a matrix, read where they lie.
    fn from(v: HostValues<'a, 2>) -> Self {
        Self {
            values: v.values,
            rows: v.dims[0],
            cols: v.dims[1],
            row_stride: v.strides[0],
            col_stride: v.strides[1],
        }
    }
}

/// A `[n]` tensor's values (a layer's parameters per channel or unit), copied off the backend.
pub(crate) fn vector_values<B: crate::KernelBackend>(
    t: &burn::tensor::ops::FloatTensor<B>,
) -> Option<Vec<f32>> {
    B::with_values(t, |v: HostValues<'_, 1>| v.row_major().into_owned())
}

/// Checks the shapes of `dst = a b` (or `dst += a b`) and returns `[m, k, n]`.
#[cfg(any(feature = "flex", feature = "ndarray", test))]
fn product_shape(dst_len: usize, a: &Matrix<'_>, b: &Matrix<'_>) -> [usize; 3] {
    a.check();
    b.check();
    assert!(
        a.cols == b.rows && dst_len == a.rows * b.cols,
        "host gemm: {}x{} times {}x{} into {} values",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst_len
    );
    [a.rows, a.cols, b.cols]
}

/// `dst = a b`, or `dst += a b` when `accumulate`, with `dst` row-major `[a.rows, b.cols]`, by
/// the `gemm` crate (flex's gemm).
#[cfg(feature = "flex")]
pub(crate) fn gemm_into(dst: &mut [f32], a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
    // SAFETY: `dst` is initialised, so it may be read when accumulating.
    unsafe { gemm_raw(dst.as_mut_ptr(), dst.len(), a, b, accumulate) }
}

/// `dst = a b` into memory not written yet (a fresh output), by the `gemm` crate, which writes
/// every element without reading one: no zeroing first. Returns `dst`, now initialised.
#[cfg(feature = "flex")]
pub(crate) fn gemm_fresh<'d>(
    dst: &'d mut [MaybeUninit<f32>],
    a: Matrix<'_>,
    b: Matrix<'_>,
) -> &'d mut [f32] {
    // SAFETY: with `accumulate` false the gemm writes all of `dst` and reads none of it (its
    // `read_dst` is false), so afterwards every element is an initialised `f32`.
    unsafe {
        gemm_raw(dst.as_mut_ptr().cast(), dst.len(), a, b, false);
        &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32])
    }
}

/// [`gemm_into`] on `len` values at `dst`.
///
/// # Safety
/// `dst` points to `len` writable `f32`s that nothing else accesses meanwhile, initialised when
/// `accumulate`.
#[cfg(feature = "flex")]
unsafe fn gemm_raw(dst: *mut f32, len: usize, a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
    let [m, k, n] = product_shape(len, &a, &b);
    // Threads only pay off on a large product (flex's own threshold), and not inside a task of
    // a kernel that already runs one per core (the LSTM's blocks of rows, attention's sequences).
    let parallelism = if m * n * k >= 192 * 192 * 192 && rayon::current_thread_index().is_none() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `product_shape` checked that every element of `a` and `b` their strides reach lies
    // in their slices, and that `dst` holds `m n` values, written row-major; the caller vouches
    // that `dst` is not aliased, and initialised where it is read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst` set to zeros, as the initialised slice it now is.
pub(crate) fn zeroed(dst: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    dst.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A vector of `len` values that `write` initialises, every one of them, in the memory the vector
/// will own: no zeroing first, for outputs that a gemm writes whole ([`gemm_fresh`]).
///
/// # Safety
/// `write` must initialise all `len` elements of the slice it is handed.
pub(crate) unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    write(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`, and the caller vouches that `write` initialised
    // the first `len` elements.
    unsafe { values.set_len(len) };
    values
}

/// `a b` in a new row-major vector `[a.rows, b.cols]`, written by the backend's
/// [`crate::KernelBackend::host_gemm_fresh`] (on flex without zeroing it first).
pub(crate) fn product<B: crate::KernelBackend>(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
    // SAFETY: `host_gemm_fresh` initialises the whole of the slice it is handed.
    unsafe {
        written(a.rows * b.cols, |dst| {
            B::host_gemm_fresh(dst, a, b);
        })
    }
}

/// `dst = a b`, or `dst += a b` when `accumulate`, with `dst` row-major `[a.rows, b.cols]`, by
/// `matrixmultiply` (ndarray's gemm).
#[cfg(any(feature = "ndarray", test))]
pub(crate) fn sgemm_into(dst: &mut [f32], a: Matrix<'_>, b: Matrix<'_>, accumulate: bool) {
    let [m, k, n] = product_shape(dst.len(), &a, &b);
    if m * n == 0 {
        return;
    }
    // SAFETY: as in `gemm_into`: every element the strides reach is in bounds, and `dst` is not
    // aliased.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.values.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.values.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            dst.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `a b` for row-major `a: [m, k]` and `b: [k, n]`, by `product` (ndarray's gemm above; flex's
/// writes a fresh output instead, see its `host_matmul`).
#[cfg(any(feature = "ndarray", test))]
pub(crate) fn matmul_with(
    product: fn(&mut [f32], Matrix<'_>, Matrix<'_>, bool),
    a: &[f32],
    b: &[f32],
    [m, k, n]: [usize; 3],
) -> Vec<f32> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "host_matmul: shapes and lengths differ"
    );
    let mut c = vec![0.0f32; m * n];
    product(
        &mut c,
        Matrix::row_major(a, m, k),
        Matrix::row_major(b, k, n),
        false,
    );
    c
}

/// `a b` for row-major `a: [m, k]` and `b: [k, n]` through the backend's matmul: the default of
/// [`crate::KernelBackend::host_matmul`].
pub(crate) fn matmul_through<B: Backend>(
    a: Vec<f32>,
    b: Vec<f32>,
    [m, k, n]: [usize; 3],
) -> Vec<f32> {
    let device = Default::default();
    let product = B::float_matmul(
        B::float_from_data(TensorData::new(a, [m, k]), &device),
        B::float_from_data(TensorData::new(b, [k, n]), &device),
    );
    burn::tensor::read_sync(B::float_into_data(product))
        .ok()
        .and_then(|data| data.into_vec::<f32>().ok())
        .expect("a CPU backend reads back the f32 matmul it computed")
}

/// Outputs of at least this many values are filled on all cores: below it, waking the other
/// threads costs more than the copy (a few microseconds against ~1 ns a value).
pub(crate) const PARALLEL_VALUES: usize = 1 << 15;

/// `fill` run on each `block`-sized part of `out` with the part's index, on all cores when `out`
/// is large ([`PARALLEL_VALUES`]), else in order on this thread.
pub(crate) fn fill_blocks<T: Send>(
    out: &mut [T],
    block: usize,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    // A zero `block` with values to fill panics in `chunks_mut`: the callers hand the parts to
    // `written` as initialised, so no value may be left unfilled.
    if out.is_empty() {
        return;
    }
    if out.len() >= PARALLEL_VALUES && out.len() > block {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, part)| fill(i, part));
    } else {
        out.chunks_mut(block)
            .enumerate()
            .for_each(|(i, part)| fill(i, part));
    }
}

/// The entries of a 4-D tensor whose first index is in `images` (a chunk of a batch, or all of
/// the first axis), row-major with its axes in the order `order`. Each index along the output's
/// first axis is a block of its own, filled on all cores when the output is large.
///
/// # Shapes
/// - tensor: `[d0, d1, d2, d3]`
/// - output: the axes of `[images.len(), d1, d2, d3]` permuted by `order`, flattened
pub(crate) fn permuted(
    tensor: &HostValues<'_, 4>,
    images: Range<usize>,
    order: [usize; 4],
) -> Vec<f32> {
    let mut dims = tensor.dims;
    dims[0] = images.len();
    let origin = images.start * tensor.strides[0];
    let [n0, n1, n2, n3] = order.map(|axis| dims[axis]);
    let [s0, s1, s2, s3] = order.map(|axis| tensor.strides[axis]);
    let values = tensor.values;
    // A transpose of the last two axes goes in 8x8 tiles: eight reads along the source's rows,
    // eight writes along the output's, each tile held in registers. Otherwise runs along the last
    // axis are copied in order.
    const TILE: usize = 8;
    let transpose = s3 != 1 && n3 != 1;
    let fill = |a: usize, block: &mut [MaybeUninit<f32>]| {
        if !transpose {
            let mut out = Fill::new(block);
            for b in 0..n1 {
                for c in 0..n2 {
                    out.run(values, origin + a * s0 + b * s1 + c * s2, s3, n3);
                }
            }
            out.finish();
            return;
        }
        for (b, plane) in block.chunks_exact_mut(n2 * n3).enumerate() {
            let base = origin + a * s0 + b * s1;
            for c0 in (0..n2).step_by(TILE) {
                for d0 in (0..n3).step_by(TILE) {
                    let (cs, ds) = ((n2 - c0).min(TILE), (n3 - d0).min(TILE));
                    if cs == TILE && ds == TILE && s2 == 1 {
                        let mut tile = [[0.0f32; TILE]; TILE];
                        for (d, row) in tile.iter_mut().enumerate() {
                            let start = base + c0 + (d0 + d) * s3;
                            row.copy_from_slice(&values[start..start + TILE]);
                        }
                        for c in 0..TILE {
                            let target = &mut plane[(c0 + c) * n3 + d0..][..TILE];
                            for (d, t) in target.iter_mut().enumerate() {
                                t.write(tile[d][c]);
                            }
                        }
                    } else {
                        for c in c0..c0 + cs {
                            for d in d0..d0 + ds {
                                plane[c * n3 + d].write(values[base + c * s2 + d * s3]);
                            }
                        }
                    }
                }
            }
        }
    };
    // SAFETY: each block is written whole: in order, checked by `Fill::finish`, or tile by tile,
    // the tiles covering every `(c, d)` of every plane.
    unsafe {
        written(n0 * n1 * n2 * n3, |out| {
            fill_blocks(out, n1 * n2 * n3, fill)
        })
    }
}

/// Values written in order into memory not written yet: `Vec::extend` on a slice, so that several
/// threads can each fill their own part of one output ([`fill_blocks`]).
pub(crate) struct Fill<'a> {
    out: &'a mut [MaybeUninit<f32>],
    at: usize,
}

impl<'a> Fill<'a> {
    pub(crate) fn new(out: &'a mut [MaybeUninit<f32>]) -> Self {
        Self { out, at: 0 }
    }

    /// Writes `len` zeros.
    pub(crate) fn zeros(&mut self, len: usize) {
        self.out[self.at..self.at + len].fill(MaybeUninit::new(0.0));
        self.at += len;
    }

    /// Writes the `len` values `source[start]`, `source[start + step]`, ...
    pub(crate) fn run(&mut self, source: &[f32], start: usize, step: usize, len: usize) {
        let out = &mut self.out[self.at..self.at + len];
        if step == 1 || len == 1 {
            for (o, v) in out.iter_mut().zip(&source[start..start + len]) {
                o.write(*v);
            }
        } else {
            for (k, o) in out.iter_mut().enumerate() {
                o.write(source[start + k * step]);
            }
        }
        self.at += len;
    }

    /// Panics unless the whole slice was written: what the `unsafe` blocks that hand a `Fill`'s
    /// slice on as initialised rely on.
    pub(crate) fn finish(self) {
        assert_eq!(self.at, self.out.len(), "host fill: values left unwritten");
    }
}

//! A matrix product whose right-hand side is packed once and used many times: the LSTM's `W_h`,
//! which every one of a sequence's 128 steps multiplies (`z += h W_h` forward, `dh = dz W_h^T`
//! backward) with only one block of batch rows on the left.
//!
//! A general gemm (the `gemm` crate under `flex`, `matrixmultiply` under `ndarray`) copies the
//! right-hand side into panels on every call, and with a block of 32 rows on the left it has too
//! few rows to win back that copy: on `shakespeare-lstm`'s steps it ran at about a third of the
//! core's peak. Here `W` is cut into panels of [`NR`] columns once per pass; each step's product
//! then streams the panels through one register-blocked kernel, the BLIS-style microkernel of
//! `MR x NR` accumulators (6 x 16: twelve 8-wide registers, one fused multiply-add per value of
//! `W` and row of `h`), over blocks of [`KC`] of the shared dimension so that a panel's block
//! stays in the core's cache while the rows' tiles pass over it.
//!
//! The kernel needs AVX2 and FMA (x86-64 CPUs since 2013-2015); [`Packed::new`] returns `None`
//! on any other CPU, and the caller keeps its general gemm. Where the CPU has AVX-512, `W` is cut
//! into panels of [`NR_512`] columns for a kernel of [`MR_512`] x 32 accumulators, two 16-wide
//! registers a row: twice the values per multiply-add, enough independent sums to keep both FMA
//! units busy, and fewer loads than multiply-adds.

use crate::KernelBackend;
use crate::host::Matrix;

/// Columns per panel: two 8-wide registers.
const NR: usize = 16;
/// Rows per tile of the left-hand side for the AVX2 kernel: with `NR` that is 12 accumulators
/// out of 16 registers.
const MR: usize = 6;
/// Columns per panel for the AVX-512 kernel: two 16-wide registers.
const NR_512: usize = 32;
/// Rows per tile for the AVX-512 kernel: 16 accumulators out of 32 registers, more than the 8
/// that two FMA units with a latency of four cycles need in flight, and per value of the shared
/// dimension two loads of `W` and 8 broadcasts for 16 multiply-adds.
const MR_512: usize = 8;
/// The shared dimension in blocks of this many: a panel's block (`KC NR` values, 16 KiB) and a
/// tile's (`MR KC`, 6 KiB) fit together in a 32 KiB level-1 cache.
const KC: usize = 256;

/// The right-hand side `[k, n]` of a product, in panels of `nr` columns ([`NR`], or [`NR_512`]
/// for the AVX-512 kernel; the last one padded with zeros): panel `p` holds `k` rows of `nr`
/// values, column `p nr + j` of row `kk` at `(p k + kk) nr + j`.
#[derive(Debug)]
pub(crate) struct Packed {
    panels: Vec<f32>,
    k: usize,
    n: usize,
    kernel: Kernel,
}

/// The register-blocked kernels, by the vector width the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Two 8-wide registers per row, [`MR`] rows.
    Avx2,
    /// Two 16-wide registers per row, [`MR_512`] rows.
    Avx512,
}

impl Kernel {
    /// The widest this CPU runs, or `None` without AVX2 and FMA.
    fn detect() -> Option<Self> {
        if !supported() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Self::Avx512);
        }
        Some(Self::Avx2)
    }

    /// Rows per tile.
    fn rows(self) -> usize {
        match self {
            Self::Avx2 => MR,
            Self::Avx512 => MR_512,
        }
    }

    /// Columns per panel.
    fn cols(self) -> usize {
        match self {
            Self::Avx2 => NR,
            Self::Avx512 => NR_512,
        }
    }
}

impl Packed {
    /// `b` packed, or `None` when this CPU has no AVX2 and FMA (then use a general gemm).
    pub(crate) fn new(b: Matrix<'_>) -> Option<Self> {
        Some(Self::with_kernel(b, Kernel::detect()?))
    }

    /// `b` packed for `kernel`, which this CPU must run.
    fn with_kernel(b: Matrix<'_>, kernel: Kernel) -> Self {
        b.check();
        let (k, n, nr) = (b.rows, b.cols, kernel.cols());
        let mut panels = vec![0.0f32; n.div_ceil(nr) * k * nr];
        for (p, panel) in panels.chunks_exact_mut(k * nr).enumerate() {
            let cols = nr.min(n - p * nr);
            // Read along whichever of the two strides is contiguous.
            if b.row_stride < b.col_stride {
                for j in 0..cols {
                    let column = (p * nr + j) * b.col_stride;
                    for kk in 0..k {
                        panel[kk * nr + j] = b.values[column + kk * b.row_stride];
                    }
                }
            } else {
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    for (j, v) in row[..cols].iter_mut().enumerate() {
                        *v = b.values[kk * b.row_stride + (p * nr + j) * b.col_stride];
                    }
                }
            }
        }
        Self {
            panels,
            k,
            n,
            kernel,
        }
    }

    /// `dst = a b`, or `dst += a b` when `accumulate`, with `dst` row-major `[a.rows, n]`. Runs
    /// on the calling thread.
    pub(crate) fn gemm(&self, dst: &mut [f32], a: Matrix<'_>, accumulate: bool) {
        let (m, k, n) = (a.rows, self.k, self.n);
        assert!(
            a.cols == k,
            "packed gemm: `a` has {} columns for {k} rows of `b`",
            a.cols
        );
        assert!(
            dst.len() == m * n,
            "packed gemm: `dst` holds {} values, not {m} x {n}",
            dst.len()
        );
        if m * n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                dst.fill(0.0);
            }
            return;
        }
        a.check();
        // The kernel reads each row of `a` along its columns; anything else is copied so first.
        let contiguous;
        let (a_values, lda) = if a.col_stride == 1 {
            (a.values, a.row_stride)
        } else {
            contiguous = a.to_row_major();
            (&contiguous[..], k)
        };
        let (mr, nr) = (self.kernel.rows(), self.kernel.cols());
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let add = accumulate || k0 > 0;
            for (p, panel) in self.panels.chunks_exact(k * nr).enumerate() {
                let block = &panel[k0 * nr..][..kc * nr];
                let cols = nr.min(n - p * nr);
                for i0 in (0..m).step_by(mr) {
                    let rows = mr.min(m - i0);
                    let a_tile = &a_values[i0 * lda + k0..];
                    let c_tile = &mut dst[i0 * n + p * nr..];
                    // SAFETY: the CPU runs `self.kernel` (`Kernel::detect`); the tile's `rows` rows
                    // of `a` (`kc` values each, `lda` apart) lie in `a_values` by the bound
                    // checked above, the block holds `kc nr` values, and the tile's `rows` rows
                    // of `dst` (`cols` values each, `n` apart) lie in `dst`, which is `m n`.
                    unsafe {
                        tile(
                            self.kernel,
                            rows,
                            kc,
                            a_tile,
                            lda,
                            block,
                            c_tile,
                            n,
                            cols,
                            add,
                        );
                    }
                }
            }
        }
    }
}

/// A weight every step of a sequence multiplies (the LSTM's `W_h` forward, `W_h^T` backward):
/// packed once for the whole sequence where the CPU runs [`Packed`]'s kernel and the sequence is
/// long enough to repay the copy, else read where it lies by the backend's gemm.
pub(crate) struct StepWeight<'a> {
    matrix: Matrix<'a>,
    packed: Option<Packed>,
}

impl<'a> StepWeight<'a> {
    /// Packing reads and writes the weight once, as one step's product reads it: worth it from a
    /// few steps on (not for generation's one step at a time).
    pub(crate) fn new(matrix: Matrix<'a>, steps: usize) -> Self {
        let packed = if steps >= 4 {
            Packed::new(matrix)
        } else {
            None
        };
        Self { matrix, packed }
    }

    /// `dst = a W`, or `dst += a W` when `accumulate`, on the calling thread (inside a block's
    /// task).
    pub(crate) fn gemm<B: KernelBackend>(&self, dst: &mut [f32], a: Matrix<'_>, accumulate: bool) {
        match &self.packed {
            Some(packed) => packed.gemm(dst, a, accumulate),
            None => B::host_gemm(dst, a, self.matrix, accumulate),
        }
    }

    /// The weight's columns.
    pub(crate) fn cols(&self) -> usize {
        self.matrix.cols
    }
}

/// Whether this CPU runs the kernel: AVX2 and FMA.
fn supported() -> bool {
    crate::activation::avx2_fma()
}

/// One tile of `rows <= kernel.rows()` rows and `cols <= kernel.cols()` columns of `c`, over
/// `kc` of the shared dimension: the kernel for its number of rows.
///
/// # Safety
/// The CPU runs `kernel`, `a` holds `rows` rows of `kc` values `lda` apart, `b` holds `kc
/// kernel.cols()` values, and `c` holds `rows` rows of `cols` values `ldc` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kernel: Kernel,
    rows: usize,
    kc: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let args = (
            a.as_ptr(),
            lda,
            b.as_ptr(),
            c.as_mut_ptr(),
            ldc,
            cols,
            accumulate,
        );
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match (kernel, rows) {
                (Kernel::Avx2, 6) => avx2::kernel::<6>(kc, args),
                (Kernel::Avx2, 5) => avx2::kernel::<5>(kc, args),
                (Kernel::Avx2, 4) => avx2::kernel::<4>(kc, args),
                (Kernel::Avx2, 3) => avx2::kernel::<3>(kc, args),
                (Kernel::Avx2, 2) => avx2::kernel::<2>(kc, args),
                (Kernel::Avx2, _) => avx2::kernel::<1>(kc, args),
                (Kernel::Avx512, 8) => avx512::kernel::<8>(kc, args),
                (Kernel::Avx512, 7) => avx512::kernel::<7>(kc, args),
                (Kernel::Avx512, 6) => avx512::kernel::<6>(kc, args),
                (Kernel::Avx512, 5) => avx512::kernel::<5>(kc, args),
                (Kernel::Avx512, 4) => avx512::kernel::<4>(kc, args),
                (Kernel::Avx512, 3) => avx512::kernel::<3>(kc, args),
                (Kernel::Avx512, 2) => avx512::kernel::<2>(kc, args),
                (Kernel::Avx512, _) => avx512::kernel::<1>(kc, args),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, rows, kc, a, lda, b, c, ldc, cols, accumulate);
        unreachable!("the packed gemm runs only where `supported()` holds");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::NR;
    use std::arch::x86_64::*;

    /// `a`, `lda`, `b`, `c`, `ldc`, `cols`, `accumulate` of [`super::tile`], as raw parts.
    pub(super) type Args = (*const f32, usize, *const f32, *mut f32, usize, usize, bool);

    /// `c[..R, ..cols] (+)= a[..R, ..kc] b[..kc, ..NR]`: `R x 16` accumulators in registers;
    /// per value of the shared dimension, two loads of `b`, `R` broadcasts of `a`, `2 R` fused
    /// multiply-adds.
    ///
    /// # Safety
    /// As [`super::tile`], with `R` rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel<const R: usize>(
        kc: usize,
        (a, lda, b, c, ldc, cols, accumulate): Args,
    ) {
        // SAFETY: every pointer below stays inside the extents the caller guarantees.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for kk in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(kk * NR));
                let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(i * lda + kk));
                    acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                }
            }
            for (i, [low, high]) in acc.into_iter().enumerate() {
                let row = c.add(i * ldc);
                if cols == NR {
                    let (mut low, mut high) = (low, high);
                    if accumulate {
                        low = _mm256_add_ps(low, _mm256_loadu_ps(row));
                        high = _mm256_add_ps(high, _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, low);
                    _mm256_storeu_ps(row.add(8), high);
                } else {
                    let mut values = [0.0f32; NR];
                    _mm256_storeu_ps(values.as_mut_ptr(), low);
                    _mm256_storeu_ps(values.as_mut_ptr().add(8), high);
                    for (j, v) in values[..cols].iter().enumerate() {
                        let out = &mut *row.add(j);
                        *out = if accumulate { *out + v } else { *v };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::NR_512;
    use super::avx2::Args;
    use std::arch::x86_64::*;

    /// `c[..R, ..cols] (+)= a[..R, ..kc] b[..kc, ..NR_512]`: `R x 32` accumulators in two 16-wide
    /// registers a row; per value of the shared dimension, two loads of `b`, `R` broadcasts of `a`
    /// and `2 R` fused multiply-adds. A partial panel's columns are written through masks.
    ///
    /// # Safety
    /// As [`super::tile`], with `R` rows, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel<const R: usize>(
        kc: usize,
        (a, lda, b, c, ldc, cols, accumulate): Args,
    ) {
        // SAFETY: every pointer below stays inside the extents the caller guarantees; the masked
        // loads and stores touch only the tile's `cols` columns.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for kk in 0..kc {
                let b0 = _mm512_loadu_ps(b.add(kk * NR_512));
                let b1 = _mm512_loadu_ps(b.add(kk * NR_512 + 16));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(i * lda + kk));
                    acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
                }
            }
            // The first 16 columns and the next 16, each through the mask of those it has.
            let mask = |first: usize| -> __mmask16 {
                let have = cols.saturating_sub(first).min(16);
                ((1u32 << have) - 1) as __mmask16
            };
            let masks = [mask(0), mask(16)];
            for (i, halves) in acc.into_iter().enumerate() {
                for (half, (sum, mask)) in halves.into_iter().zip(masks).enumerate() {
                    // A half with no columns: its address may lie past the tile's last row.
                    if mask == 0 {
                        continue;
                    }
                    let out = c.add(i * ldc + 16 * half);
                    let sum = if accumulate {
                        _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, out))
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(out, mask, sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The packed product against the textbook triple loop, on shapes that end mid-tile,
    /// mid-panel and mid-block, with `a` strided both ways and `b` packed from both layouts.
    #[test]
    fn packed_gemm_matches_the_triple_loop() {
        let Some(widest) = Kernel::detect() else {
            eprintln!("no AVX2 and FMA here: the packed gemm is not used, nothing to check");
            return;
        };
        // Every kernel this CPU runs.
        let kernels = match widest {
            Kernel::Avx512 => vec![Kernel::Avx2, Kernel::Avx512],
            Kernel::Avx2 => vec![Kernel::Avx2],
        };
        let shapes = [
            (1, 1, 1),
            (7, 3, 17),
            (32, 512, 64),
            (13, 300, 40),
            (6, 257, 16),
        ];
        let mut checked = 0;
        for kernel in kernels {
            for shape in shapes {
                for layouts in 0..8 {
                    let [transposed_b, a_columns_apart, accumulate] =
                        [1, 2, 4].map(|bit| layouts & bit != 0);
                    let case = Case {
                        kernel,
                        shape,
                        transposed_b,
                        a_columns_apart,
                        accumulate,
                    };
                    checked += case.check();
                }
            }
        }
        assert!(checked > 0);
    }

    /// One product of [`packed_gemm_matches_the_triple_loop`].
    struct Case {
        kernel: Kernel,
        shape: (usize, usize, usize),
        transposed_b: bool,
        a_columns_apart: bool,
        accumulate: bool,
    }

    impl Case {
        /// Runs the packed gemm and checks every value of `dst`; how many it checked.
        fn check(&self) -> usize {
            let Case {
                kernel,
                shape: (m, k, n),
                transposed_b,
                a_columns_apart,
                accumulate,
            } = *self;
            let b_values = values(k * n, 1);
            let b = if transposed_b {
                Matrix::row_major(&b_values, n, k).t()
            } else {
                Matrix::row_major(&b_values, k, n)
            };
            // `a` with two spare columns per row, or read down the columns.
            let a_values = values(m * (k + 2), 2);
            let a = if a_columns_apart {
                Matrix::row_major(&a_values, k + 2, m).t()
            } else {
                Matrix {
                    row_stride: k + 2,
                    ..Matrix::row_major(&a_values, m, k)
                }
            };
            let a = Matrix { cols: k, ..a };
            let start = values(m * n, 3);
            let mut dst = start.clone();
            Packed::with_kernel(b, kernel).gemm(&mut dst, a, accumulate);
            for i in 0..m {
                for j in 0..n {
                    let want = if accumulate { start[i * n + j] } else { 0.0 };
                    let mut want = f64::from(want);
                    let mut scale = want.abs();
                    for kk in 0..k {
                        let term = f64::from(
                            a.values[i * a.row_stride + kk * a.col_stride]
                                * b.values[kk * b.row_stride + j * b.col_stride],
                        );
                        want += term;
                        scale += term.abs();
                    }
                    let got = f64::from(dst[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-6 * (1.0 + scale),
                        "{kernel:?} {m}x{k}x{n} (b transposed {transposed_b}, a by columns \
                         {a_columns_apart}, accumulate {accumulate}): [{i}, {j}] is {got}, not \
                         {want}"
                    );
                }
            }
            m * n
        }
    }
}

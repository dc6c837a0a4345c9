//! `exp`, the logistic sigmoid and `tanh` on `f32`, written so that a loop over a slice
//! vectorises: no branch and no call to the C library.
//!
//! A libm `expf` is a function call per element, and the compiler cannot vectorise a loop around
//! it: in the profile of `shakespeare-lstm`'s training step the scalar `expf`, `expm1f` and `tanhf`
//! of the gate non-linearities took ~18% of the time. [`exp`] is Cephes' `expf` (Moshier 1984):
//! `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for `e^r`, and `2^n` written
//! into the exponent bits. Its relative error is under 2e-7 on `[-87, 88]` (checked below against
//! the library's `exp` in `f64`). Above 88 it gives `e^88`, so it never overflows to infinity;
//! below -87 it gives exactly 0 rather than a denormal (`e^-87` is about the smallest normal
//! `f32`), because arithmetic on denormals is some hundred times slower: the masked scores of a
//! causal softmax would otherwise fill half the attention weights with them. NaN stays NaN.

/// Whether this CPU has AVX2 and FMA (x86-64 since 2013), which the release build does not assume:
/// it targets the x86-64 baseline, SSE2, four floats to a register.
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them ([`avx2_fma`]), as it is elsewhere:
/// the element-wise loops of the host kernels (the GELUs, layer norm, the softmax) then run eight
/// floats to a register instead of four. Only code inlined into the function built with those
/// features gets them: pass a closure marked `#[inline(always)]`, whose loops call only
/// `#[inline(always)]` functions of their own (a closure left to the inliner stayed a function of
/// its own, built for the baseline). In `shakespeare-gpt`'s training step the QuickGELU's baseline
/// loops took ~13% of the time.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        /// # Safety
        /// The CPU has AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: `avx2_fma()` holds.
        return unsafe { wide(f) };
    }
    f()
}

/// `sum f(a_i, b_i)` over two slices of one length, in eight running sums: a single running sum
/// fixes the order of the additions, so the compiler cannot vectorise it.
#[inline(always)]
pub(crate) fn sum_in_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 8;
    debug_assert_eq!(a.len(), b.len());
    let (a, b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = (a.remainder().iter().zip(b.remainder()))
        .map(|(&a, &b)| f(a, b))
        .sum();
    let mut lanes = [0.0f32; LANES];
    for (a, b) in a.zip(b) {
        for lane in 0..LANES {
            lanes[lane] += f(a[lane], b[lane]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `e^x`, within 2e-7 relative of the exact value for `x` in `[-87, 88]`; `e^88` above, 0 below,
/// NaN for NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer held in the low bits of the mantissa.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons are false for NaN, which passes through.
    let underflow = x < -87.0;
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.0 { -87.0 } else { x };
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // n is an integer in [-126, 127]; these are its bits as the exponent of 2^n.
    let exponent = (shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let value = (p * r * r + r + 1.0) * f32::from_bits(exponent as u32);
    if underflow { 0.0 } else { value }
}

/// The logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh x = 2 sigmoid(2x) - 1`: within ~1e-7 of the exact value (an absolute bound: near 0 the
/// subtraction leaves fewer significant digits than the library's `tanhf`, which a training step
/// cannot tell from its own rounding).
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 997th `f32` bit pattern in the range, and the edges.
    fn arguments(low: f32, high: f32) -> impl Iterator<Item = f32> {
        let grid = (0..u32::MAX)
            .step_by(997)
            .map(f32::from_bits)
            .filter(move |x| (low..=high).contains(x));
        grid.chain([low, high, 0.0, -0.0, 1e-30, -1e-30])
    }

    #[test]
    fn exp_is_within_two_parts_in_ten_million() {
        for x in arguments(-87.0, 88.0) {
            let exact = f64::from(x).exp();
            let error = ((f64::from(exp(x)) - exact) / exact).abs();
            assert!(error < 2e-7, "exp({x}) = {}, exactly {exact}", exp(x));
        }
    }

    #[test]
    fn out_of_range_arguments_clamp_and_nan_passes_through() {
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(88.0).is_finite());
        assert_eq!((exp(-87.01), exp(-1000.0)), (0.0, 0.0));
        assert!(exp(-87.0) > 0.0 && exp(-87.0).is_normal());
        assert!(exp(f32::NAN).is_nan());
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(-1000.0), 1.0 / (1.0 + exp(88.0)));
        assert!(sigmoid(-1000.0) > 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!((tanh(-1000.0), tanh(1000.0)), (-1.0, 1.0));
    }

    #[test]
    fn sigmoid_and_tanh_are_within_a_few_floats_of_the_library() {
        for x in arguments(-30.0, 30.0) {
            let exact = 1.0 / (1.0 + (-f64::from(x)).exp());
            let error = (f64::from(sigmoid(x)) - exact).abs();
            assert!(
                error <= 4e-7 * exact,
                "sigmoid({x}) = {}, exactly {exact}",
                sigmoid(x)
            );
            let error = (f64::from(tanh(x)) - f64::from(x).tanh()).abs();
            assert!(
                error < 2.5e-7,
                "tanh({x}) = {}, exactly {}",
                tanh(x),
                x.tanh()
            );
        }
    }
}

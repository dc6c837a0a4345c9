//! SplitMix64 (Steele, Lea & Flood 2014), the generator of the dropout masks and of the parity
//! checks' fixed inputs: seedable, the same on every machine, and cheap enough to draw a mask per
//! training step.

/// The golden-ratio increment of SplitMix64's state.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijection that scatters neighbouring states far apart.
pub(crate) fn mix(state: u64) -> u64 {
    let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 stream.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream started from `seed`.
    #[cfg_attr(not(any(test, feature = "parity")), allow(dead_code))]
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The stream started from `seed` after `draws` draws: SplitMix64's state only moves by a
    /// constant, so any stretch of a stream can be drawn on its own (on another thread).
    pub(crate) fn skipped(seed: u64, draws: u64) -> Self {
        Self {
            state: seed.wrapping_add(draws.wrapping_mul(GOLDEN_GAMMA)),
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in `[-bound, bound)`.
    #[cfg_attr(not(any(test, feature = "parity")), allow(dead_code))]
    pub(crate) fn symmetric(&mut self, bound: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * bound
    }
}

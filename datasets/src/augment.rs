//! Seeded image augmentation: small random rotations and shifts, the classic recipe for MNIST-style
//! digits (Simard, Steinkraus & Platt 2003 used elastic distortions; a few pixels of shift and
//! ~10 degrees of rotation carry most of their gain, see Ciresan et al. 2012).
//!
//! Each output pixel is sampled from the input through the inverse affine map, bilinearly, with
//! zeros outside the image, so the digit never wraps around.

use crate::SplitMix64;
/// How much to move each training image; zero turns a part off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Largest shift in pixels, along each axis.
    pub max_shift: f32,
    /// Largest rotation in degrees, either way.
    pub max_rotation_degrees: f32,
}

impl Augment {
    /// ±2 pixels and ±10 degrees: enough to help a CNN on 28x28 digits without making a 6 a 9.
    pub fn mnist() -> Self {
        Self {
            max_shift: 2.0,
            max_rotation_degrees: 10.0,
        }
    }

    /// Writes one randomly moved copy of `src` (`height x width`, 0..=255) into `out` as `[0, 1]`
    /// floats.
    pub fn apply(
        &self,
        src: &[u8],
        height: usize,
        width: usize,
        rng: &mut SplitMix64,
        out: &mut [f32],
    ) {
        let angle = rng.symmetric(self.max_rotation_degrees).to_radians();
        let (dy, dx) = (rng.symmetric(self.max_shift), rng.symmetric(self.max_shift));
        let (sin, cos) = angle.sin_cos();
        let (cy, cx) = ((height as f32 - 1.0) / 2.0, (width as f32 - 1.0) / 2.0);
        let pixel = |y: isize, x: isize| -> f32 {
            if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
                0.0
            } else {
                src[y as usize * width + x as usize] as f32
            }
        };
        for y in 0..height {
            for x in 0..width {
                // Inverse map: undo the shift, then rotate by -angle about the centre.
                let (py, px) = (y as f32 - cy - dy, x as f32 - cx - dx);
                let sy = cos * py - sin * px + cy;
                let sx = sin * py + cos * px + cx;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as isize, x0 as isize);
                let top = pixel(y0, x0) * (1.0 - fx) + pixel(y0, x0 + 1) * fx;
                let bottom = pixel(y0 + 1, x0) * (1.0 - fx) + pixel(y0 + 1, x0 + 1) * fx;
                out[y * width + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Vec<u8> {
        let mut img = vec![0u8; 28 * 28];
        for y in 10..18 {
            for x in 12..16 {
                img[y * 28 + x] = 255;
            }
        }
        img
    }

    #[test]
    fn zero_augmentation_is_the_identity() {
        let none = Augment {
            max_shift: 0.0,
            max_rotation_degrees: 0.0,
        };
        let src = blob();
        let mut out = vec![0.0; src.len()];
        none.apply(&src, 28, 28, &mut SplitMix64::new(1), &mut out);
        for (o, s) in out.iter().zip(&src) {
            assert!((o - *s as f32 / 255.0).abs() < 1e-5);
        }
    }

    #[test]
    fn same_seed_same_image_other_seed_other_image() {
        let aug = Augment::mnist();
        let src = blob();
        let run = |seed| {
            let mut out = vec![0.0; src.len()];
            aug.apply(&src, 28, 28, &mut SplitMix64::new(seed), &mut out);
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn ink_is_mostly_kept_and_stays_in_range() {
        let aug = Augment::mnist();
        let src = blob();
        let ink: f32 = src.iter().map(|&p| p as f32 / 255.0).sum();
        for seed in 0..20 {
            let mut out = vec![0.0; src.len()];
            aug.apply(&src, 28, 28, &mut SplitMix64::new(seed), &mut out);
            let moved: f32 = out.iter().sum();
            assert!(
                (moved - ink).abs() / ink < 0.15,
                "seed {seed}: {moved} vs {ink}"
            );
            assert!(out.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
        }
    }
}

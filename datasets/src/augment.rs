//! Seeded image augmentation: small random rotations and shifts, the classic recipe for MNIST-style
//! digits (Simard, Steinkraus & Platt 2003 used elastic distortions; a few pixels of shift and
//! ~10 degrees of rotation carry most of their gain, see Ciresan et al. 2012), and the random
//! resized crop of SimCLR's views (Chen et al. 2020, after Szegedy et al. 2015), and for clothes
//! the CIFAR recipe of He et al. (2016, section 4.2): whole-pixel shifts and left-right mirroring.
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
    /// Random resized crop: the smallest share of the image's area a crop keeps (1 turns it off).
    /// A crop of a uniform area in `[min_crop_area, 1]` and an aspect ratio log-uniform in
    /// `[3/4, 4/3]`, at a uniform place inside the image, is stretched back to the full size,
    /// as torchvision's `RandomResizedCrop` does.
    pub min_crop_area: f32,
    /// Shift by whole pixels only, as torchvision's `RandomCrop(28, padding=2)` does: the image
    /// moves without the blur of resampling between pixels.
    pub whole_pixels: bool,
    /// Mirror left-right half the time (torchvision's `RandomHorizontalFlip`): a mirrored coat is
    /// a coat, a mirrored 3 is no digit.
    pub flip: bool,
}

impl Augment {
    /// ±2 pixels and ±10 degrees: enough to help a CNN on 28x28 digits without making a 6 a 9.
    pub fn mnist() -> Self {
        Self {
            max_shift: 2.0,
            max_rotation_degrees: 10.0,
            min_crop_area: 1.0,
            whole_pixels: false,
            flip: false,
        }
    }

    /// Fashion-MNIST's clothes: ±2 whole pixels and a left-right mirror half the time, no
    /// rotation (He et al.'s CIFAR recipe at 28x28; a rotated shirt is rarer than a mirrored one).
    pub fn clothes() -> Self {
        Self {
            max_shift: 2.0,
            max_rotation_degrees: 0.0,
            min_crop_area: 1.0,
            whole_pixels: true,
            flip: true,
        }
    }

    /// SimCLR's views of a 28x28 digit: a crop of at least 40% of the area, ±15 degrees and ±2
    /// pixels. ImageNet's crops go down to 8%, which on a digit would often keep a single stroke,
    /// and its colour distortions have no counterpart on grey ink.
    pub fn simclr_digits() -> Self {
        Self {
            max_shift: 2.0,
            max_rotation_degrees: 15.0,
            min_crop_area: 0.4,
            whole_pixels: false,
            flip: false,
        }
    }

    /// The crop's `(height, width, top, left)` in input pixels, drawn from `rng`; the whole image
    /// when cropping is off (then nothing is drawn, so the other draws are those of a run without
    /// it).
    fn crop(&self, height: usize, width: usize, rng: &mut SplitMix64) -> (f32, f32, f32, f32) {
        let (h, w) = (height as f32, width as f32);
        if self.min_crop_area >= 1.0 {
            return (h, w, 0.0, 0.0);
        }
        let area = self.min_crop_area + rng.next_f32() * (1.0 - self.min_crop_area);
        let log_ratio = (4.0f32 / 3.0).ln() * (2.0 * rng.next_f32() - 1.0);
        let ratio = log_ratio.exp(); // width / height
        let ch = ((area / ratio).sqrt() * h).min(h);
        let cw = ((area * ratio).sqrt() * w).min(w);
        let top = rng.next_f32() * (h - ch);
        let left = rng.next_f32() * (w - cw);
        (ch, cw, top, left)
    }

    /// Writes one randomly moved copy of `src` (`height x width`, 0..=255) into `out` as `[0, 1]`
    /// floats. The draws per image: angle, shift, crop (when on), mirror (when on), so a recipe
    /// without the later parts draws what it drew before they existed.
    pub fn apply(
        &self,
        src: &[u8],
        height: usize,
        width: usize,
        rng: &mut SplitMix64,
        out: &mut [f32],
    ) {
        let angle = rng.symmetric(self.max_rotation_degrees).to_radians();
        let mut draw = || {
            if self.whole_pixels {
                // Uniform over the whole pixels -max..=max.
                let max = self.max_shift.max(0.0) as usize;
                rng.below(2 * max + 1) as f32 - max as f32
            } else {
                rng.symmetric(self.max_shift)
            }
        };
        let shift = (draw(), draw());
        let crop = self.crop(height, width, rng);
        warp(src, height, width, angle, shift, crop, out);
        if self.flip && rng.next_u64() & 1 == 1 {
            for row in out.chunks_mut(width) {
                row.reverse();
            }
        }
    }
}

/// Writes `src` (`height x width`, 0..=255) into `out` as `[0, 1]` floats: the `crop`
/// `(height, width, top, left)` stretched to the full size, rotated by `angle` radians about the
/// centre and shifted by `(dy, dx)` pixels.
fn warp(
    src: &[u8],
    height: usize,
    width: usize,
    angle: f32,
    (dy, dx): (f32, f32),
    (ch, cw, top, left): (f32, f32, f32, f32),
    out: &mut [f32],
) {
    let (sin, cos) = angle.sin_cos();
    let (cy, cx) = ((height as f32 - 1.0) / 2.0, (width as f32 - 1.0) / 2.0);
    // The crop stretched to the full size: output pixel (y, x) reads the crop at
    // (top + y * ch / height, left + x * cw / width), before the rotation and shift.
    let (zy, zx) = (ch / height as f32, cw / width as f32);
    let (oy, ox) = (top + cy * zy - cy, left + cx * zx - cx);
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
            let sy = (cos * py - sin * px) * zy + cy + oy;
            let sx = (sin * py + cos * px) * zx + cx + ox;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let top = pixel(y0, x0) * (1.0 - fx) + pixel(y0, x0 + 1) * fx;
            let bottom = pixel(y0 + 1, x0) * (1.0 - fx) + pixel(y0 + 1, x0 + 1) * fx;
            out[y * width + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
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
            min_crop_area: 1.0,
            whole_pixels: false,
            flip: false,
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

    #[test]
    fn a_crop_of_the_top_left_quarter_is_that_quarter_stretched() {
        let mut src = vec![0u8; 28 * 28];
        src[0] = 255; // one lit pixel in the top-left corner
        src[27 * 28 + 27] = 255; // and one in the bottom-right, outside the crop
        let mut out = vec![0.0; 28 * 28];
        warp(
            &src,
            28,
            28,
            0.0,
            (0.0, 0.0),
            (14.0, 14.0, 0.0, 0.0),
            &mut out,
        );
        // Output pixel (y, x) reads input (y / 2, x / 2): the lit pixel covers the top-left
        // corner, fading over the next output pixel, and nothing else is lit.
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 0.5).abs() < 1e-6 && (out[28] - 0.5).abs() < 1e-6);
        assert!((out[29] - 0.25).abs() < 1e-6);
        let lit = out.iter().filter(|&&v| v > 0.0).count();
        assert_eq!(lit, 4);
    }

    #[test]
    fn crops_stay_inside_the_image_and_keep_their_area_range() {
        let aug = Augment::simclr_digits();
        let mut rng = SplitMix64::new(3);
        for _ in 0..2_000 {
            let (ch, cw, top, left) = aug.crop(28, 28, &mut rng);
            assert!(top >= 0.0 && left >= 0.0, "{top} {left}");
            assert!(top + ch <= 28.0 + 1e-4 && left + cw <= 28.0 + 1e-4);
            let area = ch * cw / (28.0 * 28.0);
            // The aspect clamp can only shrink a crop below its drawn area, never grow it.
            assert!((0.4 * 0.75 - 1e-4..=1.0 + 1e-4).contains(&area), "{area}");
        }
    }

    /// `src` moved by whole pixels `(dy, dx)`, mirrored left-right after when `mirror`, as `[0, 1]`
    /// floats with zeros where nothing moved in.
    fn moved(src: &[u8], dy: isize, dx: isize, mirror: bool) -> Vec<f32> {
        let mut out = vec![0.0; 28 * 28];
        for y in 0..28isize {
            for x in 0..28isize {
                let (sy, sx) = (y - dy, x - dx);
                if (0..28).contains(&sy) && (0..28).contains(&sx) {
                    let ox = if mirror { 27 - x } else { x };
                    out[(y * 28 + ox) as usize] = src[(sy * 28 + sx) as usize] as f32 / 255.0;
                }
            }
        }
        out
    }

    #[test]
    fn clothes_move_by_whole_pixels_and_mirror_half_the_time() {
        // An asymmetric blob, so a mirror shows.
        let mut src = blob();
        src[10 * 28 + 12] = 0;
        let aug = Augment::clothes();
        let (mut shifts, mut mirrored) = (std::collections::BTreeSet::new(), 0);
        let runs = 400;
        for seed in 0..runs {
            let mut out = vec![0.0; 28 * 28];
            aug.apply(&src, 28, 28, &mut SplitMix64::new(seed), &mut out);
            let found = (-2..=2)
                .flat_map(|dy| (-2..=2).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
                .find(|&(dy, dx, m)| {
                    let want = moved(&src, dy, dx, m);
                    want.iter().zip(&out).all(|(w, o)| (w - o).abs() < 1e-6)
                });
            let (dy, dx, m) = found.unwrap_or_else(|| panic!("seed {seed}: not a whole move"));
            shifts.insert((dy, dx));
            mirrored += m as usize;
        }
        assert_eq!(
            shifts.len(),
            25,
            "every shift in -2..=2 squared: {shifts:?}"
        );
        assert!(
            (160..240).contains(&mirrored),
            "{mirrored} of {runs} mirrored"
        );
    }

    #[test]
    fn without_a_crop_the_draws_are_those_of_before() {
        // Augment::mnist draws three numbers per image, as it did before crops existed, so runs
        // saved before repeat.
        let mut rng = SplitMix64::new(9);
        let mut out = vec![0.0; 28 * 28];
        Augment::mnist().apply(&blob(), 28, 28, &mut rng, &mut out);
        let mut expected = SplitMix64::new(9);
        for _ in 0..3 {
            expected.next_u64();
        }
        assert_eq!(rng.next_u64(), expected.next_u64());
    }
}

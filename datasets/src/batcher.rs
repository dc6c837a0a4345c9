//! Batchers: one flat `f32` buffer per batch and one `Tensor::from_data`, never a tensor per item
//! followed by a `cat`.

use crate::mnist::ImageItem;
use crate::{SplitMix64, augment::Augment};
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::sync::atomic::{AtomicU64, Ordering};

/// A batch of grey images and their classes.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// Normalised pixels, `[batch, 1, height, width]`.
    pub images: Tensor<B, 4>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

/// Turns [`ImageItem`]s into an [`ImageBatch`]: scales to `[0, 1]`, optionally augments, then
/// normalises with `(x - mean) / std`.
#[derive(Debug)]
pub struct ImageBatcher {
    mean: f32,
    std: f32,
    augment: Option<(Augment, Draws)>,
}

/// Where a batcher's random draws come from. Per batch: the seed and the batch count, so a run
/// with the same seed and one loader worker draws the same again, and every pass draws anew. Per
/// image: the seed and the image's own pixels, so an image gets the same draws on every pass.
#[derive(Debug)]
pub(crate) struct Draws {
    seed: u64,
    batches: AtomicU64,
}

impl Draws {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            batches: AtomicU64::new(0),
        }
    }

    /// The generator of the next batch.
    pub(crate) fn next_batch(&self) -> SplitMix64 {
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        SplitMix64::new(self.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    /// The generator of the image with these pixels.
    fn of_image(&self, pixels: &[u8]) -> SplitMix64 {
        SplitMix64::new(self.seed ^ pixel_hash(pixels))
    }

    /// The generator of the sentence with these word ids (as [`Draws::of_image`], for text): the
    /// hash of their `u32` bytes, read in place.
    pub(crate) fn of_tokens(&self, tokens: &[i64]) -> SplitMix64 {
        let bytes = tokens.iter().flat_map(|&t| (t as u32).to_le_bytes());
        SplitMix64::new(self.seed ^ fnv_hash(bytes))
    }
}

impl ImageBatcher {
    /// A batcher normalising with the training set's `mean` and `std`.
    pub fn new(mean: f32, std: f32) -> Self {
        Self {
            mean,
            std,
            augment: None,
        }
    }

    /// Augments every image; the `seed` and the batch count pick each image's transform, so a run
    /// with the same seed and one loader worker sees the same images.
    pub fn with_augment(mut self, augment: Augment, seed: u64) -> Self {
        self.augment = Some((augment, Draws::new(seed)));
        self
    }
}

impl ImageBatcher {
    /// The generator of the next batch's transforms: from the seed and the batch count. None
    /// without augmentation.
    fn next_batch_rng(&self) -> Option<SplitMix64> {
        self.augment.as_ref().map(|(_, draws)| draws.next_batch())
    }

    /// Writes `item` into `out` normalised, moved by the augmentation with `rng`'s draws when
    /// both are there.
    fn fill(&self, item: &ImageItem, rng: Option<&mut SplitMix64>, out: &mut [f32]) {
        match (&self.augment, rng) {
            (Some((aug, _)), Some(rng)) => {
                aug.apply(&item.pixels, item.height, item.width, rng, out)
            }
            _ => {
                for (o, &p) in out.iter_mut().zip(&item.pixels) {
                    *o = p as f32 / 255.0;
                }
            }
        }
        let scale = 1.0 / self.std;
        for o in out.iter_mut() {
            *o = (*o - self.mean) * scale;
        }
    }
}

/// The `(height, width)` of a batch's images, and the classes as a tensor.
fn shape_and_targets<B: Backend>(
    items: &[ImageItem],
    device: &B::Device,
) -> ((usize, usize), Tensor<B, 1, Int>) {
    let shape = items.first().map_or((0, 0), |i| (i.height, i.width));
    let targets: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
    let n = targets.len();
    (
        shape,
        Tensor::from_data(TensorData::new(targets, [n]), device),
    )
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let batch = items.len();
        let ((height, width), targets) = shape_and_targets(&items, device);
        let size = height * width;
        let mut pixels = vec![0f32; batch * size];
        let mut rng = self.next_batch_rng();
        for (item, out) in items.iter().zip(pixels.chunks_exact_mut(size)) {
            self.fill(item, rng.as_mut(), out);
        }
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 1, height, width]), device),
            targets,
        }
    }
}

/// A batch of N images seen twice: two random views of each, for contrastive learning.
#[derive(Debug, Clone)]
pub struct ViewPairBatch<B: Backend> {
    /// Normalised pixels of the 2N views, `[2N, 1, height, width]`: rows `k` and `k + N` are the
    /// two views of image `k`.
    pub views: Tensor<B, 4>,
    /// The images' classes, `[N]`: never seen by the contrastive loss, kept for evaluation.
    pub targets: Tensor<B, 1, Int>,
}

/// Turns [`ImageItem`]s into a [`ViewPairBatch`]: two independently augmented copies of each
/// image, normalised as [`ImageBatcher`] does.
///
/// For training, each batch's draws come from the seed and the batch count, so every epoch sees
/// new views. For evaluation ([`ViewPairBatcher::same_views_every_time`]) they come from the
/// seed and the image's own pixels, so every pass over a split sees the same views and its loss
/// can be compared from epoch to epoch.
#[derive(Debug)]
pub struct ViewPairBatcher {
    images: ImageBatcher,
    draws: Draws,
    per_image: bool,
}

impl ViewPairBatcher {
    /// Views made with `augment` from `seed`, normalised with `mean` and `std`.
    pub fn new(mean: f32, std: f32, augment: Augment, seed: u64) -> Self {
        Self {
            images: ImageBatcher::new(mean, std).with_augment(augment, seed),
            draws: Draws::new(seed),
            per_image: false,
        }
    }

    /// The same two views of an image on every pass.
    pub fn same_views_every_time(mut self) -> Self {
        self.per_image = true;
        self
    }
}

/// FNV-1a of an image's pixels, to seed its views.
fn pixel_hash(pixels: &[u8]) -> u64 {
    fnv_hash(pixels.iter().copied())
}

/// FNV-1a over `bytes`.
fn fnv_hash(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

impl<B: Backend> Batcher<B, ImageItem, ViewPairBatch<B>> for ViewPairBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ViewPairBatch<B> {
        let batch = items.len();
        let ((height, width), targets) = shape_and_targets(&items, device);
        let size = height * width;
        let mut pixels = vec![0f32; 2 * batch * size];
        let (first, second) = pixels.split_at_mut(batch * size);
        let mut batch_rng = self.draws.next_batch();
        let views = first
            .chunks_exact_mut(size)
            .zip(second.chunks_exact_mut(size));
        for (item, (a, b)) in items.iter().zip(views) {
            let mut own;
            let rng = match self.per_image {
                true => {
                    own = self.draws.of_image(&item.pixels);
                    &mut own
                }
                false => &mut batch_rng,
            };
            self.images.fill(item, Some(&mut *rng), a);
            self.images.fill(item, Some(rng), b);
        }
        ViewPairBatch {
            views: Tensor::from_data(
                TensorData::new(pixels, [2 * batch, 1, height, width]),
                device,
            ),
            targets,
        }
    }
}

/// A batch of images, each with its patches in a random order, for a masked autoencoder: the
/// first patches of an image's order are shown to the encoder, the rest hidden. How many are
/// shown is the model's mask ratio; the order only says which.
#[derive(Debug, Clone)]
pub struct MaskedImageBatch<B: Backend> {
    /// Normalised pixels, `[batch, 1, height, width]`.
    pub images: Tensor<B, 4>,
    /// Each image's patches (numbered row by row) in a random order, `[batch, patches]`.
    pub order: Tensor<B, 2, Int>,
    /// Where each patch stands in `order`: `restore[i][order[i][k]] = k`, `[batch, patches]`.
    pub restore: Tensor<B, 2, Int>,
    /// Class indices, `[batch]` (no part of the loss; kept for probes and figures).
    pub targets: Tensor<B, 1, Int>,
}

/// Turns [`ImageItem`]s into a [`MaskedImageBatch`]: the images normalised as [`ImageBatcher`]
/// does, and a random order of each image's `patches` patches. For training the orders are drawn
/// from the seed and the batch count, so every pass hides other patches; for evaluation
/// ([`MaskedImageBatcher::same_masks_every_time`]) from the seed and the image's own pixels, so an
/// image is masked the same way on every pass and a loss compares across epochs.
#[derive(Debug)]
pub struct MaskedImageBatcher {
    images: ImageBatcher,
    patches: usize,
    draws: Draws,
    per_image: bool,
}

impl MaskedImageBatcher {
    /// Images normalised with `mean` and `std`, each cut into `patches` patches whose order is
    /// drawn from `seed`.
    pub fn new(mean: f32, std: f32, patches: usize, seed: u64) -> Self {
        Self {
            images: ImageBatcher::new(mean, std),
            patches,
            draws: Draws::new(seed),
            per_image: false,
        }
    }

    /// The same order for an image on every pass.
    pub fn same_masks_every_time(mut self) -> Self {
        self.per_image = true;
        self
    }
}

impl<B: Backend> Batcher<B, ImageItem, MaskedImageBatch<B>> for MaskedImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> MaskedImageBatch<B> {
        let batch = items.len();
        let ((height, width), targets) = shape_and_targets(&items, device);
        let size = height * width;
        let mut pixels = vec![0f32; batch * size];
        let p = self.patches;
        let mut batch_rng = self.draws.next_batch();
        let mut order: Vec<i64> = (0..batch).flat_map(|_| 0..p as i64).collect();
        let mut restore = vec![0i64; batch * p];
        let images = items.iter().zip(pixels.chunks_exact_mut(size));
        let orders = order.chunks_exact_mut(p).zip(restore.chunks_exact_mut(p));
        for ((item, out), (order, restore)) in images.zip(orders) {
            self.images.fill(item, None, out);
            let mut own;
            let rng = match self.per_image {
                true => {
                    own = self.draws.of_image(&item.pixels);
                    &mut own
                }
                false => &mut batch_rng,
            };
            rng.shuffle(order);
            for (k, &patch) in order.iter().enumerate() {
                restore[patch as usize] = k as i64;
            }
        }
        let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [batch, p]), device);
        MaskedImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 1, height, width]), device),
            order: ints(order),
            restore: ints(restore),
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn item(value: u8, label: u8) -> ImageItem {
        ImageItem {
            pixels: vec![value; 4],
            height: 2,
            width: 2,
            label,
        }
    }

    #[test]
    fn shapes_and_normalisation() {
        let batcher = ImageBatcher::new(0.5, 0.25);
        let batch: ImageBatch<NdArray> =
            batcher.batch(vec![item(0, 3), item(255, 7)], &Default::default());
        assert_eq!(batch.images.dims(), [2, 1, 2, 2]);
        assert_eq!(batch.targets.dims(), [2]);
        let px = batch.images.into_data().to_vec::<f32>().unwrap();
        assert!((px[0] - (-2.0)).abs() < 1e-6);
        assert!((px[4] - 2.0).abs() < 1e-6);
        let t = batch
            .targets
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(t, vec![3, 7]);
    }

    fn digit(seed: u64) -> ImageItem {
        let mut rng = SplitMix64::new(seed);
        let mut pixels = vec![0u8; 28 * 28];
        for y in 8..20 {
            for x in 10..18 {
                pixels[y * 28 + x] = (rng.below(200) + 55) as u8;
            }
        }
        ImageItem {
            pixels,
            height: 28,
            width: 28,
            label: (seed % 10) as u8,
        }
    }

    fn views(batcher: &ViewPairBatcher, items: Vec<ImageItem>) -> (Vec<f32>, Vec<i64>, [usize; 4]) {
        let batch: ViewPairBatch<NdArray> = batcher.batch(items, &Default::default());
        let dims = batch.views.dims();
        let targets = batch.targets.into_data().convert::<i64>().to_vec().unwrap();
        (batch.views.into_data().to_vec().unwrap(), targets, dims)
    }

    #[test]
    fn two_views_of_each_image_the_twins_n_rows_apart() {
        let batcher = ViewPairBatcher::new(0.0, 1.0, Augment::simclr_digits(), 7);
        let (px, targets, dims) = views(&batcher, vec![digit(1), digit(2), digit(3)]);
        assert_eq!(dims, [6, 1, 28, 28]);
        assert_eq!(targets, vec![1, 2, 3]);
        let view = |k: usize| &px[k * 784..(k + 1) * 784];
        let ink = |k: usize| view(k).iter().sum::<f32>();
        for k in 0..3 {
            // Two different views of one image...
            assert_ne!(view(k), view(k + 3), "image {k}");
            // ...that both keep a good part of its ink (a crop keeps at least 40% of the area).
            let original: f32 = digit(k as u64 + 1)
                .pixels
                .iter()
                .map(|&p| p as f32 / 255.0)
                .sum();
            for v in [k, k + 3] {
                assert!(
                    ink(v) > 0.2 * original,
                    "view {v}: {} of {original}",
                    ink(v)
                );
            }
        }
    }

    #[test]
    fn training_views_change_every_batch_evaluation_views_never() {
        let train = ViewPairBatcher::new(0.0, 1.0, Augment::simclr_digits(), 7);
        let first = views(&train, vec![digit(1), digit(2)]).0;
        let second = views(&train, vec![digit(1), digit(2)]).0;
        assert_ne!(first, second);
        let eval =
            ViewPairBatcher::new(0.0, 1.0, Augment::simclr_digits(), 7).same_views_every_time();
        let a = views(&eval, vec![digit(1), digit(2)]).0;
        // Same image, same views, whatever the batch and its place in it.
        let b = views(&eval, vec![digit(5), digit(2), digit(1)]).0;
        assert_eq!(a, views(&eval, vec![digit(1), digit(2)]).0);
        let image_1_first_view = &a[0..784];
        assert_eq!(image_1_first_view, &b[2 * 784..3 * 784]);
        // A fresh batcher with the same seed makes the same training views.
        let again = ViewPairBatcher::new(0.0, 1.0, Augment::simclr_digits(), 7);
        assert_eq!(views(&again, vec![digit(1), digit(2)]).0, first);
    }

    fn masks(batcher: &MaskedImageBatcher, items: Vec<ImageItem>) -> (Vec<i64>, Vec<i64>) {
        let batch: MaskedImageBatch<NdArray> = batcher.batch(items, &Default::default());
        assert_eq!(batch.images.dims()[0], batch.order.dims()[0]);
        let ints = |t: Tensor<NdArray, 2, Int>| t.into_data().convert::<i64>().to_vec().unwrap();
        (ints(batch.order), ints(batch.restore))
    }

    #[test]
    fn each_image_gets_a_permutation_of_its_patches_and_its_inverse() {
        let batcher = MaskedImageBatcher::new(0.0, 1.0, 16, 3);
        let (order, restore) = masks(&batcher, vec![digit(1), digit(2), digit(3)]);
        assert_eq!(order.len(), 3 * 16);
        for (o, r) in order.chunks(16).zip(restore.chunks(16)) {
            let mut sorted = o.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..16).collect::<Vec<i64>>());
            for (k, &patch) in o.iter().enumerate() {
                assert_eq!(r[patch as usize], k as i64);
            }
        }
        // Images in one batch are masked differently.
        assert_ne!(order[0..16], order[16..32]);
    }

    #[test]
    fn training_masks_change_every_batch_evaluation_masks_never() {
        let train = MaskedImageBatcher::new(0.0, 1.0, 16, 3);
        let first = masks(&train, vec![digit(1), digit(2)]).0;
        assert_ne!(first, masks(&train, vec![digit(1), digit(2)]).0);
        let again = MaskedImageBatcher::new(0.0, 1.0, 16, 3);
        assert_eq!(masks(&again, vec![digit(1), digit(2)]).0, first);
        let eval = MaskedImageBatcher::new(0.0, 1.0, 16, 3).same_masks_every_time();
        let a = masks(&eval, vec![digit(1), digit(2)]).0;
        let b = masks(&eval, vec![digit(5), digit(2), digit(1)]).0;
        assert_eq!(a, masks(&eval, vec![digit(1), digit(2)]).0);
        assert_eq!(a[0..16], b[32..48]);
        // Another seed, other masks.
        let other = MaskedImageBatcher::new(0.0, 1.0, 16, 4).same_masks_every_time();
        assert_ne!(masks(&other, vec![digit(1), digit(2)]).0, a);
    }
}

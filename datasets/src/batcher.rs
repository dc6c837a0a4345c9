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
    augment: Option<(Augment, u64)>,
    batches: AtomicU64,
}

impl ImageBatcher {
    /// A batcher normalising with the training set's `mean` and `std`.
    pub fn new(mean: f32, std: f32) -> Self {
        Self {
            mean,
            std,
            augment: None,
            batches: AtomicU64::new(0),
        }
    }

    /// Augments every image; the `seed` and the batch count pick each image's transform, so a run
    /// with the same seed and one loader worker sees the same images.
    pub fn with_augment(mut self, augment: Augment, seed: u64) -> Self {
        self.augment = Some((augment, seed));
        self
    }
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let batch = items.len();
        let (height, width) = items.first().map_or((0, 0), |i| (i.height, i.width));
        let size = height * width;
        let mut pixels = vec![0f32; batch * size];
        let mut targets = Vec::with_capacity(batch);
        let mut rng = self.augment.map(|(_, seed)| {
            let n = self.batches.fetch_add(1, Ordering::Relaxed);
            SplitMix64::new(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D))
        });
        let scale = 1.0 / self.std;
        for (item, out) in items.iter().zip(pixels.chunks_exact_mut(size)) {
            match (&self.augment, rng.as_mut()) {
                (Some((aug, _)), Some(rng)) => aug.apply(&item.pixels, height, width, rng, out),
                _ => {
                    for (o, &p) in out.iter_mut().zip(&item.pixels) {
                        *o = p as f32 / 255.0;
                    }
                }
            }
            for o in out.iter_mut() {
                *o = (*o - self.mean) * scale;
            }
            targets.push(item.label as i64);
        }
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 1, height, width]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch]), device),
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
}

//! MNIST-style image sets: four IDX files (train/test images and labels) of 8-bit grey images.
//!
//! - MNIST (LeCun, Bottou, Bengio & Haffner 1998): handwritten digits, 60,000 train / 10,000 test.
//! - Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): Zalando product photos, same shapes and files.
//! - Any folder holding the same four files ([`ImageSource::Folder`]), e.g. KMNIST or EMNIST digits.
//!
//! The training set is split into train/valid with a seeded permutation ([`split_train_valid`]);
//! the test set is kept for the final evaluation only.

use crate::download::{RemoteFile, ensure_files_with, offline};
use crate::idx::read_idx;
use crate::{DataError, SplitMix64};
use burn::data::dataset::Dataset;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The four file names every MNIST-style set uses.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// torchvision's mirrors for MNIST (yann.lecun.com itself no longer serves the files reliably).
const MNIST_MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];
/// Zalando's own bucket, the canonical Fashion-MNIST source.
const FASHION_MIRRORS: &[&str] = &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"];

const MNIST_FILES: [RemoteFile; 4] = [
    remote(
        FILE_NAMES[0],
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        MNIST_MIRRORS,
    ),
    remote(
        FILE_NAMES[1],
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        MNIST_MIRRORS,
    ),
    remote(
        FILE_NAMES[2],
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        MNIST_MIRRORS,
    ),
    remote(
        FILE_NAMES[3],
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        MNIST_MIRRORS,
    ),
];

const FASHION_FILES: [RemoteFile; 4] = [
    remote(
        FILE_NAMES[0],
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        FASHION_MIRRORS,
    ),
    remote(
        FILE_NAMES[1],
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        FASHION_MIRRORS,
    ),
    remote(
        FILE_NAMES[2],
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        FASHION_MIRRORS,
    ),
    remote(
        FILE_NAMES[3],
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        FASHION_MIRRORS,
    ),
];

const fn remote(
    name: &'static str,
    sha256: &'static str,
    mirrors: &'static [&'static str],
) -> RemoteFile {
    RemoteFile {
        name,
        remote_name: None,
        sha256,
        mirrors,
    }
}

/// Which MNIST-style set to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// MNIST digits, folder `mnist/`.
    Mnist,
    /// Fashion-MNIST, folder `fashion-mnist/`.
    FashionMnist,
    /// Any folder with the four files; never downloaded.
    Folder(PathBuf),
}

impl ImageSource {
    /// `mnist`, `fashion-mnist`, or a path to a folder holding the four IDX files.
    pub fn parse(name: &str) -> Self {
        match name {
            "mnist" => Self::Mnist,
            "fashion-mnist" => Self::FashionMnist,
            other => Self::Folder(PathBuf::from(other)),
        }
    }

    /// The name [`ImageSource::parse`] reads back.
    pub fn name(&self) -> String {
        match self {
            Self::Mnist => "mnist".into(),
            Self::FashionMnist => "fashion-mnist".into(),
            Self::Folder(p) => p.display().to_string(),
        }
    }

    /// Per-pixel mean and standard deviation of the training images scaled to `[0, 1]`, as
    /// published: MNIST's from pytorch/examples `mnist/main.py`, Fashion-MNIST's computed the same
    /// way on its 60,000 training images. `None` for a folder: [`ImageData::mean_std`] computes them.
    pub fn normalisation(&self) -> Option<(f32, f32)> {
        match self {
            Self::Mnist => Some((0.1307, 0.3081)),
            Self::FashionMnist => Some((0.2860, 0.3530)),
            Self::Folder(_) => None,
        }
    }

    /// The names of the ten classes, by label: the digits, or Fashion-MNIST's garments (from its
    /// README). A folder's labels are their numbers.
    pub fn class_names(&self) -> Vec<String> {
        const FASHION: [&str; NUM_CLASSES] = [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ];
        match self {
            Self::FashionMnist => FASHION.iter().map(|s| s.to_string()).collect(),
            _ => (0..NUM_CLASSES).map(|c| c.to_string()).collect(),
        }
    }

    /// The folder holding the files, downloading missing ones for the known sets when
    /// `allow_download` (and `PDL_OFFLINE` is not set).
    pub fn locate(&self, data_dir: &Path, allow_download: bool) -> Result<PathBuf, DataError> {
        let download = allow_download && !offline();
        match self {
            Self::Mnist => ensure_files_with(data_dir, "MNIST", "mnist", &MNIST_FILES, download),
            Self::FashionMnist => ensure_files_with(
                data_dir,
                "Fashion-MNIST",
                "fashion-mnist",
                &FASHION_FILES,
                download,
            ),
            Self::Folder(dir) => {
                let missing: Vec<String> = FILE_NAMES
                    .iter()
                    .map(|n| dir.join(n))
                    .filter(|p| !p.is_file())
                    .map(|p| p.display().to_string())
                    .collect();
                if missing.is_empty() {
                    Ok(dir.clone())
                } else {
                    Err(DataError::format(
                        dir,
                        format!(
                            "no MNIST-style set here (missing {}); a dataset is 'mnist', \
                             'fashion-mnist', or a folder holding the four IDX files",
                            missing.join(", ")
                        ),
                    ))
                }
            }
        }
    }
}

/// Train or test files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

/// One split of an MNIST-style set in memory.
#[derive(Debug, Clone)]
pub struct ImageData {
    /// `len * height * width` pixels, 0 = background.
    pub pixels: Vec<u8>,
    /// `len` labels in `0..num_classes`.
    pub labels: Vec<u8>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

/// Every MNIST-style set has ten classes.
pub const NUM_CLASSES: usize = 10;

impl ImageData {
    /// Reads one split from a folder holding the four files, checking that images and labels agree.
    pub fn load(dir: &Path, split: Split) -> Result<Self, DataError> {
        let (images_name, labels_name) = match split {
            Split::Train => (FILE_NAMES[0], FILE_NAMES[1]),
            Split::Test => (FILE_NAMES[2], FILE_NAMES[3]),
        };
        let (images_path, labels_path) = (dir.join(images_name), dir.join(labels_name));
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let [count, height, width] = images.dims[..] else {
            return Err(DataError::format(
                &images_path,
                format!(
                    "images need 3 dimensions [count, height, width], found {:?}",
                    images.dims
                ),
            ));
        };
        let [num_labels] = labels.dims[..] else {
            return Err(DataError::format(
                &labels_path,
                format!("labels need 1 dimension [count], found {:?}", labels.dims),
            ));
        };
        if num_labels != count {
            return Err(DataError::format(
                &labels_path,
                format!(
                    "{num_labels} labels for {count} images in {}",
                    images_path.display()
                ),
            ));
        }
        if count == 0 || height == 0 || width == 0 {
            return Err(DataError::format(
                &images_path,
                format!("no images: dimensions {:?}", images.dims),
            ));
        }
        if let Some((i, &l)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= NUM_CLASSES)
        {
            return Err(DataError::format(
                &labels_path,
                format!("label {l} at index {i} is not a class in 0..{NUM_CLASSES}"),
            ));
        }
        Ok(Self {
            pixels: images.data,
            labels: labels.data,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Mean and standard deviation of all pixels scaled to `[0, 1]`.
    pub fn mean_std(&self) -> (f32, f32) {
        let n = self.pixels.len().max(1) as f64;
        let mean = self.pixels.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
        let var = self
            .pixels
            .iter()
            .map(|&p| (p as f64 / 255.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean as f32, var.sqrt().max(1e-6) as f32)
    }
}

/// One image and its label, as the batcher receives it.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// `height * width` pixels.
    pub pixels: Vec<u8>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Class index.
    pub label: u8,
}

/// A view of some images of an [`ImageData`], in a given order.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    data: Arc<ImageData>,
    indices: Vec<usize>,
}

impl ImageDataset {
    /// All images of `data`, in file order.
    pub fn new(data: Arc<ImageData>) -> Self {
        let indices = (0..data.len()).collect();
        Self { data, indices }
    }

    /// The images at `indices` of `data`.
    pub fn from_indices(data: Arc<ImageData>, indices: Vec<usize>) -> Self {
        Self { data, indices }
    }

    /// The images at `positions` of this view, in that order (a labelled subset).
    ///
    /// # Panics
    /// If a position is out of range.
    pub fn select(&self, positions: &[usize]) -> Self {
        Self {
            data: self.data.clone(),
            indices: positions.iter().map(|&p| self.indices[p]).collect(),
        }
    }

    /// Keeps the first `n` images (for `--smoke` runs).
    pub fn truncate(mut self, n: usize) -> Self {
        self.indices.truncate(n);
        self
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Option<ImageItem> {
        let i = *self.indices.get(index)?;
        let size = self.data.height * self.data.width;
        Some(ImageItem {
            pixels: self.data.pixels[i * size..(i + 1) * size].to_vec(),
            height: self.data.height,
            width: self.data.width,
            label: self.data.labels[i],
        })
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}

/// Splits a training set into train and valid parts with a seeded permutation: `valid_len` images
/// for validation, the rest for training. The same seed always gives the same split.
pub fn split_train_valid(
    data: Arc<ImageData>,
    valid_len: usize,
    seed: u64,
) -> Result<(ImageDataset, ImageDataset), String> {
    let n = data.len();
    if valid_len == 0 || valid_len >= n {
        return Err(format!(
            "valid size {valid_len} must be between 1 and {} for a training set of {n} images",
            n.saturating_sub(1)
        ));
    }
    let mut indices: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut indices);
    let train = indices.split_off(valid_len);
    Ok((
        ImageDataset::from_indices(data.clone(), train),
        ImageDataset::from_indices(data, indices),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;

    fn toy(n: usize) -> Arc<ImageData> {
        Arc::new(ImageData {
            pixels: (0..n * 4).map(|i| i as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            height: 2,
            width: 2,
        })
    }

    #[test]
    fn split_is_disjoint_complete_and_seeded() {
        let (train, valid) = split_train_valid(toy(50), 10, 3).unwrap();
        assert_eq!((train.len(), valid.len()), (40, 10));
        let mut all: Vec<usize> = train
            .indices
            .iter()
            .chain(&valid.indices)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        let (_, again) = split_train_valid(toy(50), 10, 3).unwrap();
        assert_eq!(again.indices, valid.indices);
        let (_, other) = split_train_valid(toy(50), 10, 4).unwrap();
        assert_ne!(other.indices, valid.indices);
    }

    #[test]
    fn split_rejects_impossible_sizes() {
        assert!(split_train_valid(toy(5), 5, 0).is_err());
        assert!(split_train_valid(toy(5), 0, 0).is_err());
    }

    #[test]
    fn dataset_items_are_the_right_pixels() {
        let ds = ImageDataset::new(toy(3));
        let item = ds.get(1).unwrap();
        assert_eq!(item.pixels, vec![4, 5, 6, 7]);
        assert_eq!(item.label, 1);
        assert!(ds.get(3).is_none());
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_set(dir: &Path, images: Vec<u8>, image_dims: &[usize], labels: &[u8]) {
        std::fs::write(
            dir.join(FILE_NAMES[0]),
            gz(&encode_idx(image_dims, &images)),
        )
        .unwrap();
        let labels = gz(&encode_idx(&[labels.len()], labels));
        std::fs::write(dir.join(FILE_NAMES[1]), labels).unwrap();
    }

    #[test]
    fn count_mismatch_names_the_labels_file() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), vec![0; 8], &[2, 2, 2], &[1, 2, 3]);
        let err = ImageData::load(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train-labels-idx1-ubyte.gz: 3 labels for 2 images"),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), vec![0; 8], &[2, 2, 2], &[1, 10]);
        let err = ImageData::load(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 10 at index 1"), "{err}");
    }

    #[test]
    fn images_must_have_three_dimensions() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), vec![0; 8], &[2, 4], &[1, 2]);
        let err = ImageData::load(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("images need 3 dimensions"), "{err}");
    }

    #[test]
    fn valid_set_loads() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), (0..8).collect(), &[2, 2, 2], &[3, 4]);
        let data = ImageData::load(dir.path(), Split::Train).unwrap();
        assert_eq!((data.len(), data.height, data.width), (2, 2, 2));
        assert_eq!(data.labels, vec![3, 4]);
    }

    #[test]
    fn folder_source_lists_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageSource::Folder(dir.path().to_path_buf())
            .locate(Path::new("/unused"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for s in [ImageSource::Mnist, ImageSource::FashionMnist] {
            assert_eq!(ImageSource::parse(&s.name()), s);
        }
    }
}

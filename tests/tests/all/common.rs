//! Tiny MNIST-style sets in the real file format, written to temp dirs.

use pdl_datasets::SplitMix64;
use pdl_datasets::idx::encode_idx;
use pdl_datasets::mnist::FILE_NAMES;
use std::io::Write;
use std::path::Path;

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Images whose class is visible: a bright bar whose row is the label, plus noise.
pub fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = SplitMix64::new(seed);
    let mut pixels = vec![0u8; n * 28 * 28];
    let mut labels = Vec::with_capacity(n);
    for (i, img) in pixels.chunks_exact_mut(28 * 28).enumerate() {
        let label = (i % 10) as u8;
        for p in img.iter_mut() {
            *p = (rng.below(40)) as u8;
        }
        let row = 3 + 2 * label as usize;
        for x in 4..24 {
            img[row * 28 + x] = 255;
        }
        labels.push(label);
    }
    (pixels, labels)
}

/// Writes one split of an MNIST-style set into `dir`: gzipped images `[n, side, side]` and labels,
/// under the train (`split` 0) or test (`split` 1) file names.
pub fn write_split(dir: &Path, split: usize, side: usize, pixels: &[u8], labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = labels.len();
    let img = gz(&encode_idx(&[n, side, side], pixels));
    let lab = gz(&encode_idx(&[n], labels));
    std::fs::write(dir.join(FILE_NAMES[2 * split]), img).unwrap();
    std::fs::write(dir.join(FILE_NAMES[2 * split + 1]), lab).unwrap();
}

/// Writes the four gzipped IDX files of a tiny 28x28 set into `dir` (created).
pub fn write_mnist_style(dir: &Path, train: usize, test: usize) {
    for (split, (n, seed)) in [(train, 1), (test, 2)].into_iter().enumerate() {
        let (pixels, labels) = images(n, seed);
        write_split(dir, split, 28, &pixels, &labels);
    }
}

/// Writes a tiny Cora in the LINQS format into `dir` (created): 10 papers of each of the 7
/// classes with Cora's 1433 sparse binary features, each citing the next paper and two random ones.
pub fn write_cora_style(dir: &Path) {
    use pdl_datasets::graph::cora::{CLASSES, FILE_NAMES};
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = SplitMix64::new(11);
    let n = 70;
    let id = |i: usize| 1000 + 37 * i;
    let mut content = String::new();
    for i in 0..n {
        let class = i % 7;
        let words: Vec<&str> = (0..1433)
            .map(
                |w| match w % 7 == class && rng.below(4) == 0 || rng.below(200) == 0 {
                    true => "1",
                    false => "0",
                },
            )
            .collect();
        content += &format!("{}\t{}\t{}\n", id(i), words.join("\t"), CLASSES[class]);
    }
    let mut cites = String::new();
    for i in 0..n {
        for j in [(i + 1) % n, rng.below(n), rng.below(n)] {
            cites += &format!("{}\t{}\n", id(j), id(i));
        }
    }
    std::fs::write(dir.join(FILE_NAMES[0]), content).unwrap();
    std::fs::write(dir.join(FILE_NAMES[1]), cites).unwrap();
}

/// A data dir holding tiny `mnist/`, `fashion-mnist/` and `cora/` sets.
pub fn tiny_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_style(&dir.path().join("mnist"), 160, 64);
    write_mnist_style(&dir.path().join("fashion-mnist"), 160, 64);
    write_cora_style(&dir.path().join("cora"));
    dir
}

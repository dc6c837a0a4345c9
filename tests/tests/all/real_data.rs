//! Tests on the real datasets: `#[ignore]`d, run by `.ci/run` with `PDL_DATA_DIR` set
//! (`cargo test -p pdl-tests -- --ignored`). They fail, not skip, when the variable is missing.

use pdl_datasets::download::sha256_file;
use pdl_datasets::mnist::{FILE_NAMES, ImageData, ImageSource, Split};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("PDL_DATA_DIR").expect("set PDL_DATA_DIR to the datasets folder"),
    )
}

fn check_set(source: ImageSource, sha_of_train_images: &str) {
    let dir = source.locate(&data_dir(), false).unwrap();
    assert_eq!(
        sha256_file(&dir.join(FILE_NAMES[0])).unwrap(),
        sha_of_train_images
    );
    let train = ImageData::load(&dir, Split::Train).unwrap();
    let test = ImageData::load(&dir, Split::Test).unwrap();
    assert_eq!((train.len(), train.height, train.width), (60_000, 28, 28));
    assert_eq!(test.len(), 10_000);
    let mut counts = [0usize; 10];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert!(
        counts.iter().all(|&c| (5_000..=7_000).contains(&c)),
        "{counts:?}"
    );
    let (mean, std) = train.mean_std();
    let (pub_mean, pub_std) = source.normalisation().unwrap();
    assert!(
        (mean - pub_mean).abs() < 1e-3 && (std - pub_std).abs() < 1e-3,
        "{mean} {std}"
    );
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_mnist_loads_with_the_published_statistics() {
    check_set(
        ImageSource::Mnist,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    );
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_fashion_mnist_loads_with_the_published_statistics() {
    check_set(
        ImageSource::FashionMnist,
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    );
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn mnist_cnn_smoke_run_on_real_mnist() {
    let runs = tempfile::tempdir().unwrap();
    let trained = pdl_training::cli::train(&pdl_training::cli::TrainArgs {
        experiment: "mnist-cnn".into(),
        smoke: true,
        devices: "1".into(),
        data_dir: Some(data_dir()),
        artifact_dir: Some(runs.path().join("run")),
        offline: true,
        plain: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(trained.report.test.count, 128);
}

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

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_cora_has_the_published_shape() {
    use pdl_datasets::graph::{NodeSplit, cora};
    let dir = cora::locate(&data_dir(), false).unwrap();
    assert_eq!(
        sha256_file(&dir.join(cora::FILE_NAMES[0])).unwrap(),
        "b8ebed0fd45e53995abafd1b70cf6a9fcc8f86abc5826d69b97fe6ca46e9c8ee"
    );
    let graph = cora::load(&dir).unwrap();
    assert_eq!((graph.num_nodes, graph.num_features), (2708, 1433));
    // 5429 cites, minus repeats and self-citations: PyG's Cora has the same 10,556 directed edges.
    assert_eq!(graph.num_edges(), 10_556);
    assert_eq!(
        graph.class_counts(),
        vec![298, 418, 818, 426, 217, 180, 351]
    );
    let split = NodeSplit::planetoid(&graph, 20, 500, 1000, 0).unwrap();
    assert_eq!(
        (split.train.len(), split.valid.len(), split.test.len()),
        (140, 500, 1000)
    );
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_time_series_have_the_published_shape() {
    use pdl_datasets::timeseries::{Scaler, TimeSeries, ett_splits};
    let ett = TimeSeries::load_csv(&data_dir().join("ett/ETTh1.csv")).unwrap();
    assert_eq!(
        ett.columns,
        vec!["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    );
    assert_eq!(ett.rows, 17_420);
    let [train, _, _] = ett_splits(ett.rows, 96).unwrap();
    let scaled = Scaler::fit(&ett, train.clone()).transform(&ett);
    let c = ett.num_columns();
    let mean_ot: f32 = train.clone().map(|r| scaled.values[r * c + 6]).sum::<f32>() / 8640.0;
    assert!(mean_ot.abs() < 1e-4, "{mean_ot}");
    let airline =
        TimeSeries::load_csv(&data_dir().join("airline-passengers/airline-passengers.csv"))
            .unwrap();
    assert_eq!(
        (airline.rows, airline.columns.clone()),
        (144, vec!["Passengers".into()])
    );
    assert_eq!((airline.values[0], airline.values[143]), (112.0, 432.0));
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_tiny_shakespeare_has_the_published_shape() {
    use burn::data::dataset::Dataset;
    use pdl_datasets::text::{chars, load_text};
    let path = chars::locate(&data_dir(), false).unwrap();
    assert_eq!(
        sha256_file(&path).unwrap(),
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    );
    let text = load_text(&path).unwrap();
    assert!(text.starts_with("First Citizen:"));
    assert_eq!(text.chars().count(), 1_115_394);
    let (train, valid) = chars::split_text(&text, chars::TRAIN_FRACTION);
    assert_eq!(
        (train.chars().count(), valid.chars().count()),
        (1_003_854, 111_540)
    );
    // Every one of the 65 characters already appears in the training part.
    let vocab = chars::CharVocab::from_text(train);
    assert_eq!(vocab.len(), 65);
    let valid_ids = vocab.encode(valid).unwrap();
    assert_eq!(vocab.decode(&valid_ids), valid);
    let windows =
        chars::CharWindowDataset::sequential(std::sync::Arc::new(valid_ids), 256).unwrap();
    assert_eq!(windows.len(), (111_540 - 1) / 256);
}

#[test]
#[ignore = "needs the real datasets: PDL_DATA_DIR"]
fn real_sst2_has_the_published_split_sizes() {
    use pdl_datasets::text::sst2::{self, WordVocab, tokenize};
    let dir = sst2::locate(&data_dir(), false).unwrap();
    assert_eq!(
        sha256_file(&dir.join(sst2::FILE_NAMES[0])).unwrap(),
        "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"
    );
    let train = sst2::load_tsv(&dir.join(sst2::FILE_NAMES[0]), sst2::NUM_CLASSES).unwrap();
    let dev = sst2::load_tsv(&dir.join(sst2::FILE_NAMES[1]), sst2::NUM_CLASSES).unwrap();
    let positives = |rows: &[sst2::LabelledSentence]| rows.iter().filter(|r| r.label == 1).count();
    assert_eq!((train.len(), positives(&train)), (67_349, 37_569));
    assert_eq!((dev.len(), positives(&dev)), (872, 444));
    let tokens: Vec<Vec<String>> = train.iter().map(|r| tokenize(&r.text)).collect();
    let vocab = WordVocab::build(tokens.iter(), 1);
    println!(
        "SST-2 vocabulary: {} with min_count 1, {} with min_count 2",
        vocab.len(),
        WordVocab::build(tokens.iter(), 2).len()
    );
    assert_eq!(vocab.len(), 14_818);
    assert_eq!(vocab.word(2), Some("the"));
    assert_eq!(WordVocab::from_text(&vocab.to_text()).unwrap(), vocab);
}

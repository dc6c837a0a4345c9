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
    write_series(dir.path());
    write_text(dir.path());
    dir
}

/// Writes `ett/ETTh1.csv` (the 14,400 hourly rows the ETT split needs, a date and 7 series with a
/// daily cycle) and `airline-passengers/airline-passengers.csv` (144 months) into `dir`.
pub fn write_series(dir: &Path) {
    let mut rng = SplitMix64::new(3);
    let ett = dir.join("ett");
    std::fs::create_dir_all(&ett).unwrap();
    let mut csv = String::from("date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n");
    for row in 0..14_400 {
        let (day, hour) = (row / 24, row % 24);
        csv += &format!(
            "2016-{:02}-{:02} {hour:02}:00:00",
            7 + day / 30 % 12,
            1 + day % 28
        );
        let cycle = (hour as f32 / 24.0 * std::f32::consts::TAU).sin();
        for series in 0..7 {
            csv += &format!(",{:.3}", series as f32 + cycle + rng.symmetric(0.1));
        }
        csv += "\n";
    }
    std::fs::write(ett.join("ETTh1.csv"), csv).unwrap();
    let airline = dir.join("airline-passengers");
    std::fs::create_dir_all(&airline).unwrap();
    let mut csv = String::from("\"Month\",\"Passengers\"\n");
    for month in 0..144 {
        let seasonal = 20.0 * (month as f32 / 12.0 * std::f32::consts::TAU).sin();
        csv += &format!(
            "\"{}-{:02}\",{}\n",
            1949 + month / 12,
            1 + month % 12,
            (112.0 + 2.0 * month as f32 + seasonal).round()
        );
    }
    std::fs::write(airline.join("airline-passengers.csv"), csv).unwrap();
}

/// Writes `tinyshakespeare/input.txt` (a few thousand characters of dialogue) and SST-2's
/// `sst2/train.tsv` and `dev.tsv` (short sentences whose label their words give away) into `dir`.
pub fn write_text(dir: &Path) {
    let text_dir = dir.join("tinyshakespeare");
    std::fs::create_dir_all(&text_dir).unwrap();
    let lines = [
        "ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n",
    ];
    std::fs::write(text_dir.join("input.txt"), lines.concat().repeat(40)).unwrap();
    let sst = dir.join("sst2");
    std::fs::create_dir_all(&sst).unwrap();
    let mut rng = SplitMix64::new(5);
    let good = ["a", "great", "warm", "film", "moving", "fine", "joy"];
    let bad = ["a", "dull", "flat", "film", "tedious", "mess", "bore"];
    for (file, n) in [("train.tsv", 400), ("dev.tsv", 64)] {
        let mut tsv = String::from("sentence\tlabel\n");
        for i in 0..n {
            let words = if i % 2 == 1 { &good } else { &bad };
            let len = 2 + rng.below(8);
            let sentence: Vec<&str> = (0..len).map(|_| words[rng.below(words.len())]).collect();
            tsv += &format!("{} \t{}\n", sentence.join(" "), i % 2);
        }
        std::fs::write(sst.join(file), tsv).unwrap();
    }
}

/// Runs `body` in a process of its own: this test binary again, running only `test` (its full
/// name, `module::name`). The backend's generator is one per process, so a test that compares two
/// runs draw for draw cannot share a process with the tests training beside it.
pub fn in_a_process_of_its_own(test: &str, body: impl FnOnce()) {
    const ALONE: &str = "PDL_TEST_ALONE";
    if std::env::var(ALONE).as_deref() == Ok(test) {
        return body();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, test)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test}, in a process of its own:\n{stdout}\n{stderr}"
    );
}

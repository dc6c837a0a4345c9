//! Every parser here meets random and mutated files and answers each with a value or an error,
//! never a panic: a bounded mutation fuzzer (seconds, run by `cargo test`), in the spirit of
//! cargo-fuzz. Each parser starts from a small valid file in its real format; each case applies
//! one to four mutations (overwrite, insert, delete or duplicate bytes, insert the format's own
//! separators, cut the file short) or, one time in ten, replaces the file with random bytes. A
//! failure prints the case's seed and the bytes, to be kept below as a case of its own.

use crate::SplitMix64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Cases per parser and seed file: about a second for all of them (20,000 each found nothing).
const CASES: u64 = 1500;

/// Bytes that matter to the formats: separators, signs, digits, dots, quotes, a UTF-8 lead byte,
/// a byte that is never UTF-8, the gzip and IDX magic.
const SPECIAL: &[u8] = b"\t\n\r,.-+e0919\"#\xc3\xff\x1f\x8b\x00\x08";

/// One mutated copy of `seed`.
fn mutate(seed: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    if rng.below(10) == 0 {
        let len = rng.below(64);
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        let byte = match rng.below(2) {
            0 => rng.next_u64() as u8,
            _ => SPECIAL[rng.below(SPECIAL.len())],
        };
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 if at < bytes.len() => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            4 => bytes.truncate(at),
            _ => bytes.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
        }
    }
    bytes
}

/// Feeds [`CASES`] mutations of `seed` to `parse` (which reads the file at the path it is given)
/// and fails on the first panic, naming the case.
fn fuzz(name: &str, seed: &[u8], parse: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    for case in 0..CASES {
        let mut rng = SplitMix64::new(case);
        let bytes = mutate(seed, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        if catch_unwind(AssertUnwindSafe(|| parse(&path))).is_err() {
            panic!(
                "{name}: case {case} panicked on {} bytes: {bytes:?}",
                bytes.len()
            );
        }
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_never_panics() {
    let images = crate::idx::encode_idx(&[3, 2, 2], &[7; 12]);
    fuzz("x.idx", &images, |p| drop(crate::idx::read_idx(p)));
    // Gzipped, as MNIST ships: mutations now hit the gzip stream and its checksum.
    fuzz("x.idx.gz", &gz(&images), |p| drop(crate::idx::read_idx(p)));
}

#[test]
fn mnist_image_and_label_files_never_panic() {
    use crate::mnist::{FILE_NAMES, ImageData, Split};
    let dir = tempfile::tempdir().unwrap();
    let labels = gz(&crate::idx::encode_idx(&[3], &[0, 9, 4]));
    std::fs::write(dir.path().join(FILE_NAMES[1]), labels).unwrap();
    let images = gz(&crate::idx::encode_idx(&[3, 4, 4], &[200; 48]));
    fuzz("images", &images, |p| {
        std::fs::copy(p, dir.path().join(FILE_NAMES[0])).unwrap();
        drop(ImageData::load(dir.path(), Split::Train));
    });
}

#[test]
fn time_series_csv_never_panics() {
    let csv =
        b"date,HUFL,OT\n2016-07-01 00:00:00,5.827,30.531\n2016-07-01 01:00:00,5.693,-27.787\n\
                2016-07-01 02:00:00,1e3,0.5\n";
    fuzz("ett.csv", csv, |p| {
        if let Ok(series) = crate::timeseries::TimeSeries::load_csv(p) {
            drop(series.select(&["OT"], p));
        }
    });
}

#[test]
fn sst2_tsv_never_panics() {
    let tsv = "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n\
               unflinchingly bleak and desperate \t0\n\"quoted\" café\t1\n";
    fuzz("train.tsv", tsv.as_bytes(), |p| {
        use crate::text::sst2::{WordVocab, load_tsv, tokenize};
        if let Ok(rows) = load_tsv(p, 2) {
            let vocab = WordVocab::build(rows.iter().map(|r| tokenize(&r.text)), 1);
            drop(WordVocab::from_text(&vocab.to_text()));
        }
    });
}

#[test]
fn cora_never_panics() {
    use crate::graph::cora::{CLASSES, load_linqs};
    let dir = tempfile::tempdir().unwrap();
    let content = format!(
        "31336\t0\t1\t0\t{}\n1061127\t1\t0\t0\t{}\n1106406\t0\t0\t1\t{}\n",
        CLASSES[0], CLASSES[1], CLASSES[2]
    );
    let cites = b"31336\t1061127\n1106406\t31336\n1061127\t1106406\n";
    let (content_path, cites_path) = (dir.path().join("c.content"), dir.path().join("c.cites"));
    std::fs::write(&cites_path, cites).unwrap();
    fuzz("c.content", content.as_bytes(), |p| {
        drop(load_linqs(p, &cites_path, &CLASSES))
    });
    std::fs::write(&content_path, &content).unwrap();
    fuzz("c.cites", cites, |p| {
        drop(load_linqs(&content_path, p, &CLASSES))
    });
}

#[test]
fn text_and_char_vocabularies_never_panic() {
    use crate::text::chars::{CharVocab, split_text};
    let text =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll: Speak, spéak.\n";
    fuzz("input.txt", text.as_bytes(), |p| {
        if let Ok(text) = crate::text::load_text(p) {
            let (train, valid) = split_text(&text, 0.9);
            let vocab = CharVocab::from_text(train);
            drop(vocab.encode(valid));
            drop(CharVocab::from_string(&vocab.as_string()));
            drop(CharVocab::from_string(&text));
        }
    });
}

/// The harness itself: a parser that panics on some input is caught and named.
#[test]
#[should_panic(expected = "panicked on")]
fn a_parser_that_panics_is_caught() {
    fuzz("x", b"1234", |p| {
        assert!(std::fs::read(p).unwrap().len() <= 4)
    });
}

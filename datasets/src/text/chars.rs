//! Characters as tokens, for character-level language models (Karpathy's char-rnn, 2015).
//!
//! Tiny Shakespeare is one plain-text file, `input.txt` (1,115,394 characters, 65 distinct). The
//! first 90% of its characters train and the last 10% validate ([`split_text`]); the vocabulary is
//! the training part's sorted distinct characters ([`CharVocab`]). A window is `seq_len + 1`
//! consecutive ids: its first `seq_len` are the input and its last `seq_len` the target, so the
//! model predicts every next character at once ([`CharWindowDataset`], [`CharBatcher`]).

use crate::download::{RemoteFile, ensure_files_with, offline};
use crate::{DataError, SplitMix64};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tiny Shakespeare's one file, as char-rnn names it.
pub const FILE_NAME: &str = "input.txt";

/// The share of characters that trains: the first 90%, the last 10% validating.
pub const TRAIN_FRACTION: f64 = 0.9;

const FILES: [RemoteFile; 1] = [RemoteFile {
    name: FILE_NAME,
    remote_name: None,
    sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    mirrors: &["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"],
}];

/// The path of Tiny Shakespeare's file under `data_dir` (`tinyshakespeare/input.txt`),
/// downloading it when it is missing and downloads are allowed (and `PDL_OFFLINE` is not set).
pub fn locate(data_dir: &Path, allow_download: bool) -> Result<PathBuf, DataError> {
    let dir = ensure_files_with(
        data_dir,
        "Tiny Shakespeare",
        "tinyshakespeare",
        &FILES,
        allow_download && !offline(),
    )?;
    Ok(dir.join(FILE_NAME))
}

/// Splits `text` on a character boundary: the first `floor(train_fraction * chars)` characters,
/// then the rest (`train_fraction` is clamped to `[0, 1]`). With [`TRAIN_FRACTION`], Tiny
/// Shakespeare splits into 1,003,854 and 111,540 characters.
pub fn split_text(text: &str, train_fraction: f64) -> (&str, &str) {
    let chars = text.chars().count();
    let train = ((chars as f64 * train_fraction.clamp(0.0, 1.0)).floor() as usize).min(chars);
    let at = text
        .char_indices()
        .nth(train)
        .map_or(text.len(), |(i, _)| i);
    text.split_at(at)
}

/// A character the vocabulary does not have (a prompt character never seen in training, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("character {ch:?} (U+{code:04X}) at position {position} is not in the vocabulary", code = u32::from(*ch))]
pub struct UnknownChar {
    /// The character.
    pub ch: char,
    /// Its position in the encoded text, in characters from 0.
    pub position: usize,
}

/// The characters of a text, id = position: built from the training text in sorted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharVocab {
    /// The distinct characters of `text`, sorted by code point.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Self { chars, ids }
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True when the vocabulary has no character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c`, if the vocabulary has it.
    pub fn id(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    /// The character of `id`, if there is one.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The ids of the characters of `text`; the first character the vocabulary lacks is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, UnknownChar> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| self.id(ch).ok_or(UnknownChar { ch, position }))
            .collect()
    }

    /// The text of `ids`; an id out of range (never produced by a model of this vocabulary's size)
    /// becomes U+FFFD `�`.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| self.char(id).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }

    /// The characters in id order, as one string: what [`CharVocab::from_string`] reads back (to
    /// save the vocabulary beside a model, e.g. as a JSON string).
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// The vocabulary whose ids are the positions of the characters of `s` (the inverse of
    /// [`CharVocab::as_string`]). A character given twice is an error.
    pub fn from_string(s: &str) -> Result<Self, String> {
        let vocab = Self::from_chars(s.chars().collect());
        if vocab.ids.len() != vocab.chars.len() {
            let mut seen = std::collections::HashSet::new();
            let twice = vocab.chars.iter().find(|c| !seen.insert(**c)).copied();
            return Err(format!(
                "the character vocabulary has {:?} twice",
                twice.unwrap_or_default()
            ));
        }
        Ok(vocab)
    }
}

/// One window: `seq_len` input ids and the `seq_len` ids that follow each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharWindow {
    /// Ids `[s, s + seq_len)`.
    pub input: Vec<u32>,
    /// Ids `[s + 1, s + seq_len + 1)`: the input shifted by one.
    pub target: Vec<u32>,
}

/// Windows of `seq_len + 1` consecutive ids of a token sequence, at chosen starts.
#[derive(Debug, Clone)]
pub struct CharWindowDataset {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    starts: Vec<usize>,
}

impl CharWindowDataset {
    /// `count` windows at seeded random starts (uniform over every start that fits; windows may
    /// overlap and repeat): the same seed gives the same windows. For training, with a new seed
    /// per epoch if the windows should change.
    pub fn random(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        count: usize,
        seed: u64,
    ) -> Result<Self, String> {
        check(&tokens, seq_len)?;
        let mut rng = SplitMix64::new(seed);
        let choices = tokens.len() - seq_len;
        let starts = (0..count).map(|_| rng.below(choices)).collect();
        Ok(Self {
            tokens,
            seq_len,
            starts,
        })
    }

    /// Every window that fits, one per start `0, 1, ..., len - seq_len - 1`. For training through
    /// a sampler that draws fresh windows every epoch (`SamplerDataset` with replacement), as
    /// nanoGPT draws its batches: a fixed set of windows, reshuffled, is seen at the same offsets
    /// every epoch, and a small model memorises those sooner.
    pub fn every(tokens: Arc<Vec<u32>>, seq_len: usize) -> Result<Self, String> {
        check(&tokens, seq_len)?;
        let starts = (0..tokens.len() - seq_len).collect();
        Ok(Self {
            tokens,
            seq_len,
            starts,
        })
    }

    /// The windows starting at `0, seq_len, 2 seq_len, ...`: their inputs do not overlap and
    /// their targets cover every id but the first up to the last `(len - 1) % seq_len`, which no
    /// full window reaches. For validation.
    pub fn sequential(tokens: Arc<Vec<u32>>, seq_len: usize) -> Result<Self, String> {
        check(&tokens, seq_len)?;
        let count = (tokens.len() - 1) / seq_len;
        let starts = (0..count).map(|i| i * seq_len).collect();
        Ok(Self {
            tokens,
            seq_len,
            starts,
        })
    }

    /// Input (and target) length of every window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
}

fn check(tokens: &[u32], seq_len: usize) -> Result<(), String> {
    if seq_len == 0 {
        return Err("the sequence length must be at least 1".into());
    }
    if tokens.len() < seq_len + 1 {
        return Err(format!(
            "the text has {} characters, fewer than one window of sequence length {seq_len} \
             needs ({})",
            tokens.len(),
            seq_len + 1
        ));
    }
    Ok(())
}

impl Dataset<CharWindow> for CharWindowDataset {
    fn get(&self, index: usize) -> Option<CharWindow> {
        let start = *self.starts.get(index)?;
        let window = &self.tokens[start..start + self.seq_len + 1];
        Some(CharWindow {
            input: window[..self.seq_len].to_vec(),
            target: window[1..].to_vec(),
        })
    }

    fn len(&self) -> usize {
        self.starts.len()
    }
}

/// A batch of windows.
#[derive(Debug, Clone)]
pub struct CharBatch<B: Backend> {
    /// Input ids, `[batch, seq_len]`.
    pub inputs: Tensor<B, 2, Int>,
    /// Target ids (the inputs shifted by one), `[batch, seq_len]`.
    pub targets: Tensor<B, 2, Int>,
}

/// Stacks [`CharWindow`]s (all of one length) into a [`CharBatch`] with one buffer per tensor.
#[derive(Debug, Clone, Copy, Default)]
pub struct CharBatcher;

impl<B: Backend> Batcher<B, CharWindow, CharBatch<B>> for CharBatcher {
    fn batch(&self, items: Vec<CharWindow>, device: &B::Device) -> CharBatch<B> {
        let batch = items.len();
        let seq_len = items.first().map_or(0, |w| w.input.len());
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for w in &items {
            inputs.extend(w.input.iter().map(|&id| i64::from(id)));
            targets.extend(w.target.iter().map(|&id| i64::from(id)));
        }
        CharBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [batch, seq_len]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, seq_len]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocab_is_sorted_and_round_trips() {
        let vocab = CharVocab::from_text("hello, world\n");
        assert_eq!(vocab.as_string(), "\n ,dehlorw");
        assert_eq!(vocab.len(), 10);
        let ids = vocab.encode("hello").unwrap();
        assert_eq!(ids, vec![5, 4, 6, 6, 7]);
        assert_eq!(vocab.decode(&ids), "hello");
        assert_eq!(vocab.decode(&[0, 99]), "\n\u{FFFD}");
        let back = CharVocab::from_string(&vocab.as_string()).unwrap();
        assert_eq!(back, vocab);
        let odd = CharVocab::from_string("zé\"\\a").unwrap();
        assert_eq!(odd.encode("aé").unwrap(), vec![4, 1]);
        assert_eq!(
            CharVocab::from_string(&odd.as_string())
                .unwrap()
                .as_string(),
            "zé\"\\a"
        );
    }

    #[test]
    fn an_unknown_char_and_a_repeated_char_are_errors() {
        let vocab = CharVocab::from_text("abc");
        let e = vocab.encode("cab!").unwrap_err();
        assert_eq!(
            e,
            UnknownChar {
                ch: '!',
                position: 3
            }
        );
        assert_eq!(
            e.to_string(),
            "character '!' (U+0021) at position 3 is not in the vocabulary"
        );
        let e = CharVocab::from_string("abca").unwrap_err();
        assert!(e.contains("'a' twice"), "{e}");
    }

    #[test]
    fn the_split_is_90_10_on_char_boundaries() {
        let text = "0123456789".repeat(3) + "é";
        let (train, valid) = split_text(&text, TRAIN_FRACTION);
        assert_eq!((train.chars().count(), valid.chars().count()), (27, 4));
        assert_eq!(format!("{train}{valid}"), text);
        let (train, valid) = split_text("ééééééééééé", 0.9); // 11 chars: floor(9.9) = 9
        assert_eq!((train.chars().count(), valid), (9, "éé"));
        assert_eq!(split_text("abc", 1.5), ("abc", ""));
        assert_eq!(split_text("", 0.9), ("", ""));
    }

    fn tokens(n: u32) -> Arc<Vec<u32>> {
        Arc::new((0..n).collect())
    }

    #[test]
    fn random_windows_are_seeded_in_range_and_shifted_by_one() {
        let all = |ds: &CharWindowDataset| -> Vec<CharWindow> {
            (0..ds.len()).map(|i| ds.get(i).unwrap()).collect()
        };
        let a = CharWindowDataset::random(tokens(50), 8, 40, 1).unwrap();
        let b = CharWindowDataset::random(tokens(50), 8, 40, 1).unwrap();
        let c = CharWindowDataset::random(tokens(50), 8, 40, 2).unwrap();
        let (wa, wb, wc) = (all(&a), all(&b), all(&c));
        assert_eq!(a.len(), 40);
        assert_eq!(wa, wb);
        assert_ne!(wa, wc);
        for w in &wa {
            assert_eq!(w.input.len(), 8);
            assert_eq!(w.input[1..], w.target[..7]);
            assert_eq!(w.target[7], w.input[7] + 1);
            assert!(*w.target.last().unwrap() < 50);
        }
        let starts: std::collections::HashSet<u32> = wa.iter().map(|w| w.input[0]).collect();
        assert!(starts.len() > 10, "{starts:?}");
        // Every start that fits is drawn, the last one included.
        let two = CharWindowDataset::random(tokens(10), 8, 100, 3).unwrap();
        let firsts: std::collections::HashSet<u32> = all(&two).iter().map(|w| w.input[0]).collect();
        assert_eq!(firsts, [0, 1].into());
        assert!(a.get(40).is_none());
    }

    #[test]
    fn sequential_windows_cover_the_text() {
        let ds = CharWindowDataset::sequential(tokens(21), 5).unwrap();
        assert_eq!(ds.len(), 4);
        let inputs: Vec<u32> = (0..4).flat_map(|i| ds.get(i).unwrap().input).collect();
        let targets: Vec<u32> = (0..4).flat_map(|i| ds.get(i).unwrap().target).collect();
        assert_eq!(inputs, (0..20).collect::<Vec<_>>());
        assert_eq!(targets, (1..21).collect::<Vec<_>>());
        // One id short of a fifth window's target: the tail is left out.
        assert_eq!(
            CharWindowDataset::sequential(tokens(25), 5).unwrap().len(),
            4
        );
        assert_eq!(
            CharWindowDataset::sequential(tokens(6), 5).unwrap().len(),
            1
        );
    }

    #[test]
    fn every_window_that_fits_once() {
        let ds = CharWindowDataset::every(tokens(10), 8).unwrap();
        let firsts: Vec<u32> = (0..ds.len()).map(|i| ds.get(i).unwrap().input[0]).collect();
        assert_eq!(firsts, [0, 1]);
        assert_eq!(ds.get(1).unwrap().target.last(), Some(&9));
        assert!(CharWindowDataset::every(tokens(8), 8).is_err());
    }

    #[test]
    fn short_texts_and_a_zero_length_are_errors() {
        let e = CharWindowDataset::sequential(tokens(5), 5).unwrap_err();
        assert!(e.contains("5 characters") && e.contains("(6)"), "{e}");
        let e = CharWindowDataset::random(tokens(5), 5, 3, 0).unwrap_err();
        assert!(e.contains("5 characters"), "{e}");
        let e = CharWindowDataset::random(tokens(5), 0, 3, 0).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn windows_batch_into_inputs_and_targets() {
        type B = burn::backend::NdArray;
        let ds = CharWindowDataset::sequential(tokens(7), 3).unwrap();
        let batch: CharBatch<B> = CharBatcher.batch(
            vec![ds.get(0).unwrap(), ds.get(1).unwrap()],
            &Default::default(),
        );
        assert_eq!(batch.inputs.dims(), [2, 3]);
        assert_eq!(batch.targets.dims(), [2, 3]);
        let ints = |t: Tensor<B, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ints(batch.inputs), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(ints(batch.targets), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn locate_without_downloads_reports_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = locate(dir.path(), false).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.starts_with("Tiny Shakespeare not found"), "{e}");
        assert!(e.contains("tinyshakespeare/input.txt"), "{e}");
        std::fs::create_dir_all(dir.path().join("tinyshakespeare")).unwrap();
        std::fs::write(dir.path().join("tinyshakespeare/input.txt"), "x").unwrap();
        assert_eq!(
            locate(dir.path(), false).unwrap(),
            dir.path().join("tinyshakespeare/input.txt")
        );
    }
}

//! SST-2 (Socher et al. 2013, Stanford Sentiment Treebank; GLUE's binary version): movie-review
//! sentences and phrases, 0 = negative, 1 = positive. 67,349 train rows, 872 dev rows (GLUE's
//! test split has no labels, so dev is the held-out set).
//!
//! GLUE's files are TSV with a header: `sentence<TAB>label`, the text already lower-cased and
//! tokenized (a trailing space before the tab). [`load_tsv`] reads any such file, finding the two
//! columns by name; [`tokenize`] splits on whitespace; [`WordVocab`] numbers the training words;
//! [`SentenceBatcher`] pads each batch to its longest sentence, with a mask of the real tokens.

use super::read_utf8;
use crate::DataError;
use crate::download::{RemoteFile, ensure_files_with, offline};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The two labelled files, as saved here: the full training split and the dev split.
pub const FILE_NAMES: [&str; 2] = ["train.tsv", "dev.tsv"];

/// SST-2's classes, in the order of their labels.
pub const CLASSES: [&str; 2] = ["negative", "positive"];

/// Number of classes of SST-2.
pub const NUM_CLASSES: usize = CLASSES.len();

/// A snapshot of the GLUE files in a public repository; there the full training split is
/// `train_full.tsv` (its `train.tsv` is a 1,000-row subset).
const MIRRORS: &[&str] = &[
    "https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/",
];

const FILES: [RemoteFile; 2] = [
    RemoteFile {
        name: FILE_NAMES[0],
        remote_name: Some("train_full.tsv"),
        sha256: "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        mirrors: MIRRORS,
    },
    RemoteFile {
        name: FILE_NAMES[1],
        remote_name: None,
        sha256: "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
        mirrors: MIRRORS,
    },
];

/// Finds SST-2's folder under `data_dir` (`sst2/`, holding [`FILE_NAMES`]), downloading missing
/// files when allowed (and `PDL_OFFLINE` is not set).
pub fn locate(data_dir: &Path, allow_download: bool) -> Result<PathBuf, DataError> {
    ensure_files_with(
        data_dir,
        "SST-2",
        "sst2",
        &FILES,
        allow_download && !offline(),
    )
}

/// A sentence and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledSentence {
    /// The text, trimmed.
    pub text: String,
    /// The class, below the number of classes.
    pub label: usize,
}

/// Reads a TSV file whose header has a `sentence` and a `label` column (in any order, other
/// columns ignored). Every row must have the header's number of fields, a non-empty sentence and
/// an integer label in `0..num_classes` ([`NUM_CLASSES`] for SST-2). Blank lines are skipped; the
/// text is not quoted (SST-2's sentences hold `"` as a plain character). Errors name the file and
/// line.
pub fn load_tsv(path: &Path, num_classes: usize) -> Result<Vec<LabelledSentence>, DataError> {
    let text = read_utf8(path)?;
    let at =
        |line: usize, message: String| DataError::format(path, format!("line {line}: {message}"));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(DataError::format(path, "empty file: no header row"));
    };
    let columns: Vec<&str> = header.split('\t').map(str::trim).collect();
    let column = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            at(
                header_line,
                format!(
                    "the header has no '{name}' column (it has: {})",
                    columns.join(", ")
                ),
            )
        })
    };
    let (sentence_col, label_col) = (column("sentence")?, column("label")?);
    let mut rows = Vec::new();
    for (line, row) in lines {
        let fields: Vec<&str> = row.split('\t').collect();
        if fields.len() != columns.len() {
            return Err(at(
                line,
                format!(
                    "{} tab-separated fields, expected {} ({})",
                    fields.len(),
                    columns.len(),
                    columns.join(", ")
                ),
            ));
        }
        let sentence = fields[sentence_col].trim();
        if sentence.is_empty() {
            return Err(at(line, "empty sentence".into()));
        }
        let label = fields[label_col].trim();
        let label = match label.parse::<i64>() {
            Ok(l) if (0..num_classes as i64).contains(&l) => l as usize,
            Ok(l) => {
                return Err(at(
                    line,
                    format!(
                        "label {l} is out of range (expected 0 to {})",
                        num_classes.saturating_sub(1)
                    ),
                ));
            }
            Err(_) => return Err(at(line, format!("label '{label}' is not an integer"))),
        };
        rows.push(LabelledSentence {
            text: sentence.to_string(),
            label,
        });
    }
    if rows.is_empty() {
        return Err(DataError::format(path, "no data rows after the header"));
    }
    Ok(rows)
}

/// Lower-cases `text` and splits it on whitespace (SST-2 is already tokenized: punctuation and
/// clitics such as `'s` stand apart).
pub fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The id of the padding token, [`PAD_TOKEN`].
pub const PAD: u32 = 0;
/// The id of the unknown-word token, [`UNK_TOKEN`].
pub const UNK: u32 = 1;
/// The padding token, id [`PAD`].
pub const PAD_TOKEN: &str = "<pad>";
/// The unknown-word token, id [`UNK`].
pub const UNK_TOKEN: &str = "<unk>";

/// Words numbered by frequency: `<pad>` = 0, `<unk>` = 1, then the training words seen at least
/// `min_count` times, most frequent first, ties in alphabetical order (so the ids never depend on
/// hashing or file order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordVocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl WordVocab {
    /// Counts the tokens of the training sentences (each a list of tokens, as [`tokenize`] makes
    /// them) and keeps those seen at least `min_count` times (0 counts as 1). Empty tokens and the
    /// two special tokens are left out.
    pub fn build<I, S>(sentences: I, min_count: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[String]>,
    {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for sentence in sentences {
            for token in sentence.as_ref() {
                if let Some(n) = counts.get_mut(token) {
                    *n += 1;
                } else {
                    counts.insert(token.clone(), 1);
                }
            }
        }
        let mut words: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(w, n)| {
                *n >= min_count.max(1) && !w.is_empty() && w != PAD_TOKEN && w != UNK_TOKEN
            })
            .collect();
        words.sort_unstable_by(|(a, na), (b, nb)| nb.cmp(na).then_with(|| a.cmp(b)));
        let specials = [PAD_TOKEN, UNK_TOKEN].map(str::to_string);
        Self::from_words(
            specials
                .into_iter()
                .chain(words.into_iter().map(|(w, _)| w)),
        )
    }

    fn from_words(words: impl IntoIterator<Item = String>) -> Self {
        let words: Vec<String> = words.into_iter().collect();
        let ids = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Self { words, ids }
    }

    /// Number of tokens, the two special ones included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Always false: `<pad>` and `<unk>` are always there.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of `word`, [`UNK`] when the vocabulary lacks it.
    pub fn id(&self, word: &str) -> u32 {
        self.ids.get(word).copied().unwrap_or(UNK)
    }

    /// The word of `id`, if there is one.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The ids of `tokens`, [`UNK`] for each word the vocabulary lacks.
    pub fn encode(&self, tokens: &[String]) -> Vec<u32> {
        tokens.iter().map(|t| self.id(t)).collect()
    }

    /// One token per line in id order, `<pad>` and `<unk>` first, each line ending in `\n`: what
    /// [`WordVocab::from_text`] reads back.
    pub fn to_text(&self) -> String {
        self.words.iter().flat_map(|w| [w.as_str(), "\n"]).collect()
    }

    /// The vocabulary of [`WordVocab::to_text`]'s format: lines 1 and 2 must be `<pad>` and
    /// `<unk>`, and every line one distinct, non-empty token. Errors name the line.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut seen = HashMap::new();
        for (i, word) in text.lines().enumerate() {
            let expected = [PAD_TOKEN, UNK_TOKEN].get(i);
            if let Some(expected) = expected.filter(|e| **e != word) {
                return Err(format!("line {}: '{word}', expected '{expected}'", i + 1));
            }
            if word.is_empty() {
                return Err(format!("line {}: empty token", i + 1));
            }
            if let Some(first) = seen.insert(word, i + 1) {
                return Err(format!("line {}: '{word}' repeats line {first}", i + 1));
            }
        }
        if seen.len() < 2 {
            return Err(format!(
                "{} lines, expected '{PAD_TOKEN}' and '{UNK_TOKEN}' at least",
                seen.len()
            ));
        }
        Ok(Self::from_words(text.lines().map(str::to_string)))
    }

    /// Writes [`WordVocab::to_text`] to `path`.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        std::fs::write(path, self.to_text()).map_err(|e| DataError::io(path, e))
    }

    /// Reads a vocabulary written by [`WordVocab::save`]; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        Self::from_text(&read_utf8(path)?).map_err(|m| DataError::format(path, m))
    }
}

/// A sentence as ids, and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceItem {
    /// Word ids, one per token.
    pub tokens: Vec<u32>,
    /// The class.
    pub label: usize,
}

/// Sentences encoded once with a vocabulary, in file order.
#[derive(Debug, Clone)]
pub struct SentenceDataset {
    items: Vec<SentenceItem>,
}

impl SentenceDataset {
    /// Tokenizes and encodes every sentence with `vocab`.
    pub fn new(sentences: &[LabelledSentence], vocab: &WordVocab) -> Self {
        let items = sentences
            .iter()
            .map(|s| SentenceItem {
                tokens: vocab.encode(&tokenize(&s.text)),
                label: s.label,
            })
            .collect();
        Self { items }
    }

    /// Keeps the first `n` sentences (for `--smoke` runs).
    pub fn truncate(mut self, n: usize) -> Self {
        self.items.truncate(n);
        self
    }
}

impl Dataset<SentenceItem> for SentenceDataset {
    fn get(&self, index: usize) -> Option<SentenceItem> {
        self.items.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// A batch of sentences padded to one length.
#[derive(Debug, Clone)]
pub struct SentenceBatch<B: Backend> {
    /// Word ids, `[batch, len]`, [`PAD`] after the end of each sentence.
    pub tokens: Tensor<B, 2, Int>,
    /// `[batch, len]`: true at a real token, false at padding.
    pub mask: Tensor<B, 2, Bool>,
    /// Classes, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

/// Pads [`SentenceItem`]s to the longest in the batch, at most `max_len` tokens (the first ones
/// are kept), with one buffer per tensor. A sentence without tokens (which [`load_tsv`] never
/// gives) becomes one [`UNK`] so that every row has a real token.
#[derive(Debug, Clone, Copy)]
pub struct SentenceBatcher {
    /// The longest a batch may be; 0 counts as 1.
    pub max_len: usize,
}

/// `items` padded to the longest of them, at most `max_len` tokens (0 counts as 1): the row length,
/// the ids `[batch * len]` ([`PAD`] after each sentence's end, a lone [`UNK`] for an empty one) and
/// the mask of real tokens. What every sentence batcher starts from.
pub(crate) fn pad(items: &[SentenceItem], max_len: usize) -> (usize, Vec<i64>, Vec<bool>) {
    let longest = items.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
    let len = longest.min(max_len).max(1);
    let mut tokens = vec![i64::from(PAD); items.len() * len];
    let mut mask = vec![false; items.len() * len];
    for (item, (row, row_mask)) in items
        .iter()
        .zip(tokens.chunks_exact_mut(len).zip(mask.chunks_exact_mut(len)))
    {
        if item.tokens.is_empty() {
            row[0] = i64::from(UNK);
            row_mask[0] = true;
        }
        for ((t, m), &id) in row.iter_mut().zip(row_mask.iter_mut()).zip(&item.tokens) {
            *t = i64::from(id);
            *m = true;
        }
    }
    (len, tokens, mask)
}

impl<B: Backend> Batcher<B, SentenceItem, SentenceBatch<B>> for SentenceBatcher {
    fn batch(&self, items: Vec<SentenceItem>, device: &B::Device) -> SentenceBatch<B> {
        let batch = items.len();
        let (len, tokens, mask) = pad(&items, self.max_len);
        let targets: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        SentenceBatch {
            tokens: Tensor::from_data(TensorData::new(tokens, [batch, len]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, len]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<LabelledSentence>, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.tsv");
        std::fs::write(&path, text).unwrap();
        load_tsv(&path, NUM_CLASSES)
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    const GOOD: &str = "sentence\tlabel\nhide new secretions from the parental units \t0\n\
                        it 's a \"charming\" and often affecting journey . \t1\n";

    #[test]
    fn reads_glue_rows_with_quotes_and_trailing_spaces() {
        let rows = load(GOOD).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            LabelledSentence {
                text: "hide new secretions from the parental units".into(),
                label: 0
            }
        );
        assert_eq!(
            rows[1].text,
            "it 's a \"charming\" and often affecting journey ."
        );
        assert_eq!(rows[1].label, 1);
        // Columns are found by name; blank lines and CRLF endings are fine.
        let rows = load("label\tid\tsentence\r\n1\t7\tgreat\r\n\r\n0\t8\tdull\r\n").unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.text.as_str(), r.label))
                .collect::<Vec<_>>(),
            vec![("great", 1), ("dull", 0)]
        );
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let cases = [
            ("", "train.tsv: empty file"),
            ("\n\n", "train.tsv: empty file"),
            (
                "sentence\tlabel\n",
                "train.tsv: no data rows after the header",
            ),
            (
                "index\tsentence\n0\tgood\n",
                "train.tsv: line 1: the header has no 'label' column (it has: index, sentence)",
            ),
            (
                "text\tlabel\n",
                "train.tsv: line 1: the header has no 'sentence' column",
            ),
            (
                "sentence\tlabel\na\t1\nb\t0\textra\n",
                "train.tsv: line 3: 3 tab-separated fields, expected 2 (sentence, label)",
            ),
            (
                "sentence\tlabel\na\t1\nno tab here\n",
                "train.tsv: line 3: 1 tab-separated fields, expected 2",
            ),
            (
                "sentence\tlabel\na\t1\nb\t0\nc\tpositive\n",
                "train.tsv: line 4: label 'positive' is not an integer",
            ),
            (
                "sentence\tlabel\na\t1\nb\t2\n",
                "train.tsv: line 3: label 2 is out of range (expected 0 to 1)",
            ),
            (
                "sentence\tlabel\na\t-1\n",
                "train.tsv: line 2: label -1 is out of range",
            ),
            (
                "sentence\tlabel\na\t1\n\n \t0\n",
                "train.tsv: line 4: empty sentence",
            ),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.tsv");
        std::fs::write(&path, "sentence\tlabel\na\t2\n").unwrap();
        assert_eq!(load_tsv(&path, 3).unwrap()[0].label, 2);
        std::fs::write(&path, b"sentence\tlabel\na\t1\n\xe9\t0\n").unwrap();
        let e = load_tsv(&path, 2).unwrap_err().to_string();
        assert!(
            e.contains("dev.tsv: line 3: byte 19 is not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn tokenize_lower_cases_and_splits_on_whitespace() {
        assert_eq!(
            tokenize("  It 's\tA  Film .\n"),
            vec!["it", "'s", "a", "film", "."]
        );
        assert!(tokenize("   ").is_empty());
    }

    fn sentences(texts: &[&str]) -> Vec<Vec<String>> {
        texts.iter().map(|t| tokenize(t)).collect()
    }

    #[test]
    fn the_word_vocab_orders_by_count_then_alphabetically() {
        let train = sentences(&["b a c a", "c d a <unk>", "e b"]);
        let vocab = WordVocab::build(&train, 1);
        // a 3, b 2, c 2, d 1, e 1; `<unk>` in the text is not a word of its own.
        let words: Vec<&str> = (0..vocab.len() as u32)
            .map(|i| vocab.word(i).unwrap())
            .collect();
        assert_eq!(words, ["<pad>", "<unk>", "a", "b", "c", "d", "e"]);
        assert_eq!(vocab.encode(&tokenize("A zebra c")), vec![2, UNK, 4]);
        assert_eq!(vocab.word(7), None);
        let frequent = WordVocab::build(&train, 2);
        assert_eq!(frequent.len(), 5);
        assert_eq!(frequent.encode(&tokenize("d b")), vec![UNK, 3]);
        assert_eq!(WordVocab::build(Vec::<Vec<String>>::new(), 1).len(), 2);
        assert!(!frequent.is_empty());
    }

    #[test]
    fn the_word_vocab_round_trips_through_text_and_a_file() {
        let vocab = WordVocab::build(sentences(&["ça va \" 's -- ...", "ça"]), 1);
        let text = vocab.to_text();
        assert!(text.starts_with("<pad>\n<unk>\nça\n"), "{text}");
        assert_eq!(WordVocab::from_text(&text).unwrap(), vocab);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        vocab.save(&path).unwrap();
        assert_eq!(WordVocab::load(&path).unwrap(), vocab);
        std::fs::write(&path, "<pad>\n<unk>\na\nb\na\n").unwrap();
        let e = WordVocab::load(&path).unwrap_err().to_string();
        assert!(e.contains("vocab.txt: line 5: 'a' repeats line 3"), "{e}");
        let e = WordVocab::from_text("<unk>\n<pad>\n").unwrap_err();
        assert!(e.contains("line 1: '<unk>', expected '<pad>'"), "{e}");
        assert!(
            WordVocab::from_text("<pad>\n<unk>\n\nx\n")
                .unwrap_err()
                .contains("line 3: empty")
        );
        assert!(WordVocab::from_text("<pad>\n").is_err());
    }

    #[test]
    fn batches_pad_to_the_longest_sentence_with_a_mask() {
        type B = burn::backend::NdArray;
        let item = |tokens: Vec<u32>, label| SentenceItem { tokens, label };
        let items = vec![item(vec![5, 6, 7], 1), item(vec![8], 0), item(vec![], 1)];
        let batch: SentenceBatch<B> =
            SentenceBatcher { max_len: 10 }.batch(items.clone(), &Default::default());
        assert_eq!(batch.tokens.dims(), [3, 3]);
        assert_eq!(batch.mask.dims(), [3, 3]);
        let ints = |t: Tensor<B, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let bools =
            |t: Tensor<B, 2, Bool>| t.into_data().convert::<bool>().to_vec::<bool>().unwrap();
        assert_eq!(ints(batch.tokens), vec![5, 6, 7, 8, 0, 0, 1, 0, 0]);
        assert_eq!(
            bools(batch.mask),
            vec![true, true, true, true, false, false, true, false, false]
        );
        let targets = batch
            .targets
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(targets, vec![1, 0, 1]);
        // Truncated to `max_len`, the first tokens kept.
        let short: SentenceBatch<B> =
            SentenceBatcher { max_len: 2 }.batch(items, &Default::default());
        assert_eq!(ints(short.tokens), vec![5, 6, 8, 0, 1, 0]);
        assert_eq!(
            bools(short.mask),
            vec![true, true, true, false, true, false]
        );
    }

    #[test]
    fn the_dataset_encodes_every_sentence() {
        let rows = load(GOOD).unwrap();
        let vocab = WordVocab::build(rows.iter().take(1).map(|r| tokenize(&r.text)), 1);
        let ds = SentenceDataset::new(&rows, &vocab);
        assert_eq!(ds.len(), 2);
        let first = ds.get(0).unwrap();
        assert_eq!(first.label, 0);
        assert_eq!(first.tokens.len(), 7);
        assert!(first.tokens.iter().all(|&t| t > UNK));
        assert!(ds.get(1).unwrap().tokens.iter().all(|&t| t == UNK));
        assert_eq!(ds.truncate(1).len(), 1);
    }

    #[test]
    fn locate_without_downloads_reports_the_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sst2")).unwrap();
        std::fs::write(dir.path().join("sst2/dev.tsv"), "x").unwrap();
        let e = locate(dir.path(), false).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.starts_with("SST-2 not found"), "{e}");
        assert!(
            e.contains("sst2/train.tsv") && !e.contains("dev.tsv"),
            "{e}"
        );
        assert!(FILES[0].url(MIRRORS[0]).ends_with("/SST-2/train_full.tsv"));
        assert!(FILES[1].url(MIRRORS[0]).ends_with("/SST-2/dev.tsv"));
    }
}

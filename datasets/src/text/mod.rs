//! Text: plain UTF-8 files read whole, characters and words turned into ids, and their batches.
//!
//! - [`chars`]: character-level language modelling on Tiny Shakespeare (Karpathy's char-rnn,
//!   2015): a character vocabulary, the 90/10 split, windows of `seq_len + 1` characters whose
//!   target is the input shifted by one.
//! - [`sst2`]: binary sentiment classification on SST-2 (Socher et al. 2013, GLUE's TSV files): a
//!   word vocabulary, sentences as ids, batches padded to their longest sentence with a mask.
//! - [`masked`]: the same sentences with words hidden, for masked-language-model pre-training.
//!
//! Ids are `u32` in the items and `i64` in the tensors (Burn's `Int`), as elsewhere in the crate.

pub mod chars;
pub mod masked;
pub mod sst2;

use crate::DataError;
use std::path::Path;

/// Reads a whole UTF-8 text file. An empty file is an error, and so are bytes that are not UTF-8:
/// the message names the file, and the line and byte offset of the first bad byte.
pub fn load_text(path: &Path) -> Result<String, DataError> {
    let text = read_utf8(path)?;
    if text.is_empty() {
        return Err(DataError::format(path, "empty file: no text"));
    }
    Ok(text)
}

/// Reads a file as UTF-8, naming the line and byte offset of the first byte that is not.
fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::format(
            path,
            format!("line {line}: byte {offset} is not valid UTF-8 (the file must be UTF-8 text)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utf8_and_rejects_empty_files_and_bad_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.txt");
        std::fs::write(&path, "Première ligne\nsecond\n").unwrap();
        assert_eq!(load_text(&path).unwrap(), "Première ligne\nsecond\n");
        std::fs::write(&path, "").unwrap();
        let e = load_text(&path).unwrap_err().to_string();
        assert!(e.contains("input.txt: empty file"), "{e}");
        std::fs::write(&path, b"ab\ncd\nx\xffy\n").unwrap();
        let e = load_text(&path).unwrap_err().to_string();
        assert!(
            e.contains("input.txt: line 3: byte 7 is not valid UTF-8"),
            "{e}"
        );
        let e = load_text(&dir.path().join("none.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.txt"), "{e}");
    }
}

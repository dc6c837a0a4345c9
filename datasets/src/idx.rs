//! The IDX format (LeCun et al., <http://yann.lecun.com/exdb/mnist/>), raw or gzipped.
//!
//! ```text
//! magic: 0x00 0x00 <type> <ndims>     type 0x08 = unsigned byte, the only type MNIST-style sets use
//! dims:  ndims x u32, big-endian
//! data:  prod(dims) values, row-major
//! ```
//!
//! [`read_idx`] checks every field and the exact length, so a truncated or padded file is an error
//! that names the file, never a panic and never a half-read array.

use crate::DataError;
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header, e.g. `[60000, 28, 28]`.
    pub dims: Vec<usize>,
    /// `prod(dims)` bytes, row-major.
    pub data: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UNSIGNED_BYTE: u8 = 0x08;

/// Reads an IDX file, gunzipping it when it starts with the gzip magic. A name ending in `.gz`
/// must hold gzip data.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_idx(&bytes, path)
}

/// Parses IDX bytes (raw or gzipped); `path` only names the source in errors.
pub fn decode_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.is_empty() {
        return Err(DataError::format(path, "empty file"));
    }
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| DataError::format(path, format!("corrupt gzip stream: {e}")))?;
        parse_raw(&raw, path)
    } else if named_gz {
        Err(DataError::format(
            path,
            "not gzip data (the name ends in .gz but the gzip magic 1f 8b is missing)",
        ))
    } else {
        parse_raw(bytes, path)
    }
}

fn parse_raw(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.is_empty() {
        return Err(DataError::format(path, "empty IDX data"));
    }
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!(
                "truncated IDX header: {} bytes, need at least 4",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            format!(
                "wrong magic number {:02x} {:02x} {:02x} {:02x}: not an IDX file (expected 00 00 08 <ndims>)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != UNSIGNED_BYTE {
        return Err(DataError::format(
            path,
            format!(
                "IDX data type 0x{:02x} is not supported (only 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(DataError::format(path, "IDX header declares 0 dimensions"));
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(DataError::format(
            path,
            format!(
                "truncated IDX header: {} bytes, {ndims} dimensions need {header_len}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("IDX dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header_len;
    if found != expected {
        let what = if found < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(DataError::format(
            path,
            format!("{what}: dimensions {dims:?} need {expected} data bytes, found {found}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Encodes an unsigned-byte IDX array: the inverse of [`decode_idx`] on raw bytes. Used by tests and
/// by anyone writing their own MNIST-style set.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn err(bytes: &[u8], name: &str) -> String {
        decode_idx(bytes, Path::new(name)).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_raw_and_gzip() {
        let data: Vec<u8> = (0..24).collect();
        let raw = encode_idx(&[2, 3, 4], &data);
        let expected = IdxArray {
            dims: vec![2, 3, 4],
            data: data.clone(),
        };
        assert_eq!(decode_idx(&raw, Path::new("a-ubyte")).unwrap(), expected);
        assert_eq!(
            decode_idx(&gz(&raw), Path::new("a-ubyte.gz")).unwrap(),
            expected
        );
    }

    #[test]
    fn empty_file_is_an_error_naming_the_file() {
        assert_eq!(err(&[], "x.idx"), "x.idx: empty file");
    }

    #[test]
    fn wrong_magic_is_an_error() {
        assert!(err(&[1, 2, 8, 1, 0, 0, 0, 0], "m").contains("wrong magic"));
    }

    #[test]
    fn non_byte_type_is_an_error() {
        assert!(err(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "f").contains("0x0d is not supported"));
    }

    #[test]
    fn truncated_header_is_an_error() {
        assert!(err(&[0, 0, 8, 3, 0, 0, 0, 1], "h").contains("truncated IDX header"));
    }

    #[test]
    fn truncated_data_is_an_error() {
        let raw = encode_idx(&[2, 2], &[1, 2, 3, 4]);
        assert!(err(&raw[..raw.len() - 1], "t").contains("truncated: dimensions [2, 2] need 4"));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut raw = encode_idx(&[2], &[1, 2]);
        raw.push(9);
        assert!(err(&raw, "t").contains("trailing bytes"));
    }

    #[test]
    fn gz_name_without_gzip_data_is_an_error() {
        let raw = encode_idx(&[1], &[1]);
        assert!(err(&raw, "labels.gz").contains("not gzip data"));
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bad = gz(&encode_idx(&[4], &[1, 2, 3, 4]));
        let n = bad.len();
        bad.truncate(n / 2);
        assert!(err(&bad, "c.gz").contains("corrupt gzip stream"));
    }

    #[test]
    fn zero_dimensions_is_an_error() {
        assert!(err(&[0, 0, 8, 0], "z").contains("0 dimensions"));
    }
}

use std::path::PathBuf;

/// Everything that can go wrong reading or fetching a dataset. Each message is one line that names
/// the file and says what is wrong, so the `pdl` binary can print it as it is.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file was read but its content is not what the format says.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        message: String,
    },
    /// A downloaded file does not have the published checksum.
    #[error("{url}: sha256 is {actual}, expected {expected}; the download was discarded")]
    Checksum {
        /// Where it came from.
        url: String,
        /// The published sha256.
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
    },
    /// A download failed (no network, HTTP error, connection dropped).
    #[error("download of {url} failed: {message}")]
    Download {
        /// Where it was fetched from.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Files of a dataset are missing and could not be downloaded.
    #[error(
        "{dataset} not found: expected {expected} ({cause}); put the files there, or pass \
         --data-dir DIR (or set PDL_DATA_DIR) to a folder holding {folder}/"
    )]
    Missing {
        /// The dataset's name.
        dataset: String,
        /// The folder name under the data dir.
        folder: String,
        /// The expected paths, comma separated.
        expected: String,
        /// Why they could not be fetched.
        cause: String,
    },
}

impl DataError {
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

//! Where dataset files live, and fetching them when they are missing.
//!
//! The rule is the same for every dataset: an explicit `--data-dir`, else `PDL_DATA_DIR`, else the
//! user cache (`$XDG_CACHE_HOME/pdl` or `~/.cache/pdl`). Under it each dataset has its folder
//! (`mnist/`, `fashion-mnist/`, ...) holding the files under their original names. A missing file
//! is downloaded from its canonical source, checked against its published sha256, written to a
//! temporary file and renamed into place, so an interrupted download never leaves a file behind.
//! `PDL_OFFLINE=1` turns downloads off (the tests set it).

use crate::DataError;
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file of a dataset: its original name, published sha256, and the URLs it can be fetched from
/// (tried in order).
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// The original file name, e.g. `train-images-idx3-ubyte.gz`: the name it is saved under.
    pub name: &'static str,
    /// The file's name on the mirrors when it differs from `name` (SST-2's full training split is
    /// `train_full.tsv` there and `train.tsv` here); `None` when it is the same.
    pub remote_name: Option<&'static str>,
    /// The sha256 of the published file, lower-case hex.
    pub sha256: &'static str,
    /// Base URLs ending in `/`; the remote name is appended.
    pub mirrors: &'static [&'static str],
}

impl RemoteFile {
    /// The URL of the file on `mirror`: the mirror followed by the remote name.
    pub fn url(&self, mirror: &str) -> String {
        format!("{mirror}{}", self.remote_name.unwrap_or(self.name))
    }
}

/// The user cache directory for datasets: `$XDG_CACHE_HOME/pdl`, else `$HOME/.cache/pdl`, else
/// `./.pdl-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pdl");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("pdl"),
        None => PathBuf::from(".pdl-cache"),
    }
}

/// The data directory: `explicit` (from `--data-dir`), else `PDL_DATA_DIR`, else [`cache_dir`].
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    match std::env::var_os("PDL_DATA_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir(),
    }
}

/// Makes sure every file of a dataset is in `data_dir/folder/`, downloading the missing ones.
/// Returns the folder. Files already present are used as they are (as torchvision does, the
/// checksum is checked when a file is downloaded, not on every run).
pub fn ensure_files(
    data_dir: &Path,
    dataset: &str,
    folder: &str,
    files: &[RemoteFile],
) -> Result<PathBuf, DataError> {
    ensure_files_with(data_dir, dataset, folder, files, !offline())
}

/// [`ensure_files`] with downloads allowed or not, whatever `PDL_OFFLINE` says.
pub fn ensure_files_with(
    data_dir: &Path,
    dataset: &str,
    folder: &str,
    files: &[RemoteFile],
    allow_download: bool,
) -> Result<PathBuf, DataError> {
    let dir = data_dir.join(folder);
    let missing: Vec<&RemoteFile> = files
        .iter()
        .filter(|f| !dir.join(f.name).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(dir);
    }
    let fetch_all = || -> Result<(), DataError> {
        if !allow_download {
            return Err(DataError::Download {
                url: missing[0].name.to_string(),
                message: "downloads are off (PDL_OFFLINE is set)".into(),
            });
        }
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        for file in &missing {
            fetch_one(file, &dir.join(file.name))?;
        }
        Ok(())
    };
    fetch_all().map_err(|cause| DataError::Missing {
        dataset: dataset.to_string(),
        folder: folder.to_string(),
        expected: missing
            .iter()
            .map(|f| dir.join(f.name).display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cause: cause.to_string(),
    })?;
    Ok(dir)
}

/// True when `PDL_OFFLINE` is set to anything but `0`: missing files are an error, never fetched.
pub fn offline() -> bool {
    std::env::var_os("PDL_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0")
}

fn fetch_one(file: &RemoteFile, dest: &Path) -> Result<(), DataError> {
    let mut last = None;
    for mirror in file.mirrors {
        let url = file.url(mirror);
        match download_file(&url, dest, file.sha256) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| DataError::Download {
        url: file.name.to_string(),
        message: "no mirror is known for this file".into(),
    }))
}

/// Downloads `url` to `dest`: streams into a `.part` file beside it while hashing, checks the sha256, then
/// renames. On any failure the partial file is removed and `dest` is left untouched.
pub fn download_file(url: &str, dest: &Path, sha256: &str) -> Result<(), DataError> {
    // A name of its own per process and call, so two downloads of the same file never write into
    // one another's partial file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut part_name = dest.file_name().unwrap_or_default().to_os_string();
    part_name.push(format!(".{}-{call}.part", std::process::id()));
    let part = dest.with_file_name(part_name);
    let result = download_to(url, &part, sha256);
    match result {
        Ok(()) => std::fs::rename(&part, dest).map_err(|e| {
            let _ = std::fs::remove_file(&part);
            DataError::io(dest, e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn download_to(url: &str, part: &Path, sha256: &str) -> Result<(), DataError> {
    let fail = |message: String| DataError::Download {
        url: url.to_string(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response.body().content_length();
    let mut reader = response.body_mut().as_reader();
    let mut out = std::fs::File::create(part).map_err(|e| DataError::io(part, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done: u64 = 0;
    let mut progress = Progress::new(url, total);
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(part, e))?;
        done += n as u64;
        progress.update(done);
    }
    progress.finish(done);
    if let Some(total) = total
        && done != total
    {
        return Err(fail(format!(
            "connection closed after {done} of {total} bytes"
        )));
    }
    out.sync_all().map_err(|e| DataError::io(part, e))?;
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        return Err(DataError::Checksum {
            url: url.to_string(),
            expected: sha256.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Lower-case hex of bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// A one-line progress bar on stderr when it is a terminal; a start and an end line otherwise.
struct Progress {
    tty: bool,
    total: Option<u64>,
    shown: u64,
}

impl Progress {
    fn new(url: &str, total: Option<u64>) -> Self {
        eprintln!("downloading {url}");
        Self {
            tty: std::io::stderr().is_terminal(),
            total,
            shown: 0,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.tty || done - self.shown < (1 << 18) {
            return;
        }
        self.shown = done;
        match self.total {
            Some(total) if total > 0 => {
                let pct = done * 100 / total;
                let bar = "#".repeat((pct / 4) as usize);
                eprint!(
                    "\r  [{bar:<25}] {pct:3}% {:.1}/{:.1} MB",
                    mb(done),
                    mb(total)
                );
            }
            _ => eprint!("\r  {:.1} MB", mb(done)),
        }
    }

    fn finish(&self, done: u64) {
        if self.tty {
            eprintln!();
        }
        eprintln!("  {:.1} MB received", mb(done));
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins() {
        assert_eq!(
            resolve_data_dir(Some(Path::new("/some/dir"))),
            PathBuf::from("/some/dir")
        );
    }

    #[test]
    fn present_files_are_not_fetched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("toy")).unwrap();
        std::fs::write(dir.path().join("toy/a.bin"), b"x").unwrap();
        let files = [RemoteFile {
            name: "a.bin",
            remote_name: None,
            sha256: "00",
            mirrors: &[],
        }];
        let got = ensure_files(dir.path(), "Toy", "toy", &files).unwrap();
        assert_eq!(got, dir.path().join("toy"));
    }

    #[test]
    fn missing_files_without_mirror_list_the_expected_paths() {
        let dir = tempfile::tempdir().unwrap();
        let files = [RemoteFile {
            name: "a.bin",
            remote_name: None,
            sha256: "00",
            mirrors: &[],
        }];
        let msg = ensure_files(dir.path(), "Toy", "toy", &files)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("Toy not found: expected "), "{msg}");
        assert!(msg.contains("toy/a.bin"), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn the_url_uses_the_remote_name_when_there_is_one() {
        let mut file = RemoteFile {
            name: "train.tsv",
            remote_name: None,
            sha256: "00",
            mirrors: &[],
        };
        assert_eq!(file.url("https://a.org/x/"), "https://a.org/x/train.tsv");
        file.remote_name = Some("train_full.tsv");
        assert_eq!(
            file.url("https://a.org/x/"),
            "https://a.org/x/train_full.tsv"
        );
    }
}

//! The download path against a small HTTP server on 127.0.0.1: success, checksum mismatch, and a
//! connection dropped mid-file, each leaving either the right file or nothing.

use pdl_datasets::download::{RemoteFile, download_file};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

enum Reply {
    /// Serve the body whole.
    Full(Vec<u8>),
    /// Announce the whole body but send only the first `n` bytes, then close.
    Dropped(Vec<u8>, usize),
}

/// Serves `replies` to successive connections, then stops. Returns the base URL.
fn serve(replies: Vec<Reply>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let (body, send) = match &reply {
                Reply::Full(b) => (b, b.len()),
                Reply::Dropped(b, n) => (b, *n),
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..send]);
            let _ = stream.flush();
        }
    });
    format!("http://{addr}/")
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn download_succeeds_and_is_checked() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let url = serve(vec![Reply::Full(body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.gz");
    download_file(&format!("{url}file.gz"), &dest, &sha(&body)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(entries(dir.path()), vec!["file.gz"]);
}

#[test]
fn checksum_mismatch_leaves_nothing() {
    let url = serve(vec![Reply::Full(b"not the real file".to_vec())]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.gz");
    let err = download_file(&format!("{url}file.gz"), &dest, &sha(b"the real file"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256 is"), "{err}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn dropped_connection_leaves_nothing() {
    let body = vec![7u8; 100_000];
    let url = serve(vec![Reply::Dropped(body.clone(), 30_000)]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.gz");
    let err = download_file(&format!("{url}file.gz"), &dest, &sha(&body))
        .unwrap_err()
        .to_string();
    assert!(err.contains("download of"), "{err}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn refused_connection_is_a_missing_dataset_error_listing_the_paths() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror: &'static str = Box::leak(format!("http://127.0.0.1:{port}/").into_boxed_str());
    let mirrors: &'static [&'static str] = Box::leak(vec![mirror].into_boxed_slice());
    let files = [RemoteFile {
        name: "a.gz",
        remote_name: None,
        sha256: "00",
        mirrors,
    }];
    let dir = tempfile::tempdir().unwrap();
    let err = ensure_files_online(dir.path(), &files)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("Toy not found: expected "), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    assert!(
        err.contains(&dir.path().join("toy/a.gz").display().to_string()),
        "{err}"
    );
    assert!(!dir.path().join("toy/a.gz").exists());
}

#[test]
fn ensure_files_fetches_every_missing_file() {
    let (a, b) = (b"first file".to_vec(), b"second file".to_vec());
    let url = serve(vec![Reply::Full(a.clone()), Reply::Full(b.clone())]);
    let mirror: &'static str = Box::leak(url.into_boxed_str());
    let mirrors: &'static [&'static str] = Box::leak(vec![mirror].into_boxed_slice());
    let files = [
        RemoteFile {
            name: "a.gz",
            remote_name: None,
            sha256: Box::leak(sha(&a).into_boxed_str()),
            mirrors,
        },
        RemoteFile {
            name: "b.gz",
            remote_name: None,
            sha256: Box::leak(sha(&b).into_boxed_str()),
            mirrors,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let got = ensure_files_online(dir.path(), &files).unwrap();
    assert_eq!(std::fs::read(got.join("a.gz")).unwrap(), a);
    assert_eq!(std::fs::read(got.join("b.gz")).unwrap(), b);
}

/// `ensure_files` with downloads allowed, whatever the other tests set: these fetch from
/// 127.0.0.1 only.
fn ensure_files_online(
    dir: &Path,
    files: &[RemoteFile],
) -> Result<std::path::PathBuf, pdl_datasets::DataError> {
    pdl_datasets::download::ensure_files_with(dir, "Toy", "toy", files, true)
}

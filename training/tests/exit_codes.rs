//! The `pdl` binary turns every error into one line on stderr and a non-zero exit code.

use std::process::Command;

fn pdl(args: &[&str], data_dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pdl"))
        .args(args)
        .env("PDL_DATA_DIR", data_dir)
        .env("PDL_OFFLINE", "1")
        .current_dir(data_dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["train", "mnist-gpt"],
            1,
            "error: unknown experiment 'mnist-gpt'",
        ),
        (
            &["train", "mnist-cnn", "--smoke"],
            1,
            "error: MNIST not found",
        ),
        (
            &["train", "mnist-cnn", "--backend", "tpu"],
            1,
            "error: unknown backend",
        ),
        (&["eval", "nowhere"], 1, "error: nowhere: no config.json"),
    ];
    for (args, code, start) in cases {
        let (got, stderr) = pdl(args, dir.path());
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.starts_with(start), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn usage_errors_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = pdl(&["train", "mnist-cnn", "--epochs", "many"], dir.path());
    assert_eq!(code, 2, "{stderr}");
}

//! Turning `cargo xtask <cmd> ...` into `cargo run --release -p pdl-training --features ... --
//! <cmd> ...`.

use anyhow::{Context, Result};
use clap::Args;
use std::process::Command;

/// Every argument after the subcommand, passed to `pdl` unchanged.
#[derive(Args, Debug)]
pub struct PassThrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The values of `--flag X`, `--flag=X` or `--flag X,Y`, split at the commas.
fn values(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    let inline = format!("{flag}=");
    while let Some(a) = it.next() {
        let value = match a.strip_prefix(&inline) {
            Some(v) => Some(v.to_string()),
            None if a == flag => it.next().cloned(),
            None => None,
        };
        if let Some(v) = value {
            out.extend(v.split(',').map(str::to_string));
        }
    }
    out
}

/// How many devices `--devices 2` or `--devices 0,1` asks for (1 when absent or unreadable).
fn device_count(args: &[String]) -> usize {
    match values(args, "--devices").as_slice() {
        [one] => one.parse().unwrap_or(1),
        list => list.len().max(1),
    }
}

/// The cargo features for those backends: `flex` is the default feature, the others are added
/// by name; anything else is left for `pdl` to reject with its own message. Several CUDA GPUs
/// take the CUDA-only build with burn-train's DDP, `ddp` without the default features (see
/// `pdl-training`'s `ddp.rs`).
pub fn features(args: &[String]) -> Vec<String> {
    let mut f: Vec<String> = values(args, "--backend")
        .into_iter()
        .filter(|b| b == "ndarray" || b == "wgpu" || b == "cuda")
        .collect();
    f.sort();
    f.dedup();
    if f == ["cuda"] && device_count(args) > 1 {
        return vec!["ddp".into()];
    }
    f
}

/// The variables cargo sets for the package it runs (not the ones that configure cargo itself).
fn is_package_variable(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(
            key,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Runs `pdl <subcommand> <args>` through `cargo run --release`, returning its exit code.
pub fn pdl(subcommand: &str, pass: PassThrough) -> Result<i32> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // `cargo run -p xtask` hands us xtask's package variables. Build scripts such as ring's declare
    // `rerun-if-env-changed=CARGO_PKG_NAME` (and CARGO_MANIFEST_DIR, ...), which cargo checks in its
    // own environment, so passing them on would rebuild ring, rustls and everything above them
    // whenever one switches between `cargo build` and `cargo xtask`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_package_variable(&key) {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "pdl-training",
        "--bin",
        "pdl",
    ]);
    let features = features(&pass.args);
    if features.iter().any(|f| f == "ddp") {
        cmd.arg("--no-default-features");
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd.arg("--").arg(subcommand).args(&pass.args);
    let status = cmd
        .status()
        .context("could not run cargo to build and start pdl")?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_default_backend_needs_no_feature_and_ndarray_adds_its_own() {
        assert!(features(&s(&["mnist-cnn", "--backend", "flex"])).is_empty());
        assert!(features(&s(&["mnist-cnn"])).is_empty());
        let ndarray = features(&s(&["mnist-cnn", "--backend", "ndarray"]));
        assert_eq!(ndarray, s(&["ndarray"]));
        let both = features(&s(&["bench", "--backend", "flex,ndarray,wgpu"]));
        assert_eq!(both, s(&["ndarray", "wgpu"]));
    }

    #[test]
    fn only_package_variables_are_dropped() {
        assert!(is_package_variable("CARGO_PKG_NAME"));
        assert!(is_package_variable("CARGO_MANIFEST_DIR"));
        assert!(!is_package_variable("CARGO_TARGET_DIR"));
        assert!(!is_package_variable("CARGO_HOME"));
    }

    #[test]
    fn wgpu_adds_its_feature_in_either_spelling() {
        assert_eq!(features(&s(&["x", "--backend", "wgpu"])), s(&["wgpu"]));
        assert_eq!(features(&s(&["x", "--backend=wgpu"])), s(&["wgpu"]));
        assert_eq!(features(&s(&["--backend", "flex,wgpu"])), s(&["wgpu"]));
    }

    #[test]
    fn unknown_backends_are_left_to_pdl() {
        assert!(features(&s(&["x", "--backend", "tpu"])).is_empty());
        assert_eq!(features(&s(&["x", "--backend", "cuda"])), s(&["cuda"]));
    }

    #[test]
    fn several_cuda_gpus_take_the_ddp_build() {
        let ddp = s(&["ddp"]);
        assert_eq!(
            features(&s(&["x", "--backend", "cuda", "--devices", "2"])),
            ddp
        );
        assert_eq!(features(&s(&["x", "--devices=0,1", "--backend=cuda"])), ddp);
        let one = features(&s(&["x", "--backend", "cuda", "--devices", "1"]));
        assert_eq!(one, s(&["cuda"]));
        let cpu = features(&s(&["x", "--backend", "ndarray", "--devices", "2"]));
        assert_eq!(cpu, s(&["ndarray"]));
    }
}

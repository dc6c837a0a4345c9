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

/// The backends named by `--backend X`, `--backend=X` or `--backend X,Y`.
fn backends(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--backend=") {
            Some(v) => Some(v.to_string()),
            None if a == "--backend" => it.next().cloned(),
            None => None,
        };
        if let Some(v) = value {
            out.extend(v.split(',').map(str::to_string));
        }
    }
    out
}

/// The cargo features for those backends: the CPU backends are default features; any other
/// backend (wgpu) is added by name.
pub fn features(args: &[String]) -> Vec<String> {
    let mut f: Vec<String> = backends(args)
        .into_iter()
        .filter(|b| b != "flex" && b != "ndarray")
        .collect();
    f.sort();
    f.dedup();
    f
}

/// Runs `pdl <subcommand> <args>` through `cargo run --release`, returning its exit code.
pub fn pdl(subcommand: &str, pass: PassThrough) -> Result<i32> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
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
    fn cpu_backends_need_no_extra_feature() {
        assert!(features(&s(&["mnist-cnn", "--backend", "ndarray"])).is_empty());
        assert!(features(&s(&["mnist-cnn"])).is_empty());
    }

    #[test]
    fn wgpu_adds_its_feature_in_either_spelling() {
        assert_eq!(features(&s(&["x", "--backend", "wgpu"])), s(&["wgpu"]));
        assert_eq!(features(&s(&["x", "--backend=wgpu"])), s(&["wgpu"]));
        assert_eq!(features(&s(&["--backend", "flex,wgpu"])), s(&["wgpu"]));
    }
}

//! Records, for `metrics.json`, the git commit pdl is built from and Burn's version in
//! `Cargo.lock` (`PDL_GIT_COMMIT`, `PDL_BURN_VERSION`).

use std::process::Command;

fn main() {
    // Read when the script runs, not when it is compiled: a build script compiled for a checkout
    // elsewhere (a shared target dir) is reused here, and its compiled-in path may be gone.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = format!("{manifest}/..");
    let root = root.as_str();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-C", root])
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PDL_GIT_COMMIT={commit}");
    // A commit moves the branch's ref, not HEAD: watch both (a packed ref moves packed-refs). Only
    // files that exist: cargo counts a watched file that is missing as changed, so a clone without
    // packed-refs rebuilt this crate (two minutes in release) on every `cargo xtask train`.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"]
        .into_iter()
        .map(String::from)
        .chain(branch)
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            let file = format!("{root}/{file}");
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }

    let lock = std::fs::read_to_string(format!("{root}/Cargo.lock")).unwrap_or_default();
    let burn = lock
        .split("[[package]]")
        .find(|package| package.contains("\nname = \"burn\"\n"))
        .and_then(|package| package.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("unknown".to_string(), |v| v.trim_matches('"').to_string());
    println!("cargo:rustc-env=PDL_BURN_VERSION={burn}");
    println!("cargo:rerun-if-changed={root}/Cargo.lock");
}

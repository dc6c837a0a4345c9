//! `cargo xtask`: the thin launcher. It builds the `pdl` binary in release with the cargo features
//! the chosen backend needs, then runs it with the remaining arguments. It has no Burn dependency,
//! so it builds in seconds.
//!
//! `cargo xtask train mnist-cnn --backend wgpu --devices 2` runs
//! `cargo run --release -p pdl-training --features wgpu -- train mnist-cnn --backend wgpu --devices 2`.

mod launch;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer commands for pdl.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Xtask {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train an experiment: `cargo xtask train mnist-cnn [--backend wgpu] [pdl train flags]`.
    Train(launch::PassThrough),
    /// List the experiments.
    List(launch::PassThrough),
    /// Score a trained run on its test set: `cargo xtask eval runs/mnist-cnn`.
    Eval(launch::PassThrough),
    /// Continue a prompt with a trained language model:
    /// `cargo xtask generate runs/shakespeare-lstm --prompt "ROMEO:" --length 500`.
    Generate(launch::PassThrough),
    /// Throughput per backend: `cargo xtask bench [--backend flex,ndarray] [--model gcn]`.
    Bench(launch::PassThrough),
    /// Draw a run's learning curves: `cargo xtask plot runs/mnist-cnn` writes its curves.png.
    Plot(launch::PassThrough),
    /// Overlay the loss curves of runs:
    /// `cargo xtask compare runs/a runs/b --out compare.png`.
    Compare(launch::PassThrough),
    /// Write the course report from a folder of runs: `cargo xtask report [runs]` writes
    /// runs/report.md and runs/report.html.
    Report(launch::PassThrough),
    /// Judge a pre-trained encoder with few labels and all:
    /// `cargo xtask probe runs/mnist-simclr --labels-per-class 10,100,full [--fine-tune]`.
    Probe(launch::PassThrough),
    /// Train with several processes on this machine, as torchrun does:
    /// `cargo xtask launch --nodes 2 mnist-cnn [pdl train flags]`.
    Launch(launch::PassThrough),
}

fn main() -> Result<()> {
    let status = match Xtask::parse().command {
        Cmd::Train(a) => launch::pdl("train", a),
        Cmd::List(a) => launch::pdl("list", a),
        Cmd::Eval(a) => launch::pdl("eval", a),
        Cmd::Generate(a) => launch::pdl("generate", a),
        Cmd::Bench(a) => launch::pdl("bench", a),
        Cmd::Plot(a) => launch::pdl("plot", a),
        Cmd::Compare(a) => launch::pdl("compare", a),
        Cmd::Report(a) => launch::pdl("report", a),
        Cmd::Probe(a) => launch::pdl("probe", a),
        Cmd::Launch(a) => launch::pdl("launch", a),
    }?;
    std::process::exit(status);
}

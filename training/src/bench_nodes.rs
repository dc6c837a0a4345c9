//! `pdl bench --model all-reduce`: what averaging the gradients across processes costs, and what
//! that predicts for N machines.
//!
//! The command starts `--ranks` processes on this machine (as `pdl launch` does), which time
//! [`NodeGroup::mean`] (the call a multi-process run makes once a step: registration, the
//! all-reduce, finishing) on vectors from 2 floats to 4 M, with each of burn-collective's three
//! strategies: ring, tree (arity 2) and centralised. Each figure is the median of
//! [`TIMED_CALLS`] calls after one warm-up.
//!
//! Beside it the CNN's training step is timed in one process (`pdl bench --model cnn`'s figure).
//! The two make a model of data parallelism over N machines for the CNN (1.2 M parameters, 4.8 MB of
//! gradients a step):
//!
//! ```text
//! t_allreduce(N) = a·(N−1) + 2·(N−1)/N · S / bandwidth      (a ring: 2(N−1) hops, each rank sends 2(N−1)/N of S)
//! speed-up(N)    = t_step / (t_step / N + t_allreduce(N))     (the global batch of 64 shared out)
//! ```
//!
//! with `a` the measured fixed cost of a call between two processes (the 2-float call), `S` the
//! gradient's bytes, and the bandwidth assumed (1 and 10 GB/s, roughly 10 and 100 Gbit/s
//! Ethernet) or measured on this machine's loopback. Two processes on one 2-core machine share its
//! cores and memory: the figures show the engine's costs, not what two machines would gain.

use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use crate::bench::{BenchArgs, BenchModel, measure};
use crate::nodes::{NodeGroup, NodeSpec};
use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::AllReduceStrategy;
use pdl_kernels::ConvImplementation;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Vector lengths timed, in floats.
const SIZES: [usize; 6] = [2, 10_000, 100_000, 1_000_000, 2_000_000, 4_000_000];

/// Calls timed per figure, after one warm-up (every rank makes the same calls, so the count is
/// fixed, not a time budget).
pub const TIMED_CALLS: usize = 7;

/// Milliseconds between calls, standing for a training step's compute: a call finishes in the
/// background (~40 ms, see [`NodeGroup::mean`]), so what a step waits for is the rest.
const STEP_MS: u64 = 100;

/// The strategies timed, with their names.
const STRATEGIES: [(&str, AllReduceStrategy); 3] = [
    ("ring", AllReduceStrategy::Ring),
    ("tree", AllReduceStrategy::Tree(2)),
    ("centralised", AllReduceStrategy::Centralized),
];

/// One figure: the median time of a call of `floats` floats with `strategy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallTime {
    /// The all-reduce strategy.
    pub strategy: String,
    /// Floats per call (a model's parameter count).
    pub floats: usize,
    /// Median milliseconds per call.
    pub median_ms: f64,
}

/// `pdl bench --model all-reduce`: the ranks' timings, the CNN's step, the model.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(rank) = args.rank {
        return rank_main(args, rank);
    }
    if args.ranks < 2 {
        bail!(
            "--ranks {}: the all-reduce needs two processes or more",
            args.ranks
        );
    }
    println!("timing the CNN's training step in one process ...");
    let step = measure(
        BackendKind::Flex,
        BenchModel::Cnn,
        ConvImplementation::Pdl,
        args.seconds,
        None,
    )?;
    let step_seconds = crate::bench::TRAIN_BATCH as f64 / step.speed.train;
    let out = tempfile::tempdir()?;
    let file = out.path().join("calls.json");
    println!("timing the all-reduce over {} processes ...", args.ranks);
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for rank in 0..args.ranks {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--model", "all-reduce"])
            .args([
                "--ranks",
                &args.ranks.to_string(),
                "--rank",
                &rank.to_string(),
            ])
            .args(["--port", &args.port.to_string()])
            .arg("--out")
            .arg(&file)
            .env(
                "RAYON_NUM_THREADS",
                crate::nodes::threads_per_rank(args.ranks),
            )
            .stdout(std::process::Stdio::null());
        children.push(cmd.spawn()?);
    }
    for (rank, child) in children.iter_mut().enumerate() {
        let status = child.wait()?;
        if !status.success() {
            bail!("all-reduce benchmark: rank {rank} stopped ({status})");
        }
    }
    let text = std::fs::read_to_string(&file).context("rank 0 wrote no timings")?;
    let calls: Vec<CallTime> = serde_json::from_str(&text)?;
    print!(
        "{}",
        report(&calls, args.ranks, step_seconds, CNN_PARAMETERS)
    );
    Ok(())
}

/// The CNN's parameters (`pdl train mnist-cnn` prints them; a test checks the figure).
pub const CNN_PARAMETERS: usize = 1_199_882;

/// The tables of a run: every call's time, then the model of N machines.
pub fn report(calls: &[CallTime], ranks: usize, step_seconds: f64, parameters: usize) -> String {
    let mut out = format!(
        "\nAll-reduce (mean) of one vector between {ranks} processes on 127.0.0.1, median of \
         {TIMED_CALLS} calls {STEP_MS} ms apart (as a step's compute spaces them; the finishing \
         of each runs in that time): what a step waits for.\n\n\
         | floats | MB | ring ms | tree ms | centralised ms | ring MB/s |\n|---:|---:|---:|---:|---:|---:|\n"
    );
    let time = |strategy: &str, floats: usize| {
        calls
            .iter()
            .find(|c| c.strategy == strategy && c.floats == floats)
            .map(|c| c.median_ms)
    };
    let cell = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for floats in SIZES {
        let ring = time("ring", floats);
        let mb = floats as f64 * 4.0 / 1e6;
        out += &format!(
            "| {floats} | {mb:.2} | {} | {} | {} | {} |\n",
            cell(ring),
            cell(time("tree", floats)),
            cell(time("centralised", floats)),
            ring.map_or("-".into(), |ms| format!("{:.0}", mb / (ms / 1e3)))
        );
    }
    let fixed = time("ring", SIZES[0]).unwrap_or(0.0) / 1e3;
    let largest = SIZES[SIZES.len() - 1];
    // Bytes per second from the largest call's time over the smallest's; where the difference is
    // within the noise, the loopback's is not measurable and that column is left out.
    let loopback = time("ring", largest)
        .map(|ms| ms / 1e3 - fixed)
        .filter(|extra| *extra > 1e-3)
        .map(|extra| largest as f64 * 4.0 / extra);
    let bytes = parameters as f64 * 4.0;
    out += &format!(
        "\nModel of N machines for the CNN ({parameters} parameters, {:.1} MB of gradients): its \
         step takes {:.1} ms in one process (batch 64); a call's fixed cost a = {:.1} ms (the \
         2-float call); loopback bandwidth {} (the {largest}-float ring call less a). Predicted \
         speed-up over one machine, the batch of 64 shared out:\n\n\
         | machines | at 1 GB/s | at 10 GB/s | at this machine's loopback |\n|---:|---:|---:|---:|\n",
        bytes / 1e6,
        step_seconds * 1e3,
        fixed * 1e3,
        loopback.map_or("not measurable (within the noise)".into(), |b| format!(
            "{:.0} MB/s",
            b / 1e6
        )),
    );
    for n in [1usize, 2, 4, 8, 16, 32] {
        let speedup = |bandwidth: f64| {
            let comm = match n {
                1 => 0.0,
                _ => fixed * (n - 1) as f64 + 2.0 * (n - 1) as f64 / n as f64 * bytes / bandwidth,
            };
            step_seconds / (step_seconds / n as f64 + comm)
        };
        out += &format!(
            "| {n} | {:.2}x | {:.2}x | {} |\n",
            speedup(1e9),
            speedup(1e10),
            loopback.map_or("-".into(), |b| format!("{:.2}x", speedup(b)))
        );
    }
    out
}

/// One rank of the benchmark: joins the others, times every strategy and size, and (rank 0)
/// writes the figures to `--out`.
fn rank_main(args: &BenchArgs, rank: usize) -> Result<()> {
    let spec = NodeSpec::new(
        args.ranks,
        rank,
        &format!("127.0.0.1:{}", args.port),
        "127.0.0.1",
        120,
    )?;
    let log = tempfile::tempdir()?;
    let group = NodeGroup::join(spec, Vec::new(), &log.path().join("bench.log"))?;
    let calls = run_on(
        BackendKind::Flex,
        &DeviceSpec::Count(1),
        RankTask { group: &group },
    )??;
    if let (0, Some(out)) = (rank, &args.out) {
        std::fs::write(out, serde_json::to_string(&calls)?)?;
    }
    Ok(())
}

struct RankTask<'a> {
    group: &'a NodeGroup,
}

impl BackendTask for RankTask<'_> {
    type Output = Result<Vec<CallTime>>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = &devices[0];
        let mut calls = Vec::new();
        for (name, strategy) in STRATEGIES {
            self.group.set_strategy(Some(strategy));
            for floats in SIZES {
                let values = Tensor::<B::InnerBackend, 1>::ones([floats], device);
                let mut times = Vec::new();
                for call in 0..=TIMED_CALLS {
                    // A training step's compute between calls: the previous call finishes then.
                    std::thread::sleep(Duration::from_millis(STEP_MS));
                    let start = Instant::now();
                    let mean = self
                        .group
                        .mean(values.clone(), "the all-reduce benchmark")?;
                    // The result is read, as the optimiser reads it.
                    let _ = mean.slice(0..1).into_data();
                    if call > 0 {
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
                times.sort_by(f64::total_cmp);
                calls.push(CallTime {
                    strategy: name.to_string(),
                    floats,
                    median_ms: times[times.len() / 2],
                });
            }
        }
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn the_cnns_parameter_count_is_the_models() {
        let device = Default::default();
        let cnn = pdl_models::ClassicCnnConfig::mnist().init::<burn::backend::NdArray>(&device);
        assert_eq!(cnn.num_params(), CNN_PARAMETERS);
    }

    #[test]
    fn the_model_follows_its_formula() {
        // A call costs 10 ms fixed plus 1 ms per MB on loopback; the step takes 100 ms.
        let calls: Vec<CallTime> = SIZES
            .iter()
            .map(|&floats| CallTime {
                strategy: "ring".into(),
                floats,
                median_ms: 10.0 + floats as f64 * 4.0 / 1e6,
            })
            .collect();
        let text = report(&calls, 2, 0.1, 1_000_000);
        assert!(text.contains("a = 10.0 ms"), "{text}");
        assert!(text.contains("loopback bandwidth 1000 MB/s"), "{text}");
        // Two machines at 1 GB/s: 0.1 / (0.05 + 0.01 + 4 MB / 1 GB/s) = 0.1 / 0.064.
        assert!(text.contains("| 2 | 1.56x |"), "{text}");
        assert!(text.contains("| 1 | 1.00x | 1.00x | 1.00x |"), "{text}");
        // Strategies not timed show as such.
        assert!(text.contains("| 2 | 0.00 | 10.0 | - | - |"), "{text}");
    }
}

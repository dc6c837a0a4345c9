//! The `pdl` command line: `list`, `train`, `eval`, `bench`. The commands live in the library so
//! the tests drive them in-process, exactly as the binary does.

use crate::artifacts::{
    MetricsFile, Rerun, RunContext, RunLock, RunReport, Scores, holds_a_run, write_json,
};
use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use crate::experiments::{
    self, EXPERIMENTS, Experiment, ExperimentConfig, Overrides, language_model,
};
use crate::probe::{ProbePlan, ProbeRow, probe_table};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// pdl: the architectures of Principles of Deep Learning, trained on real data with Burn.
#[derive(Parser, Debug)]
#[command(name = "pdl", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the table of experiments: name, chapter, dataset, model, expected result.
    List(ListArgs),
    /// Train an experiment, writing runs/<experiment>/ (config, checkpoints, model, metrics).
    Train(TrainArgs),
    /// Rebuild a trained model from its artifact directory and score it on the test set.
    Eval(EvalArgs),
    /// Continue a prompt with a trained language model (e.g. runs/shakespeare-lstm).
    Generate(GenerateArgs),
    /// Measure training and inference images/s of the classic MNIST net on each backend.
    Bench(crate::bench::BenchArgs),
    /// Redraw a run's learning curves (curves.png) and confusion matrix from its files (training
    /// draws them, and its other figures, when it ends).
    Plot(EvalArgs),
    /// Overlay the loss curves of several runs in one picture (e.g. one process and two).
    Compare(CompareArgs),
    /// Write the course report (report.md and report.html) from every run in a folder of runs.
    Report(ReportArgs),
    /// Judge a pre-trained encoder (e.g. runs/mnist-simclr) with few labels and all: a linear
    /// probe and k-NN on its frozen features beside a random encoder's, and with --fine-tune
    /// fine-tuning beside training from scratch; writes probe.md and probe.json into the run.
    Probe(ProbeArgs),
    /// Train with several processes on this machine, as `torchrun` does: starts `pdl train
    /// EXPERIMENT --nodes N --node-rank R` for each rank R and waits for them all.
    Launch(LaunchArgs),
    /// burn-collective's orchestrator, which the ranks of a multi-process run meet at (rank 0
    /// starts it; see `--nodes`).
    #[command(hide = true)]
    Orchestrate {
        /// The port to listen on.
        #[arg(long)]
        port: u16,
    },
}

/// Options of `pdl compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The run folders, two or more.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Where to write the picture (a .png).
    #[arg(long, default_value = "compare.png")]
    pub out: PathBuf,
    /// Steps over which the training loss is averaged.
    #[arg(long, default_value_t = 50)]
    pub smooth: usize,
}

/// Options of `pdl launch`.
#[derive(Args, Debug, Clone)]
pub struct LaunchArgs {
    /// How many processes train together.
    #[arg(long)]
    pub nodes: usize,
    /// The orchestrator's port on 127.0.0.1 (the ranks take the next 8 x nodes ports too).
    #[arg(long, default_value_t = crate::nodes::DEFAULT_PORT)]
    pub port: u16,
    /// Restart every rank with --resume this many times when one fails after a checkpoint newer
    /// than at the last restart (as torchrun's --max-restarts; see nodes.rs for the faults of
    /// burn-collective 0.21 this is for).
    #[arg(long, default_value_t = 3)]
    pub max_restarts: usize,
    /// `pdl train`'s arguments: the experiment and its flags, the same for every rank.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub train: Vec<String>,
}

/// Options of `pdl probe`.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The pre-training run (its folder holds config.json and model.mpk), and where to read data.
    #[command(flatten)]
    pub run: EvalArgs,
    /// Labelled training images per class, comma-separated, each subset class-balanced and drawn
    /// with the run's seed; `full` takes every label.
    #[arg(long, default_value = "10,100,full")]
    pub labels_per_class: String,
    /// Also fine-tune the pre-trained encoder, and train the same network from scratch, on each
    /// labelled subset (minutes each on a CPU).
    #[arg(long)]
    pub fine_tune: bool,
    /// Optimiser steps of each fine-tuning and from-scratch training (default: at least 500 and
    /// at least two epochs of the labelled images).
    #[arg(long)]
    pub fine_tune_steps: Option<usize>,
}

/// `--labels-per-class 10,100,full`: a count per class, or `None` for every label.
fn parse_labels_per_class(text: &str) -> Result<Vec<Option<usize>>> {
    text.split(',')
        .map(str::trim)
        .map(|item| match item {
            "full" | "all" => Ok(None),
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => Ok(Some(k)),
                _ => bail!(
                    "--labels-per-class: '{item}' is neither a number of labels per class (1 or \
                     more) nor 'full'"
                ),
            },
        })
        .collect()
}

/// `pdl probe`: the table of [`crate::probe::compare`] for the run's encoder, written into the run
/// folder as `probe.md` and `probe.json`. The rows.
pub fn probe(args: &ProbeArgs) -> Result<Vec<ProbeRow>> {
    let labels_per_class = parse_labels_per_class(&args.labels_per_class)?;
    let dir = &args.run.artifact_dir;
    let (experiment, config) = load_run_config(dir)?;
    if !matches!(
        config,
        ExperimentConfig::Contrastive(_) | ExperimentConfig::Masked(_)
    ) {
        bail!(
            "{}: a run of {}, not of a pre-training experiment; pdl probe judges the encoder of a \
             self-supervised run such as mnist-simclr or mnist-mae",
            dir.display(),
            experiment.name
        );
    }
    if !dir.join("model.mpk").is_file() {
        bail!(
            "{}: no trained model (the run has not finished: train or --resume it first)",
            dir.join("model.mpk").display()
        );
    }
    let ctx = eval_context(&args.run)?;
    if args.fine_tune_steps == Some(0) {
        bail!("--fine-tune-steps: 0 steps would train nothing; give 1 or more");
    }
    let plan = ProbePlan {
        labels_per_class,
        fine_tune: args.fine_tune,
        fine_tune_steps: args.fine_tune_steps,
    };
    let task = ProbeTask {
        config: &config,
        ctx: &ctx,
        plan: &plan,
    };
    let rows = run_on(ctx.backend, &DeviceSpec::Count(1), task)??;
    let table = probe_table(&rows);
    crate::artifacts::write_atomic(&dir.join("probe.md"), table.as_bytes())?;
    write_json(&dir.join("probe.json"), &rows)?;
    println!("\n{table}\n(written to {})", dir.join("probe.md").display());
    Ok(rows)
}

struct ProbeTask<'a> {
    config: &'a ExperimentConfig,
    ctx: &'a RunContext,
    plan: &'a ProbePlan,
}

impl BackendTask for ProbeTask<'_> {
    type Output = Result<Vec<ProbeRow>>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let config = self.config.pipeline::<B>()?;
        config.probe(self.ctx, &devices[0], self.plan)
    }
}

/// Options of `pdl report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The folder of runs, one folder per experiment (`runs/mnist-cnn`, ...); the report is
    /// written into it.
    #[arg(default_value = "runs")]
    pub runs: PathBuf,
}

/// Options of `pdl list`.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Print the README's course map (Markdown) instead, generated from the same registry.
    #[arg(long)]
    pub markdown: bool,
}

/// Options of `pdl generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A language model's artifact directory (holding config.json, vocab.txt and model.mpk).
    pub artifact_dir: PathBuf,
    /// The text to continue.
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub length: usize,
    /// Sampling temperature: below 1 is more conservative, 0 always takes the likeliest.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Draw only among the k likeliest characters.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Backend to generate on.
    #[arg(long)]
    pub backend: Option<String>,
    /// A Transformer recomputes the whole context at every step instead of reusing its cached
    /// keys and values (to measure what the cache saves).
    #[arg(long)]
    pub no_kv_cache: bool,
}

/// Options of `pdl train`.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// The experiment, e.g. mnist-cnn (`pdl list` shows them all).
    pub experiment: String,
    /// Epochs to train (a resumed run trains up to this many in all).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed for weights, data order, dropout and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Early stopping: stop when the valid loss has not improved for this many epochs (0: off).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Backend: flex (default, fastest CPU), ndarray, wgpu (GPU) or cuda (NVIDIA GPU).
    #[arg(long)]
    pub backend: Option<String>,
    /// Devices to train on, data-parallel: a count (2) or a list of indices (0,1).
    #[arg(long, default_value = "1")]
    pub devices: String,
    /// Folder holding the datasets (default: $PDL_DATA_DIR, else ~/.cache/pdl).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to write the run (default: runs/<experiment>).
    #[arg(long)]
    pub artifact_dir: Option<PathBuf>,
    /// Start from this config JSON (e.g. a run's config.json) instead of the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in the artifact directory from its last checkpoint, with its saved config
    /// (only --epochs and --patience may change; more epochs stretch the LR schedule).
    #[arg(long)]
    pub resume: bool,
    /// One epoch on a few batches of each split, into a temporary directory (removed afterwards)
    /// unless --artifact-dir is given: checks that everything runs.
    #[arg(long)]
    pub smoke: bool,
    /// One line per epoch instead of the dashboard, even in a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Never download a dataset: a missing file is an error (also: PDL_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Sentence classifiers: keep this many labelled training sentences, the same number of each
    /// class, drawn with the seed (default: all).
    #[arg(long)]
    pub labels: Option<usize>,
    /// Sentence classifiers: start from the encoder of this masked-language pre-training run
    /// (e.g. runs/sst2-pretrain; sst2-finetune's default).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Train this many runs with seeds seed, seed+1, ... into <artifact-dir>/seed-<s>/ and report
    /// the mean and standard deviation of their scores (written to <artifact-dir>/seeds.json).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Train as one of this many processes (nodes), data-parallel over burn-collective: each
    /// takes 1/N of every global batch (`pdl launch` starts them on one machine).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// This process's rank among the nodes, 0 to N-1; rank 0 writes the run.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Where the nodes meet: rank 0's host and port, ws://HOST:PORT (rank 0 listens there).
    #[arg(long, default_value = "ws://127.0.0.1:29500")]
    pub master: String,
    /// The address each rank is reached at: one for all (one machine), or one per rank, in rank
    /// order (several machines), e.g. 10.0.0.1,10.0.0.2.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_hosts: String,
    /// Seconds a node waits for the others at a step before it stops with an error.
    #[arg(long, default_value_t = 60)]
    pub node_timeout: u64,
}

/// Options of `pdl eval`.
#[derive(Args, Debug, Clone, Default)]
pub struct EvalArgs {
    /// A run's artifact directory (holding config.json and model.mpk).
    pub artifact_dir: PathBuf,
    /// Backend to evaluate on.
    #[arg(long)]
    pub backend: Option<String>,
    /// Folder holding the datasets (default: $PDL_DATA_DIR, else ~/.cache/pdl).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download a dataset: a missing file is an error (also: PDL_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// An error and its causes on one line, as `pdl` prints it.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = error
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    line.retain(|c| c != '\n');
    line
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List(args) => {
            match args.markdown {
                true => print!("{}", experiments::course_map()),
                false => print!("{}", list_table()),
            }
            Ok(())
        }
        Command::Train(args) => train(&args).map(|_| ()),
        Command::Eval(args) => {
            let scores = eval(&args)?;
            println!("test {scores} ({} examples)", scores.count);
            Ok(())
        }
        Command::Generate(args) => {
            let out = generate(&args)?;
            println!("{}", out.text);
            eprintln!(
                "({} characters in {:.2} s: {:.0} characters/s)",
                out.characters,
                out.seconds,
                out.characters as f64 / out.seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Bench(args) => crate::bench::run(&args),
        Command::Probe(args) => probe(&args).map(|_| ()),
        Command::Report(args) => {
            let written = crate::report::write_report(&args.runs)?;
            for note in &written.notes {
                println!("note: {note}");
            }
            println!(
                "course report of {} experiments: {} and {}",
                written.reported,
                written.markdown.display(),
                written.html.display()
            );
            Ok(())
        }
        Command::Plot(args) => {
            for path in plot(&args)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Compare(args) => {
            let path = crate::plots::compare::write_comparison(&args.runs, &args.out, args.smooth)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Launch(args) => launch(&args),
        Command::Orchestrate { port } => crate::nodes::orchestrate(port),
    }
}

/// `pdl launch`: starts `pdl train ... --nodes N --node-rank R` for every rank on this machine,
/// each with 1/N of its cores, and waits. Rank 0 keeps the terminal; the others print their errors
/// only. If one rank fails, the others are stopped and the error names it; if the run has saved
/// an epoch since, all restart from it (`--max-restarts`).
pub fn launch(args: &LaunchArgs) -> Result<()> {
    if args.nodes < 2 {
        bail!(
            "--nodes {}: launch starts two or more processes; train one with `pdl train`",
            args.nodes
        );
    }
    let taken = ["--nodes", "--node-rank", "--master", "--node-hosts"];
    if let Some(flag) = args
        .train
        .iter()
        .find(|a| taken.iter().any(|t| a.starts_with(t)))
    {
        bail!("{flag}: launch sets --nodes, --node-rank, --master and --node-hosts itself");
    }
    // The run folder rank 0 writes, to restart from its checkpoint (not for a smoke run, whose
    // folder goes away with it).
    let flag = |name: &str| {
        let eq = format!("{name}=");
        args.train
            .iter()
            .enumerate()
            .find_map(|(i, a)| match a.strip_prefix(&eq) {
                Some(v) => Some(v.to_string()),
                None if a == name => args.train.get(i + 1).cloned(),
                None => None,
            })
    };
    let smoke = args.train.iter().any(|a| a == "--smoke");
    let dir = flag("--artifact-dir").map(PathBuf::from).or_else(|| {
        let experiment = args.train.iter().find(|a| !a.starts_with('-'))?;
        Some(PathBuf::from("runs").join(experiment))
    });
    let mut resume = args.train.iter().any(|a| a == "--resume");
    let mut restarts = 0;
    let mut last_saved = None;
    loop {
        let Err(failure) = launch_once(args, resume) else {
            return Ok(());
        };
        let saved = dir
            .as_deref()
            .filter(|_| !smoke)
            .and_then(crate::learner::last_readable_checkpoint);
        // A restart needs a checkpoint, and one newer than at the last restart: a fault that
        // comes back before any progress is not burn-collective's race but the run's own.
        if restarts == args.max_restarts || saved.is_none() || saved <= last_saved {
            return Err(failure);
        }
        restarts += 1;
        last_saved = saved;
        resume = true;
        eprintln!(
            "note: {}; restart {restarts} of {} from the checkpoint of epoch {}",
            one_line(&failure),
            args.max_restarts,
            saved.unwrap_or(0)
        );
    }
}

/// One launch of every rank (`--resume` added when asked): waits until all end, or one fails.
fn launch_once(args: &LaunchArgs, resume: bool) -> Result<()> {
    let exe = std::env::current_exe()?;
    let threads = crate::nodes::threads_per_rank(args.nodes);
    let master = format!("ws://127.0.0.1:{}", args.port);
    let mut ranks = Vec::new();
    // A restart resumes from the saved config.json, which already holds what these flags set
    // (and `pdl train --resume` refuses them), so they are left out.
    let added_resume = resume && !args.train.iter().any(|a| a == "--resume");
    let train = match added_resume {
        true => without_flags(&args.train, &SAVED_IN_CONFIG),
        false => args.train.clone(),
    };
    for rank in 0..args.nodes {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("train")
            .args(&train)
            .args(["--nodes", &args.nodes.to_string()])
            .args(["--node-rank", &rank.to_string(), "--master", &master])
            .env("RAYON_NUM_THREADS", &threads);
        if added_resume {
            cmd.arg("--resume");
        }
        if rank > 0 {
            cmd.stdout(std::process::Stdio::null());
        }
        ranks.push(cmd.spawn()?);
        if rank == 0 {
            // Rank 0 starts the orchestrator: give it a moment to listen.
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let mut running: Vec<Option<std::process::Child>> = ranks.into_iter().map(Some).collect();
    loop {
        for rank in 0..running.len() {
            let Some(child) = running[rank].as_mut() else {
                continue;
            };
            let Some(status) = child.try_wait()? else {
                continue;
            };
            running[rank] = None;
            if !status.success() {
                for child in running.iter_mut().flatten() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                bail!(
                    "rank {rank} of {} stopped ({status}); the other ranks were stopped",
                    args.nodes
                );
            }
        }
        if running.iter().all(Option::is_none) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The flags of `pdl train` whose values a run saves in its config.json, which `--resume` reads
/// instead (see [`config_for`]).
const SAVED_IN_CONFIG: [&str; 6] = [
    "--config",
    "--batch-size",
    "--lr",
    "--seed",
    "--labels",
    "--from",
];

/// `args` without the `flags` and their values (`--flag value` or `--flag=value`).
fn without_flags(args: &[String], flags: &[&str]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        if !flags.contains(&name) {
            kept.push(arg.clone());
        } else if !arg.contains('=') {
            it.next();
        }
    }
    kept
}

/// `pdl generate`: loads a language model's run and continues the prompt.
pub fn generate(args: &GenerateArgs) -> Result<language_model::Generated> {
    let (_, config) = load_run_config(&args.artifact_dir)?;
    let ExperimentConfig::Language(config) = config else {
        bail!(
            "{}: {} is not a language model; generate needs a run of one (e.g. \
             shakespeare-lstm)",
            args.artifact_dir.display(),
            config.experiment()
        );
    };
    let request = language_model::GenerateRequest {
        prompt: args.prompt.replace("\\n", "\n"),
        length: args.length,
        sampling: pdl_models::sampling::Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
        },
        seed: args.seed,
        kv_cache: !args.no_kv_cache,
    };
    let backend = backend_from(args.backend.as_deref())?;
    run_on(
        backend,
        &DeviceSpec::Count(1),
        GenerateTask {
            config: &config,
            dir: &args.artifact_dir,
            request: &request,
        },
    )?
}

struct GenerateTask<'a> {
    config: &'a language_model::LanguageExperimentConfig,
    dir: &'a std::path::Path,
    request: &'a language_model::GenerateRequest,
}

impl BackendTask for GenerateTask<'_> {
    type Output = Result<language_model::Generated>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        language_model::generate::<B::InnerBackend>(
            self.config,
            self.dir,
            self.request,
            devices[0].clone(),
        )
    }
}

/// The table `pdl list` prints.
pub fn list_table() -> String {
    let expected: Vec<String> = EXPERIMENTS.iter().map(|e| e.expected()).collect();
    let rows: Vec<[&str; 5]> = EXPERIMENTS
        .iter()
        .zip(&expected)
        .map(|(e, expected)| [e.name, e.chapter, e.dataset, e.file, expected])
        .collect();
    let header = ["experiment", "chapter", "dataset", "file", "expected"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap()
        })
        .collect();
    let line = |cells: [&str; 5]| {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(header);
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out += &line(std::array::from_fn(|i| dashes[i].as_str()));
    for r in rows {
        out += &line(r);
    }
    out
}

/// What `pdl train` produced.
#[derive(Debug)]
pub struct Trained {
    /// The artifact directory.
    pub dir: PathBuf,
    /// What the run reached.
    pub report: RunReport,
}

fn backend_from(name: Option<&str>) -> Result<BackendKind> {
    match name {
        Some(name) => BackendKind::parse(name),
        None => BackendKind::default_compiled(),
    }
}

fn config_for(
    args: &TrainArgs,
    experiment: &Experiment,
    dir: &std::path::Path,
) -> Result<ExperimentConfig> {
    if args.resume {
        let changed: Vec<&str> = [
            // The value flags here are SAVED_IN_CONFIG, which a restart of `pdl launch` drops.
            ("--config", args.config.is_some()),
            ("--batch-size", args.batch_size.is_some()),
            ("--lr", args.lr.is_some()),
            ("--seed", args.seed.is_some()),
            ("--smoke", args.smoke),
            ("--labels", args.labels.is_some()),
            ("--from", args.from.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !changed.is_empty() {
            bail!(
                "--resume continues the saved config; {} would change the run (only --epochs and \
                 --patience may): start a new run with --artifact-dir instead",
                changed.join(", ")
            );
        }
    }
    let from_file = if args.resume {
        Some(dir.join("config.json"))
    } else {
        args.config.clone()
    };
    let config = match from_file {
        Some(path) => ExperimentConfig::load(experiment, &path)?,
        None => (experiment.preset)(),
    };
    if config.experiment() != experiment.name {
        bail!(
            "the config is for experiment '{}', not '{}'",
            config.experiment(),
            experiment.name
        );
    }
    config.apply(&Overrides {
        num_epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        early_stopping_patience: args.patience,
        smoke: args.smoke,
        labelled: args.labels,
        pretrained: args.from.clone(),
    })
}

/// `pdl train`: trains, saves the model, writes `metrics.json`, prints the test score. With
/// `--seeds N`, trains N runs and summarises them (see [`train_seeds`]).
pub fn train(args: &TrainArgs) -> Result<Trained> {
    match args.seeds {
        Some(n) if n != 1 => train_seeds(args, n).map(|s| s.runs.into_iter().next_back().unwrap()),
        _ => train_one(args),
    }
}

/// Mean and sample standard deviation of a split's headline score ([`Scores::headline`]:
/// accuracy, or the loss of a regression) over seeds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    /// What is summarised: `accuracy` (percent) or `loss`.
    pub metric: &'static str,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub std: f64,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
    /// Mean loss.
    pub loss_mean: f64,
}

impl Spread {
    /// The spread of `scores`.
    pub fn of(scores: &[Scores]) -> Self {
        let n = scores.len().max(1) as f64;
        let metric = scores.first().map_or("accuracy", |s| s.headline().0);
        let values = || scores.iter().map(|s| s.headline().1);
        let mean = values().sum::<f64>() / n;
        let var = values().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Self {
            metric,
            mean,
            std: var.sqrt(),
            min: values().fold(f64::INFINITY, f64::min),
            max: values().fold(f64::NEG_INFINITY, f64::max),
            loss_mean: scores.iter().map(|s| s.loss).sum::<f64>() / n,
        }
    }
}

/// What `pdl train --seeds N` produced.
#[derive(Debug)]
pub struct SeedRuns {
    /// Each seed's run, in seed order.
    pub runs: Vec<Trained>,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Spread of the valid scores.
    pub valid: Spread,
    /// Spread of the test scores.
    pub test: Spread,
}

/// `pdl train --seeds N`: N runs with consecutive seeds from `--seed` (else the config's), each in
/// `<artifact-dir>/seed-<s>/`, then `<artifact-dir>/seeds.json` with each run's scores and their
/// mean and standard deviation.
pub fn train_seeds(args: &TrainArgs, n: usize) -> Result<SeedRuns> {
    if n == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.resume {
        bail!("--resume continues one run; resume each seed-<s> folder on its own");
    }
    if args.nodes > 1 {
        bail!("--seeds with --nodes: launch the processes once per seed (--seed S)");
    }
    let experiment = experiments::find(&args.experiment)?;
    let first = match (args.seed, &args.config) {
        (Some(seed), _) => seed,
        (None, Some(path)) => ExperimentConfig::load(experiment, path)?.seed(),
        (None, None) => (experiment.preset)().seed(),
    };
    let smoke_dir = match (&args.artifact_dir, args.smoke) {
        (None, true) => Some(
            tempfile::Builder::new()
                .prefix("pdl-smoke-seeds-")
                .tempdir()?,
        ),
        _ => None,
    };
    let base = match (&args.artifact_dir, &smoke_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(tmp)) => tmp.path().to_path_buf(),
        (None, None) => PathBuf::from("runs").join(experiment.name),
    };
    let seeds: Vec<u64> = (0..n as u64).map(|i| first + i).collect();
    let mut runs = Vec::new();
    for &seed in &seeds {
        println!(
            "== {} seed {seed} ({} of {n}) ==",
            experiment.name,
            runs.len() + 1
        );
        runs.push(train_one(&TrainArgs {
            seed: Some(seed),
            artifact_dir: Some(base.join(format!("seed-{seed}"))),
            seeds: None,
            ..args.clone()
        })?);
    }
    let valid = Spread::of(
        &runs
            .iter()
            .map(|r| r.report.valid.clone())
            .collect::<Vec<_>>(),
    );
    let test = Spread::of(
        &runs
            .iter()
            .map(|r| r.report.test.clone())
            .collect::<Vec<_>>(),
    );
    let per_seed: Vec<serde_json::Value> = runs
        .iter()
        .zip(&seeds)
        .map(|(r, seed)| {
            serde_json::json!({
                "seed": seed,
                "dir": r.dir,
                "epochs": r.report.epochs,
                "wall_seconds": r.report.wall_seconds,
                "valid": r.report.valid,
                "test": r.report.test,
            })
        })
        .collect();
    write_json(
        &base.join("seeds.json"),
        &serde_json::json!({
            "experiment": experiment.name,
            "seeds": seeds,
            "valid": valid,
            "test": test,
            "runs": per_seed,
        }),
    )?;
    println!(
        "{} over {n} seeds {}..={}: test {} {:.4} ± {:.4} (min {:.4}, max {:.4}), valid {:.4} ± \
         {:.4}; summary in {}",
        experiment.name,
        seeds[0],
        seeds[n - 1],
        test.metric,
        test.mean,
        test.std,
        test.min,
        test.max,
        valid.mean,
        valid.std,
        base.join("seeds.json").display()
    );
    Ok(SeedRuns {
        runs,
        seeds,
        valid,
        test,
    })
}

/// Whether `config` can train on `devices` devices of `backend` (see [`crate::parallel`]).
fn check_devices(config: &ExperimentConfig, backend: BackendKind, devices: usize) -> Result<()> {
    if devices > 1 && backend == BackendKind::Cuda && !cfg!(feature = "ddp") {
        bail!(
            "--devices {devices} on cuda: several GPUs train through burn-train's DDP, in a \
             CUDA-only build (cargo xtask train ... --backend cuda --devices {devices} makes it; \
             or cargo build --release -p pdl-training --no-default-features --features ddp)"
        );
    }
    if devices > 1 && !backend.is_cpu() && backend != BackendKind::Cuda {
        bail!(
            "--devices {devices} on {backend}: several GPUs train together on CUDA (burn-train's \
             DDP, --backend cuda) or on the CPU backends' threads; on {backend} train on one GPU"
        );
    }
    if devices > 1 && matches!(config, ExperimentConfig::Contrastive(_)) {
        bail!(
            "--devices {devices}: NT-Xent compares each view with every other view of the batch, \
             so slices on {devices} devices would each see 1/{devices} of the negatives and train \
             another loss (SimCLR gathers the views of all devices, not wired here): train it on \
             one device"
        );
    }
    // A graph pipeline says itself why it trains on one device.
    if !matches!(config, ExperimentConfig::Graph(_)) {
        config
            .training()
            .check_devices(devices)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Whether `config` can train on `nodes` processes of one device each (see [`crate::nodes`]).
fn check_nodes(config: &ExperimentConfig, nodes: usize, devices: usize) -> Result<()> {
    if devices > 1 {
        bail!(
            "--nodes {nodes} with --devices {devices}: a process trains on one device here; start              one process per device (pdl launch --nodes {})",
            nodes * devices
        );
    }
    match config {
        ExperimentConfig::Graph(_) => bail!(
            "--nodes {nodes}: a graph network trains on its one whole graph each step, so there              is no batch to share out; train it in one process"
        ),
        ExperimentConfig::Contrastive(_) => bail!(
            "--nodes {nodes}: NT-Xent compares each view with every other view of the batch, so              each process would see 1/{nodes} of the negatives and train another loss (SimCLR              gathers the views of all processes, not wired here): train it in one process"
        ),
        _ => {}
    }
    let batch = config.training().batch_size;
    if !batch.is_multiple_of(nodes) {
        bail!(
            "--batch-size {batch} does not split evenly over --nodes {nodes}: the batch size is              the global one, each process takes batch-size / nodes examples (try {})",
            (batch / nodes).max(1) * nodes
        );
    }
    Ok(())
}

/// What the ranks of a multi-process run must agree on, each as a fingerprint (see
/// [`crate::nodes::NodeGroup::check_agreement`]).
fn node_fingerprint(config: &ExperimentConfig, resume_from: Option<usize>) -> Vec<(String, u64)> {
    let fp = crate::nodes::fingerprint;
    let settings = config.training();
    vec![
        ("experiment".into(), fp(config.experiment())),
        ("seed".into(), config.seed()),
        ("batch size".into(), settings.batch_size as u64),
        ("epochs".into(), config.num_epochs() as u64),
        ("config".into(), fp(&config.to_json())),
        (
            "checkpoint resumed from".into(),
            resume_from.unwrap_or(0) as u64,
        ),
        ("pdl version".into(), fp(env!("CARGO_PKG_VERSION"))),
    ]
}

/// Copies the files of `from` (a run folder) into `to`, sub-folders included, but not its lock:
/// that is rank 0's, which may hold it already.
fn copy_run(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_name() == ".lock" {
            continue;
        } else if entry.file_type()?.is_dir() {
            copy_run(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn train_one(args: &TrainArgs) -> Result<Trained> {
    let experiment = experiments::find(&args.experiment)?;
    let backend = backend_from(args.backend.as_deref())?;
    let devices = DeviceSpec::parse(&args.devices)?;
    let spec = match args.nodes {
        0 | 1 => None,
        n => Some(crate::nodes::NodeSpec::new(
            n,
            args.node_rank,
            &args.master,
            &args.node_hosts,
            args.node_timeout,
        )?),
    };
    // A smoke run without --artifact-dir writes into a temporary folder, removed when it ends.
    let smoke_dir = match (&args.artifact_dir, args.smoke) {
        (None, true) => Some(
            tempfile::Builder::new()
                .prefix(&format!("pdl-smoke-{}-", experiment.name))
                .tempdir()?,
        ),
        _ => None,
    };
    let dir = match (&args.artifact_dir, &smoke_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(tmp)) => tmp.path().to_path_buf(),
        (None, None) => PathBuf::from("runs").join(experiment.name),
    };
    if args.resume && !dir.join("config.json").is_file() {
        bail!(
            "--resume: {} holds no run (no config.json); train without --resume first",
            dir.display()
        );
    }
    // Only rank 0 writes the run: the other ranks train in a private folder, removed at the end,
    // which starts as a copy of the run when resuming (see nodes.rs).
    let private = match &spec {
        Some(spec) if spec.rank > 0 => Some(
            tempfile::Builder::new()
                .prefix(&format!("pdl-rank-{}-", spec.rank))
                .tempdir()?,
        ),
        _ => None,
    };
    if let (Some(private), true) = (&private, args.resume) {
        copy_run(&dir, private.path())
            .with_context(|| format!("rank {}: cannot read {}", args.node_rank, dir.display()))?;
    }
    let dir = private.as_ref().map_or(dir, |p| p.path().to_path_buf());
    // Everything is checked before the folder is made or touched, then checked again under the
    // lock, in case another run got there in between.
    let check_folder = |config: &ExperimentConfig| match args.resume {
        true => check_resumable(&dir, config.num_epochs()).map(Some),
        false if holds_a_run(&dir) => bail!(
            "{} already holds a run: add --resume to continue it, or --artifact-dir DIR for a new \
             one (or delete the folder)",
            dir.display()
        ),
        false => Ok(None),
    };
    let config = config_for(args, experiment, &dir)?;
    check_devices(&config, backend, devices.len())?;
    if let Some(spec) = &spec {
        check_nodes(&config, spec.count, devices.len())?;
    }
    if let (ExperimentConfig::Sentence(c), false) = (&config, args.resume) {
        c.check_pretrained()?;
    }
    check_folder(&config)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let _lock = RunLock::acquire(&dir)?;
    let resume_from = check_folder(&config)?;
    config.save(&dir.join("config.json"))?;
    let ctx = RunContext {
        data_dir: pdl_datasets::resolve_data_dir(args.data_dir.as_deref()),
        artifact_dir: dir.clone(),
        resume_from,
        plain: args.plain,
        offline: args.offline,
        backend,
        devices: devices.len(),
        nodes: spec
            .map(|spec| {
                let fingerprint = node_fingerprint(&config, resume_from);
                crate::nodes::NodeGroup::join(spec, fingerprint, &dir.join("experiment.log"))
            })
            .transpose()?,
    };
    let processes = match &ctx.nodes {
        Some(nodes) => format!(", rank {} of {} processes", nodes.rank(), nodes.count()),
        None => String::new(),
    };
    println!(
        "training {} on {backend} ({} device{}{processes}), data from {}, artifacts in {}",
        experiment.name,
        ctx.devices,
        if ctx.devices == 1 { "" } else { "s" },
        ctx.data_dir.display(),
        dir.display()
    );
    let report = run_on(
        backend,
        &devices,
        TrainTask {
            config: &config,
            ctx: &ctx,
        },
    )??;
    write_json(
        &dir.join("metrics.json"),
        &MetricsFile {
            experiment: experiment.name,
            backend: backend.name(),
            devices: ctx.devices,
            nodes: ctx.nodes.as_ref().map(|n| n.count()),
            epochs: report.epochs,
            wall_seconds: report.wall_seconds,
            train_items: report.train_items,
            smoke: config.smoke(),
            valid: report.valid.clone(),
            test: report.test.clone(),
            baseline: report.baseline.clone(),
            probe: report.probe,
            rerun: Rerun::now(config.seed(), backend),
        },
    )?;
    // The run is saved; a plot that cannot be drawn is a note, not a failed run.
    let plot = |what: &str, draw: &dyn Fn() -> Result<PathBuf>| match std::panic::catch_unwind(
        std::panic::AssertUnwindSafe(draw),
    ) {
        Ok(Ok(path)) => println!("{what} in {}", path.display()),
        Ok(Err(e)) => println!("note: no {what}: {}", one_line(&e)),
        Err(_) => println!("note: no {what}: the plotting library failed"),
    };
    // A smoke run's temporary folder is removed when it ends: nothing to draw into (nor into a
    // rank's private one).
    if smoke_dir.is_none() && private.is_none() {
        let unit = config.loss_unit();
        plot("learning curves", &|| {
            crate::plots::write_curves(&dir, unit)
        });
        // A matrix of a language model's characters would be thousands of pixels of noise.
        let few_classes = |c: &&Vec<Vec<usize>>| c.len() <= crate::plots::MAX_CONFUSION_CLASSES;
        if let Some(confusion) = report.test.confusion.as_ref().filter(few_classes) {
            plot("test confusion matrix", &|| {
                crate::plots::write_confusion(&dir, confusion)
            });
        }
        for figure in &report.figures {
            plot(figure.what(), &|| figure.draw(&dir));
        }
    }
    let loss = match config {
        ExperimentConfig::Contrastive(_) => " (NT-Xent; accuracy: a view finding its twin)",
        ExperimentConfig::Masked(_) => " (on the hidden patches' pixels)",
        ExperimentConfig::MaskedText(_) => " (on the hidden words; accuracy: words guessed)",
        _ => "",
    };
    let probe = match report.probe {
        Some(p) => format!("{loss}; linear probe {:.2}%", p.linear),
        None => loss.to_string(),
    };
    println!(
        "{}: test {}, valid {}{probe}, after {} epochs in {:.1} s; artifacts in {}{}",
        experiment.name,
        report.test,
        report.valid,
        report.epochs,
        report.wall_seconds,
        dir.display(),
        if smoke_dir.is_some() {
            " (temporary, now removed)"
        } else {
            ""
        }
    );
    Ok(Trained { dir, report })
}

/// The epoch to resume from: the last complete checkpoint, which must be short of `epochs`
/// (checked before anything is written).
fn check_resumable(dir: &std::path::Path, epochs: usize) -> Result<usize> {
    let Some(epoch) = crate::learner::last_readable_checkpoint(dir) else {
        bail!(
            "--resume: no complete checkpoint in {} (the run stopped before saving its first \
             epoch); start it again without --resume",
            dir.join("checkpoint").display()
        );
    };
    if epoch >= epochs {
        bail!(
            "{} already holds {epoch} of {epochs} epochs; raise --epochs to train further",
            dir.display()
        );
    }
    Ok(epoch)
}

struct TrainTask<'a> {
    config: &'a ExperimentConfig,
    ctx: &'a RunContext,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<RunReport>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        self.config.pipeline::<B>()?.train(self.ctx, devices)
    }
}

/// Reads a run directory's `config.json`, for the experiment it names.
pub(crate) fn load_run_config(
    dir: &std::path::Path,
) -> Result<(&'static Experiment, ExperimentConfig)> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        bail!(
            "{}: no config.json, so not a pdl run directory",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let name: String = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("experiment")?.as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("{}: no \"experiment\" field", config_path.display()))?;
    let experiment = experiments::find(&name)?;
    Ok((
        experiment,
        ExperimentConfig::load(experiment, &config_path)?,
    ))
}

/// `pdl eval`: rebuilds the model from `config.json` and `model.mpk` and scores the test set.
pub fn eval(args: &EvalArgs) -> Result<Scores> {
    let (_, config) = load_run_config(&args.artifact_dir)?;
    let ctx = eval_context(args)?;
    let task = EvalTask {
        config: &config,
        ctx: &ctx,
        figures: false,
    };
    Ok(run_on(ctx.backend, &DeviceSpec::Count(1), task)??.0)
}

/// `pdl plot`: redraws a run's pictures. The curves and the confusion matrix come from its files;
/// the pipeline's own figures need its data and model (scored again, as `pdl eval` does), and
/// without them are a note. The paths drawn.
pub fn plot(args: &EvalArgs) -> Result<Vec<PathBuf>> {
    let dir = &args.artifact_dir;
    let mut drawn = crate::plots::redraw(dir)?;
    let figures = (|| {
        let (_, config) = load_run_config(dir)?;
        let ctx = eval_context(args)?;
        let task = EvalTask {
            config: &config,
            ctx: &ctx,
            figures: true,
        };
        run_on(ctx.backend, &DeviceSpec::Count(1), task)?
    })();
    match figures {
        Ok((_, figures)) => {
            for figure in figures {
                match figure.draw(dir) {
                    Ok(path) => drawn.push(path),
                    Err(e) => println!("note: no {}: {}", figure.what(), one_line(&e)),
                }
            }
        }
        Err(e) => println!("note: the learning curves only: {}", one_line(&e)),
    }
    Ok(drawn)
}

/// What `pdl eval` and `pdl plot` run in.
fn eval_context(args: &EvalArgs) -> Result<RunContext> {
    Ok(RunContext {
        data_dir: pdl_datasets::resolve_data_dir(args.data_dir.as_deref()),
        artifact_dir: args.artifact_dir.clone(),
        resume_from: None,
        plain: true,
        offline: args.offline,
        backend: backend_from(args.backend.as_deref())?,
        devices: 1,
        nodes: None,
    })
}

struct EvalTask<'a> {
    config: &'a ExperimentConfig,
    ctx: &'a RunContext,
    /// Draw the pipeline's figures too (`pdl plot`).
    figures: bool,
}

impl BackendTask for EvalTask<'_> {
    type Output = Result<(Scores, Vec<crate::plots::Figure>)>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let (device, ctx) = (devices[0].clone(), self.ctx);
        let pipeline = self.config.pipeline::<B>()?;
        let scores = pipeline.eval(ctx, device.clone())?;
        let figures = match self.figures {
            true => pipeline.figures(ctx, device, &scores)?,
            false => Vec::new(),
        };
        Ok((scores, figures))
    }
}

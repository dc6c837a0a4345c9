//! The `pdl` binary as a process: every error is one line on stderr and a non-zero exit code, and
//! several processes train together (`--nodes`, `pdl launch`; see src/nodes.rs).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A tiny MNIST in its real format under `dir/mnist`: 768 training images (640 after the 128 the
/// config below keeps for validation: 20 batches of 32) and 64 test images, the class a bright bar.
fn tiny_mnist(dir: &Path) {
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let mut state = 5u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 59) as u8 * 8
    };
    for (n, images, labels) in [
        (
            768,
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        ),
        (64, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ] {
        let mut pixels = Vec::new();
        let mut classes = Vec::new();
        for i in 0..n {
            let label = (i % 10) as u8;
            let mut image: Vec<u8> = (0..784).map(|_| noise()).collect();
            let row = 3 + 2 * label as usize;
            image[row * 28 + 4..row * 28 + 24].fill(255);
            pixels.extend(image);
            classes.push(label);
        }
        let idx = |magic: u8, dims: &[usize], data: &[u8]| {
            let mut bytes = vec![0, 0, 8, magic];
            for d in dims {
                bytes.extend((*d as u32).to_be_bytes());
            }
            bytes.extend(data);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        };
        std::fs::write(mnist.join(images), idx(3, &[n, 28, 28], &pixels)).unwrap();
        std::fs::write(mnist.join(labels), idx(1, &[n], &classes)).unwrap();
    }
}

/// A 784-32-10 MLP without dropout (each process would draw its own masks), Adam, warm-up and
/// cosine: `epochs` epochs of global batches of `batch`.
fn mlp_config(dir: &Path, epochs: usize, batch: usize) -> PathBuf {
    let path = dir.join(format!("mlp-{epochs}-{batch}.json"));
    let config = serde_json::json!({
        "experiment": "mnist-mlp", "dataset": "mnist",
        "model": {"Mlp": {"d_input": 784, "d_hidden": [32], "num_classes": 10,
                          "activation": "Relu", "dropout": 0.0}},
        "num_epochs": epochs, "batch_size": batch, "learning_rate": 0.001, "weight_decay": 0.0,
        "schedule": {"WarmupCosine": {"warmup_fraction": 0.1, "min_lr_fraction": 0.0}},
        "grad_clip_norm": null, "early_stopping_patience": 0, "restore_best": false,
        "seed": 42, "smoke": false, "valid_size": 128, "augment": false
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A temporary folder holding the tiny MNIST and the MLP's config for `epochs` epochs of batches
/// of `batch`, and the config's path.
///
/// Every step of a multi-process run is a burn-collective call, and burn-collective 0.21 hangs
/// about once in a thousand calls (README, "Known fault left"): the tests take few steps.
fn tiny_run(epochs: usize, batch: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    tiny_mnist(dir.path());
    let config = mlp_config(dir.path(), epochs, batch);
    (dir, config.to_str().unwrap().to_string())
}

/// The MLP of [`mlp_config`] on `device`.
fn mlp<Q: Backend>(device: &Q::Device) -> pdl_models::Mlp<Q> {
    pdl_models::MlpConfig::new(784, vec![32], 10)
        .with_dropout(0.0)
        .init::<Q>(device)
}

/// `pdl ARGS` in `dir` on the tiny set, offline, one line per epoch, its stdout dropped.
fn start(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pdl"))
        .args(args)
        .args(["--plain", "--offline"])
        .env("PDL_DATA_DIR", dir)
        .env("RAYON_NUM_THREADS", "1")
        // A killed rank leaves its private folder behind: in the test's folder, not in /tmp.
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// Every weight of the MLP saved in `run`, in its fields' order.
fn weights(run: &Path) -> Vec<f32> {
    type B = burn::backend::Flex;
    let device = Default::default();
    let model = mlp::<B>(&device);
    let model = pdl_training::learner::load_model(model, &run.join("model"), &device).unwrap();
    parameters(&model)
}

/// Every weight of `model`, in its fields' order.
fn parameters<Q: Backend>(model: &pdl_models::Mlp<Q>) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<Q: Backend> ModuleVisitor<Q> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Q, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut all = Collect(Vec::new());
    model.visit(&mut all);
    all.0
}

/// The multi-process tests run one at a time: side by side on CI's 2 cores (up to nine processes
/// with their orchestrators) burn-collective 0.21's lost wake-up (README, "Known fault left") hung
/// one of them in three runs of four.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn two_processes_take_the_steps_of_one_process_with_the_whole_batch() {
    let _serial = one_at_a_time();
    let (dir, config) = tiny_run(2, 64);
    let config = config.as_str();
    let one = start(
        dir.path(),
        &[
            "train",
            "mnist-mlp",
            "--config",
            config,
            "--artifact-dir",
            "one",
        ],
    );
    let (code, stderr) = finish(one);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = launch_once_more_after_a_hang(
        dir.path(),
        &dir.path().join("two"),
        &[
            "launch",
            "--nodes",
            "2",
            "--port",
            "21100",
            "mnist-mlp",
            "--node-timeout",
            "10",
            "--config",
            config,
            "--artifact-dir",
            "two",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let (one, two) = (
        weights(&dir.path().join("one")),
        weights(&dir.path().join("two")),
    );
    let start = weights_at_start();
    let furthest = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    };
    assert!(
        furthest(&start, &one) > 0.01,
        "training hardly moved the weights"
    );
    let apart = furthest(&one, &two);
    assert!(apart < 1e-5, "one process and two differ by up to {apart}");
    // Rank 0 wrote the run; the other rank's private folder is gone.
    assert!(dir.path().join("two/metrics.json").is_file());
    assert!(dir.path().join("two/checkpoint/model-2.mpk").is_file());
}

/// The MLP's weights before training, as the runs build it (the seeded start).
fn weights_at_start() -> Vec<f32> {
    type B = burn::backend::Flex;
    let model = pdl_models::seeded::<B, _>(&Default::default(), 42, mlp::<B>);
    parameters(&model)
}

/// `pdl train` as rank `rank` of 2 meeting at `port`, with extra flags. The time limit is 10 s: CI
/// runs these tests side by side on 2 cores, and a limit of 3 s once ran out at call 3 with both
/// ranks alive.
fn rank(dir: &Path, rank: usize, port: u16, extra: &[&str]) -> Child {
    let master = format!("ws://127.0.0.1:{port}");
    let rank = rank.to_string();
    let mut args = vec!["train", "mnist-mlp", "--nodes", "2", "--node-rank", &rank];
    args.extend(["--master", &master, "--node-timeout", "10"]);
    args.extend(extra);
    start(dir, &args)
}

#[test]
fn a_rank_that_dies_stops_the_other_with_one_line_within_the_time_limit() {
    let _serial = one_at_a_time();
    let (dir, config) = tiny_run(50, 128);
    let config = config.as_str();
    let flags = ["--config", config, "--artifact-dir", "run"];
    // Kill rank 1 once rank 0 has saved its first epoch (started once more if burn-collective
    // hung before that: see launch_once_more_after_a_hang).
    let saved = dir.path().join("run/checkpoint/model-1.mpk");
    let mut attempts = 0;
    let (zero, mut one) = loop {
        attempts += 1;
        let mut zero = rank(dir.path(), 0, 21200, &flags);
        let mut one = rank(dir.path(), 1, 21200, &flags);
        let waited = Instant::now();
        while !saved.is_file() && waited.elapsed() < Duration::from_secs(120) {
            if zero.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if saved.is_file() {
            break (zero, one);
        }
        let _ = one.kill();
        let _ = zero.kill();
        let (_, stderr) = finish(zero);
        let _ = one.wait();
        if attempts == 1 && hung(&stderr) {
            eprintln!("burn-collective hung ({stderr}); once more");
            let _ = std::fs::remove_dir_all(dir.path().join("run"));
            continue;
        }
        panic!("rank 0 saved no epoch in {:?}: {stderr}", waited.elapsed());
    };
    one.kill().unwrap();
    one.wait().unwrap();
    let killed = Instant::now();
    let (code, stderr) = finish(zero);
    let took = killed.elapsed();
    assert_ne!(code, 0, "{stderr}");
    assert!(
        took < Duration::from_secs(25),
        "rank 0 took {took:?} to stop"
    );
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(line.starts_with("error: rank 0 of 2: "), "{stderr}");
    assert!(line.contains("rank 1 stopped or"), "{stderr}");
    // What rank 0 saved before is still there.
    assert!(saved.is_file());
}

#[test]
fn ranks_that_disagree_or_a_taken_port_stop_before_training() {
    let _serial = one_at_a_time();
    let (dir, config) = tiny_run(1, 32);
    let config = config.as_str();
    let zero = rank(
        dir.path(),
        0,
        21300,
        &["--config", config, "--artifact-dir", "a"],
    );
    let one = rank(
        dir.path(),
        1,
        21300,
        &[
            "--config",
            config,
            "--artifact-dir",
            "a",
            "--seed",
            "7",
            "--batch-size",
            "64",
        ],
    );
    for child in [zero, one] {
        let (code, stderr) = finish(child);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: the 2 ranks differ in seed, batch size, config:"),
            "{stderr}"
        );
    }
    let _taken = std::net::TcpListener::bind(("0.0.0.0", 21400)).unwrap();
    let (code, stderr) = finish(rank(dir.path(), 0, 21400, &["--config", config]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot start the orchestrator on port 21400"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// Whether a rank stopped on burn-collective 0.21's hang (README, "Known fault left"): its time
/// limit's error. The multi-process tests start such a run once more, since the hang is not what
/// they test.
fn hung(stderr: &str) -> bool {
    stderr.contains("got no answer within")
}

/// `pdl ARGS` (a `pdl launch` writing `run`) to its end, and once more if it stopped on
/// burn-collective 0.21's hang (README, "Known fault left"), which is not what the tests test.
fn launch_once_more_after_a_hang(dir: &Path, run: &Path, args: &[&str]) -> (i32, String) {
    let (code, stderr) = finish(start(dir, args));
    if code == 0 || !hung(&stderr) {
        return (code, stderr);
    }
    eprintln!("burn-collective hung ({stderr}); once more");
    let _ = std::fs::remove_dir_all(run);
    finish(start(dir, args))
}

/// The process id of rank `rank`'s `pdl train` whose arguments name `dir` (Linux's /proc).
fn pid_of_rank(rank: usize, dir: &Path) -> Option<String> {
    let (rank, dir) = (rank.to_string(), dir.to_string_lossy().into_owned());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_rank = args
                .windows(2)
                .any(|w| w[0] == "--node-rank" && w[1] == rank);
            let is_train = args.get(1).is_some_and(|a| a == "train");
            (is_rank && is_train && args.contains(&dir))
                .then(|| entry.file_name().to_string_lossy().into())
        })
}

#[test]
fn launch_restarts_every_rank_from_the_last_checkpoint_when_one_dies() {
    let _serial = one_at_a_time();
    let (dir, config) = tiny_run(4, 128);
    let run = dir.path().join("run");
    let args = [
        "launch",
        "--nodes",
        "2",
        "--port",
        "21500",
        "--max-restarts",
        "2",
        "mnist-mlp",
        "--node-timeout",
        "10",
        "--config",
        &config,
        "--artifact-dir",
        run.to_str().unwrap(),
    ];
    // Kill rank 1 once rank 0 has saved its first epoch, as a crash would (the launch started
    // once more if burn-collective hung before that: see launch_once_more_after_a_hang).
    let saved = run.join("checkpoint/model-1.mpk");
    let mut attempts = 0;
    let (mut launch, waited) = loop {
        attempts += 1;
        let mut launch = start(dir.path(), &args);
        let waited = Instant::now();
        while !saved.is_file() && waited.elapsed() < Duration::from_secs(120) {
            if launch.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if saved.is_file() || attempts > 1 {
            break (launch, waited);
        }
        let _ = launch.kill();
        let (_, stderr) = finish(launch);
        if !hung(&stderr) {
            panic!("no epoch saved: {stderr}");
        }
        eprintln!("burn-collective hung ({stderr}); once more");
        let _ = std::fs::remove_dir_all(&run);
    };
    let Some(pid) = pid_of_rank(1, &run) else {
        let _ = launch.kill();
        let (_, stderr) = finish(launch);
        panic!("no rank 1 running after {:?}: {stderr}", waited.elapsed());
    };
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());
    // pdl launch stops rank 0, then starts both again with --resume from that checkpoint.
    let (code, stderr) = finish(launch);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("of 2 stopped")
            && stderr.contains("restart 1 of 2 from the checkpoint of epoch"),
        "{stderr}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["epochs"], 4, "{metrics}");
    assert_eq!(metrics["nodes"], 2, "{metrics}");
}

/// Batch norm across processes: each rank normalises by its own slice and keeps its own running
/// statistics (no gradient carries them), and rank 0 saves its own, as PyTorch's DDP broadcasts
/// rank 0's buffers. The saved model is whole: `pdl eval` gives back the run's test score.
#[test]
fn batch_norm_over_two_processes_saves_rank_0s_statistics_and_evaluates_the_same() {
    let _serial = one_at_a_time();
    let (dir, _) = tiny_run(1, 32);
    let run = dir.path().join("bn");
    let args = [
        "launch",
        "--nodes",
        "2",
        "--port",
        "21600",
        "mnist-bn-cnn",
        "--smoke",
    ];
    let args = [&args[..], &["--artifact-dir", run.to_str().unwrap()]].concat();
    let (code, stderr) = launch_once_more_after_a_hang(dir.path(), &run, &args);
    assert_eq!(code, 0, "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["nodes"], 2, "{metrics}");
    let trained = metrics["test"]["accuracy"].as_f64().unwrap();
    let eval = Command::new(env!("CARGO_BIN_EXE_pdl"))
        .args(["eval", run.to_str().unwrap(), "--offline"])
        .env("PDL_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&eval.stdout);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(
        stdout.contains(&format!("test accuracy {trained:.2}%")),
        "trained to {trained}%, eval says: {stdout}"
    );
}

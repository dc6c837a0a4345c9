//! Every experiment end to end on tiny IDX files (the real loader), plus resume, multi-device, and
//! the errors a person meets: each one line, naming what to fix.

use crate::common::{in_a_process_of_its_own, tiny_data_dir};
use pdl_training::cli::{self, EvalArgs, TrainArgs};
use pdl_training::experiments::EXPERIMENTS;
use std::path::Path;

fn args(experiment: &str, data: &Path, out: &Path) -> TrainArgs {
    TrainArgs {
        experiment: experiment.into(),
        backend: Some("flex".into()),
        devices: "1".into(),
        data_dir: Some(data.to_path_buf()),
        artifact_dir: Some(out.to_path_buf()),
        // Never download, and never open the dashboard, whatever terminal the tests run in.
        offline: true,
        plain: true,
        ..TrainArgs::default()
    }
}

/// `pdl eval` of the run in `dir` on flex, offline; an error as `pdl` prints it.
fn eval(dir: &Path, data: &Path) -> Result<pdl_training::artifacts::Scores, String> {
    cli::eval(&EvalArgs {
        artifact_dir: dir.to_path_buf(),
        backend: Some("flex".into()),
        data_dir: Some(data.to_path_buf()),
        offline: true,
    })
    .map_err(|e| cli::one_line(&e))
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

fn err(args: &TrainArgs) -> String {
    let e = cli::train(args).unwrap_err();
    let line = e
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(!line.contains('\n'), "not one line: {line}");
    line
}

/// Also: the same seed repeats a run exactly (weights, dropout masks, data order, so the scores),
/// in a process of its own (see [`in_a_process_of_its_own`]).
#[test]
fn every_experiment_runs_end_to_end_evaluates_back_and_repeats() {
    in_a_process_of_its_own(
        "experiments::every_experiment_runs_end_to_end_evaluates_back_and_repeats",
        every_experiment_end_to_end,
    );
}

fn every_experiment_end_to_end() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    for e in EXPERIMENTS {
        let dir = runs.path().join(e.name);
        // sst2-finetune starts from sst2-pretrain's run, trained just before it.
        let from = (e.name == "sst2-finetune").then(|| runs.path().join("sst2-pretrain"));
        let trained = cli::train(&TrainArgs {
            smoke: true,
            from: from.clone(),
            ..args(e.name, data.path(), &dir)
        })
        .unwrap();
        for f in [
            "config.json",
            "model.mpk",
            "metrics.json",
            "checkpoint/model-1.mpk",
        ] {
            assert!(dir.join(f).is_file(), "{}: no {f}", e.name);
        }
        let m = metrics(&dir);
        assert_eq!(m["experiment"], e.name);
        assert_eq!(m["backend"], "flex");
        assert_eq!(m["epochs"], 1);
        assert_eq!(m["smoke"], true);
        assert!(m["wall_seconds"].as_f64().unwrap() > 0.0);
        // 64 images, or the 20 test nodes of a smoke split, or a few batches of sequences.
        let count = m["test"]["count"].as_u64().unwrap();
        // Pre-training scores NT-Xent on two views of each image (SimCLR) or the pixels of the
        // 12 hidden patches of each (MAE), and probes the encoder.
        let mae = e.name.ends_with("-mae");
        let self_supervised = e.name.ends_with("-simclr") || mae || e.name == "sst2-pretrain";
        match e.name.split('-').next().unwrap() {
            "mnist" | "fashion" if self_supervised => {
                let scored = if mae { 12 * 64 } else { 2 * 64 };
                assert_eq!(count, scored, "{}", e.name);
                let probe = &m["probe"];
                assert_eq!(probe["labels"], 160 - 40, "{}: {probe}", e.name);
                for measure in ["linear", "knn"] {
                    let score = probe[measure].as_f64().unwrap();
                    assert!((0.0..=100.0).contains(&score), "{}: {probe}", e.name);
                }
            }
            "mnist" | "fashion" => assert_eq!(count, 64, "{}", e.name),
            "cora" => assert_eq!(count, 20, "{}", e.name),
            _ => assert!(count > 0, "{}", e.name),
        }
        let (name, value) = trained.report.test.headline();
        assert!((m["test"][name].as_f64().unwrap() - value).abs() < 1e-9);
        assert!(decode_png(&dir.join("curves.png")).2 > 20, "{}", e.name);
        let language_model = e.name.starts_with("shakespeare");
        if name == "accuracy" {
            assert!((0.0..=100.0).contains(&value));
        }
        // A language model's 'classes' are its characters: no confusion matrix.
        if name == "accuracy" && !language_model && !self_supervised {
            // The confusion matrix counts every test example once, its diagonal the correct ones.
            let confusion: Vec<Vec<u64>> =
                serde_json::from_str(&std::fs::read_to_string(dir.join("confusion.json")).unwrap())
                    .unwrap();
            let total: u64 = confusion.iter().flatten().sum();
            let correct: u64 = (0..confusion.len()).map(|i| confusion[i][i]).sum();
            assert_eq!(total, count, "{}", e.name);
            assert!((100.0 * correct as f64 / total as f64 - value).abs() < 1e-9);
            let (width, height, colours) = decode_png(&dir.join("confusion.png"));
            assert_eq!(width, 40 + 90 + 48 * confusion.len() as u32, "{}", e.name);
            assert_eq!(height, width + 10);
            assert!(colours > 20, "{}", e.name);
        } else if name != "accuracy" {
            assert!(m["test"]["mae"].as_f64().unwrap() >= 0.0, "{}", e.name);
        }
        // Each pipeline's own figures: a picture decodes, at its size, and is not blank.
        let picture = |file: &str| {
            let (width, height, colours) = decode_png(&dir.join(file));
            assert!(colours > 20, "{}: {file} is blank", e.name);
            (width, height)
        };
        match e.name.split('-').next().unwrap() {
            _ if self_supervised => {
                assert!(!dir.join("confusion.png").exists(), "{}", e.name);
                if mae {
                    // Eight test digits in three rows: the image, what was shown, filled in.
                    assert_eq!(picture("reconstructions.png"), (90 + 8 * 124, 40 + 3 * 124));
                }
            }
            "mnist" | "fashion" => {
                // Up to 24 mistakes, six to a row.
                let right = value / 100.0 * count as f64;
                let rows = (count as f64 - right).round().min(24.0) as u32;
                match rows.div_ceil(6) {
                    // The tiny set's classes are easy: no mistake, no grid (a note says so).
                    0 => assert!(!dir.join("mistakes.png").exists(), "{}", e.name),
                    rows => {
                        let size = (6 * 152, 40 + rows * 160);
                        assert_eq!(picture("mistakes.png"), size, "{}", e.name);
                    }
                }
            }
            "cora" => {
                assert_eq!(picture("per_class.png"), (120 + 150 * 7, 400));
                assert_eq!(picture("embedding.png"), (900, 720));
            }
            "ett" | "airline" => {
                assert_eq!(picture("forecasts.png"), (1120, 40 + 2 * 320), "{}", e.name);
            }
            "shakespeare" => {
                // The prompt and 500 characters.
                let sample = std::fs::read_to_string(dir.join("sample.txt")).unwrap();
                assert!(sample.starts_with("ROMEO:"), "{}: {sample:?}", e.name);
                assert_eq!(sample.chars().count(), 506, "{}: {sample:?}", e.name);
                assert!(!dir.join("confusion.png").exists(), "{}", e.name);
            }
            _ => {}
        }

        // `pdl plot` draws every picture again, from the run's files and its saved model.
        let pictures = |dir: &Path| -> Vec<String> {
            let mut files: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".png") || f == "sample.txt")
                .collect();
            files.sort();
            files
        };
        let before = pictures(&dir);
        assert!(before.contains(&"curves.png".to_string()), "{}", e.name);
        for file in &before {
            std::fs::remove_file(dir.join(file)).unwrap();
        }
        let drawn = cli::plot(&EvalArgs {
            artifact_dir: dir.clone(),
            backend: Some("flex".into()),
            data_dir: Some(data.path().to_path_buf()),
            offline: true,
        })
        .unwrap();
        assert_eq!(pictures(&dir), before, "{}", e.name);
        assert_eq!(drawn.len(), before.len(), "{}", e.name);

        let scores = eval(&dir, data.path()).unwrap();
        assert!((scores.headline().1 - value).abs() < 1e-6, "{}", e.name);
        assert!((scores.loss - m["test"]["loss"].as_f64().unwrap()).abs() < 1e-4);

        let again = runs.path().join(format!("{}-again", e.name));
        cli::train(&TrainArgs {
            smoke: true,
            from,
            ..args(e.name, data.path(), &again)
        })
        .unwrap();
        // The scores to the last digit of the loss: other weights or masks would move them. (The
        // saved files differ anyway: Burn gives every parameter a random id.)
        let n = metrics(&again);
        assert_eq!(
            (&n["valid"], &n["test"]),
            (&m["valid"], &m["test"]),
            "{}",
            e.name
        );
    }
    // The course report over a folder of runs from every chapter: a row with a score for each
    // experiment, its pictures on the page, and a note for each '-again' folder it leaves out.
    let written = pdl_training::report::write_report(runs.path()).unwrap();
    assert_eq!(written.reported, EXPERIMENTS.len());
    assert_eq!(
        written.notes.len(),
        EXPERIMENTS.len(),
        "{:?}",
        written.notes
    );
    assert!(
        written
            .notes
            .iter()
            .all(|n| n.contains("outside its folder"))
    );
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(!md.contains("not run"));
    assert_eq!(
        md.matches("(smoke run: means nothing)").count(),
        EXPERIMENTS.len()
    );
    let html = std::fs::read_to_string(&written.html).unwrap();
    for e in EXPERIMENTS {
        let curves = format!("<img src=\"{}/curves.png\"", e.name);
        assert!(html.contains(&curves), "{}", e.name);
    }
}

/// A PNG's width, height and number of distinct colours, decoded (never compared pixel by pixel).
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let step = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks_exact(step).collect();
    (info.width, info.height, colours.len())
}

/// A two-epoch mnist-mlp config whose valid split fits the tiny set.
fn tiny_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tiny.json");
    let pdl_training::experiments::ExperimentConfig::Image(c) =
        (pdl_training::experiments::find("mnist-mlp").unwrap().preset)()
    else {
        panic!("mnist-mlp is an image experiment")
    };
    let mut v = serde_json::to_value(c).unwrap();
    v["valid_size"] = 32.into();
    v["num_epochs"] = 2.into();
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn an_interrupted_run_resumes_from_its_last_checkpoint() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    let config = tiny_config(runs.path());
    let base = TrainArgs {
        config: Some(config),
        ..args("mnist-mlp", data.path(), &dir)
    };
    // The first invocation stops after epoch 1 of 2, as if it had been interrupted there.
    cli::train(&TrainArgs {
        epochs: Some(1),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(metrics(&dir)["epochs"], 1);
    let first_seconds = metrics(&dir)["wall_seconds"].as_f64().unwrap();
    let epoch1_log = dir.join("train/epoch-1/Loss.log");
    let epoch1_written = std::fs::metadata(&epoch1_log).unwrap().modified().unwrap();

    let again = err(&base);
    assert!(
        again.contains("already holds a run") && again.contains("--resume"),
        "{again}"
    );
    let changed = err(&TrainArgs {
        resume: true,
        lr: Some(0.1),
        ..base.clone()
    });
    assert!(changed.contains("--lr would change the run"), "{changed}");

    let resume = TrainArgs {
        resume: true,
        config: None,
        ..base
    };
    cli::train(&TrainArgs {
        epochs: Some(2),
        ..resume.clone()
    })
    .unwrap();
    assert_eq!(metrics(&dir)["epochs"], 2);
    assert!(dir.join("checkpoint/model-2.mpk").is_file());
    // The reported time counts both invocations: epoch 1's seconds, then epoch 2's.
    let elapsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("elapsed.json")).unwrap()).unwrap();
    let ends = elapsed["seconds_at_epoch_end"].as_array().unwrap();
    assert_eq!(ends.len(), 2);
    assert!(ends[0].as_f64().unwrap() <= first_seconds);
    assert!(metrics(&dir)["wall_seconds"].as_f64().unwrap() > ends[0].as_f64().unwrap());
    // Resuming trained and logged epoch 2 only: epoch 1's log is untouched.
    let epoch1_now = std::fs::metadata(&epoch1_log).unwrap().modified().unwrap();
    assert_eq!(epoch1_now, epoch1_written);
    assert!(dir.join("train/epoch-2/Loss.log").is_file());
    assert!(dir.join("valid/epoch-2/Loss.log").is_file());
    // The learning curves cover both invocations: loss and accuracy panels, the rate beneath.
    let (width, height, colours) = decode_png(&dir.join("curves.png"));
    assert_eq!((width, height), (1000, 2 * 330 + 220));
    assert!(colours > 50, "{colours} colours: a blank picture?");

    let done = err(&TrainArgs {
        epochs: Some(2),
        ..resume
    });
    assert!(done.contains("already holds 2 of 2 epochs"), "{done}");
}

/// The `pdl` binary beside this test binary (`cargo test --workspace` builds it).
fn pdl_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let pdl = exe.parent().unwrap().parent().unwrap().join("pdl");
    assert!(
        pdl.is_file(),
        "{}: not built (cargo build -p pdl-training)",
        pdl.display()
    );
    pdl
}

/// A run killed for real (SIGKILL, as a crash or `kill -9`) mid-run and resumed ends with the
/// scores of the same run left alone: the data order is replayed, the dropout masks of each epoch
/// are drawn from the seed and the epoch, and the weights, optimiser state and schedule come back
/// from the checkpoint. The MLP's dropout (0.2) is this project's, drawn on the host.
#[test]
fn a_run_killed_mid_epoch_and_resumed_ends_with_the_uninterrupted_scores() {
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    crate::common::write_mnist_style(&data.path().join("mnist"), 3000, 200);
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("mlp.json");
    let pdl_training::experiments::ExperimentConfig::Image(c) =
        (pdl_training::experiments::find("mnist-mlp").unwrap().preset)()
    else {
        panic!("mnist-mlp is an image experiment")
    };
    let mut v = serde_json::to_value(c).unwrap();
    assert!(v["model"]["Mlp"]["dropout"].as_f64().unwrap() > 0.0);
    (v["valid_size"], v["num_epochs"], v["batch_size"]) = (200.into(), 4.into(), 32.into());
    std::fs::write(&config, v.to_string()).unwrap();
    let pdl = |dir: &Path, extra: &[&str]| {
        let mut command = Command::new(pdl_binary());
        command
            .args([
                "train",
                "mnist-mlp",
                "--plain",
                "--offline",
                "--backend",
                "flex",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .arg("--artifact-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let config_flag = ["--config", config.to_str().unwrap()];
    let finish = |mut command: Command| {
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
    };

    let whole = runs.path().join("whole");
    finish(pdl(&whole, &config_flag));

    let killed = runs.path().join("killed");
    let mut child = pdl(&killed, &config_flag).spawn().unwrap();
    let started = std::time::Instant::now();
    let epoch_1_saved = || {
        ["model", "optim", "scheduler"]
            .iter()
            .all(|part| killed.join(format!("checkpoint/{part}-1.mpk")).is_file())
    };
    while !epoch_1_saved() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint after 2 min"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("model.mpk").exists(),
        "the run finished before the kill: give it more epochs"
    );
    finish(pdl(&killed, &["--resume"]));

    let m = metrics(&killed);
    assert_eq!(m["epochs"], 4);
    let whole = metrics(&whole);
    assert_eq!((&m["valid"], &m["test"]), (&whole["valid"], &whole["test"]));
}

/// The same in one process for both kinds of dropout: burn-nn's, which draws from the backend's
/// generator (a GCN, dropout 0.5, one full-graph step an epoch), and this project's, drawn on the
/// host from the layers' streams (the classic CNN). Each run stopped after 2 epochs and resumed
/// ends with the scores and the checkpoints of the same run made straight through; for the GCN,
/// both with the last epoch's weights and with the best valid epoch's, which here comes before
/// the resume. In a process of its own: the backend's generator is one per process.
#[test]
fn a_resumed_run_draws_the_dropout_masks_of_an_uninterrupted_one() {
    in_a_process_of_its_own(
        "experiments::a_resumed_run_draws_the_dropout_masks_of_an_uninterrupted_one",
        resumed_runs_equal_uninterrupted_ones,
    );
}

fn resumed_runs_equal_uninterrupted_ones() {
    use pdl_training::experiments::{ExperimentConfig, find};
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    // Trains `experiment` from `config` for `epochs` straight, and again stopped after 2 and
    // resumed; checks that both end alike and gives the straight run's folder.
    let compare = |experiment: &str, config: &serde_json::Value, epochs: usize, name: &str| {
        let file = runs.path().join(format!("{name}.json"));
        std::fs::write(&file, config.to_string()).unwrap();
        let train = |run: &str, epochs: usize, resume: bool| {
            let dir = runs.path().join(format!("{name}-{run}"));
            cli::train(&TrainArgs {
                epochs: Some(epochs),
                resume,
                config: (!resume).then(|| file.clone()),
                ..args(experiment, data.path(), &dir)
            })
            .unwrap();
            (metrics(&dir), dir)
        };
        let (whole, whole_dir) = train("whole", epochs, false);
        train("resumed", 2, false);
        let (resumed, resumed_dir) = train("resumed", epochs, true);
        for key in ["valid", "test", "epochs"] {
            assert_eq!(resumed[key], whole[key], "{key}, {name}");
        }
        assert_eq!(checkpoints(&resumed_dir), checkpoints(&whole_dir), "{name}");
        whole_dir
    };

    let ExperimentConfig::Image(cnn) = (find("mnist-cnn").unwrap().preset)() else {
        panic!("mnist-cnn is an image experiment")
    };
    let mut cnn = serde_json::to_value(cnn).unwrap();
    (cnn["valid_size"], cnn["batch_size"]) = (32.into(), 32.into());
    // A constant rate: a cosine schedule is laid over the epochs an invocation asks for, so
    // stopping by asking for 2 of 3 would change it (the kill test above stops it by force).
    cnn["schedule"] = "Constant".into();
    compare("mnist-cnn", &cnn, 3, "cnn");

    let ExperimentConfig::Graph(gcn) = (find("cora-gcn").unwrap().preset)() else {
        panic!("cora-gcn is a graph experiment")
    };
    let mut gcn = serde_json::to_value(gcn).unwrap();
    (gcn["train_per_class"], gcn["valid_size"]) = (2.into(), 20.into());
    gcn["test_size"] = 20.into();
    for restore_best in [false, true] {
        gcn["restore_best"] = restore_best.into();
        let dir = compare("cora-gcn", &gcn, 6, &format!("gcn-{restore_best}"));
        // The setting is one where the best epoch comes before the resume (the valid loss rises
        // from epoch 3 on), so the resumed run must know the epochs of the first invocation.
        let valid_loss = |epoch: usize| {
            let log = dir.join(format!("valid/epoch-{epoch}/Loss.log"));
            let text = std::fs::read_to_string(log).unwrap();
            text.split(',').next().unwrap().parse::<f64>().unwrap()
        };
        let best = (1..=6)
            .min_by(|&a, &b| valid_loss(a).total_cmp(&valid_loss(b)))
            .unwrap();
        assert!(
            best <= 2,
            "best epoch {best}: pick a setting that overfits earlier"
        );
        assert!(checkpoints(&dir).contains(&format!("model-{best}.mpk")));
    }
}

/// The files in a run's `checkpoint/`, sorted.
fn checkpoints(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A disk that fills up mid-run (here: a file-size limit, `ulimit -f`, with SIGXFSZ ignored so
/// that a write fails as on a full disk) stops the run with a one-line error naming the file, and
/// damages nothing saved before: the run resumes from its last checkpoint once there is room.
#[test]
fn a_full_disk_is_a_one_line_error_and_loses_nothing_saved() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    let config = tiny_config(runs.path());
    let pdl = |limit_kib: Option<u64>, extra: &str| {
        let limit = limit_kib.map_or(String::new(), |k| format!("trap '' XFSZ; ulimit -f {k}; "));
        let script = format!(
            "{limit}exec '{}' train mnist-mlp --plain --offline --backend flex --data-dir '{}' \
             --artifact-dir '{}' {extra}",
            pdl_binary().display(),
            data.path().display(),
            dir.display()
        );
        std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap()
    };
    let first = pdl(None, &format!("--config '{}' --epochs 1", config.display()));
    assert!(first.status.success(), "{first:?}");
    // (config.json is rewritten by the resume, with its new epoch count.)
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = [
        "checkpoint/model-1.mpk",
        "checkpoint/optim-1.mpk",
        "metrics.json",
        "model.mpk",
    ]
    .iter()
    .map(|f| (dir.join(f), std::fs::read(dir.join(f)).unwrap()))
    .collect();

    // The MLP's checkpoint is megabytes: 512 KiB lets the small files through, not it.
    let full = pdl(Some(512), "--resume --epochs 2");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("-2.mpk") && stderr.contains("--resume"),
        "{stderr}"
    );
    for (path, bytes) in &saved {
        assert!(
            std::fs::read(path).unwrap() == *bytes,
            "{} changed",
            path.display()
        );
    }
    let again = pdl(None, "--resume --epochs 2");
    assert!(again.status.success(), "{again:?}");
    assert_eq!(metrics(&dir)["epochs"], 2);
}

/// A run folder has one writer: a live holder's lock stops a second run, a dead one's is taken
/// over, and the lock goes when the run ends. Files are renamed into place, so no partial file is
/// left behind.
#[test]
fn a_second_writer_is_refused_and_a_stale_lock_is_taken_over() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    let run = args("mnist-mlp", data.path(), &dir);
    let smoke = TrainArgs { smoke: true, ..run };
    std::fs::create_dir_all(&dir).unwrap();
    // This process is alive: as if another `pdl train` were writing here.
    std::fs::write(dir.join(".lock"), std::process::id().to_string()).unwrap();
    let busy = err(&smoke);
    assert!(
        busy.contains("being written by another pdl train")
            && busy.contains(&format!("pid {}", std::process::id())),
        "{busy}"
    );
    assert!(
        !dir.join("config.json").exists(),
        "the refused run wrote nothing"
    );
    // No process has this pid (above the kernel's limit of 2^22).
    std::fs::write(dir.join(".lock"), "4000000000").unwrap();
    cli::train(&smoke).unwrap();
    assert!(!dir.join(".lock").exists());
    let m = metrics(&dir);
    assert_eq!(m["rerun"]["seed"], 42);
    assert_eq!(m["rerun"]["backend"], "flex");
    assert!(
        m["rerun"]["burn_version"]
            .as_str()
            .unwrap()
            .starts_with("0.21")
    );
    assert!(m["rerun"]["threads"].as_u64().unwrap() >= 1);
    // Files are written whole through a staging folder, which is left empty.
    for folder in [dir.clone(), dir.join("checkpoint")] {
        let staged = folder.join(pdl_training::artifacts::STAGING);
        let left = std::fs::read_dir(&staged).unwrap().count();
        assert_eq!(left, 0, "files left in {}", staged.display());
        for entry in std::fs::read_dir(&folder).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                name == ".partial" || !name.contains("partial"),
                "{name} left in {}",
                folder.display()
            );
        }
    }
    // A damaged model.mpk is a one-line error naming it.
    let model = dir.join("model.mpk");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let line = eval(&dir, data.path()).unwrap_err();
    assert!(
        line.starts_with(&format!("{}: cannot be read as a model", model.display()))
            && line.contains("damaged, truncated"),
        "{line}"
    );
}

#[test]
fn a_run_that_stopped_before_its_first_checkpoint_can_be_started_again() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    let empty = tempfile::tempdir().unwrap();
    let smoke = |data: &Path| TrainArgs {
        smoke: true,
        ..args("mnist-cnn", data, &dir)
    };
    let missing = err(&smoke(empty.path()));
    assert!(missing.contains("MNIST not found"), "{missing}");
    cli::train(&smoke(data.path())).unwrap();
    // As if killed between the first checkpoint's files: the model's is there, not the others.
    for f in ["model.mpk", "metrics.json", "checkpoint/optim-1.mpk"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let resume = err(&TrainArgs {
        resume: true,
        ..args("mnist-cnn", data.path(), &dir)
    });
    assert!(
        resume.contains("no complete checkpoint") && resume.contains("without --resume"),
        "{resume}"
    );
    cli::train(&smoke(data.path())).unwrap();
    assert!(dir.join("checkpoint/optim-1.mpk").is_file());
}

/// A newest checkpoint damaged on disk (here: cut short) is skipped: the run resumes from the one
/// before, and trains the damaged epoch again.
#[test]
fn a_damaged_newest_checkpoint_is_skipped_on_resume() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    let base = TrainArgs {
        config: Some(tiny_config(runs.path())),
        ..args("mnist-mlp", data.path(), &dir)
    };
    cli::train(&base).unwrap();
    let newest = dir.join("checkpoint/optim-2.mpk");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let epoch2_log = dir.join("train/epoch-2/Loss.log");
    let before = std::fs::metadata(&epoch2_log).unwrap().modified().unwrap();
    cli::train(&TrainArgs {
        resume: true,
        config: None,
        epochs: Some(3),
        ..base
    })
    .unwrap();
    assert_eq!(metrics(&dir)["epochs"], 3);
    let after = std::fs::metadata(&epoch2_log).unwrap().modified().unwrap();
    assert!(after > before, "epoch 2 was not trained again");
    let bytes_now = std::fs::read(&newest).unwrap();
    assert!(bytes_now.len() > bytes.len() / 2, "the damaged file stayed");
}

#[test]
fn images_of_the_wrong_size_are_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let set = data.path().join("mnist");
    for (split, n) in [(0, 8), (1, 4)] {
        crate::common::write_split(&set, split, 20, &vec![0; n * 400], &vec![1; n]);
    }
    let msg = err(&TrainArgs {
        smoke: true,
        ..args("mnist-cnn", data.path(), &data.path().join("run"))
    });
    assert!(
        msg.contains("images are 20x20 but the model expects 28x28"),
        "{msg}"
    );
}

#[test]
fn two_cpu_devices_train_data_parallel() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("run");
    cli::train(&TrainArgs {
        smoke: true,
        devices: "2".into(),
        ..args("mnist-cnn", data.path(), &dir)
    })
    .unwrap();
    assert_eq!(metrics(&dir)["devices"], 2);
}

/// The classic CNN's dropout draws its masks from streams the model owns, split per device in
/// device order, so two runs on two devices repeat exactly however the worker threads interleave.
#[test]
fn two_devices_with_the_same_seed_give_the_same_scores() {
    in_a_process_of_its_own(
        "experiments::two_devices_with_the_same_seed_give_the_same_scores",
        two_devices_twice,
    );
}

fn two_devices_twice() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let scores = |name: &str| {
        let dir = runs.path().join(name);
        cli::train(&TrainArgs {
            smoke: true,
            devices: "2".into(),
            seed: Some(7),
            ..args("mnist-cnn", data.path(), &dir)
        })
        .unwrap();
        let m = metrics(&dir);
        (m["valid"].to_string(), m["test"].to_string())
    };
    let first = scores("first");
    assert_eq!(first, scores("second"));
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let msg = err(&TrainArgs {
        smoke: true,
        lr: Some(1e30),
        ..args("mnist-mlp", data.path(), &runs.path().join("run"))
    });
    assert!(msg.contains("loss became NaN"), "{msg}");
}

#[test]
fn a_missing_dataset_names_the_files_and_the_flag() {
    let empty = tempfile::tempdir().unwrap();
    let msg = err(&TrainArgs {
        smoke: true,
        ..args("mnist-cnn", empty.path(), &empty.path().join("run"))
    });
    assert!(msg.contains("MNIST not found"), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("--data-dir"), "{msg}");
}

#[test]
fn a_corrupt_file_names_the_file() {
    let data = tiny_data_dir();
    let path = data.path().join("mnist/train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err(&TrainArgs {
        smoke: true,
        ..args("mnist-cnn", data.path(), &data.path().join("run"))
    });
    assert!(
        msg.contains("train-images-idx3-ubyte.gz: corrupt gzip stream"),
        "{msg}"
    );
}

#[test]
fn bad_flags_are_one_line_errors() {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("run");
    let unknown = err(&args("mnist-gpt", data.path(), &out));
    assert!(
        unknown.contains("unknown experiment 'mnist-gpt'"),
        "{unknown}"
    );
    let backend = err(&TrainArgs {
        backend: Some("tpu".into()),
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(backend.contains("unknown backend 'tpu'"), "{backend}");
    let devices = err(&TrainArgs {
        devices: "0".into(),
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(devices.contains("--devices"), "{devices}");
    let epochs = err(&TrainArgs {
        epochs: Some(0),
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(epochs.contains("num_epochs must be at least 1"), "{epochs}");
    // The batch size is the global one: it must split evenly over the devices.
    let uneven = err(&TrainArgs {
        devices: "2".into(),
        batch_size: Some(33),
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(
        uneven.contains("--batch-size 33 does not split evenly over --devices 2")
            && uneven.contains("(try 32)"),
        "{uneven}"
    );
    let garbage = data.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let config = err(&TrainArgs {
        config: Some(garbage),
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(config.contains("garbage.json"), "{config}");
    let resume = err(&TrainArgs {
        resume: true,
        ..args("mnist-cnn", data.path(), &out)
    });
    assert!(resume.contains("holds no run"), "{resume}");
    assert!(
        !out.exists(),
        "a failed start must not create the run folder"
    );
}

#[test]
fn seeds_train_one_run_each_and_summarise_them() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let base = runs.path().join("gcn");
    let summary = cli::train_seeds(
        &TrainArgs {
            smoke: true,
            seed: Some(5),
            ..args("cora-gcn", data.path(), &base)
        },
        3,
    )
    .unwrap();
    assert_eq!(summary.seeds, vec![5, 6, 7]);
    let accs: Vec<f64> = summary
        .runs
        .iter()
        .map(|r| r.report.test.accuracy.unwrap())
        .collect();
    let mean = accs.iter().sum::<f64>() / 3.0;
    assert!((summary.test.mean - mean).abs() < 1e-9);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("seeds.json")).unwrap()).unwrap();
    assert_eq!(file["runs"].as_array().unwrap().len(), 3);
    assert!((file["test"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    for seed in 5..8 {
        let config =
            std::fs::read_to_string(base.join(format!("seed-{seed}/config.json"))).unwrap();
        assert!(config.contains(&format!("\"seed\": {seed}")), "{config}");
    }
}

#[test]
fn malformed_cora_files_name_file_and_line() {
    let data = tiny_data_dir();
    let cites = data.path().join("cora/cora.cites");
    let mut text = std::fs::read_to_string(&cites).unwrap();
    text += "1000\t999999\n";
    let line = text.lines().count();
    std::fs::write(&cites, text).unwrap();
    let msg = err(&TrainArgs {
        smoke: true,
        ..args("cora-gat", data.path(), &data.path().join("run"))
    });
    assert!(
        msg.contains(&format!(
            "cora.cites: line {line}: paper id 999999 is not in"
        )),
        "{msg}"
    );
}

#[test]
fn flags_that_do_not_apply_to_full_graph_training_are_errors() {
    let data = tiny_data_dir();
    let out = data.path().join("run");
    let batch = err(&TrainArgs {
        batch_size: Some(32),
        ..args("cora-gcn", data.path(), &out)
    });
    assert!(batch.contains("--batch-size does not apply"), "{batch}");
    let devices = err(&TrainArgs {
        devices: "2".into(),
        smoke: true,
        ..args("cora-sage", data.path(), &out)
    });
    assert!(devices.contains("--devices 2 does not apply"), "{devices}");
}

#[test]
fn list_names_every_experiment() {
    let table = cli::list_table();
    for e in EXPERIMENTS {
        assert!(table.contains(e.name) && table.contains(&e.expected()));
    }
}

#[test]
fn a_language_model_run_generates_text_from_its_own_files() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("lm");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("shakespeare-lstm", data.path(), &dir)
    })
    .unwrap();
    let generate = |prompt: &str, seed: u64| {
        cli::generate(&cli::GenerateArgs {
            artifact_dir: dir.clone(),
            prompt: prompt.into(),
            length: 40,
            temperature: 0.8,
            top_k: Some(10),
            seed,
            backend: Some("flex".into()),
            no_kv_cache: false,
        })
    };
    let out = generate("ROMEO:", 1).unwrap();
    assert!(out.text.starts_with("ROMEO:"), "{}", out.text);
    assert_eq!(out.characters, 40);
    assert_eq!(out.text.chars().count(), 46);
    assert_eq!(out.text, generate("ROMEO:", 1).unwrap().text, "not seeded");
    // Every generated character comes from the training text.
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    assert!(out.text.chars().all(|c| vocab.contains(c)));
    let unknown = cli::one_line(&generate("ROMEO: ~", 1).unwrap_err());
    assert!(
        unknown.contains("--prompt") && unknown.contains('~'),
        "{unknown}"
    );
    // A run of another kind is refused.
    let mlp = runs.path().join("mlp");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("mnist-mlp", data.path(), &mlp)
    })
    .unwrap();
    let e = cli::one_line(
        &cli::generate(&cli::GenerateArgs {
            artifact_dir: mlp,
            ..cli::GenerateArgs {
                artifact_dir: dir.clone(),
                prompt: "A".into(),
                length: 1,
                temperature: 1.0,
                top_k: None,
                seed: 0,
                backend: None,
                no_kv_cache: false,
            }
        })
        .unwrap_err(),
    );
    assert!(e.contains("not a language model"), "{e}");
}

#[test]
fn forecasts_are_scored_beside_the_naive_forecast() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("linear");
    let trained = cli::train(&TrainArgs {
        smoke: true,
        ..args("ett-linear", data.path(), &dir)
    })
    .unwrap();
    let naive = trained.report.baseline.expect("a naive baseline");
    let m = metrics(&dir);
    assert!((m["baseline"]["loss"].as_f64().unwrap() - naive.loss).abs() < 1e-9);
    assert!(naive.mae.unwrap() > 0.0);
    // The tiny series repeats every 24 rows, and 96 is 4 days, so the naive forecast is near
    // exact: its error is the noise's.
    assert!(naive.loss < 0.05, "{naive:?}");
}

#[test]
fn malformed_series_and_sentences_name_file_and_line() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let ett = data.path().join("ett/ETTh1.csv");
    let text = std::fs::read_to_string(&ett).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 6 of the file: its third series is not a number.
    let mut fields: Vec<String> = lines[5].split(',').map(str::to_string).collect();
    fields[3] = "abc".into();
    lines[5] = fields.join(",");
    std::fs::write(&ett, lines.join("\n")).unwrap();
    let e = err(&TrainArgs {
        smoke: true,
        ..args("ett-linear", data.path(), &runs.path().join("a"))
    });
    assert!(e.contains("ETTh1.csv") && e.contains("line 6"), "{e}");

    let sst = data.path().join("sst2/dev.tsv");
    let mut tsv = std::fs::read_to_string(&sst).unwrap();
    tsv += "a fine film \t7\n";
    std::fs::write(&sst, &tsv).unwrap();
    let e = err(&TrainArgs {
        smoke: true,
        ..args("sst2-lstm", data.path(), &runs.path().join("b"))
    });
    assert!(e.contains("dev.tsv") && e.contains("line 66"), "{e}");
}

#[test]
fn a_gpt_generates_the_same_text_with_and_without_its_kv_cache() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("gpt");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("shakespeare-gpt", data.path(), &dir)
    })
    .unwrap();
    let generate = |no_kv_cache| {
        cli::generate(&cli::GenerateArgs {
            artifact_dir: dir.clone(),
            prompt: "JULIET:".into(),
            length: 30,
            temperature: 0.0,
            top_k: None,
            seed: 3,
            backend: Some("flex".into()),
            no_kv_cache,
        })
        .unwrap()
    };
    let (cached, uncached) = (generate(false), generate(true));
    assert_eq!(cached.characters, 30);
    assert_eq!(cached.text, uncached.text);
}

fn probe_args(dir: &Path, data: &Path, labels: &str) -> cli::ProbeArgs {
    cli::ProbeArgs {
        run: EvalArgs {
            artifact_dir: dir.to_path_buf(),
            backend: Some("flex".into()),
            data_dir: Some(data.to_path_buf()),
            offline: true,
        },
        labels_per_class: labels.into(),
        fine_tune: false,
        fine_tune_steps: None,
    }
}

#[test]
fn a_pretrained_encoder_is_probed_beside_a_random_one_and_training_from_scratch() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("mnist-simclr");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("mnist-simclr", data.path(), &dir)
    })
    .unwrap();
    let rows = cli::probe(&cli::ProbeArgs {
        fine_tune: true,
        fine_tune_steps: Some(2),
        ..probe_args(&dir, data.path(), "2,full")
    })
    .unwrap();
    // Two per class of the tiny set's ten classes, then its 120 training images (160 less the 40
    // a smoke run holds out).
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].labels_per_class, Some(2));
    assert_eq!(rows[0].pretrained.labels, 20);
    assert_eq!(rows[0].random.labels, 20);
    assert_eq!(rows[1].labels_per_class, None);
    assert_eq!(rows[1].pretrained.labels, 160 - 40);
    for row in &rows {
        let scores = [
            row.pretrained.linear,
            row.pretrained.knn,
            row.random.linear,
            row.random.knn,
            row.fine_tuned.unwrap(),
            row.scratch.unwrap(),
        ];
        assert!(scores.iter().all(|s| (0.0..=100.0).contains(s)), "{row:?}");
    }
    // The full-label probe is the one training ran: same features, same seed, same scores.
    let trained = metrics(&dir);
    assert_eq!(trained["probe"]["linear"], rows[1].pretrained.linear);
    assert_eq!(trained["probe"]["knn"], rows[1].pretrained.knn);
    let table = std::fs::read_to_string(dir.join("probe.md")).unwrap();
    assert_eq!(table.lines().count(), 2 + 2, "{table}");
    assert!(
        table.lines().nth(3).unwrap().starts_with("| all | 120 |"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("probe.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    // What a person can get wrong, each a one-line error.
    let probe_err = |a: &cli::ProbeArgs| cli::one_line(&cli::probe(a).unwrap_err());
    let words = probe_err(&probe_args(&dir, data.path(), "10,lots"));
    assert!(words.contains("'lots' is neither"), "{words}");
    let zero = probe_err(&cli::ProbeArgs {
        fine_tune_steps: Some(0),
        ..probe_args(&dir, data.path(), "10")
    });
    assert!(zero.contains("--fine-tune-steps"), "{zero}");
    let supervised = runs.path().join("mnist-mlp");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("mnist-mlp", data.path(), &supervised)
    })
    .unwrap();
    let wrong_run = probe_err(&probe_args(&supervised, data.path(), "10"));
    assert!(
        wrong_run.contains("a run of mnist-mlp, not of a pre-training experiment"),
        "{wrong_run}"
    );
    // NT-Xent is not a mean over examples: slicing its batch over devices would change it.
    let devices = err(&TrainArgs {
        devices: "2".into(),
        ..args("mnist-simclr", data.path(), &runs.path().join("two"))
    });
    assert!(devices.contains("NT-Xent compares each view"), "{devices}");
    std::fs::remove_file(dir.join("model.mpk")).unwrap();
    let unfinished = probe_err(&probe_args(&dir, data.path(), "10"));
    assert!(unfinished.contains("no trained model"), "{unfinished}");
}

#[test]
fn a_masked_autoencoders_vit_is_probed_and_fine_tuned_as_mnist_vit() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().join("mnist-mae");
    cli::train(&TrainArgs {
        smoke: true,
        ..args("mnist-mae", data.path(), &dir)
    })
    .unwrap();
    let rows = cli::probe(&cli::ProbeArgs {
        fine_tune: true,
        fine_tune_steps: Some(2),
        ..probe_args(&dir, data.path(), "3,full")
    })
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].pretrained.labels, 30);
    for row in &rows {
        let tuned = [row.fine_tuned.unwrap(), row.scratch.unwrap()];
        assert!(tuned.iter().all(|s| (0.0..=100.0).contains(s)), "{row:?}");
    }
    // The probe reads the ViT's class token: the same features and scores as at the end of
    // training.
    let trained = metrics(&dir);
    assert_eq!(trained["probe"]["linear"], rows[1].pretrained.linear);
    assert_eq!(trained["probe"]["knn"], rows[1].pretrained.knn);
}

#[test]
fn a_sentence_encoder_pretrained_on_hidden_words_is_fine_tuned_on_few_labels() {
    let data = tiny_data_dir();
    let runs = tempfile::tempdir().unwrap();
    // The presets with 100 of the tiny set's 400 training sentences held out, batches of 32.
    let small = |name: &str| {
        let preset = (pdl_training::experiments::find(name).unwrap().preset)();
        let mut json: serde_json::Value = serde_json::from_str(&preset.to_json()).unwrap();
        json["valid_size"] = 100.into();
        json["batch_size"] = 32.into();
        let path = runs.path().join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        Some(path)
    };
    let pre = runs.path().join("pre");
    let trained = cli::train(&TrainArgs {
        epochs: Some(3),
        config: small("sst2-pretrain"),
        ..args("sst2-pretrain", data.path(), &pre)
    })
    .unwrap();
    // The hidden words of 64 dev sentences of 2 to 9 words, one or two each: guessed among the
    // tiny vocabulary's words, better than chance after three epochs.
    let test = &trained.report.test;
    assert!((64..=128).contains(&test.count), "{test:?}");
    assert!(test.confusion.is_none());
    let words = std::fs::read_to_string(pre.join("vocab.txt")).unwrap();
    let chance = 100.0 / (words.lines().count() - 2) as f64;
    assert!(test.accuracy.unwrap() > chance, "{test:?}");
    assert!((eval(&pre, data.path()).unwrap().loss - test.loss).abs() < 1e-6);

    // Fine-tuning on 20 labels: the run says so, keeps the pre-trained vocabulary, and evaluates
    // back.
    let tuned = runs.path().join("tuned");
    let fine = cli::train(&TrainArgs {
        from: Some(pre.clone()),
        labels: Some(20),
        epochs: Some(2),
        config: small("sst2-finetune"),
        ..args("sst2-finetune", data.path(), &tuned)
    })
    .unwrap();
    assert_eq!(fine.report.train_items, 20);
    let own = std::fs::read_to_string(tuned.join("vocab.txt")).unwrap();
    assert_eq!(own, words);
    let config = std::fs::read_to_string(tuned.join("config.json")).unwrap();
    assert!(config.contains("\"labelled\": 20"), "{config}");
    let scores = eval(&tuned, data.path()).unwrap();
    assert_eq!(scores.accuracy, fine.report.test.accuracy);

    // A different encoder shape: one line naming both shapes, before anything is written.
    let wide = runs.path().join("wide.json");
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    json["model"]["Transformer"]["d_model"] = 64.into();
    std::fs::write(&wide, json.to_string()).unwrap();
    let message = err(&TrainArgs {
        config: Some(wide),
        smoke: true,
        ..args("sst2-finetune", data.path(), &runs.path().join("wide"))
    });
    assert!(
        message.contains("2 blocks of 128") && message.contains("2 blocks of 64"),
        "{message}"
    );
    assert!(!runs.path().join("wide").exists());
    // A missing pre-training run, and flags where they do not apply.
    let none = err(&TrainArgs {
        from: Some(runs.path().join("nowhere")),
        config: small("sst2-finetune"),
        ..args("sst2-finetune", data.path(), &runs.path().join("x"))
    });
    assert!(none.contains("no finished pre-training run"), "{none}");
    assert!(!runs.path().join("x").exists());
    let lstm = err(&TrainArgs {
        from: Some(pre.clone()),
        ..args("sst2-lstm", data.path(), &runs.path().join("y"))
    });
    assert!(
        lstm.contains("cannot start from a pre-trained encoder"),
        "{lstm}"
    );
    let image = err(&TrainArgs {
        labels: Some(10),
        ..args("mnist-cnn", data.path(), &runs.path().join("z"))
    });
    assert!(image.contains("--labels and --from apply to"), "{image}");
    let too_many = err(&TrainArgs {
        labels: Some(100_000),
        smoke: true,
        ..args("sst2-transformer", data.path(), &runs.path().join("w"))
    });
    assert!(
        too_many.contains("needs 50000 sentences of class 0"),
        "{too_many}"
    );
}

//! A run's artifact directory (default `runs/<experiment>/`):
//!
//! ```text
//! config.json      the experiment config, enough to rebuild the run (`pdl eval` reads it)
//! checkpoint/      model, optimiser and scheduler state of the last epochs (`--resume` reads it)
//! train/ valid/    Burn's per-epoch metric logs
//! model.mpk        the final model
//! metrics.json     what the run reached: valid and test scores, epochs, wall time, backend
//! ```

use crate::backend::BackendKind;
use anyhow::Result;
use burn::record::{
    BurnRecord, FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Record, RecorderError,
};
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a run reads data and writes artifacts, and how.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The data directory (`--data-dir`, `PDL_DATA_DIR` or the cache).
    pub data_dir: PathBuf,
    /// The artifact directory.
    pub artifact_dir: PathBuf,
    /// Continue from the checkpoint of this epoch.
    pub resume_from: Option<usize>,
    /// One line per epoch instead of the dashboard.
    pub plain: bool,
    /// Never download: a missing file is an error.
    pub offline: bool,
    /// The backend the run uses.
    pub backend: BackendKind,
    /// How many devices train data-parallel in this process.
    pub devices: usize,
    /// The processes this one trains with, in a multi-process run ([`crate::nodes`]).
    pub nodes: Option<std::sync::Arc<crate::nodes::NodeGroup>>,
}

impl RunContext {
    /// The slices each global batch is cut into: one per device of every process.
    pub fn parts(&self) -> usize {
        self.devices * self.nodes.as_ref().map_or(1, |n| n.count())
    }
}

/// A split's scores: the mean loss, and the task's own measure.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Mean loss per example: cross-entropy for a classifier (nats), MSE for a regression.
    pub loss: f64,
    /// Classification: percentage of examples classified correctly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Number of examples scored.
    pub count: usize,
    /// Classification: `confusion[true class][predicted class]` examples (drawn into
    /// `confusion.png`, not written to `metrics.json`).
    #[serde(skip)]
    pub confusion: Option<Vec<Vec<usize>>>,
    /// Classification: the most confident mistakes, most confident first (drawn into
    /// `mistakes.png` for images, not written to `metrics.json`).
    #[serde(skip)]
    pub wrong: Vec<crate::learner::Wrong>,
}

impl Scores {
    /// The number a run is judged by, and its name: accuracy (higher is better) for a classifier,
    /// else the loss (MSE; lower is better).
    pub fn headline(&self) -> (&'static str, f64) {
        match self.accuracy {
            Some(accuracy) => ("accuracy", accuracy),
            None => ("loss", self.loss),
        }
    }
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.accuracy, self.mae) {
            (Some(acc), _) => write!(f, "accuracy {acc:.2}% (loss {:.4})", self.loss),
            (None, Some(mae)) => write!(f, "MSE {:.4}, MAE {mae:.4}", self.loss),
            (None, None) => write!(f, "loss {:.4}", self.loss),
        }
    }
}

/// What a training run reached.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Epochs with a checkpoint at the end.
    pub epochs: usize,
    /// Wall-clock seconds of training, all processes of a resumed run together.
    pub wall_seconds: f64,
    /// Training examples per epoch.
    pub train_items: usize,
    /// Final model on the validation split.
    pub valid: Scores,
    /// Final model on the test split.
    pub test: Scores,
    /// A baseline on the test split, where the pipeline has one (forecasting: the naive forecast).
    pub baseline: Option<Scores>,
    /// A pre-training run's encoder judged on the test split by probes of its frozen features.
    pub probe: Option<crate::probe::ProbeScores>,
    /// The pipeline's figures, drawn into the run folder once it is saved.
    pub figures: Vec<crate::plots::Figure>,
}

/// The content of `metrics.json`.
#[derive(Debug, Serialize)]
pub struct MetricsFile<'a> {
    /// Experiment name.
    pub experiment: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Devices used (in each process).
    pub devices: usize,
    /// Processes that trained together (`--nodes`), when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    /// Epochs trained in all.
    pub epochs: usize,
    /// Seconds trained, all processes of a resumed run together.
    pub wall_seconds: f64,
    /// Training examples per epoch.
    pub train_items: usize,
    /// A `--smoke` run (scores mean nothing).
    pub smoke: bool,
    /// Final validation scores.
    pub valid: Scores,
    /// Final test scores.
    pub test: Scores,
    /// The pipeline's baseline on the test split (forecasting: the naive forecast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Scores>,
    /// A pre-training run's probes of its encoder, with all the training labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::probe::ProbeScores>,
    /// What a rerun needs to give the same numbers.
    pub rerun: Rerun,
}

/// What a rerun needs to repeat a run's numbers: the same seed, backend and thread count, and the
/// same code (pdl's commit, Burn's version), on the same machine.
#[derive(Debug, Clone, Serialize)]
pub struct Rerun {
    /// The seed of weights, data order, dropout and augmentation.
    pub seed: u64,
    /// The backend.
    pub backend: String,
    /// Threads the CPU backends may use: `RAYON_NUM_THREADS` if set, else the cores available.
    pub threads: usize,
    /// pdl's version.
    pub pdl_version: &'static str,
    /// The git commit checked out when pdl was built ("unknown" outside a git checkout); changes
    /// not committed are not counted.
    pub git_commit: &'static str,
    /// Burn's version, from `Cargo.lock`.
    pub burn_version: &'static str,
    /// The machine: its CPU model (from `/proc/cpuinfo` on Linux, else the architecture) and the
    /// cores available.
    pub machine: String,
}

/// This machine in a few words: its CPU model and the cores available ("AMD EPYC 7B13, 2
/// cores"); the architecture where the model cannot be read.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let plural = if cores == 1 { "" } else { "s" };
    format!("{model}, {cores} core{plural}")
}

impl Rerun {
    /// This process's settings for a run with `seed` on `backend`.
    pub fn now(seed: u64, backend: BackendKind) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(cores);
        Self {
            seed,
            backend: backend.name().to_string(),
            threads,
            pdl_version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("PDL_GIT_COMMIT"),
            burn_version: env!("PDL_BURN_VERSION"),
            machine: machine(),
        }
    }
}

/// Writes `value` as pretty JSON to `path`, whole or not at all (see [`write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file, flushed to disk, then
/// renamed over `path`. A kill at any moment leaves the old file or the new one, never half of
/// one; a full disk or a read-only folder is an error naming the path, and the old file stays.
///
/// The temporary file sits two folders below `path`'s, in [`STAGING`] (made once, never removed).
/// Burn's end-of-training summary lists a run folder two levels deep and stats every entry it
/// listed, on the main thread, while the logger thread may still be writing `elapsed.json`: a
/// temporary file beside it, renamed away between the listing and the stat, made that summary
/// panic. Two levels down, Burn never lists it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let parent = path.parent().unwrap_or(Path::new("."));
    let staging = parent.join(STAGING);
    let tmp = staging.join(format!("{name}.partial"));
    let made = |dir: &Path| match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    };
    made(staging.parent().unwrap_or(parent))
        .and_then(|()| made(&staging))
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            std::fs::remove_file(&tmp).ok();
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        })
}

/// Where [`write_atomic`] stages its files, relative to the folder of the file it writes.
pub const STAGING: &str = ".partial/files";

/// The recorder of checkpoints and `model.mpk`: Burn's named MessagePack at full precision, with
/// each file written whole or not at all. Burn's own recorder writes in place, so a kill in the
/// middle of a checkpoint would leave a file that `--resume` trips over; this one encodes the
/// record in memory with the encoder Burn's uses (the same bytes, metadata included, so files load
/// either way) and hands them to [`write_atomic`]. A write that fails (a full disk) is kept, so
/// that the run's error can name the file and the cause, which Burn's checkpointer reports only as
/// a stop.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    burns: Mpk,
    failure: Arc<Mutex<Option<String>>>,
}

type Mpk = NamedMpkFileRecorder<FullPrecisionSettings>;

impl Recorder {
    /// The recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first write that failed, as `cannot write PATH: CAUSE`; shared by the recorder's clones.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok()?.clone()
    }
}

impl<B: Backend> burn::record::Recorder<B> for Recorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn record<R: Record<B>>(&self, record: R, file: PathBuf) -> Result<(), RecorderError> {
        // Burn's metadata names the recorder; keep the name Burn's recorder writes.
        let item = BurnRecord::<_, B>::new::<Mpk>(record.into_item::<FullPrecisionSettings>());
        <Self as burn::record::Recorder<B>>::save_item(self, item, file)
    }

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, &item)
            .map_err(|e| RecorderError::Unknown(e.to_string()))?;
        let path = file.with_extension(<Mpk as FileRecorder<B>>::file_extension());
        let parent = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))
            .and_then(|()| write_atomic(&path, &bytes))
            .map_err(|e| {
                if let Ok(mut failure) = self.failure.lock() {
                    failure.get_or_insert_with(|| e.to_string());
                }
                RecorderError::Unknown(e.to_string())
            })
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        <Mpk as burn::record::Recorder<B>>::load_item(&self.burns, file)
    }
}

impl<B: Backend> FileRecorder<B> for Recorder {
    fn file_extension() -> &'static str {
        <Mpk as FileRecorder<B>>::file_extension()
    }
}

/// One writer per run folder: `.lock` in it holds the pid of the `pdl train` writing there, and
/// is removed when the run ends (or fails). A second `pdl train` into the folder stops with an
/// error naming the holder; the lock of a process that no longer exists (killed, machine
/// restarted) is taken over with a note.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir`, which must exist.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".lock");
        loop {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match created {
                Ok(mut file) => {
                    std::io::Write::write_all(&mut file, std::process::id().to_string().as_bytes())
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => anyhow::bail!("cannot write {}: {e}", path.display()),
            }
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            match holder.trim().parse::<u32>() {
                Ok(pid) if is_running(pid) => anyhow::bail!(
                    "{} is being written by another pdl train (pid {pid}); wait for it to end, or \
                     train into another --artifact-dir (if no such process is yours, delete {})",
                    dir.display(),
                    path.display()
                ),
                // Empty: a holder killed between creating and writing the file.
                _ => {
                    eprintln!(
                        "note: {} was left by a run that no longer exists (pid {}); taking it over",
                        path.display(),
                        holder.trim()
                    );
                    std::fs::remove_file(&path)
                        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", path.display()))?;
                }
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// Whether a process `pid` exists. This process counts (two runs in one process must not share a
/// folder either).
fn is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.is_dir() {
        // A killed process stays a zombie (`Z`) until its parent reaps it: dead all the same.
        let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"));
        return stat.is_ok_and(|stat| {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X'))
        });
    }
    // No /proc (macOS, BSD): `kill -0` asks without sending anything.
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `dir` holds a run worth keeping: a trained model or at least one complete checkpoint.
/// A folder where a run failed or was killed before its first epoch was saved (`config.json`,
/// perhaps part of a checkpoint) can be trained into again.
pub fn holds_a_run(dir: &Path) -> bool {
    crate::learner::last_checkpoint(dir).is_some() || dir.join("model.mpk").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    type B = NdArray;

    #[test]
    fn the_recorder_writes_the_bytes_burns_does_and_leaves_nothing_partial() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let fresh = || LinearConfig::new(3, 2).init::<B>(&device);
        let (ours, burns) = (dir.path().join("ours"), dir.path().join("burns"));
        fresh().save_file(&burns, &Mpk::new()).unwrap();
        // Ours loads Burn's file, and writes it again byte for byte.
        let model = fresh()
            .load_file(&burns, &Recorder::new(), &device)
            .unwrap();
        model.clone().save_file(&ours, &Recorder::new()).unwrap();
        let read = |p: &Path| std::fs::read(p.with_extension("mpk")).unwrap();
        assert_eq!(read(&ours), read(&burns));
        let back = fresh().load_file(&ours, &Mpk::new(), &device).unwrap();
        let weights = |m: &Linear<B>| m.weight.val().into_data();
        weights(&back).assert_eq(&weights(&model), true);
        // Overwriting replaces the file; no temporary file or folder stays behind.
        model.save_file(&ours, &Recorder::new()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".partial", "burns.mpk", "ours.mpk"]);
        let staged = std::fs::read_dir(dir.path().join(STAGING)).unwrap().count();
        assert_eq!(staged, 0);
    }

    #[test]
    fn burns_summary_can_list_a_run_folder_while_files_are_written_into_it() {
        // The logger thread writes `elapsed.json` at each epoch's end while Burn's summary lists
        // the folder on the main thread, and stats what it listed; nothing listed may vanish.
        let dir = tempfile::tempdir().unwrap();
        let epoch = dir.path().join("train/epoch-1");
        std::fs::create_dir_all(&epoch).unwrap();
        std::fs::write(epoch.join("Loss.log"), "0.5,64\n").unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..2000 {
                    write_json(&dir.path().join("elapsed.json"), &[i]).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                burn::train::LearnerSummary::new(dir.path(), &["Loss"]).unwrap();
            }
        });
    }

    #[test]
    fn files_saved_at_once_from_several_threads_all_land() {
        // Burn checkpoints the model, the optimiser and the schedule from three threads at once.
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let model = LinearConfig::new(64, 64).init::<B>(&device);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (model, dir) = (model.clone(), dir.path());
                s.spawn(move || {
                    for epoch in 0..25 {
                        let path = dir.join(format!("part{t}-{epoch}"));
                        model.clone().save_file(&path, &Recorder::new()).unwrap();
                    }
                });
            }
        });
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".partial")
            .collect();
        assert_eq!(names.len(), 100, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".mpk")), "{names:?}");
    }

    #[test]
    fn a_write_that_cannot_happen_names_the_path_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        write_json(&path, &[1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2\n]\n");
        // A folder where the file should go: the rename fails, the temporary file is removed.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let e = write_atomic(&blocked, b"x").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}", blocked.display())),
            "{e}"
        );
        assert!(!dir.path().join(STAGING).join("blocked.partial").exists());
        let missing = dir.path().join("no/such/folder/metrics.json");
        let e = write_json(&missing, &1).unwrap_err().to_string();
        assert!(
            e.contains("cannot write") && e.contains("no/such/folder"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2\n]\n");
    }

    /// A killed holder is a zombie until its parent reaps it: its lock is stale already.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_that_has_exited_but_is_not_reaped_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        let exited = || std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(exited(), "the child should be a zombie by now");
        assert!(!is_running(child.id()));
        child.wait().unwrap();
        assert!(!is_running(child.id()));
        assert!(is_running(std::process::id()));
    }

    #[test]
    fn a_lock_is_one_writer_at_a_time_and_a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(lock);
        assert!(!dir.path().join(".lock").exists());
        for stale in ["4000000000", "", "not a pid"] {
            std::fs::write(dir.path().join(".lock"), stale).unwrap();
            let lock = RunLock::acquire(dir.path()).unwrap();
            let holder = std::fs::read_to_string(dir.path().join(".lock")).unwrap();
            assert_eq!(holder, std::process::id().to_string());
            drop(lock);
        }
    }
}

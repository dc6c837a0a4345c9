//! Which checkpoints a run keeps, when it stops early, and which epoch's weights it ends with: all
//! three decided from the run's valid losses ([`ValidLosses`]), so that they repeat from run to
//! run and a resumed run decides as an uninterrupted one would.
//!
//! Why not Burn's own (`MetricCheckpointingStrategy`, `MetricEarlyStoppingStrategy`): they read
//! the valid loss from Burn's event store, which Burn's metric thread fills behind the training
//! loop. When an epoch ends, the store may not hold that epoch's loss yet; early stopping then
//! skips the epoch, and the checkpoint strategy keeps another epoch as the best and deletes the
//! best one's checkpoint, differently from run to run. (Seen: a 6-epoch GCN run kept the
//! checkpoint of epoch 2 in one run and of epoch 3 in the next, the same seed and data; and
//! `ett-linear` stopped after 7 epochs in one run and 9 in another with the same scores.) They also
//! know only the epochs of their own process, so a resumed run forgot the best epoch before it.
//! Here a decision reads only epochs whose validation the guard has recorded in full, and waits
//! for the epoch just validated only when the decision turns on it (early stopping near its
//! patience, and the best epoch at the end), so the training loop and the metric thread still
//! overlap.

use burn::train::EarlyStoppingStrategy;
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a decision waits for Burn's metric thread to record an epoch's validation before it
/// goes ahead with what is recorded (and says so). The thread is a few batches behind at most.
const WAIT: Duration = Duration::from_secs(60);

/// The valid loss of every batch of a run, by epoch: recorded by the validation guard
/// ([`crate::learner::FiniteLossGuard::recording`]) as Burn's metric thread processes each batch,
/// with the end of each epoch's validation marked; a resumed run starts from the losses the
/// earlier invocations logged.
#[derive(Clone, Default)]
pub struct ValidLosses(Arc<(Mutex<Log>, Condvar)>);

#[derive(Default)]
struct Log {
    /// `(epoch, loss)` of each batch.
    batches: Vec<(usize, f64)>,
    /// The last epoch whose validation has ended.
    ended: usize,
}

impl ValidLosses {
    /// The losses of a run resumed after `epochs` epochs, read back from Burn's file logger in
    /// `split_dir` (`epoch-N/Loss.log`, a line `loss,batch size` per batch). An epoch whose log is
    /// missing or unreadable is left out, with a one-line note: it cannot be the best one then.
    pub fn resumed(split_dir: &Path, epochs: usize) -> Self {
        let mut batches = Vec::new();
        for epoch in 1..=epochs {
            let path = split_dir.join(format!("epoch-{epoch}/Loss.log"));
            match crate::plots::read_log(&path) {
                Ok(lines) => batches.extend(lines.into_iter().map(|(loss, _)| (epoch, loss))),
                Err(e) => println!("note: {e:#}; epoch {epoch} cannot be restored as the best"),
            }
        }
        let log = Log {
            batches,
            ended: epochs,
        };
        Self(Arc::new((Mutex::new(log), Condvar::new())))
    }

    /// Records the loss of one validation batch of `epoch`.
    pub(crate) fn push(&self, epoch: usize, loss: f64) {
        self.lock().batches.push((epoch, loss));
    }

    /// Marks the end of the validation of the last epoch recorded.
    pub(crate) fn end_epoch(&self) {
        let mut log = self.lock();
        if let Some(&(epoch, _)) = log.batches.last() {
            log.ended = log.ended.max(epoch);
        }
        self.0.1.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mean valid loss of each epoch up to `epoch`, once `epoch`'s validation has ended (or
    /// after [`WAIT`], with a note).
    pub fn means_through(&self, epoch: usize) -> BTreeMap<usize, f64> {
        let (log, timeout) = self
            .0
            .1
            .wait_timeout_while(self.lock(), WAIT, |log| log.ended < epoch)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() {
            println!(
                "note: the valid loss of epoch {epoch} was not recorded within {} s; deciding \
                 without it",
                WAIT.as_secs()
            );
        }
        means(log.batches.iter().filter(|(e, _)| *e <= epoch))
    }

    /// The epoch up to `epoch` with the lowest mean valid loss, among those `available` says can
    /// be restored; the first of equals.
    pub fn best(&self, epoch: usize, available: impl Fn(usize) -> bool) -> Option<usize> {
        best_of(&self.means_through(epoch), available)
    }
}

/// The mean of each epoch's `(epoch, loss)` batches.
fn means<'a>(batches: impl Iterator<Item = &'a (usize, f64)>) -> BTreeMap<usize, f64> {
    let mut sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for &(epoch, loss) in batches {
        let entry = sums.entry(epoch).or_default();
        *entry = (entry.0 + loss, entry.1 + 1);
    }
    sums.into_iter()
        .map(|(epoch, (sum, n))| (epoch, sum / n as f64))
        .collect()
}

/// The epoch with the lowest finite mean among those `available` allows; the first of equals, as
/// Burn's early stopping counts a new best only when it is strictly lower.
fn best_of(means: &BTreeMap<usize, f64>, available: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (&epoch, &mean) in means {
        if mean.is_finite() && available(epoch) && best.is_none_or(|(_, low)| mean < low) {
            best = Some((epoch, mean));
        }
    }
    best.map(|(epoch, _)| epoch)
}

/// Keeps the checkpoints of the last two epochs (a resume needs the last complete one, and the one
/// before covers a damaged newest) and of the epoch with the lowest valid loss (for
/// `restore_best`); deletes the others.
pub struct KeepLastAndBest {
    losses: ValidLosses,
    /// Epochs with a checkpoint on disk.
    saved: BTreeSet<usize>,
}

impl KeepLastAndBest {
    /// The strategy of a run whose checkpoints so far are `saved` (a resumed run's, on disk).
    pub fn new(losses: ValidLosses, saved: impl IntoIterator<Item = usize>) -> Self {
        Self {
            losses,
            saved: saved.into_iter().collect(),
        }
    }
}

impl CheckpointingStrategy for KeepLastAndBest {
    fn checkpointing(&mut self, epoch: usize, _: &EventStoreClient) -> Vec<CheckpointingAction> {
        self.after(epoch)
    }
}

impl KeepLastAndBest {
    /// What to do once `epoch` is validated: save it, and delete what is no longer kept.
    ///
    /// The best epoch is looked for up to `epoch - 1` only, whose validation the metric thread has
    /// long recorded, so training does not wait for it: if `epoch` itself is the best, its
    /// checkpoint is kept anyway as one of the last two, and the one kept as the best before it
    /// goes one epoch later.
    fn after(&mut self, epoch: usize) -> Vec<CheckpointingAction> {
        let best = self.losses.best(epoch.saturating_sub(1), |_| true);
        let keep = |e: usize| e + 2 > epoch || Some(e) == best;
        let mut actions: Vec<CheckpointingAction> = self
            .saved
            .iter()
            .filter(|&&e| !keep(e))
            .map(|&e| CheckpointingAction::Delete(e))
            .collect();
        self.saved.retain(|&e| keep(e));
        self.saved.insert(epoch);
        actions.push(CheckpointingAction::Save);
        actions
    }
}

/// Stops when the valid loss has not improved for `patience` epochs, counting every epoch of the
/// run (those before a resume too).
#[derive(Clone)]
pub struct NoImprovementSince {
    losses: ValidLosses,
    patience: usize,
}

impl NoImprovementSince {
    /// Early stopping after `patience` epochs without a lower valid loss.
    pub fn new(losses: ValidLosses, patience: usize) -> Self {
        Self { losses, patience }
    }
}

impl EarlyStoppingStrategy for NoImprovementSince {
    fn should_stop(&mut self, epoch: usize, _: &EventStoreClient) -> bool {
        self.stops_after(epoch)
    }
}

impl NoImprovementSince {
    /// Whether to stop once `epoch` is validated.
    ///
    /// Waits for `epoch`'s valid loss only when it decides: while the best epoch before it is
    /// less than `patience` epochs back, `epoch` cannot make the run stop, whatever its loss.
    fn stops_after(&self, epoch: usize) -> bool {
        let recent = |best: usize| epoch - best < self.patience;
        match self.losses.best(epoch.saturating_sub(1), |_| true) {
            None => false,
            Some(before) if recent(before) => false,
            Some(_) => self
                .losses
                .best(epoch, |_| true)
                .is_some_and(|best| !recent(best)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Losses whose validation of each epoch has ended.
    fn ended(batches: &[(usize, f64)]) -> ValidLosses {
        let losses = ValidLosses::default();
        for &(epoch, loss) in batches {
            losses.push(epoch, loss);
            losses.end_epoch();
        }
        losses
    }

    #[test]
    fn the_best_epoch_is_the_lowest_mean_among_restorable_epochs() {
        let losses = ended(&[
            (1, 0.9),
            (1, 0.7),
            (2, 0.5),
            (3, 0.6),
            (3, f64::NAN),
            (4, 0.55),
            (5, 0.5),
        ]);
        assert_eq!(losses.best(5, |_| true), Some(2), "the first of equals");
        assert_eq!(losses.best(5, |e| e != 2), Some(5));
        assert_eq!(
            losses.best(1, |_| true),
            Some(1),
            "only epochs up to the one asked"
        );
        assert_eq!(ValidLosses::default().best(0, |_| true), None);
    }

    #[test]
    fn a_resumed_run_reads_the_valid_losses_logged_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = |epoch: usize, text: &str| {
            let folder = dir.path().join(format!("epoch-{epoch}"));
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("Loss.log"), text).unwrap();
        };
        log(1, "0.5,64\n0.25,64\n");
        log(3, "0.1,64\nnot a number,64\n");
        log(4, "0.05,64\n");
        // Epoch 2 has no log, 3 a damaged one, 4 comes after the resume point.
        let losses = ValidLosses::resumed(dir.path(), 3);
        assert_eq!(losses.means_through(3), BTreeMap::from([(1, 0.375)]));
        assert!(
            ValidLosses::resumed(dir.path(), 0)
                .means_through(0)
                .is_empty()
        );
    }

    #[test]
    fn a_decision_waits_for_the_epochs_validation_to_end() {
        let losses = ValidLosses::default();
        losses.push(1, 0.5);
        let recorder = losses.clone();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            recorder.push(1, 0.25);
            recorder.end_epoch();
        });
        assert_eq!(losses.means_through(1), BTreeMap::from([(1, 0.375)]));
        late.join().unwrap();
    }

    #[test]
    fn checkpoints_of_the_last_two_epochs_and_the_best_are_kept() {
        let losses = ended(&[(1, 0.9), (2, 0.4), (3, 0.6), (4, 0.7), (5, 0.3)]);
        let mut strategy = KeepLastAndBest::new(losses, []);
        let mut kept = BTreeSet::new();
        for epoch in 1..=5 {
            for action in strategy.after(epoch) {
                match action {
                    CheckpointingAction::Save => assert!(kept.insert(epoch)),
                    CheckpointingAction::Delete(e) => assert!(kept.remove(&e)),
                }
            }
            // Epoch 5 is the best: kept as one of the last two, and epoch 2 until the next.
            let expected: &[usize] = match epoch {
                1 => &[1],
                2 => &[1, 2],
                3 => &[2, 3],
                4 => &[2, 3, 4],
                _ => &[2, 4, 5],
            };
            assert_eq!(
                kept.iter().copied().collect::<Vec<_>>(),
                expected,
                "after {epoch}"
            );
        }
    }

    #[test]
    fn early_stopping_counts_the_epochs_before_a_resume() {
        let losses = ended(&[(1, 0.9), (2, 0.4), (3, 0.6), (4, 0.7), (5, 0.3)]);
        let stop = NoImprovementSince::new(losses.clone(), 2);
        assert!(!stop.stops_after(1));
        assert!(!stop.stops_after(3));
        assert!(stop.stops_after(4));
        assert!(!stop.stops_after(5), "a new best");
        assert!(!NoImprovementSince::new(losses, 3).stops_after(4));
    }
}

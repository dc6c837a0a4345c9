//! Learning-rate schedules every experiment can use, stepped once per optimiser step.
//!
//! `lr(t)` for step `t` of `T`, with `W` warm-up steps (Goyal et al. 2017, linear warm-up) then a
//! half cosine (Loshchilov & Hutter 2017, SGDR without restarts) down to `min_lr`:
//!
//! ```text
//! t < W:   lr = peak * (t + 1) / W
//! t >= W:  lr = min + (peak - min) * (1 + cos(pi * (t - W) / (T - W))) / 2
//! ```

use burn::config::Config;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// Which schedule to use.
#[derive(Config, Debug, PartialEq)]
pub enum ScheduleConfig {
    /// The same learning rate throughout.
    Constant,
    /// Linear warm-up over `warmup_fraction` of the steps, then cosine decay to
    /// `min_lr_fraction * peak`.
    WarmupCosine {
        /// Fraction of all steps spent warming up, in `[0, 1)`.
        warmup_fraction: f64,
        /// Final learning rate as a fraction of the peak, in `[0, 1]`.
        min_lr_fraction: f64,
    },
}

impl ScheduleConfig {
    /// Checks the fractions.
    pub fn validate(&self) -> Result<(), String> {
        if let ScheduleConfig::WarmupCosine {
            warmup_fraction,
            min_lr_fraction,
        } = self
        {
            if !(0.0..1.0).contains(warmup_fraction) {
                return Err(format!(
                    "warmup_fraction must be in [0, 1), got {warmup_fraction}"
                ));
            }
            if !(0.0..=1.0).contains(min_lr_fraction) {
                return Err(format!(
                    "min_lr_fraction must be in [0, 1], got {min_lr_fraction}"
                ));
            }
        }
        Ok(())
    }

    /// The scheduler for `num_epochs` epochs over `train_items` examples in global batches of
    /// `batch_size` on `devices` devices: one optimiser step per global batch, however many
    /// devices share it.
    pub fn init_for_epochs(
        &self,
        peak_lr: f64,
        train_items: usize,
        batch_size: usize,
        devices: usize,
        num_epochs: usize,
    ) -> Schedule {
        let steps = crate::parallel::steps_per_epoch(train_items, batch_size, devices);
        self.init(peak_lr, steps * num_epochs)
    }

    /// The scheduler for `total_steps` optimiser steps peaking at `peak_lr`.
    pub fn init(&self, peak_lr: f64, total_steps: usize) -> Schedule {
        let (warmup, min_lr) = match self {
            ScheduleConfig::Constant => (0, peak_lr),
            ScheduleConfig::WarmupCosine {
                warmup_fraction,
                min_lr_fraction,
            } => (
                (warmup_fraction * total_steps as f64).round() as usize,
                peak_lr * min_lr_fraction,
            ),
        };
        Schedule {
            peak_lr,
            min_lr,
            warmup_steps: warmup,
            total_steps: total_steps.max(1),
            calls_per_step: 1,
            calls: 0,
        }
    }
}

/// A warm-up + cosine (or constant) schedule; its record is the step count, so a resumed run
/// continues the curve where it stopped.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    peak_lr: f64,
    min_lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    /// How many times the learner asks for the rate per optimiser step: 1, or N under
    /// burn-train's DDP, whose N workers each ask N times a step (see ddp.rs).
    calls_per_step: usize,
    /// Calls so far: the record.
    calls: usize,
}

impl Schedule {
    /// This schedule for a learner that asks for the rate `calls` times per optimiser step.
    pub fn asked_per_step(self, calls: usize) -> Self {
        Schedule {
            calls_per_step: calls.max(1),
            ..self
        }
    }

    /// The learning rate at step `t` (0-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        if t < self.warmup_steps {
            return self.peak_lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1) as f64;
        let progress = ((t - self.warmup_steps) as f64 / decay_steps).min(1.0);
        self.min_lr
            + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for Schedule {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.lr_at(self.calls / self.calls_per_step);
        self.calls += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.calls
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.calls = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine() -> Schedule {
        ScheduleConfig::WarmupCosine {
            warmup_fraction: 0.1,
            min_lr_fraction: 0.0,
        }
        .init(1e-3, 100)
    }

    #[test]
    fn warms_up_linearly_then_decays_to_min() {
        let s = cosine();
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr_at(9) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(55) - 5e-4).abs() < 1e-9);
        assert!(s.lr_at(100).abs() < 1e-12);
        let decay: Vec<f64> = (10..100).map(|t| s.lr_at(t)).collect();
        assert!(decay.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn constant_is_constant() {
        let s = ScheduleConfig::Constant.init(0.01, 10);
        assert!((0..20).all(|t| (s.lr_at(t) - 0.01).abs() < 1e-15));
    }

    #[test]
    fn record_resumes_the_curve() {
        type B = burn::backend::NdArray;
        let mut a = cosine();
        for _ in 0..37 {
            a.step();
        }
        let mut b = cosine().load_record::<B>(a.to_record::<B>());
        assert_eq!(a.step(), b.step());
    }

    #[test]
    fn asked_n_times_a_step_it_moves_once_a_step() {
        let mut once = cosine();
        let mut thrice = cosine().asked_per_step(3);
        for _ in 0..40 {
            let lr = once.step();
            assert_eq!([thrice.step(), thrice.step(), thrice.step()], [lr; 3]);
        }
    }

    #[test]
    fn rejects_warmup_of_one() {
        let c = ScheduleConfig::WarmupCosine {
            warmup_fraction: 1.0,
            min_lr_fraction: 0.0,
        };
        assert!(c.validate().is_err());
    }
}

//! Data parallelism on one machine: `--devices N` trains the model one device would, N at a time.
//!
//! One optimiser step takes one *global* batch of `--batch-size` B examples. It is cut into N
//! slices of B/N, one per device. Each device holds a copy of the weights and runs the forward and
//! backward pass on its slice, which gives the gradient of its slice's mean loss, g_i. The step
//! then uses their mean,
//!
//! ```text
//! g = (g_1 + ... + g_N) / N = ∇ (1/B) Σ_{x in the global batch} loss(x)     (equal slices)
//! ```
//!
//! which is the gradient one device computes on the whole batch, so N devices take the same step
//! as one device with batch B (within float rounding), only faster. This is the mean all-reduce of
//! PyTorch's `DistributedDataParallel`. Two consequences a student meets at once:
//!
//! - `--batch-size` is the global batch and must split evenly over the devices. Keeping it and
//!   adding devices changes nothing but the speed; the learning rate stays.
//! - Growing the global batch with the devices (B -> N·B, to keep each device as busy) takes N
//!   times fewer steps per epoch; the *linear scaling rule* (Goyal et al. 2017, "Accurate, Large
//!   Minibatch SGD") then multiplies the learning rate by N, with a warm-up, as the presets'
//!   warm-up-cosine schedules have. That is a choice of hyper-parameters (`--batch-size`,
//!   `--learning-rate`), not something `--devices` does behind the user's back.
//!
//! Burn's Learner runs the devices (its multi-device strategy: one thread per device, the
//! optimiser on the first). It hands each device a part of the training loader and *sums* the
//! gradients. Two pieces here make that the exact mean:
//!
//! - [`Sharded`]: the loader, built on batches of B/N, in parts that deal one shuffled order out
//!   in turn: at step t, part i gets the slice N·t + i, so the N slices of a step are the global
//!   batch t of a one-device run with batch B (same seed, same order). An epoch takes the
//!   ⌊examples / B⌋ full global batches; the rest (at most B − 1 examples, other ones every
//!   epoch) is left out, as `drop_last` would: slices of unequal sizes could not be averaged
//!   evenly.
//! - [`MeanOverDevices`]: the optimiser, which divides the summed gradient by N before its step
//!   (clipping, Adam's moments and weight decay then see the mean, as in PyTorch's DDP).
//!
//! The slices are made on the first device. On the CPU backends every "device" is the same
//! memory, so that costs nothing; multi-GPU training goes through CUDA's DDP instead (the
//! `cuda` feature), which is why `--devices N` on a GPU backend is refused here.
//!
//! What differs from one device: each device draws its own dropout masks, and batch norm
//! normalises by the statistics of its slice, not the global batch (PyTorch's DDP does the same
//! unless `SyncBatchNorm` is asked for).

use crate::nodes::NodeGroup;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A training loader dealt out to `parts` devices, one slice each per step (see the module doc).
pub struct Sharded<B: Backend, O> {
    hub: Arc<Hub<B, O>>,
    /// The part this loader is: 0 drives, pulling each step's slices and queueing the others'.
    part: usize,
}

struct Hub<B: Backend, O> {
    /// The loader of slices (batches of B/N), one shuffled order for all parts.
    slices: Arc<dyn DataLoader<B, O>>,
    parts: usize,
    /// Steps in an epoch: the full global batches.
    steps: usize,
    /// The slices of the current step that parts 1..N have not taken yet.
    waiting: Mutex<Vec<VecDeque<O>>>,
}

impl<B: Backend, O: Send + 'static> Sharded<B, O> {
    /// `slices` (batches of `global_batch / parts` examples), dealt out to `parts` devices.
    /// Burn's learner splits it into the parts with [`DataLoader::slice`].
    pub fn deal(
        slices: Arc<dyn DataLoader<B, O>>,
        parts: usize,
        global_batch: usize,
    ) -> Arc<dyn DataLoader<B, O>> {
        let waiting = Mutex::new((0..parts).map(|_| VecDeque::new()).collect());
        let steps = steps_per_epoch(slices.num_items(), global_batch, parts);
        let hub = Arc::new(Hub {
            slices,
            parts,
            steps,
            waiting,
        });
        Arc::new(Self { hub, part: 0 })
    }
}

impl<B: Backend, O: Send + 'static> DataLoader<B, O> for Sharded<B, O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        if self.part == 0 {
            // A new epoch: a new pass over the order (the inner loader shuffles it).
            self.hub
                .waiting
                .lock()
                .expect("shard queues")
                .iter_mut()
                .for_each(VecDeque::clear);
            Box::new(Driver {
                hub: &self.hub,
                inner: self.hub.slices.iter(),
                steps: 0,
            })
        } else {
            Box::new(Follower {
                hub: &self.hub,
                part: self.part,
            })
        }
    }

    fn num_items(&self) -> usize {
        self.hub.slices.num_items()
    }

    /// The data stays where the slices are made (see the module doc).
    fn to_device(&self, _device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            hub: self.hub.clone(),
            part: self.part,
        })
    }

    /// Burn's `split_dataloader` asks for part i as the items `i·(n/N)..`: the part is read
    /// off the start. Whatever range is asked, the part deals slices, not a range of items.
    fn slice(&self, start: usize, _end: usize) -> Arc<dyn DataLoader<B, O>> {
        let per_part = (self.num_items() / self.hub.parts).max(1);
        Arc::new(Self {
            hub: self.hub.clone(),
            part: (start / per_part).min(self.hub.parts - 1),
        })
    }
}

/// Part 0's pass: pulls the N slices of each step, keeps the first, queues the rest.
struct Driver<'a, B: Backend, O> {
    hub: &'a Hub<B, O>,
    inner: Box<dyn DataLoaderIterator<O> + 'a>,
    /// Steps dealt so far this epoch.
    steps: usize,
}

impl<B: Backend, O> Iterator for Driver<'_, B, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        if self.steps == self.hub.steps {
            // The rest of the epoch is made and dropped, as a resumed run's replay makes it, so
            // a batcher's random draws (augmentation) stay in step with an uninterrupted run.
            self.inner.by_ref().for_each(drop);
            return None;
        }
        let mut step: Vec<O> = self.inner.by_ref().take(self.hub.parts).collect();
        if step.len() < self.hub.parts {
            return None;
        }
        self.steps += 1;
        let mine = step.remove(0);
        let mut waiting = self.hub.waiting.lock().expect("shard queues");
        for (queue, slice) in waiting.iter_mut().skip(1).zip(step) {
            queue.push_back(slice);
        }
        Some(mine)
    }
}

impl<B: Backend, O> DataLoaderIterator<O> for Driver<'_, B, O> {
    /// The whole epoch's progress: the followers report none, and Burn adds the parts up.
    fn progress(&self) -> Progress {
        self.inner.progress()
    }
}

/// Part i's pass (i > 0): the slices part 0 queued for it. Burn asks the parts in order within a
/// step, so part 0 has always pulled the step before part i asks.
struct Follower<'a, B: Backend, O> {
    hub: &'a Hub<B, O>,
    part: usize,
}

impl<B: Backend, O> Iterator for Follower<'_, B, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        self.hub.waiting.lock().expect("shard queues")[self.part].pop_front()
    }
}

impl<B: Backend, O> DataLoaderIterator<O> for Follower<'_, B, O> {
    fn progress(&self) -> Progress {
        Progress::new(0, 0)
    }
}

/// One process's part of a multi-process run's training loader ([`crate::nodes`]): every rank
/// makes the same slices in the same order, and rank r of N keeps slice N·t + r of step t.
///
/// Each rank makes every slice, not just its own: the batchers' random draws (augmentation) are
/// sequential, so only this keeps each slice the one a one-process run with the global batch
/// would make. Making a batch costs a small part of training on it.
pub struct NodeShard<B: Backend, O> {
    slices: Arc<dyn DataLoader<B, O>>,
    ranks: usize,
    rank: usize,
    steps: usize,
}

impl<B: Backend, O: Send + 'static> NodeShard<B, O> {
    /// Rank `rank`'s part of `slices` (batches of `global_batch / ranks` examples).
    pub fn of(
        slices: Arc<dyn DataLoader<B, O>>,
        ranks: usize,
        rank: usize,
        global_batch: usize,
    ) -> Arc<dyn DataLoader<B, O>> {
        let steps = steps_per_epoch(slices.num_items(), global_batch, ranks);
        Arc::new(Self {
            slices,
            ranks,
            rank,
            steps,
        })
    }
}

impl<B: Backend, O: Send + 'static> DataLoader<B, O> for NodeShard<B, O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        Box::new(ShardPass {
            shard: self,
            inner: self.slices.iter(),
            steps: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.slices.num_items()
    }

    /// The slices are made where the shard was built (see [`Sharded`]).
    fn to_device(&self, _device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            slices: self.slices.clone(),
            ..*self
        })
    }

    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<B, O>> {
        self.to_device(&Default::default())
    }
}

/// A pass of a [`NodeShard`]: pulls the N slices of each step and keeps its rank's.
struct ShardPass<'a, B: Backend, O> {
    shard: &'a NodeShard<B, O>,
    inner: Box<dyn DataLoaderIterator<O> + 'a>,
    steps: usize,
}

impl<B: Backend, O> Iterator for ShardPass<'_, B, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        if self.steps == self.shard.steps {
            // As in `Driver`: the rest is made and dropped, to keep the batcher's draws in step.
            self.inner.by_ref().for_each(drop);
            return None;
        }
        let step: Vec<O> = self.inner.by_ref().take(self.shard.ranks).collect();
        if step.len() < self.shard.ranks {
            return None;
        }
        self.steps += 1;
        step.into_iter().nth(self.shard.rank)
    }
}

impl<B: Backend, O> DataLoaderIterator<O> for ShardPass<'_, B, O> {
    fn progress(&self) -> Progress {
        self.inner.progress()
    }
}

/// Optimiser steps in an epoch of `items` examples in global batches of `batch` on `devices`
/// devices: every batch on one device, the last one short; only the full ones on several, whose
/// slices must be equal (see the module doc). The schedule and [`Sharded`] both count with it.
pub fn steps_per_epoch(items: usize, batch: usize, devices: usize) -> usize {
    let batch = batch.max(1);
    match devices {
        0 | 1 => items.div_ceil(batch),
        _ => items / batch,
    }
}

/// An optimiser that steps on the mean of the devices' gradients: Burn's multi-device strategy
/// hands it their sum. Its record is the inner optimiser's, so checkpoints do not depend on the
/// number of devices (a run can resume on another count).
///
/// In a multi-process run it also averages over the processes ([`NodeGroup::average`]) before
/// the step, so every rank steps on the mean gradient of the whole global batch.
#[derive(Clone)]
pub struct MeanOverDevices<O> {
    inner: O,
    devices: usize,
    nodes: Option<Arc<NodeGroup>>,
}

impl<O> MeanOverDevices<O> {
    /// `inner`, fed the mean over `devices` of the gradients it is given summed.
    pub fn new(inner: O, devices: usize) -> Self {
        Self {
            inner,
            devices: devices.max(1),
            nodes: None,
        }
    }

    /// The same, averaging over the processes of `nodes` too.
    pub fn across(self, nodes: Option<Arc<NodeGroup>>) -> Self {
        Self { nodes, ..self }
    }
}

impl<M, B, O> Optimizer<M, B> for MeanOverDevices<O>
where
    M: AutodiffModule<B>,
    B: AutodiffBackend,
    O: Optimizer<M, B>,
{
    type Record = O::Record;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let mut grads = mean_of_sum(&module, grads, self.devices);
        if let Some(nodes) = &self.nodes {
            // The Learner calls this with no way to return an error: a failed call ends the
            // process with its one-line error (checkpoints already written stay).
            grads = nodes
                .average(&module, grads)
                .unwrap_or_else(|e| crate::nodes::exit_with(&crate::cli::one_line(&e)));
        }
        self.inner.step(lr, module, grads)
    }

    fn step_multi(&mut self, lr: f64, module: M, mut grads: MultiGradientsParams) -> M {
        grads.grads = std::mem::take(&mut grads.grads)
            .into_iter()
            .map(|(g, device)| (mean_of_sum(&module, g, self.devices), device))
            .collect();
        self.inner.step_multi(lr, module, grads)
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            inner: self.inner.load_record(record),
            devices: self.devices,
            nodes: self.nodes,
        }
    }
}

/// `grads`, summed over `devices`, divided by `devices`: every parameter of `module`'s.
fn mean_of_sum<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    devices: usize,
) -> GradientsParams {
    if devices > 1 {
        let factor = 1.0 / devices as f64;
        module.visit(&mut Scale {
            grads: &mut grads,
            factor,
        });
    }
    grads
}

/// Multiplies the gradient of every parameter it visits by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::{FitOptions, fit};
    use crate::schedule::ScheduleConfig;
    use burn::backend::Autodiff;
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::data::dataset::InMemDataset;
    use burn::module::Module;
    use burn::optim::SgdConfig;
    use pdl_datasets::batcher::ImageBatcher;
    use pdl_datasets::mnist::ImageItem;
    use pdl_models::{Mlp, MlpConfig};

    /// `count` images of 4x4 pixels in three classes, the class shifting the pixels' level.
    fn images(count: usize) -> Vec<ImageItem> {
        let mut state = 17u64;
        (0..count)
            .map(|i| {
                let label = (i % 3) as u8;
                let pixels = (0..16)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((state >> 57) as u8).wrapping_add(60 * label)
                    })
                    .collect();
                ImageItem {
                    pixels,
                    height: 4,
                    width: 4,
                    label,
                }
            })
            .collect()
    }

    fn loader<Q: Backend>(
        data: &[ImageItem],
        batch: usize,
    ) -> Arc<dyn DataLoader<Q, pdl_datasets::batcher::ImageBatch<Q>>> {
        DataLoaderBuilder::new(ImageBatcher::new(0.5, 0.25))
            .batch_size(batch)
            .shuffle(3)
            .build(InMemDataset::new(data.to_vec()))
    }

    fn mlp<Q: Backend>(device: &Q::Device) -> Mlp<Q> {
        pdl_models::seeded::<Q, _>(device, 7, |d| {
            MlpConfig::new(16, vec![8], 3).with_dropout(0.0).init(d)
        })
    }

    /// Trains a 16-8-3 MLP without dropout on backend `Q` for two epochs of global batches of
    /// `batch` on `devices` devices, with SGD (whose step is proportional to the gradient, so a
    /// sum where a mean belongs would show) and a warm-up-cosine schedule: the start and the end.
    fn train<Q: Backend>(devices: usize, batch: usize) -> (Vec<f32>, Vec<f32>) {
        let dir = tempfile::tempdir().unwrap();
        let device = Q::Device::default();
        let data = images(96);
        let schedule = ScheduleConfig::WarmupCosine {
            warmup_fraction: 0.2,
            min_lr_fraction: 0.1,
        }
        .init_for_epochs(0.5, data.len(), batch, devices, 2);
        let options = FitOptions {
            num_epochs: 2,
            batch_size: batch,
            early_stopping_patience: 0,
            resume_from: None,
            plain: true,
            restore_best: false,
            nodes: None,
        };
        let fitted = fit(
            dir.path(),
            mlp::<Autodiff<Q>>(&device),
            SgdConfig::new().init(),
            schedule,
            loader::<Autodiff<Q>>(&data, batch / devices),
            loader::<Q>(&data, 32),
            vec![device.clone(); devices],
            &options,
        )
        .unwrap();
        (parameters(&mlp::<Q>(&device)), parameters(&fitted.model))
    }

    /// Every weight of `model`, in its fields' order.
    fn parameters<Q: Backend>(model: &Mlp<Q>) -> Vec<f32> {
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

    fn furthest_apart(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Two devices with a global batch of 32 (slices of 16) end where one device with batches of
    /// 32 does, on both CPU backends.
    fn two_devices_equal_one<Q: Backend>() {
        let (start, one) = train::<Q>(1, 32);
        let (_, two) = train::<Q>(2, 32);
        let moved = furthest_apart(&start, &one);
        assert!(moved > 0.05, "training hardly moved the weights: {moved}");
        let apart = furthest_apart(&one, &two);
        // Two slices sum their gradients in another order than one batch: CI measured 2.6e-5
        // on ndarray (1fcda0c), against moves of more than 0.05.
        assert!(apart < 1e-4, "one device and two differ by up to {apart}");
    }

    #[test]
    fn two_devices_take_the_steps_of_one_device_with_the_whole_batch() {
        two_devices_equal_one::<burn::backend::Flex>();
        two_devices_equal_one::<burn::backend::NdArray>();
    }

    #[test]
    fn an_epoch_takes_the_full_global_batches_in_equal_slices() {
        // 120 examples in global batches of 32 on two devices: three steps of two slices of 16;
        // the last 24 examples would make slices of 16 and 8, which do not average evenly.
        type Q = burn::backend::NdArray;
        let whole = Sharded::deal(loader::<Q>(&images(120), 16), 2, 32);
        let parts = [whole.slice(0, 60), whole.slice(60, 120)];
        for _epoch in 0..2 {
            let mut passes: Vec<_> = parts.iter().map(|p| p.iter()).collect();
            let mut steps = 0;
            while let Some(first) = passes[0].next() {
                let second = passes[1].next().expect("part 1 has a slice for every step");
                assert_eq!((first.targets.dims(), second.targets.dims()), ([16], [16]));
                steps += 1;
            }
            assert_eq!(steps, 3);
            assert!(passes[1].next().is_none());
        }
    }
}

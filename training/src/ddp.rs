//! Several NVIDIA GPUs in one process: `--devices N --backend cuda` trains on burn-train's
//! distributed data parallel strategy (DDP), in a build with the `ddp` feature (a CUDA-only
//! build: `cargo build --release -p pdl-training --no-default-features --features ddp`, which
//! `cargo xtask` picks for `--backend cuda --devices N`; burn-autodiff 0.21's `distributed`
//! feature leaves the CPU backends without autodiff).
//!
//! On the CPU backends `--devices N` runs Burn's multi-device strategy, which sums the devices'
//! gradients on the first device and steps there ([`crate::parallel`]). On GPUs that would carry
//! every gradient through one card. burn-train 0.21's DDP instead runs one worker thread per GPU,
//! each with its own copy of the model, optimiser and schedule; the backward pass hands every
//! finished gradient to the backend, which all-reduces it across the GPUs (NCCL on CUDA) while
//! the rest of the backward pass runs, and each worker then takes the same optimiser step on the
//! same mean gradient, so the copies stay equal. That is PyTorch's `DistributedDataParallel`
//! within one machine. Burn implements the backend side (`DistributedBackend`) for CUDA only in
//! 0.21, so here DDP means `--backend cuda`; across processes and machines see
//! [`crate::nodes`].
//!
//! What this module adds to Burn's strategy, so that `--devices N` means what it means on the
//! CPU (the global batch is `--batch-size`, the step is its mean gradient):
//!
//! - The mean: the all-reduce is asked for [`ReduceOperation::Mean`], and the optimiser does not
//!   divide again.
//! - Equal steps: Burn gives GPU i the i-th contiguous range of the examples (its
//!   `split_dataloader`), each shuffled on its own every epoch, in slices of B/N. The last range
//!   takes the remainder and can hold one slice more; a GPU that took a step its peers do not
//!   would wait for them forever, so [`EqualSteps`] stops every range after the
//!   ⌊examples / B⌋ full global batches, as the CPU path does. Unlike PyTorch's
//!   `DistributedSampler`, the ranges stay the same every epoch (Burn's split).
//! - The schedule: each worker asks its scheduler for the rate N times per step (Burn counts the
//!   iterations of all GPUs), so the schedule moves once every N asks
//!   ([`crate::schedule::Schedule::asked_per_step`]).
//!
//! The strategy needs `B: DistributedBackend`, a bound the generic pipelines do not carry (and
//! cannot: the CPU backends lack it). [`strategy`] therefore picks it by the backend's type at
//! run time: for `Autodiff<Cuda>` it builds DDP, for every other backend it returns `None` and the
//! caller runs the CPU path.

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use burn::train::ExecutionStrategy;
use std::sync::Arc;

/// burn-train's DDP over `devices` when `B` is the CUDA backend of a build with the `ddp` feature
/// (all-reducing the mean), `None` for any other backend or build.
pub fn strategy<B: Backend>(devices: &[B::Device]) -> Option<ExecutionStrategy<B>> {
    #[cfg(feature = "ddp")]
    {
        use burn::backend::{Autodiff, Cuda};
        use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
        use std::any::Any;
        type Gpu = Autodiff<Cuda>;
        let devices: Box<dyn Any> = Box::new(devices.to_vec());
        let devices = devices
            .downcast::<Vec<burn::backend::cuda::CudaDevice>>()
            .ok()?;
        let config = DistributedConfig {
            all_reduce_op: ReduceOperation::Mean,
        };
        let ddp: Box<dyn Any> = Box::new(ExecutionStrategy::<Gpu>::ddp(*devices, config));
        ddp.downcast::<ExecutionStrategy<B>>().ok().map(|ddp| *ddp)
    }
    #[cfg(not(feature = "ddp"))]
    {
        let _ = devices;
        None
    }
}

/// A training loader of slices (batches of B/N) whose every part, as Burn splits it among the
/// devices, yields the same number of full slices: ⌊examples / B⌋ per epoch (see the module doc).
pub struct EqualSteps<B: Backend, O> {
    inner: Arc<dyn DataLoader<B, O>>,
    /// Full global batches in the whole loader: each part yields this many slices.
    steps: usize,
}

impl<B: Backend, O: 'static> EqualSteps<B, O> {
    /// `slices` (batches of `global_batch / parts`), every part cut to the full global batches.
    pub fn of(
        slices: Arc<dyn DataLoader<B, O>>,
        parts: usize,
        global_batch: usize,
    ) -> Arc<dyn DataLoader<B, O>> {
        let steps = crate::parallel::steps_per_epoch(slices.num_items(), global_batch, parts);
        Arc::new(Self {
            inner: slices,
            steps,
        })
    }

    fn around(&self, inner: Arc<dyn DataLoader<B, O>>) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            inner,
            steps: self.steps,
        })
    }
}

impl<B: Backend, O: 'static> DataLoader<B, O> for EqualSteps<B, O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        Box::new(Capped {
            inner: self.inner.iter(),
            left: self.steps,
        })
    }

    fn num_items(&self) -> usize {
        self.inner.num_items()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        self.around(self.inner.to_device(device))
    }

    /// A part holds at least ⌊examples / N⌋ examples, which is `steps` full slices or more.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, O>> {
        self.around(self.inner.slice(start, end))
    }
}

/// An epoch of a part: its first `left` slices, then the rest made and dropped (a batcher's
/// random draws stay in step with the next epoch's, as in [`crate::parallel::Sharded`]).
struct Capped<'a, O> {
    inner: Box<dyn DataLoaderIterator<O> + 'a>,
    left: usize,
}

impl<O> Iterator for Capped<'_, O> {
    type Item = O;

    fn next(&mut self) -> Option<O> {
        if self.left == 0 {
            self.inner.by_ref().for_each(drop);
            return None;
        }
        self.left -= 1;
        self.inner.next()
    }
}

impl<O> DataLoaderIterator<O> for Capped<'_, O> {
    fn progress(&self) -> Progress {
        self.inner.progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataloader::split::split_dataloader;
    use burn::data::dataset::InMemDataset;

    #[derive(Clone)]
    struct Items;

    impl Batcher<Flex, usize, Vec<usize>> for Items {
        fn batch(&self, items: Vec<usize>, _device: &burn::tensor::Device<Flex>) -> Vec<usize> {
            items
        }
    }

    #[test]
    fn every_gpu_takes_the_full_global_batches_and_no_example_twice() {
        // 203 examples, global batch 20 on 3 devices is refused upstream (20 % 3); take 21:
        // slices of 7, ⌊203 / 21⌋ = 9 steps. Burn's split gives ranges of 67, 67 and 69.
        let slices = DataLoaderBuilder::new(Items)
            .batch_size(7)
            .shuffle(3)
            .build(InMemDataset::new((0..203).collect()));
        let loader = EqualSteps::of(slices, 3, 21);
        let devices = vec![Default::default(); 3];
        for _epoch in 0..2 {
            let mut seen = Vec::new();
            for part in split_dataloader(loader.clone(), &devices) {
                let batches: Vec<Vec<usize>> = part.iter().collect();
                assert_eq!(batches.len(), 9);
                assert!(batches.iter().all(|b| b.len() == 7));
                seen.extend(batches.into_iter().flatten());
            }
            let count = seen.len();
            seen.sort();
            seen.dedup();
            assert_eq!((count, seen.len()), (189, 189));
        }
    }

    #[test]
    fn no_backend_but_cuda_gets_ddp() {
        assert!(strategy::<burn::backend::Autodiff<Flex>>(&[Default::default(); 2]).is_none());
    }
}

//! The one place that knows which backends the `pdl` binary runs: the only `#[cfg(feature = ...)]`
//! ladder of the training crate (`pdl-kernels` has the other, its fast paths per backend).
//!
//! Cargo features compile backends in (`flex`, `ndarray`, `wgpu`, `cuda`); `--backend` picks one
//! of them at run time. The default CPU backend is `flex`, the one that measures fastest across
//! the course here: the README's "Which CPU backend is the default, and why" has the figures,
//! made by `pdl bench`.

use anyhow::{Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use std::fmt;

/// A backend `pdl` knows about, compiled in or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend `burn-flex` (feature `flex`).
    Flex,
    /// The `ndarray` CPU backend (feature `ndarray`).
    NdArray,
    /// GPUs through wgpu: Vulkan, Metal, DirectX 12 (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`; builds without a GPU or the CUDA toolkit, and
    /// loads the driver at run time).
    Cuda,
}

impl BackendKind {
    /// Every backend, in the order `pdl` prefers them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Flex,
        BackendKind::NdArray,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    /// The name used on the command line and in `metrics.json`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this build has the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// True for the CPU backends.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::NdArray)
    }

    /// The backends this build has.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The fastest compiled CPU backend (flex, then ndarray), else whatever is compiled.
    pub fn default_compiled() -> Result<BackendKind> {
        let compiled = Self::compiled();
        compiled
            .iter()
            .copied()
            .find(|b| b.is_cpu())
            .or_else(|| compiled.first().copied())
            .ok_or_else(|| {
                anyhow!("no backend is compiled in: enable a feature (flex, ndarray, wgpu, cuda)")
            })
    }

    /// Parses a `--backend` value; a known backend that is not compiled in is an error naming the
    /// feature to enable.
    pub fn parse(name: &str) -> Result<BackendKind> {
        let kind = Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                anyhow!(
                    "unknown backend '{name}': choose one of {}",
                    Self::ALL.map(|b| b.name()).join(", ")
                )
            })?;
        if !kind.is_compiled() {
            return Err(not_compiled(kind));
        }
        Ok(kind)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn not_compiled(kind: BackendKind) -> anyhow::Error {
    let name = kind.name();
    anyhow!(
        "backend '{name}' is not compiled into this binary: rebuild with `--features {name}` \
         (`cargo xtask train <experiment> --backend {name}` does this)"
    )
}

/// Work that is generic over the training backend: [`run_on`] picks the concrete type.
pub trait BackendTask {
    /// What the work returns.
    type Output;

    /// Runs on `devices` (one or more, the first is the main device) of backend `B`.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Which devices to train on: `--devices 2` or `--devices 0,1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first `n` devices (the default device when `n` is 1).
    Count(usize),
    /// These device indices.
    List(Vec<usize>),
}

impl DeviceSpec {
    /// Parses `N` or `I,J,...`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            || anyhow!("--devices takes a count (2) or a list of indices (0,1), got '{text}'");
        let spec = if text.contains(',') {
            let list = text
                .split(',')
                .map(|p| p.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad())?;
            DeviceSpec::List(list)
        } else {
            DeviceSpec::Count(text.trim().parse().map_err(|_| bad())?)
        };
        if spec.is_empty() {
            bail!("--devices must name at least one device");
        }
        Ok(spec)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        match self {
            DeviceSpec::Count(n) => *n,
            DeviceSpec::List(l) => l.len(),
        }
    }

    /// True when no device is named.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `task` on the `devices` of the backend `kind`, wrapped in `Autodiff`.
///
/// CPU backends have one device; asking for several gives that many copies of it, so the
/// Learner's multi-device strategy runs data-parallel on CPU threads (see [`crate::parallel`]).
pub fn run_on<T: BackendTask>(
    kind: BackendKind,
    devices: &DeviceSpec,
    task: T,
) -> Result<T::Output> {
    let num_devices = devices.len();
    if num_devices == 0 {
        bail!("--devices must be at least 1");
    }
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            use burn::backend::{Autodiff, Flex, flex::FlexDevice};
            Ok(task.run::<Autodiff<Flex>>(vec![FlexDevice; num_devices]))
        }
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => {
            use burn::backend::{Autodiff, NdArray, ndarray::NdArrayDevice};
            Ok(task.run::<Autodiff<NdArray>>(vec![NdArrayDevice::Cpu; num_devices]))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            use burn::backend::{Autodiff, Wgpu, wgpu::WgpuDevice};
            let devices: Vec<WgpuDevice> = match devices {
                DeviceSpec::Count(1) => vec![WgpuDevice::DefaultDevice],
                DeviceSpec::Count(n) => (0..*n).map(WgpuDevice::DiscreteGpu).collect(),
                DeviceSpec::List(l) => l.iter().map(|&i| WgpuDevice::DiscreteGpu(i)).collect(),
            };
            for device in &devices {
                probe::<Wgpu>(device, WGPU_HELP)?;
            }
            Ok(task.run::<Autodiff<Wgpu>>(devices))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            use burn::backend::{Autodiff, Cuda, cuda::CudaDevice};
            let devices: Vec<CudaDevice> = match devices {
                DeviceSpec::Count(n) => (0..*n).map(|index| CudaDevice { index }).collect(),
                DeviceSpec::List(l) => l.iter().map(|&index| CudaDevice { index }).collect(),
            };
            for device in &devices {
                probe::<Cuda>(device, CUDA_HELP)?;
            }
            Ok(task.run::<Autodiff<Cuda>>(devices))
        }
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(other)),
    }
}

#[cfg(feature = "wgpu")]
const WGPU_HELP: &str = "no wgpu adapter found: install a GPU driver with Vulkan support (on a \
     machine without a GPU: `apt-get install mesa-vulkan-drivers libvulkan1` for software Vulkan), \
     or use --backend flex";

#[cfg(feature = "cuda")]
const CUDA_HELP: &str = "no CUDA device found: this backend needs an NVIDIA GPU and its driver \
     (libcuda); use --backend wgpu or --backend flex";

/// Creates a tensor on a GPU device in a thread of its own, turning the backend's panic when no
/// adapter or driver exists into an error a person can act on.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe<B: burn::tensor::backend::Backend>(device: &B::Device, help: &str) -> Result<()> {
    use burn::tensor::Tensor;
    let device = device.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe =
        std::thread::spawn(move || Tensor::<B, 1>::ones([4], &device).sum().into_scalar()).join();
    std::panic::set_hook(previous);
    match probe {
        Ok(_) => Ok(()),
        Err(_) => bail!("{help}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_lists_the_known_ones() {
        let msg = BackendKind::parse("tpu").unwrap_err().to_string();
        assert!(msg.contains("flex, ndarray, wgpu"), "{msg}");
    }

    #[test]
    fn backend_not_compiled_names_its_feature() {
        for kind in BackendKind::ALL.into_iter().filter(|b| !b.is_compiled()) {
            let msg = BackendKind::parse(kind.name()).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("--features {}", kind.name())),
                "{msg}"
            );
        }
    }

    #[test]
    fn devices_parse_as_count_or_list() {
        assert_eq!(DeviceSpec::parse("2").unwrap(), DeviceSpec::Count(2));
        assert_eq!(
            DeviceSpec::parse("0,1").unwrap(),
            DeviceSpec::List(vec![0, 1])
        );
        assert!(DeviceSpec::parse("0").is_err());
        assert!(DeviceSpec::parse("two").is_err());
        assert!(DeviceSpec::parse("0,x").is_err());
    }

    #[test]
    fn default_is_a_compiled_cpu_backend() {
        let kind = BackendKind::default_compiled().unwrap();
        assert!(kind.is_compiled() && kind.is_cpu());
    }
}

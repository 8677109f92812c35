//! Choosing a Burn backend at run time and running generic code on it.

use anyhow::{bail, Result};
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use clap::ValueEnum;
use qzhou_core::KernelBackend;

/// Compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Burn's Flex CPU backend (gemm + SIMD + rayon).
    Cpu,
    /// Burn's wgpu backend (WGSL on Vulkan, Metal, DX12; lavapipe without a GPU).
    Wgpu,
    /// Burn's CUDA backend (needs a build with `--features cuda`).
    Cuda,
}

/// Floating-point type the model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float (every backend).
    F32,
    /// IEEE half (CUDA).
    F16,
    /// bfloat16 (CUDA).
    Bf16,
}

/// The inference commands' `--backend`, `--dtype` and `--device` flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ComputeArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Compute dtype (f16/bf16 on CUDA).
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// GPU index for wgpu/cuda.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

impl ComputeArgs {
    /// Run `job` on the chosen backend (see [`dispatch`]).
    pub fn dispatch<J: BackendJob>(self, job: J) -> Result<()> {
        dispatch(self.backend, self.dtype, self.device, job)
    }
}

/// Something to run on whichever backend is chosen.
pub trait BackendJob {
    /// Run on backend `B` with `device`.
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()>;
}

/// Dispatch `job` to the chosen backend and dtype.
pub fn dispatch<J: BackendJob>(
    kind: BackendKind,
    dtype: DTypeArg,
    device_index: usize,
    job: J,
) -> Result<()> {
    match (kind, dtype) {
        (BackendKind::Cpu, DTypeArg::F32) => job.run::<burn::backend::Flex>(Default::default()),
        (BackendKind::Cpu, d) => bail!("the CPU backend computes in f32 only (asked for {d:?})"),
        (BackendKind::Wgpu, DTypeArg::F32) => {
            #[cfg(feature = "wgpu")]
            {
                let device = if device_index == 0 {
                    burn::backend::wgpu::WgpuDevice::DefaultDevice
                } else {
                    burn::backend::wgpu::WgpuDevice::DiscreteGpu(device_index)
                };
                job.run::<burn::backend::Wgpu>(device)
            }
            #[cfg(not(feature = "wgpu"))]
            bail!("this qzhou was built without the wgpu backend (cargo feature `wgpu`)")
        }
        (BackendKind::Wgpu, d) => {
            bail!("the wgpu backend computes in f32 only here (asked for {d:?}; WGSL has no bf16)")
        }
        (BackendKind::Cuda, d) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::{Cuda, CudaDevice};
                let device = CudaDevice::new(device_index);
                match d {
                    DTypeArg::F32 => job.run::<Cuda<f32>>(device),
                    DTypeArg::F16 => job.run::<Cuda<half::f16>>(device),
                    DTypeArg::Bf16 => job.run::<Cuda<half::bf16>>(device),
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (d, device_index);
                bail!("this qzhou was built without CUDA; rebuild with `cargo build --release -p qzhou-cli --features cuda`")
            }
        }
    }
}

/// Something to run on whichever backend is chosen, with automatic differentiation.
pub trait AutodiffJob {
    /// Run on `Autodiff<backend>` with `devices` (at least one; the first is the main one).
    fn run<B>(self, devices: Vec<B::Device>) -> Result<()>
    where
        B: AutodiffBackend + KernelBackend,
        B::InnerBackend: KernelBackend;
}

/// Dispatch a training `job` to the chosen backend and dtype, wrapped in Burn's `Autodiff`
/// (with its balanced gradient checkpointing when `checkpointing`: memory-bound operations are
/// recomputed in the backward pass instead of kept), on the GPUs `device_indices`.
pub fn dispatch_autodiff<J: AutodiffJob>(
    kind: BackendKind,
    dtype: DTypeArg,
    device_indices: &[usize],
    checkpointing: bool,
    job: J,
) -> Result<()> {
    if checkpointing {
        dispatch_with::<J, BalancedCheckpointing>(kind, dtype, device_indices, job)
    } else {
        dispatch_with::<J, NoCheckpointing>(kind, dtype, device_indices, job)
    }
}

fn dispatch_with<J: AutodiffJob, C: CheckpointStrategy>(
    kind: BackendKind,
    dtype: DTypeArg,
    device_indices: &[usize],
    job: J,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if device_indices.is_empty() || !device_indices.iter().all(|d| seen.insert(*d)) {
        bail!("--devices must list distinct GPU indices, e.g. 0,1");
    }
    match (kind, dtype) {
        (BackendKind::Cpu, DTypeArg::F32) => {
            if device_indices != [0] {
                bail!("the CPU backend is one device (it uses every core); drop --devices");
            }
            job.run::<Autodiff<burn::backend::Flex, C>>(vec![Default::default()])
        }
        (BackendKind::Cpu, d) => bail!("the CPU backend trains in f32 only (asked for {d:?})"),
        (BackendKind::Wgpu, DTypeArg::F32) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let devices = device_indices
                    .iter()
                    .map(|&i| match (i, device_indices.len()) {
                        (0, 1) => WgpuDevice::DefaultDevice,
                        (i, _) => WgpuDevice::DiscreteGpu(i),
                    })
                    .collect();
                job.run::<Autodiff<burn::backend::Wgpu, C>>(devices)
            }
            #[cfg(not(feature = "wgpu"))]
            bail!("this qzhou was built without the wgpu backend (cargo feature `wgpu`)")
        }
        (BackendKind::Wgpu, d) => bail!("the wgpu backend trains in f32 only (asked for {d:?})"),
        (BackendKind::Cuda, d) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::{Cuda, CudaDevice};
                let devices = device_indices.iter().map(|&i| CudaDevice::new(i)).collect();
                match d {
                    DTypeArg::F32 => job.run::<Autodiff<Cuda<f32>, C>>(devices),
                    DTypeArg::Bf16 => job.run::<Autodiff<Cuda<half::bf16>, C>>(devices),
                    DTypeArg::F16 => {
                        bail!("training in f16 overflows without loss scaling; use bf16 or f32")
                    }
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = d;
                bail!("this qzhou was built without CUDA; rebuild with `cargo build --release -p qzhou-cli --features cuda`")
            }
        }
    }
}

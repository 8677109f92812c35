//! Choosing a Burn backend at run time and running generic code on it.

use anyhow::{bail, Result};
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use clap::ValueEnum;
#[allow(unused_imports)]
use qzhou_core::backends;
use qzhou_core::{KernelBackend, MatmulKernel};

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

/// Burn's kernel fusion on a GPU backend: on, off, or the backend's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FusionArg {
    /// Fuse element-wise chains, reductions and matmul epilogues into generated kernels.
    On,
    /// One kernel per tensor operation (and qzhou's WGSL kernels on wgpu).
    Off,
}

impl BackendKind {
    /// Whether Burn's kernel fusion is on when `--fusion` is not given. Off everywhere until
    /// a backend's parity run shows fusion both correct and faster there: on wgpu (lavapipe,
    /// CI) fused forward and training equal the plain backend (`tests/fusion_wgpu.rs`) but the
    /// plain backend keeps qzhou's WGSL kernels (fused q8/q4 matmul, mean pooling), which
    /// fusion replaces by generic ops; on CUDA fusion has not yet run (README "Backends").
    pub fn default_fusion(self) -> bool {
        false
    }

    /// `--fusion` resolved for this backend (CPU has no fusion: `on` is an error there).
    pub fn fusion(self, arg: Option<FusionArg>) -> Result<bool> {
        match (self, arg) {
            (_, None) => Ok(self.default_fusion()),
            (BackendKind::Cpu, Some(FusionArg::On)) => {
                bail!("--fusion on needs a GPU backend (wgpu or cuda); the CPU backend has no kernel fusion")
            }
            (_, Some(a)) => Ok(a == FusionArg::On),
        }
    }
}

/// The inference commands' `--backend`, `--dtype`, `--device`, `--fusion` and
/// `--matmul-kernel` flags.
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
    /// Burn's kernel fusion on wgpu/cuda (default: off; see README "Backends").
    #[arg(long, value_enum)]
    pub fusion: Option<FusionArg>,
    /// Which matmul runs the projections on wgpu (without fusion): `auto` (default: the
    /// fastest of Burn's matmul and qzhou's WGSL kernels per shape, measured on first use and
    /// kept in the kernel cache), `burn`, `row-tile` or `tiled`.
    #[arg(long, value_parser = str::parse::<MatmulKernel>)]
    pub matmul_kernel: Option<MatmulKernel>,
}

impl ComputeArgs {
    /// Run `job` on the chosen backend (see [`dispatch`]).
    pub fn dispatch<J: BackendJob>(self, job: J) -> Result<()> {
        let fusion = self.backend.fusion(self.fusion)?;
        if let Some(kernel) = self.matmul_kernel {
            if self.backend != BackendKind::Wgpu || fusion {
                bail!(
                    "--matmul-kernel {kernel} chooses among the wgpu backend's own kernels: it \
                     needs --backend wgpu without --fusion on"
                );
            }
        }
        let job = WithMatmulKernel {
            kernel: self.matmul_kernel,
            job,
        };
        dispatch(self.backend, self.dtype, self.device, fusion, job)
    }
}

/// A job run after choosing the backend's matmul ([`KernelBackend::use_matmul_kernel`]).
struct WithMatmulKernel<J> {
    kernel: Option<MatmulKernel>,
    job: J,
}

impl<J: BackendJob> BackendJob for WithMatmulKernel<J> {
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        if let Some(kernel) = self.kernel {
            B::use_matmul_kernel(kernel);
        }
        self.job.run::<B>(device)
    }
}

/// Something to run on whichever backend is chosen.
pub trait BackendJob {
    /// Run on backend `B` with `device`.
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()>;
}

/// Dispatch `job` to the chosen backend and dtype, under Burn's kernel fusion when `fusion`.
pub fn dispatch<J: BackendJob>(
    kind: BackendKind,
    dtype: DTypeArg,
    device_index: usize,
    fusion: bool,
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
                crate::kernel_cache::configure();
                if fusion {
                    job.run::<backends::WgpuFused>(device)
                } else {
                    job.run::<backends::Wgpu>(device)
                }
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
                use backends::{Cuda, CudaFused};
                crate::kernel_cache::configure();
                let device = burn::backend::cuda::CudaDevice::new(device_index);
                match (d, fusion) {
                    (DTypeArg::F32, false) => job.run::<Cuda<f32>>(device),
                    (DTypeArg::F16, false) => job.run::<Cuda<half::f16>>(device),
                    (DTypeArg::Bf16, false) => job.run::<Cuda<half::bf16>>(device),
                    (DTypeArg::F32, true) => job.run::<CudaFused<f32>>(device),
                    (DTypeArg::F16, true) => job.run::<CudaFused<half::f16>>(device),
                    (DTypeArg::Bf16, true) => job.run::<CudaFused<half::bf16>>(device),
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (d, device_index, fusion);
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

/// Dispatch a training `job` to the chosen backend, wrapped in Burn's `Autodiff` (with its
/// balanced gradient checkpointing when `checkpointing`: memory-bound operations are
/// recomputed in the backward pass instead of kept), on the GPUs `device_indices`, under
/// Burn's kernel fusion when `fusion`.
///
/// Training always runs on the backend's f32 type: bf16 (mixed or pure, the job's
/// [`qzhou_core::training::Precision`]) is a run-time dtype of the model's tensors, so the f32
/// master weights of mixed precision live beside the bf16 compute copy. `dtype` is checked
/// against what the backend can compute in (wgpu: f32 only); the caller has already turned it
/// into a precision (`qzhou train` refuses f16, which needs loss scaling).
pub fn dispatch_autodiff<J: AutodiffJob>(
    kind: BackendKind,
    dtype: DTypeArg,
    device_indices: &[usize],
    checkpointing: bool,
    fusion: bool,
    job: J,
) -> Result<()> {
    if (kind, dtype) == (BackendKind::Wgpu, DTypeArg::Bf16) {
        bail!("the wgpu backend trains in f32 only (WGSL has no bf16); use --dtype f32")
    }
    if checkpointing {
        dispatch_with::<J, BalancedCheckpointing>(kind, device_indices, fusion, job)
    } else {
        dispatch_with::<J, NoCheckpointing>(kind, device_indices, fusion, job)
    }
}

fn dispatch_with<J: AutodiffJob, C: CheckpointStrategy>(
    kind: BackendKind,
    device_indices: &[usize],
    fusion: bool,
    job: J,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if device_indices.is_empty() || !device_indices.iter().all(|d| seen.insert(*d)) {
        bail!("--devices must list distinct GPU indices, e.g. 0,1");
    }
    match kind {
        BackendKind::Cpu => {
            // One device, which uses every core; several indices run that many peers on it
            // (they share the cores: a way to try a data-parallel run without GPUs).
            let _ = fusion;
            job.run::<Autodiff<burn::backend::Flex, C>>(vec![
                Default::default();
                device_indices.len()
            ])
        }
        BackendKind::Wgpu => {
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
                crate::kernel_cache::configure();
                if fusion {
                    job.run::<Autodiff<backends::WgpuFused, C>>(devices)
                } else {
                    job.run::<Autodiff<backends::Wgpu, C>>(devices)
                }
            }
            #[cfg(not(feature = "wgpu"))]
            bail!("this qzhou was built without the wgpu backend (cargo feature `wgpu`)")
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::CudaDevice;
                let devices = device_indices.iter().map(|&i| CudaDevice::new(i)).collect();
                crate::kernel_cache::configure();
                if fusion {
                    job.run::<Autodiff<backends::CudaFused<f32>, C>>(devices)
                } else {
                    job.run::<Autodiff<backends::Cuda<f32>, C>>(devices)
                }
            }
            #[cfg(not(feature = "cuda"))]
            bail!("this qzhou was built without CUDA; rebuild with `cargo build --release -p qzhou-cli --features cuda`")
        }
    }
}

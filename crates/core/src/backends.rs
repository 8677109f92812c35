//! The Burn backend types qzhou runs on, named explicitly.
//!
//! Burn's `fusion` cargo feature turns `burn::backend::Wgpu` / `Cuda` / `WebGpu` into their
//! fused variants for the *whole build* as soon as any crate in it enables the feature. qzhou
//! compiles fusion in (for `--fusion on`) yet must keep the plain backends — the hand-written
//! WGSL kernels run only there, and fusion is used only where parity tests prove it — so every
//! crate names its backend through these aliases, whose meaning no feature changes.
//!
//! | alias | backend |
//! |---|---|
//! | [`Wgpu`] | burn-wgpu without fusion: Burn's kernels + the WGSL kernels of `shaders/` |
//! | [`WgpuFused`] | `Fusion<Wgpu>`: Burn's fusion engine (patched, `vendor/`) over the same runtime |
//! | [`Cuda`] | burn-cuda without fusion, float type `F` (f32, f16, bf16) |
//! | [`CudaFused`] | `Fusion<Cuda<F>>` |

/// burn-wgpu (Vulkan, Metal, DX12, WebGPU) without kernel fusion, f32.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;

/// burn-wgpu under Burn's kernel fusion.
#[cfg(all(feature = "wgpu", feature = "fusion"))]
pub type WgpuFused = burn_fusion::Fusion<Wgpu>;

/// burn-cuda without kernel fusion, computing in `F` by default.
#[cfg(feature = "cuda")]
pub type Cuda<F = f32> =
    burn_cubecl::CubeBackend<burn_cubecl::cubecl::cuda::CudaRuntime, F, i32, u8>;

/// burn-cuda under Burn's kernel fusion.
#[cfg(all(feature = "cuda", feature = "fusion"))]
pub type CudaFused<F = f32> = burn_fusion::Fusion<Cuda<F>>;

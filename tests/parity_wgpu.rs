//! Reference parity on Burn's wgpu backend (WGSL; in CI on Mesa lavapipe, software Vulkan):
//! every fixture embedding vs transformers, cos ≥ 0.99999 and max|Δ| ≤ 1e-4; batch invariance ≤ 1e-5.

mod common;

use burn::backend::wgpu::WgpuDevice;
use qzhou_core::backends::Wgpu;

#[test]
fn wgpu_matches_transformers_and_is_batch_invariant() {
    common::check_reference_parity::<Wgpu>(&WgpuDevice::DefaultDevice, 0.99999, 1e-4, "wgpu");
}

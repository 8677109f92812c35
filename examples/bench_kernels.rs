//! Kernel benchmark on Burn's wgpu backend: the hand-written WGSL kernels of `shaders/` against
//! the plain Burn ops they replace, at projection shapes of the browser benchmark model.
//!
//! `cargo run --release -p qzhou-cli --example bench_kernels -- [ITERS]`
//!
//! Prints one row per (operation, shape): milliseconds per call (best of ITERS after a
//! warm-up, each call synchronised by reading the result back) and GFLOP/s. The autotuned rows
//! run whichever candidate cubecl's autotune kept (`CUBECL_DEBUG_LOG=stderr` prints its
//! measurements).

use std::time::Instant;

use burn::backend::wgpu::WgpuDevice;
use burn::prelude::*;
use qzhou_core::backends::Wgpu;
use qzhou_core::kernels::{
    dense_matmul_kernel, quantized_matmul_kernel, reference_mean_pool, reference_quantized_matmul,
    KernelBackend, MatmulSchedule, QuantizedMatrix,
};
use qzhou_core::quantization::{quantize, PackedBlocks};
use qzhou_core::Quantization;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
        })
        .collect()
}

/// Best wall time (ms) of `iters` calls after one warm-up; each call reads its result back.
fn time<F: FnMut() -> Tensor<Wgpu, 2>>(iters: usize, mut f: F) -> f64 {
    let _ = f().into_data();
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            let _ = f().into_data();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ITERS must be a number"))
        .unwrap_or(5);
    let device = WgpuDevice::DefaultDevice;
    println!("| operation | m × k × n | ms/call | GFLOP/s |\n|---|---|---|---|");
    // (tokens, in, out): attention projection and MLP up/down of hidden 256 / intermediate 1024.
    for (m, k, n) in [(1024, 256, 256), (1024, 256, 1024), (1024, 1024, 256)] {
        let flop = 2.0 * (m * k * n) as f64;
        let x = Tensor::<Wgpu, 2>::from_data(TensorData::new(values(m * k, 1), [m, k]), &device);
        let w = values(n * k, 2);
        let dense =
            Tensor::<Wgpu, 2>::from_data(TensorData::new(w.clone(), [n, k]), &device).transpose();
        let row = |name: &str, ms: f64| {
            println!(
                "| {name} | {m} × {k} × {n} | {ms:.2} | {:.2} |",
                flop / ms / 1e6
            )
        };
        row(
            "Burn f32 matmul",
            time(iters, || x.clone().matmul(dense.clone())),
        );
        let k_major = dense.clone().into_data();
        let k_major = Tensor::<Wgpu, 2>::from_data(k_major, &device);
        for (layout, weight) in [
            ("weight [n, k] (loaded Linear)", &dense),
            ("weight [k, n] (k-major)", &k_major),
        ] {
            for (schedule, name) in [
                (MatmulSchedule::RowTile, "f32 WGSL row-tile kernel"),
                (MatmulSchedule::Tiled, "f32 WGSL tiled kernel"),
            ] {
                row(
                    &format!("{name}, {layout}"),
                    time(iters, || {
                        dense_matmul_kernel(x.clone(), weight, schedule)
                            .expect("a layout the kernel reads")
                    }),
                );
            }
        }
        // The backend's own choice under `MatmulKernel::Autotune` (measured on the warm-up call).
        row(
            "f32, autotuned (backend default)",
            time(iters, || Wgpu::dense_matmul(x.clone(), &dense)),
        );
        for scheme in [Quantization::Q8, Quantization::Q4, Quantization::Q4K] {
            let mut packed = PackedBlocks::new(scheme).unwrap();
            packed
                .extend_from_stored(&quantize(&w, scheme).unwrap(), n * k)
                .unwrap();
            let q = QuantizedMatrix::<Wgpu>::from_packed(&packed, n, k, &device).unwrap();
            row(
                &format!("{scheme} dequantise + Burn matmul"),
                time(iters, || reference_quantized_matmul(x.clone(), &q)),
            );
            for schedule in [MatmulSchedule::RowTile, MatmulSchedule::Tiled] {
                row(
                    &format!("{scheme} fused WGSL kernel, {schedule:?}"),
                    time(iters, || {
                        quantized_matmul_kernel(x.clone(), &q, schedule).expect("a shape it takes")
                    }),
                );
            }
            row(
                &format!("{scheme}, autotuned (backend default)"),
                time(iters, || Wgpu::quantized_matmul(x.clone(), &q)),
            );
        }
    }
    let (b, s, h) = (8, 128, 1024);
    let hidden =
        Tensor::<Wgpu, 3>::from_data(TensorData::new(values(b * s * h, 3), [b, s, h]), &device);
    let mask = Tensor::<Wgpu, 2, Int>::ones([b, s], &device);
    for (name, fused) in [
        ("mean pool + L2, Burn ops", false),
        ("mean pool + L2, WGSL", true),
    ] {
        let ms = time(iters, || {
            if fused {
                Wgpu::mean_pool(hidden.clone(), mask.clone(), true)
            } else {
                reference_mean_pool(hidden.clone(), mask.clone(), true)
            }
        });
        println!("| {name} | {b} × {s} × {h} | {ms:.2} | – |");
    }
}

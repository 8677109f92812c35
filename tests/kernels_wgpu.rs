//! The hand-written WGSL kernels of `shaders/` on Burn's wgpu backend (lavapipe in CI) against
//! the plain Burn ops they replace and against host math, plus the device-storage choices they
//! enable: q8/q4 weights kept packed on the GPU and weights split across buffers.

mod common;

use burn::backend::flex::FlexDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::Flex;
use burn::prelude::*;
use common::{assert_close, cosine, fixture, max_abs_diff, packed_model_files, Expected};
use qzhou_core::backends::Wgpu;
use qzhou_core::kernels::{
    dense_matmul_kernel, quantized_matmul_kernel, reference_mean_pool, reference_quantized_gather,
    reference_quantized_matmul, KernelBackend, MatmulSchedule, QuantizedMatrix, QuantizedRows,
};
use qzhou_core::model::{Projection, TokenEmbedding};
use qzhou_core::quantization::{quantize, quantize_scaled, scale_exponent, PackedBlocks};
use qzhou_core::{EmbedOptions, Embedder, LoadOptions, MatmulKernel, Quantization};

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
        })
        .collect()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `x [m, k] · Wᵀ` with `W [n, k]`, in f64.
fn host_matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                .sum();
            out[i * n + j] = dot as f32;
        }
    }
    out
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    max_abs_diff(got, want) / scale
}

#[test]
fn quantized_matmul_kernel_matches_plain_burn_ops_and_host_math() {
    let device = WgpuDevice::DefaultDevice;
    assert!(<Wgpu as KernelBackend>::has_fused_quantized_matmul());
    // Ragged sizes: m not a multiple of the 8-row tile or the 64-row block, n not a multiple
    // of 64 or 128 columns (n = 130, 7 and 70 are not multiples of 4 either: the tiled schedule
    // declines them). The 1e-5 cases have weights stored with a pack's scale exponent (f16
    // scales would be subnormal): they reach the device with a power of two per row.
    for (m, n, k, scale) in [
        (37, 130, 96, 0.1),
        (1, 7, 32, 0.1),
        (64, 64, 256, 0.1),
        (9, 70, 64, 1e-5),
        (37, 130, 384, 0.1),
        (13, 70, 128, 1e-5),
        (70, 132, 384, 0.1),
        (130, 260, 128, 1e-5),
        (1, 4, 32, 0.1),
    ] {
        let x = values(m * k, 1 + m as u64, 1.0);
        let w = values(n * k, 2 + n as u64, scale);
        // q4k needs k a multiple of its 128-value super-block.
        let schemes = [Quantization::Q8, Quantization::Q4, Quantization::Q4K];
        for scheme in schemes.into_iter().filter(|s| s.for_shape(&[n, k]) == *s) {
            let mut packed = PackedBlocks::new(scheme).unwrap();
            let exponent = scale_exponent(&w);
            packed
                .extend_from_stored_scaled(
                    &quantize_scaled(&w, scheme, exponent).unwrap(),
                    n * k,
                    exponent,
                )
                .unwrap();
            let want = host_matmul(&x, &packed.to_f32(), m, n, k);
            let what = format!("{scheme} m={m} n={n} k={k} weights ~{scale}");

            let weight = QuantizedMatrix::<Wgpu>::from_packed(&packed, n, k, &device).unwrap();
            let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
            let plain = host(reference_quantized_matmul(xt.clone(), &weight));
            for schedule in [MatmulSchedule::RowTile, MatmulSchedule::Tiled] {
                let what = format!("{what} {schedule:?}");
                let Some(fused) = quantized_matmul_kernel(xt.clone(), &weight, schedule) else {
                    assert!(
                        schedule == MatmulSchedule::Tiled && n % 4 != 0,
                        "{what}: the kernel declined a supported shape"
                    );
                    continue;
                };
                let fused = host(fused);
                assert!(
                    max_rel(&fused, &want) < 1e-5,
                    "{what}: kernel vs host {}",
                    max_rel(&fused, &want)
                );
                assert!(max_rel(&fused, &plain) < 1e-5, "{what}: kernel vs Burn ops");
            }
            // The backend's own choice is one of them.
            let chosen = host(Wgpu::quantized_matmul(xt, &weight));
            assert!(max_rel(&chosen, &want) < 1e-5, "{what}: backend vs host");

            // The plain-op path (what CPU and CUDA run) decodes the same blocks.
            let weight = QuantizedMatrix::<Flex>::from_packed(&packed, n, k, &FlexDevice).unwrap();
            let xt = Tensor::<Flex, 2>::from_data(TensorData::new(x.clone(), [m, k]), &FlexDevice);
            let cpu = host(Flex::quantized_matmul(xt, &weight));
            assert!(max_rel(&cpu, &want) < 1e-5, "{what}: Flex vs host");
        }
    }
}

/// Row `ids[t] - start` of a `[rows, cols]` host table, zeros outside it.
#[test]
fn dense_matmul_kernels_match_burn_matmul_and_host_math_in_both_layouts() {
    let device = WgpuDevice::DefaultDevice;
    // Which shapes (n, k) each schedule takes.
    let takes = |schedule, n: usize, k: usize| match schedule {
        MatmulSchedule::RowTile => k % 4 == 0,
        MatmulSchedule::Tiled => n % 4 == 0 && k % 4 == 0,
    };
    // Ragged sizes as above, and shapes past one tiled block (64 rows × 128 columns × 32 deep)
    // that are not multiples of it; (3, 5, 6): k not a multiple of 4 falls back (None) in both,
    // n = 130 or 7 in the tiled one.
    for (m, n, k) in [
        (37, 130, 96),
        (1, 7, 32),
        (64, 64, 256),
        (9, 70, 64),
        (70, 132, 100),
        (130, 260, 36),
        (1, 4, 4),
        (3, 5, 6),
    ] {
        let x = values(m * k, 3 + m as u64, 1.0);
        let w = values(n * k, 4 + n as u64, 0.1); // HF layout [n, k]
        let want = host_matmul(&x, &w, m, n, k);
        let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
        // A loaded Linear holds the transposed view of a contiguous [n, k] ...
        let w_view =
            Tensor::<Wgpu, 2>::from_data(TensorData::new(w.clone(), [n, k]), &device).transpose();
        // ... or, once Burn has made it contiguous, [k, n] itself.
        let w_t: Vec<f32> = (0..k)
            .flat_map(|p| (0..n).map(move |j| (p, j)))
            .map(|(p, j)| w[j * k + p])
            .collect();
        let w_contiguous = Tensor::<Wgpu, 2>::from_data(TensorData::new(w_t, [k, n]), &device);
        let burn = host(xt.clone().matmul(w_view.clone()));
        for schedule in [MatmulSchedule::RowTile, MatmulSchedule::Tiled] {
            for (layout, weight) in [("[n, k] view", &w_view), ("[k, n]", &w_contiguous)] {
                let what = format!("{schedule:?}: m={m} n={n} k={k} weight {layout}");
                let Some(out) = dense_matmul_kernel(xt.clone(), weight, schedule) else {
                    assert!(
                        !takes(schedule, n, k),
                        "{what}: the kernel declined a supported shape"
                    );
                    continue;
                };
                assert!(
                    takes(schedule, n, k),
                    "{what}: the kernel ran on a shape it cannot take"
                );
                assert_eq!(out.dims(), [m, n], "{what}");
                let out = host(out);
                assert!(
                    max_rel(&out, &want) < 1e-5,
                    "{what}: kernel vs host {}",
                    max_rel(&out, &want)
                );
                assert!(max_rel(&out, &burn) < 1e-5, "{what}: kernel vs Burn matmul");
            }
        }
    }
    // Any other layout (here a column slice of a contiguous [k, 2n]) is declined.
    let wide =
        Tensor::<Wgpu, 2>::from_data(TensorData::new(values(64 * 16, 9, 0.1), [64, 16]), &device);
    let x =
        Tensor::<Wgpu, 2>::from_data(TensorData::new(values(8 * 64, 10, 1.0), [8, 64]), &device);
    for schedule in [MatmulSchedule::RowTile, MatmulSchedule::Tiled] {
        let slice = wide.clone().slice([0..64, 0..8]);
        let declined = dense_matmul_kernel(x.clone(), &slice, schedule).is_none();
        assert!(declined, "{schedule:?}: ran on a strided column slice");
    }
}

/// [`MatmulKernel::Autotune`] (the default): whichever candidate the measurement keeps for a
/// key, the products are the host's, for inputs the benchmark cut to its first 256 rows (300
/// rows, then 260 rows of the same key served from the result), ragged ones (37), a
/// layout only Burn's matmul takes, and an input too tall for the row tile's grid that the
/// tuner is not handed (the tiled kernel serves it).
#[test]
fn autotuned_matmuls_give_the_host_products_whatever_they_choose() {
    let device = WgpuDevice::DefaultDevice;
    Wgpu::use_matmul_kernel(MatmulKernel::Autotune);
    let (n, k) = (132, 256);
    let w = values(n * k, 21, 0.1);
    let w_view =
        Tensor::<Wgpu, 2>::from_data(TensorData::new(w.clone(), [n, k]), &device).transpose();
    for scheme in [Quantization::Q8, Quantization::Q4, Quantization::Q4K] {
        let mut packed = PackedBlocks::new(scheme).unwrap();
        packed
            .extend_from_stored(&quantize(&w, scheme).unwrap(), n * k)
            .unwrap();
        let weight = QuantizedMatrix::<Wgpu>::from_packed(&packed, n, k, &device).unwrap();
        let decoded = packed.to_f32();
        for m in [300, 260, 37, 1] {
            let x = values(m * k, 22 + m as u64, 1.0);
            let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
            let what = format!("{scheme} m={m} n={n} k={k}");
            let got = host(Wgpu::quantized_matmul(xt.clone(), &weight));
            let want = host_matmul(&x, &decoded, m, n, k);
            assert!(
                max_rel(&got, &want) < 1e-5,
                "{what}: autotuned vs host {}",
                max_rel(&got, &want)
            );
            if scheme == Quantization::Q8 {
                let got = host(Wgpu::dense_matmul(xt, &w_view));
                let want = host_matmul(&x, &w, m, n, k);
                assert!(max_rel(&got, &want) < 1e-5, "f32 m={m}: autotuned vs host");
            }
        }
    }
    // A column slice: only Burn's matmul takes it.
    let wide = values(64 * 16, 23, 0.1);
    let slice = Tensor::<Wgpu, 2>::from_data(TensorData::new(wide.clone(), [64, 16]), &device)
        .slice([0..64, 0..8]);
    let x = values(8 * 64, 24, 1.0);
    let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [8, 64]), &device);
    let w_sliced: Vec<f32> = (0..8)
        .flat_map(|j| (0..64).map(move |p| (p, j)))
        .map(|(p, j)| wide[p * 16 + j])
        .collect();
    let got = host(Wgpu::dense_matmul(xt, &slice));
    assert!(
        max_rel(&got, &host_matmul(&x, &w_sliced, 8, 8, 64)) < 1e-5,
        "f32 strided weight"
    );
    // 8 · 65,535 + 1 rows: past the row tile's grid.
    let (m, n, k) = (8 * 65_535 + 1, 4, 32);
    let w = values(n * k, 25, 0.1);
    let mut packed = PackedBlocks::new(Quantization::Q8).unwrap();
    packed
        .extend_from_stored(&quantize(&w, Quantization::Q8).unwrap(), n * k)
        .unwrap();
    let weight = QuantizedMatrix::<Wgpu>::from_packed(&packed, n, k, &device).unwrap();
    let x = values(m * k, 26, 1.0);
    let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
    let got = host(Wgpu::quantized_matmul(xt, &weight));
    let want = host_matmul(&x, &packed.to_f32(), m, n, k);
    assert!(
        max_rel(&got, &want) < 1e-5,
        "q8 m={m}: vs host {}",
        max_rel(&got, &want)
    );
}

#[test]
fn matmul_kernel_names_parse_and_unknown_ones_are_refused() {
    for (name, kernel) in [
        ("auto", MatmulKernel::Autotune),
        ("burn", MatmulKernel::Burn),
        ("row-tile", MatmulKernel::RowTile),
        ("tiled", MatmulKernel::Tiled),
    ] {
        assert_eq!(name.parse::<MatmulKernel>().unwrap(), kernel);
        assert_eq!(kernel.to_string(), name);
    }
    let err = "fast".parse::<MatmulKernel>().unwrap_err().to_string();
    assert!(err.contains("`fast`") && err.contains("row-tile"), "{err}");
}

fn host_gather(table: &[f32], ids: &[i32], start: usize, rows: usize, cols: usize) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            let local = id as i64 - start as i64;
            if (0..rows as i64).contains(&local) {
                table[local as usize * cols..][..cols].to_vec()
            } else {
                vec![0.0; cols]
            }
        })
        .collect()
}

#[test]
fn quantized_gather_kernel_matches_plain_burn_ops_and_host_math() {
    let device = WgpuDevice::DefaultDevice;
    assert!(<Wgpu as KernelBackend>::has_quantized_gather());
    // A part holding rows 100..400 of a table; ids before, inside (both ends, repeats) and
    // after it. The long list passes the grid's 65 535-row height (the kernel strides).
    let (start, rows) = (100usize, 300usize);
    let short: Vec<i32> = vec![0, 99, 100, 101, 250, 250, 399, 400, 5_000, 100];
    let long: Vec<i32> = (0..70_000).map(|i| (i * 7919 % 500) as i32).collect();
    // q4k needs rows of whole 128-value super-blocks; a scale exponent (as packs store) on
    // the wider q4k table checks that the device parameters are multiplied back exactly.
    let cases = [
        (96, Quantization::Q8),
        (96, Quantization::Q4),
        (32, Quantization::Q8),
        (32, Quantization::Q4),
        (128, Quantization::Q4K),
        (384, Quantization::Q4K),
    ];
    for (cols, scheme) in cases {
        let w = values(rows * cols, 3 + cols as u64, 0.3);
        {
            let exponent = if cols == 384 { scale_exponent(&w) } else { 0 };
            let bytes = quantize_scaled(&w, scheme, exponent).unwrap();
            let mut packed = PackedBlocks::new(scheme).unwrap();
            packed
                .extend_from_stored_scaled(&bytes, rows * cols, exponent)
                .unwrap();
            let table = packed.to_f32();
            let gpu =
                QuantizedRows::<Wgpu>::from_packed(&packed, start, rows, cols, &device).unwrap();
            let cpu = QuantizedRows::<Flex>::from_packed(&packed, start, rows, cols, &FlexDevice)
                .unwrap();
            for ids in [&short, &long] {
                let what = format!("{scheme} cols={cols} ids={}", ids.len());
                let want = host_gather(&table, ids, start, rows, cols);
                let n = ids.len();
                let it =
                    Tensor::<Wgpu, 1, Int>::from_data(TensorData::new(ids.clone(), [n]), &device);
                let fused = host(Wgpu::quantized_gather(it.clone(), &gpu));
                let plain = host(reference_quantized_gather(it, &gpu));
                assert!(max_abs_diff(&fused, &want) < 1e-6, "{what}: kernel vs host");
                assert!(
                    max_abs_diff(&plain, &want) < 1e-6,
                    "{what}: Burn ops vs host"
                );
                let it = Tensor::<Flex, 1, Int>::from_data(
                    TensorData::new(ids.clone(), [n]),
                    &FlexDevice,
                );
                let flex = host(Flex::quantized_gather(it, &cpu));
                assert!(max_abs_diff(&flex, &want) < 1e-6, "{what}: Flex vs host");
            }
        }
    }
}

#[test]
fn mean_pool_kernel_matches_plain_burn_ops_and_host_math() {
    let device = WgpuDevice::DefaultDevice;
    // dim 300 > the 256-wide workgroup; lengths include a full row and a single token.
    let (b, s, h) = (4, 9, 300);
    let lengths = [9usize, 1, 5, 7];
    let hidden = values(b * s * h, 7, 2.0);
    let mask: Vec<i32> = (0..b * s)
        .map(|i| (i % s < lengths[i / s]) as i32)
        .collect();
    for normalize in [false, true] {
        let mut want = vec![0f32; b * h];
        for i in 0..b {
            let row = &mut want[i * h..(i + 1) * h];
            for (d, out) in row.iter_mut().enumerate() {
                let sum: f64 = (0..lengths[i])
                    .map(|t| hidden[(i * s + t) * h + d] as f64)
                    .sum();
                *out = (sum / lengths[i] as f64) as f32;
            }
            if normalize {
                let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        let ht = Tensor::<Wgpu, 3>::from_data(TensorData::new(hidden.clone(), [b, s, h]), &device);
        let mt = Tensor::<Wgpu, 2, Int>::from_data(TensorData::new(mask.clone(), [b, s]), &device);
        let fused = host(Wgpu::mean_pool(ht.clone(), mt.clone(), normalize));
        let plain = host(reference_mean_pool(ht, mt, normalize));
        assert!(
            max_abs_diff(&fused, &want) < 1e-5,
            "normalize={normalize}: kernel vs host"
        );
        assert!(
            max_abs_diff(&fused, &plain) < 1e-5,
            "normalize={normalize}: kernel vs Burn"
        );
    }
}

#[test]
fn quantized_packs_stay_packed_on_wgpu_and_match_the_cpu_dequantised_model() {
    let expected = Expected::load();
    let texts = expected.texts();
    let device = WgpuDevice::DefaultDevice;
    for scheme in [Quantization::Q8, Quantization::Q4] {
        let (files, _) = packed_model_files(scheme);
        let gpu = Embedder::<Wgpu>::from_files(files, &device, &LoadOptions::default()).unwrap();
        assert!(
            gpu.model()
                .projections()
                .iter()
                .all(|p| matches!(p, Projection::Quantized(_))),
            "{scheme}: every projection should stay block-quantised on wgpu"
        );
        let bits = if scheme == Quantization::Q8 { 8 } else { 4 };
        let summary = gpu.model().storage_summary();
        assert_eq!(
            (summary.embedding_bits, summary.embedding_buffers),
            (bits, 1),
            "{scheme}: the table should stay quantised on wgpu"
        );
        // 151 936 rows of 32 values: the words, one f16 scale (q8) or scale and min (q4) per
        // block of 32, and a 4-byte power of two per row.
        let per_row = 32 * bits / 8 + 2 * if bits == 8 { 1 } else { 2 } + 4;
        assert_eq!(summary.embedding_bytes, 151_936 * per_row);

        // The same pack with the table dequantised to f32 at load: the same vectors.
        let (files, _) = packed_model_files(scheme);
        let f32_table = LoadOptions {
            quantized_embedding: false,
            ..LoadOptions::default()
        };
        let dense = Embedder::<Wgpu>::from_files(files, &device, &f32_table).unwrap();
        assert_eq!(dense.model().storage_summary().embedding_bits, 32);
        let got = gpu.embed(&texts, &EmbedOptions::document()).unwrap();
        let want = dense.embed(&texts, &EmbedOptions::document()).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-5,
            "{scheme}: quantised vs f32 table, max |diff| {diff}"
        );

        // Split over buffers (64 KiB: 2 048 q8 or 4 096 q4 rows each), the table looks up the
        // same rows.
        let (files, _) = packed_model_files(scheme);
        let small = LoadOptions {
            max_buffer_bytes: Some(64 << 10),
            ..LoadOptions::default()
        };
        let split = Embedder::<Wgpu>::from_files(files, &device, &small).unwrap();
        let TokenEmbedding::Quantized(parts) = &split.model().embed_tokens else {
            panic!("{scheme}: the split table should stay quantised");
        };
        assert_eq!(
            parts.len(),
            151_936usize.div_ceil((64 << 10) / (32 * bits / 8))
        );
        let got_split = split.embed(&texts, &EmbedOptions::document()).unwrap();
        assert_close(
            &got_split,
            &got,
            0.999999,
            1e-5,
            &format!("{scheme} split table"),
        );

        let (files, _) = packed_model_files(scheme);
        let cpu =
            Embedder::<Flex>::from_files(files, &FlexDevice, &LoadOptions::default()).unwrap();
        assert_eq!(cpu.model().storage_summary().embedding_bits, 32);
        assert!(cpu
            .model()
            .projections()
            .iter()
            .all(|p| matches!(p, Projection::Dense(_))));
        let got = gpu.embed(&texts, &EmbedOptions::document()).unwrap();
        let want = cpu.embed(&texts, &EmbedOptions::document()).unwrap();
        assert_close(
            &got,
            &want,
            0.99999,
            1e-4,
            &format!("{scheme} fused vs dequantised"),
        );
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0, f64::min);
        eprintln!("{scheme}: wgpu fused kernel vs CPU dequantised, worst cos {worst:.8}");
    }
}

#[test]
fn weights_over_the_buffer_limit_are_split_without_changing_results() {
    let expected = Expected::load();
    let texts = expected.texts();
    let device = WgpuDevice::DefaultDevice;
    let whole = Embedder::<Wgpu>::from_dir(fixture("tiny-qwen2"), &device, &LoadOptions::default())
        .unwrap();
    assert_eq!(whole.model().embed_tokens.buffers(), 1);
    // 64 KiB: the 151 936 × 32 f32 table (19 MB) becomes 297 buffers of 512 rows.
    let limit = 64 << 10;
    let options = LoadOptions {
        max_buffer_bytes: Some(limit),
        ..LoadOptions::default()
    };
    let split = Embedder::<Wgpu>::from_dir(fixture("tiny-qwen2"), &device, &options).unwrap();
    let TokenEmbedding::Dense(parts) = &split.model().embed_tokens else {
        panic!("a safetensors folder's table is f32");
    };
    assert_eq!(parts.len(), 151_936usize.div_ceil(512));
    assert!(parts.iter().all(|p| p.dims()[0] * p.dims()[1] * 4 <= limit));
    let a = whole.embed(&texts, &EmbedOptions::query()).unwrap();
    let b = split.embed(&texts, &EmbedOptions::query()).unwrap();
    assert_close(&b, &a, 0.999999, 1e-5, "split embedding vs whole");

    // 4 KiB also splits the 64 × 32 MLP weights (8 KiB) into two buffers each; q8 rows
    // (64 values = 64 bytes) at 1 KiB split into groups of 16 rows.
    for (scheme, limit) in [(Quantization::F32, 4096), (Quantization::Q8, 1024)] {
        let (files, _) = packed_model_files(scheme);
        let options = LoadOptions {
            max_buffer_bytes: Some(limit),
            ..LoadOptions::default()
        };
        let e = Embedder::<Wgpu>::from_files(files, &device, &options).unwrap();
        let split_parts = e
            .model()
            .projections()
            .iter()
            .map(|p| match p {
                Projection::Split(s) => s.parts.len(),
                Projection::Quantized(q) => q.parts.len(),
                Projection::Dense(_) | Projection::Lora(_) => 1,
            })
            .max()
            .unwrap();
        assert!(
            split_parts > 1,
            "{scheme} at {limit} bytes: no projection was split"
        );
    }
}

/// A projection's output does not depend on how its rows are grouped into buffers.
#[test]
fn split_and_quantized_projections_equal_their_single_buffer_forms() {
    use burn::module::Param;
    use burn::nn::Linear;
    use qzhou_core::model::{QuantizedLinear, SplitLinear};
    let device = WgpuDevice::DefaultDevice;
    let (out, inp, tokens) = (96, 64, 5);
    let w = values(out * inp, 11, 0.2);
    let bias = values(out, 12, 0.1);
    let x = Tensor::<Wgpu, 3>::from_data(
        TensorData::new(values(tokens * inp, 13, 1.0), [1, tokens, inp]),
        &device,
    );
    let dense_rows = |start: usize, len: usize| Linear::<Wgpu> {
        weight: Param::from_tensor(
            Tensor::from_data(
                TensorData::new(w[start * inp..(start + len) * inp].to_vec(), [len, inp]),
                &device,
            )
            .transpose(),
        ),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias[start..start + len].to_vec(), [len]),
            &device,
        ))),
    };
    let whole = host(Projection::Dense(dense_rows(0, out)).forward(x.clone()));
    let split = Projection::Split(SplitLinear {
        parts: vec![dense_rows(0, 40), dense_rows(40, 40), dense_rows(80, 16)],
    });
    assert!(max_abs_diff(&host(split.forward(x.clone())), &whole) < 1e-5);

    let mut packed = PackedBlocks::new(Quantization::Q8).unwrap();
    packed
        .extend_from_stored(&quantize(&w, Quantization::Q8).unwrap(), out * inp)
        .unwrap();
    let bias_t = || {
        Some(Param::from_tensor(Tensor::<Wgpu, 1>::from_data(
            TensorData::new(bias.clone(), [out]),
            &device,
        )))
    };
    let one = Projection::Quantized(QuantizedLinear {
        parts: vec![QuantizedMatrix::from_packed(&packed, out, inp, &device).unwrap()],
        bias: bias_t(),
    });
    let groups = Projection::Quantized(QuantizedLinear {
        parts: [(0, 50), (50, 96)]
            .iter()
            .map(|&(a, b)| {
                QuantizedMatrix::from_packed(&packed.slice_rows(a, b, inp), b - a, inp, &device)
                    .unwrap()
            })
            .collect(),
        bias: bias_t(),
    });
    let one = host(one.forward(x.clone()));
    assert!(max_abs_diff(&host(groups.forward(x)), &one) < 1e-5);
    // And the q8 projection is the dense one up to q8's rounding.
    assert!(
        max_rel(&one, &whole) < 0.02,
        "q8 vs f32: {}",
        max_rel(&one, &whole)
    );
}

/// A q4 pack whose projections are q4k (the deeper random model: 6 layers × 256, MLP 704) stays
/// packed on wgpu — q/gate/up as q4k through `shaders/q4k_matmul.wgsl`, down_proj (input 704,
/// not a multiple of 128) as q4, k/v/o as q8 — and gives the vectors of the same pack
/// dequantised on the CPU.
#[test]
fn q4k_projections_stay_packed_on_wgpu_and_match_the_cpu_dequantised_model() {
    use qzhou_core::model::{DeviceStorage, QwenEncoder, RandomInit};
    use qzhou_core::weight_pack::PackOptions;
    use qzhou_core::{AttentionMode, TensorSource, WeightPack};

    let config = common::deep_qwen2_config();
    let source = RandomInit::new(&config, 5, 0.02).unwrap();
    let options = PackOptions {
        q4_as_q4k: vec!["embed_tokens".into(), "_proj".into()],
        ..PackOptions::default()
    };
    let (manifest, files) = common::pack_in_memory(&source, Quantization::Q4, &options);
    let dtype = |name: &str| {
        manifest
            .tensors
            .iter()
            .find(|t| t.name.ends_with(name))
            .map(|t| t.dtype.clone())
            .unwrap()
    };
    assert_eq!(dtype("layers.3.self_attn.q_proj.weight"), "q4k");
    assert_eq!(dtype("layers.3.mlp.up_proj.weight"), "q4k");
    assert_eq!(dtype("layers.3.mlp.down_proj.weight"), "q4");
    assert_eq!(dtype("layers.3.self_attn.o_proj.weight"), "q8");
    let files: Vec<std::sync::Arc<[u8]>> = files.into_iter().map(Into::into).collect();
    let pack = WeightPack::new(manifest, files).unwrap();

    let (batch, seq) = (5usize, 19usize);
    let ids: Vec<i64> = (0..batch * seq)
        .map(|i| ((i as u64 * 2_654_435_761) % 4096) as i64)
        .collect();
    fn pooled<B: KernelBackend>(
        config: &qzhou_core::QwenConfig,
        pack: &dyn TensorSource,
        ids: &[i64],
        shape: [usize; 2],
        device: &B::Device,
    ) -> (Vec<f32>, QwenEncoder<B>) {
        let storage = DeviceStorage::for_backend::<B>(device);
        let model =
            QwenEncoder::<B>::load(config, AttentionMode::Bidirectional, pack, device, &storage)
                .unwrap();
        let input = Tensor::<B, 1, Int>::from_data(ids, device).reshape(shape);
        let mask = Tensor::<B, 2, Int>::ones(shape, device);
        let out = model.forward(input, mask).mean_dim(1);
        (host(out), model)
    }
    let device = WgpuDevice::DefaultDevice;
    let (gpu, model) = pooled::<Wgpu>(&config, &pack, &ids, [batch, seq], &device);
    let quantized = model
        .projections()
        .iter()
        .filter(|p| matches!(p, Projection::Quantized(q) if q.parts[0].q4k))
        .count();
    assert_eq!(
        quantized,
        6 * 3,
        "q, gate and up of 6 layers run as q4k on wgpu"
    );
    assert!(model
        .projections()
        .iter()
        .all(|p| matches!(p, Projection::Quantized(_))));
    let (cpu, _) = pooled::<Flex>(&config, &pack, &ids, [batch, seq], &FlexDevice);
    let rel = max_rel(&gpu, &cpu);
    eprintln!("q4k projections, wgpu kernel vs CPU dequantised: max rel diff {rel:.2e}");
    assert!(rel < 1e-5, "wgpu q4k vs CPU: {rel}");
}

//! Encode benchmark (not a test): tokens/s and peak RSS of one model folder at a fixed batch
//! shape, on the CPU or wgpu backend. `benches/encode.sh` runs it next to PyTorch transformers.
//!
//! `cargo run --release -p qzhou-cli --example bench_encode -- DIR cpu|wgpu BATCH SEQ ITERS`
//! prints one JSON line: load seconds, RSS after load, tokens/s, peak RSS.
//! `bench_encode make DIR TOKENIZER_JSON` writes a random Qwen2.5-0.5B-shaped model folder.

use std::time::Instant;

use qzhou_core::{AttentionMode, Embedder, KernelBackend, LoadOptions, Pooling};

/// Peak and current resident set size in bytes (Linux `/proc/self/status`).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn run<B: KernelBackend>(
    dir: &str,
    device: B::Device,
    batch: usize,
    seq: usize,
    iters: usize,
    name: &str,
) {
    let t0 = Instant::now();
    let options = LoadOptions {
        attention: Some(AttentionMode::Bidirectional),
        pooling: Some(Pooling::Mean),
        normalize: Some(true),
        batch_tokens: batch * seq,
        max_batch: batch,
        ..LoadOptions::default()
    };
    let embedder = Embedder::<B>::from_dir(dir, &device, &options).expect("load model");
    B::sync(&device).ok();
    let load_s = t0.elapsed().as_secs_f64();
    let (load_peak, load_rss) = rss();
    // Fixed token ids (no tokenizer cost): 100 + (i·7919 + j·104729) mod 150000.
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|i| {
            (0..seq)
                .map(|j| 100 + ((i * 7919 + j * 104729) % 150_000) as u32)
                .collect()
        })
        .collect();
    embedder.embed_token_ids(&ids).expect("warm-up");
    let t = Instant::now();
    for _ in 0..iters {
        embedder.embed_token_ids(&ids).expect("encode");
    }
    let secs = t.elapsed().as_secs_f64();
    let (peak, _) = rss();
    let weights: u64 = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "{{\"impl\":\"qzhou {name}\",\"batch\":{batch},\"seq\":{seq},\"iters\":{iters},\"load_s\":{load_s:.2},\"weights_bytes\":{weights},\"load_peak_rss\":{load_peak},\"rss_after_load\":{load_rss},\"tokens_per_s\":{:.1},\"peak_rss\":{peak}}}",
        (batch * seq * iters) as f64 / secs
    );
}

/// Write a Qwen2.5-0.5B-shaped checkpoint with random fp32 weights (xorshift, N(0, 0.02²)-ish
/// uniform) plus config and the fixture tokenizer, for machines without Python (the GPU box).
fn make_random_model(dir: &str, tokenizer: &str) {
    use safetensors::{tensor::TensorView, Dtype};
    let config = serde_json::json!({
        "architectures": ["QZhouModel"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "hidden_act": "silu"
    });
    let cfg = qzhou_core::QwenConfig::from_json(config.to_string().as_bytes()).unwrap();
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in qzhou_core::model::expected_tensors(&cfg) {
        let n: usize = shape.iter().product();
        let norm = name.contains("norm");
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5; // U(-0.5, 0.5)
            let v = if norm { 1.0 + 0.2 * u } else { 0.07 * u };
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        tensors.push((name, shape, bytes));
    }
    std::fs::create_dir_all(dir).unwrap();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(
        views,
        None,
        std::path::Path::new(dir)
            .join("model.safetensors")
            .as_path(),
    )
    .unwrap();
    std::fs::write(
        std::path::Path::new(dir).join("config.json"),
        config.to_string(),
    )
    .unwrap();
    std::fs::copy(tokenizer, std::path::Path::new(dir).join("tokenizer.json")).unwrap();
    println!("wrote {dir}");
}

fn main() {
    // As the qzhou CLI does at start-up.
    qzhou_core::host_memory::keep_freed_memory();
    let a: Vec<String> = std::env::args().collect();
    if a.len() == 4 && a[1] == "make" {
        return make_random_model(&a[2], &a[3]);
    }
    if a.len() != 6 {
        eprintln!("usage: bench_encode DIR cpu|wgpu|wgpu-fused|cuda|cuda-bf16|cuda-fused|cuda-bf16-fused BATCH SEQ ITERS | bench_encode make DIR TOKENIZER_JSON");
        std::process::exit(2);
    }
    let (dir, backend) = (&a[1], a[2].as_str());
    let [batch, seq, iters] = [3, 4, 5].map(|i| a[i].parse::<usize>().expect("a number"));
    use qzhou_core::backends;
    match backend {
        "cpu" => run::<burn::backend::Flex>(dir, Default::default(), batch, seq, iters, "cpu/flex"),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<backends::Wgpu>(dir, Default::default(), batch, seq, iters, "wgpu"),
        #[cfg(feature = "wgpu")]
        "wgpu-fused" => {
            run::<backends::WgpuFused>(dir, Default::default(), batch, seq, iters, "wgpu+fusion")
        }
        #[cfg(feature = "cuda")]
        "cuda" => run::<backends::Cuda>(dir, Default::default(), batch, seq, iters, "cuda/f32"),
        #[cfg(feature = "cuda")]
        "cuda-bf16" => run::<backends::Cuda<half::bf16>>(
            dir,
            Default::default(),
            batch,
            seq,
            iters,
            "cuda/bf16",
        ),
        #[cfg(feature = "cuda")]
        "cuda-fused" => run::<backends::CudaFused>(
            dir,
            Default::default(),
            batch,
            seq,
            iters,
            "cuda/f32+fusion",
        ),
        #[cfg(feature = "cuda")]
        "cuda-bf16-fused" => run::<backends::CudaFused<half::bf16>>(
            dir,
            Default::default(),
            batch,
            seq,
            iters,
            "cuda/bf16+fusion",
        ),
        other => {
            eprintln!("unknown backend {other}");
            std::process::exit(2);
        }
    }
}

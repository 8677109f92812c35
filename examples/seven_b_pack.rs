//! A Qwen2.5-7B-shaped q4 web pack on Burn's wgpu backend: what a 7B QZhou-class embedder
//! needs in GPU and host memory with the token-embedding table kept quantised on the GPU.
//!
//! ```text
//! cargo build --workspace --all-targets            # examples build with the workspace
//! $TARGET/debug/examples/seven_b_pack write DIR    # random weights, real vocab + tokenizer
//! $TARGET/debug/examples/seven_b_pack embed DIR [f32-table]
//! ```
//! (`benches/web/seven_b.sh` runs both and prints the table.)
//!
//! `write` draws random weights (σ 0.02, [`RandomInit`]) for Qwen2.5-7B's shapes (hidden 3 584,
//! 28 layers, 28 query / 4 key-value heads, MLP 18 944, vocabulary 152 064) and writes the
//! `q4` pack exactly as `qzhou export-web` does (the default mixed scheme: attention k/v/o at
//! q8), with the repository fixture's Qwen tokenizer. `embed` loads the pack on the default
//! wgpu adapter with the browser's layout (128 MiB buffers, quantised projections and table),
//! embeds one short text, and prints the device bytes the allocator holds, the model's storage
//! summary and the process's peak resident memory. `f32-table` dequantises the table at load
//! instead (the layout before the quantised gather), for comparison.
//!
//! Random weights make the numbers of the vector meaningless and the memory figures exact: the
//! shapes, not the values, decide them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use qzhou_core::backends::Wgpu;
use qzhou_core::model::RandomInit;
use qzhou_core::weight_pack::{manifest_name, write_pack, PackOptions};
use qzhou_core::QwenConfig;
use qzhou_core::{EmbedOptions, Embedder, LoadOptions, ModelFiles, Quantization};

/// Qwen2.5-7B-Instruct's `config.json` (architecture fields).
const CONFIG: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 3584,
  "intermediate_size": 18944,
  "num_hidden_layers": 28,
  "num_attention_heads": 28,
  "num_key_value_heads": 4,
  "vocab_size": 152064,
  "max_position_embeddings": 32768,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "tie_word_embeddings": false,
  "initializer_range": 0.02,
  "torch_dtype": "bfloat16"
}"#;

/// WebGPU's default `maxStorageBufferBindingSize` (128 MiB): the part size `export-web` writes
/// and the buffer size the browser package splits weights into on such an adapter.
const BROWSER_BUFFER: usize = 128 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("write") if args.len() == 2 => write(Path::new(&args[1])),
        Some("embed") if args.len() >= 2 => embed(
            Path::new(&args[1]),
            args.get(2).map(String::as_str) == Some("f32-table"),
        ),
        _ => {
            eprintln!("usage: seven_b_pack write DIR | seven_b_pack embed DIR [f32-table]");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn fixture_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-qwen2/tokenizer.json")
}

fn write(dir: &Path) -> Result<()> {
    let at = || format!("writing into {}", dir.display());
    std::fs::create_dir_all(dir).with_context(at)?;
    let config = QwenConfig::from_json(CONFIG.as_bytes())?;
    std::fs::write(dir.join("config.json"), CONFIG).with_context(at)?;
    std::fs::copy(fixture_tokenizer(), dir.join("tokenizer.json")).with_context(at)?;
    let source = RandomInit::new(&config, 7, 0.02)?;
    let t = Instant::now();
    let mut write_file = |name: &str, bytes: &[u8]| -> qzhou_core::Result<()> {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| qzhou_core::QzhouError::InvalidOption(format!("{name}: {e}")))
    };
    let manifest = write_pack(
        &source,
        Quantization::Q4,
        &PackOptions::default(),
        &mut write_file,
    )?;
    std::fs::write(
        dir.join(manifest_name(Quantization::Q4)),
        manifest.to_json(),
    )
    .with_context(at)?;
    println!(
        "wrote {}: {} files, {} bytes, {:.2} bits/weight, {:.0} s",
        dir.display(),
        manifest.files.len(),
        manifest.weight_bytes(),
        manifest.bits_per_weight(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Peak and current resident memory of this process (bytes), from `/proc/self/status`.
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn embed(dir: &Path, f32_table: bool) -> Result<()> {
    let device = WgpuDevice::DefaultDevice;
    let t = Instant::now();
    let files = ModelFiles::from_pack_manifest(&dir.join(manifest_name(Quantization::Q4)))?;
    let read_s = t.elapsed().as_secs_f64();
    let options = LoadOptions {
        max_buffer_bytes: Some(BROWSER_BUFFER),
        quantized_embedding: !f32_table,
        ..LoadOptions::default()
    };
    let embedder = Embedder::<Wgpu>::from_files(files, &device, &options)?;
    let load_s = t.elapsed().as_secs_f64();
    let (peak_load, _) = resident();
    let usage = || {
        let client = <WgpuRuntime as burn_cubecl::cubecl::Runtime>::client(&device);
        client
            .memory_usage()
            .map(|u| (u.bytes_in_use, u.bytes_reserved))
            .unwrap_or((0, 0))
    };
    let (loaded_in_use, loaded_reserved) = usage();
    let t = Instant::now();
    let rows = embedder.embed(&["一个人拿着枪。"], &EmbedOptions::document())?;
    let embed_s = t.elapsed().as_secs_f64();
    let (peak, now) = resident();
    let (_, embed_reserved) = usage();
    let finite = rows[0].iter().all(|v| v.is_finite());
    let norm = rows[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    let s = embedder.model().storage_summary();
    println!(
        "table: {}",
        if f32_table {
            "f32 (dequantised at load)"
        } else {
            "quantised on the GPU"
        }
    );
    println!("storage: {}", serde_json::to_string(&s).unwrap_or_default());
    println!(
        "device memory after load: {} in use ({loaded_in_use} B), {} reserved by the wgpu \
         allocator ({loaded_reserved} B); after embedding {} reserved; embedding table {}",
        gib(loaded_in_use),
        gib(loaded_reserved),
        gib(embed_reserved),
        gib(s.embedding_bytes as u64)
    );
    println!(
        "host: peak RSS after load {}, peak RSS overall {}, RSS now {}",
        gib(peak_load),
        gib(peak),
        gib(now)
    );
    println!(
        "times: read files {read_s:.1} s, load (incl. read) {load_s:.1} s, embed one text {embed_s:.1} s; \
         vector {} dims, finite {finite}, norm {norm:.4}",
        rows[0].len()
    );
    if !finite {
        bail!("the 7B-shaped model produced a non-finite vector");
    }
    Ok(())
}

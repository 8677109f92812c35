//! Shared helpers: fixture paths, the transformers reference values, comparison metrics.
#![allow(dead_code)]

pub mod training_run;

use std::path::PathBuf;

use qzhou_core::{AttentionMode, Embedder, LoadOptions, Pooling};
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// `fixtures/expected.json`, written by `scripts/make_fixtures.py` with transformers.
pub struct Expected {
    pub json: Value,
}

impl Expected {
    pub fn load() -> Self {
        let text =
            std::fs::read_to_string(fixture("expected.json")).expect("fixtures/expected.json");
        Self {
            json: serde_json::from_str(&text).unwrap(),
        }
    }
    pub fn texts(&self) -> Vec<String> {
        self.json["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }
    pub fn max_length(&self) -> usize {
        self.json["max_length"].as_u64().unwrap() as usize
    }
    pub fn token_ids(&self, model: &str) -> Vec<Vec<u32>> {
        self.json["models"][model]["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }
    /// `run` is `bidirectional-mean` or `causal-lasttoken`.
    pub fn embeddings(&self, model: &str, run: &str) -> Vec<Vec<f32>> {
        self.json["models"][model]["embeddings"][run]
            .as_array()
            .unwrap_or_else(|| panic!("no run {run} for {model}"))
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dimension mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Assert every row of `got` matches `want` within the bounds; report the worst row.
pub fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], min_cos: f64, max_diff: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut worst_cos = 1.0f64;
    let mut worst_diff = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let c = cosine(g, w);
        let d = max_abs_diff(g, w);
        assert!(
            c >= min_cos && d <= max_diff,
            "{what}: row {i}: cos {c:.9} (min {min_cos}), max|Δ| {d:.3e} (max {max_diff:.0e})"
        );
        worst_cos = worst_cos.min(c);
        worst_diff = worst_diff.max(d);
    }
    eprintln!("{what}: worst cos {worst_cos:.9}, worst max|Δ| {worst_diff:.3e}");
}

pub const RUNS: [(&str, AttentionMode, Pooling); 2] = [
    (
        "bidirectional-mean",
        AttentionMode::Bidirectional,
        Pooling::Mean,
    ),
    (
        "causal-lasttoken",
        AttentionMode::Causal,
        Pooling::LastToken,
    ),
];

pub const MODELS: [&str; 2] = ["tiny-qwen2", "tiny-qwen3"];

pub fn load<B: qzhou_core::KernelBackend>(
    model: &str,
    attention: AttentionMode,
    pooling: Pooling,
    device: &B::Device,
) -> Embedder<B> {
    let options = LoadOptions {
        attention: Some(attention),
        pooling: Some(pooling),
        normalize: Some(true),
        ..LoadOptions::default()
    };
    Embedder::from_dir(fixture(model), device, &options).unwrap()
}

/// Parity with transformers on every model × (attention, pooling) run, then batch invariance:
/// each text alone vs all texts in one padded batch of mixed lengths.
pub fn check_reference_parity<B: qzhou_core::KernelBackend>(
    device: &B::Device,
    min_cos: f64,
    max_diff: f32,
    backend: &str,
) {
    let expected = Expected::load();
    for model in MODELS {
        let ids = expected.token_ids(model);
        for (run, attention, pooling) in RUNS {
            let embedder = load::<B>(model, attention, pooling, device);
            let want = expected.embeddings(model, run);
            let batched = embedder.embed_token_ids(&ids).unwrap();
            assert_close(
                &batched,
                &want,
                min_cos,
                max_diff,
                &format!("{backend} {model} {run} batched"),
            );
            let alone: Vec<Vec<f32>> = ids
                .iter()
                .map(|i| {
                    embedder
                        .embed_token_ids(std::slice::from_ref(i))
                        .unwrap()
                        .remove(0)
                })
                .collect();
            assert_close(
                &alone,
                &want,
                min_cos,
                max_diff,
                &format!("{backend} {model} {run} alone"),
            );
            let invariance = alone
                .iter()
                .zip(&batched)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f32::max);
            assert!(
                invariance <= 1e-5,
                "{backend} {model} {run}: alone vs batched max|Δ| {invariance:e}"
            );
            eprintln!("{backend} {model} {run}: batch invariance max|Δ| {invariance:.3e}");
        }
    }
}

/// `source` written as a pack in `scheme`, in memory: the manifest and its weight files in
/// order.
pub fn pack_in_memory(
    source: &dyn qzhou_core::TensorSource,
    scheme: qzhou_core::Quantization,
    options: &qzhou_core::weight_pack::PackOptions,
) -> (qzhou_core::PackManifest, Vec<Vec<u8>>) {
    let mut files = Vec::new();
    let manifest = qzhou_core::weight_pack::write_pack(source, scheme, options, &mut |_, b| {
        files.push(b.to_vec());
        Ok(())
    })
    .unwrap();
    (manifest, files)
}

/// tiny-qwen2 packed in `scheme` (small limits, so tensors split into parts and files), as the
/// model files a web client would assemble.
pub fn packed_model_files(
    scheme: qzhou_core::Quantization,
) -> (qzhou_core::ModelFiles, qzhou_core::PackManifest) {
    use qzhou_core::weight_pack::{PackLimits, PackOptions};
    let dir = fixture("tiny-qwen2");
    let checkpoint = qzhou_core::fs::open_checkpoint(&dir).unwrap();
    let limits = PackLimits {
        max_part_bytes: 1 << 20,
        max_file_bytes: 3 << 20,
    };
    let (manifest, files) = pack_in_memory(
        &checkpoint,
        scheme,
        &PackOptions {
            limits,
            ..Default::default()
        },
    );
    let files: Vec<std::sync::Arc<[u8]>> = files.into_iter().map(Into::into).collect();
    let manifest = qzhou_core::PackManifest::from_json(&manifest.to_json(), "manifest").unwrap();
    let pack = qzhou_core::WeightPack::new(manifest.clone(), files).unwrap();
    (tiny_model_files(Box::new(pack)), manifest)
}

/// tiny-qwen2's config, tokenizer and sentence-transformers files around `weights`.
pub fn tiny_model_files(weights: Box<dyn qzhou_core::TensorSource>) -> qzhou_core::ModelFiles {
    let dir = fixture("tiny-qwen2");
    qzhou_core::ModelFiles {
        config: std::fs::read(dir.join("config.json")).unwrap(),
        tokenizer: std::fs::read(dir.join("tokenizer.json")).unwrap(),
        weights,
        sentence_transformers:
            qzhou_core::sentence_transformers::SentenceTransformersFiles::gather(|n| {
                Ok(std::fs::read(dir.join(n)).ok())
            })
            .unwrap(),
    }
}

/// A JSON array of numbers as f64.
pub fn json_floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A JSON array of non-negative integers.
pub fn json_ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// A JSON array of arrays of numbers as f32 rows.
pub fn json_rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| json_floats(r).into_iter().map(|x| x as f32).collect())
        .collect()
}

/// A Qwen2 of 6 layers × 256 wide (MLP 704, 8 heads, 2 key/value heads, vocabulary 4,096): the
/// deeper random model the q8/q4 accuracy tests use instead of the 2-layer fixture.
pub fn deep_qwen2_config() -> qzhou_core::QwenConfig {
    qzhou_core::QwenConfig::from_json(
        serde_json::json!({
            "model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704,
            "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 2,
            "vocab_size": 4096, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "tie_word_embeddings": false
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

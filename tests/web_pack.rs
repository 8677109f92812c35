//! The web path's pieces, natively: the wasm build's tokenizer reference (a multilingual
//! corpus tokenised by Python `tokenizers`) and web weight packs (`qzhou export-web`'s format)
//! loaded into the same model, per scheme, against the transformers reference.

mod common;

use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use common::{assert_close, cosine, fixture, packed_model_files, Expected};
use qzhou_core::weight_pack::PackManifest;
use qzhou_core::{EmbedOptions, Embedder, LoadOptions, Quantization, TextTokenizer, Truncation};
use serde_json::Value;

#[test]
fn native_tokenizer_matches_python_on_the_multilingual_corpus() {
    let texts: Vec<String> = std::fs::read_to_string(fixture("multilingual.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(texts.len() >= 200, "corpus has {} texts", texts.len());
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("multilingual_ids.json")).unwrap())
            .unwrap();
    let json = std::fs::read(fixture("tiny-qwen2/tokenizer.json")).unwrap();
    let tk = TextTokenizer::from_json(&json, 32_768, Truncation::Error).unwrap();
    let got = tk.encode(&texts).unwrap();
    for (i, (g, w)) in got.iter().zip(want["ids"].as_array().unwrap()).enumerate() {
        let w: Vec<u32> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(g, &w, "text {i}: {:?}", texts[i]);
    }
}

fn packed_embedder(scheme: Quantization) -> (Embedder<Flex>, PackManifest) {
    let (files, manifest) = packed_model_files(scheme);
    let e = Embedder::<Flex>::from_files(files, &FlexDevice, &LoadOptions::default()).unwrap();
    (e, manifest)
}

#[test]
fn weight_packs_load_into_the_same_model_within_each_schemes_accuracy() {
    let expected = Expected::load();
    let texts = expected.texts();
    let want = expected.embeddings("tiny-qwen2", "bidirectional-mean");
    let direct =
        Embedder::<Flex>::from_dir(fixture("tiny-qwen2"), &FlexDevice, &LoadOptions::default())
            .unwrap()
            .embed(&texts, &EmbedOptions::document())
            .unwrap();
    // (scheme, min cosine vs transformers f32) — the web issue's targets.
    for (scheme, min_cos) in [
        (Quantization::F32, 0.999_999),
        (Quantization::F16, 0.9999),
        (Quantization::Q8, 0.995),
        (Quantization::Q4, 0.98),
    ] {
        let (e, manifest) = packed_embedder(scheme);
        let emb = manifest
            .tensors
            .iter()
            .find(|t| t.name == "embed_tokens.weight")
            .unwrap();
        assert!(
            emb.parts.len() > 1,
            "{scheme}: the embedding table should be split"
        );
        assert!(
            manifest.files.len() > 1 || scheme == Quantization::Q4,
            "{scheme}: files"
        );
        let got = e.embed(&texts, &EmbedOptions::document()).unwrap();
        if scheme == Quantization::F32 {
            assert_eq!(got, direct, "an f32 pack is the checkpoint, bit for bit");
        }
        assert_close(
            &got,
            &want,
            min_cos,
            1.0,
            &format!("{scheme} pack vs transformers"),
        );
        let worst = got
            .iter()
            .zip(&direct)
            .map(|(g, d)| cosine(g, d))
            .fold(1.0, f64::min);
        eprintln!(
            "{scheme} pack vs native f32: worst cos {worst:.6}, {} weight bytes",
            manifest.weight_bytes()
        );
    }
}

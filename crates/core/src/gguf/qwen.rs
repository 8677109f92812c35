//! A llama.cpp GGUF of a Qwen2/Qwen3 model as a Hugging Face folder: `config.json` from the
//! GGUF metadata, tensor names in transformers' `Qwen2Model`/`Qwen3Model` layout, and a
//! `tokenizer.json` rebuilt from the embedded vocabulary.
//!
//! llama.cpp's converter keeps Qwen's q/k rows in the HF order (Qwen uses NeoX-style RoPE, so
//! unlike Llama nothing is permuted): tensors map one to one, with ggml's dims reversed.

use serde_json::{json, Map, Value};

use crate::config::QwenConfig;
use crate::error::{QzhouError, Result};

use crate::weights::{StoredDtype, TensorMeta, TensorSource};

use super::reader::{GgufFile, GgufTensorInfo, GgufValue};

/// Qwen's pre-tokenizer split (the `Split` regex of Qwen2/2.5/3's `tokenizer.json`).
const QWEN2_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: u64 = 1;
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

/// Where each GGUF tensor goes in the HF folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorPlacement {
    /// Written under this HF name.
    Keep(String),
    /// Not part of an embedding model (the LM head): left out.
    Drop,
}

/// The tensors of a Qwen2/Qwen3 GGUF under their Hugging Face names, dequantised to `f32` when
/// read: a [`TensorSource`] the model loader and `check_weights` take like a safetensors
/// checkpoint. Tensors with no place in an embedding model (the LM head) are left out.
pub struct QwenGgufTensors {
    gguf: GgufFile,
    /// HF name -> index into `gguf.tensors`, sorted by name.
    names: std::collections::BTreeMap<String, usize>,
    /// GGUF names left out.
    pub dropped: Vec<String>,
}

impl QwenGgufTensors {
    /// Map every tensor of `gguf`; an unknown tensor name is an error naming it.
    pub fn new(gguf: GgufFile) -> Result<Self> {
        architecture(&gguf)?;
        let mut names = std::collections::BTreeMap::new();
        let mut dropped = Vec::new();
        for (i, t) in gguf.tensors.iter().enumerate() {
            match placement(&t.name) {
                Ok(TensorPlacement::Keep(hf)) => {
                    names.insert(hf, i);
                }
                Ok(TensorPlacement::Drop) => dropped.push(t.name.clone()),
                Err(reason) => {
                    return Err(QzhouError::Gguf {
                        file: gguf.name().to_string(),
                        reason,
                    })
                }
            }
        }
        Ok(Self {
            gguf,
            names,
            dropped,
        })
    }

    /// The GGUF file.
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// The GGUF tensor behind HF name `name`.
    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.names.get(name).map(|&i| &self.gguf.tensors[i])
    }
}

impl TensorSource for QwenGgufTensors {
    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let info = self.info(name)?;
        Some(TensorMeta {
            shape: info.shape(),
            // Every readable type is widened to f32 on read.
            dtype: info
                .ggml_type
                .as_ref()
                .map(|_| StoredDtype::F32)
                .map_err(|t| t.clone()),
        })
    }
    fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.info(name).ok_or_else(|| QzhouError::Gguf {
            file: self.gguf.name().to_string(),
            reason: format!("no tensor maps to `{name}`"),
        })?;
        Ok((self.gguf.read_f32(info)?, info.shape()))
    }
}

/// The architecture (`qwen2` or `qwen3`) of a GGUF, or an error naming what it is instead.
pub fn architecture(gguf: &GgufFile) -> Result<&str> {
    let bad = |reason: String| QzhouError::Gguf {
        file: gguf.name().to_string(),
        reason,
    };
    let arch = gguf
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| bad("no `general.architecture` string in the metadata".into()))?;
    match arch {
        "qwen2" | "qwen3" => Ok(arch),
        other => Err(bad(format!(
            "architecture `{other}` is not supported (qwen2, qwen3)"
        ))),
    }
}

/// The HF name of GGUF tensor `name` (llama.cpp's `tensor_mapping.py`, Qwen2/Qwen3 part);
/// an error names a tensor this mapping does not know.
pub fn placement(name: &str) -> std::result::Result<TensorPlacement, String> {
    let keep = |s: String| Ok(TensorPlacement::Keep(s));
    match name {
        "token_embd.weight" => return keep("embed_tokens.weight".into()),
        "output_norm.weight" => return keep("norm.weight".into()),
        "output.weight" => return Ok(TensorPlacement::Drop),
        _ => {}
    }
    let unknown = || format!("tensor `{name}` has no Qwen2/Qwen3 counterpart");
    let rest = name.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, leaf) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    let (module, param) = leaf.rsplit_once('.').ok_or_else(unknown)?;
    if param != "weight" && param != "bias" {
        return Err(unknown());
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return Err(unknown()),
    };
    keep(format!("layers.{layer}.{hf}.{param}"))
}

/// `config.json` for the model in `gguf`, and that JSON as [`QwenConfig::from_json`] reads it
/// (the check that it describes a model qzhou computes); `torch_dtype` names the dtype the
/// weights will be written in.
pub fn config_json(gguf: &GgufFile, torch_dtype: &str) -> Result<(Value, QwenConfig)> {
    let arch = architecture(gguf)?;
    let bad = |reason: String| QzhouError::Gguf {
        file: gguf.name().to_string(),
        reason,
    };
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<Option<u64>> {
        match gguf.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("`{}` is {v:?}, not a count", key(k)))),
        }
    };
    let need = |k: &str| -> Result<u64> {
        uint(k)?.ok_or_else(|| bad(format!("no `{}` in the metadata", key(k))))
    };
    let float = |k: &str| gguf.get(&key(k)).and_then(GgufValue::as_f64);
    if let Some(kind) = gguf
        .get(&key("rope.scaling.type"))
        .and_then(GgufValue::as_str)
    {
        if kind != "none" {
            return Err(QzhouError::Unsupported(format!(
                "GGUF rope scaling `{kind}`"
            )));
        }
    }
    let embd = gguf
        .tensor("token_embd.weight")
        .ok_or_else(|| bad("no `token_embd.weight` tensor".into()))?;
    let vocab_size = *embd.dims.get(1).ok_or_else(|| {
        bad(format!(
            "`token_embd.weight` has dims {:?}, expected [hidden, vocab]",
            embd.dims
        ))
    })?;
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = uint("attention.head_count_kv")?.unwrap_or(heads);
    let mut config = Map::new();
    let arch_name = if arch == "qwen3" {
        "Qwen3Model"
    } else {
        "Qwen2Model"
    };
    config.insert("architectures".into(), json!([arch_name]));
    config.insert("model_type".into(), json!(arch));
    config.insert("vocab_size".into(), json!(vocab_size));
    config.insert("hidden_size".into(), json!(hidden));
    config.insert(
        "intermediate_size".into(),
        json!(need("feed_forward_length")?),
    );
    config.insert("num_hidden_layers".into(), json!(need("block_count")?));
    config.insert("num_attention_heads".into(), json!(heads));
    config.insert("num_key_value_heads".into(), json!(kv_heads));
    if let Some(head_dim) = uint("attention.key_length")? {
        config.insert("head_dim".into(), json!(head_dim));
    }
    if arch == "qwen3" {
        let has_bias = gguf.tensor("blk.0.attn_q.bias").is_some();
        config.insert("attention_bias".into(), json!(has_bias));
    }
    config.insert(
        "rms_norm_eps".into(),
        json!(float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6)),
    );
    // llama.cpp's default base when the metadata has none.
    config.insert(
        "rope_theta".into(),
        json!(float("rope.freq_base").unwrap_or(10_000.0)),
    );
    if let Some(ctx) = uint("context_length")? {
        config.insert("max_position_embeddings".into(), json!(ctx));
    }
    config.insert("hidden_act".into(), json!("silu"));
    config.insert(
        "tie_word_embeddings".into(),
        json!(gguf.tensor("output.weight").is_none()),
    );
    config.insert("torch_dtype".into(), json!(torch_dtype));
    for (gguf_key, hf_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = gguf.get(gguf_key).and_then(GgufValue::as_u64) {
            config.insert(hf_key.into(), json!(id));
        }
    }
    let value = Value::Object(config);
    let parsed = QwenConfig::from_json(value.to_string().as_bytes())?;
    Ok((value, parsed))
}

/// A `tokenizer.json` equivalent to the GGUF's embedded BPE vocabulary: normal tokens form
/// the BPE vocabulary, control tokens become special added tokens and user-defined tokens
/// non-special added ones; llama.cpp's padding entries (type unused) are left out, as in
/// Qwen's own `tokenizer.json`. Only Qwen's byte-level BPE (`tokenizer.ggml.model` = `gpt2`,
/// `tokenizer.ggml.pre` = `qwen2`) is rebuilt; others need the model's own `tokenizer.json`.
pub fn tokenizer_json(gguf: &GgufFile) -> Result<Value> {
    let bad = |reason: String| QzhouError::Gguf {
        file: gguf.name().to_string(),
        reason,
    };
    let text = |k: &str| gguf.get(k).and_then(GgufValue::as_str);
    let model = text("tokenizer.ggml.model").ok_or_else(|| {
        bad(
            "no embedded tokenizer (`tokenizer.ggml.model`); pass the model's tokenizer.json"
                .into(),
        )
    })?;
    let pre = text("tokenizer.ggml.pre").unwrap_or("default");
    if model != "gpt2" || pre != "qwen2" {
        return Err(bad(format!(
            "the embedded tokenizer is `{model}` with pre-tokenizer `{pre}`; only Qwen's (`gpt2` + `qwen2`) can be rebuilt — pass the model's tokenizer.json"
        )));
    }
    let array = |k: &str| match gguf.get(k) {
        Some(GgufValue::Array(items)) => Ok(items),
        _ => Err(bad(format!("no `{k}` array in the metadata"))),
    };
    let tokens = array("tokenizer.ggml.tokens")?;
    let types = array("tokenizer.ggml.token_type")?;
    let merges = array("tokenizer.ggml.merges")?;
    if types.len() != tokens.len() {
        return Err(bad(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, ty)) in tokens.iter().zip(types).enumerate() {
        let token = token
            .as_str()
            .ok_or_else(|| bad(format!("token #{id} is not a string")))?;
        match ty.as_u64() {
            Some(TOKEN_NORMAL) => {
                if vocab.insert(token.to_string(), json!(id)).is_some() {
                    return Err(bad(format!("token `{token}` appears twice")));
                }
            }
            Some(kind @ (TOKEN_CONTROL | TOKEN_USER_DEFINED)) => added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": kind == TOKEN_CONTROL,
            })),
            _ => {}
        }
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let pair = m
                .as_str()
                .and_then(|m| m.split_once(' '))
                .ok_or_else(|| bad(format!("merge #{i} is not `left right`")))?;
            Ok(json!([pair.0, pair.1]))
        })
        .collect::<Result<Vec<Value>>>()?;
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT_REGEX}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_transformers() {
        let cases = [
            ("token_embd.weight", "embed_tokens.weight"),
            ("output_norm.weight", "norm.weight"),
            ("blk.0.attn_norm.weight", "layers.0.input_layernorm.weight"),
            ("blk.3.attn_q.bias", "layers.3.self_attn.q_proj.bias"),
            (
                "blk.11.attn_k_norm.weight",
                "layers.11.self_attn.k_norm.weight",
            ),
            (
                "blk.2.attn_output.weight",
                "layers.2.self_attn.o_proj.weight",
            ),
            (
                "blk.7.ffn_norm.weight",
                "layers.7.post_attention_layernorm.weight",
            ),
            ("blk.23.ffn_down.weight", "layers.23.mlp.down_proj.weight"),
        ];
        for (gguf, hf) in cases {
            assert_eq!(
                placement(gguf),
                Ok(TensorPlacement::Keep(hf.into())),
                "{gguf}"
            );
        }
        assert_eq!(placement("output.weight"), Ok(TensorPlacement::Drop));
        for bad in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.ffn_gate_exps.weight",
            "blk.0.attn_q.scale",
        ] {
            let err = placement(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}

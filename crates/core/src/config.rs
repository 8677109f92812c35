//! The model configuration, read from a HuggingFace `config.json` (`qwen2` or `qwen3`).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{QzhouError, Result};

/// Which HF architecture family the checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Qwen2 / Qwen2.5 (QZhou-Embedding, gte-Qwen2): q/k/v projections carry biases.
    Qwen2,
    /// Qwen3 (Qwen3-Embedding): optional attention bias, RMSNorm on q and k per head.
    Qwen3,
}

/// How tokens may attend to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMode {
    /// Every token sees every real (non-padding) token: QZhou-Embedding.
    Bidirectional,
    /// Token `i` sees tokens `0..=i`: the decoder's own mask (Qwen3-Embedding).
    Causal,
}

impl std::fmt::Display for AttentionMode {
    /// The name [`str::parse`] reads back: `bidirectional`, `causal`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttentionMode::Bidirectional => "bidirectional",
            AttentionMode::Causal => "causal",
        })
    }
}

impl std::str::FromStr for AttentionMode {
    type Err = QzhouError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bidirectional" | "bi" => Ok(Self::Bidirectional),
            "causal" => Ok(Self::Causal),
            other => Err(QzhouError::InvalidOption(format!(
                "attention mode `{other}` (expected bidirectional or causal)"
            ))),
        }
    }
}

/// Architecture hyper-parameters of a Qwen2/Qwen3 decoder used as an encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenConfig {
    /// `qwen2` or `qwen3`.
    pub model_type: ModelType,
    /// Rows of the token-embedding matrix (padded vocabulary, e.g. 151,936).
    pub vocab_size: usize,
    /// Width of the residual stream; also the embedding dimension.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention: query head `j` uses kv head `j / (H / KV)`).
    pub num_key_value_heads: usize,
    /// Per-head width: `head_dim` when given (Qwen3), else `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// Whether q/k/v projections have biases (always for Qwen2; `attention_bias` for Qwen3).
    pub attention_bias: bool,
    /// Whether q and k get a per-head RMSNorm before RoPE (Qwen3).
    pub qk_norm: bool,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// Longest position the model was trained for.
    pub max_position_embeddings: usize,
    /// `architectures` from config.json (used to recognise QZhou's bidirectional model).
    pub architectures: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    attention_bias: Option<bool>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    #[serde(default)]
    architectures: Vec<String>,
}

fn required(v: Option<usize>, name: &str) -> Result<usize> {
    match v {
        Some(0) => Err(QzhouError::Config(format!("`{name}` must be positive"))),
        Some(v) => Ok(v),
        None => Err(QzhouError::Config(format!("missing `{name}`"))),
    }
}

/// Accept a missing/`null` rope scaling or the `default` type; anything else changes the
/// numbers and is refused.
fn check_rope_type(v: &Value, field: &str) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind == "default" {
        Ok(())
    } else {
        Err(QzhouError::Unsupported(format!(
            "`{field}` of type `{kind}`"
        )))
    }
}

impl QwenConfig {
    /// Parse `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| QzhouError::Config(e.to_string()))?;
        let model_type = match raw.model_type.as_deref() {
            Some("qwen2") => ModelType::Qwen2,
            Some("qwen3") => ModelType::Qwen3,
            Some(other) => return Err(QzhouError::UnsupportedModelType(other.to_string())),
            None => return Err(QzhouError::Config("missing `model_type`".into())),
        };
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(QzhouError::Unsupported(format!("hidden_act `{act}`")));
            }
        }
        if raw.use_sliding_window == Some(true) {
            return Err(QzhouError::Unsupported("use_sliding_window = true".into()));
        }
        if let Some(v) = &raw.rope_scaling {
            check_rope_type(v, "rope_scaling")?;
        }
        let mut rope_theta = raw.rope_theta;
        if let Some(p) = &raw.rope_parameters {
            check_rope_type(p, "rope_parameters")?;
            if let Some(t) = p.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = Some(t);
            }
        }
        let rope_theta = rope_theta.ok_or_else(|| {
            QzhouError::Config("missing `rope_theta` (top level or in `rope_parameters`)".into())
        })?;
        if !(rope_theta.is_finite() && rope_theta > 1.0) {
            return Err(QzhouError::Config(format!(
                "`rope_theta` {rope_theta} must be > 1"
            )));
        }

        let hidden_size = required(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = required(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = required(
            raw.num_key_value_heads.or(Some(num_attention_heads)),
            "num_key_value_heads",
        )?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(QzhouError::Config(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => required(Some(d), "head_dim")?,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(QzhouError::Config(format!(
                        "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                    )));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(QzhouError::Config(format!(
                "head_dim {head_dim} must be even for RoPE"
            )));
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(QzhouError::Config(format!(
                "`rms_norm_eps` {rms_norm_eps} must be > 0"
            )));
        }
        let (attention_bias, qk_norm) = match model_type {
            ModelType::Qwen2 => (true, false),
            ModelType::Qwen3 => (raw.attention_bias.unwrap_or(false), true),
        };
        Ok(Self {
            model_type,
            vocab_size: required(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: required(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            attention_bias,
            qk_norm,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(32768),
            architectures: raw.architectures,
        })
    }

    /// The attention mode the checkpoint was trained with, as far as config.json tells:
    /// QZhou's `QZhouModel` is bidirectional; a stock Qwen decoder is causal.
    pub fn native_attention(&self) -> AttentionMode {
        if self.architectures.iter().any(|a| a.contains("QZhou")) {
            AttentionMode::Bidirectional
        } else {
            AttentionMode::Causal
        }
    }

    /// Number of parameters of the encoder (no LM head).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let norms = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let layer =
            h * q + 2 * h * kv + q * h + bias + norms + 3 * h * self.intermediate_size + 2 * h;
        self.vocab_size * h + self.num_hidden_layers * layer + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN25_7B: &str = r#"{"architectures":["QZhouModel"],"model_type":"qwen2","hidden_size":3584,
        "intermediate_size":18944,"num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,
        "vocab_size":152064,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"rope_scaling":null,
        "max_position_embeddings":32768,"hidden_act":"silu","use_sliding_window":false,"sliding_window":131072}"#;

    #[test]
    fn qzhou_config_parses_and_counts_parameters_like_mteb() {
        let c = QwenConfig::from_json(QWEN25_7B.as_bytes()).unwrap();
        assert_eq!(c.head_dim, 128);
        assert!(c.attention_bias && !c.qk_norm);
        assert_eq!(c.native_attention(), AttentionMode::Bidirectional);
        // mteb's ModelMeta for QZhou-Embedding: 7,070,619,136 parameters (no LM head).
        assert_eq!(c.num_parameters(), 7_070_619_136);
    }

    #[test]
    fn qwen3_reads_rope_parameters_and_head_dim() {
        let j = r#"{"model_type":"qwen3","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"vocab_size":10,
            "rope_parameters":{"rope_theta":5000.0,"rope_type":"default"}}"#;
        let c = QwenConfig::from_json(j.as_bytes()).unwrap();
        assert_eq!(
            (c.head_dim, c.rope_theta, c.qk_norm, c.attention_bias),
            (16, 5000.0, true, false)
        );
        assert_eq!(c.native_attention(), AttentionMode::Causal);
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        let base: Value = serde_json::from_str(QWEN25_7B).unwrap();
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            QwenConfig::from_json(b.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(with("model_type", "llama".into()).contains("unsupported model_type `llama`"));
        let e = with(
            "rope_scaling",
            serde_json::json!({"type": "yarn", "factor": 4.0}),
        );
        assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
        assert!(with("hidden_act", "gelu".into()).contains("hidden_act"));
        assert!(with("use_sliding_window", true.into()).contains("sliding"));
        assert!(with("num_key_value_heads", 5.into()).contains("multiple"));
        assert!(with("hidden_size", Value::Null).contains("missing `hidden_size`"));
        let e = QwenConfig::from_json(b"{not json").unwrap_err().to_string();
        assert!(e.starts_with("config.json:"), "{e}");
    }
}

//! The Burn model: a Qwen2/Qwen3 decoder used as a bidirectional or causal encoder.

mod attention;
mod encoder;
mod layer;
mod mlp;
mod rope;

pub use attention::SelfAttention;
pub use encoder::{check_weights, expected_tensors, QwenEncoder};
pub use layer::DecoderLayer;
pub use mlp::SwiGluMlp;
pub use rope::{apply_rope, rope_tables};

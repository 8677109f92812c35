//! The Burn model: a Qwen2/Qwen3 decoder used as a bidirectional or causal encoder.

mod attention;
mod embedding;
mod encoder;
mod layer;
mod linear;
mod lora;
mod mlp;
mod rope;

pub use attention::SelfAttention;
pub use embedding::TokenEmbedding;
pub use encoder::{check_weights, expected_tensors, DeviceStorage, QwenEncoder, StorageSummary};
pub use layer::DecoderLayer;
pub use linear::{Projection, QuantizedLinear, SplitLinear};
pub use lora::LoraLinear;
pub use mlp::SwiGluMlp;
pub use rope::{apply_rope, rope_tables};

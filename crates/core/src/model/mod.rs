//! The Burn model: a Qwen2/Qwen3 decoder used as a bidirectional or causal encoder.

mod attention;
mod dense;
mod embedding;
mod encoder;
mod hf_tensors;
mod layer;
mod linear;
mod lora;
mod lora_linear;
mod mlp;
mod random_init;
mod rope;

pub use attention::SelfAttention;
pub use dense::{linear_rows, matmul_rows};
pub use embedding::TokenEmbedding;
pub use encoder::{check_weights, expected_tensors, DeviceStorage, QwenEncoder, StorageSummary};
pub use hf_tensors::HfTensor;
pub use layer::DecoderLayer;
pub use linear::{Projection, QuantizedLinear, SplitLinear};
pub use lora::{LoraConfig, PROJECTION_NAMES};
pub use lora_linear::LoraLinear;
pub use mlp::SwiGluMlp;
pub use random_init::RandomInit;
pub use rope::{apply_rope, rope_tables};

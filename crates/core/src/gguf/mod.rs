//! llama.cpp GGUF files: the container ([`reader`]), GGML block types and their
//! dequantisation ([`block_types`]), and the mapping of a Qwen2/Qwen3 GGUF to a Hugging Face
//! folder ([`qwen`]: `config.json`, tensor names, `tokenizer.json`).
//!
//! Many users have a model only as GGUF; `qzhou import-gguf` turns one into a folder the rest
//! of the toolchain reads.

pub mod block_types;
pub mod qwen;
pub mod reader;

pub use block_types::GgmlType;
pub use reader::{GgufFile, GgufTensorInfo, GgufValue};

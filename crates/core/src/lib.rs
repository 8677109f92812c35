//! # qzhou-core
//!
//! The QZhou-Embedding model — a Qwen2/Qwen3 decoder run as a bidirectional (or causal)
//! encoder with mean (or last-token) pooling — written once in Burn and generic over the
//! backend: CPU (`Flex`), wgpu/WebGPU and CUDA run the same definition.
//!
//! Pieces, one per module: [`config`] (HF `config.json`), [`model`] (the Burn module),
//! [`weights`] (streaming safetensors), [`tokenizer`], [`prompts`] (QZhou's instruction table),
//! [`sentence_transformers`] (folder metadata), [`pooling`], [`batching`] and the
//! [`Embedder`] that ties them together.
//!
//! This crate does no I/O beyond bytes handed to it, except the optional `fs` module
//! (feature `fs`, default) that reads a model folder from disk.

pub mod backends;
pub mod batching;
pub mod config;
pub mod data;
pub mod embedder;
pub mod error;
#[cfg(feature = "fs")]
pub mod fs;
pub mod gguf;
#[cfg(not(target_family = "wasm"))]
pub mod gptq;
pub mod host_memory;
pub mod kernels;
pub mod losses;
pub mod metrics;
pub mod mining;
pub mod model;
pub mod pooling;
pub mod preprocessor;
pub mod prompts;
pub mod quantization;
pub mod sentence_transformers;
pub mod synthesis;
pub mod tokenizer;
pub mod training;
pub mod weight_pack;
pub mod weights;

pub use config::{AttentionMode, ModelType, QwenConfig};
pub use embedder::{EmbedOptions, Embedder, LoadOptions, ModelFiles, TextKind};
pub use error::{QzhouError, Result};
pub use kernels::{KernelBackend, MatmulKernel};
pub use pooling::Pooling;
pub use preprocessor::Preprocessor;
pub use prompts::PromptStyle;
pub use quantization::Quantization;
pub use tokenizer::{TextTokenizer, Truncation};
pub use weight_pack::{PackManifest, WeightPack};
pub use weights::{Checkpoint, TensorSource};

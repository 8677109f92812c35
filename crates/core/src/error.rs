//! The one error type of `qzhou-core`.

use std::fmt;

/// A tensor whose stored shape differs from the shape the model config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor name as stored in the checkpoint.
    pub name: String,
    /// Shape the config implies, in the checkpoint's (HF) layout.
    pub expected: Vec<usize>,
    /// Shape found in the file.
    pub found: Vec<usize>,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected {:?}, found {:?})",
            self.name, self.expected, self.found
        )
    }
}

/// Everything that can go wrong in `qzhou-core`. Each variant names the offending input.
#[derive(Debug, thiserror::Error)]
pub enum QzhouError {
    /// `config.json` is not valid JSON or lacks a required field.
    #[error("config.json: {0}")]
    Config(String),

    /// A `model_type` other than `qwen2` / `qwen3`.
    #[error("config.json: unsupported model_type `{0}` (supported: qwen2, qwen3)")]
    UnsupportedModelType(String),

    /// A configuration that is valid for transformers but that this implementation does not
    /// compute (rope scaling, sliding windows, other activations).
    #[error("config.json: {0} is not implemented; refusing to compute different numbers than transformers")]
    Unsupported(String),

    /// A safetensors file whose header or layout is broken.
    #[error("{file}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// File (or buffer) name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A GGUF file whose header, metadata or tensor layout is broken or unsupported.
    #[error("{file}: {reason}")]
    Gguf {
        /// File (or buffer) name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `model.safetensors.index.json` is malformed or points at a missing shard.
    #[error("model.safetensors.index.json: {0}")]
    ShardIndex(String),

    /// A training-data record that cannot be used, located by source and line.
    #[error("{input}:{line}: {reason}")]
    Data {
        /// The input (a file path).
        input: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// A web weight pack (manifest or weight file) is malformed, truncated or corrupt.
    #[error("weight pack: {0}")]
    Pack(String),

    /// The checkpoint does not match the model config. Lists every problem at once.
    #[error("weights do not match the config: {}", describe_mismatch(.missing, .unexpected, .mis_shaped, .bad_dtype))]
    WeightMismatch {
        /// Tensors the model needs that no file holds.
        missing: Vec<String>,
        /// Tensors in the files that the model does not use (`lm_head.*` is ignored silently).
        unexpected: Vec<String>,
        /// Tensors with the wrong shape.
        mis_shaped: Vec<ShapeMismatch>,
        /// Tensors stored in a dtype other than f32, f16 or bf16 (name and dtype).
        bad_dtype: Vec<(String, String)>,
    },

    /// Reading a byte source failed.
    #[error("reading {name}: {source}")]
    Io {
        /// File or buffer name.
        name: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file a model folder must have is absent.
    #[error("{0}: file not found")]
    MissingFile(String),

    /// `tokenizer.json` could not be parsed or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A sentence-transformers file (`modules.json`, `1_Pooling/config.json`, ...) is malformed.
    #[error("{file}: {reason}")]
    SentenceTransformers {
        /// File name inside the model folder.
        file: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An input text is empty (or only whitespace).
    #[error("text #{index} is empty")]
    EmptyText {
        /// Position of the text in the input.
        index: usize,
    },

    /// An input text has more tokens than allowed while truncation is off.
    #[error("text #{index} has {tokens} tokens, more than the maximum length {max_length} (turn truncation on or shorten it)")]
    TextTooLong {
        /// Position of the text in the input.
        index: usize,
        /// Its token count.
        tokens: usize,
        /// The limit in force.
        max_length: usize,
    },

    /// A task name that is not in the instruction table.
    #[error("unknown task `{name}`{}", suggestion_suffix(.suggestion))]
    UnknownTask {
        /// The name asked for.
        name: String,
        /// The closest known name, if any is close.
        suggestion: Option<String>,
    },

    /// A prompt name that is neither one of the model folder's sentence-transformers prompts
    /// nor `query`, `document` or `passage`.
    #[error("unknown prompt name `{name}` (this model has: {})", prompt_list(.available))]
    UnknownPrompt {
        /// The name asked for.
        name: String,
        /// The folder's prompt names.
        available: Vec<String>,
    },

    /// A token id with no row in the model's embedding table.
    #[error("text #{index}: token id {id} is out of the vocabulary (ids go up to {})", .vocab_size - 1)]
    TokenOutOfRange {
        /// Position of the text in the input.
        index: usize,
        /// The id.
        id: u32,
        /// Rows of the embedding table.
        vocab_size: usize,
    },

    /// An option value that makes no sense (zero batch budget, max length 0, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The model produced NaN or infinity: broken weights or an unsupported dtype on this backend.
    #[error("embedding #{index} contains NaN or infinity (broken weights, or a dtype this backend cannot compute)")]
    NonFinite {
        /// Position of the text in the input.
        index: usize,
    },

    /// The backend failed to produce a tensor's data.
    #[error("backend: {0}")]
    Backend(String),
}

fn prompt_list(names: &[String]) -> String {
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    for k in ["query", "document", "passage"] {
        if !all.contains(&k) {
            all.push(k);
        }
    }
    all.join(", ")
}

fn suggestion_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

fn describe_mismatch(
    missing: &[String],
    unexpected: &[String],
    mis_shaped: &[ShapeMismatch],
    bad_dtype: &[(String, String)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing [{}]", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected [{}]", unexpected.join(", ")));
    }
    if !mis_shaped.is_empty() {
        let v: Vec<String> = mis_shaped.iter().map(|m| m.to_string()).collect();
        parts.push(format!("wrong shape [{}]", v.join(", ")));
    }
    if !bad_dtype.is_empty() {
        let v: Vec<String> = bad_dtype
            .iter()
            .map(|(n, d)| format!("{n} ({d})"))
            .collect();
        parts.push(format!("unsupported dtype [{}]", v.join(", ")));
    }
    parts.join("; ")
}

/// Result alias for `qzhou-core`.
pub type Result<T> = std::result::Result<T, QzhouError>;

//! The public entry point: a loaded model plus tokenizer, prompts, pooling and batching.
//!
//! ```no_run
//! # #[cfg(feature = "fs")] {
//! use burn::backend::Flex;
//! use qzhou_core::{Embedder, EmbedOptions, LoadOptions};
//! let embedder = Embedder::<Flex>::from_dir("tests/fixtures/tiny-qwen2", &Default::default(), &LoadOptions::default())?;
//! let vectors = embedder.embed(&["what is the capital of France?"], &EmbedOptions::query())?;
//! # }
//! # Ok::<(), qzhou_core::QzhouError>(())
//! ```

use burn::prelude::*;

use crate::batching::{pad_batch, plan_batches};
use crate::config::{AttentionMode, QwenConfig};
use crate::error::{QzhouError, Result};
use crate::kernels::{KernelBackend, MatmulKernel};
use crate::model::{DeviceStorage, QwenEncoder};
use crate::pooling::{l2_normalize, pool, Pooling};
use crate::preprocessor::Preprocessor;
use crate::prompts::PromptStyle;
use crate::sentence_transformers::{SentenceTransformersConfig, SentenceTransformersFiles};
use crate::tokenizer::{TextTokenizer, Truncation};
use crate::weights::TensorSource;

/// Default padded-token budget of one forward pass.
pub const DEFAULT_BATCH_TOKENS: usize = 16_384;
/// Default cap on texts per forward pass.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Default max length when neither the caller nor the model folder sets one (QZhou's
/// advertised context; its benchmark scripts used 1024).
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// Everything a model folder provides, as bytes (no file system access in this crate's core).
pub struct ModelFiles {
    /// `config.json`.
    pub config: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer: Vec<u8>,
    /// The weights: a safetensors [`crate::weights::Checkpoint`] (one file or all shards), a web
    /// [`crate::weight_pack::WeightPack`], or any other [`TensorSource`].
    pub weights: Box<dyn TensorSource>,
    /// Optional sentence-transformers files.
    pub sentence_transformers: SentenceTransformersFiles,
}

/// Choices made when loading; `None` means "as the model folder says".
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Attention mode; default: bidirectional for QZhou (`QZhouModel`), else causal.
    pub attention: Option<AttentionMode>,
    /// Pooling; default: the folder's Pooling module, else mean when bidirectional and last
    /// token when causal.
    pub pooling: Option<Pooling>,
    /// L2 normalisation; default: whether the folder has a Normalize module, else on.
    pub normalize: Option<bool>,
    /// Max tokens per text; default: `sentence_bert_config.json`, else
    /// min(max_position_embeddings, 8192).
    pub max_length: Option<usize>,
    /// What to do with longer texts.
    pub truncation: Truncation,
    /// Padded-token budget of one forward pass.
    pub batch_tokens: usize,
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Largest tensor (bytes) one device buffer may hold; bigger weights are split by rows.
    /// Default: the backend's limit ([`KernelBackend::max_buffer_bytes`]).
    pub max_buffer_bytes: Option<usize>,
    /// Keep a q8/q4 token-embedding table quantised on the device where the backend can look
    /// rows up from it ([`KernelBackend::has_quantized_gather`]); `false` dequantises it to f32
    /// at load (4–8× the memory, the reference path).
    pub quantized_embedding: bool,
    /// Which matmul runs the projections, dense and quantised, where the backend has its own
    /// kernels (wgpu) ([`KernelBackend::use_matmul_kernel`]; process-wide). `None` keeps the
    /// current choice, [`MatmulKernel::Autotune`] by default: the fastest per adapter and
    /// shape, measured on first use (README "Hand-written WGSL kernels").
    pub matmul_kernel: Option<MatmulKernel>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            attention: None,
            pooling: None,
            normalize: None,
            max_length: None,
            truncation: Truncation::Truncate,
            batch_tokens: DEFAULT_BATCH_TOKENS,
            max_batch: DEFAULT_MAX_BATCH,
            max_buffer_bytes: None,
            quantized_embedding: true,
            matmul_kernel: None,
        }
    }
}

/// Which side of a task a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextKind {
    /// A query: gets the instruction prefix.
    #[default]
    Query,
    /// A document/passage: no prefix unless the task applies its instruction to every input.
    Document,
}

/// Per-call options of [`Embedder::embed`].
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// Query or document.
    pub kind: TextKind,
    /// An mteb task name whose QZhou instruction (and instruction side) to use.
    pub task: Option<String>,
    /// An explicit instruction (wins over `task`).
    pub instruction: Option<String>,
    /// Spelling of the query template.
    pub prompt_style: PromptStyle,
    /// A named prompt (the model folder's sentence-transformers `prompts`, or `query` /
    /// `document` / `passage`); wins over `kind`, `task` and `instruction`.
    pub prompt_name: Option<String>,
    /// Pooling for this call; `None`: the model's.
    pub pooling: Option<Pooling>,
    /// L2 normalisation for this call; `None`: the model's.
    pub normalize: Option<bool>,
}

impl EmbedOptions {
    /// Queries with the model's default query prompt.
    pub fn query() -> Self {
        Self {
            kind: TextKind::Query,
            ..Self::default()
        }
    }
    /// Documents (no prefix).
    pub fn document() -> Self {
        Self {
            kind: TextKind::Document,
            ..Self::default()
        }
    }
    /// Set the task.
    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }
    /// Set an explicit instruction.
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.instruction = Some(instruction.into());
        self
    }
}

/// A loaded embedding model on one device.
pub struct Embedder<B: KernelBackend> {
    model: QwenEncoder<B>,
    preprocessor: Preprocessor,
    config: QwenConfig,
    pooling: Pooling,
    normalize: bool,
    batch_tokens: usize,
    max_batch: usize,
    device: B::Device,
}

/// What an [`Embedder`] takes from a model folder besides the weights.
struct Settings {
    config: QwenConfig,
    tokenizer: TextTokenizer,
    sentence_transformers: SentenceTransformersConfig,
    pooling: Option<Pooling>,
    normalize: bool,
}

impl Settings {
    fn read(
        config: &[u8],
        tokenizer: &[u8],
        st_files: &SentenceTransformersFiles,
        options: &LoadOptions,
    ) -> Result<Self> {
        if options.batch_tokens == 0 || options.max_batch == 0 {
            return Err(QzhouError::InvalidOption(
                "batch token budget and max batch must be at least 1".into(),
            ));
        }
        let config = QwenConfig::from_json(config)?;
        let st = SentenceTransformersConfig::from_files(st_files)?;
        let normalize = options.normalize.or(st.normalize).unwrap_or(true);
        let max_length = options
            .max_length
            .or(st.max_seq_length)
            .unwrap_or(config.max_position_embeddings.min(DEFAULT_MAX_LENGTH));
        if max_length > config.max_position_embeddings {
            return Err(QzhouError::InvalidOption(format!(
                "max length {max_length} exceeds the model's max_position_embeddings {}",
                config.max_position_embeddings
            )));
        }
        let tokenizer = TextTokenizer::from_json(tokenizer, max_length, options.truncation)?;
        Ok(Self {
            pooling: options.pooling.or(st.pooling),
            config,
            tokenizer,
            sentence_transformers: st,
            normalize,
        })
    }

    fn with_model<B: KernelBackend>(
        self,
        model: QwenEncoder<B>,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Embedder<B> {
        let pooling = self.pooling.unwrap_or(match model.attention_mode() {
            AttentionMode::Bidirectional => Pooling::Mean,
            AttentionMode::Causal => Pooling::LastToken,
        });
        Embedder {
            model,
            preprocessor: Preprocessor::new(self.tokenizer, self.sentence_transformers.prompts),
            config: self.config,
            pooling,
            normalize: self.normalize,
            batch_tokens: options.batch_tokens,
            max_batch: options.max_batch,
            device: device.clone(),
        }
    }
}

impl<B: KernelBackend> Embedder<B> {
    /// Build from a model folder's bytes.
    pub fn from_files(
        files: ModelFiles,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        // Everything but the weights first, so a bad tokenizer or option fails before the load.
        let settings = Settings::read(
            &files.config,
            &files.tokenizer,
            &files.sentence_transformers,
            options,
        )?;
        let attention = options
            .attention
            .unwrap_or_else(|| settings.config.native_attention());
        let mut storage = DeviceStorage::for_backend::<B>(device);
        storage.quantized_embedding &= options.quantized_embedding;
        if let Some(kernel) = options.matmul_kernel {
            B::use_matmul_kernel(kernel);
        }
        if let Some(limit) = options.max_buffer_bytes {
            if limit == 0 {
                return Err(QzhouError::InvalidOption(
                    "max buffer bytes must be at least 1".into(),
                ));
            }
            storage.max_buffer_bytes = Some(limit);
        }
        // Weights live as long as the model: exactly sized buffers where the backend has them.
        let weights = files.weights.as_ref();
        let config = &settings.config;
        let model = B::with_persistent_memory(device, || {
            QwenEncoder::load(config, attention, weights, device, &storage)
        })?;
        Ok(settings.with_model(model, device, options))
    }

    /// Wrap an encoder already in memory (a model being trained, say) with a model folder's
    /// `config.json`, `tokenizer.json` and sentence-transformers files; pooling follows the
    /// encoder's own attention mode unless the options or files say otherwise.
    pub fn from_model(
        model: QwenEncoder<B>,
        config: &[u8],
        tokenizer: &[u8],
        sentence_transformers: &SentenceTransformersFiles,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let options = LoadOptions {
            attention: Some(model.attention_mode()),
            ..options.clone()
        };
        let settings = Settings::read(config, tokenizer, sentence_transformers, &options)?;
        Ok(settings.with_model(model, device, &options))
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The model config.
    pub fn config(&self) -> &QwenConfig {
        &self.config
    }

    /// The Burn module (for training or custom pipelines).
    pub fn model(&self) -> &QwenEncoder<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        self.preprocessor.tokenizer()
    }

    /// Prompts and tokenizer (clone it to tokenise on other threads).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Pooling in force.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether outputs are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }

    /// Attention mode in force.
    pub fn attention(&self) -> AttentionMode {
        self.model.attention_mode()
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The exact string put before each text for these options ([`Preprocessor::prefix`]).
    pub fn prefix(&self, options: &EmbedOptions) -> Result<String> {
        self.preprocessor.prefix(options)
    }

    /// Embed `texts` (prefix chosen by `options`), one vector per text in input order.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts, options)?;
        self.embed_token_ids_with(&ids, self.readout(options))
    }

    /// [`Embedder::embed`] with asynchronous read-back: the only way to read a WebGPU tensor
    /// in a browser, and fine on every backend.
    pub async fn embed_async<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts, options)?;
        let readout = self.readout(options);
        let mut out = vec![Vec::new(); ids.len()];
        for batch in self.plan(&ids)? {
            let (input_ids, mask) = self.pad(&ids, &batch);
            let pooled = self.encode_with(input_ids, mask, readout.0, readout.1);
            let data = pooled
                .into_data_async()
                .await
                .map_err(|e| QzhouError::Backend(format!("{e:?}")))?;
            self.place(&mut out, &batch, to_f32(data)?)?;
        }
        Ok(out)
    }

    /// Token ids of `texts` after prefixing, checking for empty and (optionally) over-long texts.
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<u32>>> {
        self.preprocessor.tokenize(texts, options)
    }

    /// Embed already-tokenised texts, batching by length under the token budget. A text's
    /// embedding does not depend on its batch mates (padding keys are masked, pooling is masked).
    pub fn embed_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.embed_token_ids_with(ids, (self.pooling, self.normalize))
    }

    /// [`Embedder::embed_token_ids`] with an explicit pooling and normalisation.
    pub fn embed_token_ids_with(
        &self,
        ids: &[Vec<u32>],
        (pooling, normalize): (Pooling, bool),
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); ids.len()];
        for batch in self.plan(ids)? {
            let (input_ids, mask) = self.pad(ids, &batch);
            let pooled = self.encode_with(input_ids, mask, pooling, normalize);
            let data = pooled
                .try_into_data()
                .map_err(|e| QzhouError::Backend(format!("{e:?}")))?;
            self.place(&mut out, &batch, to_f32(data)?)?;
        }
        Ok(out)
    }

    /// Pooling and normalisation for a call.
    fn readout(&self, options: &EmbedOptions) -> (Pooling, bool) {
        (
            options.pooling.unwrap_or(self.pooling),
            options.normalize.unwrap_or(self.normalize),
        )
    }

    /// Batches (indices into `ids`) by length under the token budget. Empty texts, texts
    /// longer than the max length and ids without an embedding row are errors naming the text.
    fn plan(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<usize>>> {
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        if let Some(index) = lengths.iter().position(|&l| l == 0) {
            return Err(QzhouError::EmptyText { index });
        }
        let max_length = self.tokenizer().max_length();
        if let Some(index) = lengths.iter().position(|&l| l > max_length) {
            return Err(QzhouError::TextTooLong {
                index,
                tokens: lengths[index],
                max_length,
            });
        }
        check_vocabulary(ids, self.config.vocab_size)?;
        Ok(plan_batches(&lengths, self.batch_tokens, self.max_batch))
    }

    /// The padded `[batch, seq]` ids and mask of one planned batch.
    fn pad(&self, ids: &[Vec<u32>], batch: &[usize]) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
        pad_batch::<B>(&seqs, self.tokenizer().pad_id(), &self.device)
    }

    /// Scatter a batch's `[batch × dim]` rows back to input order, refusing NaN/inf.
    fn place(&self, out: &mut [Vec<f32>], batch: &[usize], rows: Vec<f32>) -> Result<()> {
        let dim = self.dim();
        for (k, &i) in batch.iter().enumerate() {
            let row = rows[k * dim..(k + 1) * dim].to_vec();
            if row.iter().any(|v| !v.is_finite()) {
                return Err(QzhouError::NonFinite { index: i });
            }
            out[i] = row;
        }
        Ok(())
    }

    /// Forward + pooling (+ normalisation) on device tensors: `input_ids`/`attention_mask`
    /// `[batch, seq]` (right-padded) -> `[batch, dim]`. The building block for async callers
    /// (WebGPU) and training.
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        self.encode_with(input_ids, attention_mask, self.pooling, self.normalize)
    }

    /// [`Embedder::encode`] with an explicit pooling and normalisation.
    pub fn encode_with(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        pooling: Pooling,
        normalize: bool,
    ) -> Tensor<B, 2> {
        let hidden = self.model.forward(input_ids, attention_mask.clone());
        if pooling == Pooling::Mean {
            return B::mean_pool(hidden, attention_mask, normalize);
        }
        let pooled = pool(hidden, attention_mask, pooling);
        if normalize {
            l2_normalize(pooled)
        } else {
            pooled
        }
    }
}

/// Every id of `ids` (one sequence per text) has a row in an embedding table of `vocab_size`
/// rows; the first that does not is [`QzhouError::TokenOutOfRange`] naming its text.
pub fn check_vocabulary(ids: &[Vec<u32>], vocab_size: usize) -> Result<()> {
    for (index, seq) in ids.iter().enumerate() {
        if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(QzhouError::TokenOutOfRange {
                index,
                id,
                vocab_size,
            });
        }
    }
    Ok(())
}

/// Values of a read-back tensor as `f32`.
fn to_f32(data: TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| QzhouError::Backend(format!("{e:?}")))
}

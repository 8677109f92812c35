//! What every handler shares, and the one embedding path both APIs take.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use qzhou_core::{EmbedOptions, Preprocessor};

use super::batcher::Queue;
use super::error::ApiError;
use super::request::{prepare, prompt_options, Body, Inputs, Limits};

/// Facts about the served model (`GET /info`, response `model` fields).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Name reported to clients (`--served-model-name`, else `--model`).
    pub name: String,
    /// `cpu`, `wgpu` or `cuda`.
    pub backend: String,
    /// Compute dtype (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// `mean`, `last-token` or `first-token`.
    pub pooling: String,
    /// `bidirectional` or `causal`.
    pub attention: String,
    /// Whether the model L2-normalises its vectors (OpenAI route).
    pub normalize: bool,
    /// Padded-token budget of one batch.
    pub max_batch_tokens: usize,
    /// Queue capacity (requests).
    pub max_queue: usize,
}

/// Shared state of the HTTP side.
pub struct AppState {
    pub queue: Queue,
    pub preprocessor: Arc<Preprocessor>,
    pub limits: Limits,
    /// The prompt used when a request asks for none.
    pub defaults: EmbedOptions,
    pub info: ModelInfo,
    /// SHA-256 of the API key, when one is required.
    pub api_key_digest: Option<[u8; 32]>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Read the inputs (`field`) and prompt of `body`, tokenise them off the async workers,
    /// queue them and wait for their vectors. Returns the vectors and the token count.
    pub async fn embed(
        &self,
        body: &Body,
        field: &str,
        normalize: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
        let inputs = Inputs::read(body, field)?;
        let (options, asked) = prompt_options(body, &self.defaults)?;
        let truncate = body.bool("truncate")?.unwrap_or(self.limits.auto_truncate);
        let preprocessor = self.preprocessor.clone();
        let limits = self.limits;
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(&preprocessor, inputs, &options, asked, truncate, &limits)
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenisation failed: {e}")))??;
        let vectors = self.queue.embed(prepared.ids, normalize).await?;
        Ok((vectors, prepared.tokens))
    }
}

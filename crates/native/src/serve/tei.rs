//! text-embeddings-inference's API: `POST /embed` and `GET /info`.
//!
//! `/embed` request: `inputs` (string, array of strings, or token-id arrays), `normalize`
//! (default true), `truncate` (default: the server's `--auto-truncate`),
//! `truncation_direction` (`Right` only), `prompt_name`, `dimensions`; qzhou's `input_type`,
//! `task` and `instruction` too. Reply: one array of floats per input.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::request::{check_dimensions, shorten, Body};
use super::state::AppState;

/// `POST /embed`.
pub async fn embed(
    State(state): State<Arc<AppState>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let body = Body::parse(bytes)?;
    let normalize = body.bool("normalize")?.unwrap_or(true);
    if let Some(direction) = body.string("truncation_direction")? {
        if !direction.eq_ignore_ascii_case("right") {
            return Err(ApiError::invalid(
                "invalid_truncation_direction",
                format!("`truncation_direction` is `{direction}`; only `Right` is supported"),
            ));
        }
    }
    let dims = body.positive("dimensions")?;
    check_dimensions(dims, &state.limits)?;
    let (mut vectors, _) = state.embed(&body, "inputs", normalize).await?;
    shorten(&mut vectors, dims, normalize, &state.limits)?;
    Ok(Json(vectors))
}

/// `GET /info`: the model and the server's limits, in TEI's field names where TEI has one.
pub async fn info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let i = &state.info;
    let l = &state.limits;
    Json(serde_json::json!({
        "model_id": i.name,
        "model_sha": null,
        "model_dtype": i.dtype,
        "model_type": {"embedding": {"pooling": i.pooling}},
        "max_concurrent_requests": i.max_queue,
        "max_input_length": l.max_length,
        "max_batch_tokens": i.max_batch_tokens,
        "max_batch_requests": null,
        "max_client_batch_size": l.max_inputs,
        "max_input_tokens": l.max_input_tokens,
        "auto_truncate": l.auto_truncate,
        "tokenization_workers": null,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": i.backend,
        "attention": i.attention,
        "normalize": i.normalize,
        "dimensions": l.dim,
        "prompts": state.preprocessor.prompt_names().collect::<Vec<_>>(),
    }))
}

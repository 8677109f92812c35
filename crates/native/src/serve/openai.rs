//! OpenAI's embeddings API: `POST /v1/embeddings` and `GET /v1/models`.
//!
//! Request: `input` (string, array of strings, token ids, or arrays of token ids), `model`
//! (any string; the reply names the served model), `encoding_format` (`float` | `base64`:
//! little-endian f32 bytes), `dimensions` (keep the first N values, re-normalised), `user`
//! (ignored); qzhou's extensions `input_type` (`query` | `document`), `task`, `instruction`,
//! `prompt_name` and `truncate`, which OpenAI clients never send.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine;
use serde::Serialize;

use super::error::ApiError;
use super::request::{check_dimensions, shorten, Body};
use super::state::AppState;

#[derive(Serialize)]
pub struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingList>, ApiError> {
    let body = Body::parse(bytes)?;
    body.string("model")?;
    let base64 = match body.string("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_encoding_format",
                format!("`encoding_format` is `{other}`; expected `float` or `base64`"),
            ))
        }
    };
    let dims = body.positive("dimensions")?;
    check_dimensions(dims, &state.limits)?;
    let normalize = state.info.normalize;
    let (mut vectors, tokens) = state.embed(&body, "input", normalize).await?;
    shorten(&mut vectors, dims, normalize, &state.limits)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Float(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: state.info.name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// `GET /v1/models`: the one served model.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "list",
        "data": [{"id": state.info.name, "object": "model", "created": 0, "owned_by": "qzhou"}],
    }))
}

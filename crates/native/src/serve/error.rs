//! Errors as HTTP responses, in OpenAI's shape on every route:
//! `{"error": {"message": ..., "type": ..., "param": null, "code": ...}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use qzhou_core::QzhouError;

/// A request that cannot be served, with the status and the words the client sees.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's error `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// A stable machine-readable code (`too_many_inputs`, `queue_full`, ...).
    pub code: &'static str,
    pub message: String,
    /// Seconds for the `Retry-After` header (overload).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or asks for something that does not exist.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 413: the request is over one of the server's size limits.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
        )
    }

    /// 429: the queue is full; try again after `retry_after` seconds.
    pub fn overloaded(queue: usize, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                format!("the server is busy ({queue} requests queued); retry later"),
            )
        }
    }

    /// 503: the model is gone (shutting down, or its thread stopped).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            message.into(),
        )
    }

    /// 500: the model failed on a valid request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "model_error",
            message.into(),
        )
    }

    /// 404 for an unknown path.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "unknown_route",
            format!("no route {path} (routes: POST /v1/embeddings, POST /embed, GET /info, GET /v1/models, GET /health, GET /metrics)"),
        )
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "method not allowed on this route".into(),
        )
    }
}

impl From<QzhouError> for ApiError {
    /// Input errors are the client's (4xx, naming the input); anything else is the model's.
    fn from(e: QzhouError) -> Self {
        let message = e.to_string();
        match e {
            QzhouError::EmptyText { .. } => Self::invalid("empty_input", message),
            QzhouError::TextTooLong { .. } => Self::too_large("input_too_long", message),
            QzhouError::UnknownTask { .. } => Self::invalid("unknown_task", message),
            QzhouError::UnknownPrompt { .. } => Self::invalid("unknown_prompt", message),
            QzhouError::TokenOutOfRange { .. } => Self::invalid("token_out_of_range", message),
            QzhouError::InvalidOption(_) => Self::invalid("invalid_option", message),
            QzhouError::Tokenizer(_) => Self::invalid("tokenizer_error", message),
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

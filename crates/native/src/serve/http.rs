//! The router: routes, API-key check, request metrics, body limit, panic guard, and serving
//! until SIGTERM / Ctrl-C with in-flight requests drained.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;

use super::error::ApiError;
use super::state::AppState;
use super::{openai, tei, telemetry};

/// The application, `max_body_bytes` being the largest request body read.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/embed", post(tei::embed))
        .route("/info", get(tei::info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .layer(middleware::from_fn(record_request))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Serve `listener` until SIGTERM or Ctrl-C, then stop accepting and finish what is in flight.
pub async fn serve(listener: std::net::TcpListener, app: Router) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    eprintln!("qzhou serve: shutting down, finishing requests in flight");
}

/// `GET /health`: 200 while the model thread takes work.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.queue.is_alive() {
        Json(serde_json::json!({"status": "ok", "queue_depth": state.queue.depth()}))
            .into_response()
    } else {
        ApiError::unavailable("the model thread has stopped").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// `Authorization: Bearer <key>` on every route but `/health`, when the server has a key.
/// Keys are compared as SHA-256 digests, so the time taken says nothing about the key.
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(want) = &state.api_key_digest else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|key| key_digest(key.trim()));
    match given {
        Some(d) if d.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// SHA-256 of an API key.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Count and time every request by route (the matched pattern, so ids in paths cannot blow up
/// the label set) and status.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    telemetry::request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// A handler panic becomes a 500 in the usual error shape (the server keeps serving).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("internal error while handling the request").into_response()
}

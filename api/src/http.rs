//! HTTP routes. This surface is operational: `/health` and `/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::warn;

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state)
}

/// Liveness: the process answers.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers, and where the log's head is.
async fn ready(State(state): State<AppState>) -> Response {
    let store = async {
        state.store.ping().await?;
        state.store.head_position().await
    }
    .await;
    match store {
        Ok(position) => Json(json!({
            "status": "ready",
            "store": { "status": "ok", "backend": format!("{:?}", state.store.backend()).to_lowercase() },
            "position": position,
        }))
        .into_response(),
        Err(e) => {
            warn!(error = %e, "store is not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": {
                        "code": "unavailable",
                        "message": "the event store is not reachable",
                        "details": { "store": "unavailable" }
                    }
                })),
            )
                .into_response()
        }
    }
}

//! From a use case's answer to a response: bodies go through
//! `serde_json::Value`, so their keys come out sorted exactly as they
//! always have (NATS replies are rendered the same way, byte for byte).

use app::Written;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;

/// A value as a JSON body, keys sorted.
pub fn body<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| {
        tracing::error!(error = %e, "a response could not be serialized");
        ApiError::Internal
    })
}

/// 200 with `value` as JSON.
pub fn ok<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    Ok(Json(body(value)?).into_response())
}

/// A write's answer: 201 when it created something, else 200; a replay of
/// an earlier request with the same key says so in `Idempotent-Replayed`.
pub fn written<T: Serialize>(w: &Written<T>) -> Result<Response, ApiError> {
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(body(&w.value)?)).into_response();
    if w.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

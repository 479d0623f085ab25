//! Request extractors that turn bad input into the SPEC's 4xx errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use events::{AccountId, IdempotencyKey};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

/// Largest request body accepted.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest a read waits for `min_position`.
pub const MIN_POSITION_WAIT_MILLIS_MAX: u64 = 5_000;

/// A JSON body, parsed with the failing field named, and the hash of its
/// canonical form (what an idempotency key is bound to).
pub struct Body<T> {
    pub value: T,
    pub canonical: String,
}

impl<T> FromRequest<AppState> for Body<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit_bytes: REQUEST_BODY_BYTES_MAX,
                }
            } else {
                ApiError::bad_request(format!("could not read the request body: {r}"))
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // Syntax first, so that malformed JSON is a 400 and wrong values 422.
        let raw: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        if !raw.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let canonical = raw.to_string();
        let value = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            let message = e.into_inner().to_string();
            ApiError::InvalidRequest {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: if field.is_empty() {
                    message
                } else {
                    format!("{field}: {message}")
                },
                details: json!({ "field": field }),
            }
        })?;
        Ok(Self { value, canonical })
    }
}

/// The `Idempotency-Key` header, if present and well-formed.
pub struct IdemKey(pub Option<IdempotencyKey>);

impl IdemKey {
    /// The key, or 400 when this endpoint needs one and it is missing.
    pub fn required(self) -> Result<IdempotencyKey, ApiError> {
        self.0.ok_or_else(|| ApiError::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message: "this endpoint requires an Idempotency-Key header".into(),
            details: json!({ "header": "Idempotency-Key" }),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let text = raw
            .to_str()
            .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
        IdempotencyKey::parse(text)
            .map(|k| Self(Some(k)))
            .map_err(|e| ApiError::InvalidRequest {
                status: StatusCode::BAD_REQUEST,
                message: format!("Idempotency-Key {}", e.reason),
                details: json!({ "header": "Idempotency-Key" }),
            })
    }
}

/// Parses an account id from a path segment.
pub fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|_| ApiError::NotFound("account not found".into()))
}

/// Waits, bounded, until the read models reach `?min_position=N`; 503 when
/// they do not in time. Every read takes this before it reads.
pub struct Fresh;

impl FromRequestParts<AppState> for Fresh {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(query) = parts.uri.query() else {
            return Ok(Self);
        };
        let mut min = None;
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("min_position=") {
                min = Some(v.parse::<i64>().map_err(|_| {
                    ApiError::invalid_field("min_position", "min_position must be an integer")
                })?);
            }
        }
        let Some(min) = min else { return Ok(Self) };
        let wait = std::time::Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX);
        if state.projector.wait_for(min, wait).await {
            Ok(Self)
        } else {
            Err(ApiError::Unavailable(format!(
                "the read models have not reached position {min} yet; retry shortly"
            )))
        }
    }
}

//! Request extractors that turn bad input into the SPEC's 4xx errors.

use std::marker::PhantomData;

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

/// The field a deserialization error is about: its path, or for a missing
/// or unknown top-level field the name serde puts in backticks.
fn field_of(path: &str, message: &str) -> String {
    if path != "." && !path.is_empty() {
        return path.to_owned();
    }
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        if let Some(name) = message.split('`').nth(1) {
            return name.to_owned();
        }
    }
    String::new()
}

fn invalid<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let field = field_of(&path, &message);
    ApiError::InvalidRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: if field.is_empty() || message.contains(&format!("`{field}`")) {
            message
        } else {
            format!("{field}: {message}")
        },
        details: json!({ "field": field }),
    }
}

/// A request body, read (size-limited) but not yet parsed: handlers check
/// the caller's role first, then [`Body::parse`], so a refused caller gets
/// 403 whatever it sent.
pub struct Body<T> {
    bytes: Bytes,
    _t: PhantomData<T>,
}

/// A parsed JSON body and its canonical form (sorted keys, no spaces): what
/// an idempotency key is bound to.
pub struct Parsed<T> {
    pub value: T,
    pub canonical: String,
}

impl<T: DeserializeOwned> Body<T> {
    /// Parses the body: malformed JSON is 400, a wrong or missing value 422
    /// naming the field. An empty body reads as `{}`.
    pub fn parse(self) -> Result<Parsed<T>, ApiError> {
        let text: &[u8] = if self.bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.bytes
        };
        let raw: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        if !raw.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let canonical = raw.to_string();
        let value = serde_path_to_error::deserialize(raw).map_err(invalid)?;
        Ok(Parsed { value, canonical })
    }
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
        Ok(Self {
            bytes,
            _t: PhantomData,
        })
    }
}

/// A query string, parsed after the role check like [`Body`], with the
/// failing parameter named.
pub struct Q<T> {
    raw: String,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Q<T> {
    pub fn parse(&self) -> Result<T, ApiError> {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(self.raw.as_bytes()));
        serde_path_to_error::deserialize(de).map_err(invalid)
    }
}

impl<S: Send + Sync, T> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            raw: parts.uri.query().unwrap_or_default().to_owned(),
            _t: PhantomData,
        })
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

/// An RFC 3339 time in a body or query field, as UTC; else 422 naming
/// `field`.
pub fn time(field: &str, raw: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            ApiError::invalid_field(
                field,
                format!("{field} must be an RFC 3339 time such as 2026-03-01T00:00:00Z"),
            )
        })
}

/// Parses an account id from a path segment.
pub fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|_| ApiError::NotFound("account not found".into()))
}

/// `?min_position=N`: handlers call [`Fresh::wait`] after the role check,
/// which waits (bounded) until the read models reach N, else 503.
pub struct Fresh(Option<i64>);

impl Fresh {
    pub async fn wait(&self, state: &AppState) -> Result<(), ApiError> {
        let Some(min) = self.0 else { return Ok(()) };
        let wait = std::time::Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX);
        if state.projector.wait_for(min, wait).await {
            Ok(())
        } else {
            Err(ApiError::Unavailable(format!(
                "the read models have not reached position {min} yet; retry shortly"
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Fresh {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(query) = parts.uri.query() else {
            return Ok(Self(None));
        };
        let mut min = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == "min_position" {
                min = Some(v.parse::<i64>().map_err(|_| {
                    ApiError::invalid_field("min_position", "min_position must be an integer")
                })?);
            }
        }
        Ok(Self(min))
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn errors_name_the_field_from_the_path_or_the_message() {
        assert_eq!(field_of("units", "invalid type"), "units");
        assert_eq!(field_of(".", "missing field `slug`"), "slug");
        assert_eq!(
            field_of(".", "unknown field `foo`, expected one of `a`"),
            "foo"
        );
        assert_eq!(field_of(".", "invalid type: map"), "");
    }
}

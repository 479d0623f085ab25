//! `ApiError`: the one error type of the HTTP API, rendered in the SPEC's
//! format `{"error": {"code", "message", "details"}}`. 5xx bodies say
//! nothing internal; the cause goes to the log.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Malformed syntax (400) or a well-formed request with bad values (422).
    InvalidRequest {
        status: StatusCode,
        message: String,
        details: Value,
    },
    Unauthorized(String),
    Forbidden(String),
    AccountSuspended,
    NotFound(String),
    Conflict(String),
    IdempotencyKeyReused,
    InsufficientCredits {
        balance: i64,
        available: i64,
        required: i64,
    },
    UnknownOperation(String),
    PayloadTooLarge {
        limit_bytes: usize,
    },
    RateLimited {
        retry_after_seconds: u64,
    },
    Unavailable(String),
    /// A payment gateway answered with an error or nonsense (502); the
    /// code stays the SPEC's `unavailable`.
    BadGateway(String),
    Internal,
}

impl ApiError {
    /// 422 naming the field that is wrong.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            details: json!({ "field": field }),
        }
    }

    /// 400 for a request that cannot be read at all.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { status, .. } => *status,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::AccountSuspended => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::IdempotencyKeyReused => StatusCode::CONFLICT,
            Self::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::UnknownOperation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::AccountSuspended => "account_suspended",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::UnknownOperation(_) => "unknown_operation",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) | Self::BadGateway(_) => "unavailable",
            Self::Internal => "internal",
        }
    }

    fn message_and_details(&self) -> (String, Value) {
        match self {
            Self::InvalidRequest {
                message, details, ..
            } => (message.clone(), details.clone()),
            Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Unavailable(m)
            | Self::BadGateway(m) => (m.clone(), json!({})),
            Self::AccountSuspended => (
                "the account is suspended; reads still work".into(),
                json!({}),
            ),
            Self::IdempotencyKeyReused => (
                "this Idempotency-Key was already used with a different request".into(),
                json!({}),
            ),
            Self::InsufficientCredits {
                balance,
                available,
                required,
            } => (
                format!("insufficient credits: {available} available, {required} required"),
                json!({ "balance": balance, "available": available, "required": required }),
            ),
            Self::UnknownOperation(op) => (
                format!("unknown operation {op:?}"),
                json!({ "operation": op }),
            ),
            Self::PayloadTooLarge { limit_bytes } => (
                format!("the request body is larger than {limit_bytes} bytes"),
                json!({ "limit_bytes": limit_bytes }),
            ),
            Self::RateLimited {
                retry_after_seconds,
            } => (
                "too many requests; retry later".into(),
                json!({ "retry_after_seconds": retry_after_seconds }),
            ),
            Self::Internal => ("internal error".into(), json!({})),
        }
    }

    /// The body, as rendered.
    pub fn body(&self) -> Value {
        let (message, details) = self.message_and_details();
        json!({ "error": { "code": self.code(), "message": message, "details": details } })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message_and_details().0)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Self::RateLimited {
            retry_after_seconds,
        } = &self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_credits_carries_the_numbers() {
        let e = ApiError::InsufficientCredits {
            balance: 5,
            available: 3,
            required: 10,
        };
        assert_eq!(e.status(), StatusCode::PAYMENT_REQUIRED);
        let body = e.body();
        assert_eq!(body["error"]["code"], "insufficient_credits");
        assert_eq!(body["error"]["details"]["available"], 3);
        assert_eq!(body["error"]["details"]["required"], 10);
    }

    #[test]
    fn internal_errors_say_nothing_internal() {
        let body = ApiError::Internal.body();
        assert_eq!(body["error"]["message"], "internal error");
        assert_eq!(body["error"]["details"], json!({}));
    }
}

//! `ApiError`: the HTTP rendering of an error in the SPEC's format
//! `{"error": {"code", "message", "details"}}`. 5xx bodies say nothing
//! internal; the cause goes to the log.
//!
//! The use cases answer [`app::AppError`]; `From` turns one into this.
//! Only what HTTP itself refuses (an unknown route or asset, a body over
//! its limit) is built here directly.

use app::AppError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

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
    BudgetExceeded {
        monthly_credits: i64,
        used: i64,
        held: i64,
        required: i64,
    },
    UnknownOperation(String),
    OperationInactive(String),
    PlanLimit {
        limit: i64,
        used: i64,
    },
    InvitationExpired(String),
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
    /// An atomic batch refused for one item (the use case's error as is).
    InBatch {
        index: usize,
        idempotency_key: Option<String>,
        error: Box<AppError>,
    },
}

impl ApiError {
    /// 422 naming the field that is wrong.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        AppError::invalid_field(field, message).into()
    }

    /// 400 for a request that cannot be read at all.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::bad_request(message).into()
    }

    /// The use cases' error this is (its status, code and body are that
    /// error's: the SPEC's table lives in `app::error` alone).
    pub fn app(&self) -> AppError {
        self.clone().into()
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.app().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> &'static str {
        self.app().code()
    }

    /// The body, as rendered.
    pub fn body(&self) -> Value {
        self.app().body()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::InvalidRequest {
                status,
                message,
                details,
            } => Self::InvalidRequest {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                message,
                details,
            },
            AppError::Unauthorized(m) => Self::Unauthorized(m),
            AppError::Forbidden(m) => Self::Forbidden(m),
            AppError::AccountSuspended => Self::AccountSuspended,
            AppError::NotFound(m) => Self::NotFound(m),
            AppError::Conflict(m) => Self::Conflict(m),
            AppError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            AppError::InsufficientCredits {
                balance,
                available,
                required,
            } => Self::InsufficientCredits {
                balance,
                available,
                required,
            },
            AppError::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            } => Self::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            },
            AppError::UnknownOperation(op) => Self::UnknownOperation(op),
            AppError::OperationInactive(op) => Self::OperationInactive(op),
            AppError::PlanLimit { limit, used } => Self::PlanLimit { limit, used },
            AppError::InvitationExpired(m) => Self::InvitationExpired(m),
            AppError::PayloadTooLarge { limit_bytes } => Self::PayloadTooLarge { limit_bytes },
            AppError::RateLimited {
                retry_after_seconds,
            } => Self::RateLimited {
                retry_after_seconds,
            },
            AppError::Unavailable(m) => Self::Unavailable(m),
            AppError::BadGateway(m) => Self::BadGateway(m),
            AppError::Internal => Self::Internal,
            AppError::InBatch {
                index,
                idempotency_key,
                error,
            } => Self::InBatch {
                index,
                idempotency_key,
                error,
            },
        }
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidRequest {
                status,
                message,
                details,
            } => Self::InvalidRequest {
                status: status.as_u16(),
                message,
                details,
            },
            ApiError::Unauthorized(m) => Self::Unauthorized(m),
            ApiError::Forbidden(m) => Self::Forbidden(m),
            ApiError::AccountSuspended => Self::AccountSuspended,
            ApiError::NotFound(m) => Self::NotFound(m),
            ApiError::Conflict(m) => Self::Conflict(m),
            ApiError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            ApiError::InsufficientCredits {
                balance,
                available,
                required,
            } => Self::InsufficientCredits {
                balance,
                available,
                required,
            },
            ApiError::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            } => Self::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            },
            ApiError::UnknownOperation(op) => Self::UnknownOperation(op),
            ApiError::OperationInactive(op) => Self::OperationInactive(op),
            ApiError::PlanLimit { limit, used } => Self::PlanLimit { limit, used },
            ApiError::InvitationExpired(m) => Self::InvitationExpired(m),
            ApiError::PayloadTooLarge { limit_bytes } => Self::PayloadTooLarge { limit_bytes },
            ApiError::RateLimited {
                retry_after_seconds,
            } => Self::RateLimited {
                retry_after_seconds,
            },
            ApiError::Unavailable(m) => Self::Unavailable(m),
            ApiError::BadGateway(m) => Self::BadGateway(m),
            ApiError::Internal => Self::Internal,
            ApiError::InBatch {
                index,
                idempotency_key,
                error,
            } => Self::InBatch {
                index,
                idempotency_key,
                error,
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.app().fmt(f)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(retry_after_seconds) = self.app().retry_after_seconds() {
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
    fn an_error_renders_with_the_status_and_body_of_the_app_table() {
        let e = ApiError::InsufficientCredits {
            balance: 5,
            available: 3,
            required: 10,
        };
        assert_eq!(e.status(), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(e.body(), e.app().body());
        assert_eq!(e.body()["error"]["details"]["required"], 10);
    }

    #[test]
    fn a_rate_limit_carries_retry_after() {
        let r = ApiError::RateLimited {
            retry_after_seconds: 3,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "3");
    }
}

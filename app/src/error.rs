//! `AppError`: the one error of every use case, and the SPEC's error table
//! (§3) as data: each variant's status and code. Transports render it
//! (HTTP as a response, NATS as a reply with `"status"`); 5xx bodies say
//! nothing internal, the cause goes to the log.
//!
//! Domain and store errors become `AppError`s here, in one place, through
//! `From` (or, where a domain error needs the field it is about, the named
//! mapping functions below).

use ledger::account::HoldState;
use ledger::{
    AccountError, CatalogError, InvoiceError, PaymentError, PriceError, SubscriptionError,
    TeamError,
};
use projections::ProjectionError;
use serde_json::{json, Value};
use store::{ServiceError, StoreError};
use tracing::error;

/// HTTP status numbers of the SPEC's table. Kept as plain numbers: they are
/// the contract's vocabulary (NATS replies carry them too), not a transport
/// type.
pub mod status {
    pub const OK: u16 = 200;
    pub const CREATED: u16 = 201;
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const PAYMENT_REQUIRED: u16 = 402;
    pub const FORBIDDEN: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const CONFLICT: u16 = 409;
    pub const GONE: u16 = 410;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const UNPROCESSABLE_ENTITY: u16 = 422;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
    pub const BAD_GATEWAY: u16 = 502;
    pub const SERVICE_UNAVAILABLE: u16 = 503;
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    /// Malformed syntax (400) or a well-formed request with bad values (422).
    InvalidRequest {
        status: u16,
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
    /// A hard monthly budget would be exceeded (402 `budget_exceeded`).
    BudgetExceeded {
        monthly_credits: i64,
        used: i64,
        held: i64,
        required: i64,
    },
    UnknownOperation(String),
    /// The operation exists but staff turned it off (422).
    OperationInactive(String),
    /// A plan limit is reached (409 `plan_limit`).
    PlanLimit {
        limit: i64,
        used: i64,
    },
    /// An invitation expired or was revoked (410 `invitation_expired`).
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
    /// An atomic batch refused for one of its items: that item's error,
    /// named by its index (and key); nothing of the batch was applied.
    InBatch {
        index: usize,
        idempotency_key: Option<String>,
        error: Box<AppError>,
    },
}

impl AppError {
    /// 422 naming the field that is wrong.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            status: status::UNPROCESSABLE_ENTITY,
            message: message.into(),
            details: json!({ "field": field }),
        }
    }

    /// 400 for a request that cannot be read at all.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            status: status::BAD_REQUEST,
            message: message.into(),
            details: json!({}),
        }
    }

    /// The status of this error in the SPEC's table.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest { status, .. } => *status,
            Self::Unauthorized(_) => status::UNAUTHORIZED,
            Self::Forbidden(_) | Self::AccountSuspended => status::FORBIDDEN,
            Self::NotFound(_) => status::NOT_FOUND,
            Self::Conflict(_) | Self::IdempotencyKeyReused => status::CONFLICT,
            Self::InsufficientCredits { .. } | Self::BudgetExceeded { .. } => {
                status::PAYMENT_REQUIRED
            }
            Self::UnknownOperation(_) | Self::OperationInactive(_) => status::UNPROCESSABLE_ENTITY,
            Self::PlanLimit { .. } => status::CONFLICT,
            Self::InvitationExpired(_) => status::GONE,
            Self::PayloadTooLarge { .. } => status::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => status::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => status::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => status::BAD_GATEWAY,
            Self::Internal => status::INTERNAL_SERVER_ERROR,
            Self::InBatch { error, .. } => error.status(),
        }
    }

    /// A 5xx: the request did not happen through no fault of the caller.
    pub fn is_server_error(&self) -> bool {
        self.status() >= 500
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
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::UnknownOperation(_) => "unknown_operation",
            Self::OperationInactive(_) => "operation_inactive",
            Self::PlanLimit { .. } => "plan_limit",
            Self::InvitationExpired(_) => "invitation_expired",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) | Self::BadGateway(_) => "unavailable",
            Self::Internal => "internal",
            Self::InBatch { error, .. } => error.code(),
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
            | Self::InvitationExpired(m)
            | Self::BadGateway(m) => (m.clone(), json!({})),
            Self::PlanLimit { limit, used } => (
                format!(
                    "the plan allows {limit} users and {used} seats are taken (active members \
                     and open invitations); upgrade the plan or free a seat"
                ),
                json!({ "limit": limit, "used": used }),
            ),
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
            Self::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            } => (
                format!(
                    "the monthly budget of {monthly_credits} credits is reached: {used} used and \
                     {held} held this month, {required} more asked"
                ),
                json!({
                    "monthly_credits": monthly_credits,
                    "used": used,
                    "held": held,
                    "required": required,
                }),
            ),
            Self::UnknownOperation(op) => (
                format!("unknown operation {op:?}"),
                json!({ "operation": op }),
            ),
            Self::OperationInactive(op) => (
                format!("operation {op:?} is not active: it cannot be used now"),
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
            Self::InBatch {
                index,
                idempotency_key,
                error,
            } => {
                let (message, mut details) = error.message_and_details();
                if let Value::Object(d) = &mut details {
                    d.insert("index".into(), json!(index));
                    d.insert("idempotency_key".into(), json!(idempotency_key));
                }
                (
                    format!("item {index}: {message}; no item was applied"),
                    details,
                )
            }
        }
    }

    /// The body, as every transport renders it:
    /// `{"error": {"code", "message", "details"}}`.
    pub fn body(&self) -> Value {
        let (message, details) = self.message_and_details();
        json!({ "error": { "code": self.code(), "message": message, "details": details } })
    }

    /// Seconds a caller should wait before retrying, for `Retry-After`.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            Self::InBatch { error, .. } => error.retry_after_seconds(),
            _ => None,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message_and_details().0)
    }
}

impl std::error::Error for AppError {}

/// A store failure is the store being away: 503, details in the log only.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store failure");
        AppError::Unavailable("the ledger's store is unavailable; retry shortly".into())
    }
}

impl From<ProjectionError> for AppError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::BadCursor => {
                AppError::invalid_field("cursor", "the cursor is not one of this list")
            }
            ProjectionError::Store(e) => e.into(),
            other => {
                error!(error = %other, "read model failure");
                AppError::Internal
            }
        }
    }
}

fn field(name: &str, message: impl ToString) -> AppError {
    AppError::invalid_field(name, message.to_string())
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::AccountNotFound => AppError::NotFound("account not found".into()),
            AccountError::AccountAlreadyOpen => {
                AppError::Conflict("the account is already open".into())
            }
            AccountError::AccountSuspended => AppError::AccountSuspended,
            AccountError::AccountCancelled => AppError::Conflict("the account is cancelled".into()),
            AccountError::InsufficientCredits {
                balance,
                available,
                required,
            } => AppError::InsufficientCredits {
                balance,
                available,
                required,
            },
            AccountError::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            } => AppError::BudgetExceeded {
                monthly_credits,
                used,
                held,
                required,
            },
            e @ AccountError::InvalidBudget { .. } => field("budget", e),
            e @ AccountError::InvalidAutoTopUp { .. } => field("auto_top_up", e),
            e @ AccountError::InvalidCredits { .. } => field("credits", e),
            e @ AccountError::CreditLimitOutOfRange { .. } => field("credit_limit", e),
            e @ AccountError::CreditLimitBelowUsage { .. } => field("credit_limit", e),
            e @ AccountError::InvalidThreshold { .. } => field("low_balance_threshold", e),
            e @ AccountError::HoldTtlOutOfRange { .. } => field("ttl_seconds", e),
            e @ AccountError::ExpiryNotInFuture { .. } => field("expires_at", e),
            e @ AccountError::ZeroAdjustment => field("credits", e),
            e @ AccountError::InvalidBillingStatus { .. } => field("status", e),
            e @ AccountError::TooManyOpenHolds { .. } => AppError::Conflict(e.to_string()),
            AccountError::HoldNotFound { .. } => AppError::NotFound("hold not found".into()),
            AccountError::HoldNotOpen { hold_id, state } => AppError::Conflict(format!(
                "hold {hold_id} is no longer open: it was {}",
                match state {
                    HoldState::Captured => "captured",
                    HoldState::Released => "released",
                    HoldState::Expired => "released at its expiry",
                }
            )),
            AccountError::DeductionNotFound { .. } => {
                AppError::NotFound("deduction not found".into())
            }
            AccountError::RefundExceedsDeduction {
                refundable,
                requested,
                ..
            } => AppError::InvalidRequest {
                status: status::UNPROCESSABLE_ENTITY,
                message: format!(
                    "a refund of {requested} exceeds the {refundable} credits still refundable"
                ),
                details: json!({ "field": "credits", "refundable": refundable }),
            },
            AccountError::Pricing(e @ PriceError::UnitsOutOfRange { .. }) => field("units", e),
            AccountError::Pricing(e @ PriceError::Overflow { .. }) => field("units", e),
            e @ AccountError::Overflow => field("credits", e),
        }
    }
}

impl From<CatalogError> for AppError {
    fn from(e: CatalogError) -> Self {
        match e {
            e @ CatalogError::InvalidSlug => field("slug", e),
            e @ CatalogError::Negative { field: f } => field(f, e),
            e @ CatalogError::InvalidDiscount => field("discount_percent", e),
            e @ CatalogError::InvalidPrices => field("prices", e),
            e @ CatalogError::InvalidCost { .. } => field("cost", e),
            e @ CatalogError::NewCostNeedsPrice => field("cost", e),
            e @ CatalogError::InvalidCountry => field("country", e),
            e @ CatalogError::FieldLength { field: f, .. } => field(f, e),
            e @ CatalogError::InvalidSwift => field("swift", e),
            e @ CatalogError::InvalidSortOrder { .. } => field("sort_order", e),
        }
    }
}

impl From<InvoiceError> for AppError {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::NotFound => AppError::NotFound("invoice not found".into()),
            e @ (InvoiceError::AlreadyIssued
            | InvoiceError::IllegalTransition { .. }
            | InvoiceError::PaidByAnotherPayment) => AppError::Conflict(e.to_string()),
            e @ InvoiceError::InvalidQuantity { .. } => field("quantity", e),
            e @ InvoiceError::NegativePrice { .. } => field("unit_price", e),
            e @ InvoiceError::InvalidTaxRate => field("tax_rate", e),
            e => field("invoice", e),
        }
    }
}

impl From<PaymentError> for AppError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::NotFound => AppError::NotFound("payment not found".into()),
            e @ PaymentError::SameApprover => AppError::Forbidden(e.to_string()),
            e @ (PaymentError::NotPending { .. } | PaymentError::AlreadySubmitted) => {
                AppError::Conflict(e.to_string())
            }
            e @ PaymentError::NotManual { .. } => field("method", e),
            e @ (PaymentError::NonPositiveAmount | PaymentError::AmountMismatch { .. }) => {
                field("amount", e)
            }
            e @ PaymentError::ReferenceTooLong => field("reference", e),
            e @ PaymentError::NotGateway { .. } => field("method", e),
            e @ PaymentError::AmountPrecision { .. } => field("amount", e),
            e @ (PaymentError::NotRefundable { .. }
            | PaymentError::RefundExceedsPaid { .. }
            | PaymentError::TooManyRefunds
            | PaymentError::AlreadySucceeded) => AppError::Conflict(e.to_string()),
            PaymentError::InvalidGatewayRef => {
                AppError::BadGateway("the payment gateway returned an unusable reference".into())
            }
        }
    }
}

impl From<SubscriptionError> for AppError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::NotFound => AppError::NotFound("subscription not found".into()),
            e @ (SubscriptionError::InvalidPlan | SubscriptionError::IncompatiblePlan(_)) => {
                field("plan", e)
            }
            e @ SubscriptionError::UnknownInvoice(_) => AppError::NotFound(e.to_string()),
            e => AppError::Conflict(e.to_string()),
        }
    }
}

impl From<TeamError> for AppError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::PlanLimit { limit, used } => AppError::PlanLimit { limit, used },
            e @ (TeamError::UnknownInvitation | TeamError::UnknownMember(_)) => {
                AppError::NotFound(e.to_string())
            }
            e @ (TeamError::InvitationExpired | TeamError::InvitationRevoked) => {
                AppError::InvitationExpired(e.to_string())
            }
            e @ TeamError::OwnerOnly => AppError::Forbidden(e.to_string()),
            // A command without its seed: the use case always sends one.
            TeamError::NotStarted => AppError::Internal,
            e @ (TeamError::AlreadyMember(_)
            | TeamError::AlreadyInvited(_)
            | TeamError::InvitationUsed
            | TeamError::LastOwner
            | TeamError::TooMany
            | TeamError::AlreadyOwner(_)) => AppError::Conflict(e.to_string()),
        }
    }
}

/// A failed command run whose domain refusal needs a mapping of its own
/// (the rest as [`From<ServiceError>`]).
pub fn service_error<E: std::error::Error>(
    e: ServiceError<E>,
    domain: impl FnOnce(E) -> AppError,
) -> AppError {
    match e {
        ServiceError::Domain(d) => domain(d),
        ServiceError::KeyReused { .. } => AppError::IdempotencyKeyReused,
        ServiceError::Reserved { scope, value } => {
            AppError::Conflict(format!("{scope} {value:?} is already taken"))
        }
        ServiceError::Contention { .. } => AppError::RateLimited {
            retry_after_seconds: 1,
        },
        ServiceError::NotApplied { index } => AppError::Conflict(format!(
            "not applied: item {index} of the atomic batch was refused"
        )),
        ServiceError::Store(e) => e.into(),
    }
}

/// What a command run came to when it failed: the domain's refusal through
/// its own `From`, the service's own outcomes (a reused key, a taken
/// reservation, contention, the store away) through the table.
impl<E> From<ServiceError<E>> for AppError
where
    E: std::error::Error + Into<AppError>,
{
    fn from(e: ServiceError<E>) -> Self {
        service_error(e, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_credits_carries_the_numbers() {
        let e = AppError::InsufficientCredits {
            balance: 5,
            available: 3,
            required: 10,
        };
        assert_eq!(e.status(), status::PAYMENT_REQUIRED);
        let body = e.body();
        assert_eq!(body["error"]["code"], "insufficient_credits");
        assert_eq!(body["error"]["details"]["available"], 3);
        assert_eq!(body["error"]["details"]["required"], 10);
    }

    #[test]
    fn internal_errors_say_nothing_internal() {
        let body = AppError::Internal.body();
        assert_eq!(body["error"]["message"], "internal error");
        assert_eq!(body["error"]["details"], json!({}));
    }

    #[test]
    fn a_store_failure_is_unavailable_and_says_nothing_of_its_cause() {
        let e: AppError = StoreError::Persistence("password=hunter2".into()).into();
        assert_eq!(e.status(), status::SERVICE_UNAVAILABLE);
        assert!(!e.body().to_string().contains("hunter2"));
    }
}

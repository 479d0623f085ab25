use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pricing::PriceError;

/// What became of a hold that is no longer open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Captured,
    Released,
    Expired,
}

/// Every way a command to a credit account can be refused. Technical
/// failures (storage, network) are not domain errors and never appear here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account does not exist")]
    AccountNotFound,
    #[error("the account is already open")]
    AccountAlreadyOpen,
    #[error("the account is suspended")]
    AccountSuspended,
    #[error("the account is cancelled")]
    AccountCancelled,
    #[error("{status} is not a billing status (suspension has its own commands)")]
    InvalidBillingStatus { status: &'static str },
    #[error("insufficient credits: available {available}, required {required}")]
    InsufficientCredits {
        balance: i64,
        available: i64,
        required: i64,
    },
    #[error("credits must be between 1 and {max}, got {credits}")]
    InvalidCredits { credits: i64, max: i64 },
    #[error(
        "the monthly budget of {monthly_credits} credits is reached: {used} used and {held} held this month, {required} more asked"
    )]
    BudgetExceeded {
        monthly_credits: i64,
        used: i64,
        held: i64,
        required: i64,
    },
    #[error("{reason}")]
    InvalidBudget { reason: &'static str },
    #[error("{reason}")]
    InvalidAutoTopUp { reason: &'static str },
    #[error("credit limit must be between 0 and {max}, got {credit_limit}")]
    CreditLimitOutOfRange { credit_limit: i64, max: i64 },
    #[error(
        "credit limit {credit_limit} is below what is already used; the least allowed is {minimum}"
    )]
    CreditLimitBelowUsage { credit_limit: i64, minimum: i64 },
    #[error("low-balance threshold must not be negative, got {threshold}")]
    InvalidThreshold { threshold: i64 },
    #[error("hold TTL must be between 1 and {max} seconds, got {ttl_seconds}")]
    HoldTtlOutOfRange { ttl_seconds: u64, max: u64 },
    #[error("the account has {max} open holds, the most allowed")]
    TooManyOpenHolds { max: usize },
    #[error("hold {hold_id} does not exist")]
    HoldNotFound { hold_id: Uuid },
    #[error("hold {hold_id} is no longer open: {state:?}")]
    HoldNotOpen { hold_id: Uuid, state: HoldState },
    #[error("deduction {deduction_id} does not exist")]
    DeductionNotFound { deduction_id: Uuid },
    #[error("refund of {requested} exceeds the {refundable} credits still refundable on deduction {deduction_id}")]
    RefundExceedsDeduction {
        deduction_id: Uuid,
        refundable: i64,
        requested: i64,
    },
    #[error("expiry {expires_at} is not in the future")]
    ExpiryNotInFuture { expires_at: DateTime<Utc> },
    #[error("an adjustment must not be zero")]
    ZeroAdjustment,
    #[error(transparent)]
    Pricing(#[from] PriceError),
    #[error("the amount overflows the account's balance")]
    Overflow,
}

//! From commands to responses: running a command for a caller, mapping
//! domain and store errors to the SPEC's codes, and rendering replays.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::{AccountEvent, AccountId, IdempotencyKey};
use ledger::account::HoldState;
use ledger::{AccountCommand, AccountError, CatalogError, CreditAccount, PriceError};
use projections::ProjectionError;
use serde_json::{json, Value};
use store::{
    request_hash, CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError,
    StoreError, SubmitError,
};
use tracing::error;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

/// A store failure is the store being away: 503, details in the log only.
pub fn store_error(e: StoreError) -> ApiError {
    error!(error = %e, "store failure");
    ApiError::Unavailable("the ledger's store is unavailable; retry shortly".into())
}

pub fn projection_error(e: ProjectionError) -> ApiError {
    match e {
        ProjectionError::BadCursor => {
            ApiError::invalid_field("cursor", "the cursor is not one of this list")
        }
        ProjectionError::Store(e) => store_error(e),
        other => {
            error!(error = %other, "read model failure");
            ApiError::Internal
        }
    }
}

fn field(name: &str, message: impl ToString) -> ApiError {
    ApiError::invalid_field(name, message.to_string())
}

pub fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::AccountNotFound => ApiError::NotFound("account not found".into()),
        AccountError::AccountAlreadyOpen => {
            ApiError::Conflict("the account is already open".into())
        }
        AccountError::AccountSuspended => ApiError::AccountSuspended,
        AccountError::AccountCancelled => ApiError::Conflict("the account is cancelled".into()),
        AccountError::InsufficientCredits {
            balance,
            available,
            required,
        } => ApiError::InsufficientCredits {
            balance,
            available,
            required,
        },
        e @ AccountError::InvalidCredits { .. } => field("credits", e),
        e @ AccountError::CreditLimitOutOfRange { .. } => field("credit_limit", e),
        e @ AccountError::CreditLimitBelowUsage { .. } => field("credit_limit", e),
        e @ AccountError::InvalidThreshold { .. } => field("low_balance_threshold", e),
        e @ AccountError::HoldTtlOutOfRange { .. } => field("ttl_seconds", e),
        e @ AccountError::ExpiryNotInFuture { .. } => field("expires_at", e),
        e @ AccountError::ZeroAdjustment => field("credits", e),
        e @ AccountError::InvalidBillingStatus { .. } => field("status", e),
        e @ AccountError::TooManyOpenHolds { .. } => ApiError::Conflict(e.to_string()),
        AccountError::HoldNotFound { .. } => ApiError::NotFound("hold not found".into()),
        AccountError::HoldNotOpen { hold_id, state } => ApiError::Conflict(format!(
            "hold {hold_id} is no longer open: it was {}",
            match state {
                HoldState::Captured => "captured",
                HoldState::Released => "released",
                HoldState::Expired => "released at its expiry",
            }
        )),
        AccountError::DeductionNotFound { .. } => ApiError::NotFound("deduction not found".into()),
        AccountError::RefundExceedsDeduction {
            refundable,
            requested,
            ..
        } => ApiError::InvalidRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
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

pub fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        e @ CatalogError::InvalidSlug => field("slug", e),
        e @ CatalogError::Negative { field: f } => field(f, e),
        e @ CatalogError::InvalidDiscount => field("discount_percent", e),
        e @ CatalogError::InvalidCost { .. } => field("cost", e),
        e @ CatalogError::InvalidCountry => field("country", e),
        e @ CatalogError::FieldLength { field: f, .. } => field(f, e),
        e @ CatalogError::InvalidSwift => field("swift", e),
        e @ CatalogError::InvalidSortOrder { .. } => field("sort_order", e),
    }
}

pub fn service_error<E: std::error::Error>(
    e: ServiceError<E>,
    domain: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match e {
        ServiceError::Domain(d) => domain(d),
        ServiceError::KeyReused { .. } => ApiError::IdempotencyKeyReused,
        ServiceError::Reserved { scope, value } => {
            ApiError::Conflict(format!("{scope} {value:?} is already taken"))
        }
        ServiceError::Contention { .. } => ApiError::RateLimited {
            retry_after_seconds: 1,
        },
        ServiceError::Store(e) => store_error(e),
    }
}

/// The request an idempotency key is bound to: route and canonical body.
pub fn claim(key: &IdempotencyKey, route: &str, canonical_body: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.clone(),
        request_hash: request_hash(format!("{route}\n{canonical_body}").as_bytes()),
    }
}

impl AppState {
    /// Runs an account command for a caller and wakes the projector. Its
    /// latency goes to the `ledger_command_duration_seconds` histogram.
    pub async fn run(
        &self,
        principal: &Principal,
        account: AccountId,
        command: AccountCommand,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, ApiError> {
        let ctx = CommandContext::new(principal.actor());
        let name = command.name();
        let done = super::metrics::time_command(
            name,
            self.submit(&account.to_string(), command, &ctx, claim, reservations),
        )
        .await
        .map_err(|e| service_error(e, account_error))?;
        self.projector.wake();
        Ok(done)
    }

    /// Hands an account command to the group committer (the one in-process
    /// writer of account streams). A full queue reads as contention (429
    /// with Retry-After); a stopped committer as the store being away.
    pub async fn submit(
        &self,
        account_id: &str,
        command: AccountCommand,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, ServiceError<AccountError>> {
        self.committer
            .execute(account_id, command, ctx, claim, reservations)
            .await
            .map_err(|e| match e {
                SubmitError::Overloaded => ServiceError::Contention { attempts: 0 },
                SubmitError::Stopped => {
                    ServiceError::Store(StoreError::Persistence("the committer has stopped".into()))
                }
                SubmitError::Service(e) => e,
            })
    }

    /// The log position for a response: the command's, or the head for a
    /// command that changed nothing.
    pub async fn position_of<A: cqrs_es::Aggregate>(
        &self,
        done: &Executed<A>,
    ) -> Result<i64, ApiError> {
        match done.position() {
            Some(p) => Ok(p),
            None => self.store.head_position().await.map_err(store_error),
        }
    }
}

/// Renders a command's outcome event; a replay gets the same status and
/// body plus `Idempotent-Replayed: true`.
pub fn outcome(
    status: StatusCode,
    done: &Executed<CreditAccount>,
    render: impl Fn(&AccountEvent) -> Option<Value>,
) -> Result<Response, ApiError> {
    let event = done.outcome().ok_or(ApiError::Internal)?;
    let mut body = render(event).ok_or_else(|| {
        error!(?event, "command answered with an unexpected event");
        ApiError::Internal
    })?;
    if let (Some(obj), Some(p)) = (body.as_object_mut(), done.position()) {
        obj.insert("position".into(), json!(p));
    }
    let mut response = (status, Json(body)).into_response();
    if done.replayed.is_some() {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

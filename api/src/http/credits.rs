//! Deductions, holds, captures, releases, refunds, grants and adjustments.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use events::{AccountEvent, AccountId, CostEntry, GrantSource, OperationKey, Usage};
use ledger::account::{
    AdjustCredits, Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits, RefundDeduction,
    ReleaseHold,
};
use ledger::AccountCommand;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::extract::{account_id, Body, IdemKey};
use super::openapi as doc;
use super::respond::{claim, outcome, projection_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

/// Default time a hold lives before the ledger releases it.
pub const HOLD_TTL_SECONDS_DEFAULT: u64 = 900;
/// Longest free text (reasons, descriptions, model names) accepted.
pub const TEXT_BYTES_MAX: usize = 1_024;
/// Most keys in a deduction's `metadata` object.
pub const METADATA_KEYS_MAX: usize = 64;

const WORKERS: &[Role] = &[Role::Developer, Role::SystemBot];

/// Money arrives as a decimal string (`"0.0123"`), never a float.
fn money<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| {
        s.parse::<Decimal>()
            .map_err(|_| serde::de::Error::custom("must be a decimal string such as \"0.0123\""))
    })
    .transpose()
}

fn text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.len() > TEXT_BYTES_MAX => Err(ApiError::invalid_field(
            field,
            format!("{field} must be at most {TEXT_BYTES_MAX} bytes"),
        )),
        v => Ok(v),
    }
}

fn operation(raw: &str) -> Result<OperationKey, ApiError> {
    OperationKey::parse(raw).map_err(|e| ApiError::invalid_field("operation", e.reason))
}

async fn cost(state: &AppState, op: &OperationKey) -> Result<CostEntry, ApiError> {
    state
        .catalog
        .cost(op)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::UnknownOperation(op.to_string()))
}

/// What an operation used, as the worker reports it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFields {
    pub model: Option<String>,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    #[serde(default, deserialize_with = "money")]
    pub cost_usd: Option<Decimal>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UsageFields {
    fn into_usage(self, units: u64) -> Result<Usage, ApiError> {
        if self.cost_usd.is_some_and(|c| c < Decimal::ZERO) {
            return Err(ApiError::invalid_field(
                "cost_usd",
                "cost_usd must not be negative",
            ));
        }
        if self
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > METADATA_KEYS_MAX)
        {
            return Err(ApiError::invalid_field(
                "metadata",
                format!("metadata may have at most {METADATA_KEYS_MAX} keys"),
            ));
        }
        Ok(Usage {
            operation: None,
            units,
            cost_version: None,
            model: text("model", self.model)?,
            tokens_input: self.tokens_input,
            tokens_output: self.tokens_output,
            cost_usd: self.cost_usd,
            related_object_type: text("related_object_type", self.related_object_type)?,
            related_object_id: text("related_object_id", self.related_object_id)?,
            metadata: self.metadata.map(serde_json::Value::Object),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductRequest {
    pub operation: String,
    #[serde(default = "one")]
    #[schema(default = 1)]
    pub units: u64,
    // Flattened fields cannot be combined with deny_unknown_fields, so the
    // usage fields are repeated here.
    pub model: Option<String>,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    #[serde(default, deserialize_with = "money")]
    #[schema(example = "0.0123")]
    pub cost_usd: Option<Decimal>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

fn one() -> u64 {
    1
}

fn deducted(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::CreditsDeducted(d) => Some(json!({
            "id": d.deduction_id,
            "credits": d.credits,
            "operation": d.usage.operation,
            "units": d.usage.units,
            "cost_version": d.usage.cost_version,
            "balance_after": d.balance_after,
            "available_after": d.available_after,
            "recorded_at": d.recorded_at,
        })),
        _ => None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/deductions",
    tag = "credits",
    summary = "Deduct credits for an operation",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = DeductRequest,
    responses(
        (status = 201, description = "The deduction", body = doc::DeductionResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this; `account_suspended`: the account is suspended", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid (`details.field`); `unknown_operation`: the operation is not in the cost table", body = doc::ErrorBody),
    ),
)]
pub async fn deduct(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<DeductRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(WORKERS, account_id(&account)?)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let op = operation(&req.operation)?;
    let cost = cost(&state, &op).await?;
    let usage = UsageFields {
        model: req.model,
        tokens_input: req.tokens_input,
        tokens_output: req.tokens_output,
        cost_usd: req.cost_usd,
        related_object_type: req.related_object_type,
        related_object_id: req.related_object_id,
        metadata: req.metadata,
    }
    .into_usage(req.units)?;
    let command = AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost,
        usage,
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(&key, "deductions", &body.canonical);
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::CREATED, &done, deducted)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub operation: Option<String>,
    pub units: Option<u64>,
    pub credits: Option<i64>,
    pub ttl_seconds: Option<u64>,
}

fn held(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::CreditsHeld(h) => Some(json!({
            "id": h.hold_id,
            "credits": h.credits,
            "operation": h.operation,
            "units": h.units,
            "cost_version": h.cost_version,
            "expires_at": h.expires_at,
            "available_after": h.available_after,
            "held_at": h.held_at,
        })),
        _ => None,
    }
}

/// Credits from a body that names either `credits` or an `operation` (with
/// `units`, default 1).
async fn amount(
    state: &AppState,
    op: Option<String>,
    units: Option<u64>,
    credits: Option<i64>,
) -> Result<Option<Amount>, ApiError> {
    match (op, credits) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "credits",
            "give either credits or operation and units, not both",
        )),
        (Some(op), None) => {
            let op = operation(&op)?;
            Ok(Some(Amount::Priced {
                cost: cost(state, &op).await?,
                units: units.unwrap_or(1),
            }))
        }
        (None, Some(c)) => {
            if units.is_some() {
                return Err(ApiError::invalid_field(
                    "units",
                    "units need an operation to price them",
                ));
            }
            Ok(Some(Amount::Credits(c)))
        }
        (None, None) => {
            if units.is_some() {
                return Err(ApiError::invalid_field(
                    "operation",
                    "units need an operation to price them",
                ));
            }
            Ok(None)
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/holds",
    tag = "credits",
    summary = "Reserve credits (`credits`, or `operation` and `units`)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "The hold", body = doc::HoldResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this; `account_suspended`: the account is suspended", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: too many open holds, or the account is cancelled; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid (`details.field`); `unknown_operation`: the operation is not in the cost table", body = doc::ErrorBody),
    ),
)]
pub async fn hold(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<HoldRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(WORKERS, account_id(&account)?)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let amount = amount(&state, req.operation, req.units, req.credits)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field("credits", "a hold needs credits or an operation")
        })?;
    let command = AccountCommand::HoldCredits(HoldCredits {
        hold_id: Uuid::now_v7(),
        amount,
        ttl_seconds: req.ttl_seconds.unwrap_or(HOLD_TTL_SECONDS_DEFAULT),
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(&key, "holds", &body.canonical);
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::CREATED, &done, held)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    pub credits: Option<i64>,
    pub operation: Option<String>,
    pub units: Option<u64>,
    pub model: Option<String>,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    #[serde(default, deserialize_with = "money")]
    #[schema(example = "0.0123")]
    pub cost_usd: Option<Decimal>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

fn captured(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::HoldCaptured(c) => Some(json!({
            "id": c.deduction_id,
            "hold_id": c.hold_id,
            "held": c.held,
            "credits": c.captured,
            "released": c.released,
            "operation": c.usage.operation,
            "cost_version": c.usage.cost_version,
            "balance_after": c.balance_after,
            "available_after": c.available_after,
            "recorded_at": c.captured_at,
        })),
        _ => None,
    }
}

fn hold_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("hold not found".into()))
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/holds/{hold_id}/capture",
    tag = "credits",
    summary = "Capture a hold (all of it when no amount is given)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("hold_id" = String, Path, description = "The hold's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = CaptureRequest,
    responses(
        (status = 200, description = "The capture and the deduction it made", body = doc::CaptureResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this; `account_suspended`: the account is suspended", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or hold", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the hold is no longer open; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid (`details.field`); `unknown_operation`: the operation is not in the cost table", body = doc::ErrorBody),
    ),
)]
pub async fn capture(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, hold)): Path<(String, String)>,
    key: IdemKey,
    body: Body<CaptureRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(WORKERS, account_id(&account)?)?;
    let body = body.parse()?;
    let hold_id = hold_id(&hold)?;
    let key = key.required()?;
    let req = body.value;
    let units = req.units;
    let amount = amount(&state, req.operation, req.units, req.credits).await?;
    let usage = UsageFields {
        model: req.model,
        tokens_input: req.tokens_input,
        tokens_output: req.tokens_output,
        cost_usd: req.cost_usd,
        related_object_type: req.related_object_type,
        related_object_id: req.related_object_id,
        metadata: req.metadata,
    }
    .into_usage(units.unwrap_or(1))?;
    let amount = match amount {
        Some(a) => a,
        // No amount: capture the whole hold.
        None => {
            let loaded = state
                .store
                .load::<ledger::CreditAccount>(&account.to_string())
                .await
                .map_err(store_error)?;
            match loaded.aggregate.open_holds().get(&hold_id) {
                Some(h) => Amount::Credits(h.credits),
                // Let the aggregate say why (closed, unknown, or a replay).
                None => Amount::Credits(0),
            }
        }
    };
    let command = AccountCommand::CaptureHold(CaptureHold {
        hold_id,
        deduction_id: Uuid::now_v7(),
        amount,
        usage,
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(&key, &format!("holds/{hold_id}/capture"), &body.canonical);
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::OK, &done, captured)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

fn released(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::HoldReleased(r) => Some(json!({
            "hold_id": r.hold_id,
            "credits": r.credits,
            "reason": r.reason,
            "available_after": r.available_after,
            "released_at": r.released_at,
        })),
        _ => None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/holds/{hold_id}/release",
    tag = "credits",
    summary = "Release a hold",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("hold_id" = String, Path, description = "The hold's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = Option<EmptyRequest>,
    responses(
        (status = 200, description = "The release", body = doc::ReleaseResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or hold", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the hold is no longer open; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, hold)): Path<(String, String)>,
    key: IdemKey,
    body: Body<EmptyRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(WORKERS, account_id(&account)?)?;
    let body = body.parse()?;
    let hold_id = hold_id(&hold)?;
    let claim = key
        .0
        .as_ref()
        .map(|k| claim(k, &format!("holds/{hold_id}/release"), &body.canonical));
    let command = AccountCommand::ReleaseHold(ReleaseHold {
        hold_id,
        idempotency_key: key.0,
        now: super::now(),
    });
    let done = state
        .run(&principal, account, command, claim.as_ref(), &[])
        .await?;
    outcome(StatusCode::OK, &done, released)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub credits: Option<i64>,
    pub reason: Option<String>,
}

fn refunded(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::CreditsRefunded(r) => Some(json!({
            "id": r.refund_id,
            "deduction_id": r.deduction_id,
            "credits": r.credits,
            "reason": r.reason,
            "balance_after": r.balance_after,
            "refunded_at": r.refunded_at,
        })),
        _ => None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/deductions/{deduction_id}/refund",
    tag = "credits",
    summary = "Refund all or part of a deduction",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("deduction_id" = String, Path, description = "The deduction's id (a UUID): a deduction's or a capture's `id`"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "The refund", body = doc::RefundResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or deduction", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid, or the refund exceeds what is still refundable (`details.refundable`)", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the usage log the deduction is looked up in is behind the ledger; retry", body = doc::ErrorBody),
    ),
)]
pub async fn refund(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, deduction)): Path<(String, String)>,
    key: IdemKey,
    body: Body<RefundRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(&[Role::Developer, Role::Admin], account_id(&account)?)?;
    let body = body.parse()?;
    let deduction_id = Uuid::parse_str(&deduction)
        .map_err(|_| ApiError::NotFound("deduction not found".into()))?;
    let key = key.required()?;
    let req = body.value;
    let deducted = deducted_credits(&state, &account, deduction_id).await?;
    let command = AccountCommand::RefundDeduction(RefundDeduction {
        refund_id: Uuid::now_v7(),
        deduction_id,
        deducted,
        credits: req.credits,
        reason: text("reason", req.reason)?.unwrap_or_default(),
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(
        &key,
        &format!("deductions/{deduction_id}/refund"),
        &body.canonical,
    );
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::CREATED, &done, refunded)
}

/// The credits a deduction of this account took, from the usage read model.
/// A deduction the projection has not seen yet may still be in flight: then
/// the projection is brought up to the log's head (bounded wait) and asked
/// again, so only a deduction that is really absent reads as `None` (404).
async fn deducted_credits(
    state: &AppState,
    account: &AccountId,
    deduction_id: Uuid,
) -> Result<Option<i64>, ApiError> {
    let (account, deduction) = (account.to_string(), deduction_id.to_string());
    let lookup = || async {
        state
            .read_models
            .deducted_credits(&account, &deduction)
            .await
            .map_err(projection_error)
    };
    if let Some(credits) = lookup().await? {
        return Ok(Some(credits));
    }
    let head = state.store.head_position().await.map_err(store_error)?;
    let wait = std::time::Duration::from_millis(super::extract::MIN_POSITION_WAIT_MILLIS_MAX);
    if !state.projector.wait_for(head, wait).await {
        return Err(ApiError::Unavailable(
            "the usage log is behind the ledger; retry shortly".into(),
        ));
    }
    lookup().await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub credits: i64,
    #[schema(value_type = doc::GrantSource)]
    pub source: GrantSource,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
}

fn granted(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::CreditsGranted(g) => Some(json!({
            "id": g.grant_id,
            "credits": g.credits,
            "source": g.source,
            "expires_at": g.expires_at,
            "description": g.description,
            "balance_after": g.balance_after,
            "granted_at": g.granted_at,
        })),
        _ => None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/grants",
    tag = "credits",
    summary = "Grant credits",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = GrantRequest,
    responses(
        (status = 201, description = "The grant", body = doc::GrantResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn grant(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<GrantRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(&[Role::Developer], account_id(&account)?)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let command = AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits: req.credits,
        source: req.source,
        expires_at: req.expires_at,
        description: text("description", req.description)?,
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(&key, "grants", &body.canonical);
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::CREATED, &done, granted)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    pub credits: i64,
    pub reason: String,
}

fn adjusted(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::CreditsAdjusted(a) => Some(json!({
            "id": a.adjustment_id,
            "credits": a.credits,
            "reason": a.reason,
            "balance_after": a.balance_after,
            "adjusted_at": a.adjusted_at,
        })),
        _ => None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{account_id}/adjust-credits",
    tag = "admin",
    summary = "Adjust credits by a signed amount, with a reason",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = AdjustRequest,
    responses(
        (status = 201, description = "The adjustment", body = doc::AdjustmentResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn adjust(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<AdjustRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(&[Role::Developer], account_id(&account)?)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "reason",
            "an adjustment needs a reason",
        ));
    }
    let command = AccountCommand::AdjustCredits(AdjustCredits {
        adjustment_id: Uuid::now_v7(),
        credits: req.credits,
        reason: text("reason", Some(req.reason))?.unwrap_or_default(),
        idempotency_key: Some(key.clone()),
        now: super::now(),
    });
    let claim = claim(&key, "adjust-credits", &body.canonical);
    let done = state
        .run(&principal, account, command, Some(&claim), &[])
        .await?;
    outcome(StatusCode::CREATED, &done, adjusted)
}

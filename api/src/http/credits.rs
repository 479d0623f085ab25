//! Credits routes: deductions, holds, captures, releases, refunds, grants
//! and adjustments. Each handler extracts, calls `app::credits`, renders.

use app::credits::{
    AdjustRequest, CaptureRequest, DeductBatchRequest, DeductRequest, EmptyRequest, GrantRequest,
    HoldRequest, RefundRequest,
};
use axum::extract::{Path, State};
use axum::response::Response;

use super::extract::{account_id, BatchBody, Body, IdemKey};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/deductions",
    tag = "credits",
    summary = "Deduct credits for an operation",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. Scoped to the account: a retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = app::credits::DeductRequest,
    responses(
        (status = 201, description = "The deduction", body = app::credits::Deduction, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required; `budget_exceeded`: a hard monthly budget would be passed (`details`: monthly_credits, used, held, required)", body = doc::ErrorBody),
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
    let done = app::credits::deduct(
        &state,
        &principal,
        account_id(&account)?,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/deductions/batch",
    tag = "credits",
    summary = "Deduct credits for up to 1,000 operations at once",
    description = "Each item is the body of a single deduction plus its own `idempotency_key` (no `Idempotency-Key` header). Items are decided in order and committed together; each is answered as its single request would be (status, body or error, `idempotent_replayed`), so the answer is 200 whenever the batch was read. With `\"atomic\": true` all items are applied or none: then the answer is the first refused item's error, `details.index` naming it. Body limit 2 MiB.",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = app::credits::DeductBatchRequest,
    responses(
        (status = 200, description = "One result per item, in order", body = app::credits::DeductionBatch),
        (status = 402, description = "Atomic batch: the first item that does not fit (`insufficient_credits` or `budget_exceeded`, `details.index`); nothing was applied", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: another tenant's account", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: no items or more than 1,000 (`details.field` = items); atomic batch: an invalid item (`details.index`)", body = doc::ErrorBody),
    ),
)]
pub async fn deduct_batch(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: BatchBody<DeductBatchRequest>,
) -> Result<Response, ApiError> {
    let done = app::credits::deduct_batch(
        &state,
        &principal,
        Some(account_id(&account)?),
        body.input(),
    )
    .await?;
    render::ok(&done)
}

#[utoipa::path(
    post,
    path = "/v1/deductions/batch",
    tag = "credits",
    summary = "Deduct credits on several accounts at once",
    description = "As `POST /v1/accounts/{account_id}/deductions/batch`, each item naming its `account_id`: for developer tokens, and system_bot tokens (an item on an account outside the token's scope is that item's 404). An atomic batch must be on one account.",
    request_body = app::credits::DeductBatchRequest,
    responses(
        (status = 200, description = "One result per item, in order", body = app::credits::DeductionBatch),
        (status = 402, description = "Atomic batch: the first item that does not fit; nothing was applied", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: no items or more than 1,000; atomic batch: an invalid item or items on several accounts", body = doc::ErrorBody),
    ),
)]
pub async fn deduct_batch_any(
    State(state): State<AppState>,
    principal: Principal,
    body: BatchBody<DeductBatchRequest>,
) -> Result<Response, ApiError> {
    let done = app::credits::deduct_batch(&state, &principal, None, body.input()).await?;
    render::ok(&done)
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
    request_body = app::credits::HoldRequest,
    responses(
        (status = 201, description = "The hold", body = app::credits::Hold, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required; `budget_exceeded`: a hard monthly budget would be passed (`details`: monthly_credits, used, held, required)", body = doc::ErrorBody),
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
    let done = app::credits::hold(
        &state,
        &principal,
        account_id(&account)?,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
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
    request_body = app::credits::CaptureRequest,
    responses(
        (status = 200, description = "The capture and the deduction it made", body = app::credits::Capture, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required; `budget_exceeded`: a hard monthly budget would be passed (`details`: monthly_credits, used, held, required)", body = doc::ErrorBody),
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
    let done = app::credits::capture(
        &state,
        &principal,
        account_id(&account)?,
        &hold,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
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
    request_body = Option<app::credits::EmptyRequest>,
    responses(
        (status = 200, description = "The release", body = app::credits::Release, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
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
    let done = app::credits::release(
        &state,
        &principal,
        account_id(&account)?,
        &hold,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
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
    request_body = app::credits::RefundRequest,
    responses(
        (status = 201, description = "The refund", body = app::credits::Refund, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
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
    let done = app::credits::refund(
        &state,
        &principal,
        account_id(&account)?,
        &deduction,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
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
    request_body = app::credits::GrantRequest,
    responses(
        (status = 201, description = "The grant", body = app::credits::Grant, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
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
    let done = app::credits::grant(
        &state,
        &principal,
        account_id(&account)?,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
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
    request_body = app::credits::AdjustRequest,
    responses(
        (status = 201, description = "The adjustment", body = app::credits::Adjustment, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 402, description = "`insufficient_credits`: `details` has balance, available and required; `budget_exceeded`: a hard monthly budget would be passed (`details`: monthly_credits, used, held, required)", body = doc::ErrorBody),
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
    let done = app::credits::adjust(
        &state,
        &principal,
        account_id(&account)?,
        key.key(),
        body.input(),
    )
    .await?;
    render::written(&done)
}

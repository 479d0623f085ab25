//! Account routes: open, read, update, limits, and the staff's search,
//! suspend and activate. Each handler extracts, calls `app::accounts`,
//! renders.

use app::accounts::{OpenRequest, PatchRequest, SearchQuery, SuspendRequest};
use app::caller::Target;
use app::credits::EmptyRequest;
use axum::extract::{Path, State};
use axum::response::Response;

use super::extract::{account_id, Body, Fresh, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    summary = "Open an account",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = app::accounts::OpenRequest,
    responses(
        (status = 201, description = "The account, opened", body = app::accounts::OpenedAccount, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the slug is taken; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn open(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<OpenRequest>,
) -> Result<Response, ApiError> {
    let done = app::accounts::open(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}",
    tag = "accounts",
    summary = "An account",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The account", body = doc::Account),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::accounts::get(&state, &principal, target, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/settings",
    tag = "accounts",
    summary = "The token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The account", body = doc::Account),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn get_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    render::ok(&app::accounts::get(&state, &principal, Target::Own, fresh.0).await?)
}

#[utoipa::path(
    patch,
    path = "/v1/accounts/{account_id}",
    tag = "accounts",
    summary = "Update an account (absent fields are unchanged)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = app::accounts::PatchRequest,
    responses(
        (status = 200, description = "The account, updated", body = doc::UpdatedAccount),
        (status = 403, description = "`forbidden`: the role may not call this, or only a developer may change `credit_limit`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<PatchRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::accounts::update(&state, &principal, target, body.input()).await?)
}

#[utoipa::path(
    patch,
    path = "/v1/account/settings",
    tag = "accounts",
    summary = "Update the token's account",
    request_body = app::accounts::PatchRequest,
    responses(
        (status = 200, description = "The account, updated", body = doc::UpdatedAccount),
        (status = 403, description = "`forbidden`: the role may not call this, or only a developer may change `credit_limit`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn patch_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<PatchRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::accounts::update(&state, &principal, Target::Own, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/limits",
    tag = "accounts",
    summary = "Plan limits and current counts",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The limits", body = doc::Limits),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn limits(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::accounts::limits(&state, &principal, target, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/limits",
    tag = "accounts",
    summary = "Plan limits of the token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The limits", body = doc::Limits),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn limits_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    render::ok(&app::accounts::limits(&state, &principal, Target::Own, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "admin",
    summary = "Search accounts",
    params(
        app::accounts::SearchQuery,
    ),
    responses(
        (status = 200, description = "A page of accounts", body = doc::AccountPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<SearchQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::accounts::search(&state, &principal, fresh.0, query.query()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{account_id}/suspend",
    tag = "admin",
    summary = "Suspend an account (deductions refused, reads still work)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = Option<app::accounts::SuspendRequest>,
    responses(
        (status = 200, description = "The account status", body = app::accounts::StatusChange),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<SuspendRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&account)?;
    render::ok(&app::accounts::suspend(&state, &principal, account, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{account_id}/activate",
    tag = "admin",
    summary = "Reactivate a suspended account",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = Option<app::credits::EmptyRequest>,
    responses(
        (status = 200, description = "The account status", body = app::accounts::StatusChange),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<EmptyRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&account)?;
    render::ok(&app::accounts::activate(&state, &principal, account, body.input()).await?)
}

//! Budget routes (issue 17): `GET|PUT /v1/accounts/{id}/budget` and the
//! token's-account alias `/v1/account/budget`. Each handler extracts,
//! calls `app::budget`, renders.

use app::auto_top_up::AutoTopUpRequest;
use app::budget::BudgetRequest;
use app::caller::Target;
use axum::extract::{Path, State};
use axum::response::Response;

use super::extract::{account_id, Body};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/budget",
    tag = "accounts",
    summary = "The monthly budget and this month's usage",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    responses(
        (status = 200, description = "The budget (`monthly_credits` null when none is set), the credits used and held this month and the thresholds reached", body = doc::BudgetView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
    ),
)]
pub async fn get_budget(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::budget::get(&state, &principal, target).await?)
}

#[utoipa::path(
    put,
    path = "/v1/accounts/{account_id}/budget",
    tag = "accounts",
    summary = "Set (or, with monthly_credits null, remove) the monthly budget",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = app::budget::BudgetRequest,
    responses(
        (status = 200, description = "The budget as set, with the `position` it reached", body = doc::BudgetView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_budget(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<BudgetRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::budget::put(&state, &principal, target, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/budget",
    tag = "accounts",
    summary = "The monthly budget of the token's account",
    responses(
        (status = 200, description = "The budget and this month's usage", body = doc::BudgetView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn get_budget_own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    render::ok(&app::budget::get(&state, &principal, Target::Own).await?)
}

#[utoipa::path(
    put,
    path = "/v1/account/budget",
    tag = "accounts",
    summary = "Set the monthly budget of the token's account",
    request_body = app::budget::BudgetRequest,
    responses(
        (status = 200, description = "The budget as set", body = doc::BudgetView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid, or the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn put_budget_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<BudgetRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::budget::put(&state, &principal, Target::Own, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/auto-top-up",
    tag = "accounts",
    summary = "The automatic top-up",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    responses(
        (status = 200, description = "The configuration (`threshold` null when none is set), today's top-ups and the failures in a row", body = doc::AutoTopUpView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
    ),
)]
pub async fn get_auto_top_up(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::auto_top_up::get(&state, &principal, target).await?)
}

#[utoipa::path(
    put,
    path = "/v1/accounts/{account_id}/auto-top-up",
    tag = "accounts",
    summary = "Set the automatic top-up",
    description = "When available credits fall below `threshold`, the package is bought once per crossing (at most `daily_limit` times a day): off-session with the saved Stripe card, or as an invoice to pay by bank transfer. Three failures in a row turn it off; each outcome is emailed to the billing email.",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    request_body = app::auto_top_up::AutoTopUpRequest,
    responses(
        (status = 200, description = "The configuration as set, with the `position` it reached", body = doc::AutoTopUpView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: `stripe` while Stripe is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn put_auto_top_up(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<AutoTopUpRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::auto_top_up::put(&state, &principal, target, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/auto-top-up",
    tag = "accounts",
    summary = "The automatic top-up of the token's account",
    responses(
        (status = 200, description = "The configuration", body = doc::AutoTopUpView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn get_auto_top_up_own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    render::ok(&app::auto_top_up::get(&state, &principal, Target::Own).await?)
}

#[utoipa::path(
    put,
    path = "/v1/account/auto-top-up",
    tag = "accounts",
    summary = "Set the automatic top-up of the token's account",
    request_body = app::auto_top_up::AutoTopUpRequest,
    responses(
        (status = 200, description = "The configuration as set", body = doc::AutoTopUpView),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid, or the token names no account", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: `stripe` while Stripe is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn put_auto_top_up_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<AutoTopUpRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::auto_top_up::put(&state, &principal, Target::Own, body.input()).await?)
}

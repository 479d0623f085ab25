//! Read routes: balance, transactions, usage and analytics, on canonical
//! and alias paths. Each handler extracts, calls `app::reads`, renders.

use app::caller::Target;
use app::reads::{AnalyticsQuery, TransactionsQuery, UsageQuery};
use axum::extract::{Path, State};
use axum::response::Response;

use super::extract::{account_id, Fresh, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/balance",
    tag = "reads",
    summary = "Balance, held and available credits",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The balance", body = doc::Balance),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::reads::balance(&state, &principal, target, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/billing/account_balance",
    tag = "reads",
    summary = "Balance of the token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The balance", body = doc::Balance),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn balance_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    render::ok(&app::reads::balance(&state, &principal, Target::Own, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/transactions",
    tag = "reads",
    summary = "Ledger entries, newest first",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        app::reads::TransactionsQuery,
    ),
    responses(
        (status = 200, description = "A page of entries", body = doc::TransactionPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn transactions(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
    query: Q<TransactionsQuery>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let answer =
        app::reads::transactions(&state, &principal, target, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/billing/transactions",
    tag = "reads",
    summary = "Ledger entries of the token's account",
    params(
        app::reads::TransactionsQuery,
    ),
    responses(
        (status = 200, description = "A page of entries", body = doc::TransactionPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn transactions_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<TransactionsQuery>,
) -> Result<Response, ApiError> {
    let answer =
        app::reads::transactions(&state, &principal, Target::Own, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/usage",
    tag = "reads",
    summary = "The usage log",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        app::reads::UsageQuery,
    ),
    responses(
        (status = 200, description = "A page of usage", body = doc::UsagePage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
    query: Q<UsageQuery>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let answer = app::reads::usage(&state, &principal, target, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/billing/usage",
    tag = "reads",
    summary = "The usage log of the token's account",
    params(
        app::reads::UsageQuery,
    ),
    responses(
        (status = 200, description = "A page of usage", body = doc::UsagePage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn usage_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<UsageQuery>,
) -> Result<Response, ApiError> {
    let answer = app::reads::usage(&state, &principal, Target::Own, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/usage/analytics",
    tag = "reads",
    summary = "Usage grouped by day, operation or model",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        app::reads::AnalyticsQuery,
    ),
    responses(
        (status = 200, description = "The groups and their totals", body = doc::Analytics),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn analytics(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
    query: Q<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let answer = app::reads::analytics(&state, &principal, target, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/account/usage/analytics",
    tag = "reads",
    summary = "Usage analytics of the token's account",
    params(
        app::reads::AnalyticsQuery,
    ),
    responses(
        (status = 200, description = "The groups and their totals", body = doc::Analytics),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn analytics_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    let answer =
        app::reads::analytics(&state, &principal, Target::Own, fresh.0, query.query()).await?;
    render::ok(&answer)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/forecast",
    tag = "reads",
    summary = "The next 30 days at the account's burn rate",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "Burn rates, when the credits run out, and the available credits expected each day", body = doc::Forecast),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
    ),
)]
pub async fn forecast(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::reads::forecast(&state, &principal, target, fresh.0).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/forecast",
    tag = "reads",
    summary = "The forecast of the token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "Burn rates, when the credits run out, and the available credits expected each day", body = doc::Forecast),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn forecast_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    render::ok(&app::reads::forecast(&state, &principal, Target::Own, fresh.0).await?)
}

//! Reads from the projections: balance, transactions, usage, analytics.
//! Each waits for `?min_position=` first (the `Fresh` extractor).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use events::AccountId;
use projections::{GroupBy, TransactionFilter, UsageFilter};
use serde::Deserialize;
use serde_json::json;

use super::accounts::page_request;
use super::extract::{account_id, Fresh, Q};
use super::openapi as doc;
use super::respond::projection_error;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

const READERS: &[Role] = &[
    Role::Developer,
    Role::Owner,
    Role::Admin,
    Role::Editor,
    Role::Viewer,
];
/// The longest range one analytics query may cover.
pub const ANALYTICS_DAYS_MAX: i64 = 366;
/// The range analytics cover when the caller names none.
const ANALYTICS_DAYS_DEFAULT: i64 = 30;
const ENTRY_TYPES: [&str; 6] = [
    "grant",
    "deduction",
    "capture",
    "refund",
    "adjustment",
    "expiry",
];

fn not_found() -> ApiError {
    ApiError::NotFound("account not found".into())
}

async fn read_balance(state: &AppState, account: AccountId) -> Result<Response, ApiError> {
    let view = state
        .read_models
        .balance(&account.to_string(), Utc::now())
        .await
        .map_err(projection_error)?
        .ok_or_else(not_found)?;
    let mut body = serde_json::to_value(&view).map_err(|_| ApiError::Internal)?;
    // `position`: how far the read models have read the log, for
    // read-your-writes; `account_position`: this account's last event.
    body["account_position"] = json!(view.position);
    body["position"] = json!(state.projector.position());
    Ok(Json(body).into_response())
}

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
    let account = principal.scope(account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_balance(&state, account).await
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
    fresh.wait(&state).await?;
    read_balance(&state, principal.own_account()?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransactionsQuery {
    #[serde(rename = "type")]
    #[param(value_type = Option<doc::EntryType>)]
    pub entry_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the `Fresh` extractor; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

async fn read_transactions(
    state: &AppState,
    account: AccountId,
    q: TransactionsQuery,
) -> Result<Response, ApiError> {
    if let Some(t) = &q.entry_type {
        if !ENTRY_TYPES.contains(&t.as_str()) {
            return Err(ApiError::invalid_field(
                "type",
                format!("type must be one of {}", ENTRY_TYPES.join(", ")),
            ));
        }
    }
    ensure_account(state, account).await?;
    let page = state
        .read_models
        .transactions(
            &account.to_string(),
            &TransactionFilter {
                entry_type: q.entry_type,
                from: q.from,
                to: q.to,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

async fn ensure_account(state: &AppState, account: AccountId) -> Result<(), ApiError> {
    state
        .read_models
        .account(&account.to_string())
        .await
        .map_err(projection_error)?
        .map(|_| ())
        .ok_or_else(not_found)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/transactions",
    tag = "reads",
    summary = "Ledger entries, newest first",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        TransactionsQuery,
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
    q: Q<TransactionsQuery>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(READERS, account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_transactions(&state, account, q.parse()?).await
}

#[utoipa::path(
    get,
    path = "/v1/billing/transactions",
    tag = "reads",
    summary = "Ledger entries of the token's account",
    params(
        TransactionsQuery,
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
    q: Q<TransactionsQuery>,
) -> Result<Response, ApiError> {
    principal.require(READERS)?;
    fresh.wait(&state).await?;
    read_transactions(&state, principal.own_account()?, q.parse()?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub operation: Option<String>,
    pub model: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the `Fresh` extractor; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

async fn read_usage(
    state: &AppState,
    account: AccountId,
    q: UsageQuery,
) -> Result<Response, ApiError> {
    ensure_account(state, account).await?;
    let page = state
        .read_models
        .usage(
            &account.to_string(),
            &UsageFilter {
                operation: q.operation,
                model: q.model,
                from: q.from,
                to: q.to,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/usage",
    tag = "reads",
    summary = "The usage log",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        UsageQuery,
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
    q: Q<UsageQuery>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(READERS, account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_usage(&state, account, q.parse()?).await
}

#[utoipa::path(
    get,
    path = "/v1/billing/usage",
    tag = "reads",
    summary = "The usage log of the token's account",
    params(
        UsageQuery,
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
    q: Q<UsageQuery>,
) -> Result<Response, ApiError> {
    principal.require(READERS)?;
    fresh.wait(&state).await?;
    read_usage(&state, principal.own_account()?, q.parse()?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    #[param(value_type = Option<doc::GroupBy>, default = "day")]
    pub group_by: Option<String>,
    /// A date (`2026-03-01`) or an RFC 3339 instant; inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the `Fresh` extractor; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

fn day(field: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .or_else(|_| DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc).date_naive()))
        .map_err(|_| {
            ApiError::invalid_field(
                field,
                format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 time"),
            )
        })
}

async fn read_analytics(
    state: &AppState,
    account: AccountId,
    q: AnalyticsQuery,
) -> Result<Response, ApiError> {
    let group_by = match q.group_by.as_deref().unwrap_or("day") {
        "day" => GroupBy::Day,
        "operation" => GroupBy::Operation,
        "model" => GroupBy::Model,
        _ => {
            return Err(ApiError::invalid_field(
                "group_by",
                "group_by must be day, operation or model",
            ))
        }
    };
    let today = Utc::now().date_naive();
    let to =
        q.to.as_deref()
            .map(|t| day("to", t))
            .transpose()?
            .unwrap_or(today);
    let from = q
        .from
        .as_deref()
        .map(|f| day("from", f))
        .transpose()?
        .unwrap_or(to - Duration::days(ANALYTICS_DAYS_DEFAULT - 1));
    if from > to {
        return Err(ApiError::invalid_field("from", "from must not be after to"));
    }
    if (to - from).num_days() >= ANALYTICS_DAYS_MAX {
        return Err(ApiError::invalid_field(
            "from",
            format!("a range covers at most {ANALYTICS_DAYS_MAX} days"),
        ));
    }
    ensure_account(state, account).await?;
    let (from_s, to_s) = (
        from.format("%Y-%m-%d").to_string(),
        to.format("%Y-%m-%d").to_string(),
    );
    let rows = state
        .read_models
        .usage_analytics(&account.to_string(), group_by, &from_s, &to_s)
        .await
        .map_err(projection_error)?;
    let total_credits: i64 = rows.iter().map(|r| r.credits).sum();
    let total_cost: rust_decimal::Decimal = rows.iter().map(|r| r.cost_usd).sum();
    let total_count: i64 = rows.iter().map(|r| r.count).sum();
    Ok(Json(json!({
        "account_id": account,
        "group_by": q.group_by.unwrap_or_else(|| "day".into()),
        "from": from_s,
        "to": to_s,
        "items": rows,
        "totals": { "credits": total_credits, "cost_usd": total_cost, "count": total_count },
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/usage/analytics",
    tag = "reads",
    summary = "Usage grouped by day, operation or model",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        AnalyticsQuery,
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
    q: Q<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(READERS, account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_analytics(&state, account, q.parse()?).await
}

#[utoipa::path(
    get,
    path = "/v1/account/usage/analytics",
    tag = "reads",
    summary = "Usage analytics of the token's account",
    params(
        AnalyticsQuery,
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
    q: Q<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    principal.require(READERS)?;
    fresh.wait(&state).await?;
    read_analytics(&state, principal.own_account()?, q.parse()?).await
}

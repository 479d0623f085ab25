//! Reads from the projections: balance, transactions, usage, analytics.
//! Each checks the caller, then waits for `?min_position=` (bounded), then
//! reads.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use events::AccountId;
use projections::{
    GroupBy, Page, PageRequest, TransactionFilter, TransactionView, UsageFilter, UsageView,
    PAGE_LIMIT_DEFAULT,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access;
use crate::caller::{Caller, Target};
use crate::error::AppError;
use crate::input::Query;
use crate::App;

/// The longest range one analytics query may cover.
pub const ANALYTICS_DAYS_MAX: i64 = 366;
/// The range analytics cover when the caller names none.
const ANALYTICS_DAYS_DEFAULT: i64 = 30;
/// The entry types a transaction list can be filtered by.
pub const ENTRY_TYPES: [&str; 6] = [
    "grant",
    "deduction",
    "capture",
    "refund",
    "adjustment",
    "expiry",
];

fn not_found() -> AppError {
    AppError::NotFound("account not found".into())
}

/// A page request from `?limit=&cursor=`: 422 outside 1..=500.
pub fn page_request(limit: Option<u32>, cursor: Option<String>) -> Result<PageRequest, AppError> {
    let limit = limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if !(1..=projections::PAGE_LIMIT_MAX).contains(&limit) {
        return Err(AppError::invalid_field(
            "limit",
            format!(
                "limit must be between 1 and {}",
                projections::PAGE_LIMIT_MAX
            ),
        ));
    }
    Ok(PageRequest {
        limit,
        after: cursor,
    })
}

/// The account's balance, held and available credits, plan and current
/// period; `position` is how far the read models have read the log (for
/// read-your-writes), `account_position` this account's last event.
pub async fn balance(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
) -> Result<Value, AppError> {
    let account = caller.target(access::READ_BALANCE, target)?;
    app.wait_for(min_position).await?;
    let view = app
        .read_models
        .balance(&account.to_string(), Utc::now())
        .await?
        .ok_or_else(not_found)?;
    let mut body = serde_json::to_value(&view).map_err(|_| AppError::Internal)?;
    body["account_position"] = json!(view.position);
    body["position"] = json!(app.projector.position());
    Ok(body)
}

/// `?type=&from=&to=&limit=&cursor=` of a transaction list.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TransactionsQuery {
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::EntryType>))]
    pub entry_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the transport; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

async fn ensure_account(app: &App, account: AccountId) -> Result<(), AppError> {
    app.read_models
        .account(&account.to_string())
        .await?
        .map(|_| ())
        .ok_or_else(not_found)
}

/// Ledger entries, newest first.
pub async fn transactions(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
    query: Query<TransactionsQuery>,
) -> Result<Page<TransactionView>, AppError> {
    let account = caller.target(access::READ_TRANSACTIONS, target)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    if let Some(t) = &q.entry_type {
        if !ENTRY_TYPES.contains(&t.as_str()) {
            return Err(AppError::invalid_field(
                "type",
                format!("type must be one of {}", ENTRY_TYPES.join(", ")),
            ));
        }
    }
    ensure_account(app, account).await?;
    Ok(app
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
        .await?)
}

/// `?operation=&model=&from=&to=&limit=&cursor=` of the usage log.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub operation: Option<String>,
    pub model: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the transport; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// The usage log, newest first.
pub async fn usage(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
    query: Query<UsageQuery>,
) -> Result<Page<UsageView>, AppError> {
    let account = caller.target(access::READ_USAGE, target)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    ensure_account(app, account).await?;
    Ok(app
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
        .await?)
}

/// `?group_by=&from=&to=` of usage analytics.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::GroupBy>, default = "day"))]
    pub group_by: Option<String>,
    /// A date (`2026-03-01`) or an RFC 3339 instant; inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the transport; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

fn day(field: &str, raw: &str) -> Result<NaiveDate, AppError> {
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .or_else(|_| DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc).date_naive()))
        .map_err(|_| {
            AppError::invalid_field(
                field,
                format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 time"),
            )
        })?;
    crate::input::check_year(field, chrono::Datelike::year(&day))?;
    Ok(day)
}

/// Usage grouped by day, operation or model over a range of days.
pub async fn analytics(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
    query: Query<AnalyticsQuery>,
) -> Result<Value, AppError> {
    let account = caller.target(access::READ_USAGE, target)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    let group_by = match q.group_by.as_deref().unwrap_or("day") {
        "day" => GroupBy::Day,
        "operation" => GroupBy::Operation,
        "model" => GroupBy::Model,
        _ => {
            return Err(AppError::invalid_field(
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
        .unwrap_or_else(|| {
            to.checked_sub_signed(Duration::days(ANALYTICS_DAYS_DEFAULT - 1))
                .unwrap_or(to)
        });
    if from > to {
        return Err(AppError::invalid_field("from", "from must not be after to"));
    }
    if (to - from).num_days() >= ANALYTICS_DAYS_MAX {
        return Err(AppError::invalid_field(
            "from",
            format!("a range covers at most {ANALYTICS_DAYS_MAX} days"),
        ));
    }
    ensure_account(app, account).await?;
    let (from_s, to_s) = (
        from.format("%Y-%m-%d").to_string(),
        to.format("%Y-%m-%d").to_string(),
    );
    let rows = app
        .read_models
        .usage_analytics(&account.to_string(), group_by, &from_s, &to_s)
        .await?;
    // Checked: a total that does not fit is an error, never a panic.
    let overflow = || AppError::Internal;
    let total_credits = rows
        .iter()
        .try_fold(0_i64, |t, r| t.checked_add(r.credits))
        .ok_or_else(overflow)?;
    let total_cost = rows
        .iter()
        .try_fold(rust_decimal::Decimal::ZERO, |t, r| {
            t.checked_add(r.cost_usd)
        })
        .ok_or_else(overflow)?;
    let total_count = rows
        .iter()
        .try_fold(0_i64, |t, r| t.checked_add(r.count))
        .ok_or_else(overflow)?;
    Ok(json!({
        "account_id": account,
        "group_by": q.group_by.unwrap_or_else(|| "day".into()),
        "from": from_s,
        "to": to_s,
        "items": rows,
        "totals": { "credits": total_credits, "cost_usd": total_cost, "count": total_count },
    }))
}

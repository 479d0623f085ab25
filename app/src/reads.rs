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

/// Days of usage the longer burn rate averages.
pub const BURN_DAYS_LONG: i64 = 30;
/// Days of usage the shorter burn rate averages.
pub const BURN_DAYS_SHORT: i64 = 7;
/// Days a forecast projects.
pub const FORECAST_DAYS: i64 = 30;

/// How fast an account spends: the credits its usage took over the last
/// 7 and 30 days (today included), per day; when it runs out at that pace.
#[derive(Debug, Clone, PartialEq)]
pub struct Burn {
    pub used_7d: i64,
    pub used_30d: i64,
    pub rate_7d: rust_decimal::Decimal,
    pub rate_30d: rust_decimal::Decimal,
    /// Credits that may still be spent: available + credit limit.
    pub spendable: i64,
    /// The 7-day rate, else the 30-day one; zero when not burning.
    pub rate: rust_decimal::Decimal,
    pub runs_out_at: Option<DateTime<Utc>>,
}

/// A decimal as a JSON number, rounded to 2 places (a rate for people to
/// read, never money nor a credit count).
fn number(d: rust_decimal::Decimal) -> Value {
    serde_json::from_str(&d.round_dp(2).normalize().to_string()).unwrap_or(Value::Null)
}

impl Burn {
    /// The figures every balance, analytics and forecast answer carries.
    pub fn fields(&self) -> Value {
        json!({
            "burn_rate_7d": number(self.rate_7d),
            "burn_rate_30d": number(self.rate_30d),
            "credits_used_7d": self.used_7d,
            "credits_used_30d": self.used_30d,
            "runs_out_at": self.runs_out_at,
            "days_left": self.days_left(),
        })
    }

    /// Whole days of spending left at `rate`; `None` when not burning.
    pub fn days_left(&self) -> Option<i64> {
        use rust_decimal::prelude::ToPrimitive;
        if self.rate.is_zero() {
            return None;
        }
        (rust_decimal::Decimal::from(self.spendable.max(0)) / self.rate)
            .floor()
            .to_i64()
    }
}

/// The burn of `account` as of `now`, from the daily usage read model.
pub async fn burn(
    app: &App,
    account: &str,
    spendable: i64,
    now: DateTime<Utc>,
) -> Result<Burn, AppError> {
    use rust_decimal::prelude::ToPrimitive;
    use rust_decimal::Decimal;
    let today = now.date_naive();
    let day = |back: i64| {
        today
            .checked_sub_signed(Duration::days(back))
            .unwrap_or(today)
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from_long, from_short, to) = (day(BURN_DAYS_LONG - 1), day(BURN_DAYS_SHORT - 1), day(0));
    let rows = app
        .read_models
        .usage_analytics(account, GroupBy::Day, &from_long, &to)
        .await?;
    let sum = |from: &str| {
        rows.iter()
            .filter(|r| r.key.as_str() >= from)
            .try_fold(0_i64, |t, r| t.checked_add(r.credits))
            .ok_or(AppError::Internal)
    };
    let used_30d = sum(&from_long)?.max(0);
    let used_7d = sum(&from_short)?.max(0);
    let rate_7d = Decimal::from(used_7d) / Decimal::from(BURN_DAYS_SHORT);
    let rate_30d = Decimal::from(used_30d) / Decimal::from(BURN_DAYS_LONG);
    let rate = if rate_7d.is_zero() { rate_30d } else { rate_7d };
    let runs_out_at = if rate.is_zero() {
        None
    } else {
        // Seconds left at `rate` credits a day, from now (now when nothing
        // is left to spend).
        let seconds = (Decimal::from(spendable.max(0)) * Decimal::from(86_400) / rate)
            .floor()
            .to_i64()
            .unwrap_or(i64::MAX);
        // Past the year 9999 it does not run out in any useful sense.
        Duration::try_seconds(seconds).and_then(|d| now.checked_add_signed(d))
    };
    Ok(Burn {
        used_7d,
        used_30d,
        rate_7d,
        rate_30d,
        spendable,
        rate,
        runs_out_at,
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
    let spendable = view.available.saturating_add(view.credit_limit);
    let burn = burn(app, &view.account_id, spendable, Utc::now()).await?;
    merge(&mut body, burn.fields());
    Ok(body)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The next 30 days at the account's burn rate: the credits left each day
/// (never below the overdraft floor), and when they run out.
pub async fn forecast(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
) -> Result<Value, AppError> {
    use rust_decimal::prelude::ToPrimitive;
    let account = caller.target(access::READ_USAGE, target)?;
    app.wait_for(min_position).await?;
    let now = Utc::now();
    let view = app
        .read_models
        .balance(&account.to_string(), now)
        .await?
        .ok_or_else(not_found)?;
    let spendable = view.available.saturating_add(view.credit_limit);
    let burn = burn(app, &view.account_id, spendable, now).await?;
    let today = now.date_naive();
    let days: Vec<Value> = (1..=FORECAST_DAYS)
        .map(|i| {
            let spent = (burn.rate * rust_decimal::Decimal::from(i))
                .ceil()
                .to_i64()
                .unwrap_or(i64::MAX);
            let available = view.available.saturating_sub(spent).max(-view.credit_limit);
            json!({
                "date": today
                    .checked_add_signed(Duration::days(i))
                    .map(|d| d.format("%Y-%m-%d").to_string()),
                "available": available,
            })
        })
        .collect();
    let mut body = json!({
        "account_id": account,
        "balance": view.balance,
        "held": view.held,
        "available": view.available,
        "credit_limit": view.credit_limit,
        "basis": if burn.rate.is_zero() { Value::Null } else if burn.rate == burn.rate_7d { json!("7d") } else { json!("30d") },
        "days": days,
        "position": app.projector.position(),
    });
    merge(&mut body, burn.fields());
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
    let mut body = json!({
        "account_id": account,
        "group_by": q.group_by.unwrap_or_else(|| "day".into()),
        "from": from_s,
        "to": to_s,
        "items": rows,
        "totals": { "credits": total_credits, "cost_usd": total_cost, "count": total_count },
    });
    // The account's burn now, whatever the range.
    if let Some(view) = app
        .read_models
        .balance(&account.to_string(), Utc::now())
        .await?
    {
        let spendable = view.available.saturating_add(view.credit_limit);
        merge(
            &mut body,
            burn(app, &view.account_id, spendable, Utc::now())
                .await?
                .fields(),
        );
    }
    Ok(body)
}
